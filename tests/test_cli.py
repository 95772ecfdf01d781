"""The ``chainrule`` command end to end: every subcommand and option, run as a subprocess, checked
against the worksheet's hand-derived numbers and closed forms."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chainrule import cli

SIG2 = 1 / (1 + math.exp(-2.0))  # σ(2), for the worksheet's Q3
DSIG2 = SIG2 * (1 - SIG2)  # σ'(2) ≈ 0.105


def run(*args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m chainrule ARGS`` (stdout is a pipe, so output is plain text)."""
    return subprocess.run([sys.executable, "-m", "chainrule", *args], capture_output=True, text=True,
                          cwd=cwd, input=input, timeout=120, env=_env())


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("CHAINRULE_DEBUG", None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def numbers_after(label: str, text: str) -> float:
    """The number printed after ``label`` (first match), e.g. in "∂out/∂x      2"."""
    m = re.search(re.escape(label) + r"\s*=?\s*(-?[\d.]+(?:e[-+]?\d+)?)", text)
    assert m, f"{label!r} not found in:\n{text}"
    return float(m.group(1))


def assert_clean_error(res: subprocess.CompletedProcess[str], code: int = 2) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.strip()


# ---------------------------------------------------------------------------------------------
# grad
# ---------------------------------------------------------------------------------------------


def test_grad_q2a_plain() -> None:
    res = run("grad", "(x + y) * z", "--at", "x=1", "y=3", "z=2")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "t1 = x + y" in out and "out = t1 * z" in out
    assert "\x1b[" not in out  # piped: plain text, no colours
    assert numbers_after("out    ", out.split("result")[1]) == 8
    for var, want in {"x": 2, "y": 2, "z": 4}.items():
        assert numbers_after(f"∂out/∂{var}", out.split("result")[1]) == want


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("chainrule")
    if not exe.exists():
        pytest.skip("the chainrule script is not installed next to this Python")
    res = subprocess.run([str(exe), "grad", "q = x + y; f = q * z", "--at", "x=1", "y=3", "z=2"],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr
    assert "q = x + y" in res.stdout and "f = q * z" in res.stdout
    assert numbers_after("∂f/∂z", res.stdout.split("result")[1]) == 4


def test_grad_q2b_graph_and_code(tmp_path: Path) -> None:
    res = run("grad", "(x^2 + 2y) z^3", "--at", "x=3", "y=1", "z=2", "--graph", "q2b.svg", "--code", "q2b",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    svg = (tmp_path / "q2b.svg").read_text()
    assert "<svg" in svg
    result = res.stdout.split("result")[1]
    assert numbers_after("out", result) == 88
    assert [numbers_after(f"∂out/∂{v}", result) for v in "xyz"] == [48, 16, 132]  # 2xz³, 2z³, 3(x²+2y)z²
    assert "def q2b(x, y, z):" in res.stdout


def test_grad_code_quiet_is_runnable() -> None:
    res = run("grad", "(x^2 + 2y) z^3", "--at", "x=3", "y=1", "z=2", "--code", "q2b", "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stdout.lstrip().startswith(("import numpy as np", "def q2b(x, y, z):"))
    ns: dict = {}
    exec(res.stdout, ns)  # the generated answer key, as a learner would run it
    x, y, z = np.array([3.0, 1.5]), np.array([1.0, -2.0]), np.array([2.0, 0.5])
    out, hx, hy, hz = ns["q2b"](x, y, z)
    np.testing.assert_allclose(out, (x ** 2 + 2 * y) * z ** 3)
    np.testing.assert_allclose(hx, 2 * x * z ** 3)
    np.testing.assert_allclose(hy, 2 * z ** 3)
    np.testing.assert_allclose(hz, 3 * (x ** 2 + 2 * y) * z ** 2)


def test_grad_q2c_declared_inputs() -> None:
    res = run("grad", "g(x, y, z) = (ln(x) + sin(y))^2 + 4x", "--at", "x=e", "y=pi/2", "z=2", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["variables"] == ["x", "y", "z"]
    assert doc["output"]["value"] == pytest.approx(4 + 4 * math.e)
    assert doc["gradients"]["x"] == pytest.approx(2 * 2 / math.e + 4)
    assert doc["gradients"]["y"] == pytest.approx(0, abs=1e-12)
    assert doc["gradients"]["z"] == 0


def test_grad_value_for_an_unused_name_keeps_it_as_an_input_with_zero_gradient() -> None:
    # the worksheet's Q2(c) gives z = 2 although g does not use z: gz = 0, as the worksheet expects
    res = run("grad", "(ln(x) + sin(y))^2 + 4x", "--at", "x=e", "y=pi/2", "z=2")
    assert res.returncode == 0, res.stderr
    assert "z does not appear in the expression" in res.stderr
    result = res.stdout.split("result")[1]
    assert numbers_after("∂out/∂z", result) == pytest.approx(0.0)
    assert numbers_after("∂out/∂x", result) == pytest.approx(4 / math.e + 4)


def test_grad_value_for_no_variable_while_one_is_missing_is_a_typo_error() -> None:
    res = run("grad", "x * y", "--at", "x=1", "yy=2")
    assert_clean_error(res)
    assert "'y' has no value" in res.stderr and "yy was given" in res.stderr
    assert "^" in res.stderr


def test_grad_expand_sigmoid() -> None:
    res = run("grad", "sigmoid(x)", "--at", "x=2", "--expand")
    assert res.returncode == 0, res.stderr
    staged = res.stdout.split("staged computation")[1].split("forward and backward")[0]
    assert len([ln for ln in staged.splitlines() if " = " in ln]) == 4  # -x, exp, 1 +, 1 /
    assert numbers_after("∂out/∂x", res.stdout.split("result")[1]) == pytest.approx(DSIG2, abs=1e-6)
    fused = run("grad", "sigmoid(x)", "--at", "x=2")
    staged = fused.stdout.split("staged computation")[1].split("forward and backward")[0]
    assert len([ln for ln in staged.splitlines() if " = " in ln]) == 1


def test_grad_json_everything() -> None:
    res = run("grad", "q = x + y; f = q * z", "--at", "x=1", "y=3", "z=2", "--json", "--dot", "--code", "q2a")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["output"] == {"name": "f", "value": 8.0}
    assert doc["gradients"] == {"x": 2.0, "y": 2.0, "z": 4.0}
    assert [(s["name"], s["op"], s["inputs"]) for s in doc["staged"]] == [("q", "add", ["x", "y"]),
                                                                          ("f", "mul", ["q", "z"])]
    assert doc["staged"][0]["grad"] == 2.0
    assert doc["dot"].lstrip().startswith("digraph")
    assert "def q2a(x, y, z):" in doc["code"]


def test_grad_dot() -> None:
    res = run("grad", "(x + y) * z", "--at", "x=1", "y=3", "z=2", "--dot")
    assert res.returncode == 0 and "digraph" in res.stdout and "t1 = x + y" in res.stdout
    res = run("grad", "(x + y) * z", "--at", "x=1", "y=3", "z=2", "--dot", "--quiet")
    assert res.returncode == 0 and res.stdout.lstrip().startswith("digraph")
    assert "staged computation" not in res.stdout and res.stdout.rstrip().endswith("}")


def test_grad_lists() -> None:
    res = run("grad", "x * y", "--at", "x=[1,2,3]", "y=2", "--json")
    doc = json.loads(res.stdout)
    assert doc["output"]["value"] == [2.0, 4.0, 6.0]
    assert doc["gradients"] == {"x": [2.0, 2.0, 2.0], "y": 6.0}  # gradient of the sum


def test_grad_plain_forced_and_rich_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pytest.importorskip("rich")
    term = Tty()
    p = cli.Printer(stream=term)
    assert p.rich
    p.table(["", "value"], [["out", "8"]])
    assert "out" in term.getvalue() and "8" in term.getvalue()
    assert not cli.Printer(plain=True, stream=Tty()).rich
    assert not cli.Printer(stream=io.StringIO()).rich
    res = run("grad", "x*y", "--at", "x=1", "y=2", "--plain")
    assert res.returncode == 0 and "\x1b[" not in res.stdout


def test_grad_bad_code_name() -> None:
    res = run("grad", "x*y", "--at", "x=1", "y=2", "--code", "not a name")
    assert_clean_error(res, 2)
    assert "--code" in res.stderr


def test_grad_graph_as_tikz(tmp_path: Path) -> None:
    """``--graph q2a.tex`` writes a LaTeX document with the picture in TikZ, as the README says."""
    res = run("grad", "(x + y) * z", "--at", "x=1", "y=3", "z=2", "--graph", "q2a.tex", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "q2a.tex").read_text()
    assert "\\begin{tikzpicture}" in text and "\\end{document}" in text


def test_grad_bad_graph_file(tmp_path: Path) -> None:
    res = run("grad", "x*y", "--at", "x=1", "y=2", "--graph", "picture.jpg2", cwd=tmp_path)
    assert_clean_error(res, 2)
    assert ".svg" in res.stderr


# ---------------------------------------------------------------------------------------------
# step
# ---------------------------------------------------------------------------------------------


def test_step_worksheet_q3() -> None:
    res = run("step", "sigmoid(x)", "--at", "x=2", "--lr", "0.2", "--steps", "1")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "0.104994" in out  # the gradient at x = 2 ("around 0.1")
    assert re.search(r"after 1 step: x = 1\.979\b", out)
    rows = [ln.split() for ln in out.splitlines() if re.match(r"\s+\d+\s", ln)]
    assert [float(r[1]) for r in rows] == pytest.approx([2.0, 2 - 0.2 * DSIG2], abs=1e-5)


def test_step_json_many_steps_against_a_closed_form() -> None:
    # (w - 3)^2 with lr: w_k = 3 + (w0 - 3)(1 - 2 lr)^k
    res = run("step", "(w - 3)^2", "--at", "w=0", "--lr", "0.1", "--steps", "20", "--json")
    doc = json.loads(res.stdout)
    ws = [h["values"]["w"] for h in doc["history"]]
    assert ws == pytest.approx([3 - 3 * 0.8 ** k for k in range(21)])
    assert doc["final"]["w"] == pytest.approx(3 - 3 * 0.8 ** 20)
    assert doc["history"][0]["gradients"]["w"] == -6


def test_step_wrt_and_every() -> None:
    res = run("step", "(w x - 1)^2", "--at", "w=0.5", "x=2", "--wrt", "w", "--lr", "0.05", "--steps", "4",
              "--every", "2")
    assert res.returncode == 0, res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines() if re.match(r"\s+\d+\s", ln)]
    assert [r[0] for r in rows] == ["0", "2", "4"]
    assert all(r[2] == "2" for r in rows)  # x stays fixed
    w = 0.5
    for _ in range(4):
        w -= 0.05 * 2 * (w * 2 - 1) * 2
    assert float(rows[-1][1]) == pytest.approx(w, abs=1e-5)


def test_step_errors() -> None:
    assert_clean_error(run("step", "x^2", "--at", "x=1", "--wrt", "y"))
    assert_clean_error(run("step", "x^2", "--at", "x=1", "--steps", "-1"))
    assert_clean_error(run("step", "2 + 3"))


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------

GOOD_Q2A = """
import numpy as np

def q2a(x, y, z):
    q = x + y
    out = q * z
    dq = z
    fx = dq
    fy = dq
    fz = q
    return out, fx, fy, fz
"""

BAD_Q2A = GOOD_Q2A.replace("fy = dq", "fy = -dq")

GOOD_Q2C = """
import numpy as np

def q2c(x, y, z):
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    d = c ** 2
    out = d + 4 * x
    dc = 2 * c
    gx = dc / x + 4
    gy = dc * np.cos(y)
    gz = np.zeros_like(z)
    return out, gx, gy, gz
"""


def test_check_correct_solution(tmp_path: Path) -> None:
    (tmp_path / "my_solution.py").write_text(GOOD_Q2A)
    res = run("check", "my_solution.py:q2a", "--against", "(x + y) * z", "--at", "x=1", "y=3", "z=2", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_check_wrong_solution(tmp_path: Path) -> None:
    (tmp_path / "my_solution.py").write_text(BAD_Q2A)
    res = run("check", "my_solution.py:q2a", "--against", "(x + y) * z", "--at", "x=1", "y=3", "z=2", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "fy" in res.stdout or "y" in res.stdout


def test_check_unused_input_and_json(tmp_path: Path) -> None:
    (tmp_path / "sol.py").write_text(GOOD_Q2C)
    res = run("check", "sol.py:q2c", "--against", "(ln(x) + sin(y))^2 + 4x", "--at", "x=e", "y=pi/2", "z=2",
              "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["ok"] is True


def test_check_errors(tmp_path: Path) -> None:
    (tmp_path / "sol.py").write_text(GOOD_Q2A)
    (tmp_path / "broken.py").write_text("def f(:\n")
    assert_clean_error(run("check", "nofile.py:q2a", "--against", "x", "--at", "x=1", cwd=tmp_path))
    assert_clean_error(run("check", "sol.py", "--against", "x", "--at", "x=1", cwd=tmp_path))
    res = run("check", "sol.py:nothere", "--against", "x", "--at", "x=1", cwd=tmp_path)
    assert_clean_error(res, 3)  # the checked file failed (it has no such function): exit 3
    assert "q2a" in res.stderr
    res = run("check", "broken.py:f", "--against", "x", "--at", "x=1", cwd=tmp_path)
    assert_clean_error(res, 3)  # the user's own file: their error, where it is, in one line
    assert "SyntaxError" in res.stderr and "(broken.py, line 1)" in res.stderr
    assert_clean_error(run("check", "sol.py:q2a", "--against", "(x + y) * foo(z)", "--at", "x=1", cwd=tmp_path))


SIGMOID_HW = """
import numpy as np

def sigmoid(x):
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = c ** -1
    out = d
    dd = 1
    dc = dd * -1 / c**2
    db = dc
    da = db * a  # the bug: should be db * b
    dx = -da
    return out, dx
"""


@pytest.mark.parametrize("against", ["sigmoid(x)", "1 / (1 + exp(-x))"])
def test_check_names_first_wrong_step_against_fused_or_staged(tmp_path: Path, against: str) -> None:
    (tmp_path / "sig_hw.py").write_text(SIGMOID_HW)
    res = run("check", "sig_hw.py:sigmoid", "--against", against, "--at", "x=2", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    # ∂σ/∂a at x = 2 is -σ'(2); the student's da is db * a = (-1/c²) * (-2), with c = 1 + e^-2
    c = 1 + math.exp(-2.0)
    m = re.search(r"first wrong step: da: expected (\S+), got (\S+)", res.stdout)
    assert m, res.stdout
    assert float(m.group(1)) == pytest.approx(-DSIG2, rel=1e-8)
    assert float(m.group(2)) == pytest.approx(-1 / c**2 * -2.0, rel=1e-8)


def test_check_function_and_expression_disagree_on_inputs(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("def f(x):\n    return x*x, 2*x\n")
    res = run("check", "ok.py:f", "--against", "x*y", "--at", "x=1", "y=2", cwd=tmp_path)
    assert_clean_error(res, 3)
    assert "f(x) takes 1 input but the reference has variables x, y" in res.stderr
    assert "x2" not in res.stdout + res.stderr and "TypeError" not in res.stderr


def test_check_import_failure_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def f(x):\n    return x +\n")
    (tmp_path / "boom.py").write_text("import math\nk = 1\nz = undefined_name\n")
    for target, kind, where in (("bad.py:f", "SyntaxError", "(bad.py, line 2)"),
                                ("boom.py:f", "NameError: name 'undefined_name' is not defined", "(boom.py, line 3)")):
        res = run("check", target, "--against", "x", "--at", "x=1", cwd=tmp_path)
        assert_clean_error(res, 3)
        assert kind in res.stderr and where in res.stderr, res.stderr
        assert "frozen" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_step_help_example_shows_descent() -> None:
    res = run("step", "--help")
    m = re.search(r'chainrule step "\(w x - 1\)\^2" (.*)', res.stdout)
    assert m, res.stdout
    args = m.group(1).split("#")[0].split()
    res = run("step", "(w x - 1)^2", *args, "--json")
    assert res.returncode == 0, res.stderr
    history = json.loads(res.stdout)["history"]
    outs = [h["output"] for h in history]
    assert len(outs) > 1 and all(b < a for a, b in zip(outs, outs[1:])), outs  # it goes downhill
    assert len({h["values"]["w"] for h in history}) == len(history)  # w moves every step


# ---------------------------------------------------------------------------------------------
# help, python -m, plugins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["grad", "step", "check", "worksheet"])
def test_each_subcommand_help_shows_examples(command: str) -> None:
    res = run(command, "--help")
    assert res.returncode == 0
    assert "examples:" in res.stdout and f"chainrule {command}" in res.stdout


def test_top_level_help_and_version() -> None:
    res = run("--help")
    assert res.returncode == 0
    for command in ("grad", "step", "check", "worksheet", "train", "serve"):
        assert command in res.stdout
    res = run()
    assert res.returncode == 2 and "usage" in res.stdout
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("chainrule ")


def test_plugin_missing_module_is_a_clear_message(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(cli.PLUGINS, "train", ("chainrule._no_such_module", "train", "train"))
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert "not part of this installation" in err
    # the other subcommands still work
    assert cli.main(["grad", "x*y", "--at", "x=1", "y=2", "--json"]) == 0


def test_plugin_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    (tmp_path / "_cr_fake_plugin.py").write_text("import _cr_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.PLUGINS, "serve", ("_cr_fake_plugin", "web", "serve"))
    assert cli.main(["serve"]) == 1
    assert "pip install 'chainrule[web]'" in capsys.readouterr().err


def test_plugin_registers_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    (tmp_path / "_cr_fake_train.py").write_text(
        "def add_parser(sub):\n"
        "    p = sub.add_parser('train', help='fake')\n"
        "    p.add_argument('--epochs', type=int, default=1)\n"
        "    p.set_defaults(func=lambda args: print('epochs', args.epochs) or 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.PLUGINS, "train", ("_cr_fake_train", "train", "train"))
    assert cli.main(["train", "--epochs", "3"]) == 0
    assert "epochs 3" in capsys.readouterr().out


def test_serve_is_registered_by_the_web_module() -> None:
    pytest.importorskip("chainrule.web")
    res = run("serve", "--help")
    assert res.returncode == 0 and "--port" in res.stdout


# ---------------------------------------------------------------------------------------------
# rejected input: exit 2, one message, a caret, never a traceback
# ---------------------------------------------------------------------------------------------

REJECTED = [
    ["grad", "x.__class__", "--at", "x=1"],
    ["grad", "x[0]", "--at", "x=1"],
    ["grad", "'x'", "--at", "x=1"],
    ["grad", "lambda x: x", "--at", "x=1"],
    ["grad", "__import__('os').system('echo hi')"],
    ["grad", "foo(x)", "--at", "x=1"],
    ["grad", "x * y", "--at", "x=1"],
    ["step", "x", "--at", "x=1", "y=2"],  # step moves variables: a value for no variable is an error
    ["grad", "x", "--at", "x=open('f')"],
    ["grad", "x +", "--at", "x=1"],
    ["grad", "(" * 100 + "x" + ")" * 100, "--at", "x=1"],
    ["grad", "x" + "+x" * 2000, "--at", "x=1"],
    ["grad", "x+y", "--at", "x=[1,2]", "y=[1,2,3]"],
    ["step", "x.real", "--at", "x=1"],
    ["check", "f.py:f", "--against", "x[1]", "--at", "x=1"],
]


@pytest.mark.parametrize("argv", REJECTED, ids=lambda a: " ".join(a)[:40])
def test_rejected_in_process(argv: list[str], capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.py").write_text("def f(x):\n    return x, 1\n")
    assert cli.main(argv) == 2
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and cap.out == ""
    lines = cap.err.rstrip("\n").splitlines()
    assert lines[0].startswith(f"chainrule {argv[0]}: error: ")
    if "--at" in argv and any("=" not in a for a in argv[argv.index("--at") + 1:]):
        return
    assert lines[-1].strip() == "^"


def test_rejected_end_to_end_never_runs_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    res = run("grad", f"__import__('os').system('touch {marker}')", cwd=tmp_path)
    assert_clean_error(res)
    res = run("grad", "x", "--at", f"x=__import__('os').system('touch {marker}')", cwd=tmp_path)
    assert_clean_error(res)
    assert not marker.exists()
    assert res.stderr.rstrip().splitlines()[-1].strip() == "^"


# ---------------------------------------------------------------------------------------------
# fuzz: whatever is typed, the command answers (exit 0) or refuses (exit 2), never a traceback
# ---------------------------------------------------------------------------------------------

_TOKENS = ["x", "y", "2", "0.5", "pi", "e", "+", "-", "*", "/", "^", "(", ")", ",", ";", "q =", " ", "sin(",
           "ln(", "sigmoid(", "max(", "min(", "sqrt(", "relu(", "abs(", "exp(", "q", "[", ".", "'", "__"]


def test_fuzz_grad_and_step_in_process(capsys) -> None:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    from chainrule.expr import ExprError, parse

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=14), st.sampled_from(["grad", "step"]))
    def check(tokens: list[str], command: str) -> None:
        text = "".join(tokens)
        assume(text != "--")  # argparse's end-of-options marker, not an expression
        try:
            names = parse(text).variables
        except ExprError:
            names = ["x"]
        argv = [command, text, "--at", *[f"{v}=[0.7, 1.3]" for v in names], "--json"]
        code = cli.main(argv)
        cap = capsys.readouterr()
        assert code in (0, 2), (argv, code, cap.err)
        assert "Traceback" not in cap.err
        if code == 0:
            json.loads(cap.out)
        else:
            assert cap.err.startswith(f"chainrule {command}: error: ")

    check()


def test_a_step_of_the_expression_is_bounded_like_a_value() -> None:
    """A row times a column of allowed sizes would make an array of 160,000 elements: refused before
    it is computed, naming the operation, as for values given with --at."""
    row = "[" + ",".join(["1"] * 400) + "]"
    col = "[" + ",".join(["[1]"] * 400) + "]"
    res = run("grad", "x * y", "--at", f"x={row}", f"y={col}")
    assert_clean_error(res, 2)
    assert "160,000 elements" in res.stderr and "(400,) and (400, 1)" in res.stderr and "at most 100,000" in res.stderr
    res = run("step", "sum(x * y)", "--at", f"x={row}", f"y={col}", "--steps", "1")
    assert_clean_error(res, 2)
    assert "160,000 elements" in res.stderr


def test_cache_names_its_folder_size_and_limit_and_clear_empties_it(tmp_path, monkeypatch, capsys):
    """``chainrule cache`` in plain text: the folder, how many loops and MiB, the limit; --clear."""
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CHAINRULE_CACHE_MAX_MB", "64")
    folder = tmp_path / "kernels"
    folder.mkdir()
    for digest in ("aa", "bb"):
        (folder / f"k_{digest}.py").write_text("# a loop\n" * 1000)
    assert cli.main(["cache", "--plain"]) == 0
    text = capsys.readouterr().out
    assert f"kernel cache: {folder}" in text and "2 compiled loops, 0.0 MiB; limit 64 MiB" in text
    assert cli.main(["cache", "--clear", "--plain"]) == 0
    assert "removed 2 compiled loops" in capsys.readouterr().out and not list(folder.iterdir())


def test_cache_shows_a_limit_under_one_mib_as_it_was_set(tmp_path, monkeypatch, capsys):
    """CHAINRULE_CACHE_MAX_MB=0.5 is half a MiB, not shown as a limit of 0 MiB."""
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CHAINRULE_CACHE_MAX_MB", "0.5")
    assert cli.main(["cache", "--plain"]) == 0
    assert "limit 0.5 MiB" in capsys.readouterr().out


@pytest.mark.parametrize("expr, out", [("-x^2", "-4"), ("-2.", "-2"), ("-1e3 + x", "-998"), ("-.5 * x", "-1")])
def test_an_expression_may_start_with_a_minus(expr, out, capsys):
    """argparse reads "-x^2" or "-2." as an option (only "-2" and "-.5" are numbers to it): the
    expression still reaches the parser."""
    at = ["--at", "x=2"] if "x" in expr else []
    assert cli.main(["grad", expr, *at, "--plain"]) == 0
    assert re.search(rf"\bout\s+(?:=\s+)?{re.escape(out)}\b", capsys.readouterr().out)
