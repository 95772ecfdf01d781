"""``cr.compile`` on the arrays of other libraries than NumPy.

* **Dask**: an elementwise program's compiled kernel, run on each chunk (below).
* **NumPy-like libraries** (CuPy): the NumPy plan's code, with ``np`` standing for the library's module
  (its plain operator code: no preallocated buffers), traced and checked on host copies of the first
  arguments of each signature, then run on the library's arrays (:func:`call_numpy_like`).
* any other library (``array-api-strict``, PyTorch through array-api-compat): the eager engine on its
  arrays, as ``cr.value_and_grad`` runs it.

On Dask, an elementwise program (every gate elementwise, every array argument shaped like the output) maps
chunks to chunks: its value and gradients on a chunk need that chunk of the inputs only. It runs as
one task per chunk: the kernel ``cr.compile`` generates for NumPy blocks (fused where numba is
installed) computes the value and every gradient of the chunk at once (``da.apply_gufunc`` with no
core dimensions: one task per chunk, one Dask array per result, all with the inputs' chunks). Any other
program (a reduction, an argument broadcast against others, integer arguments) needs more than one
chunk for a result: it runs as the eager engine's own Dask graph, as ``cr.value_and_grad`` builds it.

Nothing is computed here: the result is lazy until the caller computes it. Kernels are compiled once
per worker thread (a compiled kernel's buffers belong to one thread); a chunk runs through its kernel
in pieces of :data:`PIECE` elements, so the kernel is compiled for that size once, whatever the chunk
size (compiling traces every intermediate of one piece, not of a whole chunk).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np

from . import backend
from .gates import ELEMENTWISE, NONDIFF

__all__ = ["call", "library_of_args"]

_local = threading.local()
#: elements of a chunk the kernel runs on at once (8 MB of float64 per array)
PIECE = 1 << 20


def library_of_args(args: tuple[Any, ...]) -> Any:
    """The library of the first argument (or tensor's values) that is not NumPy's, else None."""
    for a in args:
        data = getattr(a, "data", a)
        if data.__class__ not in backend.NATIVE:
            lib = backend.library_of(data)
            if lib is not None:
                return lib
    return None


def call(compiled: Any, args: tuple[Any, ...], lib: Any) -> tuple[Any, Any]:
    """``compiled(*args)`` for arguments of the library ``lib`` (see the module docstring)."""
    if lib.lazy:
        return call_chunked(compiled, args)
    if lib.native is not None:
        return call_numpy_like(compiled, args, lib)
    from .autodiff import value_and_grad

    return value_and_grad(compiled.f, argnums=compiled.nums[0] if compiled.single else compiled.nums)(*args)


def call_numpy_like(compiled: Any, args: tuple[Any, ...], lib: Any) -> tuple[Any, Any]:
    """``compiled(*args)`` on a NumPy-like library's arrays: specialized per signature (shapes, dtypes,
    integer arguments by value) on host copies, the code run on the library's arrays."""
    from .compile.specialize import Compiled, _Static

    values = tuple(getattr(a, "data", a) for a in args)
    backend.common_library(values, getattr(compiled.f, "__name__", "f"))
    n = len(values)
    nums = tuple(i % n for i in compiled.nums)
    sub = compiled.__dict__.setdefault("_libraries", {}).get(lib.name)
    if sub is None:
        sub = compiled._libraries[lib.name] = Compiled(compiled.f, compiled.nums, compiled.backend)
        sub.array_module = lib.native
    conv: list[Any] = []
    device: list[Any] = []
    key: list[Any] = []
    for i, v in enumerate(values):
        if not isinstance(v, lib.array_type):  # numbers and other constants: compiled by value
            conv.append(v)
            key.append(("const", type(v), v))
            continue
        host = lib.to_numpy(v)
        if host.dtype.kind in "biu" and i not in nums:  # labels, indices: compiled by value, as compile does
            conv.append(_Static(host))
            key.append(("static", host.shape, host.dtype.str, host.tobytes()))
            continue
        if host.dtype.kind != "f":
            host, v = host.astype(np.float64), lib.xp.astype(v, lib.xp.float64)
        conv.append(host)
        device.append(v)
        key.append((host.shape, host.dtype.str))
    cache = sub.__dict__.setdefault("_signatures", {})
    spec = cache.get(tuple(key))
    if spec is None:
        spec = cache[tuple(key)] = sub._specialize(conv, nums)
    sub._last = compiled._last = spec
    res = spec.fn(*device)
    return (res[0], res[1]) if compiled.single else (res[0], tuple(res[1:]))


def call_chunked(compiled: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
    """``compiled(*args)`` for Dask arrays (see the module docstring): ``(out, grads)``, lazy."""
    from .autodiff import _call, _make_leaves, value_and_grad

    values = tuple(getattr(a, "data", a) for a in args)
    n = len(values)
    nums = tuple(i % n for i in compiled.nums)
    arrays = [i for i, v in enumerate(values) if hasattr(v, "shape")]
    # traced as compile traces: every floating argument as an input, so any reduction over it shows
    floats = tuple(i for i in arrays if backend.kind(values[i].dtype) == "f")
    eager = value_and_grad(compiled.f, argnums=compiled.nums if not compiled.single else compiled.nums[0])
    if set(floats) != set(arrays) or not set(nums) <= set(floats):
        return eager(*values)
    leaves_args, _, _ = _make_leaves(compiled.f, values, floats)
    out = _call(compiled.f, leaves_args, {})
    shape = tuple(out.shape)
    if not _elementwise(out) or any(tuple(values[i].shape) != shape for i in arrays):
        return eager(*values)
    key = compiled.__dict__.setdefault("_chunk_key", uuid.uuid4().hex)
    da = backend.library_of(values[arrays[0]]).native
    dtypes = [out.dtype] + [values[i].dtype for i in nums]
    results = da.apply_gufunc(
        _run_block, ",".join("()" for _ in arrays) + "->" + ",".join("()" for _ in dtypes),
        *[values[i] for i in arrays], output_dtypes=dtypes, vectorize=False,
        key=key, f=compiled.f, argnums=compiled.nums[0] if compiled.single else compiled.nums,
        backend_name=compiled.backend, template=tuple(None if i in arrays else v for i, v in enumerate(values)))
    return results[0], (results[1] if compiled.single else tuple(results[1:]))


def _elementwise(out: Any) -> bool:
    """Whether every gate recorded behind ``out`` is elementwise (an iterative walk)."""
    seen: set[int] = set()
    stack = [out]
    while stack:
        t = stack.pop()
        if id(t) in seen or getattr(t, "_gate", None) is None:
            continue
        seen.add(id(t))
        if t._gate.kind not in (ELEMENTWISE, NONDIFF):
            return False
        stack.extend(p for p in t._parents or () if hasattr(p, "_gate"))
    return True


def _run_block(*blocks: np.ndarray, key: str, f: Any, argnums: Any, backend_name: str,
               template: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    """One chunk: the kernel compiled for this thread (once per key) on the chunk's NumPy blocks."""
    from .compile.specialize import Compiled

    kernels = _local.__dict__.setdefault("kernels", {})
    fast = kernels.get(key)
    if fast is None:
        fast = kernels[key] = Compiled(f, argnums, backend_name)

    def run(pieces: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        it = iter(pieces)
        out, grads = fast(*[next(it) if v is None else v for v in template])
        return (out, *(grads if isinstance(grads, tuple) else (grads,)))

    shape = blocks[0].shape
    flat = [b.reshape(-1) for b in blocks]
    size = flat[0].size
    if size <= PIECE:
        return run(list(blocks))
    outs: list[np.ndarray] = []
    for start in range(0, size, PIECE):  # every array argument has the chunk's shape (see call)
        res = run([a[start:start + PIECE] for a in flat])
        if not outs:
            outs = [np.empty(size, dtype=r.dtype) for r in res]
        for o, r in zip(outs, res):
            o[start:start + PIECE] = r
    return tuple(o.reshape(shape) for o in outs)
