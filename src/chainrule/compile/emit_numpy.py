"""The planned NumPy back end: one NumPy call per instruction, on whole arrays.

Large programs write every intermediate into a buffer preallocated for this signature (``out``
arguments to the ufuncs, matmuls included), reused once its value is dead and overwritten in place
when an operand dies at the instruction (the planner's work). Small ones (under ``PLAN_MIN_SIZE``
elements, where the cost is Python's, not memory's) run as plain operator code. What the call
returns is always fresh: never a buffer, an input, or another result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codegen import helper_name
from ..gates import GATES
from .backends import Emitted, Emitter, Options
from .ir import Code, Ins, lit, paren, uses
from .planner import Step, plan_memory

#: arrays smaller than this run as plain operator code (no buffers, no out=)
PLAN_MIN_SIZE = 2048

#: NumPy calls whose result may share memory with their first input (liveness follows the base)
VIEW_CALLS = {g.np_name for g in GATES.values() if g.view and g.np_name}
BINARY_OPERATORS = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "power": "**", "matmul": "@",
                    "greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<=", "equal": "==",
                    "not_equal": "!="}
#: elementwise extrema whose number operand the planned code reads as a constant array (full_operand)
_EXTREMA = {"maximum", "minimum", "fmax", "fmin"}


def op_text(i: Ins, args: list[str], out: str | None) -> str:
    """One instruction as a NumPy expression (``out`` given: written into that array)."""
    if i.kind == "ufunc":
        if out is None and len(args) == 2 and i.fn in BINARY_OPERATORS:
            return f"{paren(args[0])} {BINARY_OPERATORS[i.fn]} {paren(args[1])}"
        if out is None and i.fn == "negative":
            return f"-{paren(args[0])}"
        # out positionally: half the call overhead of out= (NumPy 2.4 deprecates it for max/min)
        tail = "" if not out else f", out={out}" if i.fn in ("maximum", "minimum") else f", {out}"
        return f"np.{i.fn}({', '.join(args)}{tail})"
    if i.kind == "numexpr":
        tail = f", out={out}" if out else ""
        return f"{i.fn}({', '.join(args)}{tail})"
    if i.kind == "getitem":
        return f"{args[0]}[{i.params['index']}]"
    if i.kind == "helper":
        params = "".join(f", {k}={v!r}" for k, v in i.params.items())
        return f"{helper_name(GATES[i.fn])}(np, {', '.join(args)}{params})"
    if i.fn == "full":
        dtype = np.dtype(i.params.get("dtype", np.float64))
        return f"np.full({i.args[0]!r}, {args[1]}{'' if dtype == np.float64 else f', dtype=np.{dtype.name}'})"
    if i.fn in ("reshape", "broadcast_to"):
        return f"np.{i.fn}({args[0]}, {i.params['shape']!r})"
    if i.fn == "transpose":
        axes = i.params.get("axes")
        if axes is None or tuple(axes) == tuple(range(len(axes)))[::-1]:
            return f"{paren(args[0])}.T"
        return f"np.transpose({args[0]}, {axes!r})"
    if i.fn == "matmul" and out:
        return f"np.matmul({args[0]}, {args[1]}, out={out})"
    params = "".join(f", {k}={v!r}" for k, v in i.params.items())
    return f"np.{i.fn}({', '.join(args)}{params})"


def arg_text(text: dict[str, str], a: Any) -> str:
    """An argument as source: a value's storage name, a tuple, or a number."""
    if isinstance(a, str):
        return text[a]
    if isinstance(a, tuple):
        return "(" + ", ".join(arg_text(text, x) for x in a) + ("," if len(a) == 1 else "") + ")"
    return lit(a)


def emit_whole(code: Code, plan: bool, globals_: dict[str, Any] | None = None) -> str:
    """Source of ``_compiled`` running the instructions on whole arrays; with ``plan``, every
    elementwise result, matmul included, goes into a buffer of the memory plan (put in ``globals_``)."""
    globals_ = globals_ if globals_ is not None else {}
    ins = code.ins
    results = code.results
    returned = {r for r in results if isinstance(r, str)}
    # views keep their base alive: liveness is tracked per storage root
    roots: dict[str, str] = {}
    for i in ins:
        if ((i.kind == "call" and i.fn in VIEW_CALLS) or i.kind == "getitem") and isinstance(i.args[0], str):
            roots[i.target] = roots.get(i.args[0], i.args[0])

    def planned(i: Ins) -> bool:
        meta = code.meta(i.target)
        return (plan and (i.kind in ("ufunc", "numexpr") or (i.kind == "call" and i.fn == "matmul"))
                and meta is not None and meta[0] != () and i.target not in returned)

    steps = [Step([i.target] if planned(i) else [], uses(i), in_place=not (i.kind == "call" and i.fn == "matmul"))
             for i in ins]
    memory = plan_memory(steps, code.meta, returns=results, roots=roots, prefix="_b")
    for name, (shape, dtype) in zip(memory.names, memory.buffers):
        globals_[name] = np.empty(shape, dtype=dtype)
    text = {p: p for p in code.params}
    text.update({c: c for c in code.consts})
    kind: dict[str, str] = {}    # fresh / view, for values not in the plan
    body: list[str] = []
    nlocal = 0
    for i in ins:
        args = [arg_text(text, a) for a in i.args]
        dest = memory.dest.get(i.target)
        if dest is not None:
            meta = code.meta(i.target)
            if i.fn in _EXTREMA and meta is not None and meta[1].kind in "fiu":
                args = full_operand(code, i, args, meta, globals_)
            body.append(op_text(i, args, out=dest))
            text[i.target] = dest
        else:
            nlocal += 1
            name = f"r{nlocal}"
            body.append(f"{name} = {op_text(i, args, out=None)}")
            text[i.target] = name
            is_view = (i.kind == "call" and i.fn in VIEW_CALLS) or i.kind == "getitem"
            kind[i.target] = "view" if is_view else "fresh"
    # results: fresh, distinct, never a buffer, an input or a constant; a view only of a fresh
    # array that nothing else returned shares (np.sum(...).reshape(n) needs no copy)
    seen: set[str] = set()
    outs = []
    base_of = [roots.get(r, r) for r in results if isinstance(r, str)]
    by_target = {i.target: i for i in ins}

    def own(r: Any) -> bool:
        if not isinstance(r, str):
            return False
        if kind.get(r) == "fresh":
            return True
        base = roots.get(r)
        return (kind.get(r) == "view" and base is not None and kind.get(base) == "fresh"
                and base_of.count(base) == 1 and by_target[r].kind == "call")

    for r in results:
        t = arg_text(text, r)
        if not (own(r) and t not in seen):
            m = code.meta(r)
            if m is None or (m[0] == () and m[1].kind != "f"):   # 0-d float arrays: .copy(), cheaper
                value = code.env.get(r) if isinstance(r, str) else r
                dtype = np.result_type(value, np.float16).name  # numbers become floats
                t = f"np.array({t}, dtype=np.{dtype})"
            else:
                t = f"{t}.copy()"
        seen.add(t)
        outs.append(t)
    lines = [f"def _compiled({', '.join(code.params)}):"]
    lines += ["    " + b for b in body]
    lines.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    return "\n".join(lines) + "\n"


def full_operand(code: Code, i: Ins, args: list[str], meta: tuple[tuple[int, ...], Any],
                 globals_: dict[str, Any]) -> list[str]:
    """``maximum(x, 0)`` reads a constant array of zeros instead of the number: NumPy's SIMD
    loop for maximum/minimum takes two arrays, its loop with a broadcast number is about
    four times slower (relu on a (128, 256) float32 array: 2.3 µs against 10.5 µs)."""
    shape, dtype = meta
    k = next((j for j, a in enumerate(i.args) if isinstance(a, (int, float)) and not isinstance(a, bool)), None)
    if k is None or code.meta(i.args[1 - k]) != meta:
        return args
    value = i.args[k]
    fills = [g for g in globals_ if g.startswith("_fill")]
    for g in fills:  # one array per shape, dtype and value
        v = globals_[g]
        if v.shape == shape and v.dtype == dtype and (v.size == 0 or v.flat[0] == value):
            name = g
            break
    else:
        name = f"_fill{len(fills)}"
        globals_[name] = np.full(shape, value, dtype=dtype)
    args = list(args)
    args[k] = name
    return args


def _emit(code: Code, options: Options) -> Emitted:
    g: dict[str, Any] = {}
    src = emit_whole(code, options.size >= PLAN_MIN_SIZE, g)
    return Emitted(src, g, "numpy")


EMITTER = Emitter("numpy", 100, _emit)
