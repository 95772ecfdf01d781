"""Issue 13 item 4: a wrong hand-written backward pass gets feedback that names the mistake.

Each test starts from a right, student-style solution (CS231n's staged example, the worksheet's
functions) and makes one classic mistake in it; the report must point at the line that is wrong,
name the kind of mistake, and say it in one sentence that uses only the student's own names (never
a node the student did not write, such as t3, and never "the reference")."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import chainrule as cr
from chainrule.check import BackwardReport
from chainrule.cli import main
from chainrule.expr import parse
from chainrule.feedback import MISTAKES, Source

CS231N_EXPR = ("sigy = 1/(1+exp(-y)); num = x + sigy; sigx = 1/(1+exp(-x)); xpy = x + y; xpysqr = xpy^2; "
               "den = sigx + xpysqr; invden = 1/den; f = num*invden")

# CS231n's staged forward and backward pass, as in the course notes (right)
CS231N = """
import numpy as np

def cs231n(x, y):
    sigy = 1.0 / (1 + np.exp(-y))
    num = x + sigy
    sigx = 1.0 / (1 + np.exp(-x))
    xpy = x + y
    xpysqr = xpy**2
    den = sigx + xpysqr
    invden = 1.0 / den
    f = num * invden
    dnum = invden
    dinvden = num
    dden = (-1.0 / (den**2)) * dinvden
    dsigx = (1) * dden
    dxpysqr = (1) * dden
    dxpy = (2 * xpy) * dxpysqr
    dx = (1) * dxpy
    dy = (1) * dxpy
    dx += ((1 - sigx) * sigx) * dsigx
    dx += (1) * dnum
    dsigy = (1) * dnum
    dy += ((1 - sigy) * sigy) * dsigy
    return f, dx, dy
"""


reference = parse(CS231N_EXPR).function(params=["x", "y"])  # what `chainrule check --against` checks with


def check_variant(tmp_path: Path, old: str, new: str, name: str = "cs231n") -> tuple[BackwardReport, int]:
    """Load CS231N with one line changed (the student's mistake) and check it in-process at
    CS231n's inputs; also return the changed line's number in the file."""
    assert old in CS231N
    text = CS231N.replace(old, new)
    line = next(k for k, ln in enumerate(text.splitlines(), start=1) if ln.strip() == new.strip())
    return cr.check_backward(load_student(tmp_path, text, name), reference, 3.0, -4.0), line


def load_student(tmp_path: Path, text: str, name: str) -> Any:
    """Function ``name`` of a student's file ``text``, written to a file first so its lines can be read."""
    path = tmp_path / f"sol_{abs(hash(text)) % 10**8}.py"
    path.write_text(text)
    namespace: dict[str, Any] = {}
    exec(compile(text, str(path), "exec"), namespace)  # noqa: S102 - the test's own student code
    return namespace[name]


def assert_students_words(report: BackwardReport) -> None:
    """The feedback names only what the student wrote."""
    text = str(report)
    assert report.feedback, text
    assert not re.search(r"\bt\d+\b", report.feedback), report.feedback
    assert "reference" not in text
    assert report.mistake in MISTAKES


def test_the_right_solution_passes(tmp_path: Path) -> None:
    rep, _ = check_variant(tmp_path, "dx += (1) * dnum", "dx += (1) * dnum")
    assert rep.ok, str(rep)


def test_fan_out_overwritten_instead_of_added(tmp_path: Path) -> None:
    rep, line = check_variant(tmp_path, "dx += ((1 - sigx) * sigx) * dsigx", "dx = ((1 - sigx) * sigx) * dsigx")
    assert [m.name for m in rep.wrong] == ["dx"]
    assert rep.mistake == "fan_out_overwritten" and rep.first_wrong_step.name == "dx"
    assert rep.feedback == ("x is used 3 times; its gradients must add up — `dx = ((1 - sigx) * sigx) * dsigx` "
                            "replaces the earlier contribution (write dx += ...)")
    assert rep.line == line
    assert_students_words(rep)


def test_fan_out_with_one_use_left_out(tmp_path: Path) -> None:
    rep, _ = check_variant(tmp_path, "    dx += (1) * dnum\n", "    pass\n")
    assert rep.mistake == "fan_out_overwritten"
    assert "x is used 3 times" in rep.feedback and "add the other" in rep.feedback
    assert_students_words(rep)


ONE_LINE_MISTAKES = [
    # (the right line, the student's line, the mistake, the sentence)
    ("dxpy = (2 * xpy) * dxpysqr", "dxpy = (xpy) * dxpysqr", "missing_factor",
     "`dxpy` is missing a factor of 2: through `xpysqr = xpy ** 2`, the local gradient of xpy is 2·xpy"),
    ("dden = (-1.0 / (den**2)) * dinvden", "dden = (1.0 / (den**2)) * dinvden", "lost_sign",
     "`dden` has lost a minus sign: through `invden = 1 / den`, the local gradient of den is −1/den²"),
    ("dnum = invden", "dnum = num", "wrong_input",
     "for `f = num * invden`, the local gradient of num is invden, but `dnum` uses num, the local gradient of "
     "the other input (mul gate: swaps its inputs — each gets the upstream gradient times the other)"),
    ("dxpy = (2 * xpy) * dxpysqr", "dxpy = (2 * xpy)", "upstream_missing",
     "`dxpy` leaves out the upstream gradient: through `xpysqr = xpy ** 2`, xpy gets dxpysqr × 2·xpy, "
     "not 2·xpy alone"),
    ("dxpy = (2 * xpy) * dxpysqr", "dxpy = dxpysqr", "local_missing",
     "`dxpy` passes dxpysqr on through `xpysqr = xpy ** 2` without multiplying by the local gradient 2·xpy"),
]


@pytest.mark.parametrize("right, wrong, mistake, sentence", ONE_LINE_MISTAKES, ids=[m[2] for m in ONE_LINE_MISTAKES])
def test_one_classic_mistake(tmp_path: Path, right: str, wrong: str, mistake: str, sentence: str) -> None:
    rep, line = check_variant(tmp_path, right, wrong)
    step = wrong.split(" = ")[0]
    assert rep.first_wrong_step.name == step and rep.line == line, str(rep)
    assert rep.mistake == mistake and rep.feedback == sentence
    assert_students_words(rep)


# a reviewer's fan-out solutions of f = x·y + x² + eˣ, one accumulation of dx wrong in each
_FAN_FORWARD = """    a = x * y
    b = x ** 2
    c = np.exp(x)
    s = a + b
    out = s + c
"""
FAN = f"""
import numpy as np

def fan_missing_factor(x, y):
{_FAN_FORWARD}    dout = 1.0
    ds = dout
    dc = dout
    da = ds
    db = ds
    dx = da * y
    dy = da * x
    dx += db * x
    dx += dc * c
    return out, dx, dy

def mul_not_swapped(x, y):
{_FAN_FORWARD}    da = 1.0
    db = 1.0
    dc = 1.0
    dx = da * x
    dy = da * y
    dx += db * 2 * x
    dx += dc * c
    return out, dx, dy
"""


def _line_of(text: str, code: str, after: int = 0) -> int:
    return next(k for k, ln in enumerate(text.splitlines(), start=1) if k > after and ln.strip() == code)


@pytest.mark.parametrize("func, wrong_line, mistake", [
    ("fan_missing_factor", "dx += db * x", "missing_factor"),
    ("mul_not_swapped", "dx = da * x", "wrong_input"),
])
def test_the_wrong_accumulation_of_a_fan_out_gradient(tmp_path: Path, func: str, wrong_line: str,
                                                      mistake: str) -> None:
    """dx is written in three lines, one per use of x; the line pointed at is the one whose term is not
    what comes back through a use (x·y gives y, x² gives 2x, eˣ gives eˣ), not the last one."""
    rep = cr.check_backward(load_student(tmp_path, FAN, func), lambda x, y: x * y + x**2 + cr.exp(x), 1.0, 2.0)
    start = _line_of(FAN, f"def {func}(x, y):")
    assert rep.first_wrong_step.name == "dx" and rep.mistake == mistake
    assert rep.line == _line_of(FAN, wrong_line, after=start), str(rep)


@pytest.mark.parametrize("right, wrong", [
    ("dx += ((1 - sigx) * sigx) * dsigx", "dx += ((1 - sigx) * sigx)"),  # the middle one of three
    ("dx += ((1 - sigx) * sigx) * dsigx", "dx -= ((1 - sigx) * sigx) * dsigx"),
    ("dy = (1) * dxpy", "dy = (2) * dxpy"),  # the first of two
])
def test_the_wrong_line_among_several_accumulations(tmp_path: Path, right: str, wrong: str) -> None:
    rep, line = check_variant(tmp_path, right, wrong)
    assert rep.first_wrong_step.name == wrong.split()[0] and rep.line == line, str(rep)


def test_cli_points_at_the_wrong_accumulation(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """The sandboxed check (the reviewer's command) points at `dx += db * x`, not the line after it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sol.py").write_text(FAN)
    code = main(["check", "sol.py:fan_missing_factor", "--against", "x*y + x^2 + exp(x)", "--at", "x=1", "y=2",
                 "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["mistake"] == "missing_factor"
    assert doc["line"] == doc["first_wrong_step"]["line"] == _line_of(FAN, "dx += db * x")


def test_composite_rule_of_a_fused_sigmoid(tmp_path: Path) -> None:
    """sigy is a sigmoid staged by hand in the reference's expanded graph; the student's shortcut
    σ·(1 − σ) is one gate's rule: its mistakes are found on the graph with sigmoid as one gate."""
    rep, _ = check_variant(tmp_path, "dy += ((1 - sigy) * sigy) * dsigy", "dy += ((1 - sigy) * sigy)")
    assert rep.first_wrong_step.name == "dy"
    assert rep.mistake == "upstream_missing", rep.feedback
    assert "dsigy ×" in rep.feedback
    assert_students_words(rep)


# ---------------------------------------------------------------------------------------------
# matching by name first: the dq == q case
# ---------------------------------------------------------------------------------------------


def dq_equals_q(x, y, z):
    q = x * y
    r = q + z
    out = r * x
    dout = np.ones_like(out)
    dr = dout * x
    dq = dr * y  # wrong: the add gate's local gradient is 1, so dq = dr (here dq == q)
    dz = dr
    dx = dq * y + dout * r
    dy = dq * x
    return out, dx, dy, dz


def test_dq_equal_to_q_points_at_dq() -> None:
    """`dq = dr * y` with `dr = x` makes dq equal to q: matched by name (dq is q's gradient because
    the student's forward names q), the report points at dq, not at the dx it spoils."""
    ref = lambda x, y, z: (x * y + z) * x  # noqa: E731
    for inputs in [(3.0, 2.0, 1.0), (1.0, 3.0, 2.0)]:  # at x = 1, y = 3 q equals y as well
        rep = cr.check_backward(dq_equals_q, ref, *inputs)
        assert {m.name for m in rep.wrong} == {"dx", "dy"}
        step = rep.first_wrong_step
        assert step.name == "dq" and step.note == "the gradient of q", str(rep)
        assert np.isclose(step.got, inputs[0] * inputs[1])  # dq == q
        assert rep.line == inspect.getsourcelines(dq_equals_q)[1] + 6
        assert "`dq`" in rep.feedback and "r = q + z" in rep.feedback and "dr × 1" in rep.feedback
        assert_students_words(rep)


def test_gradient_names_by_habit() -> None:
    """grad_q, q_grad, dfdq and the worksheet's fx all name gradients."""
    def habits(x, y, z):
        q = x + y
        f = q * z
        grad_q = z * 2  # wrong
        fx = grad_q
        fy = grad_q
        dfdz = q
        return f, fx, fy, dfdz

    rep = cr.check_backward(habits, lambda x, y, z: (x + y) * z, 1.0, 3.0, 2.0)
    assert rep.first_wrong_step.name == "grad_q" and rep.mistake == "missing_factor"
    assert "extra factor of 2" in rep.feedback


def test_vectors_mul_not_swapped_through_indexing() -> None:
    """CS231n's neuron with x's gradient built from x instead of w: found through w[0]*x[0], w[1]*x[1]."""
    def neuron(w, x):
        dot = w[0] * x[0] + w[1] * x[1] + w[2]
        f = 1.0 / (1 + np.exp(-dot))
        ddot = (1 - f) * f
        dx = np.array([x[0] * ddot, x[1] * ddot])
        dw = np.array([x[0] * ddot, x[1] * ddot, 1.0 * ddot])
        return f, dw, dx

    ref = lambda w, x: cr.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])  # noqa: E731
    rep = cr.check_backward(neuron, ref, np.array([2.0, -3.0, -3.0]), np.array([-1.0, -2.0]))
    assert [m.name for m in rep.wrong] == ["dx"]
    assert rep.mistake == "wrong_input"
    assert rep.feedback.startswith("for `w[0] * x[0]` and `w[1] * x[1]`, the local gradients of x[0] and x[1] are "
                                   "w[0] and w[1], but `dx` uses x[0] and x[1]")
    assert_students_words(rep)


def _neuron_with(tmp_path: Path, dw: str, dx: str) -> BackwardReport:
    text = ("import numpy as np\n\ndef neuron(w, x):\n    dot = w[0]*x[0] + w[1]*x[1] + w[2]\n"
            "    f = 1.0 / (1 + np.exp(-dot))\n    ddot = (1 - f) * f\n"
            f"    dw = np.array({dw})\n    dx = np.array({dx})\n    return f, dw, dx\n")
    ref = lambda w, x: cr.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])  # noqa: E731
    w, x = np.array([2.0, -3.0, -3.0]), np.array([-1.0, -2.0])
    return cr.check_backward(load_student(tmp_path, text, "neuron"), ref, w, x)


def test_an_element_of_a_vector_gradient_from_the_wrong_input(tmp_path: Path) -> None:
    """The reviewer's neuron_bad: dx[1] = w[0]·ddot where w[1]·ddot belongs. x[0] and x[1] are two
    elements each used once, not a value used twice: the feedback names w[0] and w[1], not a fan-out."""
    rep = _neuron_with(tmp_path, "[x[0] * ddot, x[1] * ddot, 1.0 * ddot]", "[w[0] * ddot, w[0] * ddot]")
    assert [(m.name, m.index) for m in rep.wrong] == [("dx", (1,))]
    assert rep.mistake == "wrong_element" and rep.line == 8
    assert rep.feedback == ("`dx[1]` uses w[0] where w[1] belongs: through `w[1] * x[1]`, the local gradient of x[1] "
                            "is w[1]; w[0] is that of x[0], through `w[0] * x[0]`")
    assert_students_words(rep)
    rep = _neuron_with(tmp_path, "[x[1] * ddot, x[0] * ddot, 1.0 * ddot]", "[w[0] * ddot, w[1] * ddot]")
    assert rep.mistake == "wrong_element" and rep.feedback.startswith("`dw[0]` uses x[1] where x[0] belongs")
    # a mistake none of the classic ones explains, in one element: that element's own rule, no fan-out
    rep = _neuron_with(tmp_path, "[x[0] * ddot, x[1] * ddot, 1.0 * ddot]", "[w[0] * ddot, w[1] + ddot]")
    assert rep.mistake == "wrong_value" and "used 2 times" not in rep.feedback
    assert rep.feedback.startswith("`dx[1]` is not the gradient of x[1]: through `w[1] * x[1]` it is")


def test_a_forward_mistake_names_the_forward_line() -> None:
    def wrong_forward(x, y, z):
        q = x - y  # should be x + y
        out = q * z
        dq = z
        dz = q
        return out, dq, dq, dz

    rep = cr.check_backward(wrong_forward, lambda x, y, z: (x + y) * z, 1.0, 3.0, 2.0)
    assert rep.wrong[0].name == "out"
    assert rep.first_wrong_step.name == "q" and rep.mistake == "wrong_forward"
    assert rep.line == inspect.getsourcelines(wrong_forward)[1] + 1
    assert_students_words(rep)


def test_source_reads_assignments_without_running_anything() -> None:
    text = "import os\ndef f(x):\n    os.system('false')\n    a = x\n    a += 1\n    b, c = a, a\n    return a\n"
    src = Source.parse(text, "f")
    assert src.assignments == {"a": [(4, "a = x", False), (5, "a += 1", True)],
                               "b": [(6, "b, c = a, a", False)], "c": [(6, "b, c = a, a", False)]}
    assert src.last_plain("a") == (4, "a = x", False) and src.plain_count("a") == 1
    assert src.last("a") == (5, "a += 1", True)
    assert Source.parse("def (", "f") is None and Source.parse(text, "g") is None


def test_cli_json_carries_the_new_fields(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """chainrule check (sandboxed) reports mistake, feedback and line; the old fields are unchanged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sol.py").write_text(textwrap.dedent(CS231N).replace("dx += ((1 - sigx) * sigx) * dsigx",
                                                                       "dx = ((1 - sigx) * sigx) * dsigx"))
    code = main(["check", "sol.py:cs231n", "--against", CS231N_EXPR, "--at", "x=3", "y=-4", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["status"] == "wrong" and doc["exit_code"] == 1
    assert doc["mistake"] == "fan_out_overwritten" and doc["line"] == 21
    assert doc["feedback"].startswith("x is used 3 times; its gradients must add up")
    assert doc["first_wrong_step"]["name"] == "dx" and doc["first_wrong_step"]["line"] == 21
    assert "what went wrong: x is used 3 times" in doc["report"]


@pytest.mark.parametrize("kind", sorted(MISTAKES))
def test_every_mistake_kind_is_documented(kind: str) -> None:
    assert MISTAKES[kind] and kind in (cr.check.BackwardReport.__doc__ or "")


def test_a_wrong_forward_step_matched_by_its_name() -> None:
    """The expression names q; the student's q has no value of any step, so it is matched by name."""
    def named(x, y, z):
        q = x * y  # should be x + y
        f = q * z
        dq = z
        dz = q
        return f, dq, dq, dz

    rep = cr.check_backward(named, parse("q = x + y; f = q * z").function(), 1.0, 3.0, 2.0)
    assert rep.label == "the given inputs" and rep.wrong[0].name == "f"
    assert rep.first_wrong_step.name == "q" and rep.mistake == "wrong_forward"
    assert (rep.first_wrong_step.expected, rep.first_wrong_step.got) == (4.0, 3.0)
    assert rep.feedback == "`q` has the wrong value: the step named q computes 4, and `q` holds 3"
    assert rep.line == inspect.getsourcelines(named)[1] + 1


def q2c_student(x, y, z):
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    out = c ** 2 + 4 * x
    dc = 2 * c
    da = dc
    db = dc
    dx = da / x + 4
    dy = db * np.cos(x)  # wrong: cos(y)
    dz = np.zeros_like(z)
    return out, dx, dy, dz


def test_one_input_set_alone_coincidences_and_ambiguity() -> None:
    """judge() given one input set (as a caller that keeps no other runs does): at x = e, y = π/2,
    a = ln x and b = sin y are both 1; the learner's names still go to the steps in their order, and
    no mistake is named that another would explain as well."""
    from chainrule.check import capture_call, judge

    ref = lambda x, y, z: (np.log(x) + np.sin(y)) ** 2 + 4 * x  # noqa: E731
    inputs = [np.array(np.e), np.array(np.pi / 2), np.array(2.0)]
    rep = judge("q2c", ref, ["x", "y", "z"], inputs, "the given inputs", capture_call(q2c_student, inputs),
                ["the given inputs"], 1e-6, 1e-9)
    assert [m.name for m in rep.wrong] == ["dy"] and rep.first_wrong_step.name == "dy"
    assert rep.mistake == "wrong_value"
    assert rep.feedback.startswith("`dy` is not the gradient of y: through `b = sin(y)` it is db × cos(y)")
    assert_students_words(rep)


def test_hard_coded_answers_name_no_step() -> None:
    def hard_coded(x, y, z):
        return 8.0, 2.0, 2.0, 4.0

    rep = cr.check_backward(hard_coded, lambda x, y, z: (x + y) * z, 1.0, 3.0, 2.0)
    assert rep.label == "random inputs #1" and rep.wrong[0].name == "out"
    assert rep.first_wrong_step is None and rep.feedback is None  # no local variable to point at
