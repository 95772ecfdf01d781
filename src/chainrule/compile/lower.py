"""Lowering: the readable program of :mod:`chainrule.codegen` -> instructions (:class:`~.ir.Code`).

Each statement's expression becomes three-address instructions: operators become ufuncs, the
program's helpers are inlined, small integer powers are strength-reduced (``z ** 3`` ->
``square(z) * z``), ``a * (1 / b)`` becomes one division, and each pure call is emitted once
(value numbering as it goes). Every gate fact comes from the gate's table entry (its NumPy name,
whether it is a helper, its arity); no gate is special-cased by name. The instructions are then run
once on the traced inputs, so every value's shape and dtype is known to the passes and emitters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codegen import Program
from ..gates import GATES, resolve
from ..symbolic import Sym
from .ir import Code, ConstRef, Ins, canon, execute, holds_array, pure_key, standin

_UFUNC = {
    "add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "pow": "power", "neg": "negative",
    "gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal", "eq": "equal", "ne": "not_equal",
}


class Lowerer:
    """Program statements -> three-address instructions (helpers inlined, powers reduced)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.ins: list[Ins] = []
        self.n = 0
        self.consts: dict[str, Any] = {}
        self.seen: dict[Any, str] = {}   # value numbering: each pure call computed once

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
        key = pure_key(kind, fn, args, params or {})
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
        params = {k: ConstRef(self.const_name(v)) if holds_array(v) else v for k, v in e.params.items()}
        if gate.np_name is None and callable(gate.code) and callable(gate.forward):
            # a forward whose NumPy call is not np.<name>(inputs, params) (einsum: the subscripts
            # first): the gate's own forward runs, on the inputs as they are
            return self.emit("helper", name, args, params, target=target)
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


def lower_program(program: Program, params: list[str], inputs: dict[str, np.ndarray]) -> Code:
    """The program as instructions, run once on stand-ins of ``inputs`` (every value's shape and
    dtype known), with ``alias`` instructions dropped: every use refers to the aliased value directly."""
    lowerer = Lowerer(program)
    ins = lowerer.run()
    consts = dict(lowerer.consts)
    for cname, v in program.constants.items():
        consts.setdefault(cname, v)
    try:   # the shapes and dtypes of every value, without computing on arrays of the inputs' size
        with np.errstate(all="ignore"):
            env = execute(ins, consts, {k: standin(v) for k, v in inputs.items()}, shapes_only=True)
    except Exception:  # noqa: BLE001 - a call that cannot take ones (inv of a matrix of ones): compute plainly
        env = execute(ins, consts, inputs)
    aliases: dict[str, Any] = {}
    out = []
    for i in ins:
        args = [canon(aliases, a) for a in i.args]
        if i.kind == "alias":
            aliases[i.target] = args[0]
            continue
        out.append(Ins(i.target, i.kind, i.fn, args, i.params))
    return Code(out, list(params), list(program.returns), aliases, env, consts)
