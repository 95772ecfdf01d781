"""chainrule's differentiable functions (``cr.exp``, ``cr.sum``, ...), named like NumPy's.

Each is a thin call of :func:`chainrule.tensor.apply` on one gate-table entry. This module is also
the *ops namespace* in which the gate rules run when the backward pass builds a graph of its own
(``create_graph=True``), so every name a rule uses (``m.exp``, ``m.sum``, ``m.scatter``, ...) lives here.
It also holds the maps from NumPy's ufuncs and functions to these, used by the tensor's dispatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .gates import GATES
from .tensor import Tensor, apply, apply1, binary_op

ArrayLike = Any

_G = GATES


def _unary(name: str, doc: str) -> Any:
    gate = _G[name]

    def fn(x: ArrayLike) -> Tensor:
        return apply1(gate, x)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc}\n\nGradient: {gate.explain}."
    return fn


exp = _unary("exp", "Elementwise eˣ.")
log = _unary("log", "Elementwise natural logarithm ln x.")
sin = _unary("sin", "Elementwise sine.")
cos = _unary("cos", "Elementwise cosine.")
tan = _unary("tan", "Elementwise tangent.")
sqrt = _unary("sqrt", "Elementwise square root.")
abs = _unary("abs", "Elementwise absolute value.")  # noqa: A001 - NumPy's name
absolute = abs
square = _unary("square", "Elementwise x².")
reciprocal = _unary("reciprocal", "Elementwise 1/x.")
negative = _unary("neg", "Elementwise -x.")
sigmoid = _unary("sigmoid", "Logistic sigmoid σ(x) = 1/(1+e⁻ˣ), numerically stable for large |x|.")
tanh = _unary("tanh", "Elementwise hyperbolic tangent.")
relu = _unary("relu", "Rectified linear unit max(x, 0).")
positive = _unary("identity", "The input unchanged (a node of its own in the graph).")
sign = _unary("sign", "Elementwise sign (a constant for gradients).")
logical_not = _unary("logical_not", "Elementwise not (a constant for gradients).")
isfinite = _unary("isfinite", "Elementwise finiteness test (a constant).")
isnan = _unary("isnan", "Elementwise NaN test (a constant).")
isinf = _unary("isinf", "Elementwise infinity test (a constant).")


def _binary(name: str, doc: str) -> Any:
    gate = _G[name]
    fn = binary_op(gate)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc}\n\nGradient: {gate.explain}."
    return fn


add = _binary("add", "Elementwise x + y (broadcasting).")
subtract = _binary("sub", "Elementwise x - y (broadcasting).")
multiply = _binary("mul", "Elementwise x * y (broadcasting).")
divide = _binary("div", "Elementwise x / y (broadcasting).")
power = _binary("pow", "Elementwise x ** y; the exponent may be a tensor too.")
maximum = _binary("maximum", "Elementwise maximum of x and y.")
minimum = _binary("minimum", "Elementwise minimum of x and y.")
matmul = _binary("matmul", "Matrix product x @ y (1-D, 2-D and batched, as np.matmul).")
greater = _binary("greater", "x > y (a constant for gradients).")
greater_equal = _binary("greater_equal", "x >= y (a constant for gradients).")
less = _binary("less", "x < y (a constant for gradients).")
less_equal = _binary("less_equal", "x <= y (a constant for gradients).")
equal = _binary("equal", "x == y (a constant for gradients).")
not_equal = _binary("not_equal", "x != y (a constant for gradients).")


def where(condition: ArrayLike, x: ArrayLike, y: ArrayLike) -> Tensor:
    """Elementwise ``x`` where ``condition`` holds, else ``y``; the condition gets no gradient.

    Both branches are computed everywhere, so a branch that is NaN or infinite where it is *not*
    chosen still poisons the gradient (0 · inf = NaN). Make the unused inputs harmless first:
    ``cr.where(x > 0, cr.sqrt(cr.where(x > 0, x, 1.0)), 0.0)``.
    """
    if isinstance(condition, Tensor) and condition.requires_grad:
        condition = not_equal(condition, 0)  # its truth value (as np.where reads it): a mask, no gradient
    return apply(_G["where"], condition, x, y)


def _reduce(name: str, doc: str) -> Any:
    gate = _G[name]

    def fn(x: ArrayLike, axis: int | Sequence[int] | None = None, keepdims: bool = False, **kw: Any) -> Tensor:
        _no_extras(f"np.{name}", kw)
        if isinstance(axis, list):
            axis = tuple(axis)
        return apply(gate, x, axis=axis, keepdims=keepdims)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc} over ``axis`` (all axes when None), keeping reduced axes if ``keepdims``.\n\n" \
                 f"Gradient: {gate.explain}."
    return fn


sum = _reduce("sum", "Sum")  # noqa: A001 - NumPy's name
mean = _reduce("mean", "Mean")
max = _reduce("max", "Maximum")  # noqa: A001
min = _reduce("min", "Minimum")  # noqa: A001
logsumexp = _reduce("logsumexp", "log Σ exp(x), computed stably for large |x|,")
amax, amin = max, min


def softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """exp(x) / Σ exp(x) along ``axis``, stable for large |x|."""
    return apply(_G["softmax"], x, axis=axis)


def log_softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """x − logsumexp(x) along ``axis``, stable for large |x|."""
    return apply(_G["log_softmax"], x, axis=axis)


def cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of ``logits`` (n, classes) against integer ``labels`` (n,): −log softmax(x)[y].

    ``reduction`` is "mean" (default), "sum" or "none" (one loss per row). Computed stably (no
    overflow for large logits) by one fused gate whose gradient is softmax(x) − one-hot(y).
    """
    x = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    y = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    check_class_labels("cross_entropy", x, y, "logits")
    index = (np.arange(y.shape[0]), y)
    if reduction == "none":
        return -log_softmax(logits, axis=-1)[index]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    scale = 1.0 / y.shape[0] if reduction == "mean" and y.shape[0] else 1.0  # (max() is shadowed here)
    return apply(_G["cross_entropy"], logits, index=index, scale=scale)


def check_class_labels(who: str, x: Any, y: Any, what: str = "scores") -> None:
    """Raise one clear error unless ``y`` holds one integer class index per row of the 2-D ``x``."""
    if x.ndim != 2:
        raise ValueError(f"{who}: {what} must be 2-D (samples, classes), got shape {x.shape}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"{who}: labels must have shape ({x.shape[0]},), one per row of the {what} "
                         f"{x.shape}, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{who}: labels must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"{who}: labels must lie in 0..{x.shape[1] - 1} (the {what} have "
                         f"{x.shape[1]} classes), got labels from {y.min()} to {y.max()}")


def _no_extras(name: str, kw: dict[str, Any]) -> None:
    bad = [k for k, v in kw.items() if v is not None and k not in ("order", "copy")]
    if bad:
        raise TypeError(f"{name}: argument(s) {', '.join(bad)} are not supported on chainrule tensors")


def reshape(x: ArrayLike, shape: int | Sequence[int], **kw: Any) -> Tensor:
    """The same values in a new shape (one dimension may be -1)."""
    _no_extras("np.reshape", kw)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return apply(_G["reshape"], x, shape=shape)


def transpose(x: ArrayLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None)."""
    return apply(_G["transpose"], x, axes=None if axes is None else tuple(axes))


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    nd = np.ndim(x.data if isinstance(x, Tensor) else x)
    axes = list(range(nd))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return transpose(x, axes)


def broadcast_to(x: ArrayLike, shape: int | Sequence[int], **kw: Any) -> Tensor:
    """Broadcast to ``shape``; the gradient sums over the copies."""
    _no_extras("np.broadcast_to", kw)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return apply(_G["broadcast_to"], x, shape=shape)


def expand_dims(x: ArrayLike, axis: int) -> Tensor:
    """Insert a length-1 axis at ``axis``."""
    shape = list(np.shape(x.data if isinstance(x, Tensor) else x))
    shape.insert(axis % (len(shape) + 1), 1)
    return reshape(x, shape)


def squeeze(x: ArrayLike, axis: int | Sequence[int] | None = None) -> Tensor:
    """Remove length-1 axes (all of them, or those in ``axis``)."""
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    return reshape(x, np.squeeze(data, axis=axis).shape)


def concatenate(arrays: Sequence[ArrayLike], axis: int = 0, **kw: Any) -> Tensor:
    """Join a sequence of arrays along an existing axis."""
    _no_extras("np.concatenate", kw)
    return apply(_G["concatenate"], *arrays, axis=axis)


def stack(arrays: Sequence[ArrayLike], axis: int = 0, **kw: Any) -> Tensor:
    """Join a sequence of same-shaped arrays along a new axis."""
    _no_extras("np.stack", kw)
    return apply(_G["stack"], *arrays, axis=axis)


def scatter(g: ArrayLike, index: Any = None, shape: tuple[int, ...] = ()) -> Tensor:
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeated indices add): indexing's gradient."""
    return apply(_G["scatter"], g, index=index, shape=tuple(shape))


def dot(a: ArrayLike, b: ArrayLike, **kw: Any) -> Tensor:
    """np.dot for scalars, vectors and matrices (use matmul for stacks of matrices)."""
    _no_extras("np.dot", kw)
    na, nb = np.ndim(a.data if isinstance(a, Tensor) else a), np.ndim(b.data if isinstance(b, Tensor) else b)
    if na == 0 or nb == 0:
        return multiply(a, b)
    if na > 2 or nb > 2:
        raise TypeError(f"dot of {na}-D and {nb}-D arrays is not supported: use matmul (@) for stacked matrices")
    return matmul(a, b)


def _clip(x: ArrayLike, a_min: ArrayLike, a_max: ArrayLike, **kw: Any) -> Tensor:
    _no_extras("np.clip", kw)
    out = x
    if a_min is not None:
        out = maximum(out, a_min)
    if a_max is not None:
        out = minimum(out, a_max)
    return out


clip = _clip
clip.__doc__ = "Limit values to [a_min, a_max] (the gradient flows where the value was inside)."


def _data(x: ArrayLike) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _shape_of(x: ArrayLike) -> tuple[int, ...]:
    return np.shape(x.data if isinstance(x, Tensor) else x)


def _like(fill: Any) -> Any:
    def fn(a: ArrayLike, dtype: Any = None, **kw: Any) -> np.ndarray:
        data = a.data if isinstance(a, Tensor) else np.asarray(a)
        return np.full(data.shape, fill, dtype=dtype or data.dtype)

    return fn


UFUNCS: dict[np.ufunc, Any] = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.divide: divide, np.power: power,
    np.negative: negative, np.positive: positive, np.exp: exp, np.log: log, np.sin: sin, np.cos: cos,
    np.tan: tan, np.sqrt: sqrt, np.absolute: abs, np.square: square, np.reciprocal: reciprocal,
    np.maximum: maximum, np.minimum: minimum, np.tanh: tanh, np.matmul: matmul, np.sign: sign,
    np.greater: greater, np.greater_equal: greater_equal, np.less: less, np.less_equal: less_equal,
    np.equal: equal, np.not_equal: not_equal, np.logical_not: logical_not, np.isfinite: isfinite,
    np.isnan: isnan, np.isinf: isinf,
}

ARRAY_FUNCTIONS: dict[Any, Any] = {
    np.sum: sum, np.mean: mean, np.max: max, np.min: min, np.amax: max, np.amin: min,
    np.reshape: reshape, np.transpose: transpose, np.swapaxes: swapaxes, np.broadcast_to: broadcast_to,
    np.expand_dims: expand_dims, np.squeeze: squeeze, np.concatenate: concatenate, np.stack: stack,
    np.where: where, np.dot: dot, np.clip: clip,
    np.shape: _shape_of, np.ndim: lambda a: len(_shape_of(a)), np.size: lambda a, axis=None: int(
        np.prod(_shape_of(a)) if axis is None else _shape_of(a)[axis]),
    np.ones_like: _like(1), np.zeros_like: _like(0),
    # truth tests answer with plain NumPy values: they have no gradient to lose
    np.all: lambda a, axis=None, **kw: np.all(_data(a), axis=axis, **kw),
    np.any: lambda a, axis=None, **kw: np.any(_data(a), axis=axis, **kw),
    np.allclose: lambda a, b, **kw: np.allclose(_data(a), _data(b), **kw),
    np.isclose: lambda a, b, **kw: np.isclose(_data(a), _data(b), **kw),
}
