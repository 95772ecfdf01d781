"""Exact answers (``--exact``, sympy): the seed worksheet's answers in a teaching assistant's form
(4 + 4e, 4/e + 4, σ(2)(1 − σ(2))), checked against closed forms written here; the derivation of the
sigmoid's derivative stage by stage; and every elementwise gate's exact value and gradient,
obtained from the gate table's own rules on sympy numbers, against the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

sp = pytest.importorskip("sympy")

import chainrule as cr  # noqa: E402
from chainrule.gates import GATES  # noqa: E402
from chainrule.worksheet import SEED, load, solve_all  # noqa: E402
from chainrule.worksheet import exact as X  # noqa: E402

SIG2 = 1 / (1 + math.exp(-2.0))


@pytest.fixture(scope="module")
def seed():
    return solve_all(load(SEED), exact=True)


def test_q2_exact_answers_as_a_ta_writes_them(seed) -> None:
    q2c = seed["q2c"].exact
    assert {k: e.text for k, e in q2c.items()} == {"out": "4 + 4e", "gx": "4/e + 4", "gy": "0", "gz": "0"}
    assert q2c["out"].expr == 4 + 4 * sp.E and q2c["gx"].expr == 4 / sp.E + 4
    assert q2c["out"].latex == "4 + 4 e" and q2c["gx"].latex == r"\frac{4}{e} + 4"
    assert {k: e.text for k, e in seed["q2b"].exact.items()} == {"out": "88", "hx": "48", "hy": "16", "hz": "132"}


def test_q3_sigmoid_in_its_own_form(seed) -> None:
    s = seed["q3"]
    out, fx = s.exact["out"], s.exact["fx"]
    assert (out.form_text, fx.form_text) == ("σ(2)", "σ(2)(1 − σ(2))")
    assert fx.text == "e⁻²/(e⁻² + 1)²"
    assert fx.form_latex == r"\sigma\left(2\right) \left(1 - \sigma\left(2\right)\right)"
    assert float(sp.N(fx.expr)) == pytest.approx(SIG2 * (1 - SIG2), rel=1e-14)
    step = s.descent_exact["x"]
    assert step.form_text == "2 − 0.2·σ(2)(1 − σ(2))"
    assert float(sp.N(step.expr)) == pytest.approx(2 - 0.2 * SIG2 * (1 - SIG2), rel=1e-14)


def test_q3_derivation_stage_by_stage(seed) -> None:
    d = seed["q3"].derivation
    assert [eq.text for eq, _ in d.stages] == ["a = −x", "b = exp(a)", "c = 1 + b", "d = c⁻¹"]
    assert [loc[0].text for _, loc in d.stages] == ["∂a/∂x = −1", "∂b/∂a = b", "∂c/∂b = 1", "∂d/∂c = −c⁻²"]
    chain = {step.text.split(" = ")[0]: (step.text, ins.text, value) for step, ins, value in d.chain}
    assert chain["∂d/∂x"] == ("∂d/∂x = −∂d/∂a", "e^(−x)/(1 + e^(−x))²", "0.104994")
    assert chain["∂d/∂a"][0] == "∂d/∂a = ∂d/∂b·b"
    assert d.results[-1].text == "∂d/∂x = σ(x)(1 − σ(x))"
    assert "sympy confirms" in d.notes[0]
    x = sp.Symbol("x", real=True)  # independently: the product of the four local derivatives
    product = (-1 / (1 + sp.exp(-x)) ** 2) * 1 * sp.exp(-x) * (-1)
    assert sp.simplify(product - 1 / (1 + sp.exp(-x)) * (1 - 1 / (1 + sp.exp(-x)))) == 0


def test_exact_values_are_read_exactly_and_safely() -> None:
    assert X.exact_value("0.2") == sp.Rational(1, 5)
    assert X.exact_value("pi/2") == sp.pi / 2 and X.exact_value("e") == sp.E
    assert X.exact_value("sqrt(2)") == sp.sqrt(2) and X.exact_value("-3") == -3
    for bad in ("x + 1", "__import__('os')", "1; 2"):
        with pytest.raises(Exception) as err:
            X.exact_value(bad)
        assert not isinstance(err.value, (NameError, AttributeError))


@pytest.mark.parametrize("name", [n for n, g in GATES.items() if g.kind == "elementwise" and g.local
                                  and n not in ("where", "guard", "identity")
                                  and getattr(g.forward, "__module__", "") != "chainrule.gates.special"])
def test_every_elementwise_gate_exactly_from_its_own_rules(name: str) -> None:
    """The sympy namespace is built from the table, so each gate's exact value and gradient come
    from its own forward and rule; at rational points they equal the engine's decimals."""
    from chainrule.tensor import apply

    gate = GATES[name]
    arity = len(gate.local)
    inside = "3/5" if name in ("arcsin", "arccos", "arctanh") else "7/5"  # in the gate's domain
    point = {"x": "7/5", "y": "3/4"} if arity == 2 else {"x": inside}
    fn = (lambda x: apply(gate, x)) if arity == 1 else (lambda x, y: apply(gate, x, y))
    g = cr.trace(fn, **{k: float(sp.Rational(v)) for k, v in point.items()})
    eg = X.exact_graph(g, {k: sp.Rational(v) for k, v in point.items()})  # max's comparisons too
    assert X.agrees(eg.values["out"], g.output.value)
    for n in g.inputs:
        assert X.agrees(eg.grads[n.name], n.grad), (name, n.name, eg.grads[n.name], n.grad)


def test_exact_answers_for_a_random_expression_agree_with_the_engine(rng) -> None:
    from chainrule.expr import parse

    text = "q = x * y + sin(x); r = q / (1 + exp(-y)); r^2 - sqrt(y) * ln(x)"
    e = parse(text)
    for _ in range(3):
        px, py = (sp.Rational(int(v), 8) for v in rng.integers(4, 24, size=2))
        g = cr.trace(e.function(), x=float(px), y=float(py))
        eg = X.exact_graph(g, {"x": px, "y": py})
        assert X.agrees(eg.values[g.output.name], g.output.value)
        for n in g.inputs:
            assert X.agrees(eg.grads[n.name], n.grad)


def test_the_seed_key_with_exact_answers(tmp_path) -> None:
    from chainrule.worksheet import solve_worksheet

    res = solve_worksheet(tmp_path, exact=True)
    md = res.report.read_text()
    assert "| out | 14.8731 | 4 + 4e |" in md and "| gx = ∂g/∂x | 5.47152 | 4/e + 4 |" in md
    assert "σ(2)(1 − σ(2))" in md and "(exactly 2 − 0.2·σ(2)(1 − σ(2)))" in md
    assert r"\frac{\partial d}{\partial x} &= \sigma\left(x\right) \left(1 - \sigma\left(x\right)\right)" in md
    assert "disagrees" not in md and res.ok
    assert np.isclose(res.answers["q3"]["values"]["fx"], SIG2 * (1 - SIG2))


MAX_SHEET = """
title = "max and relu, exactly"
[[section]]
title = "1"
[[section.problem]]
id = "lin"
function = "p = a*x; q = p + y; f = max(q, 0) * z"
constants = { a = 4 }
inputs = { x = 1, y = -2, z = 3 }
answer = ["staged", "gradients", "derivation"]
code = { name = "lin", returns = ["out", "kx", "ky", "kz"] }
[[section.problem]]
id = "r"
function = "f(x, y) = relu(x - y) + abs(y)"
inputs = { x = 3, y = -1 }
[[section.problem]]
id = "rneg"
function = "f(x, y) = relu(x - y) * 2 + 7/2"
inputs = { x = 1, y = 3 }
"""


def test_max_and_relu_exactly_as_numbers() -> None:
    """The max gate's rule (comparisons of exact numbers) gives exact values, and relu at a number is
    that number: by hand, q = 4·1 − 2 = 2 > 0, so f = 2·3 = 6, ∂f/∂x = z·a = 12, ∂f/∂y = 3, ∂f/∂z = 2;
    relu(3 − (−1)) + |−1| = 5 with ∂/∂x = 1, ∂/∂y = −1 + sign(−1) = −2; relu(1 − 3)·2 + 7/2 = 7/2."""
    from chainrule.worksheet import loads

    solved = solve_all(loads(MAX_SHEET), exact=True)
    lin = solved["lin"]
    assert {k: e.text for k, e in lin.exact.items()} == {"out": "6", "kx": "12", "ky": "3", "kz": "2"}
    assert not [n for n in lin.notes if "exact" in n.lower()]
    assert {k: e.expr for k, e in solved["r"].exact.items()} == {"out": 5, "dx": 1, "dy": -2}
    assert solved["r"].exact["out"].text == "5"
    assert solved["rneg"].exact["out"].text == "7/2" and solved["rneg"].exact["dx"].expr == 0
    # in terms of the inputs max has no single formula: said plainly, with no library's words in it
    notes = " ".join(lin.derivation.notes)
    assert "max gate" in notes and "BooleanAtom" not in notes and "(" not in notes


def test_composites_stay_whole_where_their_value_is_not_simpler() -> None:
    relu, sigmoid = X.opaque("relu"), X.opaque("sigmoid")
    assert relu(sp.Rational(3, 2)) == sp.Rational(3, 2) and relu(-sp.pi) == 0
    assert X.to_text(sigmoid(2)) == "σ(2)"
    x = sp.Symbol("x", real=True)
    assert X.to_text(relu(x)) == "relu(x)"
