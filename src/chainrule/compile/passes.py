"""The algebra passes of ``cr.compile``: each a function ``Code -> Code``, run in :data:`PIPELINE` order.

Every rewrite is one a compiler may do: results agree to rounding where values are finite, and no
pass ever adds work (a rewrite applies only where it saves a pass over the data or costs nothing).
A pass never changes the program it is given: it extends copies of its alias and value tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import gates as _gates
from ..gates import GATES, REDUCTION
from .ir import PURE_KINDS, Code, Ins, execute, is_number, pure_key, use_counts, uses
from .ir import canon as resolve


def _is_float(env: dict[str, Any], a: Any) -> bool:
    v = env.get(a) if isinstance(a, str) else None
    return isinstance(v, np.ndarray) and v.dtype.kind == "f"


def defer_reciprocals(code: Code) -> Code:
    """Carry ``r = 1 / x`` forward without computing it: ``a / r`` is ``a * x``, ``1 / r`` is ``x``,
    ``r ** 2`` is ``1 / x ** 2`` (deferred again), ``a * r`` is ``a / x``. The staged sigmoid's
    ``1 / (1 + e)`` then costs nothing where only its quotients are used. A reciprocal is computed
    only where a value needs it as it is, so no work is ever added."""
    canon, env = code.fork()
    returned = set(code.results)
    recip: dict[str, Any] = {}   # value -> x, where value == 1 / x (not computed)
    out: list[Ins] = []
    made: set[str] = set()

    def c(a: Any) -> Any:
        return resolve(canon, a)

    def need(a: Any) -> Any:
        if isinstance(a, tuple):
            return tuple(need(x) for x in a)
        if isinstance(a, str) and a in recip and a not in made:
            out.append(Ins(a, "ufunc", "reciprocal", [recip[a]]))
            made.add(a)
        return a

    for i in code.ins:
        args = [c(a) for a in i.args]
        deferred = [isinstance(a, str) and a in recip and a not in made for a in args]
        fn = i.fn if i.kind == "ufunc" else None
        if fn in ("reciprocal", "divide") and _is_float(env, i.target) and (fn == "reciprocal" or (
                args[0] == 1 and is_number(args[0]))) and i.target not in returned:
            x = args[-1]
            if isinstance(x, str) and x in recip and x not in made:   # 1 / (1 / x) = x
                canon[i.target] = recip[x]
            else:
                recip[i.target] = x
            continue
        if fn == "divide" and deferred[1] and not deferred[0]:        # a / (1 / x) = a * x
            out.append(Ins(i.target, "ufunc", "multiply", [args[0], recip[args[1]]]))
            continue
        if fn == "multiply" and sum(deferred) == 1:                    # a * (1 / x) = a / x
            k = deferred.index(True)
            out.append(Ins(i.target, "ufunc", "divide", [args[1 - k], recip[args[k]]]))
            continue
        if fn == "square" and deferred[0] and i.target not in returned:  # (1 / x)² = 1 / x²
            sq = f"{i.target}_q"
            env[sq] = env.get(i.target)
            out.append(Ins(sq, "ufunc", "square", [recip[args[0]]]))
            recip[i.target] = sq
            continue
        out.append(Ins(i.target, i.kind, i.fn, [need(a) for a in args], i.params))
    return code.evolve(out, canon=canon, env=env)


#: a sum with negated operands: (op, a negated, b negated) -> (op computed, operands swapped, result negated)
_SUMS = {("add", True, True): ("add", False, True), ("add", False, True): ("subtract", False, False),
         ("add", True, False): ("subtract", True, False), ("add", False, False): ("add", False, False),
         ("subtract", True, True): ("subtract", True, False), ("subtract", False, True): ("add", False, False),
         ("subtract", True, False): ("add", False, True), ("subtract", False, False): ("subtract", False, False)}


def propagate_signs(code: Code) -> Code:
    """Carry negations forward instead of computing them: ``-a * b`` is ``-(a * b)``, ``x - (-y)`` is
    ``x + y``, ``-(-a)`` is ``a``; a sign that meets a number is folded into it (``2 * -a`` is
    ``-2 * a``). Only values used once (or only summed) are deferred, so no work is ever added."""
    canon, env = code.fork()
    returned = set(code.results)
    counts = use_counts(code.ins)
    # a value whose every use is a sum (x + v, x - v) takes its sign into them at no cost
    summed: dict[str, bool] = {}
    for i in code.ins:
        for k, a in enumerate(i.args):
            if isinstance(a, str):
                ok = i.kind == "ufunc" and (i.fn == "add" or (i.fn == "subtract" and k == 1))
                summed[a] = summed.get(a, True) and ok
        for a in uses(Ins(i.target, i.kind, i.fn, [x for x in i.args if isinstance(x, tuple)])):
            summed[a] = False
    neg: dict[str, str] = {}      # value -> the value it is the negative of (not computed)
    out: list[Ins] = []

    def c(a: Any) -> Any:
        return resolve(canon, a)

    def materialize(a: str) -> None:
        if a in neg:
            out.append(Ins(a, "ufunc", "negative", [neg.pop(a)]))

    def emit(target: str, fn: str, args: list[Any], flip: bool, single: bool) -> None:
        if not flip:
            out.append(Ins(target, "ufunc", fn, args))
            return
        base = f"{target}_p"
        env[base] = env.get(target)
        out.append(Ins(base, "ufunc", fn, args))
        if single:
            neg[target] = base
        else:
            out.append(Ins(target, "ufunc", "negative", [base]))

    for i in code.ins:
        args = [c(a) for a in i.args]
        single = i.target not in returned and (counts.get(i.target, 0) == 1 or summed.get(i.target, False))
        negs = [isinstance(a, str) and a in neg for a in args]
        if i.kind != "ufunc" or i.fn not in ("negative", "multiply", "divide", "add", "subtract", "reciprocal"):
            for a in uses(Ins(i.target, i.kind, i.fn, args)):
                materialize(a)
            out.append(Ins(i.target, i.kind, i.fn, args, i.params))
            continue
        base = [neg[a] if n else a for a, n in zip(args, negs)]  # kept: a summed value has several uses
        fn = i.fn
        if fn == "negative":
            if negs[0]:  # -(-a)
                canon[i.target] = base[0]
            elif single and isinstance(args[0], str):
                neg[i.target] = args[0]
            else:
                out.append(Ins(i.target, "ufunc", fn, args))
            continue
        if fn == "reciprocal":
            emit(i.target, fn, base, negs[0], single)
            continue
        if fn in ("multiply", "divide"):
            flip = sum(negs) % 2 == 1
            if flip:  # fold the sign into a number operand where there is one
                for k, a in enumerate(base):
                    if is_number(a):
                        base[k] = -a
                        flip = False
                        break
            elif any(is_number(a) and a < 0 for a in base) and single:
                for k, a in enumerate(base):  # defer a negative number's sign too: -1 / x
                    if is_number(a) and a < 0:
                        base[k] = -a
                        flip = True
                        break
            emit(i.target, fn, base, flip, single)
            continue
        fn, swap, flip = _SUMS[(i.fn, negs[0], negs[1])]
        emit(i.target, fn, base[::-1] if swap else base, flip, single)
    return code.evolve(out, canon=canon, env=env)


def fold_reciprocals(code: Code) -> Code:
    """``r = 1 / x`` used once, by ``r * y``: compute ``y / x`` instead (one pass, not two)."""
    returned = set(code.results)
    counts = use_counts(code.ins)
    recip: dict[str, Any] = {}
    for i in code.ins:
        if i.kind == "ufunc" and counts.get(i.target) == 1 and i.target not in returned and (
                i.fn == "reciprocal" or (i.fn == "divide" and i.args[0] == 1 and is_number(i.args[0]))):
            recip[i.target] = i.args[-1]
    if not recip:
        return code
    out: list[Ins] = []
    folded: set[str] = set()
    for i in code.ins:
        if i.kind == "ufunc" and i.fn == "multiply":
            a, b = i.args
            for r, other in ((a, b), (b, a)):
                if isinstance(r, str) and r in recip and r not in folded:
                    folded.add(r)
                    out.append(Ins(i.target, "ufunc", "divide", [other, recip[r]]))
                    break
            else:
                out.append(i)
        else:
            out.append(i)
    return code.evolve([i for i in out if i.target not in folded])


def value_number(code: Code) -> Code:
    """Compute each pure call once (the rewrites above can create repeats), and cancel a factor
    multiplied in and divided out again: ``(a * s) / s`` and ``(a / s) * s`` are ``a``."""
    canon, _ = code.fork()
    seen: dict[Any, str] = {}
    product: dict[str, tuple[Any, Any]] = {}    # v = a * b
    quotient: dict[str, tuple[Any, Any]] = {}   # v = a / b
    out = []
    for i in code.ins:
        args = [resolve(canon, a) for a in i.args]
        if i.kind == "ufunc":
            if i.fn == "divide" and args[0] in product and args[1] in product[args[0]]:  # (a*s)/s = a
                a, b = product[args[0]]
                canon[i.target] = b if a == args[1] else a
                continue
            if i.fn == "multiply":
                for k in (0, 1):
                    q = quotient.get(args[k]) if isinstance(args[k], str) else None
                    if q is not None and q[1] == args[1 - k]:  # (a/s)*s = a
                        canon[i.target] = q[0]
                        break
                if i.target in canon:
                    continue
        key = pure_key(i.kind, i.fn, args, i.params)
        if key is not None:
            if key in seen:
                canon[i.target] = seen[key]
                continue
            seen[key] = i.target
        if i.kind == "ufunc":
            if i.fn == "multiply" and all(isinstance(a, str) for a in args):
                product[i.target] = (args[0], args[1])
            elif i.fn == "divide" and isinstance(args[1], str):
                quotient[i.target] = (args[0], args[1])
        out.append(Ins(i.target, i.kind, i.fn, args, i.params))
    return code.evolve(out, canon=canon)


def share_divisions(code: Code) -> Code:
    """Divide once, multiply after: a division costs about as much as an exp, a product a tenth of
    it. Where ``1 / x`` is at hand (or ``x`` divides twice), ``a / x`` becomes ``a * (1 / x)`` and
    ``a / x²`` becomes ``a * (1 / x)²``."""
    canon, env = code.fork()
    count: dict[str, int] = {}
    for i in code.ins:
        if i.kind == "ufunc" and i.fn == "divide" and isinstance(i.args[1], str):
            count[i.args[1]] = count.get(i.args[1], 0) + 1
    recip: dict[str, str] = {}        # x -> a value holding 1 / x
    square_of: dict[str, str] = {}    # x² -> x
    out: list[Ins] = []

    def reciprocal_of(x: str) -> str | None:
        if x in recip:
            return recip[x]
        if x in square_of and square_of[x] in recip:   # 1 / x² = (1 / x)²
            r = f"{x}_r"
            env[r] = env.get(x)
            out.append(Ins(r, "ufunc", "square", [recip[square_of[x]]]))
            recip[x] = r
            return r
        return None

    for i in code.ins:
        args = [resolve(canon, a) for a in i.args]
        if i.kind == "ufunc" and _is_float(env, i.target):
            if i.fn == "reciprocal" and isinstance(args[0], str):
                recip.setdefault(args[0], i.target)
            elif i.fn == "square" and isinstance(args[0], str):
                square_of[i.target] = args[0]
            elif i.fn == "divide" and isinstance(args[1], str) and _is_float(env, args[1]):
                x = args[1]
                r = reciprocal_of(x)
                if r is None and count.get(x, 0) >= 2:
                    r = f"{x}_r"
                    env[r] = env.get(x)
                    out.append(Ins(r, "ufunc", "reciprocal", [x]))
                    recip[x] = r
                if r is not None:
                    if args[0] == 1 and is_number(args[0]):
                        canon[i.target] = r
                    else:
                        out.append(Ins(i.target, "ufunc", "multiply", [args[0], r]))
                    continue
        out.append(Ins(i.target, i.kind, i.fn, args, i.params))
    return code.evolve(out, canon=canon, env=env)


def fold_reshapes(code: Code) -> Code:
    """``reshape(sum(x, axis, keepdims=True), reduced shape)`` is ``sum(x, axis)``: one call, whose
    result is a fresh array rather than a view (unbroadcast's bias gradient ``db``). Which calls
    are reductions with ``keepdims`` is read from their gate entries."""
    counts = use_counts(code.ins)
    producer = {i.target: i for i in code.ins}
    env = code.env
    out = []
    for i in code.ins:
        p = producer.get(i.args[0]) if i.kind == "call" and i.fn == "reshape" and i.args else None
        if (p is not None and p.kind == "call" and p.fn in GATES and GATES[p.fn].kind == REDUCTION
                and "keepdims" in GATES[p.fn].params
                and p.params.get("keepdims") and counts.get(p.target) == 1
                and isinstance(env.get(p.args[0]), np.ndarray) and isinstance(env.get(i.target), np.ndarray)):
            axis = p.params.get("axis")
            if env[i.target].shape == _gates.reduced_shape(env[p.args[0]].shape, axis):
                out.append(Ins(i.target, "call", p.fn, list(p.args), {**p.params, "keepdims": False}))
                continue
        out.append(i)
    return code.evolve(out)


def fold_constants(code: Code) -> Code:
    """Values that depend on no argument (the one-hot of fixed labels times the folded seed's
    ``1/n``) are computed once, here, and read as constants by every call. Values shaped like an
    argument stay instructions: the tiled and fused plans run those block by block."""
    canon, env = code.fork()
    consts = dict(code.consts)
    param_shapes = {np.shape(env[p]) for p in code.params if p in env}
    out: list[Ins] = []
    for i in code.ins:
        i = Ins(i.target, i.kind, i.fn, [resolve(canon, a) for a in i.args], i.params)
        if (i.kind in PURE_KINDS and all(u in consts for u in uses(i))
                and (i.kind != "getitem" or i.params["index"] in consts)):
            with np.errstate(all="ignore"):
                value = execute([i], consts, {})[i.target]
            if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) not in param_shapes:
                name = f"_k{len(consts) + 1}"
                while name in consts:
                    name += "_"
                consts[name] = value
                canon[i.target] = name
                env[name] = value
                continue
        out.append(i)
    return code.evolve(out, canon=canon, env=env, consts=consts)


def dead_code(code: Code) -> Code:
    """Drop instructions whose values nothing uses (rewrites can leave some behind)."""
    live = {r for r in code.results if isinstance(r, str)}
    kept: list[Ins] = []
    for i in reversed(code.ins):
        if i.target not in live and (i.kind in PURE_KINDS or i.kind == "alias"):
            continue
        kept.append(i)
        live.update(uses(i))
    return code.evolve(kept[::-1])


#: the passes, in the order ``lower`` runs them
PIPELINE: tuple[Callable[[Code], Code], ...] = (
    defer_reciprocals, propagate_signs, fold_reciprocals, value_number, share_divisions, fold_reshapes,
    fold_constants, dead_code,
)


def optimize(code: Code) -> Code:
    """Every pass of :data:`PIPELINE`, in order."""
    for p in PIPELINE:
        code = p(code)
    return code
