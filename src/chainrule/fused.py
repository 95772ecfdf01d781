"""The fused backend of ``cr.compile``: elementwise programs run as numba loops between NumPy's SIMD calls.

The lowered instructions of :mod:`chainrule.compiler` (the same program ``Graph.to_source`` prints,
after the compiler's algebra) are split into stages. Arithmetic that LLVM compiles to exactly
rounded vector instructions (``+ - * /``, ``sqrt``, ``abs``, comparisons, ``where``, ...) runs in
fused numba loops: every intermediate is a scalar local, each value that leaves the loop is written
once. The transcendental calls (``exp``, ``log``, ``sin``, ...) stay NumPy ufunc calls, which NumPy
evaluates with SIMD while numba would call scalar libm once per element (measured: a single
all-in-one numba loop for complex_layer is slower than NumPy's planned code). So a program runs
as ``N0, K0, N1, K1, ...``: NumPy calls, then a fused kernel, and so on, each stage as early as its
operands allow, block by block over the arrays so the few buffers between stages stay in cache.
The outputs are written directly by the stage that computes them.

Kernels are generated from the instructions (never a second copy of a derivative rule), compiled
with ``numba.njit(error_model="numpy")`` (IEEE division, no exceptions; no ``fastmath``: results
agree with the NumPy backend to rounding, bit for bit where LLVM keeps the operation order), and
cached by their text, so the same structure compiles once per process whatever its names or sizes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .compiler import Ins, _lit, _uses, block_driver

__all__ = ["available", "fusable_shape", "emit_fused", "KERNEL_UFUNCS"]

#: ufuncs evaluated inside the fused loops (exactly rounded, or cheap, and vectorized by LLVM);
#: every other ufunc is a NumPy call between loops
KERNEL_UFUNCS: dict[str, str] = {
    "add": "{0} + {1}", "subtract": "{0} - {1}", "multiply": "{0} * {1}", "divide": "{0} / {1}",
    "true_divide": "{0} / {1}", "negative": "-{0}", "positive": "+{0}", "square": "{0} * {0}",
    "reciprocal": "1.0 / {0}", "sqrt": "np.sqrt({0})", "absolute": "abs({0})", "fabs": "abs({0})",
    "sign": "np.sign({0})", "maximum": "np.maximum({0}, {1})", "minimum": "np.minimum({0}, {1})",
    "greater": "{0} > {1}", "greater_equal": "{0} >= {1}", "less": "{0} < {1}", "less_equal": "{0} <= {1}",
    "equal": "{0} == {1}", "not_equal": "{0} != {1}", "logical_not": "not {0}", "power": "{0} ** {1}",
}
#: calls that are elementwise constants or selections, also evaluated inside the loops
_KERNEL_CALLS = {"where", "zeros_like", "full_like", "full"}

#: values computed from the inputs by at most this many loop operations are recomputed, not stored
REMAT_COST = 6
_NUMBA: Any = None
_IMPORT_LOCK = threading.Lock()
_KERNELS: dict[str, Any] = {}


def available() -> bool:
    """Whether numba can be imported (imported once, on the first large fusable program)."""
    global _NUMBA
    if _NUMBA is None:
        with _IMPORT_LOCK:
            try:
                import numba

                _NUMBA = numba
            except ImportError:
                _NUMBA = False
    return _NUMBA is not False


def _kernel(text: str) -> Callable[..., None]:
    """The compiled loop for a kernel's source (cached by text: names are positional)."""
    k = _KERNELS.get(text)
    if k is None:
        namespace: dict[str, Any] = {"np": np}
        exec(compile(text, "<chainrule.fused kernel>", "exec"), namespace)  # noqa: S102 - generated
        k = _NUMBA.njit(error_model="numpy", nogil=True)(namespace["_kernel"])
        _KERNELS[text] = k
    return k


def _meta(env: dict[str, Any], a: Any) -> tuple[tuple[int, ...], Any] | None:
    v = env.get(a) if isinstance(a, str) else None
    return (v.shape, v.dtype) if isinstance(v, np.ndarray) else None


def fusable_shape(ins: list[Ins], params: list[str], returns: list[Any], env: dict[str, Any],
                  consts: dict[str, Any]) -> tuple[int, ...] | None:
    """The common shape when the program is elementwise on float64 arrays of one shape (else None)."""
    shapes = {np.shape(env[p]) for p in params}
    if len(shapes) != 1 or any(np.asarray(env[p]).dtype != np.float64 for p in params):
        return None
    shape = shapes.pop()
    if shape == ():
        return None
    for i in ins:
        m = _meta(env, i.target)
        if m is None or m[0] != shape or m[1].kind not in "fb":
            return None
        if i.kind == "ufunc":
            u = getattr(np, i.fn, None)
            if i.fn not in KERNEL_UFUNCS and not (isinstance(u, np.ufunc) and u.nout == 1):
                return None
        elif not (i.kind == "call" and i.fn in _KERNEL_CALLS and not i.params):
            return None
        for a in _deps(i):
            m = _meta(env, a)
            if a in consts or (a not in params and (m is None or m[0] != shape)):
                return None
    for r in returns:
        m = _meta(env, r)
        if m is None or m[0] != shape or m[1] != np.float64:
            return None
    return shape


def _deps(i: Ins) -> list[str]:
    """The values an instruction reads elementwise (a constant fill reads none)."""
    return [] if i.kind == "call" and i.fn != "where" else _uses(i)


def _in_kernel(i: Ins) -> bool:
    return (i.kind == "ufunc" and i.fn in KERNEL_UFUNCS) or i.kind == "call"


def _scalar_text(i: Ins, args: list[str]) -> str:
    if i.kind == "ufunc":
        return KERNEL_UFUNCS[i.fn].format(*args)
    if i.fn == "where":
        return f"{args[1]} if {args[0]} else {args[2]}"
    if i.fn == "zeros_like":
        return "0.0"
    return f"float({args[1]})"  # full_like(x, value), full(shape, value)


def emit_fused(ins: list[Ins], params: list[str], returns: list[str], env: dict[str, Any],
               shape: tuple[int, ...]) -> tuple[str, str, dict[str, Any]]:
    """(kernels' source for display, the Python source of ``_compiled``, the globals it needs)."""
    size = math.prod(shape)
    returned_calls = {i.target: i for i in ins
                      if i.kind == "call" and i.fn in ("zeros_like", "full_like", "full") and i.target in returns}
    body = [i for i in ins if i.target not in returned_calls]
    # ---- stages: N0, K0, N1, K1, ... each instruction as early as its operands allow ----
    where: dict[str, tuple[str, int]] = {p: ("in", 0) for p in params}
    stage_of: dict[str, int] = {}
    for i in body:
        if _in_kernel(i):
            s = max([where[a][1] for a in _deps(i)] + [0])
            where[i.target] = ("K", s)
        else:
            s = max([where[a][1] + (where[a][0] == "K") for a in _deps(i)] + [0])
            where[i.target] = ("N", s)
        stage_of[i.target] = s
    # a loop value computed from the inputs alone by a few operations is recomputed where a later
    # loop needs it rather than stored and loaded again (x + y, sqrt(y), sqrt(y) >= 0)
    index = {i.target: n for n, i in enumerate(body)}
    by_target = {i.target: i for i in body}
    cost: dict[str, int] = {}
    for i in body:
        if _in_kernel(i) and all(a in params or a in cost for a in _deps(i)):
            cost[i.target] = 1 + sum(cost.get(a, 0) for a in _deps(i))
    steps: list[tuple[str, list[Ins]]] = []      # ("N", [one ufunc]) or ("K", [its instructions])
    for s in range(max(stage_of.values(), default=-1) + 1):
        steps += [("N", [i]) for i in body if where[i.target] == ("N", s)]
        group = {i.target for i in body if where[i.target] == ("K", s)}
        todo = list(group)
        while todo:
            for a in _deps(by_target[todo.pop()]):
                if a not in group and cost.get(a, REMAT_COST + 1) <= REMAT_COST:
                    group.add(a)
                    todo.append(a)
        if group:
            steps.append(("K", [by_target[t] for t in sorted(group, key=index.__getitem__)]))
    # ---- what each step reads and writes as arrays ----
    slot: dict[str, int] = {}                    # returned value -> the output it is computed into
    copies: list[tuple[int, str]] = []
    produced = {i.target for i in body}
    for k, r in enumerate(returns):
        if r in returned_calls:
            continue
        if r in slot or r not in produced:
            copies.append((k, r))
        else:
            slot[r] = k
    reads: list[list[str]] = []
    made: list[set[str]] = []
    for _, group in steps:
        made.append({i.target for i in group})
        reads.append(list(dict.fromkeys(a for i in group for a in _deps(i) if a not in made[-1])))
    stored: list[set[str]] = [set() for _ in steps]   # each value an array once: by its latest producer
    for j, rs in enumerate([*reads, [r for r in returns if r in slot]]):
        for a in rs:
            k = next((k for k in range(j - 1, -1, -1) if a in made[k]), None)
            if k is not None:
                stored[k].add(a)
    writes = [[i.target for i in group if i.target in stored[k] or kind == "N"]
              for k, (kind, group) in enumerate(steps)]
    # returned copies (an input returned as a gradient, a value returned twice) are stored by the
    # last loop, where the value is at hand; the rest are copied after
    extra: list[list[tuple[str, str]]] = [[] for _ in steps]
    kstar = max((k for k, (kind, _) in enumerate(steps) if kind == "K"), default=None)
    if kstar is not None:
        at_hand = set(params).union(*made[: kstar + 1])
        for k, r in [c for c in copies if c[1] in at_hand]:
            if r not in made[kstar] and r not in reads[kstar]:
                reads[kstar].append(r)
            extra[kstar].append((r, f"o{k}"))
            copies.remove((k, r))
    last: dict[str, int] = {}
    for k, rs in enumerate(reads):
        for a in rs:
            last[a] = k
    for r in returns:
        last[r] = len(steps)
    # ---- arrays: outputs, inputs, or block buffers reused once their value is dead ----
    text: dict[str, str] = {p: p for p in params}
    text.update({r: f"o{k}" for r, k in slot.items()})
    free: dict[Any, list[str]] = {}
    bufs: list[Any] = []
    lines: list[str] = []
    kernels: list[str] = []
    kglobals: dict[str, Any] = {}
    for k, ((kind, group), rs, ws) in enumerate(zip(steps, reads, writes)):
        dying = [a for a in rs if last.get(a, -1) <= k and a not in params and a not in slot]
        dests = []
        for w in ws:
            if w in slot:
                dests.append(text[w])
                continue
            dt = env[w].dtype
            reuse = next((a for a in dying if env[a].dtype == dt and text[a] not in dests), None)
            if reuse is not None:  # each element is read before it is written: in place is safe
                dying.remove(reuse)
                dests.append(text[reuse])
            elif free.get(dt):
                dests.append(free[dt].pop())
            else:
                dests.append(f"b{len(bufs)}")
                bufs.append(dt)
            text[w] = dests[-1]
        for a in dying:
            free.setdefault(env[a].dtype, []).append(text[a])
        if kind == "K" and not ws and not extra[k]:
            continue
        if kind == "N":
            i = group[0]
            args = [text[a] if isinstance(a, str) else _lit(a) for a in i.args]
            tail = f", out={dests[0]}" if i.fn in ("maximum", "minimum") else f", {dests[0]}"
            lines.append(f"np.{i.fn}({', '.join(args)}{tail})")
            continue
        dests += [d for _, d in extra[k]]
        src = _kernel_source(group, rs, ws + [v for v, _ in extra[k]])
        name = f"_k{len(kernels)}"
        kernels.append(f"# {name}: numba.njit(error_model='numpy', nogil=True)\n{src}")
        kglobals[name] = _kernel(src)
        lines.append(f"{name}({', '.join([text[a] for a in rs] + dests)})")
    for k, r in copies:
        lines.append(f"np.copyto(o{k}, {text[r]})")
    nret = len(returns)
    outs = [f"o{k}" for k in range(nret)]
    sig = ", ".join([*params, *outs, *[f"b{j}" for j in range(len(bufs))]])
    src_lines = [f"def _block({sig}):"] + ["    " + b for b in (lines or ["pass"])]
    fills = [None if r not in returned_calls else 0 if returned_calls[r].fn == "zeros_like"
             else returned_calls[r].args[1] for r in returns]
    src_lines += block_driver(params, fills, shape, size, bufs, kglobals)
    return "\n".join(kernels), "\n".join(src_lines) + "\n", kglobals


def _kernel_source(group: list[Ins], reads: list[str], writes: list[str]) -> str:
    """One loop: load each input element, the group's instructions as scalar statements, store outputs."""
    local: dict[str, str] = {}
    params = [f"p{j}" for j in range(len(reads))] + [f"q{j}" for j in range(len(writes))]
    body = []
    for j, a in enumerate(reads):
        local[a] = f"a{j}"
        body.append(f"a{j} = p{j}[i]")
    for n, i in enumerate(group):
        args = [(local.get(a, "None") if isinstance(a, str) else f"({_lit(a)})") for a in i.args]
        local[i.target] = f"v{n}"
        body.append(f"v{n} = {_scalar_text(i, args)}")
    for j, w in enumerate(writes):
        body.append(f"q{j}[i] = {local[w]}")
    lines = [f"def _kernel({', '.join(params)}):", f"    for i in range({params[0]}.shape[0]):"]
    lines += ["        " + b for b in body]
    return "\n".join(lines) + "\n"
