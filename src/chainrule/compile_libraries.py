"""``cr.compile`` on Dask arrays: an elementwise program's compiled kernel, run on each chunk.

An elementwise program (every gate elementwise, every array argument shaped like the output) maps
chunks to chunks: its value and gradients on a chunk need that chunk of the inputs only. It runs as
one task per chunk: the kernel ``cr.compile`` generates for NumPy blocks (fused where numba is
installed) computes the value and every gradient of the chunk at once (``da.apply_gufunc`` with no
core dimensions: one task per chunk, one Dask array per result, all with the inputs' chunks). Any other
program (a reduction, an argument broadcast against others, integer arguments) needs more than one
chunk for a result: it runs as the eager engine's own Dask graph, as ``cr.value_and_grad`` builds it.

Nothing is computed here: the result is lazy until the caller computes it. Kernels are compiled once
per worker thread (a compiled kernel's buffers belong to one thread) on the first chunk of each shape.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np

from . import backend
from .gates import ELEMENTWISE, NONDIFF

__all__ = ["call", "uses_dask"]

_local = threading.local()


def uses_dask(args: tuple[Any, ...]) -> bool:
    """Whether any argument is a Dask array (or a tensor holding one)."""
    return any(backend.is_lazy(getattr(a, "data", a)) for a in args)


def call(compiled: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
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
    from .compiler import Compiled

    kernels = _local.__dict__.setdefault("kernels", {})
    fast = kernels.get(key)
    if fast is None:
        fast = kernels[key] = Compiled(f, argnums, backend_name)
    it = iter(blocks)
    out, grads = fast(*[next(it) if v is None else v for v in template])
    return (out, *(grads if isinstance(grads, tuple) else (grads,)))
