"""The tiled NumPy back end: elementwise programs on large arrays run block by block.

Where every instruction is an elementwise ufunc on one float64 shape (of at least two blocks),
``_block`` runs the NumPy calls on one ``TILE``-element block with ``out=`` buffers small enough to
stay in cache, and writes each result straight into its output (the planner's output slots).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backends import Emitted, Emitter, Options
from .blocks import TILE, driver_source
from .emit_numpy import PLAN_MIN_SIZE, arg_text, op_text
from .ir import Code, uses
from .planner import Step, output_slots, plan_memory

#: returned constants, allocated filled by the driver instead of computed per block
PREFILLED = ("zeros_like", "full_like")


def tile_shape(code: Code) -> tuple[int, ...] | None:
    """The common shape when every instruction is elementwise on it (else None: no tiling)."""
    arrays = [v for v in code.env.values() if isinstance(v, np.ndarray)]
    if any(v.dtype != np.float64 for v in arrays if v.dtype.kind != "b"):
        return None  # the block buffers are float64; other dtypes use the whole-array plan
    shapes = {v.shape for v in arrays if v.ndim > 0}
    shapes |= {np.shape(code.env[p]) for p in code.params}
    if len(shapes) != 1:
        return None
    results = code.results
    for i in code.ins:
        if i.kind in ("ufunc", "numexpr") and code.meta(i.target) is not None:
            continue
        if i.kind == "call" and i.fn in PREFILLED and i.target in results:
            continue
        return None
    if any(not isinstance(r, str) for r in results):
        return None
    shape = shapes.pop()
    return shape if math.prod(shape) >= 2 * TILE else None


def emit_tiled(code: Code, shape: tuple[int, ...], globals_: dict[str, Any]) -> str:
    """Source of ``_block`` (one block of the calls, into planned block buffers) and its driver."""
    size = math.prod(shape)
    results = code.results
    prefill = {i.target: i for i in code.ins if i.kind == "call"}
    body_ins = [i for i in code.ins if i.kind != "call"]
    slots, copies = output_slots(results, [i.target for i in body_ins], prefill)
    memory = plan_memory([Step([i.target], uses(i)) for i in body_ins], lambda v: "f8",
                         returns=results, slots=slots)
    text = {p: p for p in code.params}
    text.update({c: c for c in code.consts})
    body: list[str] = []
    for i in body_ins:
        args = [arg_text(text, a) for a in i.args]
        dest = memory.dest[i.target]
        body.append(op_text(i, args, out=dest))
        text[i.target] = dest
    for k, r in copies:
        body.append(f"np.copyto(o{k}, {arg_text(text, r)})")
    outs = [f"o{k}" for k in range(len(results))]
    sig = ", ".join([*code.params, *outs, *memory.names])
    lines = [f"def _block({sig}):"] + ["    " + b for b in (body or ["pass"])]
    fills = [None if r not in prefill else 0 if prefill[r].fn == "zeros_like" else prefill[r].args[1]
             for r in results]
    lines += driver_source(code.params, fills, shape, size, TILE, [np.float64] * len(memory.names), globals_)
    return "\n".join(lines) + "\n"


def _emit(code: Code, options: Options) -> Emitted | None:
    if options.size < PLAN_MIN_SIZE:
        return None
    shape = tile_shape(code)
    if shape is None:
        return None
    g: dict[str, Any] = {}
    return Emitted(emit_tiled(code, shape, g), g, "numpy")


EMITTER = Emitter("tiled", 50, _emit)
