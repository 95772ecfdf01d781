"""The worksheet file format: what a teaching assistant writes is read as meant (functions as
expressions or as a Python def, constants, inputs, parts, the skeleton's names), every mistake is
one message naming the place, variants draw only what the file marks, and the generated code takes
the skeleton's names and helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule.codegen import build_program
from chainrule.expr import parse as parse_expr
from chainrule.worksheet import WorksheetError, loads
from chainrule.worksheet.solve import helper_source, solve
from chainrule.worksheet.spec import draw_key, variant

HEAD = 'title = "T"\n[[section]]\ntitle = "S"\n'


def one(problem: str):
    return loads(HEAD + "[[section.problem]]\n" + problem, "w.toml").problems[0]


def test_a_problem_as_written() -> None:
    p = one('id = "p"\nlabel = "(a)"\nfunction = "g(x, y, z) = (ln(x) + sin(y))^2 + a x"\n'
            'constants = { a = 4 }\ninputs = { x = "e", y = "pi/2", z = 2 }\n'
            'code = { name = "q2c", returns = ["out", "gx", "gy", "gz"] }\n')
    assert p.variables == ("x", "y", "z")  # the declared inputs, z unused
    assert p.function == "g(x, y, z) = (ln(x) + sin(y))^2 + (4) x"
    assert p.parts == ("staged", "graph", "table", "gradients", "code")  # the default with inputs
    assert p.values() == {"x": math.e, "y": math.pi / 2, "z": 2.0}
    s = solve(p)
    assert s.answers["out"] == pytest.approx(4 + 4 * math.e) and s.answers["gz"] == 0.0
    assert "t5 = 4 * x" in s.staged[4].text and s.ok


def test_constants_are_replaced_as_names_only() -> None:
    from chainrule.worksheet.spec import _substitute

    assert _substitute("2a x + x2a + 1e3 a + ae", {"a": "1/2"}) == "2(1/2) x + x2a + 1e3 (1/2) + ae"
    p = one('id = "p"\nfunction = "f(x) = 2a x + a^2"\nconstants = { a = 3 }\ninputs = { x = 1 }\n')
    s = solve(p)
    assert s.answers["dx"] == pytest.approx(6.0) and s.answers["out"] == pytest.approx(15.0)
    assert [t.text for t in s.staged] == ["t1 = 6 * x", "out = t1 + 9"]  # the constants' values, folded


def test_a_python_def_is_read_never_run() -> None:
    p = one('id = "p"\npython = """\ndef f(x, y):\n    q = np.exp(x) + math.pi  # a comment\n'
            '    r = q * y\n    return r\n"""\ninputs = { x = 0, y = 2 }\n')
    assert p.body == "f(x, y) = q = exp(x) + pi; r = q * y"
    s = solve(p)
    assert [t.text for t in s.staged][-1] == "r = q * y"
    assert s.answers["out"] == pytest.approx(2 * (1 + math.pi)) and s.answers["dx"] == pytest.approx(2.0)
    for src, msg in [("def f(x):\n    import os\n    return x", "only assignments"),
                     ("def f(x):\n    return os.system('x')", "os.system"),
                     ("def f(x):\n    y = x\n    return y, x", "return one value"),
                     ("x = 1", "exactly one function"),
                     ("def f(x, *a):\n    return x", "plain inputs"),
                     ("def f(x):\n    return __import__('os')", "cannot be read")]:
        with pytest.raises(WorksheetError, match=msg):
            one(f'id = "p"\npython = """\n{src}\n"""\n')


@pytest.mark.parametrize("problem, message", [
    ('id = "p"\nfunction = "x + y"\nanswr = ["staged"]\n', "unknown key 'answr'"),
    ('id = "p"\n', "either 'function'"),
    ('id = "p"\nfunction = "x +"\n', "the function cannot be read"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1 }\n', "input 'y' has no value"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = 2, w = 3 }\n', "'w', which is not an input"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = "pi +" }\n', "inputs.y"),
    ('id = "p"\nfunction = "x + y"\nanswer = ["graph"]\n', "part 'graph' needs values"),
    ('id = "p"\nfunction = "x + y"\nanswer = ["grpah"]\n', "'grpah' is not a part"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = 2 }\ncode = { returns = ["out", "dx"] }\n',
     "names 2 values; the function returns 3"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = 2 }\ncode = { helpers = ["exp"] }\n',
     "not a composite elementwise gate"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = 2 }\nvary = { w = [1] }\n', "'w' is not an input"),
    ('id = "p"\nfunction = "x + y"\ninputs = { x = 1, y = 2 }\nvary = { x = { min = 3, max = 1 } }\n',
     "min <= max"),
    ('id = "p"\nfunction = "x"\ninputs = { x = 1 }\ndescent = { lr = -1 }\n', "must be positive"),
    ('id = "bad id"\nfunction = "x"\n', "must start with a letter"),
])
def test_mistakes_are_one_message_naming_the_place(problem: str, message: str) -> None:
    with pytest.raises(WorksheetError) as err:
        one(problem)
    assert str(err.value).startswith("w.toml: section 'S', problem") and message in str(err.value)


def test_file_level_mistakes() -> None:
    with pytest.raises(WorksheetError, match="not valid TOML"):
        loads("title = ", "w.toml")
    with pytest.raises(WorksheetError, match="'title' is missing"):
        loads("[[section]]\ntitle = 'S'\n", "w.toml")
    with pytest.raises(WorksheetError, match="at least one"):
        loads("title = 'T'\n", "w.toml")
    with pytest.raises(WorksheetError, match="used twice"):
        loads(HEAD + '[[section.problem]]\nid = "p"\nfunction = "x"\n[[section.problem]]\nid = "p"\nfunction = "y"\n')
    with pytest.raises(WorksheetError, match="not an elementwise gate"):
        loads(HEAD + 'gates = ["add", "matmul"]\n')


def test_common_gates_by_the_expression_languages_names(tmp_path) -> None:
    """`max`, `min` and `ln` are what a TA types in a function; in `gates` they name the same gates as
    `maximum`, `minimum` and `log` (not the reductions max(x), min(x)), each card shown once."""
    from chainrule.worksheet import solve_worksheet

    ws = loads(HEAD + 'gates = ["max", "ln", "maximum", "min", "copy"]\n')
    assert ws.sections[0].gates == ("maximum", "log", "minimum", "copy")
    with pytest.raises(WorksheetError, match="'sum' is not an elementwise gate"):
        loads(HEAD + 'gates = ["sum"]\n')
    path = tmp_path / "w.toml"
    path.write_text(HEAD + 'gates = ["max"]\n')
    md = solve_worksheet(tmp_path / "key", path).report.read_text()
    assert md.count("Max gate: routes the gradient to the larger input") == 1 and "gate-maximum.svg" in md


def test_variants_draw_only_the_marked_values_and_never_repeat() -> None:
    ws = loads(HEAD + '[[section.problem]]\nid = "p"\nfunction = "f(x, y) = a x + y"\nconstants = { a = 2 }\n'
               'inputs = { x = 1, y = 5 }\nvary = { x = [1, 2, 3], a = { min = 2, max = 3 } }\n'
               'descent = { lr = 0.1 }\n', "w.toml")
    rng = np.random.default_rng(7)
    original = ws.problems[0]
    taken = {draw_key([original])}
    drawn = [variant(ws, k, rng, taken).problems[0] for k in range(1, 6)]  # 3 x-values × 2 a-values = 6, one taken
    seen = {(p.inputs["x"], p.constants["a"]) for p in drawn}
    assert len(seen) == 5 and ("1", "2") not in seen
    assert all(p.inputs["y"] == "5" for p in drawn) and all(p.descent == original.descent for p in drawn)
    assert all(p.function == f"f(x, y) = ({p.constants['a']}) x + y" for p in drawn)
    with pytest.raises(WorksheetError, match="too few different"):
        variant(ws, 6, rng, taken)
    again = np.random.default_rng(7)  # the same seed draws the same variants
    taken2 = {draw_key([original])}
    assert [variant(ws, k, again, taken2).problems[0].inputs for k in range(1, 6)] == [p.inputs for p in drawn]


def test_variants_skip_draws_outside_the_functions_domain() -> None:
    ws = loads(HEAD + '[[section.problem]]\nid = "p"\nfunction = "ln(x)"\ninputs = { x = 1 }\n'
               'vary = { x = [-1, 0, 2] }\n', "w.toml")
    rng = np.random.default_rng(0)
    taken = {draw_key(ws.problems)}
    assert variant(ws, 1, rng, taken).problems[0].inputs == {"x": "2"}  # ln(-1), ln(0) are not finite


@pytest.mark.parametrize("body, kinked", [
    # the reviewer's problem: q = a·x + y is 0 at a = 2, x = 1, y = −2 (max's kink), and at a = 3, x = 0
    ("p = a*x; q = p + y; f = max(q, 0) * z", lambda a, x, y: a * x + y == 0),
    ("f(x, y) = relu(x - a) + abs(y + 1) * a", lambda a, x, y: x == a or y == -1),
    ("f(x, y) = min(a*x, y) + 1", lambda a, x, y: a * x == y),
])
def test_variants_are_never_drawn_at_a_kink(body: str, kinked) -> None:
    """Every (a, x, y) the choices allow but those at a kink of max, min, relu or |·| (decided here by
    hand) is drawn exactly once, and no draw lands on a kink: the gradient there is a convention."""
    z = ", z = 3" if "z" in body else ""
    ws = loads(HEAD + f'[[section.problem]]\nid = "p"\nfunction = "{body}"\nconstants = {{ a = 3 }}\n'
               f'inputs = {{ x = 2, y = 1{z} }}\nvary = {{ a = [2, 3], x = [0, 1, 2], y = [-2, -1, 0] }}\n', "w.toml")
    grid = [(a, x, y) for a in (2, 3) for x in (0, 1, 2) for y in (-2, -1, 0)]
    smooth = {(a, x, y) for a, x, y in grid if not kinked(a, x, y)}
    assert 0 < len(smooth) < len(grid)
    rng, taken = np.random.default_rng(5), {draw_key(ws.problems)}
    drawn = set()
    for k in range(1, len(smooth) + 1):
        p = variant(ws, k, rng, taken).problems[0]
        drawn.add((int(p.constants["a"]), int(p.inputs["x"]), int(p.inputs["y"])))
    assert drawn == smooth
    with pytest.raises(WorksheetError, match="away from kinks"):
        variant(ws, len(smooth) + 1, rng, taken)


def test_kinks_from_one_sided_differences() -> None:
    """One-sided difference quotients disagree by O(1) at a kink and by O(h) elsewhere."""
    from chainrule.check import kinks

    assert kinks(lambda x, y: np.maximum(2 * x + y, 0) * 3, 1.0, -2.0) == [(0, ()), (1, ())]
    assert kinks(lambda x, y: np.maximum(2 * x + y, 0) * 3, 1.0, -1.5) == []
    assert kinks(lambda x: np.abs(x - 0.3), 0.1 * 3) == [(0, ())]  # 0.30000000000000004: still the kink
    assert kinks(lambda x: np.floor(x), 2.0) == [(0, ())]  # a jump too
    assert kinks(lambda x: np.exp(10 * x) + 1 / x, 0.01) == [] and kinks(lambda x: x**4, 1e3) == []
    assert kinks(lambda w: np.max(w) * 2, np.array([1.0, 3.0, 3.0])) == [(0, (1,)), (0, (2,))]


def test_answers_json_of_a_python_problem(tmp_path) -> None:
    """answers.json gives a python problem's function as one line of the expression language, named
    as its def (what `chainrule grad` and `check --against` accept), beside the source as written;
    and a zero gradient (∂/∂y of cos y at 0 is −sin 0 = −0.0 in floating point) as 0.0."""
    import json

    from chainrule.worksheet import solve_worksheet

    source = "def h(x, y):\n    s = np.sin(x)\n    c = np.cos(y)\n    m = s * c\n    out = m + x\n    return out\n"
    path = tmp_path / "w.toml"
    path.write_text(HEAD + f'[[section.problem]]\nid = "src"\npython = """\n{source}"""\n'
                    'inputs = { x = "pi/2", y = 0 }\ncode = { name = "h", returns = ["out", "hx", "hy"] }\n')
    solve_worksheet(tmp_path / "key", path)
    text = (tmp_path / "key" / "answers.json").read_text()
    entry = json.loads(text)["answers"]["src"]
    assert entry["function"] == "h(x, y) = s = sin(x); c = cos(y); m = s * c; out = m + x"
    assert entry["python"] == source
    assert entry["values"] == {"out": pytest.approx(1 + math.pi / 2), "hx": 1.0, "hy": 0.0}
    assert "-0.0" not in text and math.copysign(1.0, entry["values"]["hy"]) == 1.0
    again = cr.value_and_grad(parse_expr(entry["function"]).function(), argnums=(0, 1))(math.pi / 2, 0.0)
    assert again[0] == pytest.approx(1 + math.pi / 2) and list(again[1]) == pytest.approx([1.0, 0.0])


# ---- the code in the skeleton's form (codegen's return names and provided helpers) ----------------


def test_source_with_the_skeletons_names_and_helper() -> None:
    g = cr.trace(lambda x, y: cr.log(x) * cr.sigmoid(y), x=1.5, y=0.5)
    src = build_program(g).source("layer", returns=["res", "gx", "gy"], provided={"sigmoid": "sig"})
    assert "def _sigmoid" not in src and "sig(y)" in src and src.rstrip().endswith("return res, gx, gy")
    ns: dict = {"sig": lambda v: 1 / (1 + np.exp(-v))}
    exec(src, ns)  # generated code
    out, gx, gy = ns["layer"](np.array(1.5), np.array(0.5))
    s = 1 / (1 + math.exp(-0.5))
    np.testing.assert_allclose([out, gx, gy], [math.log(1.5) * s, s / 1.5, math.log(1.5) * s * (1 - s)])
    for bad in (["res", "gx"], ["res", "gx", "gx"], ["res", "x", "gy"], ["res", "gx", "for"]):
        with pytest.raises(ValueError, match="distinct new names"):
            build_program(g).source("layer", returns=bad)


def test_helper_source_is_the_gates_own_expansion() -> None:
    assert helper_source("sigmoid") == "def sigmoid(x):\n    return 1 / (1 + np.exp(-x))\n"
    for gate in ("sigmoid", "tanh", "relu"):
        ns: dict = {"np": np}
        exec(helper_source(gate), ns)  # generated from the gate table
        x = np.linspace(-3, 3, 7)
        np.testing.assert_allclose(ns[gate](x), getattr(cr, gate)(x).data, rtol=1e-12)


def test_the_readmes_complete_example_is_a_worksheet() -> None:
    """The format as documented: the README's example file loads and is solved, every code checked."""
    import re
    from pathlib import Path

    from chainrule.worksheet import solve_all

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    text = re.search(r"### The format\n.*?```toml\n(.*?)```", readme, flags=re.S).group(1)
    ws = loads(text, "README.md")
    assert [p.id for p in ws.problems] == ["neuron", "staged"]
    solved = solve_all(ws)
    assert all(s.ok for s in solved.values())
    assert solved["staged"].answers["f"] == pytest.approx(1.5456448841, abs=1e-10)
    assert solved["neuron"].derivation is not None and solved["neuron"].descent is not None
