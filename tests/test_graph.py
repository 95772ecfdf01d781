"""Tracing and the text views: staged equations (golden text for the worksheet's questions 1, 3
and 4), the forward/backward table (its numbers against the engine and the worksheet's
hand-derived answers for question 2), names, expansion, eager tensors, arrays and the backward
graph. Regenerate the golden files with ``CHAINRULE_UPDATE_GOLDEN=1 pytest tests/test_graph.py``
and read the diff before committing it."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import numeric_grad
from worksheet_functions import complex_layer
from worksheet_functions import q2a as q1a
from worksheet_functions import q2b as q1b
from worksheet_functions import q2c as q1c

import chainrule as cr
from chainrule.graph import fmt_value

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CHAINRULE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text + "\n" == expected, f"{name} differs from the golden text:\n{text}"


# ---- the worksheet's functions, written as a student would -------------------------------------


def sigmoid_staged(x):  # question 3, as the worksheet splits it
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = c ** -1
    out = d
    return out


Q2_INPUTS = {
    "a": (q1a, {"x": 1.0, "y": 3.0, "z": 2.0}),
    "b": (q1b, {"x": 3.0, "y": 1.0, "z": 2.0}),
    "c": (q1c, {"x": math.e, "y": math.pi / 2, "z": 2.0}),
}

# hand-derived on paper: (value, d/dx, d/dy, d/dz)
Q2_ANSWERS = {
    "a": (8.0, 2.0, 2.0, 4.0),  # (x+y)z; z, z, x+y
    "b": (88.0, 48.0, 16.0, 132.0),  # (x²+2y)z³; 2x·z³, 2z³, 3z²(x²+2y)
    "c": (4 + 4 * math.e, 4 / math.e + 4, 0.0, 0.0),  # 2(ln x+sin y)/x + 4, 2(ln x+sin y)cos y, 0
}


# ---- staged text (golden) --------------------------------------------------------------------


@pytest.mark.parametrize("part", ["a", "b", "c"])
def test_q1_staged_golden(part: str) -> None:
    f, inputs = Q2_INPUTS[part]
    check_golden(f"q1{part}_staged.txt", cr.trace(f, **inputs).staged())


def test_q1_staged_without_values() -> None:
    g = cr.trace(q1a, x=1.0, y=3.0, z=2.0)
    assert g.staged(values=False) == "t1 = x + y\nout = t1 * z"
    assert g.staged().splitlines()[0] == "t1 = x + y      (= 4)"


def test_q3_sigmoid_staged_golden() -> None:
    expanded = cr.trace(lambda x: cr.sigmoid(x), x=2.0, expand=True)
    fused = cr.trace(lambda x: cr.sigmoid(x), x=2.0)
    by_hand = cr.trace(sigmoid_staged, x=2.0)
    check_golden("q3_sigmoid_expanded.txt", expanded.staged())
    check_golden("q3_sigmoid_fused.txt", fused.staged())
    check_golden("q3_sigmoid_worksheet.txt", by_hand.staged())
    assert [e.op for e in expanded.equations] == ["neg", "exp", "add", "reciprocal"]
    assert [e.name for e in by_hand.equations] == ["a", "b", "c", "d"]  # f's own local names
    assert [e.op for e in fused.equations] == ["sigmoid"]
    # the same numbers either way; question 3's answers: about 0.1, then x = 2 - 0.2·grad
    for g in (expanded, fused, by_hand):
        assert g.value == pytest.approx(1 / (1 + math.exp(-2)))
        assert g.grads["x"] == pytest.approx(0.10499358540350652)
        assert 2 - 0.2 * g.grads["x"] == pytest.approx(1.979001282919)


def test_q4_complex_layer_staged_golden() -> None:
    fused = cr.trace(complex_layer, x=1.5, y=0.5)
    expanded = cr.trace(complex_layer, x=1.5, y=0.5, expand=True)
    check_golden("q4_complex_layer_staged.txt", fused.staged())
    check_golden("q4_complex_layer_expanded.txt", expanded.staged())
    assert len(fused.ops) == 8  # the TA's 8 equations
    assert expanded.value == pytest.approx(fused.value)
    for k in ("x", "y"):
        assert expanded.grads[k] == pytest.approx(fused.grads[k])
        assert fused.grads[k] == pytest.approx(numeric_grad(complex_layer, [1.5, 0.5], "xy".index(k)), rel=1e-6)


def test_q2a_table_golden() -> None:
    check_golden("q2a_table.txt", cr.trace(q1a, **Q2_INPUTS["a"][1]).table())


# ---- the table's numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["a", "b", "c"])
def test_q2_table_matches_engine_and_hand_derivation(part: str) -> None:
    f, inputs = Q2_INPUTS[part]
    g = cr.trace(f, **inputs)
    value, *grads = Q2_ANSWERS[part]
    assert g.value == pytest.approx(value)
    engine = cr.grad(f, argnums=(0, 1, 2))(*inputs.values())
    for name, hand, eng in zip("xyz", grads, engine):
        assert g.grads[name] == pytest.approx(hand, abs=1e-12)
        assert g.grads[name] == pytest.approx(eng, abs=1e-12)
    table = g.table()
    for name, hand in zip("xyz", grads):  # the table states each answer
        assert f"∂out/∂{name} = " in table
        line = next(ln for ln in table.splitlines() if ln.strip().startswith(f"∂out/∂{name} ="))
        assert line.split("(")[0].rstrip().endswith(fmt_value(hand))
    # every backward step: the local gradients, chained, add up to the engine's gradient
    steps = g.backward_steps()
    assert [s.node.name for s in steps] == [n.name for n in reversed(g.ops)]
    received: dict[str, float] = {}
    for s in steps:
        assert s.upstream == pytest.approx(g[s.node.name].grad)
        for p in s.parts:
            if p.rule is not None:
                assert p.grad == pytest.approx(s.upstream * p.local)
            received[p.input.name] = received.get(p.input.name, 0.0) + float(p.grad)
    for n in g.nodes:
        if n.kind != "const" and n is not g.output:
            assert received.get(n.name, 0.0) == pytest.approx(float(n.grad), abs=1e-12)


def test_table_shows_rules_in_words_and_symbols() -> None:
    t = cr.trace(q1a, x=1.0, y=3.0, z=2.0).table()
    # local gradients are labelled and written ∂node/∂input; totals are ∂out/∂input, unlabelled; at the
    # output node the local one is written on the gate's expression, so the two never share a symbol
    assert "local     ∂(t1 * z)/∂t1 = z = 2   →  ∂out/∂t1 = 1 × 2 = 2" in t
    local = {ln.split("local")[1].split("=")[0].strip() for ln in t.splitlines() if "local  " in ln}
    total = {ln.split("→")[1].split("=")[0].strip() for ln in t.splitlines() if "→" in ln}
    assert local and total and not local & total
    assert cr.GATES["mul"].idea in t and cr.GATES["add"].idea in t
    assert "local     ∂t1/∂x = 1" in t and "∂out/∂x = 2 × 1 = 2" in t
    tc = cr.trace(q1c, **Q2_INPUTS["c"][1]).table()
    assert "∂t2/∂y = cos(y) = cos(1.5708) = 0" in tc
    assert "∂t1/∂x = 1/x = 1/2.71828 = 0.367879" in tc
    # x is used twice: the table adds its two gradients
    assert "∂out/∂x = 4 + 1.47152 = 5.47152" in tc and "x is used 2 times" in tc
    ts = cr.trace(lambda x: cr.sigmoid(x), x=2.0).table()
    assert "∂σ(x)/∂x = out·(1 − out) = 0.880797·(1 − 0.880797) = 0.104994" in ts
    assert cr.GATES["sigmoid"].idea in ts


def test_table_states_rules_in_the_learners_own_names() -> None:
    """Issue 13 item 3: `t4 = z ** 3` reads ∂t4/∂z = 3z² = 12 (the gate's rule, evaluated in the
    learner's names and then at the numbers), never the gate's generic letters."""
    def q2b(x, y, z):
        s = x ** 2 + 2 * y
        t4 = z ** 3
        return s * t4

    t = cr.trace(q2b, x=3.0, y=1.0, z=2.0).table()
    assert "∂t4/∂z = 3z² = 3·2² = 12   →  ∂out/∂z = 11 × 12 = 132" in t
    assert "∂(xʸ)" not in t and "y·xʸ⁻¹" not in t  # the pow gate's generic letters
    assert "the exponent comes down" in t
    tsin = cr.trace(lambda y: np.sin(y) * 2, y=0.5).table()
    assert "∂t1/∂y = cos(y)" in tsin and "cos x" not in tsin
    # a negative operand is bracketed where the numbers are put in
    tneg = cr.trace(lambda w: w ** 2, w=-4.0).table()
    assert "∂(w ** 2)/∂w = 2w = 2·(−4) = -8" in tneg


def test_fan_out_of_an_intermediate_is_added() -> None:
    def f(x):
        a = x * 3
        return a * a + a

    g = cr.trace(f, x=2.0)
    assert g["a"].grad == pytest.approx(2 * 6 + 1)
    t = g.table()
    assert "∂t1/∂a = a = 6" in t  # one share per use
    assert "upstream  ∂out/∂a = 1 + 6 + 6 = 13   (a is used 3 times" in t


# ---- names, constants ---------------------------------------------------------------------------


def test_names_come_from_locals_then_evaluation_order() -> None:
    def f(x, y):
        q = x + y
        return q * np.exp(x) * 2

    g = cr.trace(f, x=1.0, y=2.0)
    assert [e.name for e in g.equations] == ["q", "t1", "t2", "out"]
    assert [n.name for n in g.inputs] == ["x", "y"]
    assert g.staged(values=False).splitlines()[-1] == "out = t2 * 2"
    assert [n.kind for n in g.nodes].count("const") == 1  # the 2 is a constant, not an input
    assert cr.trace(f, x=1.0, y=2.0).staged() == g.staged()  # deterministic


def test_negative_constants_read_unambiguously() -> None:
    g = cr.trace(lambda x: (x - (-2.5)) * -1, x=1.0)
    assert g.staged(values=False) == "t1 = x - (-2.5)\nout = t1 * -1"


def test_equations_as_data() -> None:
    g = cr.trace(q1b, x=3.0, y=1.0, z=2.0)
    eqs = g.equations
    assert [(e.name, e.op, e.inputs) for e in eqs] == [
        ("t1", "pow", ("x", "2")), ("t2", "mul", ("2", "y")), ("t3", "add", ("t1", "t2")),
        ("t4", "pow", ("z", "3")), ("out", "mul", ("t3", "t4")),
    ]
    assert [float(e.value) for e in eqs] == [9.0, 2.0, 11.0, 8.0, 88.0]
    assert [float(e.grad) for e in eqs] == [8.0, 8.0, 8.0, 11.0, 1.0]


# ---- arrays, eager tensors, params ------------------------------------------------------------


def test_array_inputs(rng: np.random.Generator) -> None:
    W, x = rng.standard_normal((3, 4)), rng.standard_normal(4)

    def layer(W, x):
        h = W @ x
        return cr.sum(cr.relu(h), axis=0)

    g = cr.trace(layer, W=W, x=x)
    assert g.staged(values=False) == "h = W @ x\nt1 = relu(h)\nout = sum(t1, axis=0)"
    np.testing.assert_allclose(g.grads["W"], numeric_grad(layer, [W, x], 0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.grads["x"], numeric_grad(layer, [W, x], 1), rtol=1e-6, atol=1e-9)
    t = g.table()
    assert "∂t1/∂h = [h > 0]" in t and "matmul gate" in t and f"∂out/∂x = {fmt_value(g.grads['x'])}" in t
    big = cr.trace(lambda a: cr.sum(a * 2), a=np.arange(100.0).reshape(10, 10))
    assert fmt_value(big.inputs[0].value).startswith("(10, 10) [[0, 1, ..., 8, 9],")


def test_eager_tensors_and_trace_of_a_tensor() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True, name="x")
    out = (x + 3) * np.exp(x)
    g1, g2 = out.graph(), cr.trace(out)
    assert g1.staged() == g2.staged()
    assert [e.name for e in g1.equations] == ["t1", "t2", "out"]
    np.testing.assert_allclose(g1.grads["x"], (np.array([1.0, 2.0]) + 4) * np.exp([1.0, 2.0]))
    assert "x is used 2 times" in g1.table()
    assert x.grad is None  # tracing does not touch the leaves' .grad


def test_params_show_in_staged_text(rng: np.random.Generator) -> None:
    def f(a):
        b = a.reshape(2, 3)
        return cr.sum(cr.softmax(b, axis=0)[0, 1:] * b.T[1:, :1].sum(axis=1, keepdims=True).T)

    g = cr.trace(f, a=rng.standard_normal(6))
    text = g.staged(values=False)
    assert "b = reshape(a, (2, 3))" in text and "softmax(b, axis=0)" in text and "t1[0, 1:]" in text
    assert "sum(" in text and "keepdims=True" in text
    assert cr.trace(f, a=g.inputs[0].value).table()  # every gate kind prints


# ---- the backward pass as a graph ----------------------------------------------------------------


def test_backward_graph_shows_what_backward_computed() -> None:
    g = cr.trace(q1a, x=1.0, y=3.0, z=2.0)
    bg = g.backward_graph()
    assert bg.staged(values=False).splitlines() == [
        "t1 = x + y", "out = t1 * z", "dt1 = dout * z", "dx = dt1", "dy = dt1", "dz = dout * t1",
    ]
    assert [o.name for o in bg.outputs] == ["out", "dx", "dy", "dz"]
    assert [float(bg[k].value) for k in ("dx", "dy", "dz")] == [2.0, 2.0, 4.0]
    assert not bg.has_grads and "no gradients" in bg.table()
    # question 3 by hand: the backward graph is the worksheet's `fx` computation
    bs = cr.trace(sigmoid_staged, x=2.0).backward_graph()
    assert bs["dx"].value == pytest.approx(0.10499358540350652)
    assert bs.staged(values=False).splitlines()[-1] == "dx = -da"
    for part, (f, inputs) in Q2_INPUTS.items():
        b = cr.trace(f, **inputs).backward_graph()
        assert [float(b[f"d{k}"].value) for k in "xyz"] == pytest.approx(Q2_ANSWERS[part][1:], abs=1e-12)


def test_graph_without_gradient_path() -> None:
    g = cr.trace(lambda x: x * 0 + 3, x=1.0)
    assert g.grads["x"] == 0.0
    c = cr.trace(lambda x: np.float64(3.0), x=1.0)
    assert c.output.kind == "const" and c.staged() == "out = 3"
    assert "∂out/∂x = 0   (not used)" in c.table()
    with pytest.raises(ValueError, match="no backward pass"):
        c.backward_graph()


def test_eager_graph_takes_the_callers_variable_names() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    w = cr.tensor(3.0, requires_grad=True)
    h = x * w
    out = np.exp(h).sum()
    g = out.graph()
    assert [n.name for n in g.inputs] == ["x", "w"]
    assert [e.name for e in g.equations] == ["h", "t1", "out"]
    np.testing.assert_allclose(g.grads["w"], (np.exp(h.data) * x.data).sum())


# ---- masks computed from the inputs: forward-only nodes ----------------------------------------


def test_a_comparison_on_an_input_is_a_staged_forward_only_node():
    g = cr.trace(lambda z: cr.where(z > 0, z, 0.1 * z), 2.0)
    assert g.staged(values=False) == "t1 = z > 0\nt2 = 0.1 * z\nout = where(t1, z, t2)"
    mask = g["t1"]
    assert mask.op == "greater" and [i.name for i in mask.inputs] == ["z", "0"] and mask.grad is None
    assert g.grads["z"] == 1.0
    assert g.to_dot().count("node-t1") >= 1
    table = g.table()
    assert "t1  = z > 0" in table
    assert "∂out/∂t1" not in table  # the condition gets no gradient
    assert "z is used 2 times" in table  # z > 0 sends nothing back: only where and 0.1 * z count
    g = cr.trace(lambda z: cr.where(z > 0, z, 0.1 * z), -2.0)
    assert g.grads["z"] == pytest.approx(0.1)


def test_relu_like_product_with_a_mask():
    g = cr.trace(lambda z: z * (z > 0), np.array([-1.5, 2.0]))
    assert g.staged(values=False) == "t1 = z > 0\nout = z * t1"
    np.testing.assert_array_equal(g.grads["z"], [0.0, 1.0])
    assert "∂out/∂t1" not in g.table()
    assert [s.node.name for s in g.backward_steps()] == ["out"]


def test_nan_safe_sqrt_has_finite_gradients_and_both_masks():
    x = np.array([-1.0, 0.0, 4.0])
    g = cr.trace(lambda x: cr.where(x > 0, cr.sqrt(cr.where(x > 0, x, 1.0)), 0.0), x)
    assert [n.op for n in g.ops] == ["greater", "greater", "where", "sqrt", "where"]
    np.testing.assert_array_equal(g.grads["x"], [0.0, 0.0, 0.25])  # 1/(2√4), 0 elsewhere
    bg = g.backward_graph()
    assert "where(t1, 1, 0)" in bg.staged(values=False)


def test_mask_tensors_need_no_gradient_and_backward_never_visits_them():
    from chainrule.autodiff import run_backward

    x = cr.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    m = x > 0
    assert m.requires_grad is False and m.is_leaf and x.is_leaf
    y = (x * m).sum()
    assert not y.is_leaf
    grads = run_backward(y, accumulate=False, keep_all=True, retain_graph=True)
    assert id(m) not in grads and id(x) in grads
    y.backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0])
    relu = x * m
    # eager code records no mask (a mask never keeps a graph alive): it reads as a constant there,
    # while a traced function shows it as a step
    assert relu.graph().staged(values=False) == "relu = x * c1"
    assert cr.trace(lambda x: x * (x > 0), x=x.data).staged(values=False) == "t1 = x > 0\nout = x * t1"
    with cr.no_grad():  # nothing recorded without a graph
        assert (x > 0)._gate is None
    c = cr.tensor([1.0, -1.0])  # a genuine constant: its comparison stays a constant
    assert (c > 0)._gate is None
    s = cr.sign(x)  # a float result made into a leaf of its own
    s.requires_grad_()
    assert s.is_leaf and s._gate is None and s.requires_grad


def test_where_with_a_float_condition_that_requires_grad():
    x = cr.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    out = cr.where(x, x * 2, x * 3).sum()  # the condition is read by its truth value, as np.where does
    out.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 3.0, 2.0])


def test_table_brackets_a_negative_factor() -> None:
    """``upstream × local`` with a negative local gradient reads ``-6 × (-2)``, not ``-6 × -2``."""
    g = cr.trace(lambda x, y: (x * y) * (x + y) ** 2, x=2.0, y=-3.0)
    table = g.table()
    assert "→  ∂out/∂t3 = 1 × (-6) = -6" in table
    assert "→  ∂out/∂t2 = -6 × (-2) = 12" in table
    assert " × -" not in table
