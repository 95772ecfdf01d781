"""The symbolic ops namespace: every gate rule evaluated on stand-ins prints as it reads, and the
printed text means what the rule computes on arrays (checked by evaluating the expression tree
and by running the NumPy-style text as code in a closed namespace)."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule import backend
from chainrule.gates import GATES
from chainrule.gates.special import constant_inputs
from chainrule.symbolic import Sym, const, neg, ops, sym, to_text

ELEMENTWISE = [name for name, g in GATES.items() if g.local is not None]


def _inputs(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    n = len(GATES[name].local)
    vals = [rng.uniform(0.5, 2.0, 4) for _ in range(n)]
    if name == "where":
        vals[0] = np.array([True, False, True, False])
    if name in ("maximum", "minimum"):
        vals[1][0] = vals[0][0]  # a tie: the rule shares the gradient there
    for i in constant_inputs(GATES[name]):  # orders and shape parameters: whole numbers, as yn needs
        vals[i] = rng.integers(1, 4, 4).astype(np.float64)
    if name in ("erfinv", "logit", "betainc"):  # defined on (-1, 1) or (0, 1)
        vals[-1] = vals[-1] / 2.5
    return vals


def _run_code(text: str, env: dict[str, object]) -> object:
    # our own generated code, run with no builtins: a check that the NumPy printer writes valid NumPy
    names: dict[str, object] = {"__builtins__": {}, "np": np}
    if "scipy.special." in text:  # a special-function gate's rule calls SciPy
        import scipy.special

        names["scipy"] = scipy
    return eval(compile(text, "<symbolic>", "eval"), names, dict(env))  # noqa: S307


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_local_rules_print_and_mean_what_they_compute(name: str, rng: np.random.Generator) -> None:
    gate = GATES[name]
    vals = _inputs(name, rng)
    out = gate.fn(*vals)
    names = ["c", "x", "y"] if name == "where" else ["x", "y", "z"][: len(vals)]
    env = dict(zip(names, vals)) | {"out": out}
    syms = [sym(n, shape=v.shape) for n, v in zip(names, vals)]
    for rule in gate.local:
        if rule is None or getattr(rule, "no_gradient", False):  # an input that takes no gradient (an order)
            continue
        expected = np.broadcast_to(rule(backend.array_ops, *vals, out), out.shape)
        expr = rule(ops, *syms, sym("out", shape=out.shape))
        got = expr.evaluate(env) if isinstance(expr, Sym) else expr
        np.testing.assert_allclose(np.broadcast_to(got, out.shape), expected, rtol=1e-12)
        code = np.broadcast_to(_run_code(to_text(expr, "numpy"), env), out.shape)
        np.testing.assert_allclose(code, expected, rtol=1e-12)
        assert to_text(expr, "math")  # prints something readable


@pytest.mark.parametrize("rule, math, code", [
    (lambda: GATES["mul"].local[0](ops, sym("t1"), sym("z"), sym("out")), "z", "z"),
    (lambda: GATES["sin"].local[0](ops, sym("y"), sym("t2")), "cos(y)", "np.cos(y)"),
    (lambda: GATES["sigmoid"].local[0](ops, sym("x"), sym("out")), "out·(1 − out)", "out * (1 - out)"),
    (lambda: GATES["pow"].local[0](ops, sym("x"), const(2), sym("t1")), "2x", "2 * x"),
    (lambda: GATES["pow"].local[0](ops, sym("z"), const(3), sym("t4")), "3z²", "3 * z ** 2"),
    (lambda: GATES["pow"].local[0](ops, sym("c"), const(-1), sym("d")), "−c⁻²", "-c ** -2"),
    (lambda: GATES["pow"].local[0](ops, sym("t5"), const(2), sym("t6")), "2·t5", "2 * t5"),
    (lambda: GATES["div"].local[1](ops, sym("a"), sym("b"), sym("out")), "−a/b²", "-a / b ** 2"),
    (lambda: GATES["relu"].local[0](ops, sym("x"), sym("out")), "[x > 0]", "x > 0"),
    (lambda: GATES["abs"].local[0](ops, sym("x"), sym("out")), "sign(x)", "np.sign(x)"),
    (lambda: GATES["maximum"].local[0](ops, sym("x"), sym("y"), sym("out")),
     "[x > y] + 0.5·[x = y]", "(x > y) + 0.5 * (x == y)"),
    (lambda: GATES["where"].local[1](ops, sym("c"), sym("x"), sym("y"), sym("out")),
     "where(c, 1, 0)", "np.where(c, 1.0, 0.0)"),
    (lambda: GATES["log"].local[0](ops, sym("x"), sym("out")), "1/x", "1 / x"),
    (lambda: GATES["cos"].local[0](ops, sym("x"), sym("out")), "−sin(x)", "-np.sin(x)"),
])
def test_rules_read_like_a_ta_wrote_them(rule, math: str, code: str) -> None:
    expr = rule()
    assert to_text(expr, "math") == math
    assert to_text(expr, "numpy") == code


def test_simplifications_and_precedence() -> None:
    x, y = sym("x"), sym("y")
    assert str(x * 1) == "x" and str(1 * x) == "x" and str(x + 0) == "x" and str(x / 1) == "x"
    assert str(x ** 1) == "x" and str(neg(neg(x))) == "x" and str(-1 * x) == "−x"
    assert str(const(-1) - 1) == "−2"
    assert to_text((x + y) * (x - y), "numpy") == "(x + y) * (x - y)"
    assert to_text(x - (y - x), "numpy") == "x - (y - x)"
    assert to_text(x / (y * x), "numpy") == "x / (y * x)"
    assert to_text((-x) ** 2, "numpy") == "(-x) ** 2"
    assert to_text(x ** (y + 1), "math") == "x^(y + 1)"
    assert to_text(ops.exp(x + y), "numpy", np_prefix="xp") == "xp.exp(x + y)"
    with pytest.raises(TypeError, match="truth value"):
        bool(x > y)
    with pytest.raises(ValueError, match="no known shape"):
        _ = x.shape
    assert (x * y + ops.cos(x)).leaves() == ["x", "y"]


VJP_CASES = [
    ("sum", [(3, 4)], {"axis": 1, "keepdims": False}),
    ("sum", [(3, 4)], {"axis": None, "keepdims": False}),
    ("mean", [(3, 4)], {"axis": 0, "keepdims": True}),
    ("max", [(3, 4)], {"axis": 1, "keepdims": False}),
    ("min", [(5,)], {"axis": None, "keepdims": False}),
    ("logsumexp", [(2, 3)], {"axis": -1, "keepdims": False}),
    ("softmax", [(2, 3)], {"axis": -1}),
    ("log_softmax", [(2, 3)], {"axis": 0}),
    ("reshape", [(2, 6)], {"shape": (3, -1)}),
    ("transpose", [(2, 3, 4)], {"axes": (1, 2, 0)}),
    ("transpose", [(2, 3)], {"axes": None}),
    ("broadcast_to", [(3, 1)], {"shape": (2, 3, 4)}),
    ("getitem", [(5, 3)], {"index": (np.array([0, 2, 2]), slice(1, None))}),
    ("matmul", [(2, 3), (3, 4)], {}),
    ("matmul", [(3,), (2, 3, 4)], {}),
    ("concatenate", [(2, 3), (4, 3)], {"axis": 0}),
    ("stack", [(2, 3), (2, 3)], {"axis": 1}),
]


@pytest.mark.parametrize("name, shapes, params", VJP_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(VJP_CASES)])
def test_vjp_rules_evaluate_symbolically(name: str, shapes, params, rng: np.random.Generator) -> None:
    gate = GATES[name]
    vals = [rng.standard_normal(s) for s in shapes]
    out = gate.fn(*vals, **params)
    g = rng.standard_normal(out.shape)
    needs = [True] * len(vals)
    expected = gate.vjp(backend.array_ops, g, *vals, out, needs, **params)
    names = [f"x{i}" for i in range(len(vals))]
    syms = [sym(n, shape=v.shape) for n, v in zip(names, vals)]
    got = gate.vjp(ops, sym("g", shape=g.shape), *syms, sym("out", shape=out.shape), needs, **params)
    env = dict(zip(names, vals)) | {"g": g, "out": out}
    for e, s, v in zip(expected, got, vals):
        assert s.shape == v.shape  # shapes inferred through every op of the rule
        np.testing.assert_allclose(s.evaluate(env), e, rtol=1e-12)
        assert to_text(s, "math") and to_text(s, "numpy")


def test_matmul_rule_prints_as_transposes() -> None:
    a, b, g = sym("A", (2, 3)), sym("B", (3, 4)), sym("dout", (2, 4))
    ga, gb = GATES["matmul"].vjp(ops, g, a, b, sym("out", (2, 4)), [True, True])
    assert (str(ga), str(gb)) == ("dout @ Bᵀ", "Aᵀ @ dout")
    assert (ga.text("numpy"), gb.text("numpy")) == ("dout @ B.T", "A.T @ dout")
