"""What the Array API standard lacks, per array library: the one place that says so.

On the arrays of any library other than NumPy, each gate computes with the standard's function (its
``std`` form in the gate table). For what the standard has no function for, the library's adapter
below supplies one, or nothing, and then the gate raises an error naming itself and the library:

==========================  =====================  ========================  ==========================
what the standard lacks     NumPy-like (CuPy)      Dask                      standard only (the rest)
==========================  =====================  ========================  ==========================
scatter-add (indexing's     ``add.at``             per output chunk, a       one gather per repeat of
gradient, repeated indices                         ``bincount`` of its       an index (exact)
add up; data-apis#177)                             entries from each chunk
NumPy indexing (index       native                 native, else a gather of  a gather of positions
arrays, several of them)                           positions (``take``); no  (``take``)
                                                   Dask boolean masks
item assignment             copy, then ``x[i]=v``  ``where`` of a gather     ``where`` of a gather
pad, sliding windows,       native                 native (windows, strided  a gather of positions
as_strided, diag(onal)                             views: gathers)           (their NumPy index map)
tril, triu                  native                 native                    ``where`` of a mask
take_along_axis             standard               a gather of positions     standard
einsum                      native                 native                    none: the gate raises
linalg (inv, solve, det,    the standard's         NumPy's, per matrix of    the standard's
eigh, svd, pinv...)         (``linalg``)           a stack (``map_blocks``)  (``linalg``)
cbrt, sinc, exp2, fmax,     native                 native                    compositions of standard
fmod, nansum, rint, ...                                                      functions
bool arithmetic (x > 0      as NumPy               as NumPy                  converted to float
times a gradient)                                                            (``mask``)
any other elementwise gate  NumPy's forward, by    NumPy's forward on each   none: the gate raises
(SciPy's special            NumPy's dispatch       chunk (``elemwise``)
functions)                  (``__array_ufunc__``)
==========================  =====================  ========================  ==========================

"Positions" are a NumPy array of the flat positions of the input's elements, put through the same
NumPy function (``np.pad(arange(n).reshape(shape), ...)``): they say where each output element comes
from, so one ``take`` of the standard computes the gate, and a scatter-add through them its
gradient. They are constants built from shapes, once per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gates.core import ELEMENTWISE, NONDIFF
from .gates.shape import _pad_index, _positions, _strided_index, _window_index


def adapter_for(lib: Any) -> Standard:
    """The adapter of a :class:`chainrule.backend.Library`."""
    if lib.name == "dask.array":
        return Dask(lib)
    if lib.native is not None:
        return NumPyLike(lib)
    return Standard(lib)


def backend_kind(a: Any) -> str:
    from .backend import kind

    return kind(a.dtype) if hasattr(a, "dtype") else "?"


def _basic(i: Any) -> bool:
    return i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice))


class Standard:
    """Only the standard's functions (``array-api-strict``, and any library without an adapter of its
    own): what NumPy has beyond the standard is computed from it where that is exact."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.xp = lib.xp

    def serve(self, gate: Any) -> Any:
        """The function serving ``gate`` on this library (called ``fn(*inputs, **params)``), or None
        where the standard's own function does."""
        return getattr(self, "gate_" + gate.name, None)

    def fallback(self, gate: Any) -> Any:
        """The last resort for a gate neither the standard nor this adapter has (None: it raises)."""
        return None

    # ---- conveniences NumPy has and the standard leaves out ----------------------------------------
    def mask(self, b: Any) -> Any:
        """A truth value as a number: the standard does no arithmetic on bools."""
        if self.xp.isdtype(b.dtype, "bool"):
            return self.xp.astype(b, self.lib.float_dtype())
        return b

    def numpy_index(self, index: Any) -> Any:
        """``index`` with this library's arrays (and lists) as NumPy arrays: a constant to build positions."""
        def one(i: Any) -> Any:
            if isinstance(i, list):
                return np.asarray(i)
            if isinstance(i, self.lib.array_type):
                return self.lib.to_numpy(i)
            return i

        return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)

    def _take(self, flat: Any, positions: np.ndarray) -> Any:
        return self.xp.take(flat, self.xp.asarray(positions), axis=0)

    def gather(self, x: Any, positions: np.ndarray, fill: float = 0.0) -> Any:
        """The elements of ``x`` at the flat ``positions`` (a NumPy array; −1: ``fill``), shaped like them."""
        p = np.asarray(positions).reshape(-1)
        valid = p >= 0
        flat = self.xp.reshape(x, (-1,))
        if p.size == 0:
            return self.xp.reshape(flat[:0], positions.shape)
        taken = self._take(flat, np.where(valid, p, 0))
        if not valid.all():
            taken = self.xp.where(self.xp.asarray(valid), taken, float(fill))
        return self.xp.reshape(taken, tuple(positions.shape))

    def scatter_flat(self, g: Any, positions: np.ndarray, n: int) -> Any:
        """A vector of ``n`` zeros with each element of the 1-D ``g`` added at its position; repeated
        positions add up, in order (as ``np.add.at``): one gather per repeat level, exact."""
        xp = self.xp
        p = np.asarray(positions).reshape(-1)
        if p.size == 0:
            return xp.zeros((n,), dtype=g.dtype)
        order = np.argsort(p, kind="stable")
        sp = p[order]
        starts = np.flatnonzero(np.r_[True, sp[1:] != sp[:-1]])
        rank = np.arange(sp.size) - np.repeat(starts, np.diff(np.r_[starts, sp.size]))
        padded = xp.concat([xp.zeros((1,), dtype=g.dtype), g])
        out = None
        for level in range(int(rank.max()) + 1):
            at = rank == level
            src = np.zeros(n, dtype=np.int64)
            src[sp[at]] = order[at] + 1  # 0 picks the padding zero
            term = self._take(padded, src)
            out = term if out is None else out + term
        return out

    def getitem(self, x: Any, index: Any) -> Any:
        """``x[index]`` with NumPy's indexing: basic indices natively, the rest as a gather of positions."""
        idx = index if isinstance(index, tuple) else (index,)
        if all(_basic(i) for i in idx):
            # the standard indexes every axis: the ones NumPy leaves implicit are spelled out
            return x[idx if any(i is Ellipsis for i in idx) else idx + (Ellipsis,)]
        return self.gather(x, _positions(tuple(x.shape))[self.numpy_index(index)])

    # ---- gates the standard has no function for ------------------------------------------------------
    def gate_getitem(self, x: Any, index: Any = None) -> Any:
        return self.getitem(x, index)

    def gate_scatter(self, g: Any, index: Any = None, shape: tuple[int, ...] = ()) -> Any:
        pos = _positions(tuple(shape))[self.numpy_index(index)]
        flat = self.xp.reshape(self.xp.broadcast_to(g, tuple(np.shape(pos))), (-1,))
        n = int(np.prod(shape, dtype=np.int64))
        return self.xp.reshape(self.scatter_flat(flat, pos, n), tuple(shape))

    def gate_setitem(self, x: Any, v: Any, index: Any = None) -> Any:
        # x with v at index, the last write to a position winning (as NumPy's x[index] = v)
        xp = self.xp
        shape = tuple(x.shape)
        pos = np.asarray(_positions(shape)[self.numpy_index(index)])
        src = np.full(int(np.prod(shape, dtype=np.int64)), -1, dtype=np.int64)
        src[pos.reshape(-1)] = np.arange(pos.size)
        vb = v if hasattr(v, "shape") else xp.asarray(v, dtype=x.dtype)
        vb = xp.reshape(xp.broadcast_to(vb, pos.shape), (-1,))
        if pos.size == 0:
            return x
        taken = xp.reshape(self._take(vb, np.maximum(src, 0)), shape)
        return xp.where(xp.asarray(src.reshape(shape) >= 0), taken, x)

    def gate_unwindow(self, g: Any, shape: tuple[int, ...] = (), window_shape: tuple[int, ...] = (),
                      axis: Any = None) -> Any:
        pos = _window_index(tuple(shape), window_shape, axis)
        n = int(np.prod(shape, dtype=np.int64))
        return self.xp.reshape(self.scatter_flat(self.xp.reshape(g, (-1,)), pos, n), tuple(shape))

    def gate_as_strided(self, x: Any, shape: Any = None, strides: Any = None, itemsize: int = 8) -> Any:
        return self.gather(x, _strided_index(tuple(x.shape), shape, strides, itemsize))

    def gate_sliding_window_view(self, x: Any, window_shape: Any = (), axis: Any = None) -> Any:
        return self.gather(x, _window_index(tuple(x.shape), window_shape, axis))

    def gate_pad(self, x: Any, pad_width: Any = 0, mode: str = "constant", constant_values: float = 0) -> Any:
        return self.gather(x, _pad_index(tuple(x.shape), pad_width, mode), fill=constant_values)

    def _triangle(self, x: Any, keep: np.ndarray) -> Any:
        return self.xp.where(self.xp.asarray(keep), x, 0.0)

    def gate_tril(self, x: Any, k: int = 0) -> Any:
        return self._triangle(x, np.tri(*x.shape[-2:], k=k, dtype=bool))

    def gate_triu(self, x: Any, k: int = 0) -> Any:
        return self._triangle(x, ~np.tri(*x.shape[-2:], k=k - 1, dtype=bool))

    def gate_diagonal(self, x: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
        return self.gather(x, np.diagonal(_positions(tuple(x.shape)), offset, axis1, axis2))

    def gate_diag(self, x: Any, k: int = 0) -> Any:
        pos = _positions(tuple(x.shape))
        return self.gather(x, np.diag(pos + 1, k) - 1 if x.ndim == 1 else np.diag(pos, k))

    # elementwise functions NumPy has, from the standard's (where the composition is exact or within
    # rounding of NumPy's)
    def _f64(self, v: Any) -> Any:
        return self.xp.astype(v, self.xp.float64) if hasattr(v, "shape") else float(v)

    def gate_float_power(self, x: Any, y: Any) -> Any:
        return self.xp.pow(self._f64(x), self._f64(y))

    def gate_fmod(self, x: Any, y: Any) -> Any:
        # the remainder with the sign of x (C's fmod) from the standard's floored remainder
        xp = self.xp
        r = xp.remainder(x, y)
        return xp.where(xp.logical_and(r != 0, (r < 0) != (x < 0)), r - y, r)

    def gate_cbrt(self, x: Any) -> Any:
        return self.xp.sign(x) * self.xp.abs(x) ** (1 / 3)

    def gate_fabs(self, x: Any) -> Any:
        return self.xp.abs(x)

    def gate_exp2(self, x: Any) -> Any:
        return self.xp.pow(2.0, x)

    def gate_logaddexp2(self, x: Any, y: Any) -> Any:
        ln2 = float(np.log(2))
        return self.xp.logaddexp(x * ln2, y * ln2) / ln2

    def gate_deg2rad(self, x: Any) -> Any:
        return x * (np.pi / 180)

    def gate_rad2deg(self, x: Any) -> Any:
        return x * (180 / np.pi)

    def gate_sinc(self, x: Any) -> Any:
        xp = self.xp
        zero = x == 0
        px = np.pi * xp.where(zero, 1.0, x)
        return xp.where(zero, 1.0, xp.sin(px) / px)

    def _nan_pick(self, x: Any, y: Any, pick: Any) -> Any:
        xp = self.xp
        return xp.where(xp.isnan(y), x, xp.where(xp.isnan(x), y, pick(x, y)))

    def gate_fmax(self, x: Any, y: Any) -> Any:
        return self._nan_pick(x, y, self.xp.maximum)

    def gate_fmin(self, x: Any, y: Any) -> Any:
        return self._nan_pick(x, y, self.xp.minimum)

    def gate_isneginf(self, x: Any) -> Any:
        return self.xp.logical_and(self.xp.isinf(x), x < 0)

    def gate_isposinf(self, x: Any) -> Any:
        return self.xp.logical_and(self.xp.isinf(x), x > 0)

    def gate_rint(self, x: Any) -> Any:
        return self.xp.round(x)

    def gate_fix(self, x: Any) -> Any:
        return self.xp.trunc(x)

    def gate_nansum(self, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return self.xp.sum(self.xp.where(self.xp.isnan(x), 0.0, x), axis=axis, keepdims=keepdims)

    def gate_nanmean(self, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        xp = self.xp
        present = xp.astype(xp.logical_not(xp.isnan(x)), x.dtype)
        return self.gate_nansum(x, axis, keepdims) / xp.sum(present, axis=axis, keepdims=keepdims)


class NumPyLike(Standard):
    """A library whose own module mirrors NumPy's (CuPy): what the standard lacks, it has under NumPy's
    name; bools take part in arithmetic as in NumPy."""

    def __init__(self, lib: Any) -> None:
        super().__init__(lib)
        self.native = lib.native

    def serve(self, gate: Any) -> Any:
        attr = "gate_" + gate.name
        own = getattr(type(self), attr, None)
        if own is not None and own is not getattr(Standard, attr, None):
            return getattr(self, attr)  # this library's own way
        if own is None:
            return None  # the standard's function
        if gate.np_name is not None:
            try:
                from .gates import resolve

                return resolve(self.native, gate.np_name)
            except AttributeError:
                pass
        return getattr(self, attr)

    def mask(self, b: Any) -> Any:
        return b  # bool arithmetic as in NumPy

    def fallback(self, gate: Any) -> Any:
        # an elementwise gate: NumPy's forward on the library's arrays, which NumPy's ufuncs hand over
        # to the library (its __array_ufunc__); anything but the library's array back is refused
        if gate.kind not in (ELEMENTWISE, NONDIFF):
            return None
        lib = self.lib

        def fn(*args: Any, **params: Any) -> Any:
            out = gate.fn(*args, **params)
            if not isinstance(out, lib.array_type):
                from .backend import UnsupportedError

                raise UnsupportedError(f"{gate.name}: {lib.name} cannot serve this gate (NumPy's forward gave "
                                       f"a {type(out).__name__}, not a {lib.name} array)")
            return out

        return fn

    def index(self, index: Any) -> Any:
        """NumPy index arrays in ``index`` as this library's arrays."""
        def one(i: Any) -> Any:
            return self.xp.asarray(i) if isinstance(i, (np.ndarray, list)) else i

        return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)

    def getitem(self, x: Any, index: Any) -> Any:
        return x[self.index(index)]

    def _add_at(self) -> Any:
        if self.lib.name == "cupy":
            try:
                import cupyx

                return cupyx.scatter_add  # CuPy's own scatter-add (its add.at is younger)
            except ImportError:
                pass
        return getattr(getattr(self.native, "add", None), "at", None)

    def gate_scatter(self, g: Any, index: Any = None, shape: tuple[int, ...] = ()) -> Any:
        add_at = self._add_at()
        if add_at is None:
            return super().gate_scatter(g, index, shape)
        z = self.xp.zeros(tuple(shape), dtype=g.dtype)
        add_at(z, self.index(index), g)
        return z

    def gate_setitem(self, x: Any, v: Any, index: Any = None) -> Any:
        out = self.xp.asarray(x, copy=True)
        out[self.index(index)] = v
        return out

    def gate_einsum(self, *operands: Any, subscripts: str = "") -> Any:
        return self.native.einsum(subscripts, *operands)

    def gate_sliding_window_view(self, x: Any, window_shape: Any = (), axis: Any = None) -> Any:
        return self.native.lib.stride_tricks.sliding_window_view(x, window_shape, axis=axis)


class Dask(NumPyLike):
    """Dask: ``dask.array`` mirrors NumPy, lazily and chunk by chunk; what needs every element at once
    (an index map over the whole array) is a gather or a ``bincount``, which Dask also chunks."""

    def _take(self, flat: Any, positions: np.ndarray) -> Any:
        return self.native.take(flat, positions, axis=0)  # NumPy positions: chunk sizes stay known

    def fallback(self, gate: Any) -> Any:
        # an elementwise gate: NumPy's forward on each chunk (chunk-local by definition), lazily
        if gate.kind not in (ELEMENTWISE, NONDIFF):
            return None
        from dask.array.core import elemwise

        def fn(*args: Any, **params: Any) -> Any:
            return elemwise(lambda *blocks: gate.fn(*blocks, **params), *args)

        return fn

    def scatter_flat(self, g: Any, positions: Any, n: int) -> Any:
        return self._scatter(g, positions, (n,))

    def _scatter(self, g: Any, positions: Any, shape: tuple[int, ...]) -> Any:
        """Zeros of ``shape`` with ``g`` added at the flat ``positions`` (a NumPy array, or a lazy Dask
        one, shaped like ``g``), chunked along the first axis: each output chunk is the sum, over the
        chunks of ``g``, of a bincount of the entries that fall into it (no array of the whole size is
        ever made in one task)."""
        da = self.native
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0 or int(np.prod(g.shape, dtype=np.int64)) == 0:
            return da.zeros(shape, dtype=g.dtype)
        gflat = g.reshape((-1,), merge_chunks=True)
        if isinstance(positions, np.ndarray):
            flat = da.from_array(positions.reshape(-1), chunks=gflat.chunks)
        else:
            flat = da.broadcast_to(positions, tuple(g.shape)).reshape((-1,), merge_chunks=True).rechunk(gflat.chunks)
        from dask.array.core import normalize_chunks

        full = tuple(shape) or (1,)
        row = int(np.prod(full[1:], dtype=np.int64))
        rows = normalize_chunks(("auto",) + (-1,) * (len(full) - 1), full, dtype=g.dtype)[0]
        pieces, lo = [], 0
        for r in rows:
            size = int(r) * row
            part = da.map_blocks(_bincount_range, flat, gflat, lo=lo, size=size, new_axis=1,
                                 chunks=((1,) * gflat.numblocks[0], (size,)), dtype=g.dtype)
            pieces.append(part.sum(axis=0, dtype=g.dtype))
            lo += size
        return da.concatenate(pieces).reshape(tuple(shape), merge_chunks=True)

    def getitem(self, x: Any, index: Any) -> Any:
        idx = index if isinstance(index, tuple) else (index,)
        if all(_basic(i) for i in idx):
            return x[index]
        if any(isinstance(i, self.lib.array_type) for i in idx):
            return self._lazy_gather(x, idx)
        # a NumPy mask as the positions it keeps (chunk sizes stay known); several index arrays, which
        # Dask does not index with, as a gather
        spelled: list[Any] = []
        for i in self.numpy_index(idx):
            is_mask = isinstance(i, np.ndarray) and i.dtype == bool
            spelled.extend(np.nonzero(i) if is_mask else (i,))
        idx = tuple(spelled)
        arrays = sum(1 for i in idx if not _basic(i))
        if arrays == 1:
            try:
                return x[idx]
            except (NotImplementedError, IndexError, ValueError, TypeError):
                pass
        return self.gather(x, _positions(tuple(x.shape))[idx])

    def _lazy_gather(self, x: Any, idx: tuple[Any, ...]) -> Any:
        """``x[idx]`` where index arrays are Dask arrays (labels of a lazy loss): one along one axis as
        Dask indexes, one integer array per axis through the flat positions, computed lazily."""
        self._refuse_mask(idx)
        arrays = [i for i in idx if not _basic(i)]
        if len(arrays) == 1 and arrays[0].ndim == 1 and backend_kind(arrays[0]) in "iu":
            return x[idx]
        if len(idx) != x.ndim or any(_basic(i) or backend_kind(i) not in "iu" for i in idx):
            raise IndexError("indexing a Dask array with Dask index arrays: give one 1-D integer array for one "
                             "axis, or one for every axis")
        strides = np.cumprod((1,) + tuple(x.shape[:0:-1]))[::-1]
        flat = sum(i * int(st) for i, st in zip(idx, strides))
        return x.reshape((-1,), merge_chunks=True)[flat.reshape((-1,))].reshape(flat.shape)

    def gate_scatter(self, g: Any, index: Any = None, shape: tuple[int, ...] = ()) -> Any:
        idx = index if isinstance(index, tuple) else (index,)
        shape = tuple(shape)
        if not any(isinstance(i, self.lib.array_type) for i in idx):
            pos = np.asarray(_positions(shape)[self.numpy_index(index)])
            return self._scatter(self.native.broadcast_to(g, pos.shape), pos, shape)
        # index arrays that are Dask arrays themselves (labels, a lazy argsort's order): their flat
        # positions computed lazily, then the chunked bincount
        return self._scatter(g, self._lazy_positions(idx, shape), shape)

    def _lazy_positions(self, idx: tuple[Any, ...], shape: tuple[int, ...]) -> Any:
        """The flat positions ``x[idx]`` reads (a lazy Dask array shaped like the result) for an index of
        Dask integer arrays: one per axis, or one among slices (NumPy's layout: its axes in its place)."""
        self._refuse_mask(idx)
        if any(i is Ellipsis for i in idx):
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (len(shape) - len(idx) + 1) + idx[k + 1:]
        idx = idx + (slice(None),) * (len(shape) - len(idx))
        arrays = [k for k, i in enumerate(idx) if not isinstance(i, slice)]
        strides = np.cumprod((1,) + shape[:0:-1])[::-1]
        integer = [isinstance(idx[k], (self.lib.array_type, np.ndarray)) and backend_kind(idx[k]) in "iu"
                   for k in arrays]
        if len(idx) != len(shape) or not all(integer) or (len(arrays) > 1 and len(arrays) != len(shape)):
            raise IndexError("the gradient of indexing a Dask array with Dask index arrays needs one integer array "
                             "for one axis (the others sliced), or one for every axis; index in two steps "
                             "(x[0][idx]) for integers mixed with them")
        if len(arrays) > 1:  # one per axis: broadcast together
            return sum((idx[k] % shape[k]) * int(st) for k, st in zip(range(len(shape)), strides))
        ax = arrays[0]
        arr = idx[ax] % shape[ax]
        nd_arr = arr.ndim
        out = arr.reshape((1,) * ax + tuple(arr.shape) + (1,) * (len(shape) - ax - 1)) * int(strides[ax])
        for k, i in enumerate(idx):
            if k == ax:
                continue
            r = np.arange(shape[k])[i] * int(strides[k])
            dim = k if k < ax else k - 1 + nd_arr  # the result's axis this slice becomes
            r = r.reshape((1,) * dim + (-1,) + (1,) * (len(shape) - 2 + nd_arr - dim))
            out = out + r
        return out

    def _refuse_mask(self, idx: tuple[Any, ...]) -> None:
        if any(isinstance(i, self.lib.array_type) and backend_kind(i) == "b" for i in idx):
            raise IndexError(
                "indexing with a Dask boolean mask (a[a > 0]) is not supported: its result has chunks of unknown "
                "size, through which chainrule cannot keep the gradient lazy. Write cr.where(a > 0, a, 0) (the "
                "entries outside the mask as zeros, which leaves a sum unchanged), or a NumPy mask (a[m.compute()])")

    def gate_setitem(self, x: Any, v: Any, index: Any = None) -> Any:
        return Standard.gate_setitem(self, x, v, index)

    def gate_reshape(self, x: Any, shape: Any = ()) -> Any:
        try:
            return x.reshape(shape, merge_chunks=True)  # rechunks where the chunks line up
        except NotImplementedError:  # axes split unevenly: through the flat array, which Dask can split
            return x.reshape((-1,), merge_chunks=True).reshape(shape, merge_chunks=True)

    def gate_repeat(self, x: Any, repeats: Any = 1, axis: Any = None) -> Any:
        if isinstance(repeats, (int, np.integer)) and axis is not None:
            return self.native.repeat(x, int(repeats), axis=axis)
        # a count per element, or the flattened array: a gather of the repeated positions
        return self.gather(x, np.repeat(_positions(tuple(x.shape)), repeats, axis=axis))

    def gate_take_along_axis(self, x: Any, indices: Any = None, axis: int = -1) -> Any:
        ax = axis % x.ndim
        if isinstance(indices, self.lib.array_type):  # lazy indices: per block, the axis in one chunk
            x = x.rechunk({ax: -1})
            chunks = tuple(c if i != ax else (indices.shape[ax],) for i, c in enumerate(x.chunks))
            indices = indices.rechunk(chunks)
            return self.native.map_blocks(np.take_along_axis, x, indices, axis=ax, dtype=x.dtype, chunks=chunks)
        idx = np.asarray(self.numpy_index(indices))
        full = tuple(np.broadcast_to(np.arange(s).reshape((-1,) + (1,) * (x.ndim - 1 - i)), idx.shape)
                     if i != ax else idx for i, s in enumerate(x.shape))
        return self.gather(x, _positions(tuple(x.shape))[full])

    # ---- linear algebra: per matrix of a stack ------------------------------------------------------
    # Dask's own linalg wants one large matrix in square chunks; the gates take stacks of matrices (as
    # NumPy's do), so each matrix is put in one chunk and NumPy's function runs on each block of them,
    # the batch axes chunked as they were.

    def _per_matrix(self, fn: Any, a: Any, tail: tuple[int, ...]) -> Any:
        nd = a.ndim
        a = a.rechunk({nd - 2: -1, nd - 1: -1})
        out_nd = nd - 2 + len(tail)
        kw: dict[str, Any] = {"chunks": a.chunks[:-2] + tuple((n,) for n in tail)}
        if out_nd < nd:
            kw["drop_axis"] = list(range(out_nd, nd))
        return self.native.map_blocks(fn, a, dtype=a.dtype, meta=np.empty((0,) * out_nd, dtype=a.dtype), **kw)

    def gate_inv(self, a: Any) -> Any:
        return self._per_matrix(np.linalg.inv, a, a.shape[-2:])

    def gate_det(self, a: Any) -> Any:
        return self._per_matrix(np.linalg.det, a, ())

    def gate_logabsdet(self, a: Any) -> Any:
        return self._per_matrix(lambda b: np.linalg.slogdet(b)[1], a, ())

    def gate_cholesky(self, a: Any) -> Any:
        return self._per_matrix(np.linalg.cholesky, a, a.shape[-2:])

    def gate_pinv(self, a: Any) -> Any:
        return self._per_matrix(np.linalg.pinv, a, a.shape[-2:][::-1])

    def gate_eigh_values(self, a: Any, UPLO: str = "L") -> Any:  # noqa: N803 - NumPy's name
        return self._per_matrix(lambda b: np.linalg.eigh(b, UPLO=UPLO)[0], a, a.shape[-1:])

    def gate_eigh_vectors(self, a: Any, UPLO: str = "L") -> Any:  # noqa: N803
        return self._per_matrix(lambda b: np.linalg.eigh(b, UPLO=UPLO)[1], a, a.shape[-2:])

    def _svd(self, a: Any, part: int, full_matrices: bool) -> Any:
        m, n = a.shape[-2:]
        k = min(m, n)
        tail = [(m, m if full_matrices else k), (k,), (n if full_matrices else k, n)][part]
        if part == 1:
            return self._per_matrix(lambda b: np.linalg.svd(b, compute_uv=False), a, tail)
        return self._per_matrix(lambda b: np.linalg.svd(b, full_matrices=full_matrices)[part], a, tail)

    def gate_svd_u(self, a: Any, full_matrices: bool = False) -> Any:
        return self._svd(a, 0, full_matrices)

    def gate_svd_s(self, a: Any) -> Any:
        return self._svd(a, 1, False)

    def gate_svd_vh(self, a: Any, full_matrices: bool = False) -> Any:
        return self._svd(a, 2, full_matrices)

    def gate_solve(self, a: Any, b: Any) -> Any:
        # b is a vector only when it is 1-D (NumPy 2); the batch axes of a and b are aligned by blockwise
        nd = a.ndim
        batch = "".join(chr(ord("a") + i) for i in range(nd - 2))
        a = a.rechunk({nd - 2: -1, nd - 1: -1})
        if b.ndim == 1:
            b = b.rechunk({0: -1})
            return self.native.blockwise(np.linalg.solve, batch + "y", a, batch + "yz", b, "z", dtype=a.dtype,
                                         concatenate=True)
        bb = batch[len(batch) - (b.ndim - 2):] if b.ndim > 2 else ""
        b = b.rechunk({b.ndim - 2: -1, b.ndim - 1: -1})
        return self.native.blockwise(np.linalg.solve, batch + "yw", a, batch + "yz", b, bb + "zw", dtype=a.dtype,
                                     concatenate=True)


def _bincount_range(p: np.ndarray, w: np.ndarray, lo: int = 0, size: int = 0) -> np.ndarray:
    """One chunk of positions ``p`` and values ``w``: the values added at the positions in
    ``[lo, lo + size)``, as a row of ``size`` (a partial sum of one output chunk of the scatter-add)."""
    sel = (p >= lo) & (p < lo + size)
    return np.bincount(p[sel] - lo, weights=w[sel], minlength=size).astype(w.dtype)[None, :]
