"""``cr.compile``: the generated forward+backward program, lowered to fast NumPy code and compiled.

The readable program of :mod:`chainrule.codegen` (the same one ``Graph.to_source`` prints) is
lowered once per input signature (shapes and dtypes) into three-address code, then planned the way a
compiler plans registers:

* every intermediate array lives in a buffer preallocated for this signature and reused across
  calls (``out`` arguments to the ufuncs), and a buffer is reused as soon as its value is dead;
* an operand that dies at an instruction is overwritten in place;
* elementwise programs on large arrays run block by block, so their buffers stay in cache;
* algebra a compiler may do (results agree to rounding where values are finite): small integer
  powers strength-reduced (``z ** 3`` -> ``square(z) * z``), each pure call computed once, signs
  and reciprocals carried forward instead of computed (``-a * -b``, ``a / (1 / x)``), one division
  shared by its uses (``a / x``, ``b / x`` -> ``r = 1 / x``, products), ``(a * s) / s`` -> ``a``;
* each pure call computed once too (a softmax's max in the loss and in its gradient), values that
  depend on no argument (the one-hot of fixed labels) computed once at specialization, and
  matmuls written into planned buffers like the ufuncs; a gradient's dtype follows the output's
  (the ones seed is folded, so a number it turns into an array takes that dtype: float32 stays float32);
* what the call returns (the output and the gradients) is always freshly allocated, never a
  reused buffer, never an input, never aliased with another result: it stays valid after the next call.

Small arrays skip the buffers (their cost is Python overhead, not memory) and run as plain
operator code. With numba installed (extra ``fast``) the default ``backend="auto"`` runs float64
elementwise programs on arrays of ``FUSED_MIN_SIZE`` elements or more as fused loops between
NumPy's SIMD transcendental calls (:mod:`chainrule.fused`); ``backend="numba"`` does the same and
warns once where numba is missing. With ``backend="numexpr"`` chains of elementwise arithmetic on
large arrays are fused into single numexpr passes; NumPy keeps the transcendental calls it
evaluates faster (exp, log, sqrt with SIMD). Without numexpr installed the NumPy plan is used.
The readable program is built with its ones seed folded (``dt1 = z``): the results are copied
where they would be a caller's array, so nothing returned aliases an input.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import gates as _gates
from .codegen import Program, _freeze, build_program, helper_name
from .gates import GATES, REDUCTION, resolve
from .symbolic import Sym

__all__ = ["compile", "Compiled"]

#: arrays smaller than this run as plain operator code (no buffers, no out=)
PLAN_MIN_SIZE = 2048
#: arrays at least this large use numexpr's fused loops (backend="numexpr")
NUMEXPR_MIN_SIZE = 32768
#: elementwise programs on large arrays run in blocks of this many elements (buffers stay in cache)
TILE = 65536
#: float64 elementwise programs on arrays at least this large run fused numba loops (backend "auto"/"numba")
FUSED_MIN_SIZE = 2048
BACKENDS = ("auto", "numpy", "numba", "numexpr")

_UFUNC = {
    "add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "pow": "power", "neg": "negative",
    "gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal", "eq": "equal", "ne": "not_equal",
}
#: NumPy calls whose result may share memory with their first input (liveness follows the base)
_VIEW_CALLS = {n for g in GATES.values() if g.view and g.np_name for n in (g.np_name,)}
_BINARY_UFUNC = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/", "power": "**", "matmul": "@",
                 "greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<=", "equal": "==",
                 "not_equal": "!="}
_NE_BINARY = {k: v for k, v in _BINARY_UFUNC.items() if k != "matmul"}
_NE_UNARY = {"negative": "-({})", "square": "({0})*({0})", "reciprocal": "1/({})", "absolute": "abs({})",
             "sin": "sin({})", "cos": "cos({})", "tan": "tan({})", "tanh": "tanh({})", "positive": "({})"}
_NE_LOCK = threading.Lock()
#: elementwise extrema whose number operand the planned code reads as a constant array (full_operand)
_EXTREMA = {"maximum", "minimum", "fmax", "fmin"}


@dataclass
class Ins:
    """One three-address instruction: ``target = fn(args, **params)``."""

    target: str
    kind: str            # "ufunc", "call", "alias", "getitem", "helper", "copy"
    fn: str
    args: list[Any]      # value names (str) or numbers
    params: dict[str, Any] = field(default_factory=dict)


class _Lowerer:
    """Program statements -> three-address instructions (helpers inlined, powers reduced)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.ins: list[Ins] = []
        self.n = 0
        self.consts: dict[str, Any] = {}
        self.names: dict[int, str] = {}
        self.seen: dict[Any, str] = {}   # value numbering: each pure ufunc call computed once

    def fresh(self) -> str:
        self.n += 1
        return f"_v{self.n}"

    def const_name(self, value: Any) -> str:
        for k, v in self.consts.items():
            if v is value:
                return k
        name = f"_c{len(self.consts) + 1}"
        self.consts[name] = value
        return name

    def operand(self, e: Sym, env: dict[str, Any]) -> Any:
        if e.op == "name":
            return env.get(e.value, e.value)
        if e.op == "num":
            return e.value
        if e.op == "array":
            return self.const_name(e.value)
        return self.expr(e, env)

    def emit(self, kind: str, fn: str, args: list[Any], params: dict[str, Any] | None = None,
             target: str | None = None) -> str:
        key = _pure_key(kind, fn, args, params or {})
        if key is not None and key in self.seen:  # computed already (z ** 2 in z ** 3 and 3 * z ** 2)
            if target is None:
                return self.seen[key]
            self.ins.append(Ins(target, "alias", "", [self.seen[key]]))
            return target
        t = target or self.fresh()
        self.ins.append(Ins(t, kind, fn, args, params or {}))
        if key is not None:
            self.seen[key] = t
        return t

    def expr(self, e: Sym, env: dict[str, Any], target: str | None = None) -> Any:
        if e.op in ("name", "num", "array"):
            v = self.operand(e, env)
            if target is None:
                return v
            return self.emit("alias", "", [v], target=target)
        if e.op == "mul":  # a * (1 / b) -> a / b: one pass instead of two
            for a, b in ((e.args[0], e.args[1]), (e.args[1], e.args[0])):
                if b.op == "div" and b.args[0].op == "num" and b.args[0].value in (1, -1) \
                        and not isinstance(b.args[0].value, bool):
                    if b.args[0].value == 1:
                        return self.emit("ufunc", "divide", [self.operand(a, env), self.operand(b.args[1], env)],
                                         target=target)
                    q = self.emit("ufunc", "divide", [self.operand(a, env), self.operand(b.args[1], env)])
                    return self.emit("ufunc", "negative", [q], target=target)  # the sign pass defers it
        args = [self.operand(a, env) for a in e.args]
        if e.op == "pow" and e.args[1].op == "num" and not isinstance(e.args[1].value, bool):
            return self.power(args[0], e.args[1].value, target)
        if e.op == "div" and e.args[0].op == "num" and e.args[0].value == 1:
            return self.emit("ufunc", "reciprocal", [args[1]], target=target)
        if e.op in _UFUNC:
            return self.emit("ufunc", _UFUNC[e.op], args, target=target)
        if e.op == "matmul":
            return self.emit("call", "matmul", args, target=target)
        if e.op == "getitem":
            idx = e.params["index"]
            return self.emit("getitem", "", args, {"index": self.const_name(idx)}, target=target)
        name = e.value
        if name in self.program.helpers:  # inline the helper's body
            hparams, body, result = self.program.helpers[name]
            local = dict(zip(hparams, args))
            for s in body:
                local[s.target] = self.expr(s.expr, local)
            return self.expr(result, local, target)
        if name == "zeros_like":
            return self.emit("call", "zeros_like", args, target=target)
        if name == "full_like":
            return self.emit("call", "full_like", args + [e.params["fill"]], target=target)
        if name == "broadcast_to" and e.args[0].op == "num":  # a folded number: the gradients' dtype
            return self.emit("call", "full", [tuple(e.params["shape"]), float(args[0])],
                             {"dtype": self.program.dtype}, target=target)
        gate = GATES.get(name)
        if gate is None or gate.kind == "custom":
            raise ValueError(f"compile: {name!r} belongs to a gate you defined (cr.gate); compile runs the gate "
                             "table's own rules only: use cr.value_and_grad, or write the function with NumPy")
        # array-valued params (indices) become named constants, as getitem's index does
        params = {k: _ConstRef(self.const_name(v)) if _holds_array(v) else v for k, v in e.params.items()}
        if gate.arity is None:
            args = [tuple(args)]
        if gate.helper:  # the gate's own forward, called as generated code calls it
            return self.emit("helper", name, args, params, target=target)
        # the NumPy function: the forward's own, or (inputs given as one sequence) the one it dispatches from
        np_name = gate.np_name or (gate.numpy[0] if gate.arity is None and gate.numpy else None)
        fn = resolve(np, np_name) if np_name else None
        if isinstance(fn, np.ufunc) and not params:
            return self.emit("ufunc", fn.__name__, args, target=target)
        if fn is None:  # a forward of several calls with no helper of the program: run the gate itself
            return self.emit("helper", name, args, params, target=target)
        return self.emit("call", np_name, args, params, target=target)

    def power(self, x: Any, p: Any, target: str | None) -> str:
        if p == 2:
            return self.emit("ufunc", "square", [x], target=target)
        if p == 0.5:
            return self.emit("ufunc", "sqrt", [x], target=target)
        if p == -1:
            return self.emit("ufunc", "reciprocal", [x], target=target)
        if p == 3:
            return self.emit("ufunc", "multiply", [self.emit("ufunc", "square", [x]), x], target=target)
        if p == 4:
            return self.emit("ufunc", "square", [self.emit("ufunc", "square", [x])], target=target)
        if p == -2:
            return self.emit("ufunc", "reciprocal", [self.emit("ufunc", "square", [x])], target=target)
        return self.emit("ufunc", "power", [x, p], target=target)

    def run(self) -> list[Ins]:
        env: dict[str, Any] = {}
        for s in [*self.program.forward, *self.program.backward]:
            self.expr(s.expr, env, target=s.target)
        return self.ins


def _freeze_arg(a: Any) -> Any:
    if isinstance(a, tuple):
        return ("tuple", *(_freeze_arg(x) for x in a))
    return (type(a).__name__, a) if isinstance(a, (bool, int, float, complex)) else a


def _pure_key(kind: str, fn: str, args: list[Any], params: dict[str, Any]) -> Any:
    """A key equal for two instructions that compute the same value (every ufunc, NumPy call,
    index and scatter here is pure), so each is computed once (the softmax's max in the forward
    and in the cross-entropy rule); None for what is not value-numbered."""
    if kind not in ("ufunc", "call", "getitem", "helper"):
        return None
    return (kind, fn, tuple(_freeze_arg(a) for a in args), _freeze(params))


def _execute(ins: list[Ins], consts: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Run the instructions plainly (at specialization time: the shapes and dtypes of every value)."""
    env: dict[str, Any] = dict(inputs)
    env.update(consts)

    def val(a: Any) -> Any:
        if isinstance(a, tuple):
            return tuple(val(x) for x in a)
        return env[a] if isinstance(a, str) else a

    for i in ins:
        args = [val(a) for a in i.args]
        if i.kind == "alias":
            v = args[0]
        elif i.kind == "ufunc":
            v = getattr(np, i.fn)(*args)
        elif i.kind == "getitem":
            v = args[0][env[i.params["index"]]]
        elif i.kind == "helper":
            v = GATES[i.fn].forward(np, *args, **_resolve_params(i.params, env))
        elif i.fn in ("full_like",):
            v = np.full_like(args[0], args[1])
        else:
            v = resolve(np, i.fn)(*args, **_resolve_params(i.params, env))
        env[i.target] = v
    return env


class _ConstRef(str):
    """A param that names a constant of the program (an index array): printed as its name."""

    def __repr__(self) -> str:
        return str(self)


def _holds_array(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return True
    return isinstance(v, tuple) and any(_holds_array(x) for x in v)


def _resolve_params(params: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    return {k: env[v] if isinstance(v, _ConstRef) else v for k, v in params.items()}


def _resolve_aliases(ins: list[Ins]) -> tuple[list[Ins], dict[str, Any]]:
    """Drop ``alias`` instructions: every use refers to the aliased value directly."""
    canon: dict[str, Any] = {}

    def c(a: Any) -> Any:
        return _canon(canon, a)

    out = []
    for i in ins:
        args = [c(a) for a in i.args]
        if i.kind == "alias":
            canon[i.target] = args[0]
            continue
        out.append(Ins(i.target, i.kind, i.fn, args, i.params))
    return out, canon


def _use_counts(ins: list[Ins]) -> dict[str, int]:
    """How many times each value is read by the instructions."""
    uses: dict[str, int] = {}
    for i in ins:
        for a in _uses(i):
            uses[a] = uses.get(a, 0) + 1
    return uses


def _propagate_signs(ins: list[Ins], canon: dict[str, Any], returns: list[str], env: dict[str, Any]) -> list[Ins]:
    """Carry negations forward instead of computing them: ``-a * b`` is ``-(a * b)``, ``x - (-y)`` is
    ``x + y``, ``-(-a)`` is ``a``; a sign that meets a number is folded into it (``2 * -a`` is
    ``-2 * a``). Only values used once are deferred, so no work is ever added."""
    def c(a: Any) -> Any:
        return _canon(canon, a)

    returned = {c(r) for r in returns}
    uses = _use_counts(ins)
    # a value whose every use is a sum (x + v, x - v) takes its sign into them at no cost
    summed: dict[str, bool] = {}
    for i in ins:
        for k, a in enumerate(i.args):
            if isinstance(a, str):
                ok = i.kind == "ufunc" and (i.fn == "add" or (i.fn == "subtract" and k == 1))
                summed[a] = summed.get(a, True) and ok
        for a in _uses(Ins(i.target, i.kind, i.fn, [x for x in i.args if isinstance(x, tuple)])):
            summed[a] = False
    neg: dict[str, str] = {}      # value -> the value it is the negative of (not computed)
    out: list[Ins] = []

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

    def is_num(a: Any) -> bool:
        return isinstance(a, (int, float)) and not isinstance(a, bool)

    for i in ins:
        args = [c(a) for a in i.args]
        single = i.target not in returned and (uses.get(i.target, 0) == 1 or summed.get(i.target, False))
        negs = [isinstance(a, str) and a in neg for a in args]
        if i.kind != "ufunc" or i.fn not in ("negative", "multiply", "divide", "add", "subtract", "reciprocal"):
            for a in _uses(Ins(i.target, i.kind, i.fn, args)):
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
                    if is_num(a):
                        base[k] = -a
                        flip = False
                        break
            elif any(is_num(a) and a < 0 for a in base) and single:
                for k, a in enumerate(base):  # defer a negative number's sign too: -1 / x
                    if is_num(a) and a < 0:
                        base[k] = -a
                        flip = True
                        break
            emit(i.target, fn, base, flip, single)
            continue
        a, b = base
        na, nb = negs
        if fn == "add":
            if na and nb:
                emit(i.target, "add", [a, b], True, single)
            elif nb:
                emit(i.target, "subtract", [a, b], False, single)
            elif na:
                emit(i.target, "subtract", [b, a], False, single)
            else:
                emit(i.target, "add", [a, b], False, single)
        else:  # subtract
            if na and nb:
                emit(i.target, "subtract", [b, a], False, single)
            elif nb:
                emit(i.target, "add", [a, b], False, single)
            elif na:
                emit(i.target, "add", [a, b], True, single)
            else:
                emit(i.target, "subtract", [a, b], False, single)
    return out


def _defer_reciprocals(ins: list[Ins], canon: dict[str, Any], returns: list[str], env: dict[str, Any]) -> list[Ins]:
    """Carry ``r = 1 / x`` forward without computing it: ``a / r`` is ``a * x``, ``1 / r`` is ``x``,
    ``r ** 2`` is ``1 / x ** 2`` (deferred again), ``a * r`` is ``a / x``. The staged sigmoid's
    ``1 / (1 + e)`` then costs nothing where only its quotients are used. A reciprocal is computed
    only where a value needs it as it is, so no work is ever added."""
    def c(a: Any) -> Any:
        return _canon(canon, a)

    returned = {c(r) for r in returns}
    recip: dict[str, Any] = {}   # value -> x, where value == 1 / x (not computed)
    out: list[Ins] = []
    made: set[str] = set()

    def need(a: Any) -> Any:
        if isinstance(a, tuple):
            return tuple(need(x) for x in a)
        if isinstance(a, str) and a in recip and a not in made:
            out.append(Ins(a, "ufunc", "reciprocal", [recip[a]]))
            made.add(a)
        return a

    def fresh(base: str) -> str:
        name = f"{base}_q"
        env[name] = env.get(base)
        return name

    for i in ins:
        args = [c(a) for a in i.args]
        deferred = [isinstance(a, str) and a in recip and a not in made for a in args]
        fn = i.fn if i.kind == "ufunc" else None
        is_float = isinstance(env.get(i.target), np.ndarray) and env[i.target].dtype.kind == "f"
        if fn in ("reciprocal", "divide") and is_float and (fn == "reciprocal" or (
                args[0] == 1 and not isinstance(args[0], bool))) and i.target not in returned:
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
            sq = fresh(i.target)
            out.append(Ins(sq, "ufunc", "square", [recip[args[0]]]))
            recip[i.target] = sq
            continue
        out.append(Ins(i.target, i.kind, i.fn, [need(a) for a in args], i.params))
    return out


def _value_number(ins: list[Ins], canon: dict[str, Any]) -> list[Ins]:
    """Compute each pure ufunc call once (the rewrites above can create repeats)."""
    seen: dict[Any, str] = {}
    product: dict[str, tuple[Any, Any]] = {}    # v = a * b
    quotient: dict[str, tuple[Any, Any]] = {}   # v = a / b
    out = []
    for i in ins:
        args = [_canon(canon, a) for a in i.args]
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
        key = _pure_key(i.kind, i.fn, args, i.params)
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
    return out


def _share_divisions(ins: list[Ins], canon: dict[str, Any], returns: list[str], env: dict[str, Any]) -> list[Ins]:
    """Divide once, multiply after: a division costs about as much as an exp, a product a tenth of
    it. Where ``1 / x`` is at hand (or ``x`` divides twice), ``a / x`` becomes ``a * (1 / x)`` and
    ``a / x²`` becomes ``a * (1 / x)²``."""
    def is_float(a: Any) -> bool:
        v = env.get(a) if isinstance(a, str) else None
        return isinstance(v, np.ndarray) and v.dtype.kind == "f"

    count: dict[str, int] = {}
    for i in ins:
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

    for i in ins:
        args = [_canon(canon, a) for a in i.args]
        if i.kind == "ufunc" and is_float(i.target):
            if i.fn == "reciprocal" and isinstance(args[0], str):
                recip.setdefault(args[0], i.target)
            elif i.fn == "square" and isinstance(args[0], str):
                square_of[i.target] = args[0]
            elif i.fn == "divide" and isinstance(args[1], str) and is_float(args[1]):
                x = args[1]
                r = reciprocal_of(x)
                if r is None and count.get(x, 0) >= 2:
                    r = f"{x}_r"
                    env[r] = env.get(x)
                    out.append(Ins(r, "ufunc", "reciprocal", [x]))
                    recip[x] = r
                if r is not None:
                    if args[0] == 1 and not isinstance(args[0], bool):
                        canon[i.target] = r
                    else:
                        out.append(Ins(i.target, "ufunc", "multiply", [args[0], r]))
                    continue
        out.append(Ins(i.target, i.kind, i.fn, args, i.params))
    return out


def _fold_reshapes(ins: list[Ins], env: dict[str, Any]) -> list[Ins]:
    """``reshape(sum(x, axis, keepdims=True), reduced shape)`` is ``sum(x, axis)``: one call, whose
    result is a fresh array rather than a view (unbroadcast's bias gradient ``db``)."""
    uses = _use_counts(ins)
    producer = {i.target: i for i in ins}
    out = []
    for i in ins:
        p = producer.get(i.args[0]) if i.kind == "call" and i.fn == "reshape" and i.args else None
        if (p is not None and p.kind == "call" and p.fn in GATES and GATES[p.fn].kind == REDUCTION
                and "keepdims" in GATES[p.fn].params
                and p.params.get("keepdims") and uses.get(p.target) == 1
                and isinstance(env.get(p.args[0]), np.ndarray) and isinstance(env.get(i.target), np.ndarray)):
            axis = p.params.get("axis")
            if env[i.target].shape == _gates.reduced_shape(env[p.args[0]].shape, axis):
                out.append(Ins(i.target, "call", p.fn, list(p.args), {**p.params, "keepdims": False}))
                continue
        out.append(i)
    return out


def _fold_constants(ins: list[Ins], canon: dict[str, Any], params: list[str], env: dict[str, Any],
                    consts: dict[str, Any]) -> list[Ins]:
    """Values that depend on no argument (the one-hot of fixed labels times the folded seed's
    ``1/n``) are computed once, here, and read as constants by every call. Values shaped like an
    argument stay instructions: the tiled and fused plans run those block by block."""
    param_shapes = {np.shape(env[p]) for p in params if p in env}
    out: list[Ins] = []
    for i in ins:
        args = [_canon(canon, a) for a in i.args]
        i = Ins(i.target, i.kind, i.fn, args, i.params)
        uses = _uses(i)
        if (i.kind in ("ufunc", "call", "getitem", "helper") and all(u in consts for u in uses)
                and (i.kind != "getitem" or i.params["index"] in consts)):
            with np.errstate(all="ignore"):
                value = _execute([i], consts, {})[i.target]
            if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) not in param_shapes:
                name = f"_k{len(consts) + 1}"
                while name in consts:
                    name += "_"
                consts[name] = value
                canon[i.target] = name
                env[name] = value
                continue
        out.append(i)
    return out


def _dead_code(ins: list[Ins], canon: dict[str, Any], returns: list[str]) -> list[Ins]:
    """Drop instructions whose values nothing uses (rewrites can leave some behind)."""
    live = {_canon(canon, r) for r in returns}
    kept: list[Ins] = []
    for i in reversed(ins):
        if i.target not in live and i.kind in ("ufunc", "alias", "call", "getitem", "helper"):
            continue
        kept.append(i)
        live.update(_uses(i))
    return kept[::-1]


def _canon(canon: dict[str, Any], a: Any) -> Any:
    """The value a name stands for after aliases are resolved (inside tuples too)."""
    if isinstance(a, tuple):
        return tuple(_canon(canon, x) for x in a)
    while isinstance(a, str) and a in canon:
        a = canon[a]
    return a


def _fold_reciprocals(ins: list[Ins], canon: dict[str, Any], returns: list[str]) -> list[Ins]:
    """``r = 1 / x`` used once, by ``r * y``: compute ``y / x`` instead (one pass, not two)."""
    def c(a: Any) -> Any:
        return _canon(canon, a)

    returned = {c(r) for r in returns}
    uses = _use_counts(ins)
    recip: dict[str, Any] = {}
    for i in ins:
        if i.kind == "ufunc" and uses.get(i.target) == 1 and i.target not in returned and (
                i.fn == "reciprocal" or (i.fn == "divide" and i.args[0] == 1 and not isinstance(i.args[0], bool))):
            recip[i.target] = i.args[-1]
    if not recip:
        return ins
    out: list[Ins] = []
    folded: set[str] = set()
    for i in ins:
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
    return [i for i in out if i.target not in folded]


def _lit(v: Any) -> str:
    if isinstance(v, float) and not np.isfinite(v):
        return "np.inf" if v > 0 else ("-np.inf" if v < 0 else "np.nan")
    return repr(v)


class _Emitter:
    """Lowered instructions -> Python source, with or without the buffer plan."""

    def __init__(self, ins: list[Ins], canon: dict[str, Any], params: list[str], returns: list[str],
                 env: dict[str, Any], consts: dict[str, Any], plan: bool, use_numexpr: bool,
                 use_numba: bool = False) -> None:
        self.ins = ins
        self.canon = canon
        self.params = params
        self.returns = returns
        self.env = env                      # traced values: shapes and dtypes
        self.consts = consts
        self.plan = plan
        self.numexpr = use_numexpr
        self.numba = use_numba
        self.kernels = ""                   # the fused loops' source, when the program was fused
        self.globals: dict[str, Any] = {}
        self.text: dict[str, str] = {}

    def c(self, a: Any) -> Any:
        while isinstance(a, str) and a in self.canon:
            a = self.canon[a]
        return a

    def meta(self, name: Any) -> tuple[tuple[int, ...], Any] | None:
        v = self.env.get(name) if isinstance(name, str) else None
        if isinstance(v, np.ndarray):
            return v.shape, v.dtype
        return None

    def arg(self, a: Any) -> str:
        if isinstance(a, str):
            return self.text[a]
        if isinstance(a, tuple):
            return "(" + ", ".join(self.arg(x) for x in a) + ("," if len(a) == 1 else "") + ")"
        return _lit(a)

    def emit(self) -> str:
        ret_values = [self.c(r) for r in self.returns]
        if self.numba:
            from . import fused

            shape = fused.fusable_shape(self.ins, self.params, ret_values, self.env, self.consts)
            if shape is not None:
                self.kernels, src, kglobals = fused.emit_fused(self.ins, self.params, ret_values, self.env, shape)
                self.globals.update(kglobals)
                return src
        if self.numexpr:
            self.fuse(set(r for r in ret_values if isinstance(r, str)))
        if self.plan:
            shape = self.tile_shape(ret_values)
            if shape is not None:
                return self.emit_tiled(ret_values, shape)
        n = len(self.ins)
        # views keep their base alive: liveness is tracked per storage root
        root: dict[str, str] = {}
        for i in self.ins:
            if (i.kind == "call" and i.fn in _VIEW_CALLS) or i.kind == "getitem":
                base = i.args[0]
                if isinstance(base, str):
                    root[i.target] = root.get(base, base)
        last: dict[str, int] = {}
        for k, i in enumerate(self.ins):
            for a in _uses(i):
                last[root.get(a, a)] = k
        for r in ret_values:
            if isinstance(r, str):
                last[root.get(r, r)] = n
        returned = {r for r in ret_values if isinstance(r, str)}
        self.text = {p: p for p in self.params}
        self.text.update({c: c for c in self.consts})
        kind: dict[str, str] = {p: "input" for p in self.params}   # input/buffer/fresh/view/dead
        free: dict[Any, list[str]] = {}
        buffers: dict[str, np.ndarray] = {}
        body: list[str] = []
        nlocal = 0
        for k, i in enumerate(self.ins):
            meta = self.meta(i.target)
            args = [self.arg(a) for a in i.args]
            dying = [a for a in dict.fromkeys(_uses(i)) if a not in root and last.get(a, -1) <= k]
            dest = None
            is_matmul = i.kind == "call" and i.fn == "matmul"
            if ((i.kind in ("ufunc", "numexpr") or is_matmul) and self.plan and meta is not None
                    and meta[0] != () and i.target not in returned):
                for a in ([] if is_matmul else dying):  # overwrite an operand that dies here
                    if kind.get(a) == "buffer" and self.meta(a) == meta:
                        dest = self.text[a]
                        kind[a] = "dead"
                        break
                if dest is None:
                    pool = free.get(meta)
                    if pool:
                        dest = pool.pop()
                    else:
                        dest = f"_b{len(buffers)}"
                        buffers[dest] = np.empty(meta[0], dtype=meta[1])
            if dest is not None:
                if i.fn in _EXTREMA and meta is not None and meta[1].kind in "fiu":
                    args = self.full_operand(i, args, meta)
                body.append(self.op_text(i, args, out=dest))
                self.text[i.target] = dest
                kind[i.target] = "buffer"
            else:
                nlocal += 1
                name = f"r{nlocal}"
                body.append(f"{name} = {self.op_text(i, args, out=None)}")
                self.text[i.target] = name
                is_view = (i.kind == "call" and i.fn in _VIEW_CALLS) or i.kind == "getitem"
                kind[i.target] = "view" if is_view else "fresh"
            for a in dying:  # their buffers can hold the next values
                if kind.get(a) == "buffer":
                    free.setdefault(self.meta(a), []).append(self.text[a])
                    kind[a] = "dead"
        # results: fresh, distinct, never a buffer, an input or a constant; a view only of a fresh
        # array that nothing else returned shares (np.sum(...).reshape(n) needs no copy)
        seen: set[str] = set()
        outs = []
        roots = [root.get(r, r) for r in ret_values if isinstance(r, str)]
        by_target = {i.target: i for i in self.ins}

        def own(r: Any) -> bool:
            if not isinstance(r, str):
                return False
            if kind.get(r) == "fresh":
                return True
            base = root.get(r)
            return (kind.get(r) == "view" and base is not None and kind.get(base) == "fresh"
                    and roots.count(base) == 1 and by_target[r].kind == "call")

        for r in ret_values:
            t = self.arg(r)
            if not (own(r) and t not in seen):
                m = self.meta(r)
                if m is None or m[0] == ():
                    value = self.env.get(r) if isinstance(r, str) else r
                    dtype = np.result_type(value, np.float16).name  # numbers become floats
                    t = f"np.array({t}, dtype=np.{dtype})"
                else:
                    t = f"{t}.copy()"
            seen.add(t)
            outs.append(t)
        self.globals.update(buffers)
        lines = [f"def _compiled({', '.join(self.params)}):"]
        lines += ["    " + b for b in body]
        lines.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
        return "\n".join(lines) + "\n"

    def full_operand(self, i: Ins, args: list[str], meta: tuple[tuple[int, ...], Any]) -> list[str]:
        """``maximum(x, 0)`` reads a constant array of zeros instead of the number: NumPy's SIMD
        loop for maximum/minimum takes two arrays, its loop with a broadcast number is about
        four times slower (relu on a (128, 256) float32 array: 2.3 µs against 10.5 µs)."""
        shape, dtype = meta
        k = next((j for j, a in enumerate(i.args) if isinstance(a, (int, float)) and not isinstance(a, bool)), None)
        other = i.args[1 - k] if k is not None else None
        if k is None or self.meta(other) != meta:
            return args
        value = i.args[k]
        name = f"_fill{len([g for g in self.globals if g.startswith('_fill')])}"
        for g, v in self.globals.items():  # one array per shape, dtype and value
            if g.startswith("_fill") and isinstance(v, np.ndarray) and v.shape == shape and v.dtype == dtype \
                    and (v.size == 0 or v.flat[0] == value):
                name = g
                break
        else:
            self.globals[name] = np.full(shape, value, dtype=dtype)
        args = list(args)
        args[k] = name
        return args

    # ---- tiling: elementwise programs run block by block, their buffers stay in cache ------------
    def tile_shape(self, ret_values: list[Any]) -> tuple[int, ...] | None:
        """The common shape when every instruction is elementwise on it (else None: no tiling)."""
        arrays = [v for v in self.env.values() if isinstance(v, np.ndarray)]
        if any(v.dtype != np.float64 for v in arrays if v.dtype.kind != "b"):
            return None  # the block buffers are float64; other dtypes use the whole-array plan
        shapes = {v.shape for v in arrays if v.ndim > 0}
        shapes |= {np.shape(self.env[p]) for p in self.params}
        if len(shapes) != 1:
            return None
        returned = {r for r in ret_values if isinstance(r, str)}
        for i in self.ins:
            if i.kind in ("ufunc", "numexpr") and self.meta(i.target) is not None:
                continue
            if i.kind == "call" and i.fn in ("zeros_like", "full_like") and i.target in returned:
                continue
            return None
        if any(not isinstance(r, str) for r in ret_values):
            return None
        shape = shapes.pop()
        return shape if math.prod(shape) >= 2 * TILE else None

    def emit_tiled(self, ret_values: list[str], shape: tuple[int, ...]) -> str:
        size = math.prod(shape)
        prefill = {i.target: i for i in self.ins if i.kind == "call"}
        body_ins = [i for i in self.ins if i.kind != "call"]
        nret = len(ret_values)
        slot_of: dict[str, int] = {}      # returned value -> the output slot it is computed into
        copies: list[tuple[int, str]] = []  # slots filled by copying a value
        for k, r in enumerate(ret_values):
            if r in prefill:
                continue
            if r in slot_of or r in self.params:
                copies.append((k, r))
            else:
                slot_of[r] = k
        produced = {i.target for i in body_ins}
        for r in list(slot_of):
            if r not in produced:
                copies.append((slot_of.pop(r), r))
        last: dict[str, int] = {}
        for k, i in enumerate(body_ins):
            for a in _uses(i):
                last[a] = k
        for r in ret_values:
            last[r] = len(body_ins)
        outs = [f"o{k}" for k in range(nret)]
        self.text = {p: p for p in self.params}
        self.text.update({c: c for c in self.consts})
        kind: dict[str, str] = {}
        free: list[str] = []
        nbuf = 0
        body: list[str] = []
        for k, i in enumerate(body_ins):
            args = [self.arg(a) for a in i.args]
            dying = [a for a in dict.fromkeys(_uses(i)) if last.get(a, -1) <= k]
            if i.target in slot_of:
                dest = outs[slot_of[i.target]]
                kind[i.target] = "out"
            else:
                dest = None
                for a in dying:
                    if kind.get(a) == "buffer":
                        dest = self.text[a]
                        kind[a] = "dead"
                        break
                if dest is None:
                    if free:
                        dest = free.pop()
                    else:
                        dest = f"b{nbuf}"
                        nbuf += 1
                kind[i.target] = "buffer"
            body.append(self.op_text(i, args, out=dest))
            self.text[i.target] = dest
            for a in dying:
                if kind.get(a) == "buffer":
                    free.append(self.text[a])
                    kind[a] = "dead"
        for k, r in copies:
            body.append(f"np.copyto(o{k}, {self.arg(r)})")
        bufs = [f"b{j}" for j in range(nbuf)]
        sig = ", ".join([*self.params, *outs, *bufs])
        lines = [f"def _block({sig}):"] + ["    " + b for b in (body or ["pass"])]
        fills = [None if r not in prefill else 0 if prefill[r].fn == "zeros_like" else prefill[r].args[1]
                 for r in ret_values]
        lines += block_driver(self.params, fills, shape, size, [np.float64] * len(bufs), self.globals)
        return "\n".join(lines) + "\n"

    def op_text(self, i: Ins, args: list[str], out: str | None) -> str:
        if i.kind == "ufunc":
            if out is None and len(args) == 2 and i.fn in _BINARY_UFUNC:
                return f"{_paren(args[0])} {_BINARY_UFUNC[i.fn]} {_paren(args[1])}"
            if out is None and i.fn == "negative":
                return f"-{_paren(args[0])}"
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
                return f"{_paren(args[0])}.T"
            return f"np.transpose({args[0]}, {axes!r})"
        if i.fn == "matmul" and out:
            return f"np.matmul({args[0]}, {args[1]}, out={out})"
        params = "".join(f", {k}={v!r}" for k, v in i.params.items())
        return f"np.{i.fn}({', '.join(args)}{params})"

    # ---- numexpr fusion -------------------------------------------------------------------------
    def fuse(self, returned: set[str]) -> None:
        """Merge single-use elementwise arithmetic into its consumer: one numexpr pass per chain."""
        import numexpr

        uses: dict[str, int] = {}
        for i in self.ins:
            for a in _uses(i):
                uses[a] = uses.get(a, 0) + 1
        pending: dict[str, tuple[str, list[str], list[Ins]]] = {}   # value -> (text, inputs, instructions)
        fused: list[Ins] = []
        names: dict[str, str] = {}

        def leaf(a: Any, leaves: list[str]) -> str:
            if not isinstance(a, str):
                return f"({_lit(a)})"
            if a in pending:
                text, sub, merged = pending.pop(a)
                leaves.extend(s for s in sub if s not in leaves)
                group.extend(merged)
                return f"({text})"
            if a not in leaves:
                leaves.append(a)
            return names.setdefault(a, f"v{len(names)}")

        def kernel(target: str, text: str, leaves: list[str], merged: list[Ins]) -> Ins:
            if len(merged) == 1:  # nothing fused: NumPy's own ufunc is faster than a kernel call
                return merged[0]
            sig = [(names[a], self.env[a].dtype.type) for a in leaves]
            fn = _NumexprKernel(numexpr.NumExpr(text, signature=sig), text)
            gname = f"_ne{sum(1 for g in self.globals if g.startswith('_ne'))}"
            self.globals[gname] = fn
            return Ins(target, "numexpr", gname, list(leaves))

        for i in self.ins:
            v = self.env.get(i.target)
            ok = (i.kind == "ufunc" and isinstance(v, np.ndarray) and v.size >= NUMEXPR_MIN_SIZE
                  and v.dtype == np.float64 and (i.fn in _NE_BINARY or i.fn in _NE_UNARY)
                  and all(not isinstance(a, str) or (isinstance(self.env.get(a), np.ndarray)
                          and self.env[a].shape == v.shape and self.env[a].dtype == np.float64)
                          for a in i.args))
            if not ok:
                for a in i.args:
                    if isinstance(a, str) and a in pending:
                        fused.append(kernel(a, *pending.pop(a)))
                fused.append(i)
                continue
            leaves: list[str] = []
            group: list[Ins] = []
            texts = [leaf(a, leaves) for a in i.args]
            group.append(i)
            if i.fn in _NE_BINARY:
                text = f"{texts[0]} {_NE_BINARY[i.fn]} {texts[1]}"
            else:
                text = _NE_UNARY[i.fn].format(texts[0])
            if uses.get(i.target, 0) == 1 and i.target not in returned:
                pending[i.target] = (text, leaves, group)
            elif leaves:
                fused.append(kernel(i.target, text, leaves, group))
            else:
                fused.append(i)
        for name, (text, leaves, group) in list(pending.items()):
            fused.append(kernel(name, text, leaves, group))
        self.ins = fused


class _NumexprKernel:
    """A precompiled numexpr expression, called like a ufunc (``out=`` optional)."""

    __slots__ = ("ex", "text")

    def __init__(self, ex: Any, text: str) -> None:
        self.ex = ex
        self.text = text

    def __call__(self, *args: Any, out: Any = None) -> Any:
        with _NE_LOCK:
            return self.ex(*args, out=out, order="K", casting="safe", ex_uses_vml=False)

    def __repr__(self) -> str:
        return f"numexpr[{self.text}]"


def _uses(i: Ins) -> list[str]:
    found = []
    for a in i.args:
        if isinstance(a, str):
            found.append(a)
        elif isinstance(a, tuple):
            found.extend(x for x in a if isinstance(x, str))
    return found


def _paren(t: str) -> str:
    return t if t.isidentifier() or t.replace(".", "", 1).isdigit() else f"({t})"


def _dtype_text(env: dict[str, Any], r: Any) -> str:
    v = env.get(r)
    return f"np.{np.asarray(v).dtype.name}" if v is not None else "np.float64"


# ---------------------------------------------------------------------------------------------
# the public compile
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Static:
    """An integer or boolean array argument (labels, indices, masks): compiled by value."""

    value: np.ndarray


@dataclass
class _Specialization:
    fn: Callable[..., tuple[Any, ...]]
    source: str
    program: Program
    backend: str


class Compiled:
    """A compiled ``value_and_grad``: ``fast(*args) -> (out, grads)``, specialized per input signature.

    ``fast.source`` is the code that runs for the latest signature, ``fast.program_source`` the
    readable combined function it was lowered from (the same text ``Graph.to_source`` prints).
    Not reentrant across threads (the buffers of one signature are shared by its calls).
    """

    def __init__(self, f: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "auto") -> None:
        from .autodiff import _argnums

        if not callable(f):
            raise TypeError(f"compile needs a function, not {type(f).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"compile: backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
        self.f = f
        self.nums, self.single = _argnums(argnums)
        self.backend = backend
        self._cache: dict[Any, _Specialization] = {}
        self._last: _Specialization | None = None
        functools.update_wrapper(self, f)  # type: ignore[arg-type]

    @property
    def source(self) -> str:
        """The code that runs for the latest input signature (call the function once first)."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.source

    @property
    def program_source(self) -> str:
        """The readable combined forward+backward function of the latest input signature."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.program.source(getattr(self.f, "__name__", "f").replace("<lambda>", "f"))

    @property
    def backend_used(self) -> str:
        """The backend that runs the latest input signature: ``"numba"`` (fused loops), ``"numpy"``
        or ``"numexpr"``; small, non-elementwise or non-float64 programs run as NumPy code."""
        if self._last is None:
            raise RuntimeError("compile: call the function once; it is traced and compiled on its first call")
        return self._last.backend

    @property
    def signatures(self) -> int:
        """How many input signatures (shapes, dtypes, static arguments) have been compiled."""
        return len({id(s.program) for s in self._cache.values()})  # Tensor calls share their arrays' code

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not kwargs:
            try:
                key = tuple([(type(a), a.shape, a.dtype, a.tobytes() if a.dtype.kind in "biu" else None)
                             for a in args])
            except AttributeError:
                key = None
            if key is not None:
                spec = self._cache.get(key)
                if spec is not None:
                    res = spec.fn(*args)
                    return (res[0], res[1]) if self.single else (res[0], res[1:])
        return self._slow_call(args, kwargs)

    def _slow_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        from . import compile_libraries
        from .autodiff import as_float_array
        from .tensor import Tensor

        lib = None if kwargs else compile_libraries.library_of_args(args)
        if lib is not None:  # another array library than NumPy (Dask: the kernel per chunk; see there)
            return compile_libraries.call(self, args, lib)

        if kwargs:
            try:
                bound = inspect.signature(self.f).bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"compile: the arguments do not fit {getattr(self.f, '__name__', 'f')}: {e}") \
                    from None
            args = bound.args
            if bound.kwargs:
                raise TypeError("compile: pass keyword-only arguments positionally")
        n = len(args)
        nums = tuple(i % n if -n <= i < n else i for i in self.nums)
        for i in nums:
            if not 0 <= i < n:
                raise ValueError(f"argnums names argument {i}, but the function was called with {n} positional "
                                 f"argument{'s' if n != 1 else ''}")
        conv: list[Any] = []
        key: list[Any] = []
        unwrapped = True   # every array argument is an ndarray or a Tensor's own .data, unconverted
        for i, a in enumerate(args):
            orig = a
            if isinstance(a, Tensor):
                a = a.data
            elif not isinstance(a, np.ndarray):
                unwrapped = False
            if i in nums:
                a = as_float_array(a, f"argument {i}")
            elif isinstance(a, (np.ndarray, list)) and not isinstance(a, bool):
                a = np.asarray(a)
                if a.dtype.kind in "biu":
                    # labels, indices, masks: they pick elements rather than flow through arithmetic,
                    # so the code is specialized to their values (new values compile anew)
                    a = _Static(a)
                    key.append((np.ndarray, a.value.shape, a.value.dtype, a.value.tobytes()))
                    conv.append(a)
                    unwrapped = False
                    continue
            if isinstance(a, np.ndarray):
                key.append((np.ndarray, a.shape, a.dtype, None))
                unwrapped = unwrapped and (a is orig or a is getattr(orig, "data", None))
            else:
                try:
                    hash(a)
                except TypeError:
                    raise TypeError(f"compile: argument {i} ({type(a).__name__}) is neither an array nor a "
                                    "hashable constant") from None
                key.append(("static", type(a), a))
            conv.append(a)
        k = tuple(key)
        spec = self._cache.get(k)
        if spec is None:
            spec = self._specialize(conv, nums)
            if any(isinstance(a, _Static) for a in conv):
                # called with every array argument, statics included (as the fast path does)
                keep = [j for j, a in enumerate([a for a in conv if isinstance(a, (np.ndarray, _Static))])
                        if isinstance(a, np.ndarray)]
                inner = spec.fn
                spec = _Specialization(lambda *xs: inner(*[xs[j] for j in keep]), spec.source, spec.program,
                                       spec.backend)
            self._cache[k] = spec
        self._last = spec
        if unwrapped and not kwargs and any(isinstance(a, Tensor) for a in args):
            # the same code, for calls with these Tensors (parameters) again: unwrap their .data
            fn = spec.fn

            def on_tensors(*targs: Any) -> tuple[Any, ...]:
                return fn(*[a.data if isinstance(a, Tensor) else a for a in targs])

            self._cache[tuple((type(a), a.shape, a.dtype, None) for a in args)] = _Specialization(
                on_tensors, spec.source, spec.program, spec.backend)
        if any(isinstance(a, _Static) for a in conv):
            res = spec.fn(*[a.value if isinstance(a, _Static) else a for a in conv
                            if isinstance(a, (np.ndarray, _Static))])
        else:
            res = spec.fn(*[a for a in conv if isinstance(a, np.ndarray)])
        return (res[0], res[1]) if self.single else (res[0], res[1:])

    def _specialize(self, args: list[Any], nums: tuple[int, ...]) -> _Specialization:
        from .graph import _build, _call_naming_locals
        from .tensor import Tensor, enable_grad

        try:
            pnames = [p.name for p in inspect.signature(self.f).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            pnames = []
        call_args: list[Any] = []
        leaves: list[Tensor] = []
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                name = pnames[i] if i < len(pnames) and pnames[i].isidentifier() else f"x{i + 1}"
                t = Tensor(a, requires_grad=a.dtype.kind in "fc", name=name)
                leaves.append(t)
                call_args.append(t)
            else:
                call_args.append(a.value if isinstance(a, _Static) else a)
        with enable_grad():
            out, local_names = _call_naming_locals(self.f, call_args, {})
        if not isinstance(out, Tensor):
            if isinstance(out, (tuple, list, dict)):
                raise TypeError(f"compile: {getattr(self.f, '__name__', 'f')} must return one array or tensor, "
                                f"not a {type(out).__name__}")
            out = Tensor(out)
        graph = _build(out, [t for t in leaves if t.requires_grad], local_names, False)
        order = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        input_nodes = {id(n.tensor): n for n in graph.inputs}
        wrt = [input_nodes[id(leaves[order.index(i)])].name for i in nums]
        program = build_program(graph, wrt=wrt, fold_seed=True)  # results never alias inputs: see _Emitter
        # every array argument is a parameter of the generated function, in argument order
        params = [input_nodes[id(t)].name if id(t) in input_nodes else f"_unused{j}" for j, t in enumerate(leaves)]
        use_ne = False
        if self.backend == "numexpr":
            try:
                import numexpr  # noqa: F401

                use_ne = True
            except ImportError:
                use_ne = False
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        xp = self.__dict__.get("array_module", np)  # another NumPy-like library (see compile_libraries)
        use_numba = (self.backend in ("auto", "numba") and max([a.size for a in arrays] + [0]) >= FUSED_MIN_SIZE
                     and xp is np and _numba_available(warn=self.backend == "numba"))
        source, fn, backend = lower(program, params, dict(zip(params, arrays)), use_numexpr=use_ne and xp is np,
                                    use_numba=use_numba, xp=xp)
        self._validate(fn, args, nums)
        return _Specialization(fn, source, program, backend)

    def _validate(self, fn: Callable[..., Any], args: list[Any], nums: tuple[int, ...]) -> None:
        """Run the new code on other inputs and compare with the eager engine.

        A trace records array operations only: an ``if`` on values, ``.data`` read in Python, or a
        boolean-mask index computed from the inputs (``a[a > 0]``, whose result's shape depends on the
        values) would be frozen into the code. (Masks used as values, ``cr.where(x > 0, ...)`` or
        ``z * (z > 0)``, are recorded as forward-only nodes and recomputed on every call.) Two probes
        move the values: the inputs' elements shuffled (each input keeps its range, so logs stay
        defined) and the inputs negated (which catches ``if x > 0`` on a scalar); entries where the
        engine's answer is not finite are not compared."""
        from . import backend
        from .autodiff import value_and_grad

        xp = self.__dict__.get("array_module", np)
        rng = np.random.default_rng(0)
        probes = [
            [rng.permutation(a.ravel()).reshape(a.shape) if isinstance(a, np.ndarray) and a.size > 1 else a
             for a in args],
            [np.asarray(-a) if isinstance(a, np.ndarray) and a.dtype.kind in "fc" else a for a in args],
        ]
        for probe in probes:
            if all(p is a for p, a in zip(probe, args)):
                continue
            plain = [a.value if isinstance(a, _Static) else a for a in probe]
            with np.errstate(all="ignore"):
                try:
                    expected = value_and_grad(self.f, argnums=nums)(*plain)
                except (ValueError, TypeError, ArithmeticError, IndexError):
                    continue  # the function is not defined there: nothing to compare
                got = fn(*[_on(xp, a) for a in probe if isinstance(a, np.ndarray)])
                if xp is not np:
                    got = [backend.to_numpy(g) for g in got]
            out, grads = expected
            for g, e in zip(got, [out, *(grads if isinstance(grads, tuple) else (grads,))]):
                e = np.asarray(e.data if hasattr(e, "data") and not isinstance(e, np.ndarray) else e)
                e = e.astype(np.result_type(e, np.float16))
                rtol = 1e-6 if np.finfo(e.dtype).eps < 1e-10 else 1e-3  # float32 rounding is coarser
                ok = np.isfinite(e)  # where the engine overflows, rewritten algebra may differ: skip those
                finite = np.abs(e[ok])
                atol = rtol * (float(finite.max()) if finite.size else 1.0)
                if np.shape(g) != np.shape(e) or not np.allclose(np.asarray(g)[ok], e[ok], rtol=rtol, atol=atol):
                    raise ValueError(
                        f"compile: {getattr(self.f, '__name__', 'f')} does not trace to one fixed computation: "
                        "its result depends on the input values in a way the graph does not record: a Python "
                        "`if` or float() on values, .data read in Python, or boolean-mask indexing with a mask "
                        "computed from the inputs (a[a > 0]: the result's shape depends on the values), which "
                        "compile does not support. Masks as values are fine: write a[a > 0] as "
                        "cr.where(a > 0, a, 0.0), an `if` as cr.where(cond, then, else) (or cr.relu / "
                        "cr.maximum / cr.abs), or use cr.value_and_grad, which handles all of these")


def lower(program: Program, params: list[str], inputs: dict[str, np.ndarray], use_numexpr: bool = False,
          use_numba: bool = False, xp: Any = np) -> tuple[str, Callable[..., tuple[Any, ...]], str]:
    """Lower a program to planned code for inputs like ``inputs``; returns (source, function, backend),
    the backend being the one that ran: ``"numba"`` where the program was fused, else ``"numexpr"``
    or ``"numpy"``. ``xp``: a NumPy-like module (CuPy) the code's ``np`` stands for; its code is the
    plain operator code (no buffers), its constants are that library's arrays."""
    lowerer = _Lowerer(program)
    ins = lowerer.run()
    consts = dict(lowerer.consts)
    for cname, v in program.constants.items():
        consts.setdefault(cname, v)
    env = _execute(ins, consts, inputs)
    ins, canon = _resolve_aliases(ins)
    ins = _defer_reciprocals(ins, canon, program.returns, env)
    ins = _propagate_signs(ins, canon, program.returns, env)
    ins = _fold_reciprocals(ins, canon, program.returns)
    ins = _value_number(ins, canon)
    ins = _share_divisions(ins, canon, program.returns, env)
    ins = _fold_reshapes(ins, env)
    ins = _fold_constants(ins, canon, params, env, consts)
    ins = _dead_code(ins, canon, program.returns)
    size = max([v.size for v in inputs.values()] + [1])
    plan = size >= PLAN_MIN_SIZE and xp is np
    emitter = _Emitter(ins, canon, params, program.returns, env, consts, plan=plan,
                       use_numexpr=use_numexpr and size >= NUMEXPR_MIN_SIZE,
                       use_numba=use_numba and size >= FUSED_MIN_SIZE)
    src = emitter.emit()
    namespace: dict[str, Any] = {"np": xp}
    namespace.update({helper_name(GATES[i.fn]): GATES[i.fn].forward for i in ins if i.kind == "helper"})
    namespace.update(consts if xp is np else {k: _on(xp, v) for k, v in consts.items()})
    namespace.update(emitter.globals)
    header = "".join(f"# {name}: {_describe(v)}\n" if not name.startswith("_fill") else
                     f"# {name}: constant {v.dtype} {v.shape} of {v.flat[0].item() if v.size else 0!r} (a number, "
                     "as an array: NumPy's maximum/minimum loops are faster on two arrays)\n"
                     for name, v in emitter.globals.items())
    header += "".join(f"# {name}: constant {np.asarray(v).dtype} {np.shape(v)}, computed once at specialization\n"
                      for name, v in consts.items() if name.startswith("_k") and name in src)
    code = compile_source(src, namespace)
    if emitter.kernels:
        return header + "\n" + emitter.kernels + "\n\n" + src, code, "numba"
    return header + src, code, "numexpr" if use_numexpr else "numpy"


_warned_numba = False


def _numba_available(warn: bool) -> bool:
    """Whether the fused backend can run; ``backend="numba"`` without numba warns once per process."""
    global _warned_numba
    from . import fused

    if fused.available():
        return True
    if warn and not _warned_numba:
        _warned_numba = True
        warnings.warn("compile: backend='numba' needs numba (pip install 'chainrule[fast]'); "
                      "using the NumPy backend", RuntimeWarning, stacklevel=5)
    return False


def _describe(v: Any) -> str:
    if isinstance(v, tuple):
        return f"{len(v)} block buffers" + (f" of {v[0].size} elements" if v else "")
    if isinstance(v, np.ndarray):
        return f"buffer {v.dtype} {v.shape}"
    if type(v).__module__.startswith("numba"):
        return "the fused loop below, compiled by numba"
    return repr(v)


def _on(xp: Any, value: Any) -> Any:
    """A NumPy value (an array, or a tuple of them: an index) as ``xp``'s, for code run on that library."""
    if xp is np:
        return value
    if isinstance(value, np.ndarray):
        return xp.asarray(value)
    if isinstance(value, tuple):
        return tuple(_on(xp, v) for v in value)
    return value


def compile_source(src: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """Compile generated source (never text typed by a person) and return its ``_compiled``."""
    code = builtins.compile(src, "<chainrule.compile>", "exec")
    exec(code, namespace)  # noqa: S102 - generated by chainrule from the gate table
    return namespace["_compiled"]


def compile(f: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "auto") -> Compiled:  # noqa: A001
    """``value_and_grad(f, argnums)`` as generated, compiled code: traced on the first call and again
    for each new input signature (shapes, dtypes). Returns ``(out, grads)`` like value_and_grad.

    ``backend``: ``"auto"`` (default) runs float64 elementwise programs on large arrays as fused
    numba loops when numba is installed (extra ``fast``), everything else as planned NumPy code;
    ``"numba"`` is the same but warns once when numba is missing; ``"numpy"`` never fuses;
    ``"numexpr"`` fuses elementwise chains with numexpr. ``fast.backend_used`` tells which ran.
    """
    return Compiled(f, argnums, backend)


def block_driver(params: list[str], fills: list[Any], shape: tuple[int, ...], size: int,
                 buf_dtypes: list[Any], env: dict[str, Any]) -> list[str]:
    """Source lines of ``_compiled(*params)``: allocate the outputs (``np.full`` where ``fills`` gives a
    constant, else ``np.empty``), then run ``_block`` over TILE-sized slices of the flattened inputs
    and outputs, with scratch buffers of ``buf_dtypes`` put into ``env``; returns the outputs."""
    nret = len(fills)
    full, tail = size - size % TILE, size % TILE
    if full:
        env["_full_bufs"] = tuple(np.empty(TILE, dtype=dt) for dt in buf_dtypes)
    if tail:
        env["_tail_bufs"] = tuple(np.empty(tail, dtype=dt) for dt in buf_dtypes)
    lines = ["", "", f"def _compiled({', '.join(params)}):"]
    for k, fill in enumerate(fills):
        alloc = f"np.empty({shape!r})" if fill is None else f"np.full({shape!r}, {_lit(float(fill))})"
        lines.append(f"    o{k} = {alloc}")
    flat = [f"{p}.reshape(-1)" for p in params] + [f"o{k}.reshape(-1)" for k in range(nret)]
    lines.append(f"    _flat = ({', '.join(flat)},)")
    if full:
        lines.append(f"    for s in range(0, {full}, {TILE}):")
        lines.append(f"        _block(*[a[s:s + {TILE}] for a in _flat], *_full_bufs)")
    if tail:
        lines.append(f"    _block(*[a[{full}:] for a in _flat], *_tail_bufs)" if full else
                     "    _block(*_flat, *_tail_bufs)")
    lines.append(f"    return ({', '.join(f'o{k}' for k in range(nret))}{',' if nret == 1 else ''})")
    return lines
