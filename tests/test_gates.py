"""Table-driven tests over every gate in ``chainrule.GATES``.

Each row names a gate, how to draw domain-appropriate float64 inputs, the chainrule call and the
NumPy reference. For every row: the forward equals NumPy; for differentiable rows the first
derivative agrees with central differences (through ``cr.gradcheck`` and through an independent
difference quotient written in ``conftest.py``) and the second derivative (a Hessian-vector
product from nested ``cr.grad``) agrees with central differences of the first derivative.
``test_every_gate_has_a_row`` fails as soon as a gate is added to the table without a row here.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.special as sp
from conftest import gates_in_graph, numeric_grad

import chainrule as cr
from chainrule.functions import logical_not, positive
from chainrule.tensor import apply

Gen = Callable[[np.random.Generator], list[Any]]


@dataclass
class Row:
    """One test case for one gate."""

    gate: str
    id: str
    fn: Callable[..., Any]  # chainrule call on the inputs
    ref: Callable[..., Any]  # NumPy reference on the input arrays
    gen: Gen  # draws the inputs
    argnums: tuple[int, ...] | None = (0,)  # inputs to differentiate; None: forward only


# ---- input generators -------------------------------------------------------------------------


def normal(*shape: int, scale: float = 1.0) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda r: scale * r.standard_normal(shape)


def uniform(lo: float, hi: float, *shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda r: r.uniform(lo, hi, shape)


def positive_(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """Strictly positive, away from 0 (log, sqrt, pow bases)."""
    return uniform(0.5, 2.0, *shape)


def away_from_zero(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """Either sign, at least 0.3 from the kink at 0 (abs, relu, reciprocal)."""
    return lambda r: r.choice([-1.0, 1.0], shape) * r.uniform(0.3, 2.0, shape)


def distinct(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """Values at least 0.1 apart from each other (no ties for max/min)."""
    n = math.prod(shape)
    return lambda r: (r.permutation(n) * 0.25 + r.uniform(0, 0.1, n) - n / 8).reshape(shape)


def apart(*shape: int) -> Gen:
    """A pair x, y with |x - y| >= 0.2 everywhere (no ties for maximum/minimum)."""

    def gen(r: np.random.Generator) -> list[np.ndarray]:
        x = r.standard_normal(shape)
        return [x, x + r.choice([-1.0, 1.0], shape) * r.uniform(0.2, 1.0, shape)]

    return gen


def each(*gens: Callable[[np.random.Generator], Any]) -> Gen:
    return lambda r: [g(r) for g in gens]


def const(value: Any) -> Callable[[np.random.Generator], Any]:
    return lambda r: value


# ---- NumPy references ---------------------------------------------------------------------------


def ref_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def ref_logsumexp(x, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def ref_softmax(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def ref_scatter(g, index, shape):
    out = np.zeros(shape)
    for pos, i in zip(np.ndindex(g.shape), np.asarray(index).reshape(-1)):  # an explicit loop: repeats add
        out[i] += g[pos]
    return out


def ref_unwindow(g, shape, window):
    out = np.zeros(shape)
    for kh in range(window[0]):
        for kw in range(window[1]):
            out[:, kh:kh + g.shape[1], kw:kw + g.shape[2]] += g[..., kh, kw]
    return out


def ref_setitem(x, v, index):
    out = np.array(x, dtype=np.float64, copy=True)
    out[index] = v
    return out


# ---- the table ------------------------------------------------------------------------------------

S = (3, 4)
ROWS: list[Row] = []


def row(*args: Any, **kwargs: Any) -> None:
    ROWS.append(Row(*args, **kwargs))


# elementwise, one input
for name, fn, ref, gen in [
    ("exp", cr.exp, np.exp, uniform(-2, 2, *S)),
    ("log", cr.log, np.log, positive_(*S)),
    ("sin", cr.sin, np.sin, normal(*S, scale=2)),
    ("cos", cr.cos, np.cos, normal(*S, scale=2)),
    ("tan", cr.tan, np.tan, uniform(-1.2, 1.2, *S)),
    ("sqrt", cr.sqrt, np.sqrt, positive_(*S)),
    ("abs", cr.abs, np.abs, away_from_zero(*S)),
    ("square", cr.square, np.square, normal(*S)),
    ("reciprocal", cr.reciprocal, lambda x: 1 / x, away_from_zero(*S)),
    ("neg", cr.negative, np.negative, normal(*S)),
    ("sigmoid", cr.sigmoid, ref_sigmoid, normal(*S, scale=3)),
    ("tanh", cr.tanh, np.tanh, normal(*S)),
    ("relu", cr.relu, lambda x: np.maximum(x, 0), away_from_zero(*S)),
    ("identity", positive, lambda x: x, normal(*S)),
]:
    row(name, name, fn, ref, each(gen))

# the same gates reached through NumPy's own functions and Python operators on tensors
row("exp", "np.exp", np.exp, np.exp, each(normal(5)))
row("log", "np.log 0-d", np.log, np.log, each(lambda r: np.float64(r.uniform(0.5, 2))))
row("sin", "np.sin", np.sin, np.sin, each(normal(2, 3)))
row("sqrt", "np.sqrt", np.sqrt, np.sqrt, each(positive_(4)))
row("abs", "builtin abs", abs, np.abs, each(away_from_zero(4)))
row("abs", "np.abs", np.abs, np.abs, each(away_from_zero(4)))
row("neg", "-x", lambda x: -x, np.negative, each(normal(4)))
row("tanh", "np.tanh", np.tanh, np.tanh, each(normal(4)))
row("identity", "np.positive", np.positive, np.positive, each(normal(4)))
row("square", "np.square", np.square, np.square, each(normal(4)))

# elementwise, two inputs (and broadcasting between them)
for name, fn, ref, gen in [
    ("add", cr.add, np.add, each(normal(*S), normal(*S))),
    ("sub", cr.subtract, np.subtract, each(normal(*S), normal(*S))),
    ("mul", cr.multiply, np.multiply, each(normal(*S), normal(*S))),
    ("div", cr.divide, np.divide, each(normal(*S), away_from_zero(*S))),
    ("pow", cr.power, np.power, each(positive_(*S), uniform(-2, 2, *S))),
    ("maximum", cr.maximum, np.maximum, apart(*S)),
    ("minimum", cr.minimum, np.minimum, apart(*S)),
]:
    row(name, name, fn, ref, gen, argnums=(0, 1))
row("add", "x + y (3,1)+(1,4)", lambda x, y: x + y, np.add, each(normal(3, 1), normal(1, 4)), argnums=(0, 1))
row("sub", "x - y (2,3,4)-(4,)", lambda x, y: x - y, np.subtract, each(normal(2, 3, 4), normal(4)),
    argnums=(0, 1))
row("mul", "x * y (2,3,4)*(4,)", lambda x, y: x * y, np.multiply, each(normal(2, 3, 4), normal(4)),
    argnums=(0, 1))
row("mul", "x * y 0-d * (3,)", lambda x, y: x * y, np.multiply, each(normal(), normal(3)), argnums=(0, 1))
row("mul", "np.multiply (3,1)*(1,4)", np.multiply, np.multiply, each(normal(3, 1), normal(1, 4)),
    argnums=(0, 1))
row("div", "x / y (3,1)/(1,4)", lambda x, y: x / y, np.divide, each(normal(3, 1), away_from_zero(1, 4)),
    argnums=(0, 1))
row("div", "2.5 / x", lambda x: 2.5 / x, lambda x: 2.5 / x, each(away_from_zero(4)))
row("sub", "1 - x", lambda x: 1 - x, lambda x: 1 - x, each(normal(4)))
row("add", "x + 3", lambda x: x + 3, lambda x: x + 3, each(normal(4)))
row("pow", "x ** y (3,1)**(4,)", lambda x, y: x**y, np.power, each(positive_(3, 1), normal(4)), argnums=(0, 1))
row("pow", "x ** 3, negative bases", lambda x: x**3, lambda x: x**3, each(normal(*S)))
row("pow", "x ** -1", lambda x: x**-1, lambda x: x**-1.0, each(away_from_zero(4)))
row("pow", "x ** 0.5", lambda x: x**0.5, np.sqrt, each(positive_(4)))
row("pow", "2.0 ** x", lambda x: 2.0**x, lambda x: 2.0**x, each(normal(4)))
row("pow", "np.power(x, 2)", lambda x: np.power(x, 2), np.square, each(normal(4)))
row("maximum", "np.maximum(x, 0.1)", lambda x: np.maximum(x, 0.1), lambda x: np.maximum(x, 0.1),
    each(away_from_zero(5)))
row("maximum", "maximum (3,1),(1,4)", cr.maximum, np.maximum,
    each(lambda r: r.permutation(3).reshape(3, 1) * 1.0, lambda r: r.permutation(4).reshape(1, 4) + 0.5),
    argnums=(0, 1))
row("minimum", "np.minimum(x, y)", np.minimum, np.minimum, apart(4), argnums=(0, 1))
row("where", "where", cr.where, np.where,
    each(lambda r: r.random(S) > 0.5, normal(*S), normal(*S)), argnums=(1, 2))
row("where", "np.where broadcast", np.where, np.where,
    each(lambda r: r.random((3, 1)) > 0.5, normal(1, 4), normal(3, 4)), argnums=(1, 2))
row("guard", "guard", lambda c, s, x: cr.guard(c, s, x), np.where,
    each(lambda r: r.random(S) > 0.5, normal(*S), normal(*S)), argnums=(1, 2))
row("where", "where(c, x, 0.0)", lambda c, x: cr.where(c, x, 0.0), lambda c, x: np.where(c, x, 0.0),
    each(lambda r: r.random(6) > 0.5, normal(6)), argnums=(1,))

# reductions, every axis form with and without keepdims
R = (2, 3, 4)
for name, fn, ref in [("sum", cr.sum, np.sum), ("mean", cr.mean, np.mean), ("max", cr.max, np.max),
                      ("min", cr.min, np.min), ("logsumexp", cr.logsumexp, ref_logsumexp)]:
    gen = distinct(*R) if name in ("max", "min") else normal(*R)
    for axis in (None, 0, 1, -1, (0, 2)):
        for keepdims in (False, True):
            row(name, f"{name} axis={axis} keepdims={keepdims}",
                lambda x, fn=fn, axis=axis, keepdims=keepdims: fn(x, axis=axis, keepdims=keepdims),
                lambda x, ref=ref, axis=axis, keepdims=keepdims: ref(x, axis=axis, keepdims=keepdims),
                each(gen))
row("sum", "x.sum()", lambda x: x.sum(), np.sum, each(normal(5)))
row("sum", "np.sum axis=[0, 1]", lambda x: np.sum(x, axis=(0, 1)), lambda x: np.sum(x, axis=(0, 1)),
    each(normal(*R)))
row("sum", "sum of 0-d", cr.sum, np.sum, each(normal()))
row("mean", "np.mean axis=1", lambda x: np.mean(x, axis=1), lambda x: np.mean(x, axis=1), each(normal(*S)))
row("max", "x.max(axis=0)", lambda x: x.max(axis=0), lambda x: x.max(axis=0), each(distinct(*S)))
row("max", "np.max", np.max, np.max, each(distinct(*S)))
row("min", "np.min axis=-1", lambda x: np.min(x, axis=-1), lambda x: np.min(x, axis=-1), each(distinct(*S)))
for name, fn, ref in [("softmax", cr.softmax, ref_softmax),
                      ("log_softmax", cr.log_softmax, lambda x, axis=-1: np.log(ref_softmax(x, axis)))]:
    for axis in (-1, 0, 1):
        row(name, f"{name} axis={axis}", lambda x, fn=fn, axis=axis: fn(x, axis=axis),
            lambda x, ref=ref, axis=axis: ref(x, axis=axis), each(normal(*R)))
    row(name, f"{name} 1-D", fn, ref, each(normal(5)))

_LABELS = (np.arange(4), np.array([1, 0, 2, 2]))
row("cross_entropy", "cross_entropy mean", lambda x: apply(cr.GATES["cross_entropy"], x, index=_LABELS, scale=0.25),
    lambda x: -np.mean(np.log(ref_softmax(x))[_LABELS]), each(normal(4, 3, scale=2)))
row("cross_entropy", "cross_entropy sum", lambda x: apply(cr.GATES["cross_entropy"], x, index=_LABELS),
    lambda x: -np.sum(np.log(ref_softmax(x))[_LABELS]), each(normal(4, 3)))
row("cross_entropy", "cr.cross_entropy labels", lambda x: cr.cross_entropy(x, _LABELS[1]),
    lambda x: -np.mean(np.log(ref_softmax(x))[_LABELS]), each(normal(4, 3, scale=3)))

# shape gates
row("reshape", "reshape (3,4)->(2,6)", lambda x: cr.reshape(x, (2, 6)), lambda x: x.reshape(2, 6),
    each(normal(*S)))
row("reshape", "x.reshape(-1)", lambda x: x.reshape(-1), lambda x: x.reshape(-1), each(normal(*R)))
row("reshape", "np.reshape (4,-1,3)", lambda x: np.reshape(x, (4, -1, 3)), lambda x: x.reshape(4, -1, 3),
    each(normal(*R)))
row("reshape", "0-d -> (1,1)", lambda x: cr.reshape(x, (1, 1)), lambda x: np.reshape(x, (1, 1)), each(normal()))
row("transpose", "x.T", lambda x: x.T, lambda x: x.T, each(normal(*S)))
row("transpose", "transpose 3-D", cr.transpose, np.transpose, each(normal(*R)))
row("transpose", "np.transpose axes=(1,2,0)", lambda x: np.transpose(x, (1, 2, 0)),
    lambda x: np.transpose(x, (1, 2, 0)), each(normal(*R)))
row("transpose", "x.transpose(2,0,1)", lambda x: x.transpose(2, 0, 1), lambda x: x.transpose(2, 0, 1),
    each(normal(*R)))
row("transpose", "axes with negatives", lambda x: cr.transpose(x, (-1, 0, 1)),
    lambda x: np.transpose(x, (-1, 0, 1)), each(normal(*R)))
row("broadcast_to", "(3,1)->(2,3,4)", lambda x: cr.broadcast_to(x, (2, 3, 4)),
    lambda x: np.broadcast_to(x, (2, 3, 4)), each(normal(3, 1)))
row("broadcast_to", "()->(3,)", lambda x: np.broadcast_to(x, (3,)), lambda x: np.broadcast_to(x, (3,)),
    each(normal()))
row("broadcast_to", "(4,)->(3,4)", lambda x: cr.broadcast_to(x, (3, 4)), lambda x: np.broadcast_to(x, (3, 4)),
    each(normal(4)))
for label, index in [
    ("x[1]", 1), ("x[-1]", -1), ("x[1:, ::2]", (slice(1, None), slice(None, None, 2))),
    ("x[::-1]", slice(None, None, -1)), ("x[..., 1]", (Ellipsis, 1)), ("x[None, 1:3]", (None, slice(1, 3))),
    ("x[[0, 2, 0, 0]] repeats", [0, 2, 0, 0]),
    ("x[int array, int array] repeats", (np.array([0, 1, 1, 0]), np.array([2, 0, 0, 2]))),
    ("x[:, [3, 3, 1]]", (slice(None), np.array([3, 3, 1]))),
    ("x[bool mask]", np.array([[True, False, True, False], [False, False, True, True], [True] * 4])),
    ("x[bool row mask]", np.array([True, False, True])),
    ("x[2-D int array]", np.array([[0, 1], [1, 1]])),
]:
    row("getitem", label, lambda x, index=index: x[index], lambda x, index=index: x[index], each(normal(*S)))
row("scatter", "repeated indices add", lambda g: cr.scatter(g, index=np.array([0, 3, 0, 0, 2]), shape=(5,)),
    lambda g: ref_scatter(g, [0, 3, 0, 0, 2], (5,)), each(normal(5)))
row("scatter", "2-D target, int index",
    lambda g: cr.scatter(g, index=np.array([2, 0, 2]), shape=(3, 4)),
    lambda g: np.stack([g[1], np.zeros(4), g[0] + g[2]]), each(normal(3, 4)))
for axis in (0, 1, -1):
    row("concatenate", f"concatenate axis={axis}",
        lambda x, y, z, axis=axis: cr.concatenate([x, y, z], axis=axis),
        lambda x, y, z, axis=axis: np.concatenate([x, y, z], axis=axis),
        each(normal(2, 2, 2), normal(2, 2, 2), normal(2, 2, 2)), argnums=(0, 1, 2))
    row("stack", f"stack axis={axis}", lambda x, y, axis=axis: cr.stack([x, y], axis=axis),
        lambda x, y, axis=axis: np.stack([x, y], axis=axis), each(normal(*S), normal(*S)), argnums=(0, 1))
row("concatenate", "np.concatenate of unequal lengths", lambda x, y: np.concatenate([x, y]),
    lambda x, y: np.concatenate([x, y]), each(normal(2, 3), normal(4, 3)), argnums=(0, 1))
row("concatenate", "with a constant", lambda x: cr.concatenate([x, np.ones((1, 3))], axis=0),
    lambda x: np.concatenate([x, np.ones((1, 3))]), each(normal(2, 3)))
row("stack", "np.stack 0-d", lambda x, y: np.stack([x, y]), lambda x, y: np.stack([x, y]),
    each(normal(), normal()), argnums=(0, 1))

# linear algebra
for label, sa, sb in [
    ("1-D @ 1-D", (4,), (4,)), ("1-D @ 2-D", (3,), (3, 4)), ("2-D @ 1-D", (3, 4), (4,)),
    ("2-D @ 2-D", (2, 3), (3, 4)), ("batched", (5, 2, 3), (5, 3, 4)),
    ("batch dims broadcast", (2, 1, 2, 3), (4, 3, 2)), ("3-D @ 2-D", (2, 3, 4), (4, 2)),
    ("2-D @ 3-D", (3, 4), (2, 4, 2)), ("1-D @ 3-D", (3,), (2, 3, 4)), ("3-D @ 1-D", (2, 3, 4), (4,)),
]:
    row("matmul", label, lambda a, b: a @ b, np.matmul, each(normal(*sa), normal(*sb)), argnums=(0, 1))
row("matmul", "np.matmul", np.matmul, np.matmul, each(normal(2, 3), normal(3, 2)), argnums=(0, 1))
row("matmul", "cr.matmul", cr.matmul, np.matmul, each(normal(2, 3), normal(3)), argnums=(0, 1))
row("matmul", "ndarray @ tensor", lambda b: np.arange(6.0).reshape(2, 3) @ b,
    lambda b: np.arange(6.0).reshape(2, 3) @ b, each(normal(3, 2)))
for label, sa, sb in [("vec.vec", (4,), (4,)), ("mat.vec", (3, 4), (4,)), ("mat.mat", (2, 3), (3, 2))]:
    row("matmul", f"dot {label}", cr.dot, np.dot, each(normal(*sa), normal(*sb)), argnums=(0, 1))
row("matmul", "np.dot", np.dot, np.dot, each(normal(3), normal(3, 2)), argnums=(0, 1))
row("matmul", "x.dot(y)", lambda a, b: a.dot(b), np.dot, each(normal(3), normal(3)), argnums=(0, 1))
row("mul", "dot with a scalar", cr.dot, np.dot, each(normal(), normal(3)), argnums=(0, 1))

# non-differentiable gates: forward only (their results are constants for gradients)
with_specials = lambda r: np.array([-2.0, 0.0, 1.5, np.inf, -np.inf, np.nan])  # noqa: E731
for name, fn, ref, gen in [
    ("sign", cr.sign, np.sign, each(normal(*S))),
    ("sign", np.sign, np.sign, each(lambda r: np.array([-1.5, 0.0, 2.0]))),
    ("greater", lambda x, y: x > y, np.greater, each(normal(*S), normal(*S))),
    ("greater_equal", lambda x, y: x >= y, np.greater_equal, each(normal(4), const(np.array([0.0, 1, 2, 3])))),
    ("less", lambda x, y: x < y, np.less, each(normal(*S), normal(4))),
    ("less_equal", cr.less_equal, np.less_equal, each(normal(4), const(0.0))),
    ("equal", lambda x, y: x == y, np.equal, each(const(np.array([1.0, 2, 3])), const(np.array([1.0, 0, 3])))),
    ("not_equal", lambda x, y: x != y, np.not_equal,
     each(const(np.array([1.0, 2, 3])), const(np.array([1.0, 0, 3])))),
    ("logical_not", logical_not, np.logical_not, each(const(np.array([True, False, True])))),
    ("logical_not", lambda c: ~(c > 0), lambda c: ~(c > 0), each(normal(5))),
    ("isfinite", np.isfinite, np.isfinite, each(with_specials)),
    ("isnan", np.isnan, np.isnan, each(with_specials)),
    ("isinf", np.isinf, np.isinf, each(with_specials)),
]:
    row(name, f"{name} {len([r for r in ROWS if r.gate == name])}", fn, ref, gen, argnums=None)


# ---- the NumPy coverage (issue 10) --------------------------------------------------------------


def inside(lo: float, hi: float, *shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return uniform(lo, hi, *shape)


def modulo_pair(*shape: int) -> Gen:
    """x, y with y > 0 and x/y well inside an interval [k, k+1) (no jump of floor/trunc nearby)."""

    def gen(r: np.random.Generator) -> list[np.ndarray]:
        y = r.uniform(1.0, 2.0, shape)
        k = r.integers(-3, 3, shape)
        return [y * (k + r.uniform(0.2, 0.8, shape)), y]

    return gen


for name, fn, ref, gen in [
    ("exp2", cr.exp2, np.exp2, normal(*S)),
    ("expm1", cr.expm1, np.expm1, normal(*S)),
    ("log2", cr.log2, np.log2, positive_(*S)),
    ("log10", cr.log10, np.log10, positive_(*S)),
    ("log1p", cr.log1p, np.log1p, inside(-0.5, 2, *S)),
    ("sinh", cr.sinh, np.sinh, normal(*S)),
    ("cosh", cr.cosh, np.cosh, normal(*S)),
    ("arcsin", cr.arcsin, np.arcsin, inside(-0.8, 0.8, *S)),
    ("arccos", cr.arccos, np.arccos, inside(-0.8, 0.8, *S)),
    ("arctan", cr.arctan, np.arctan, normal(*S, scale=2)),
    ("arcsinh", cr.arcsinh, np.arcsinh, normal(*S, scale=2)),
    ("arccosh", cr.arccosh, np.arccosh, inside(1.2, 3, *S)),
    ("arctanh", cr.arctanh, np.arctanh, inside(-0.8, 0.8, *S)),
    ("cbrt", cr.cbrt, np.cbrt, away_from_zero(*S)),
    ("fabs", cr.fabs, np.fabs, away_from_zero(*S)),
    ("deg2rad", cr.deg2rad, np.deg2rad, normal(*S, scale=90)),
    ("rad2deg", cr.rad2deg, np.rad2deg, normal(*S)),
    ("sinc", cr.sinc, np.sinc, normal(*S)),
]:
    row(name, name, fn, ref, each(gen))
row("fabs", "np.fabs", np.fabs, np.fabs, each(away_from_zero(4)))
row("arctan", "np.arctan", np.arctan, np.arctan, each(normal(4)))
row("deg2rad", "np.radians", np.radians, np.radians, each(normal(3)))
row("rad2deg", "np.degrees", np.degrees, np.degrees, each(normal(3)))
for name, fn, ref, gen in [
    ("logaddexp", cr.logaddexp, np.logaddexp, each(normal(*S), normal(*S))),
    ("logaddexp2", cr.logaddexp2, np.logaddexp2, each(normal(*S), normal(1, 4))),
    ("arctan2", cr.arctan2, np.arctan2, each(normal(*S), away_from_zero(*S))),
    ("hypot", cr.hypot, np.hypot, each(away_from_zero(*S), away_from_zero(*S))),
    ("fmax", cr.fmax, np.fmax, apart(*S)),
    ("fmin", cr.fmin, np.fmin, apart(*S)),
    ("remainder", cr.remainder, np.remainder, modulo_pair(*S)),
    ("fmod", cr.fmod, np.fmod, modulo_pair(*S)),
    ("float_power", cr.float_power, np.float_power, each(positive_(*S), uniform(-2, 2, *S))),
]:
    row(name, name, fn, ref, gen, argnums=(0, 1))
row("remainder", "x % 1.5", lambda x: x % 1.5, lambda x: x % 1.5, each(lambda r: r.uniform(0.2, 1.3, 5)))
row("remainder", "np.mod", np.mod, np.mod, modulo_pair(4), argnums=(0, 1))
row("fmax", "fmax skips NaN", cr.fmax, np.fmax,
    each(normal(4), const(np.array([np.nan, 0.5, np.nan, -3.0]))))
row("logaddexp", "np.logaddexp broadcast", np.logaddexp, np.logaddexp, each(normal(3, 1), normal(4)),
    argnums=(0, 1))

# reductions and scans
for name, fn, ref in [("prod", cr.prod, np.prod), ("var", cr.var, np.var), ("std", cr.std, np.std),
                      ("nansum", cr.nansum, np.nansum), ("nanmean", cr.nanmean, np.nanmean)]:
    for axis in (None, 1, (0, 2)):
        for keepdims in (False, True):
            row(name, f"{name} axis={axis} keepdims={keepdims}",
                lambda x, fn=fn, axis=axis, keepdims=keepdims: fn(x, axis=axis, keepdims=keepdims),
                lambda x, ref=ref, axis=axis, keepdims=keepdims: ref(x, axis=axis, keepdims=keepdims),
                each(uniform(0.5, 1.5, *R) if name == "prod" else normal(*R)))
row("prod", "prod with zeros", lambda x: cr.prod(x, axis=1), lambda x: np.prod(x, axis=1),
    each(const(np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 4.0], [1.5, -2.0, 0.5]]))))
row("prod", "x.prod()", lambda x: x.prod(), np.prod, each(uniform(0.5, 1.5, 4)))
row("var", "np.var ddof=1", lambda x: np.var(x, axis=0, ddof=1), lambda x: np.var(x, axis=0, ddof=1),
    each(normal(*S)))
row("std", "x.std(ddof=1)", lambda x: x.std(ddof=1), lambda x: x.std(ddof=1), each(normal(5)))
row("var", "x.var(axis=1, keepdims=True)", lambda x: x.var(axis=1, keepdims=True),
    lambda x: x.var(axis=1, keepdims=True), each(normal(*S)))
_WITH_NAN = lambda r: np.where(r.random(R) < 0.3, np.nan, r.standard_normal(R))  # noqa: E731
row("nansum", "nansum with NaN", lambda x: cr.nansum(x, axis=2), lambda x: np.nansum(x, axis=2),
    each(_WITH_NAN))
row("nanmean", "nanmean with NaN", lambda x: np.nanmean(x, axis=0), lambda x: np.nanmean(x, axis=0),
    each(lambda r: np.where(np.arange(24).reshape(R) % 5 == 0, np.nan, r.standard_normal(R))))
for name, fn, ref, gen in [("cumsum", cr.cumsum, np.cumsum, normal(*R)),
                           ("cumprod", cr.cumprod, np.cumprod, uniform(0.5, 1.5, *R))]:
    for axis in (None, 0, 1, -1):
        row(name, f"{name} axis={axis}", lambda x, fn=fn, axis=axis: fn(x, axis=axis),
            lambda x, ref=ref, axis=axis: ref(x, axis=axis), each(gen))
row("cumsum", "x.cumsum()", lambda x: x.cumsum(), np.cumsum, each(normal(5)))

# shape and assembly
for axis in (None, 0, (0, 2), -1):
    row("flip", f"flip axis={axis}", lambda x, axis=axis: cr.flip(x, axis=axis),
        lambda x, axis=axis: np.flip(x, axis=axis), each(normal(*R)))
row("flip", "np.fliplr", np.fliplr, np.fliplr, each(normal(*S)))
for shift, axis in [(1, None), (-2, 1), ((1, 2), (0, 2))]:
    row("roll", f"roll {shift} axis={axis}", lambda x, shift=shift, axis=axis: cr.roll(x, shift, axis=axis),
        lambda x, shift=shift, axis=axis: np.roll(x, shift, axis=axis), each(normal(*R)))
for repeats, axis in [(2, None), (3, 1), ([1, 0, 2], 0), (2, -1)]:
    row("repeat", f"repeat {repeats} axis={axis}",
        lambda x, repeats=repeats, axis=axis: np.repeat(x, repeats, axis=axis),
        lambda x, repeats=repeats, axis=axis: np.repeat(x, repeats, axis=axis), each(normal(3, 4)))
row("repeat", "x.repeat(2)", lambda x: x.repeat(2), lambda x: x.repeat(2), each(normal(3)))
for reps in (2, (2, 1), (2, 1, 3)):
    row("tile", f"tile {reps}", lambda x, reps=reps: np.tile(x, reps), lambda x, reps=reps: np.tile(x, reps),
        each(normal(2, 3)))
for label, kw in [("constant 1", {"pad_width": 1}), ("constant ((1,0),(2,1))", {"pad_width": ((1, 0), (2, 1))}),
                  ("constant 3.5", {"pad_width": 1, "constant_values": 3.5}),
                  ("edge", {"pad_width": 2, "mode": "edge"}), ("reflect", {"pad_width": (1, 2), "mode": "reflect"}),
                  ("symmetric", {"pad_width": 2, "mode": "symmetric"}), ("wrap", {"pad_width": 1, "mode": "wrap"})]:
    row("pad", f"pad {label}", lambda x, kw=kw: np.pad(x, **kw), lambda x, kw=kw: np.pad(x, **kw),
        each(normal(3, 4)))
row("pad", "pad NCHW spatial only", lambda x: np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))),
    lambda x: np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), each(normal(2, 1, 3, 3)))
for k in (0, 1, -1):
    row("tril", f"tril k={k}", lambda x, k=k: np.tril(x, k), lambda x, k=k: np.tril(x, k), each(normal(4, 4)))
    row("triu", f"triu k={k}", lambda x, k=k: np.triu(x, k), lambda x, k=k: np.triu(x, k), each(normal(3, 5)))
row("tril", "tril batched", np.tril, np.tril, each(normal(2, 3, 3)))
for args in [(0, 0, 1), (1, 0, 1), (-1, 1, 2)]:
    row("diagonal", f"diagonal {args}", lambda x, args=args: np.diagonal(x, *args),
        lambda x, args=args: np.diagonal(x, *args), each(normal(3, 4, 3)))
row("diag", "diag of a vector", lambda x: np.diag(x), np.diag, each(normal(3)))
row("diag", "diag of a vector k=1", lambda x: np.diag(x, 1), lambda x: np.diag(x, 1), each(normal(3)))
row("diag", "diag of a matrix", lambda x: np.diag(x), np.diag, each(normal(3, 4)))
row("diag", "diag of a matrix k=-1", lambda x: np.diag(x, -1), lambda x: np.diag(x, -1), each(normal(4, 3)))
_ORDER = np.array([[2, 0, 1, 1], [0, 0, 2, 1], [1, 2, 0, 0]])
row("take_along_axis", "take_along_axis axis=1 (repeats)", lambda x: np.take_along_axis(x, _ORDER, axis=1),
    lambda x: np.take_along_axis(x, _ORDER, axis=1), each(normal(3, 3)))
row("take_along_axis", "np.sort", lambda x: np.sort(x, axis=0), lambda x: np.sort(x, axis=0), each(distinct(4, 3)))
row("take_along_axis", "x.sort() in place", lambda x: (lambda y: (y.sort(), y)[1])(x * 1.0),
    lambda x: np.sort(x), each(distinct(2, 5)))
row("sliding_window_view", "windows 1-D", lambda x: np.lib.stride_tricks.sliding_window_view(x, 3),
    lambda x: np.lib.stride_tricks.sliding_window_view(x, 3), each(normal(6)))
row("sliding_window_view", "windows 3x3 on NCHW",
    lambda x: np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3)),
    lambda x: np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3)), each(normal(2, 2, 4, 5)))
row("sliding_window_view", "windows, every second",
    lambda x: np.lib.stride_tricks.sliding_window_view(x, (2, 2))[::2, ::2],
    lambda x: np.lib.stride_tricks.sliding_window_view(x, (2, 2))[::2, ::2], each(normal(4, 4)))
row("unwindow", "unwindow (windows summed back)",
    lambda g: cr.unwindow(g, shape=(2, 4, 5), window_shape=(3, 3), axis=(1, 2)),
    lambda g: ref_unwindow(g, (2, 4, 5), (3, 3)), each(normal(2, 2, 3, 3, 3)))
row("as_strided", "as_strided im2col",
    lambda x: cr.as_strided(x, (2, 2, 3, 3), tuple(x.itemsize * s for s in (5, 1, 5, 1))),
    lambda x: np.lib.stride_tricks.as_strided(x, (2, 2, 3, 3), tuple(8 * s for s in (5, 1, 5, 1))),
    each(normal(4, 5)))
row("as_strided", "as_strided overlapping 1-D",
    lambda x: cr.as_strided(x, shape=(4, 3), strides=(x.itemsize, x.itemsize)),
    lambda x: np.lib.stride_tricks.as_strided(x, shape=(4, 3), strides=(8, 8)), each(normal(6)))
row("setitem", "setitem slice", lambda x, v: cr.setitem(x, v, index=(slice(None), slice(1, 3))),
    lambda x, v: ref_setitem(x, v, (slice(None), slice(1, 3))), each(normal(3, 4), normal(3, 2)), argnums=(0, 1))
row("setitem", "setitem repeated index (last wins)", lambda x, v: cr.setitem(x, v, index=np.array([0, 2, 0])),
    lambda x, v: ref_setitem(x, v, np.array([0, 2, 0])), each(normal(4), normal(3)), argnums=(0, 1))
row("setitem", "setitem broadcast value", lambda x, v: cr.setitem(x, v, index=(np.arange(3), [0, 2, 1])),
    lambda x, v: ref_setitem(x, v, (np.arange(3), [0, 2, 1])), each(normal(3, 3), normal()), argnums=(0, 1))
row("setitem", "x[idx] = v inside f", lambda x, v: (lambda y: (y.__setitem__((0, slice(None)), v), y)[1])(x * 2),
    lambda x, v: ref_setitem(x * 2, v, (0, slice(None))), each(normal(2, 3), normal(3)), argnums=(0, 1))

# linear algebra
for label, spec, shapes in [
    ("matrix product", "ij,jk->ik", [(2, 3), (3, 4)]), ("trace (implicit)", "ii", [(3, 3)]),
    ("diagonal", "ii->i", [(3, 3)]), ("outer", "i,j->ij", [(3,), (2,)]), ("inner (implicit)", "i,i", [(4,), (4,)]),
    ("batched ellipsis", "...ij,...jk->...ik", [(2, 2, 3), (2, 3, 2)]), ("sum all", "ij->", [(2, 3)]),
    ("three operands", "ij,jk,k->i", [(2, 3), (3, 4), (4,)]), ("transpose", "ij->ji", [(2, 3)]),
    ("sum inside one operand", "ij,k->i", [(2, 3), (4,)]), ("broadcast ellipsis", "...i,i->...", [(3, 1, 4), (4,)]),
]:
    row("einsum", f"einsum {label}", lambda *xs, spec=spec: np.einsum(spec, *xs),
        lambda *xs, spec=spec: np.einsum(spec, *xs), each(*[normal(*sh) for sh in shapes]),
        argnums=tuple(range(len(shapes))))


def well_conditioned(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    n = shape[-1]
    return lambda r: r.standard_normal(shape) * 0.3 + 2 * np.eye(n)


def spd_matrix(a):
    """A symmetric positive-definite matrix from any square a (so the gradient is checked for all a)."""
    return a @ np.swapaxes(a, -1, -2) + 3 * np.eye(np.shape(a)[-1])


row("inv", "inv", np.linalg.inv, np.linalg.inv, each(well_conditioned(3, 3)))
row("inv", "inv batched", np.linalg.inv, np.linalg.inv, each(well_conditioned(2, 3, 3)))
row("solve", "solve matrix b", np.linalg.solve, np.linalg.solve, each(well_conditioned(3, 3), normal(3, 2)),
    argnums=(0, 1))
row("solve", "solve vector b", np.linalg.solve, np.linalg.solve, each(well_conditioned(3, 3), normal(3)),
    argnums=(0, 1))
row("solve", "solve batched", np.linalg.solve, np.linalg.solve, each(well_conditioned(2, 3, 3), normal(2, 3, 1)),
    argnums=(0, 1))
row("det", "det", np.linalg.det, np.linalg.det, each(well_conditioned(3, 3)))
row("det", "det batched", np.linalg.det, np.linalg.det, each(well_conditioned(2, 2, 2)))
row("logabsdet", "slogdet", lambda a: np.linalg.slogdet(a)[1], lambda a: np.linalg.slogdet(a)[1],
    each(well_conditioned(3, 3)))
row("cholesky", "cholesky", lambda a: np.linalg.cholesky(spd_matrix(a)), lambda a: np.linalg.cholesky(spd_matrix(a)),
    each(normal(3, 3)))
row("eigh_values", "eigh values", lambda a: np.linalg.eigh(a + a.T)[0], lambda a: np.linalg.eigh(a + a.T)[0],
    each(normal(3, 3)))
row("eigh_values", "eigvalsh", lambda a: np.linalg.eigvalsh(a + a.T), lambda a: np.linalg.eigvalsh(a + a.T),
    each(normal(4, 4)))
row("eigh_vectors", "eigh vectors (squared: free of the sign)", lambda a: np.linalg.eigh(a + a.T)[1] ** 2,
    lambda a: np.linalg.eigh(a + a.T)[1] ** 2, each(normal(3, 3)))
row("svd_s", "svd singular values", lambda a: np.linalg.svd(a, compute_uv=False),
    lambda a: np.linalg.svd(a, compute_uv=False), each(normal(3, 4)))
for sh in [(4, 3), (3, 4), (3, 3)]:
    row("svd_u", f"svd U {sh}", lambda a: np.linalg.svd(a, full_matrices=False)[0] ** 2,
        lambda a: np.linalg.svd(a, full_matrices=False)[0] ** 2, each(normal(*sh)))
    row("svd_vh", f"svd Vh {sh}", lambda a: np.linalg.svd(a, full_matrices=False)[2] ** 2,
        lambda a: np.linalg.svd(a, full_matrices=False)[2] ** 2, each(normal(*sh)))
row("pinv", "pinv tall", np.linalg.pinv, np.linalg.pinv, each(normal(4, 2)))
row("pinv", "pinv wide", np.linalg.pinv, np.linalg.pinv, each(normal(2, 3)))

# non-differentiable: constants for gradients
with_halves = lambda r: np.array([-2.5, -0.5, 0.5, 1.5, 2.7, -1.2])  # noqa: E731
for name, fn, ref, gen in [
    ("floor", np.floor, np.floor, each(with_halves)), ("ceil", np.ceil, np.ceil, each(with_halves)),
    ("rint", np.rint, np.rint, each(with_halves)), ("trunc", np.trunc, np.trunc, each(with_halves)),
    ("fix", np.fix, np.fix, each(with_halves)), ("round", np.round, np.round, each(with_halves)),
    ("round", lambda x: np.round(x, 1), lambda x: np.round(x, 1), each(normal(4))),
    ("floor_divide", lambda x, y: x // y, np.floor_divide, each(normal(4), const(np.array([1.5, 2.0, -1.0, 3.0])))),
    ("logical_and", lambda x, y: (x > 0) & (y > 0), lambda x, y: (x > 0) & (y > 0), each(normal(5), normal(5))),
    ("logical_or", lambda x, y: np.logical_or(x > 0, y > 0), lambda x, y: (x > 0) | (y > 0),
     each(normal(5), normal(5))),
    ("logical_xor", lambda x, y: (x > 0) ^ (y > 0), lambda x, y: (x > 0) ^ (y > 0), each(normal(5), normal(5))),
    ("isneginf", np.isneginf, np.isneginf, each(with_specials)),
    ("isposinf", np.isposinf, np.isposinf, each(with_specials)),
    ("signbit", np.signbit, np.signbit, each(normal(5))),
]:
    row(name, f"{name} {len([r for r in ROWS if r.gate == name])}", fn, ref, gen, argnums=None)

# SciPy's special functions (cr.special, and scipy.special's own ufuncs on tensors)
for name, fn, ref, gen in [
    ("erf", cr.special.erf, sp.erf, normal(*S, scale=1.5)),
    ("erfc", cr.special.erfc, sp.erfc, normal(*S, scale=1.5)),
    ("erfinv", cr.special.erfinv, sp.erfinv, inside(-0.9, 0.9, *S)),
    ("erfcinv", cr.special.erfcinv, sp.erfcinv, inside(0.1, 1.9, *S)),
    ("ndtr", cr.special.ndtr, sp.ndtr, normal(*S, scale=2)),
    ("log_ndtr", cr.special.log_ndtr, sp.log_ndtr, normal(*S, scale=3)),
    ("gammaln", cr.special.gammaln, sp.gammaln, inside(0.3, 4, *S)),
    ("digamma", cr.special.digamma, sp.digamma, inside(0.3, 4, *S)),
    ("gamma", cr.special.gamma, sp.gamma, inside(0.3, 3, *S)),
    ("rgamma", cr.special.rgamma, sp.rgamma, inside(0.3, 3, *S)),
    ("expit", cr.special.expit, sp.expit, normal(*S, scale=3)),
    ("logit", cr.special.logit, sp.logit, inside(0.1, 0.9, *S)),
    ("j0", cr.special.j0, sp.j0, inside(0.2, 12, *S)),
    ("j1", cr.special.j1, sp.j1, inside(0.2, 12, *S)),
    ("y0", cr.special.y0, sp.y0, inside(0.5, 12, *S)),
    ("y1", cr.special.y1, sp.y1, inside(0.5, 12, *S)),
    ("i0", cr.special.i0, sp.i0, normal(*S, scale=3)),
    ("i1", cr.special.i1, sp.i1, normal(*S, scale=3)),
]:
    row(name, f"special.{name}", fn, ref, each(gen))
row("log_ndtr", "log_ndtr far in the left tail", cr.special.log_ndtr, sp.log_ndtr, each(inside(-30, -10, 5)))
row("gammaln", "gammaln of negative x", cr.special.gammaln, sp.gammaln, each(inside(-2.8, -2.2, 5)))
row("gamma", "gamma of negative x", cr.special.gamma, sp.gamma, each(inside(-1.8, -1.2, 5)))
row("digamma", "scipy.special.psi on a tensor", sp.psi, sp.psi, each(inside(0.3, 4, 5)))
row("erf", "scipy.special.erf on a tensor", sp.erf, sp.erf, each(normal(3, 2)))
row("expit", "scipy.special.expit on a tensor", sp.expit, sp.expit, each(normal(5, scale=3)))
for name, fn, ref, n in [("polygamma", cr.special.polygamma, sp.polygamma, 1), ("jn", cr.special.jn, sp.jn, 2),
                         ("yn", cr.special.yn, sp.yn, 2), ("iv", cr.special.iv, sp.iv, 1.5),
                         ("ive", cr.special.ive, sp.ive, 2)]:
    gen = away_from_zero(*S) if name == "ive" else inside(0.5, 6, *S)
    row(name, f"special.{name}({n}, x)", lambda x, fn=fn, n=n: fn(n, x), lambda x, ref=ref, n=n: ref(n, x), each(gen))
row("polygamma", "polygamma(n, x), orders broadcast", cr.special.polygamma, sp.polygamma,
    each(const(np.array([[0], [1], [2]])), inside(0.5, 3, 3, 4)), argnums=(1,))
row("jn", "scipy.special.jn(n, x), orders broadcast", sp.jn, sp.jn,
    each(const(np.array([0, 1, 3, 4])), inside(0.5, 8, 3, 4)), argnums=(1,))
row("yn", "scipy.special.yn(2, x) on a tensor", lambda x: sp.yn(2, x), lambda x: sp.yn(2, x), each(inside(0.5, 8, 4)))
row("iv", "scipy.special.iv(v, x), real orders", sp.iv, sp.iv, each(inside(1, 5, 4), inside(0.5, 6, 3, 4)),
    argnums=(1,))
row("ive", "scipy.special.ive(v, x), real orders", sp.ive, sp.ive, each(inside(1, 5, 4), inside(0.5, 6, 3, 4)),
    argnums=(1,))
row("ive", "scipy.special.ive(v, x), integer orders, both signs", sp.ive, sp.ive,
    each(const(np.array([0.0, 1.0, 2.0, 3.0])), away_from_zero(3, 4)), argnums=(1,))
for name, fn, ref in [("beta", cr.special.beta, sp.beta), ("betaln", cr.special.betaln, sp.betaln)]:
    row(name, f"special.{name}", fn, ref, each(inside(0.5, 3, *S), inside(0.5, 3, *S)), argnums=(0, 1))
    row(name, f"scipy.special.{name} broadcast", getattr(sp, name), ref, each(inside(0.5, 3, 3, 1), inside(0.5, 3, 4)),
        argnums=(0, 1))
row("betainc", "special.betainc(a, b, x)", cr.special.betainc, sp.betainc,
    each(inside(1, 3, *S), inside(1, 3, *S), inside(0.1, 0.9, *S)), argnums=(2,))
row("betainc", "scipy.special.betainc(2.5, 1.5, x)", lambda x: sp.betainc(2.5, 1.5, x),
    lambda x: sp.betainc(2.5, 1.5, x), each(inside(0.1, 0.9, 5)))
for name, fn, ref in [("gammainc", cr.special.gammainc, sp.gammainc),
                      ("gammaincc", cr.special.gammaincc, sp.gammaincc)]:
    row(name, f"special.{name}(a, x)", fn, ref, each(inside(0.5, 3, *S), inside(0.3, 4, *S)), argnums=(1,))
    row(name, f"scipy.special.{name}(1, x)", lambda x, ref=ref: ref(1, x), lambda x, ref=ref: ref(1, x),
        each(inside(0.3, 4, 5)))
row("stdtr", "special.stdtr(df, t)", cr.special.stdtr, sp.stdtr, each(inside(1.5, 6, *S), normal(*S, scale=2)),
    argnums=(1,))
row("gammasgn", "gammasgn", cr.special.gammasgn, sp.gammasgn,
    each(const(np.array([-2.5, -1.5, -0.5, 0.5, 1.5]))), argnums=None)
row("gammasgn", "scipy.special.gammasgn on a tensor", sp.gammasgn, sp.gammasgn, each(normal(4, scale=3)), argnums=None)
#: rows whose order or shape parameter is a float64 array (NumPy's promotion makes float32 inputs float64), or
#: where SciPy itself answers float32 x in float64 (yn, and gammainc/gammaincc with a Python number a)
_SPECIAL_F64_ROWS = {"special.yn(2, x)", "scipy.special.yn(2, x) on a tensor", "scipy.special.gammainc(1, x)",
                     "scipy.special.gammaincc(1, x)", "polygamma(n, x), orders broadcast",
                     "scipy.special.jn(n, x), orders broadcast",
                     "scipy.special.iv(v, x), real orders", "scipy.special.ive(v, x), real orders",
                     "scipy.special.ive(v, x), integer orders, both signs",
                     "special.betainc(a, b, x)", "special.gammainc(a, x)", "special.gammaincc(a, x)",
                     "special.stdtr(df, t)"}

DIFF_ROWS = [r for r in ROWS if r.argnums is not None]


def _draw(r: Row) -> list[Any]:
    return r.gen(np.random.default_rng(zlib.crc32(r.id.encode())))


def _tensors(r: Row, arrays: list[Any]) -> list[Any]:
    nums = r.argnums or tuple(i for i, a in enumerate(arrays) if np.asarray(a).dtype.kind == "f")
    return [cr.tensor(a, requires_grad=True) if i in nums else a for i, a in enumerate(arrays)]


def _loss(r: Row, w: np.ndarray) -> Callable[..., Any]:
    """A scalar loss around the gate, ``sum(w*y + y*y/4)``: a random seed for the gate's backward,
    and a second derivative that is non-zero even for linear gates."""

    def loss(*args: Any) -> Any:
        y = r.fn(*args)
        return (w * y + 0.25 * y * y).sum()

    return loss


def _weights(r: Row, arrays: list[Any]) -> np.ndarray:
    shape = np.shape(r.ref(*arrays))
    return np.random.default_rng(7).standard_normal(shape)


# ---- the tests ----------------------------------------------------------------------------------


def test_every_gate_has_a_row() -> None:
    """Adding a gate to the table without a test row here makes this fail."""
    table = {n for n, g in cr.GATES.items() if g.kind != "custom"}  # (gates users define are theirs)
    missing = table - {r.gate for r in ROWS}
    assert not missing, f"gates without a test row in tests/test_gates.py: {sorted(missing)}"
    unknown = {r.gate for r in ROWS} - set(cr.GATES)
    assert not unknown, f"rows for gates that are not in the table: {sorted(unknown)}"


def test_differentiable_gates_have_derivative_rows() -> None:
    for name, gate in cr.GATES.items():
        if gate.kind == "custom":
            continue
        rows = [r for r in ROWS if r.gate == name]
        if gate.differentiable:
            assert any(r.argnums is not None for r in rows), f"{name} has only forward rows"
        else:
            assert all(r.argnums is None for r in rows), f"{name} is not differentiable: forward rows only"


def test_row_ids_are_unique() -> None:
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_forward_matches_numpy(r: Row) -> None:
    arrays = _draw(r)
    out = r.fn(*_tensors(r, arrays))
    assert isinstance(out, cr.Tensor)
    expected = r.ref(*arrays)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    if r.argnums is None:
        assert not out.requires_grad, f"{r.gate} is not differentiable: its result must be a constant"
    else:
        assert out.requires_grad
        assert r.gate in gates_in_graph(out), f"row {r.id!r} does not exercise the {r.gate} gate"


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_first_derivative_matches_central_differences(r: Row) -> None:
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    value, grads = cr.value_and_grad(loss, argnums=r.argnums)(*arrays)
    np.testing.assert_allclose(value, np.asarray(loss(*arrays).data), rtol=1e-12)
    for k, g in zip(r.argnums, grads):
        assert isinstance(g, np.ndarray) and g.shape == np.shape(arrays[k])
        np.testing.assert_allclose(g, numeric_grad(loss, arrays, k), rtol=1e-5, atol=1e-6,
                                   err_msg=f"d/d(argument {k}) of {r.id}")
    assert cr.gradcheck(lambda *a: loss(*[a[i] if i in r.argnums else arrays[i] for i in range(len(arrays))]),
                        *arrays)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_second_derivative_matches_central_differences(r: Row) -> None:
    """A Hessian-vector product from nested grad equals differences of the gradient along v."""
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    nums = r.argnums
    v = {k: np.random.default_rng(11 + k).standard_normal(np.shape(arrays[k])) for k in nums}
    first = cr.grad(loss, argnums=nums)

    def along_v(*args: Any) -> Any:
        return sum((g * v[k]).sum() for k, g in zip(nums, first(*args)))

    hv = cr.grad(along_v, argnums=nums)(*arrays)
    h = 1e-5

    def shifted(sign: float) -> tuple[np.ndarray, ...]:
        moved = [np.asarray(a, dtype=np.float64) + sign * h * v[i] if i in nums else a for i, a in enumerate(arrays)]
        return first(*moved)

    plus, minus = shifted(1.0), shifted(-1.0)
    for j, k in enumerate(nums):
        numeric = (plus[j] - minus[j]) / (2 * h)
        assert hv[j].shape == np.shape(arrays[k])
        np.testing.assert_allclose(hv[j], numeric, rtol=1e-4, atol=1e-6, err_msg=f"H·v block {k} of {r.id}")


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_forward_mode_matches_differences_and_reverse_mode(r: Row) -> None:
    """cr.jvp of the gate along random tangents equals central differences of the gate along them, and
    ⟨w, J·t⟩ from forward mode equals ⟨Jᵀ·w, t⟩ from reverse mode (the forward-mode column)."""
    arrays = _draw(r)
    nums = r.argnums
    t = {k: np.random.default_rng(23 + k).standard_normal(np.shape(arrays[k])) for k in nums}

    def fn(*xs: Any) -> Any:
        full = list(arrays)
        for k, x in zip(nums, xs):
            full[k] = x
        return r.fn(*full)

    primals = tuple(np.asarray(arrays[k], dtype=np.float64) for k in nums)
    out, tout = cr.jvp(fn, primals, tuple(t[k] for k in nums))
    assert np.shape(tout) == np.shape(out)
    h = 1e-6
    plain = lambda y: np.asarray(y.data if isinstance(y, cr.Tensor) else y)  # noqa: E731
    plus = plain(fn(*[p + h * t[k] for p, k in zip(primals, nums)]))
    minus = plain(fn(*[p - h * t[k] for p, k in zip(primals, nums)]))
    np.testing.assert_allclose(tout, (plus - minus) / (2 * h), rtol=1e-5, atol=1e-6, err_msg=f"J·t of {r.id}")
    w = np.random.default_rng(29).standard_normal(np.shape(out))
    _, pull = cr.vjp(fn, *primals)
    back = pull(w)
    np.testing.assert_allclose(np.sum(w * tout), sum(np.sum(b * t[k]) for b, k in zip(back, nums)),
                               rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_forward_over_reverse_matches_reverse_over_reverse(r: Row) -> None:
    """cr.hvp (forward mode over the gradient) equals H·v from nested reverse mode."""
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    nums = r.argnums
    v = {k: np.random.default_rng(11 + k).standard_normal(np.shape(arrays[k])) for k in nums}

    def of(*xs: Any) -> Any:
        full = list(arrays)
        for k, x in zip(nums, xs):
            full[k] = x
        return loss(*full)

    primals = tuple(np.asarray(arrays[k], dtype=np.float64) for k in nums)
    fwd = cr.hvp(of, primals, tuple(v[k] for k in nums))
    first = cr.grad(of, argnums=tuple(range(len(nums))))
    rev = cr.grad(lambda *xs: sum((g * v[k]).sum() for g, k in zip(first(*xs), nums)),
                  argnums=tuple(range(len(nums))))(*primals)
    for a, b in zip(fwd, rev):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


# ---- closed forms of second derivatives: cr.grad(cr.grad(f)) ----------------------------------

_X = np.array([0.3, 0.9, 1.7])


@pytest.mark.parametrize("f, d2", [
    (cr.sin, lambda x: -np.sin(x)),
    (cr.cos, lambda x: -np.cos(x)),
    (cr.exp, np.exp),
    (cr.log, lambda x: -1 / x**2),
    (cr.sqrt, lambda x: -0.25 * x**-1.5),
    (cr.tan, lambda x: 2 * np.tan(x) / np.cos(x) ** 2),
    (cr.reciprocal, lambda x: 2 / x**3),
    (cr.square, lambda x: 2 + 0 * x),
    (cr.sigmoid, lambda x: ref_sigmoid(x) * (1 - ref_sigmoid(x)) * (1 - 2 * ref_sigmoid(x))),
    (cr.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    (lambda x: x**3, lambda x: 6 * x),
    (lambda x: 2.0**x, lambda x: np.log(2.0) ** 2 * 2.0**x),
    (lambda x: x * x * x, lambda x: 6 * x),
], ids=["sin", "cos", "exp", "log", "sqrt", "tan", "reciprocal", "square", "sigmoid", "tanh", "x**3",
        "2**x", "x*x*x"])
def test_grad_of_grad_closed_forms(f: Callable[..., Any], d2: Callable[..., Any]) -> None:
    np.testing.assert_allclose(cr.grad(cr.grad(f))(_X), d2(_X), rtol=1e-10, atol=1e-12)
    for x in _X:  # scalar inputs too
        np.testing.assert_allclose(cr.grad(cr.grad(f))(float(x)), d2(x), rtol=1e-10, atol=1e-12)


def test_third_derivative_of_sin() -> None:
    np.testing.assert_allclose(cr.grad(cr.grad(cr.grad(cr.sin)))(_X), -np.cos(_X), rtol=1e-10)


def test_mixed_partials_of_pow() -> None:
    """∂²(xʸ)/∂y∂x = xʸ⁻¹(1 + y ln x), both through the exponent and the base."""
    x, y = 1.7, 0.6
    fx = cr.grad(lambda x, y: x**y, argnums=0)
    dxy = cr.grad(lambda y, x: fx(x, y))(y, x)
    np.testing.assert_allclose(dxy, x ** (y - 1) * (1 + y * np.log(x)), rtol=1e-10)


# ---- composites: the fused gate and its staged expansion agree --------------------------------


@pytest.mark.parametrize("name", sorted(n for n, g in cr.GATES.items() if g.expand is not None))
def test_expanded_composites_agree_with_fused(name: str) -> None:
    r = next(r for r in ROWS if r.gate == name and r.argnums is not None)
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    fused_value, fused_grad = cr.value_and_grad(loss)(*arrays)
    with cr.expanded():
        x = cr.tensor(arrays[0], requires_grad=True)
        staged = r.fn(x)
        assert name not in gates_in_graph(staged), f"{name} was not expanded into its parts"
        value, grad = cr.value_and_grad(loss)(*arrays)
    np.testing.assert_allclose(value, fused_value, rtol=1e-12)
    np.testing.assert_allclose(grad, fused_grad, rtol=1e-9, atol=1e-12)


# ---- numerical stability at large |x| -----------------------------------------------------------

_SMALL = np.array([[0.5, -1.0, 2.0, 0.0], [3.0, 1.0, -2.0, 0.25]])


@pytest.mark.parametrize("shift", [1000.0, -1000.0, 0.0])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_stable_for_large_inputs(shift: float, axis: int) -> None:
    """softmax, log_softmax and logsumexp are shift-invariant/equivariant: exact at |x| ~ 1000,
    with finite gradients, compared against NumPy on the unshifted (small) values."""
    x = _SMALL + shift
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(cr.softmax(x, axis=axis).data, ref_softmax(_SMALL, axis), rtol=1e-12)
        np.testing.assert_allclose(cr.log_softmax(x, axis=axis).data, np.log(ref_softmax(_SMALL, axis)),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cr.logsumexp(x, axis=axis).data, ref_logsumexp(_SMALL, axis) + shift,
                                   rtol=1e-12)
        for fn in (lambda t: cr.softmax(t, axis=axis), lambda t: cr.log_softmax(t, axis=axis),
                   lambda t: cr.logsumexp(t, axis=axis)):
            w = np.random.default_rng(3).standard_normal(fn(_SMALL).shape)
            g = cr.grad(lambda t, fn=fn, w=w: (fn(t) * w).sum())(x)
            g_small = cr.grad(lambda t, fn=fn, w=w: (fn(t) * w).sum())(_SMALL)
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, g_small, rtol=1e-9, atol=1e-12)


def test_softmax_with_mixed_huge_values() -> None:
    x = np.array([1000.0, -1000.0, 999.0, 0.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = cr.softmax(x).data
        ls = cr.log_softmax(x).data
        lse = cr.logsumexp(x).item()
    e = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(s, [e, 0.0, 1 - e, 0.0], atol=1e-300, rtol=1e-12)
    np.testing.assert_allclose(ls, [np.log(e), -2000 - np.log1p(np.exp(-1)), np.log(1 - e),
                                    -1000 - np.log1p(np.exp(-1))], rtol=1e-12)
    np.testing.assert_allclose(lse, 1000 + np.log1p(np.exp(-1)), rtol=1e-15)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer here
        assert np.isneginf(cr.logsumexp(np.array([-np.inf, -np.inf])).item())


@pytest.mark.parametrize("x", [1000.0, -1000.0, 40.0, -40.0, 745.0, -745.0])
def test_sigmoid_stable_for_large_inputs(x: float) -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = cr.value_and_grad(cr.sigmoid)(x)
    # σ(x) = exp(-log(1 + e⁻ˣ)), written so that neither branch loses the tiny tail
    exact = math.exp(-math.log1p(math.exp(-x))) if x >= 0 else math.exp(x - math.log1p(math.exp(x)))
    assert np.isfinite(value) and np.isfinite(grad)
    np.testing.assert_allclose(value, exact, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(grad, exact * (1 - exact), rtol=1e-6, atol=1e-300)


_F64_CONSTANT_ROWS = {"with a constant", "ndarray @ tensor", "fmax skips NaN", "cholesky",
                      "float_power"} | _SPECIAL_F64_ROWS  # (np.float_power computes in float64 by definition)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_float32_stays_float32(r: Row) -> None:
    """Every gate keeps float32 inputs in float32, forward and backward."""
    arrays = [np.asarray(a, dtype=np.float32) if i in r.argnums else a for i, a in enumerate(_draw(r))]
    tensors = [cr.tensor(a, requires_grad=True) if i in r.argnums else a for i, a in enumerate(arrays)]
    out = r.fn(*tensors)
    # NumPy's promotion rules hold: a float64 *array* constant makes the result float64
    want = np.float64 if r.id in _F64_CONSTANT_ROWS else np.float32
    assert out.dtype == want, f"{r.id}: forward gave {out.dtype}"
    out.backward(np.ones(out.shape, dtype=out.dtype))
    for k in r.argnums:
        assert tensors[k].grad.dtype == np.float32
    np.testing.assert_allclose(out.data, r.ref(*[np.asarray(a, dtype=np.float64) if i in r.argnums else a
                                                 for i, a in enumerate(arrays)]), rtol=2e-5, atol=2e-6)


# ---- documented conventions at kinks and ties ---------------------------------------------------


def test_ties_share_the_gradient_and_kinks_give_zero() -> None:
    np.testing.assert_array_equal(cr.grad(cr.max)(np.array([1.0, 3.0, 3.0])), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(cr.grad(cr.min)(np.array([2.0, 2.0, 2.0, 5.0])), [1 / 3, 1 / 3, 1 / 3, 0.0])
    np.testing.assert_array_equal(cr.grad(lambda x: cr.max(x, axis=1))(np.array([[1.0, 3, 3], [2, 2, 0]])),
                                  [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    assert cr.grad(cr.maximum, argnums=(0, 1))(2.0, 2.0) == (0.5, 0.5)
    assert cr.grad(cr.minimum, argnums=(0, 1))(2.0, 2.0) == (0.5, 0.5)
    np.testing.assert_array_equal(cr.grad(cr.relu)(np.array([-1.0, 0.0, 1.0])), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(cr.grad(cr.abs)(np.array([-1.0, 0.0, 1.0])), [-1.0, 0.0, 1.0])


def test_sinc_and_cumprod_at_zero() -> None:
    """sinc's gradient at 0 is 0 (its limit); cumprod and prod stay exact where inputs are 0."""
    np.testing.assert_allclose(cr.grad(lambda x: cr.sinc(x).sum())(np.array([0.0, 0.5])),
                               [0.0, (np.cos(np.pi * 0.5) - np.sinc(0.5)) / 0.5])
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    w = np.array([1.0, -2.0, 0.5, 1.5, 3.0])
    f = lambda x: (cr.cumprod(x) * w).sum()  # noqa: E731
    np.testing.assert_allclose(cr.grad(f)(x), numeric_grad(f, [x], 0), atol=1e-8)
    np.testing.assert_allclose(cr.grad(lambda x: cr.prod(x))(np.array([2.0, 0.0, 3.0])), [0.0, 6.0, 0.0])


def test_where_condition_gets_no_gradient_and_safe_branches_avoid_nan() -> None:
    x = np.array([-1.0, 0.0, 4.0])
    g = cr.grad(lambda t: cr.where(t > 0, t * 2, -t))(x)
    np.testing.assert_array_equal(g, [-1.0, -1.0, 2.0])
    # the documented safe pattern: make the unused branch harmless first
    with np.errstate(all="raise"):
        g = cr.grad(lambda t: cr.where(t > 0, cr.sqrt(cr.where(t > 0, t, 1.0)), 0.0))(x)
    np.testing.assert_allclose(g, [0.0, 0.0, 0.25])


# ---- one tensor feeding several inputs of the same gate: the gradients from each input add up ----

@pytest.mark.parametrize("f", [
    lambda x: x + x, lambda x: x - x * 2, lambda x: x * x, lambda x: x / (x + 3), lambda x: x**x,
    lambda x: cr.maximum(x, x), lambda x: x @ x, lambda x: cr.where(np.eye(2) > 0, x, x * 3),
    lambda x: cr.concatenate([x, x]), lambda x: cr.stack([x, x * x], axis=1), lambda x: x[[0, 1, 0]] * x[0],
], ids=["add", "sub", "mul", "div", "pow", "maximum", "matmul", "where", "concatenate", "stack", "getitem"])
def test_same_tensor_in_several_inputs_of_one_gate(f) -> None:
    x0 = np.array([[1.0, 2.0], [3.0, 0.5]])
    w = np.random.default_rng(5).standard_normal(np.shape(f(x0)))
    loss = lambda x: (f(x) * w).sum()  # noqa: E731
    np.testing.assert_allclose(cr.grad(loss)(x0), numeric_grad(loss, [x0], 0), rtol=1e-6, atol=1e-8)
    assert cr.gradcheck(loss, x0)


#: rows whose gate reads positions computed from the values (a sort's order): compile refuses them
_VALUE_DEPENDENT = {"np.sort", "x.sort() in place"}


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_compiled_loss_matches_value_and_grad(r: Row) -> None:
    """Every gate through cr.compile (its program lowered, the gate's helpers included): the same
    value and gradients as the eager engine, or, where the trace cannot hold the computation (a
    sort's order), the refusal that says so."""
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    fast = cr.compile(loss, argnums=r.argnums)
    if r.id in _VALUE_DEPENDENT:
        with pytest.raises(ValueError, match="does not trace to one fixed computation"):
            fast(*arrays)
        return
    value, grads = cr.value_and_grad(loss, argnums=r.argnums)(*arrays)
    got_value, got_grads = fast(*arrays)
    np.testing.assert_allclose(got_value, value, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, grads):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_printed_function_matches_value_and_grad(r: Row) -> None:
    """Every gate in generated code: ``cr.trace(...).to_source()`` of the loss around it, run, gives
    the eager engine's value and gradients (the arguments not differentiated are constants of it)."""
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    names = [f"a{k}" for k in r.argnums]
    scope: dict[str, Any] = {"loss": loss, "arrays": arrays}
    exec(f"def wrapped({', '.join(names)}):\n"  # noqa: S102 - a fixed wrapper: the differentiated arguments
         f"    args = list(arrays)\n"
         + "".join(f"    args[{k}] = a{k}\n" for k in r.argnums)
         + "    return loss(*args)\n", scope)
    src = cr.trace(scope["wrapped"], **{f"a{k}": arrays[k] for k in r.argnums}).to_source("g")
    ns: dict[str, Any] = {}
    exec(src, ns)  # noqa: S102 - code chainrule generated
    got = ns["g"](*[arrays[k] for k in r.argnums])
    value, grads = cr.value_and_grad(loss, argnums=r.argnums)(*arrays)
    np.testing.assert_allclose(got[0], value, rtol=1e-10, atol=1e-12)
    for g, w in zip(got[1:], grads):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10)
