"""chainrule's differentiable functions (``cr.exp``, ``cr.sum``, ...), named like NumPy's.

Every gate of the table gets a function here, made from its entry (its calling convention is NumPy's,
see :func:`chainrule.gates.split_call`): ``cr.prod(x, axis=1)`` is ``apply(GATES["prod"], x, axis=1)``.
Functions that NumPy has but that are compositions of gates (``moveaxis``, ``tensordot``,
``linalg.norm``, ``split``, ...) are written below with these functions, so their staged form shows
their parts. This module is also the *ops namespace* in which gate rules run when the backward pass
builds a graph of its own (``create_graph=True``), and it holds the maps from NumPy's ufuncs and
functions to these, read by the tensor's dispatch.
"""

from __future__ import annotations

import builtins
from collections import namedtuple
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import backend
from .gates import GATES, Gate, normalize_axis, normalize_pad_width, on_register, resolve, split_call
from .tensor import Tensor, apply, apply1, binary_op

ArrayLike = Any

_G = GATES

#: as an ops namespace, this module records what the rules compute (a graph that can be differentiated
#: again); ``apply_gate`` applies a gate with its own convention (inputs, then params)
namespace_kind = "graph"
apply_gate = apply


def _values(x: ArrayLike) -> Any:
    if isinstance(x, Tensor):
        return x.data
    return x if x.__class__ not in backend.NATIVE and backend.library_of(x) is not None else np.asarray(x)


def _shape(x: ArrayLike) -> tuple[int, ...]:
    return np.shape(x.data if isinstance(x, Tensor) else x)


def _ndim(x: ArrayLike) -> int:
    return len(_shape(x))


# ---------------------------------------------------------------------------------------------
# one function per gate, made from its entry
# ---------------------------------------------------------------------------------------------


def gate_function(gate: Gate) -> Any:
    """The public function of ``gate``: a NumPy-style call split into inputs and params by the entry."""
    if gate.kind in ("elementwise", "nondiff") and gate.arity == 2 and not gate.params and gate.call is None:
        fn = binary_op(gate)
    elif gate.arity == 1 and not gate.params and gate.call is None:
        def fn(x: ArrayLike) -> Tensor:
            return apply1(gate, x)
    else:
        who = f"np.{gate.numpy[0]}" if gate.numpy else f"cr.{gate.name}"

        def fn(*args: Any, **kwargs: Any) -> Tensor:
            inputs, params = split_call(gate, args, kwargs, who)
            return apply(gate, *inputs, **params)

    fn.__name__ = fn.__qualname__ = gate.name
    fn.__doc__ = f"The {gate.name} gate.\n\nGradient: {gate.explain}."
    return fn


_GENERATED: dict[str, Any] = {}


def __getattr__(name: str) -> Any:  # a gate registered after import is a function here too
    gate = GATES.get(name)
    if gate is None:
        raise AttributeError(f"module 'chainrule.functions' has no attribute {name!r}")
    fn = _GENERATED.get(name)
    if fn is None:
        fn = _GENERATED[name] = gate_function(gate)
    return fn


def _f(name: str) -> Any:
    return __getattr__(name)


# elementwise
add, subtract, multiply, divide, power = _f("add"), _f("sub"), _f("mul"), _f("div"), _f("pow")
negative, positive, reciprocal, square, sqrt, cbrt = _f("neg"), _f("identity"), _f("reciprocal"), _f("square"), \
    _f("sqrt"), _f("cbrt")
abs = _f("abs")  # noqa: A001 - NumPy's name
absolute, fabs = abs, _f("fabs")
exp, exp2, expm1, log, log2, log10, log1p = (_f(n) for n in ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p"))
logaddexp, logaddexp2 = _f("logaddexp"), _f("logaddexp2")
sin, cos, tan, arcsin, arccos, arctan, arctan2, hypot = (
    _f(n) for n in ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "hypot"))
sinh, cosh, tanh, arcsinh, arccosh, arctanh = (_f(n) for n in ("sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh"))
deg2rad, rad2deg, sinc = _f("deg2rad"), _f("rad2deg"), _f("sinc")
radians, degrees = deg2rad, rad2deg
maximum, minimum, fmax, fmin = _f("maximum"), _f("minimum"), _f("fmax"), _f("fmin")
remainder, fmod, float_power = _f("remainder"), _f("fmod"), _f("float_power")
mod = remainder
sigmoid, relu, guard = _f("sigmoid"), _f("relu"), _f("guard")
# constants for gradients
sign, floor, ceil, rint, trunc, fix, round = (_f(n) for n in ("sign", "floor", "ceil", "rint", "trunc", "fix", "round"))
around = round
greater, greater_equal, less, less_equal, equal, not_equal = (
    _f(n) for n in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"))
logical_not, logical_and, logical_or, logical_xor = (
    _f(n) for n in ("logical_not", "logical_and", "logical_or", "logical_xor"))
isfinite, isnan, isinf, isneginf, isposinf, signbit, floor_divide = (
    _f(n) for n in ("isfinite", "isnan", "isinf", "isneginf", "isposinf", "signbit", "floor_divide"))
# reductions and scans
sum = _f("sum")  # noqa: A001
mean, prod, var, std, nansum, nanmean = (_f(n) for n in ("mean", "prod", "var", "std", "nansum", "nanmean"))
max, min = _f("max"), _f("min")  # noqa: A001
amax, amin = max, min
cumsum, cumprod = _f("cumsum"), _f("cumprod")
logsumexp = _f("logsumexp")
softmax, log_softmax = _f("softmax"), _f("log_softmax")
# shape and assembly
broadcast_to, flip, roll, repeat, tile = (_f(n) for n in ("broadcast_to", "flip", "roll", "repeat", "tile"))
tril, triu, diagonal, diag = _f("tril"), _f("triu"), _f("diagonal"), _f("diag")
concatenate, stack = _f("concatenate"), _f("stack")
# linear algebra
matmul, einsum = _f("matmul"), _f("einsum")


def where(condition: ArrayLike, x: ArrayLike = None, y: ArrayLike = None) -> Any:
    """Elementwise ``x`` where ``condition`` holds, else ``y``; the condition gets no gradient.

    Both branches are computed everywhere, so a branch that is NaN or infinite where it is *not*
    chosen still poisons the gradient (0 · inf = NaN). Make the unused inputs harmless first:
    ``cr.where(x > 0, cr.sqrt(cr.where(x > 0, x, 1.0)), 0.0)``. With the condition alone it is
    ``np.nonzero`` (plain indices).
    """
    if x is None and y is None:
        return np.nonzero(_values(condition))
    if isinstance(condition, Tensor) and condition.requires_grad:
        condition = not_equal(condition, 0)  # its truth value (as np.where reads it): a mask, no gradient
    return apply(_G["where"], condition, x, y)


def reshape(x: ArrayLike, shape: int | Sequence[int] = None, order: str = "C", **kw: Any) -> Tensor:  # type: ignore[assignment]
    """The same values in a new shape (one dimension may be -1)."""
    if shape is None:
        shape = kw.pop("newshape", None)
    _no_extras("np.reshape", kw)
    if order not in ("C", "A") and order is not None:
        raise TypeError(f"np.reshape: order={order!r} is not supported on chainrule tensors (only 'C')")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    return apply(_G["reshape"], x, shape=shape)


def transpose(x: ArrayLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None)."""
    return apply(_G["transpose"], x, axes=None if axes is None else tuple(int(a) for a in axes))


def _no_extras(name: str, kw: dict[str, Any]) -> None:
    bad = [k for k, v in kw.items() if v is not None and k not in ("order", "copy", "subok")]
    if bad:
        raise TypeError(f"{name}: argument(s) {', '.join(bad)} are not supported on chainrule tensors")


# ---------------------------------------------------------------------------------------------
# NumPy functions that are compositions of gates
# ---------------------------------------------------------------------------------------------


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    axes = list(range(_ndim(x)))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return transpose(x, axes)


def moveaxis(x: ArrayLike, source: int | Sequence[int], destination: int | Sequence[int]) -> Tensor:
    """Move axes to new positions (the others keep their order)."""
    nd = _ndim(x)
    src = [source] if isinstance(source, (int, np.integer)) else list(source)
    dst = [destination] if isinstance(destination, (int, np.integer)) else list(destination)
    src, dst = [int(s) % nd for s in src], [int(d) % nd for d in dst]
    order = [a for a in range(nd) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


def rollaxis(x: ArrayLike, axis: int, start: int = 0) -> Tensor:
    """Roll ``axis`` backwards until it lies before ``start`` (np.rollaxis)."""
    nd = _ndim(x)
    axis %= nd
    start = start % (nd + 1) if start < 0 else start
    if axis < start:
        start -= 1
    return moveaxis(x, axis, start) if axis != start else transpose(x, list(range(nd)))


def expand_dims(x: ArrayLike, axis: int | Sequence[int]) -> Tensor:
    """Insert length-1 axes at ``axis``."""
    shape = list(_shape(x))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    nd = len(shape) + len(axes)
    for a in sorted(a % nd for a in axes):
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x: ArrayLike, axis: int | Sequence[int] | None = None) -> Tensor:
    """Remove length-1 axes (all of them, or those in ``axis``)."""
    return reshape(x, np.squeeze(np.empty(_shape(x), dtype=np.int8), axis=axis).shape)


def ravel(x: ArrayLike, order: str = "C") -> Tensor:
    """The values as a 1-D array."""
    return reshape(x, (-1,), order=order)


def _atleast(nd: int, x: ArrayLike) -> Tensor:
    shape = _shape(x)
    if len(shape) >= nd:
        return x if isinstance(x, Tensor) else Tensor(x)
    if nd == 3 and len(shape) == 2:
        return reshape(x, shape + (1,))
    if nd == 3 and len(shape) == 1:
        return reshape(x, (1,) + shape + (1,))
    return reshape(x, (1,) * (nd - len(shape)) + shape)


def atleast_1d(*xs: ArrayLike) -> Any:
    out = [_atleast(1, x) for x in xs]
    return out[0] if len(out) == 1 else out


def atleast_2d(*xs: ArrayLike) -> Any:
    out = [_atleast(2, x) for x in xs]
    return out[0] if len(out) == 1 else out


def atleast_3d(*xs: ArrayLike) -> Any:
    out = [_atleast(3, x) for x in xs]
    return out[0] if len(out) == 1 else out


def _neutral_stack_kw(name: str, kw: dict[str, Any]) -> None:
    _no_extras(name, {k: v for k, v in kw.items() if not (k == "casting" and v == "same_kind")})


def vstack(arrays: Sequence[ArrayLike], **kw: Any) -> Tensor:
    """Stack rows (1-D inputs become rows)."""
    _neutral_stack_kw("np.vstack", kw)
    return concatenate([_atleast(2, a) for a in arrays], axis=0)


row_stack = vstack


def hstack(arrays: Sequence[ArrayLike], **kw: Any) -> Tensor:
    """Stack columns (1-D inputs are joined end to end)."""
    _neutral_stack_kw("np.hstack", kw)
    parts = [_atleast(1, a) for a in arrays]
    return concatenate(parts, axis=0 if _ndim(parts[0]) == 1 else 1)


def dstack(arrays: Sequence[ArrayLike]) -> Tensor:
    """Stack along a third axis."""
    return concatenate([_atleast(3, a) for a in arrays], axis=2)


def column_stack(arrays: Sequence[ArrayLike]) -> Tensor:
    """1-D inputs as columns of a 2-D array."""
    return concatenate([reshape(a, (-1, 1)) if _ndim(a) < 2 else a for a in arrays], axis=1)


def append(arr: ArrayLike, values: ArrayLike, axis: int | None = None) -> Tensor:
    """``arr`` with ``values`` appended (flattened when ``axis`` is None)."""
    if axis is None:
        return concatenate([ravel(arr), ravel(values)], axis=0)
    return concatenate([arr, values], axis=axis)


def _split_points(n: int, sections: Any, even: bool, who: str) -> list[int]:
    if isinstance(sections, (int, np.integer)):
        k = int(sections)
        if even and n % k:
            raise ValueError(f"{who}: an axis of length {n} does not split into {k} equal parts")
        base, extra = divmod(n, k)
        sizes = [base + (1 if i < extra else 0) for i in range(k)]
        points, at = [], 0
        for s in sizes[:-1]:
            at += s
            points.append(at)
        return points
    return [int(p) for p in sections]


def split(x: ArrayLike, indices_or_sections: Any, axis: int = 0) -> list[Tensor]:
    """Pieces of ``x`` along ``axis`` (each a slice: its gradient goes back to its place)."""
    return _split(x, indices_or_sections, axis, even=True, who="np.split")


def array_split(x: ArrayLike, indices_or_sections: Any, axis: int = 0) -> list[Tensor]:
    """Like split, allowing unequal parts."""
    return _split(x, indices_or_sections, axis, even=False, who="np.array_split")


def _split(x: ArrayLike, sections: Any, axis: int, even: bool, who: str) -> list[Tensor]:
    shape = _shape(x)
    ax = axis % len(shape)
    points = _split_points(shape[ax], sections, even, who)
    bounds = [0, *points, shape[ax]]
    pre = (slice(None),) * ax
    return [_index(x, pre + (slice(a, b),)) for a, b in zip(bounds[:-1], bounds[1:])]


def hsplit(x: ArrayLike, sections: Any) -> list[Tensor]:
    return split(x, sections, axis=1 if _ndim(x) > 1 else 0)


def vsplit(x: ArrayLike, sections: Any) -> list[Tensor]:
    return split(x, sections, axis=0)


def dsplit(x: ArrayLike, sections: Any) -> list[Tensor]:
    return split(x, sections, axis=2)


def _index(x: ArrayLike, index: Any) -> Tensor:
    return apply(_G["getitem"], x, index=index)


def rot90(x: ArrayLike, k: int = 1, axes: tuple[int, int] = (0, 1)) -> Tensor:
    """Rotate by 90° ``k`` times in the plane of ``axes``."""
    k %= 4
    a0, a1 = axes
    if k == 0:
        return apply(_G["identity"], x)
    if k == 2:
        return flip(flip(x, axis=a0), axis=a1)
    perm = list(range(_ndim(x)))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 1:
        return transpose(flip(x, axis=a1), perm)
    return flip(transpose(x, perm), axis=a1)


def fliplr(x: ArrayLike) -> Tensor:
    return flip(x, axis=1)


def flipud(x: ArrayLike) -> Tensor:
    return flip(x, axis=0)


def pad(x: ArrayLike, pad_width: Any, mode: str = "constant", **kw: Any) -> Tensor:
    """``np.pad`` with modes constant (a number), edge, reflect, symmetric and wrap."""
    if mode not in ("constant", "edge", "reflect", "symmetric", "wrap"):
        raise TypeError(f"np.pad: mode={mode!r} is not supported on chainrule tensors "
                        "(constant, edge, reflect, symmetric, wrap are)")
    constant = kw.pop("constant_values", 0)
    bad = [k for k, v in kw.items() if v is not None and not (k == "reflect_type" and v == "even")]
    if bad:
        raise TypeError(f"np.pad: argument(s) {', '.join(bad)} are not supported on chainrule tensors")
    if np.ndim(constant) != 0:
        raise TypeError("np.pad: constant_values must be one number on chainrule tensors")
    params: dict[str, Any] = {"pad_width": normalize_pad_width(pad_width, _ndim(x))}
    if mode != "constant":
        params["mode"] = mode
    elif constant != 0:
        params["constant_values"] = float(constant)
    return apply(_G["pad"], x, **params)


def sliding_window_view(x: ArrayLike, window_shape: int | Sequence[int], axis: Any = None, *,
                        subok: bool = False, writeable: bool = False) -> Tensor:
    """Every window of ``window_shape`` as a view (the im2col idiom); overlapping windows' gradients add."""
    if writeable:
        raise TypeError("sliding_window_view: writeable=True is not supported on chainrule tensors")
    ws = (int(window_shape),) if isinstance(window_shape, (int, np.integer)) else tuple(int(w) for w in window_shape)
    ax = None if axis is None else (int(axis) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis))
    return apply(_G["sliding_window_view"], x, window_shape=ws, axis=ax)


def as_strided(x: ArrayLike, shape: Sequence[int] | None = None, strides: Sequence[int] | None = None,
               subok: bool = False, writeable: bool = True) -> Tensor:
    """A strided view of ``x``'s C-contiguous values (strides in bytes, as ``x.strides`` reports)."""
    data = _values(x)
    shape = tuple(int(s) for s in (data.shape if shape is None else shape))
    strides = tuple(int(s) for s in (_c_strides(data) if strides is None else strides))
    item = backend.numpy_dtype(data.dtype).itemsize
    if any(s % item for s in strides):
        raise ValueError(f"as_strided: strides {strides} are not multiples of the item size {item}")
    if any(s < 0 for s in strides):
        raise ValueError("as_strided: negative strides are not supported on chainrule tensors")
    span = builtins.sum((n - 1) * s for n, s in zip(shape, strides))
    if builtins.all(n > 0 for n in shape) and span + item > data.size * item:
        raise ValueError(f"as_strided: shape {shape} with strides {strides} reads past the end of the "
                         f"{data.size} values of the input")
    return apply(_G["as_strided"], x, shape=shape, strides=strides, itemsize=item)


def _c_strides(data: Any) -> tuple[int, ...]:
    out, step = [], backend.numpy_dtype(data.dtype).itemsize
    for s in reversed(data.shape):
        out.append(step)
        step *= builtins.max(s, 1)
    return tuple(reversed(out))


def take(x: ArrayLike, indices: Any, axis: int | None = None, **kw: Any) -> Tensor:
    """Elements at ``indices`` (along ``axis``, or of the flattened input)."""
    _no_extras("np.take", kw)
    idx = np.asarray(_values(indices))
    if axis is None:
        return _index(ravel(x), idx)
    return _index(x, (slice(None),) * (axis % _ndim(x)) + (idx,))


def take_along_axis(x: ArrayLike, indices: Any, axis: int | None = -1) -> Tensor:
    """Elements picked by ``indices`` along ``axis`` (what argsort's order picks)."""
    idx = _values(indices)
    if axis is None:
        return _index(ravel(x), idx)
    return apply(_G["take_along_axis"], x, indices=idx, axis=int(axis) % _ndim(x))


def sort(x: ArrayLike, axis: int | None = -1, **kw: Any) -> Tensor:
    """Sorted values: a gather in the order ``argsort`` finds (the gradient follows each value back)."""
    _no_extras("np.sort", {k: v for k, v in kw.items() if k != "kind"})
    if axis is None:
        x, axis = ravel(x), -1
    data = _values(x)
    if data.__class__ is np.ndarray:
        order = np.argsort(data, axis=axis, kind="stable")
    else:  # another library's argsort (on Dask, lazy like the values)
        order = backend.namespace_of(data).argsort(data, axis=axis, stable=True)
    return take_along_axis(x, order, axis)


def quantile(x: ArrayLike, q: Any, axis: Any = None, out: Any = None, overwrite_input: bool = False,
             method: str = "linear", keepdims: bool = False, **kw: Any) -> Tensor:
    """np.quantile (its default, linear method) as a composite of sort: the sorted values around the
    virtual index (n - 1) q, interpolated; the gradient goes to those two values by the same
    weights. ``q``'s dimensions come first, as NumPy's; a NaN along the axis makes the result NaN."""
    _no_extras("np.quantile", {"out": out, **kw})
    if method != "linear":
        raise TypeError(f"np.quantile: method={method!r} is not supported on chainrule tensors (only 'linear', "
                        "NumPy's default)")
    qs = np.asarray(_values(q), dtype=np.float64)
    if np.any(~((qs >= 0) & (qs <= 1))):
        raise ValueError("np.quantile: quantiles must be in the range [0, 1]")
    nd = _ndim(x)
    axes = tuple(range(nd)) if axis is None else tuple(a % nd for a in normalize_axis(axis, nd))
    kept = [d for d in range(nd) if d not in axes]
    # the reduced axes, last and as one: quantiles along -1
    flat = reshape(transpose(x, tuple(kept) + axes), tuple(_shape(x)[d] for d in kept) + (-1,))
    n = _shape(flat)[-1]
    if n == 0:
        raise ValueError("np.quantile: the axis to take quantiles along is empty")
    s = sort(flat, axis=-1)
    h = (n - 1) * qs
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    t = h - lo
    below, above = take(s, lo, axis=-1), take(s, hi, axis=-1)   # (kept..., q...)
    # q's dimensions first, then the kept ones
    order = tuple(range(len(kept), len(kept) + qs.ndim)) + tuple(range(len(kept)))
    below, above = transpose(below, order), transpose(above, order)
    tt = np.reshape(t, t.shape + (1,) * len(kept))
    res = add(below, multiply(subtract(above, below), tt))
    res = where(isnan(take(s, n - 1, axis=-1)), np.nan, res)   # NaN sorts last: any NaN makes it NaN
    if keepdims:
        res = reshape(res, qs.shape + tuple(1 if d in axes else _shape(x)[d] for d in range(nd)))
    return res


def percentile(x: ArrayLike, q: Any, axis: Any = None, out: Any = None, overwrite_input: bool = False,
               method: str = "linear", keepdims: bool = False, **kw: Any) -> Tensor:
    """np.percentile: :func:`quantile` at ``q / 100``."""
    return quantile(x, np.asarray(_values(q), dtype=np.float64) / 100, axis=axis, out=out, method=method,
                    keepdims=keepdims, **kw)


def median(x: ArrayLike, axis: Any = None, out: Any = None, overwrite_input: bool = False,
           keepdims: bool = False) -> Tensor:
    """np.median: the middle of the sorted values (the mean of the two middle ones for an even
    count, each of which then gets half the gradient)."""
    return quantile(x, 0.5, axis=axis, out=out, keepdims=keepdims)


def partition(x: ArrayLike, kth: Any, axis: int = -1, **kw: Any) -> Tensor:
    """np.partition as a gather in the order ``argpartition`` finds."""
    return take_along_axis(x, np.argpartition(_values(x), kth, axis=axis), axis)


def copy(x: ArrayLike, **kw: Any) -> Tensor:
    """A copy (a node of its own)."""
    return x.copy() if isinstance(x, Tensor) else Tensor(np.array(x, copy=True))


def real(x: ArrayLike) -> Any:
    """The real part: the value itself for the real tensors chainrule differentiates."""
    return x


def imag(x: ArrayLike) -> Any:
    """The imaginary part of a real tensor: zeros (a constant)."""
    return np.zeros_like(_values(x))


def conj(x: ArrayLike) -> Any:
    return x


conjugate = conj


def clip(x: ArrayLike, a_min: ArrayLike = None, a_max: ArrayLike = None, **kw: Any) -> Tensor:
    """Limit values to [a_min, a_max] (the gradient flows where the value was inside)."""
    a_min = kw.pop("min", a_min)
    a_max = kw.pop("max", a_max)
    _no_extras("np.clip", kw)
    out = x
    if a_min is not None:
        out = maximum(out, a_min)
    if a_max is not None:
        out = minimum(out, a_max)
    return out


def dot(a: ArrayLike, b: ArrayLike, **kw: Any) -> Tensor:
    """np.dot for every shape NumPy accepts: scalars multiply, N-D arrays contract a's last axis with
    b's second-to-last."""
    _no_extras("np.dot", kw)
    na, nb = _ndim(a), _ndim(b)
    if na == 0 or nb == 0:
        return multiply(a, b)
    if na <= 2 and nb <= 2:
        return matmul(a, b)
    return tensordot(a, b, axes=([na - 1], [nb - 2 if nb > 1 else 0]))


def vdot(a: ArrayLike, b: ArrayLike) -> Tensor:
    """The dot product of the flattened inputs."""
    return sum(multiply(ravel(a), ravel(b)))


def inner(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Contraction over the last axes of both inputs."""
    if _ndim(a) == 0 or _ndim(b) == 0:
        return multiply(a, b)
    return tensordot(a, b, axes=([_ndim(a) - 1], [_ndim(b) - 1]))


def outer(a: ArrayLike, b: ArrayLike, **kw: Any) -> Tensor:
    """Every product a[i]·b[j] (inputs flattened): mul of a column by a row."""
    _no_extras("np.outer", kw)
    return multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tensordot(a: ArrayLike, b: ArrayLike, axes: Any = 2) -> Tensor:
    """np.tensordot, as the einsum that contracts the given axes."""
    na, nb = _ndim(a), _ndim(b)
    if isinstance(axes, (int, np.integer)):
        ax_a, ax_b = list(range(na - int(axes), na)), list(range(int(axes)))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, (int, np.integer)) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, (int, np.integer)) else list(ax_b)
    ax_a, ax_b = [x % na for x in ax_a], [x % nb for x in ax_b]
    if len(ax_a) != len(ax_b):
        raise ValueError(f"np.tensordot: axes {ax_a} and {ax_b} have different lengths")
    letters = iter(_LETTERS)
    ta = [next(letters) for _ in range(na)]
    tb = [next(letters) for _ in range(nb)]
    for i, j in zip(ax_a, ax_b):
        tb[j] = ta[i]
    out = [c for i, c in enumerate(ta) if i not in ax_a] + [c for j, c in enumerate(tb) if j not in ax_b]
    return einsum(f"{''.join(ta)},{''.join(tb)}->{''.join(out)}", a, b)


def kron(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Kronecker product: every element of a times the whole of b, laid out block by block."""
    sa, sb = _shape(a), _shape(b)
    nd = builtins.max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    ai = reshape(a, tuple(v for s in sa for v in (s, 1)))
    bi = reshape(b, tuple(v for s in sb for v in (1, s)))
    return reshape(multiply(ai, bi), tuple(p * q for p, q in zip(sa, sb)))


def trace(x: ArrayLike, offset: int = 0, axis1: int = 0, axis2: int = 1, **kw: Any) -> Tensor:
    """Sum along a diagonal."""
    _no_extras("np.trace", kw)
    return sum(diagonal(x, offset, axis1, axis2), axis=-1)


def diff(x: ArrayLike, n: int = 1, axis: int = -1, **kw: Any) -> Tensor:
    """Differences of neighbours along ``axis``, ``n`` times."""
    _no_extras("np.diff", kw)
    ax = axis % _ndim(x)
    pre = (slice(None),) * ax
    out = x
    for _ in range(n):
        out = subtract(_index(out, pre + (slice(1, None),)), _index(out, pre + (slice(None, -1),)))
    return out


def ptp(x: ArrayLike, axis: Any = None, keepdims: bool = False, **kw: Any) -> Tensor:
    """Peak to peak: max − min."""
    _no_extras("np.ptp", kw)
    return subtract(max(x, axis=axis, keepdims=keepdims), min(x, axis=axis, keepdims=keepdims))


def average(x: ArrayLike, axis: Any = None, weights: ArrayLike = None, returned: bool = False,
            keepdims: bool = False) -> Any:
    """Weighted mean (the plain mean without weights)."""
    if weights is None:
        avg = mean(x, axis=axis, keepdims=keepdims)
        total = np.asarray(np.prod([_shape(x)[a] for a in normalize_axis(axis, _ndim(x))]), dtype=float)
    else:
        w = weights
        if _ndim(w) == 1 and _ndim(x) > 1 and axis is not None:
            shape = [1] * _ndim(x)
            shape[axis % _ndim(x)] = -1
            w = reshape(w, shape)
        total = sum(multiply(w, np.ones(_shape(x))), axis=axis, keepdims=keepdims)
        avg = divide(sum(multiply(x, w), axis=axis, keepdims=keepdims), total)
    return (avg, total) if returned else avg


def norm(x: ArrayLike, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A002
    """np.linalg.norm with the common ``ord``s: vectors (None/2, 1, inf, −inf, 0, p) and matrices
    ('fro', 'nuc', 1, −1, 2, −2, inf, −inf), as compositions of gates."""
    nd = _ndim(x)
    if axis is None and ord is None:
        return sqrt(sum(square(x), axis=None, keepdims=keepdims)) if not keepdims else \
            reshape(sqrt(sum(square(x))), (1,) * nd)
    if axis is None:
        axis = tuple(range(nd))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) == 1:
        ax = axes[0]
        if ord is None or ord == 2:
            return sqrt(sum(square(x), axis=ax, keepdims=keepdims))
        if ord == np.inf:
            return max(abs(x), axis=ax, keepdims=keepdims)
        if ord == -np.inf:
            return min(abs(x), axis=ax, keepdims=keepdims)
        if ord == 0:
            return Tensor(np.sum(_values(x) != 0, axis=ax, keepdims=keepdims).astype(float))
        if ord == 1:
            return sum(abs(x), axis=ax, keepdims=keepdims)
        return power(sum(power(abs(x), ord), axis=ax, keepdims=keepdims), 1.0 / ord)
    if len(axes) != 2:
        raise ValueError(f"np.linalg.norm: axis must name one or two axes, not {axis!r}")
    r, c = (a % nd for a in axes)
    if ord in (None, "fro"):
        return sqrt(sum(square(x), axis=(r, c), keepdims=keepdims))
    if ord in (1, -1):
        col = sum(abs(x), axis=r, keepdims=True)
        red = max(col, axis=c, keepdims=True) if ord == 1 else min(col, axis=c, keepdims=True)
        return red if keepdims else squeeze(red, axis=(r, c))
    if ord in (np.inf, -np.inf):
        row = sum(abs(x), axis=c, keepdims=True)
        red = max(row, axis=r, keepdims=True) if ord == np.inf else min(row, axis=r, keepdims=True)
        return red if keepdims else squeeze(red, axis=(r, c))
    if ord in ("nuc", 2, -2):
        moved = moveaxis(x, (r, c), (-2, -1))
        s = apply(_G["svd_s"], moved)
        red = sum(s, axis=-1) if ord == "nuc" else max(s, axis=-1) if ord == 2 else min(s, axis=-1)
        if keepdims:
            red = expand_dims(expand_dims(red, builtins.min(r, c)), builtins.max(r, c))
        return red
    raise ValueError(f"np.linalg.norm: ord={ord!r} is not supported on chainrule tensors")


def cross(a: ArrayLike, b: ArrayLike, axisa: int = -1, axisb: int = -1, axisc: int = -1,
          axis: int | None = None) -> Tensor:
    """The cross product of vectors of length 2 or 3 along the given axes (products of components,
    mul's swap for each)."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = moveaxis(a, axisa, -1), moveaxis(b, axisb, -1)
    na, nb = a.shape[-1], b.shape[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise ValueError(f"np.cross: vectors must have 2 or 3 components, not {na} and {nb}")
    a0, a1, b0, b1 = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    z = subtract(multiply(a0, b1), multiply(a1, b0))
    if na == 2 and nb == 2:
        return z
    a2 = a[..., 2] if na == 3 else 0.0
    b2 = b[..., 2] if nb == 3 else 0.0
    c = stack([subtract(multiply(a1, b2), multiply(a2, b1)), subtract(multiply(a2, b0), multiply(a0, b2)),
               z], axis=-1)
    return moveaxis(c, -1, axisc)


def gradient(f: ArrayLike, *varargs: Any, axis: Any = None, edge_order: int = 1) -> Any:
    """np.gradient with uniform spacings: central differences inside, one-sided at the edges."""
    nd = _ndim(f)
    axes = tuple(range(nd)) if axis is None else normalize_axis(axis, nd) if isinstance(axis, int) else \
        tuple(a % nd for a in axis)
    if not varargs:
        steps = [1.0] * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        steps = [float(varargs[0])] * len(axes)
    else:
        if any(np.ndim(v) != 0 for v in varargs):
            raise TypeError("np.gradient: coordinate arrays are not supported on chainrule tensors "
                            "(give one spacing per axis)")
        steps = [float(v) for v in varargs]
    out = []
    for ax, h in zip(axes, steps):
        def part(start: Any, stop: Any, ax: int = ax) -> Tensor:
            return _index(f, (slice(None),) * ax + (slice(start, stop),))

        inner = divide(subtract(part(2, None), part(None, -2)), 2 * h)
        if edge_order == 1:
            first = divide(subtract(part(1, 2), part(0, 1)), h)
            last = divide(subtract(part(-1, None), part(-2, -1)), h)
        else:
            first = divide(-3 * part(0, 1) + 4 * part(1, 2) - part(2, 3), 2 * h)
            last = divide(3 * part(-1, None) - 4 * part(-2, -1) + part(-3, -2), 2 * h)
        out.append(concatenate([first, inner, last], axis=ax))
    return out[0] if len(out) == 1 else out


def linspace(start: ArrayLike, stop: ArrayLike, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype: Any = None, axis: int = 0) -> Any:
    """Evenly spaced values from ``start`` to ``stop`` (both may be tensors)."""
    div = (num - 1) if endpoint else num
    frac = np.arange(num, dtype=np.float64) / (div if div > 0 else 1)
    shape = np.broadcast_shapes(_shape(start), _shape(stop))
    frac = frac.reshape((num,) + (1,) * len(shape))
    delta = subtract(stop, start)
    y = add(multiply(frac, delta), start)
    if endpoint and num > 1:  # the last value is stop itself, as NumPy makes it
        y = concatenate([y[:-1], reshape(broadcast_to(stop, shape), (1,) + shape)], axis=0)
    if axis != 0:
        y = moveaxis(y, 0, axis)
    return (y, divide(delta, div)) if retstep else y


def real_if_close(a: ArrayLike, tol: float = 100) -> Any:
    """The values themselves: chainrule tensors are real."""
    return a


def fftshift(x: ArrayLike, axes: Any = None) -> Tensor:
    """Zero frequency to the centre: a roll by half of each axis."""
    nd = _ndim(x)
    axes = tuple(range(nd)) if axes is None else (axes,) if isinstance(axes, int) else tuple(axes)
    return roll(x, tuple(_shape(x)[a] // 2 for a in axes), axis=axes)


def ifftshift(x: ArrayLike, axes: Any = None) -> Tensor:
    """fftshift's inverse: a roll back by half of each axis."""
    nd = _ndim(x)
    axes = tuple(range(nd)) if axes is None else (axes,) if isinstance(axes, int) else tuple(axes)
    return roll(x, tuple(-(_shape(x)[a] // 2) for a in axes), axis=axes)


def nan_to_num(x: ArrayLike, copy: bool = True, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Tensor:
    """NaN and infinities replaced by numbers (they get no gradient; finite values pass it on)."""
    big = np.finfo(_values(x).dtype if _values(x).dtype.kind == "f" else np.float64).max
    out = where(isnan(x), nan, x)
    out = where(isposinf(x), big if posinf is None else posinf, out)
    return where(isneginf(x), -big if neginf is None else neginf, out)


def scatter(g: ArrayLike, index: Any = None, shape: tuple[int, ...] = ()) -> Tensor:
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeated indices add): indexing's gradient."""
    return apply(_G["scatter"], g, index=index, shape=tuple(shape))


def setitem(x: ArrayLike, value: ArrayLike, index: Any = None) -> Tensor:
    """A copy of ``x`` with ``value`` at ``index`` (what ``x[index] = value`` makes, as a function)."""
    return apply(_G["setitem"], x, value, index=index)


def unwindow(g: ArrayLike, shape: tuple[int, ...] = (), window_shape: tuple[int, ...] = (), axis: Any = None
             ) -> Tensor:
    """The adjoint of sliding_window_view: windows summed back into an array of ``shape``."""
    return apply(_G["unwindow"], g, shape=tuple(shape), window_shape=tuple(window_shape), axis=axis)


def ones_like(a: ArrayLike, dtype: Any = None, **kw: Any) -> Any:
    data = _values(a)
    return _namespace(data).ones(tuple(data.shape), dtype=dtype or data.dtype)


def zeros_like(a: ArrayLike, dtype: Any = None, **kw: Any) -> Any:
    data = _values(a)
    return _namespace(data).zeros(tuple(data.shape), dtype=dtype or data.dtype)


def full_like(a: ArrayLike, fill_value: Any, dtype: Any = None, **kw: Any) -> Any:
    data = _values(a)
    return _namespace(data).full(tuple(data.shape), fill_value, dtype=dtype or data.dtype)


def _namespace(data: Any) -> Any:
    """NumPy for NumPy arrays; the standard namespace of another library's (constants stay in it)."""
    return np if data.__class__ is np.ndarray else backend.namespace_of(data)


def mask(b: ArrayLike) -> Any:
    """A truth value (``x > 0``) as a number, in a rule that builds a graph: as it is, unless its values
    belong to a library whose adapter converts bools for arithmetic (see :func:`chainrule.gates.mask`)."""
    data = b.data if isinstance(b, Tensor) else b
    if data.__class__ in backend.NATIVE or backend.library_of(data) is None:
        return b
    converted = backend.library_of(data).adapter.mask(data)
    return b if converted is data else Tensor(converted)


def convolve(a: ArrayLike, v: ArrayLike, mode: str = "full") -> Tensor:
    """``np.convolve``: 1-D discrete convolution (N-D, as SciPy computes it: ``cr.signal.convolve``)."""
    from .signal import np_convolve

    return np_convolve(a, v, mode)


# ---- np.linalg ----------------------------------------------------------------------------------------

EighResult = namedtuple("EighResult", "eigenvalues eigenvectors")
SVDResult = namedtuple("SVDResult", "U S Vh")

inv, solve, det, cholesky, pinv = _f("inv"), _f("solve"), _f("det"), _f("cholesky"), _f("pinv")


def slogdet(a: ArrayLike) -> tuple[Any, Tensor]:
    """(sign, ln|det a|): the sign is a constant, the log-determinant a gate."""
    data = _values(a)
    return _namespace(data).sign(apply(_G["det"], data).data), apply(_G["logabsdet"], a)


def eigh(a: ArrayLike, UPLO: str = "L") -> Any:  # noqa: N803 - NumPy's name
    """Eigenvalues and eigenvectors of a symmetric matrix, each a gate (their gradients add up)."""
    return EighResult(apply(_G["eigh_values"], a, UPLO=UPLO), apply(_G["eigh_vectors"], a, UPLO=UPLO))


def eigvalsh(a: ArrayLike, UPLO: str = "L") -> Tensor:  # noqa: N803
    return apply(_G["eigh_values"], a, UPLO=UPLO)


def svd(a: ArrayLike, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False) -> Any:
    """U, s, Vᴴ, each a gate (their gradients add up); s alone when ``compute_uv`` is False."""
    if not compute_uv:
        return apply(_G["svd_s"], a)
    fm = bool(full_matrices)
    return SVDResult(apply(_G["svd_u"], a, full_matrices=fm), apply(_G["svd_s"], a),
                     apply(_G["svd_vh"], a, full_matrices=fm))


# ---------------------------------------------------------------------------------------------
# NumPy dispatch maps
# ---------------------------------------------------------------------------------------------

UFUNCS: dict[np.ufunc, Any] = {}
ARRAY_FUNCTIONS: dict[Any, Any] = {}


def _index_gate(gate: Gate) -> None:
    """Route the NumPy functions a gate serves to its public function."""
    for name in gate.numpy:
        try:
            target = resolve(np, name)
        except AttributeError:
            continue
        fn = globals().get(gate.name) if gate.name in globals() else _f(gate.name)
        if isinstance(target, np.ufunc):
            UFUNCS.setdefault(target, fn)
        else:
            ARRAY_FUNCTIONS.setdefault(target, fn)


_OVERRIDES: dict[Any, Any] = {
    np.reshape: reshape, np.transpose: transpose, np.where: where, np.swapaxes: swapaxes, np.moveaxis: moveaxis,
    np.rollaxis: rollaxis, np.expand_dims: expand_dims, np.squeeze: squeeze, np.ravel: ravel,
    np.atleast_1d: atleast_1d, np.atleast_2d: atleast_2d, np.atleast_3d: atleast_3d, np.vstack: vstack,
    np.hstack: hstack, np.dstack: dstack, np.column_stack: column_stack, np.append: append, np.split: split,
    np.array_split: array_split, np.hsplit: hsplit, np.vsplit: vsplit, np.dsplit: dsplit, np.rot90: rot90,
    np.fliplr: fliplr, np.flipud: flipud, np.pad: pad, np.take: take, np.take_along_axis: take_along_axis,
    np.sort: sort, np.partition: partition, np.quantile: quantile, np.percentile: percentile, np.median: median,
    np.copy: copy, np.real: real, np.imag: imag, np.clip: clip,
    np.dot: dot, np.vdot: vdot, np.inner: inner, np.outer: outer, np.tensordot: tensordot, np.kron: kron,
    np.trace: trace, np.diff: diff, np.ptp: ptp, np.average: average, np.linalg.norm: norm,
    np.linalg.slogdet: slogdet, np.linalg.eigh: eigh, np.linalg.eigvalsh: eigvalsh, np.linalg.svd: svd,
    np.lib.stride_tricks.sliding_window_view: sliding_window_view, np.lib.stride_tricks.as_strided: as_strided,
    np.ones_like: ones_like, np.zeros_like: zeros_like, np.full_like: full_like,
    np.round: round, np.around: round, np.fix: fix, np.isneginf: isneginf, np.isposinf: isposinf,
    np.cross: cross, np.gradient: gradient, np.linspace: linspace, np.real_if_close: real_if_close,
    np.fft.fftshift: fftshift, np.fft.ifftshift: ifftshift, np.nan_to_num: nan_to_num, np.convolve: convolve,
    np.shape: _shape, np.ndim: _ndim,
    np.size: lambda a, axis=None: int(np.prod(_shape(a)) if axis is None else _shape(a)[axis]),
}
UFUNCS[np.conjugate] = conj
UFUNCS[np.absolute] = abs
UFUNCS[np.true_divide] = divide
ARRAY_FUNCTIONS.update(_OVERRIDES)
for _gate_entry in list(GATES.values()):
    _index_gate(_gate_entry)
on_register(_index_gate)

#: NumPy functions that answer with plain values on tensors (indices, truth values, counts): they
#: have no gradient, so they run on the values whether or not the tensor requires grad
VALUE_FUNCTIONS: frozenset[Any] = frozenset(
    getattr(np, n) for n in (
        "argmax", "argmin", "argsort", "argpartition", "argwhere", "nonzero", "flatnonzero", "count_nonzero",
        "searchsorted", "isclose", "allclose", "array_equal", "array_equiv", "result_type", "iscomplexobj",
        "isrealobj", "isreal", "iscomplex", "all", "any", "empty_like", "histogram", "bincount", "digitize",
        "isin", "shares_memory", "may_share_memory", "unravel_index", "ravel_multi_index", "nanargmax", "nanargmin",
        "angle", "iscomplexobj",
    ) if hasattr(np, n))


def check_class_labels(who: str, x: Any, y: Any, what: str = "scores") -> None:
    """Raise one clear error unless ``y`` holds one integer class index per row of the 2-D ``x``."""
    if x.ndim != 2:
        raise ValueError(f"{who}: {what} must be 2-D (samples, classes), got shape {x.shape}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"{who}: labels must have shape ({x.shape[0]},), one per row of the {what} "
                         f"{x.shape}, got shape {y.shape}")
    if backend.kind(y.dtype) not in "iu":
        raise TypeError(f"{who}: labels must be integer class indices, got dtype {y.dtype}")
    if backend.is_lazy(y):
        return  # (their values are not known until the caller computes; Dask checks nothing either)
    xp = _namespace(y)
    low, high = (int(xp.min(y)), int(xp.max(y))) if y.size else (0, 0)
    if low < 0 or high >= x.shape[1]:
        raise ValueError(f"{who}: labels must lie in 0..{x.shape[1] - 1} (the {what} have "
                         f"{x.shape[1]} classes), got labels from {low} to {high}")


def cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of ``logits`` (n, classes) against integer ``labels`` (n,): −log softmax(x)[y].

    ``reduction`` is "mean" (default), "sum" or "none" (one loss per row). Computed stably (no
    overflow for large logits) by one fused gate whose gradient is softmax(x) − one-hot(y).
    """
    x = _values(logits)
    y = _values(labels)
    check_class_labels("cross_entropy", x, y, "logits")
    index = (np.arange(y.shape[0]), y)
    if reduction == "none":
        return -log_softmax(logits, axis=-1)[index]
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    scale = 1.0 / y.shape[0] if reduction == "mean" and y.shape[0] else 1.0
    return apply(_G["cross_entropy"], logits, index=index, scale=scale)



# ---------------------------------------------------------------------------------------------
# ndarray methods on Tensor: x.sum(axis=1), x.var(ddof=1), x.cumsum(), ...
# ---------------------------------------------------------------------------------------------


def _as_method(fn: Any, name: str) -> Any:
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = fn.__doc__
    return method


def _add_method(gate: Gate) -> None:
    if gate.method and gate.method not in Tensor.__dict__:
        setattr(Tensor, gate.method, _as_method(_f(gate.name), gate.method))


for _name, _fn in {"exp": exp, "log": log, "sqrt": sqrt, "sigmoid": sigmoid, "tanh": tanh, "relu": relu,
                   "round": round, "abs": abs}.items():
    setattr(Tensor, _name, _as_method(_fn, _name))
for _gate_entry in list(GATES.values()):
    _add_method(_gate_entry)
on_register(_add_method)


#: np.linalg's names, for ``cr.linalg.inv(a)`` (NumPy's own np.linalg.inv works on tensors too)
linalg = SimpleNamespace(inv=inv, solve=solve, det=det, slogdet=slogdet, cholesky=cholesky, eigh=eigh,
                         eigvalsh=eigvalsh, svd=svd, pinv=pinv, norm=norm)

_NOT_PUBLIC = {"Tensor", "apply", "mask", "backend", "apply1", "apply_gate", "namespace_kind", "binary_op",
               "split_call", "resolve", "normalize_axis", "normalize_pad_width", "on_register", "Gate", "namedtuple",
               "Sequence", "Any", "SimpleNamespace", "gate_function", "check_class_labels"}
__all__ = sorted(n for n, v in list(globals().items())
                 if not n.startswith("_") and n not in _NOT_PUBLIC and (callable(v) or n == "linalg")
                 and not isinstance(v, type))
