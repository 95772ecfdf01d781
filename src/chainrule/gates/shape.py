"""Shape and assembly gates: they move, copy or pick elements without arithmetic (reshape, indexing,
padding, windows, concatenation...).

Their gradients send each upstream element back to where it came from; where one input element
feeds several outputs (broadcasting, padding's reflections, overlapping windows) the gradients add
up. Gates that pick elements by a fixed pattern share one rule: the pattern is computed once on an
array of positions (``np.pad`` of ``arange`` says where each padded element came from), and the
gradient is a scatter-add through it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .core import SHAPE, Gate, apply_in, constant, index_into, register, unbroadcast


def _gate(name: str, forward: Any, explain: str, fmt: str, **kw: Any) -> Gate:
    return register(Gate(name, forward, explain, fmt, kind=kw.pop("kind", SHAPE), **kw))


# ---- forwards --------------------------------------------------------------------------------------


def _scatter(xp, g, index=None, shape=()):
    """Zeros of ``shape`` with ``g`` added at ``index``; repeated indices add up."""
    z = xp.zeros(shape, dtype=g.dtype)
    parts = index if isinstance(index, tuple) else (index,)
    if all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in parts):
        z[index] += g  # slices and single positions pick each place once
    else:
        xp.add.at(z, index, g)  # repeated indices accumulate, unlike z[index] += g
    return z


def _setitem(xp, x, v, index=None):
    """A copy of ``x`` with ``v`` written at ``index`` (what ``x[index] = v`` leaves in x)."""
    out = xp.array(x, copy=True)
    out[index] = v
    return out


def _unwindow(xp, g, shape=(), window_shape=(), axis=None):
    """The adjoint of ``sliding_window_view``: each window's entries added back to where they came
    from (overlapping windows add up); one strided add per window offset."""
    out = xp.zeros(shape, dtype=g.dtype)
    nd = len(shape)
    axes = tuple(range(nd)) if axis is None else tuple(a % nd for a in ((axis,) if isinstance(axis, int) else axis))
    for offset in np.ndindex(*window_shape):
        target = [slice(None)] * nd
        for a, o in zip(axes, offset):
            target[a] = slice(o, o + g.shape[a])
        out[tuple(target)] += g[(Ellipsis,) + offset]
    return out


def _getitem(xp, x, index=None):
    return x[index]


def _concatenate(xp, *xs, axis=0):
    return xp.concatenate(xs, axis=axis)


def _stack(xp, *xs, axis=0):
    return xp.stack(xs, axis=axis)


def _transpose_std(xp, x, axes=None):
    return xp.permute_dims(x, tuple(range(x.ndim - 1, -1, -1)) if axes is None else tuple(axes))


def _concatenate_std(xp, *xs, axis=0):
    return xp.concat(xs, axis=axis)


def _repeat_std(xp, x, repeats=1, axis=None):
    if not isinstance(repeats, int):  # a count per element, or a NumPy integer
        r = np.asarray(repeats, dtype=np.int64)
        repeats = int(r) if r.ndim == 0 else xp.asarray(r)
    return xp.repeat(x, repeats, axis=axis)


def _tile_std(xp, x, reps=1):
    return xp.tile(x, (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps))


def _take_along_axis_std(xp, x, indices=None, axis=-1):
    return xp.take_along_axis(x, xp.asarray(indices), axis=axis)


def _as_strided(xp, x, shape=None, strides=None, itemsize=8):
    # strides are in bytes of the C-contiguous layout (what Tensor.strides reports)
    return np.lib.stride_tricks.as_strided(xp.ascontiguousarray(x), shape, strides, writeable=False)


# ---- gathers: gradient by scatter-add through a map of positions ----------------------------------


@functools.lru_cache(maxsize=16)
def _positions(shape: tuple[int, ...]) -> np.ndarray:
    size = math.prod(shape)
    return np.arange(size, dtype=np.int64 if size >= 2**31 else np.intp).reshape(shape)


def _gather_vjp(index_of):
    """A vjp for a gate that picks elements by a pattern: ``index_of(shape, **params)`` gives, for
    each output element, the flat position it came from (−1 for elements that are constants)."""

    def vjp(m, g, x, out, needs, **params):
        idx = np.asarray(index_of(tuple(x.shape), **params)).reshape(-1)
        flat = m.reshape(g, (-1,))
        keep = idx >= 0
        if not keep.all():
            flat, idx = index_into(flat, np.flatnonzero(keep)), idx[keep]
        return (m.reshape(m.scatter(flat, index=idx, shape=(math.prod(x.shape),)), x.shape),)

    return vjp


def _pad_index(shape, pad_width=0, mode="constant", constant_values=0):
    pos = _positions(shape)
    if mode == "constant":
        return np.pad(pos, pad_width, mode="constant", constant_values=-1)
    return np.pad(pos, pad_width, mode=mode)


def _strided_index(shape_x, shape=None, strides=None, itemsize=8):
    # the strides count bytes of the input's C-contiguous layout: the same walk over positions
    pos = np.ascontiguousarray(_positions(tuple(shape_x)))
    walk = tuple(s // itemsize * pos.itemsize for s in strides)
    return np.lib.stride_tricks.as_strided(pos, tuple(shape), walk, writeable=False)


def _window_index(shape_x, window_shape=(), axis=None):
    return np.lib.stride_tricks.sliding_window_view(_positions(tuple(shape_x)), window_shape, axis=axis)


def _as_strided_vjp(m, g, x, out, needs, shape=None, strides=None, itemsize=8):
    idx = _strided_index(tuple(x.shape), shape, strides, itemsize)
    return _gather_vjp(lambda s: idx)(m, g, x, out, needs)


# ---- vector-Jacobian rules ---------------------------------------------------------------------------


def _reshape_vjp(m, g, x, out, needs, shape=()):
    return (m.reshape(g, x.shape),)


def _transpose_vjp(m, g, x, out, needs, axes=None):
    if axes is None:
        return (m.transpose(g),)
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a % len(axes)] = i
    return (m.transpose(g, tuple(inverse)),)


def _broadcast_to_vjp(m, g, x, out, needs, shape=()):
    return (unbroadcast(m, g, x.shape),)


def _getitem_vjp(m, g, x, out, needs, index=None):
    return (m.scatter(g, index=index, shape=x.shape),)


def _scatter_vjp(m, g, src, out, needs, index=None, shape=()):
    return (index_into(g, index),)


def _setitem_vjp(m, g, x, v, out, needs, index=None):
    gx = m.setitem(g, 0.0, index=index) if needs[0] else None  # the overwritten elements get nothing
    gv = None
    if needs[1]:
        picked = index_into(g, index)
        lost = _overwritten(tuple(x.shape), index)
        if lost is not None:  # a repeated index: only its last assignment survives
            picked = picked * constant(m, lost)
        gv = unbroadcast(m, picked, tuple(v.shape)) if tuple(picked.shape) != tuple(v.shape) else picked
    return gx, gv


def _overwritten(shape: tuple[int, ...], index: Any) -> np.ndarray | None:
    """For ``x[index] = v`` with repeated positions: 1 where an assignment survived, 0 where a later
    one overwrote it (None when nothing repeats)."""
    pos = _positions(shape)[index]
    flat = np.asarray(pos).reshape(-1)
    if np.unique(flat).size == flat.size:
        return None
    last = np.zeros(math.prod(shape), dtype=np.intp) - 1
    last[flat] = np.arange(flat.size)  # NumPy keeps the last write to a repeated position
    return (last[flat] == np.arange(flat.size)).reshape(np.shape(pos)).astype(np.float64)


def _unwindow_vjp(m, g, src, out, needs, shape=(), window_shape=(), axis=None):
    return (m.sliding_window_view(g, window_shape, axis=axis),)


def _window_vjp(m, g, x, out, needs, window_shape=(), axis=None):
    return (m.unwindow(g, shape=tuple(x.shape), window_shape=tuple(window_shape), axis=axis),)


def _concatenate_vjp(m, g, *args, axis=0):
    *xs, out, needs = args
    ax = axis % out.ndim
    grads, start = [], 0
    for x, need in zip(xs, needs):
        stop = start + x.shape[ax]
        grads.append(index_into(g, (slice(None),) * ax + (slice(start, stop),)) if need else None)
        start = stop
    return tuple(grads)


def _stack_vjp(m, g, *args, axis=0):
    *xs, out, needs = args
    ax = axis % out.ndim
    return tuple(index_into(g, (slice(None),) * ax + (i,)) if need else None for i, need in enumerate(needs))


def _flip_vjp(m, g, x, out, needs, axis=None):
    return (m.flip(g, axis=axis),)


def _roll_vjp(m, g, x, out, needs, shift=0, axis=None):
    back = tuple(-s for s in shift) if isinstance(shift, (tuple, list)) else -shift
    return (m.roll(g, back, axis=axis),)


def _repeat_vjp(m, g, x, out, needs, repeats=1, axis=None):
    shape = tuple(x.shape) if axis is not None else (math.prod(x.shape),)
    ax = 0 if axis is None else axis % len(shape)
    n = shape[ax] if shape else 1
    if isinstance(repeats, (int, np.integer)) or np.ndim(repeats) == 0 or np.size(repeats) == 1:
        r = int(np.asarray(repeats).reshape(-1)[0])
        split = shape[:ax] + (n, r) + shape[ax + 1:]
        grad = m.sum(m.reshape(g, split), axis=ax + 1)
    else:  # a count per element: each output position goes back to its source
        idx = np.repeat(np.arange(n), repeats)
        grad = m.scatter(g, index=(slice(None),) * ax + (idx,), shape=shape)
    return (m.reshape(grad, x.shape) if axis is None else grad,)


def _tile_vjp(m, g, x, out, needs, reps=1):
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    d = max(len(reps), x.ndim)
    reps = (1,) * (d - len(reps)) + reps
    shape = (1,) * (d - x.ndim) + tuple(x.shape)
    split = tuple(v for r, s in zip(reps, shape) for v in (r, s))  # each axis as (copies, size)
    summed = m.sum(m.reshape(g, split), axis=tuple(range(0, 2 * d, 2)))
    return (m.reshape(summed, x.shape),)


def _pad_vjp(m, g, x, out, needs, pad_width=0, mode="constant", constant_values=0):
    if mode == "constant":  # the inner block is the input; the border was constants
        widths = np.broadcast_to(np.asarray(pad_width, dtype=np.intp), (x.ndim, 2))
        return (g[tuple(slice(int(lo), int(lo) + s) for (lo, _), s in zip(widths, x.shape))],)
    return _gather_vjp(_pad_index)(m, g, x, out, needs, pad_width=pad_width, mode=mode)


def _pad_jvp(m, tangents, x, out, pad_width=0, mode="constant", constant_values=0):
    # the border copies the input's tangent (edge, reflect, wrap) or is a constant (tangent 0)
    return apply_in(m, PAD, tangents[0], pad_width=pad_width, mode=mode)


def _tri_vjp(name):
    def vjp(m, g, x, out, needs, k=0):
        return (getattr(m, name)(g, k=k),)

    return vjp


def _take_along_axis_vjp(m, g, x, out, needs, indices=None, axis=-1):
    if axis is None:
        return (m.reshape(m.scatter(g, index=indices, shape=(math.prod(x.shape),)), x.shape),)
    ax = axis % x.ndim
    full = tuple(np.broadcast_to(np.arange(s).reshape((-1,) + (1,) * (x.ndim - 1 - i)), indices.shape)
                 if i != ax else indices for i, s in enumerate(x.shape))
    return (m.scatter(g, index=full, shape=tuple(x.shape)),)


# ---- shape rules -------------------------------------------------------------------------------------


def _reshape_shape(shape, shape_to=None):
    new = (shape_to,) if isinstance(shape_to, int) else tuple(shape_to)
    if -1 not in new:
        return new
    known = math.prod(s for s in new if s != -1)
    return tuple(math.prod(shape) // known if s == -1 else s for s in new)


def _transpose_shape(shape, axes=None):
    return tuple(reversed(shape)) if axes is None else tuple(shape[a] for a in axes)


def _getitem_shape(shape, index=None):
    return np.broadcast_to(np.zeros((), dtype=np.int8), shape)[index].shape


def _concatenate_shape(*shapes, axis=0):
    ax = axis % len(shapes[0])
    return shapes[0][:ax] + (sum(s[ax] for s in shapes),) + shapes[0][ax + 1:]


def _stack_shape(*shapes, axis=0):
    ax = axis % (len(shapes[0]) + 1)
    return shapes[0][:ax] + (len(shapes),) + shapes[0][ax:]


# ---- printing ------------------------------------------------------------------------------------------


def _transpose_code(args: list[str], params: dict[str, Any]) -> str:
    axes = params.get("axes")
    if axes is None or tuple(axes) == tuple(range(len(axes) - 1, -1, -1)):
        return f"{args[0]}.T"
    return f"np.transpose({args[0]}, {tuple(axes)!r})"


# ---- the gates -------------------------------------------------------------------------------------------

RESHAPE = _gate("reshape", "reshape", "reshape gate: the gradient is reshaped back", "reshape({0}, {shape})",
                linear="linear", vjp=_reshape_vjp, params={"shape": ()}, shape=lambda s, shape=(): _reshape_shape(s,
                shape),
                code="np.reshape({0}, {shape})", view=True)
TRANSPOSE = _gate("transpose", "transpose", "transpose gate: the gradient is transposed back", "{0}ᵀ",
                  linear="linear", vjp=_transpose_vjp, params={"axes": None}, shape=_transpose_shape,
                  code=_transpose_code, view=True, numpy=("transpose",), std=_transpose_std)
BROADCAST_TO = _gate("broadcast_to", "broadcast_to",
                     "broadcast gate: a value copied to many places — their gradients add up",
                     "broadcast({0}, {shape})", linear="linear", vjp=_broadcast_to_vjp, params={"shape": ()},
                     shape=lambda s, shape=(): tuple(shape), code="np.broadcast_to({0}, {shape})", view=True)
GETITEM = _gate("getitem", _getitem, "indexing gate: the gradient goes back to the picked elements (repeats add)",
                "{0}[{index}]", linear="linear", vjp=_getitem_vjp, params={"index": None}, shape=_getitem_shape,
                code="{0}[{index}]", view=True, numpy=())
SCATTER = _gate("scatter", _scatter, "scatter-add gate: the gradient of indexing; repeated indices add up",
                "scatter({0}, index=[{index}], shape={shape})", linear="linear", vjp=_scatter_vjp,
                params={"index": None, "shape": ()}, shape=lambda s, index=None, shape=(): tuple(shape),
                helper=True, numpy=())
SETITEM = _gate("setitem", _setitem,
                "item-assignment gate: the new values get the gradient of their places; the old ones there get none",
                "{0} with [{index}] = {1}", linear="linear", vjp=_setitem_vjp, params={"index": None},
                shape=lambda s, v, index=None: s, helper=True, numpy=(), arity=2)
CONCATENATE = _gate("concatenate", _concatenate, "concatenate gate: each input gets its slice of the gradient",
                    "concatenate([{xs}], axis={axis})", linear="linear", vjp=_concatenate_vjp, params={"axis": 0},
                    arity=None, shape=_concatenate_shape, code="np.concatenate([{xs}], axis={axis})",
                    numpy=("concatenate",), std=_concatenate_std)
STACK = _gate("stack", _stack, "stack gate: each input gets its slice of the gradient",
              "stack([{xs}], axis={axis})", linear="linear", vjp=_stack_vjp, params={"axis": 0}, arity=None,
              shape=_stack_shape, code="np.stack([{xs}], axis={axis})", numpy=("stack",))
FLIP = _gate("flip", "flip", "flip gate: the gradient is flipped back", "flip({0})", linear="linear", vjp=_flip_vjp,
             params={"axis": None}, shape=lambda s, axis=None: s, view=True)
ROLL = _gate("roll", "roll", "roll gate: the gradient is rolled back by the same shift", "roll({0}, {shift})",
             linear="linear", vjp=_roll_vjp, params={"shift": 0, "axis": None}, shape=lambda s, shift=0, axis=None: s,
             code="np.roll({0}, {shift})")
REPEAT = _gate("repeat", "repeat", "repeat gate: each element was copied; the copies' gradients add up",
               "repeat({0}, {repeats})", linear="linear", vjp=_repeat_vjp, params={"repeats": 1, "axis": None},
               code="np.repeat({0}, {repeats})", method="repeat", std=_repeat_std)
TILE = _gate("tile", "tile", "tile gate: the input was copied in tiles; the tiles' gradients add up",
             "tile({0}, {reps})", linear="linear", vjp=_tile_vjp, params={"reps": 1}, code="np.tile({0}, {reps})",
             std=_tile_std)
PAD = _gate("pad", "pad", "pad gate: the inner block gets its gradient back; constant borders get none "
            "(edge, reflect and wrap borders send theirs to the elements they copy)", "pad({0}, {pad_width})",
            jvp=_pad_jvp, vjp=_pad_vjp, params={"pad_width": 0, "mode": "constant", "constant_values": 0},
            code="np.pad({0}, {pad_width})")
TRIL = _gate("tril", "tril", "tril gate: the gradient of the kept lower triangle passes; the rest gets none",
             "tril({0})", linear="linear", vjp=_tri_vjp("tril"), params={"k": 0}, shape=lambda s, k=0: s)
TRIU = _gate("triu", "triu", "triu gate: the gradient of the kept upper triangle passes; the rest gets none",
             "triu({0})", linear="linear", vjp=_tri_vjp("triu"), params={"k": 0}, shape=lambda s, k=0: s)
DIAGONAL = _gate("diagonal", "diagonal", "diagonal gate: the gradient goes back onto the diagonal; "
                 "off-diagonal elements get none", "diagonal({0})",
                 linear="linear", vjp=_gather_vjp(lambda s, offset=0, axis1=0, axis2=1:
                                 np.diagonal(_positions(s), offset, axis1, axis2)),
                 params={"offset": 0, "axis1": 0, "axis2": 1}, view=True, method="diagonal")
DIAG = _gate("diag", "diag", "diag gate: a vector placed on a diagonal (or a matrix's diagonal taken); the "
             "gradient goes back the other way", "diag({0})",
             linear="linear", vjp=_gather_vjp(lambda s, k=0: np.diag(_positions(s) + 1, k) - 1 if len(s) == 1
                             else np.diag(_positions(s), k)),
             params={"k": 0})
TAKE_ALONG_AXIS = _gate("take_along_axis", "take_along_axis",
                        "take-along-axis gate: the gradient goes back to the picked elements (repeats add)",
                        "take_along_axis({0}, {indices}, axis={axis})", linear="linear", vjp=_take_along_axis_vjp,
                        params={"indices": None, "axis": -1}, code="np.take_along_axis({0}, {indices}, axis={axis})",
                        std=_take_along_axis_std)
SLIDING_WINDOW_VIEW = _gate(
    "sliding_window_view", "lib.stride_tricks.sliding_window_view",
    "windows gate: every window is a view of the input; where windows overlap, their gradients add up",
    "windows({0}, {window_shape})", linear="linear", vjp=_window_vjp, params={"window_shape": (), "axis": None},
    code="np.lib.stride_tricks.sliding_window_view({0}, {window_shape})", view=True)
UNWINDOW = _gate("unwindow", _unwindow, "window-sum gate: each window's entries added back to their places "
                 "(the gradient of sliding windows)", "unwindow({0}, {shape})", linear="linear", vjp=_unwindow_vjp,
                 params={"shape": (), "window_shape": (), "axis": None},
                 shape=lambda s, shape=(), window_shape=(), axis=None: tuple(shape), helper=True, numpy=())
AS_STRIDED = _gate("as_strided", _as_strided,
                   "strided-view gate: each output element is a view of one input element; elements seen "
                   "several times add up their gradients", "as_strided({0}, {shape}, {strides})",
                   linear="linear", vjp=_as_strided_vjp, params={"shape": None, "strides": None, "itemsize": 8},
                   shape=lambda s, shape=None, strides=None, itemsize=8: tuple(shape), view=True,
                   numpy=("lib.stride_tricks.as_strided",), helper=True)


def normalize_pad_width(pad_width: Any, ndim: int) -> tuple[tuple[int, int], ...]:
    """``np.pad``'s pad_width in every form it accepts, as one (before, after) pair per axis."""
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.intp), (ndim, 2))
    return tuple((int(a), int(b)) for a, b in widths)
