"""The fused back end (numba): an elementwise float64 program runs as loops that read each input and
write each result once.

A kernel holds every instruction it can: arithmetic LLVM compiles to exactly rounded vector
instructions (``+ - * /``, ``sqrt``, ``abs``, comparisons, ``where``, ...) and ``exp`` and ``log``
(:mod:`.inline_math`'s, which LLVM vectorizes with the loop) as scalar statements of an elementwise
loop; ``sin`` and ``cos`` as block functions of :mod:`.inline_math` (one ``sincos`` where both of
one value are used), and the other transcendental functions (``tan``, ``expm1``, ...) as calls of
glibc's vector math library on a block of the loop's values (:mod:`.vecmath`). Inside the kernel
the arrays are walked in blocks of :data:`BLOCK` elements: a block's loop runs as far as the next
block call, whose inputs and results stay in small scratch arrays in L1 cache, and so on to the
block's results, which are written straight into the outputs. Values cheap to compute from the
inputs are recomputed where a later loop needs them instead of stored.

A program using a ufunc that has no vector form here (or any ufunc, where libmvec is missing) runs
as before: NumPy calls between kernels, block by block over ``TILE`` elements. Large calls are split
among threads, one contiguous range each, as many as the process has CPUs (:mod:`.blocks`).

Kernels are generated from the instructions (never a second copy of a derivative rule), compiled
with ``numba.njit(error_model="numpy")`` (IEEE division, no exceptions; no ``fastmath``: the loops'
arithmetic agrees with the NumPy plan bit for bit where LLVM keeps the operation order, the
transcendental functions to a few ulps), and cached by their text, in memory and on disk.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import vecmath
from .backends import Emitted, Emitter, Options
from .blocks import TILE, driver_source
from .ir import Code, Ins, lit, uses
from .planner import Step, output_slots, plan_memory

#: float64 elementwise programs on arrays at least this large run fused loops (backend "auto"/"numba")
FUSED_MIN_SIZE = 2048
#: elements per block inside a kernel: its scratch arrays stay in L1 cache, and its stores and loads
#: interleave with the vector calls finely enough to overlap (measured: 128 beats 512 by 10-30%)
BLOCK = 128
#: elements per block of a one-loop kernel calling a guarded function (log, sin, cos): a block with an
#: argument outside its inline form's domain is computed again with the full forms (long enough that
#: starting a block costs nothing)
GUARDED_BLOCK = 4096
#: values computed from the inputs by at most this many loop operations are recomputed, not stored
REMAT_COST = 6
#: operations too slow to compute twice (a division or square root costs more than a store and a load)
_EXPENSIVE = {"divide", "true_divide", "reciprocal", "sqrt", "power", "exp", "log"}

#: ufuncs evaluated as scalar statements inside the loops (exactly rounded, or cheap, and vectorized by LLVM)
KERNEL_UFUNCS: dict[str, str] = {
    "add": "{0} + {1}", "subtract": "{0} - {1}", "multiply": "{0} * {1}", "divide": "{0} / {1}",
    "true_divide": "{0} / {1}", "negative": "-{0}", "positive": "+{0}", "square": "{0} * {0}",
    "reciprocal": "1.0 / {0}", "sqrt": "np.sqrt({0})", "absolute": "abs({0})", "fabs": "abs({0})",
    "sign": "np.sign({0})", "maximum": "np.maximum({0}, {1})", "minimum": "np.minimum({0}, {1})",
    "greater": "{0} > {1}", "greater_equal": "{0} >= {1}", "less": "{0} < {1}", "less_equal": "{0} <= {1}",
    "equal": "{0} == {1}", "not_equal": "{0} != {1}", "logical_not": "not {0}", "power": "{0} ** {1}",
}
#: ufuncs whose result is a mask (every other value in a kernel is float64)
_MASKS = {"greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_not"}
#: calls that are elementwise constants or selections, also evaluated inside the loops
_KERNEL_CALLS = {"where", "zeros_like", "full_like", "full"}
_PREFILLED = ("zeros_like", "full_like", "full")

_warned = False


def available(warn: bool = False) -> bool:
    """Whether numba can run the fused loops; ``backend="numba"`` without it warns once per process."""
    global _warned
    if vecmath.available():
        return True
    if warn and not _warned:
        _warned = True
        warnings.warn("compile: backend='numba' needs numba (pip install 'chainrule[fast]'); "
                      "using the NumPy backend", RuntimeWarning, stacklevel=6)
    return False


def _vector(code: Code, i: Ins) -> bool:
    """A transcendental ufunc evaluated by a libmvec call on a block inside a kernel."""
    if i.kind != "ufunc" or i.fn in vecmath.INLINE_UFUNCS or i.fn not in vecmath.VECTOR_UFUNCS:
        return False
    meta = code.meta(i.target)
    return (meta is not None and meta[1] == np.float64 and any(isinstance(a, str) for a in i.args)
            and all(not isinstance(a, str) or code.meta(a)[1] == np.float64 for a in i.args))  # type: ignore[index]


def _scalar(i: Ins) -> bool:
    return ((i.kind == "ufunc" and (i.fn in KERNEL_UFUNCS or i.fn in vecmath.INLINE_UFUNCS))
            or (i.kind == "call" and i.fn in _KERNEL_CALLS))


def fusable_shape(code: Code) -> tuple[int, ...] | None:
    """The common shape when the program is elementwise on float64 arrays of one shape (else None)."""
    env = code.env
    shapes = {np.shape(env[p]) for p in code.params}
    if len(shapes) != 1 or any(np.asarray(env[p]).dtype != np.float64 for p in code.params):
        return None
    shape = shapes.pop()
    if shape == ():
        return None
    for i in code.ins:
        m = code.meta(i.target)
        if m is None or m[0] != shape:
            return None
        if m[1] != np.float64 and not (m[1] == np.bool_ and i.kind == "ufunc" and i.fn in _MASKS):
            return None   # float16 results of exp(mask), integer sums of masks: NumPy's dtypes
        if i.kind == "ufunc":
            u = getattr(np, i.fn, None)
            if i.fn not in KERNEL_UFUNCS and not (isinstance(u, np.ufunc) and u.nout == 1):
                return None
        elif not (i.kind == "call" and i.fn in _KERNEL_CALLS and not i.params):
            return None
        for a in _deps(i):
            m = code.meta(a)
            if a in code.consts or (a not in code.params and (m is None or m[0] != shape)):
                return None
    for r in code.results:
        m = code.meta(r)
        if m is None or m[0] != shape or m[1] != np.float64:
            return None
    return shape


def _deps(i: Ins) -> list[str]:
    """The values an instruction reads elementwise (a constant fill reads none)."""
    return [] if i.kind == "call" and i.fn != "where" else uses(i)


def schedule(ins: list[Ins], inner: Callable[[Ins], bool], sources: set[str]) -> list[tuple[bool, list[Ins]]]:
    """Steps ``O0, I0, O1, I1, ...``: each "outer" instruction a step of its own, the "inner" ones
    of a stage one loop, every instruction as early as its operands allow. A loop value computed
    from ``sources`` by a few operations is recomputed where a later loop needs it rather than
    stored and loaded again (x + y, x * x; never a division or a square root). Returns
    ``(is_inner, instructions)`` per step."""
    where: dict[str, tuple[bool, int]] = {p: (False, 0) for p in sources}
    stage: dict[str, int] = {}
    for i in ins:
        if inner(i):
            s = max([where[a][1] for a in _deps(i)] + [0])
        else:
            s = max([where[a][1] + where[a][0] for a in _deps(i)] + [0])
        where[i.target] = (inner(i), s)
        stage[i.target] = s
    index = {i.target: n for n, i in enumerate(ins)}
    by_target = {i.target: i for i in ins}
    cost: dict[str, int] = {}
    for i in ins:
        if inner(i) and all(a in sources or a in cost for a in _deps(i)):
            own = REMAT_COST + 1 if i.kind == "ufunc" and i.fn in _EXPENSIVE else 1
            cost[i.target] = own + sum(cost.get(a, 0) for a in _deps(i))
    steps: list[tuple[bool, list[Ins]]] = []
    for s in range(max(stage.values(), default=-1) + 1):
        steps += [(False, [i]) for i in ins if where[i.target] == (False, s)]
        group = {i.target for i in ins if where[i.target] == (True, s)}
        todo = list(group)
        while todo:
            for a in _deps(by_target[todo.pop()]):
                if a not in group and cost.get(a, REMAT_COST + 1) <= REMAT_COST:
                    group.add(a)
                    todo.append(a)
        if group:
            steps.append((True, [by_target[t] for t in sorted(group, key=index.__getitem__)]))
    return steps


def _traffic(steps: list[tuple[bool, list[Ins]]], final: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """What each step reads from memory, and what it writes there: a value is stored once, by its
    latest producer before the step (or the end, for ``final``) that reads it."""
    made = [{i.target for i in group} for _, group in steps]
    reads = [list(dict.fromkeys(a for i in group for a in _deps(i) if a not in m))
             for (_, group), m in zip(steps, made)]
    stored: list[set[str]] = [set() for _ in steps]
    for j, rs in enumerate([*reads, final]):
        for a in rs:
            k = next((k for k in range(j - 1, -1, -1) if a in made[k]), None)
            if k is not None:
                stored[k].add(a)
    writes = [[i.target for i in group if i.target in stored[k] or not inner]
              for k, (inner, group) in enumerate(steps)]
    return reads, writes


def _fold_negations(code: Code, group: list[Ins], writes: list[str]) -> tuple[list[Ins], set[str]]:
    """``exp(-x)`` (a sigmoid's): the vector call negates its argument in registers, so ``-x`` needs
    no loop of its own. Applies where the negation is used by that one call only. Returns the group
    (the call reading ``x``, the negation gone) and the targets of the calls that negate."""
    counts: dict[str, int] = {}
    for i in group:
        for a in uses(i):
            counts[a] = counts.get(a, 0) + 1
    producer = {i.target: i for i in group}
    negated: set[str] = set()
    dropped: set[str] = set()
    out = []
    for i in group:
        p = producer.get(i.args[0]) if i.args and isinstance(i.args[0], str) else None
        if (_vector(code, i) and vecmath.VECTOR_UFUNCS[i.fn][2] == 1 and p is not None and p.kind == "ufunc"
                and p.fn == "negative" and isinstance(p.args[0], str) and counts[p.target] == 1
                and p.target not in writes):
            i = Ins(i.target, i.kind, i.fn, [p.args[0]], i.params)
            negated.add(i.target)
            dropped.add(p.target)
        out.append(i)
    return [i for i in out if i.target not in dropped], negated


def _scalar_text(i: Ins, args: list[str]) -> str:
    if i.kind == "ufunc":
        return KERNEL_UFUNCS[i.fn].format(*args)
    if i.fn == "where":
        return f"{args[1]} if {args[0]} else {args[2]}"
    if i.fn == "zeros_like":
        return "0.0"
    return f"float({args[1]})"  # full_like(x, value), full(shape, value)


def _sincos_pairs(group: list[Ins]) -> dict[str, str]:
    """sin and cos of one value in a loop (both inline): each one's target -> the other's."""
    seen: dict[tuple[str, Any], str] = {}
    pairs: dict[str, str] = {}
    for i in group:
        if i.kind == "ufunc" and i.fn in ("sin", "cos") and i.fn in vecmath.INLINE_UFUNCS:
            key = ("cos" if i.fn == "sin" else "sin", tuple(i.args))
            if key in seen and seen[key] not in pairs:
                pairs[i.target], pairs[seen[key]] = seen[key], i.target
            seen.setdefault((i.fn, tuple(i.args)), i.target)
    return pairs


def kernel_source(code: Code, group: list[Ins], reads: list[str], writes: list[str]) -> tuple[str, list[str]]:
    """One kernel ``_kernel(p0.., q0..)`` computing ``writes`` (``q`` arrays, a value may be written
    to several) from ``reads`` (``p`` arrays): the group's scalar instructions as elementwise loops,
    its transcendental calls as block calls between them, block by block. Returns the source and
    the functions it calls (as :func:`.vecmath.kernel_file_text` names them)."""
    group, negated = _fold_negations(code, group, writes)
    vector = {i.target for i in group if _vector(code, i)}
    steps = schedule(group, lambda i: i.target not in vector, set(reads))
    produced = {i.target for i in group}
    slots, copies = output_slots(writes, produced)
    traffic_reads, traffic_writes = _traffic(steps, list(slots))
    memory = plan_memory([Step(w, [a for a in r if a not in reads]) for r, w in zip(traffic_reads, traffic_writes)],
                         lambda v: code.env[v].dtype, returns=[*slots, *(r for _, r in copies)], slots=slots,
                         prefix="s")
    where: dict[str, str] = {a: f"x{n}" for n, a in enumerate(reads)}   # a value's block array
    where.update({v: d.replace("o", "y", 1) if d.startswith("o") else d for v, d in memory.dest.items()})
    # copies (a value written twice, an input written out): stored by the last loop that has the
    # value at hand, or by a loop of their own at the end
    loops = [k for k, (inner, _) in enumerate(steps) if inner]
    extra: dict[int, list[tuple[str, str]]] = {}
    for k, r in copies:
        at = next((j for j in reversed(loops) if r in {i.target for i in steps[j][1]}), None)
        if at is None:
            if not loops or loops[-1] != len(steps) - 1:
                steps.append((True, []))
                traffic_reads.append([])
                traffic_writes.append([])
                loops.append(len(steps) - 1)
            at = loops[-1]
            if r not in traffic_reads[at]:
                traffic_reads[at].append(r)
        extra.setdefault(at, []).append((r, f"y{k}"))
    functions: list[str] = []

    def body(exact: bool) -> list[str]:
        """The block's steps; ``exact``: the guarded functions by their forms that hold everywhere,
        else by the inline ones, counting in ``g`` the arguments where those do not hold."""
        out: list[str] = []
        for k, (inner, group_k) in enumerate(steps):
            if not inner:
                i = group_k[0]
                sym = vecmath.VECTOR_UFUNCS[i.fn][0] + ("_neg" if i.target in negated else "")
                if sym not in functions:
                    functions.append(sym)
                args = [where[a] if isinstance(a, str) else f"({lit(float(a))})" for a in i.args]
                out.append(f"{sym}({', '.join(args)}, {where[i.target]}, m)")
                continue
            local: dict[str, str] = {}
            lines = []
            for n, a in enumerate(traffic_reads[k]):
                local[a] = f"a{n}"
                lines.append(f"a{n} = {where[a]}[j]")
            guards: list[str] = []   # the calls that count arguments outside an inline form's domain
            pairs = _sincos_pairs(group_k)
            for n, i in enumerate(group_k):
                args = [(local.get(a, "None") if isinstance(a, str) else f"({lit(a)})") for a in i.args]
                if i.target in local:   # the cosine of a sine's argument: computed with it
                    continue
                local[i.target] = f"v{n}"
                if i.target in pairs:   # sin(v) and cos(v): one reduction, both polynomials
                    other = pairs[i.target]
                    local[other] = f"v{group_k.index(next(j for j in group_k if j.target == other))}"
                    sin_cos = [local[i.target], local[other]][:: 1 if i.fn == "sin" else -1]
                    name = "_sincos_exact" if exact else "_sincos"
                    if not exact and f"_trig_outside({args[0]})" not in guards:
                        guards.append(f"_trig_outside({args[0]})")
                    for fn_name in (name, *(() if exact else ("_trig_outside",))):
                        if fn_name not in functions:
                            functions.append(fn_name)
                    lines.append(f"{', '.join(sin_cos)} = {name}({args[0]})")
                    continue
                if i.kind == "ufunc" and i.fn in vecmath.INLINE_UFUNCS:
                    name = "_" + vecmath.INLINE_UFUNCS[i.fn]
                    if i.fn in vecmath.GUARDED:
                        outside, everywhere = vecmath.GUARDED[i.fn]
                        if exact:
                            name = "_" + everywhere
                        elif f"_{outside}({args[0]})" not in guards:
                            guards.append(f"_{outside}({args[0]})")
                            if f"_{outside}" not in functions:
                                functions.append(f"_{outside}")
                    if name not in functions:
                        functions.append(name)
                    lines.append(f"v{n} = {name}({', '.join(args)})")
                else:
                    lines.append(f"v{n} = {_scalar_text(i, args)}")
            lines += [f"{where[w]}[j] = {local[w]}" for w in traffic_writes[k]]
            lines += [f"{dest}[j] = {local[r]}" for r, dest in extra.get(k, [])]
            lines += [f"g += {c}" for c in guards]
            if len(lines) > len(traffic_reads[k]):
                out.append("for j in range(m):")
                out += ["    " + b for b in lines]
        return out

    fast = body(exact=False)
    guarded = any("g += " in b for b in fast)
    if guarded:   # an argument outside an inline function's domain: the block again, with the full ones
        fast = ["g = 0", *fast, "if g:"] + ["    " + b for b in body(exact=True)]
    params = [f"p{j}" for j in range(len(reads))] + [f"q{j}" for j in range(len(writes))]
    lines = [f"def _kernel({', '.join(params)}):", f"    n = {params[0]}.shape[0]"]
    used = "\n".join(fast)
    arrays = [(s, p) for s, p in [(f"x{j}", f"p{j}") for j in range(len(reads))]
              + [(f"y{j}", f"q{j}") for j in range(len(writes))] if s in used]
    block = BLOCK
    if len(steps) == 1 and not memory.buffers:
        if not guarded:   # one loop and no block call: over the whole arrays, one vectorized loop
            lines += [f"    {s} = {p}" for s, p in arrays] + ["    m = n"] + ["    " + b for b in fast]
            return "\n".join(lines) + "\n", functions
        block = GUARDED_BLOCK
    lines += [f"    s{j} = np.empty({BLOCK}{'' if dt == np.float64 else ', dtype=np.bool_'})"
              for j, dt in enumerate(memory.buffers)]
    lines.append(f"    for st in range(0, n, {block}):")
    lines.append(f"        m = min({block}, n - st)")
    lines += [f"        {s} = {p}[st:st + m]" for s, p in arrays]
    lines += ["        " + b for b in fast]
    return "\n".join(lines) + "\n", functions


def emit_fused(code: Code, shape: tuple[int, ...], globals_: dict[str, Any]) -> tuple[str, str]:
    """(the kernels' source, for display; the Python source of ``_compiled``)."""
    size = math.prod(shape)
    results = code.results
    params = code.params
    prefilled = {i.target: i for i in code.ins if i.kind == "call" and i.fn in _PREFILLED and i.target in results}
    body = [i for i in code.ins if i.target not in prefilled]
    steps = schedule(body, lambda i: _scalar(i) or _vector(code, i), set(params))
    slots, copies = output_slots(results, [i.target for i in body], prefilled)
    reads, writes = _traffic(steps, list(slots))
    # returned copies (an input returned as a gradient, a value returned twice) are stored by the
    # last kernel, where the value is at hand; the rest are copied after
    extra: list[list[tuple[str, str]]] = [[] for _ in steps]
    kernels_at = [k for k, (inner, _) in enumerate(steps) if inner]
    if kernels_at:
        kstar = kernels_at[-1]
        at_hand = set(params).union(*[{i.target for i in g} for _, g in steps[: kstar + 1]])
        for k, r in [c for c in copies if c[1] in at_hand]:
            if r not in {i.target for i in steps[kstar][1]} and r not in reads[kstar]:
                reads[kstar].append(r)
            extra[kstar].append((r, f"o{k}"))
            copies.remove((k, r))
    memory = plan_memory([Step(w, r) for r, w in zip(reads, writes)], lambda v: code.env[v].dtype,
                         returns=results, slots=slots)
    text = {p: p for p in params}
    text.update(memory.dest)
    lines: list[str] = []
    kernels: list[str] = []
    calls: list[tuple[str, list[str]]] = []
    for k, (inner, group) in enumerate(steps):
        if not inner:
            i = group[0]
            args = [text[a] if isinstance(a, str) else lit(a) for a in i.args]
            tail = f", out={text[i.target]}" if i.fn in ("maximum", "minimum") else f", {text[i.target]}"
            lines.append(f"np.{i.fn}({', '.join(args)}{tail})")
            continue
        ws = writes[k] + [v for v, _ in extra[k]]
        if not ws:
            continue
        src, functions = kernel_source(code, group, reads[k], ws)
        name = f"_k{len(kernels)}"
        kernels.append(f"# {name}: numba.njit(error_model='numpy', nogil=True, cache=True)\n{src}")
        globals_[name] = vecmath.kernel(src, functions)
        args = [text[a] for a in reads[k]] + [text[w] for w in writes[k]] + [d for _, d in extra[k]]
        lines.append(f"{name}({', '.join(args)})")
        calls.append((name, args))
    for k, r in copies:
        lines.append(f"np.copyto(o{k}, {text[r]})")
    fills = [None if r not in prefilled else 0 if prefilled[r].fn == "zeros_like" else prefilled[r].args[1]
             for r in results]
    outs = [f"o{k}" for k in range(len(results))]
    if len(calls) == 1 and len(lines) == 1 and not memory.names:
        # one kernel and nothing else: it runs on the whole arrays (or one range per thread)
        name, args = calls[0]
        src_lines = driver_source(params, fills, shape, size, None, [], globals_, block=name, args=args,
                                  parallel=True)
    else:
        sig = ", ".join([*params, *outs, *memory.names])
        src_lines = [f"def _block({sig}):"] + ["    " + b for b in (lines or ["pass"])]
        src_lines += driver_source(params, fills, shape, size, TILE, list(memory.buffers), globals_, parallel=True)
    return "\n".join(kernels), "\n".join(src_lines).lstrip("\n") + "\n"


def _emit(code: Code, options: Options) -> Emitted | None:
    if options.backend not in ("auto", "numba") or options.size < FUSED_MIN_SIZE:
        return None
    if not available(warn=options.backend == "numba"):
        return None
    shape = fusable_shape(code)
    if shape is None:
        return None
    g: dict[str, Any] = {}
    kernels, src = emit_fused(code, shape, g)
    return Emitted(src, g, "numba", kernels)


EMITTER = Emitter("numba", 10, _emit)
