"""Graph -> the combined forward+backward function as readable NumPy source.

The derivative text is never written here: every gate's own rule from ``gates.py`` (``local`` for
elementwise gates, ``vjp`` for the rest) is evaluated on symbolic stand-ins (``chainrule.symbolic``)
and the resulting expressions are printed. Forward lines are the gate's forward evaluated the same
way, so ``np.exp(a)`` comes from the gate's ``xp.exp`` and a composite's stable forward (sigmoid)
becomes a small helper function in the generated source.

:func:`build_program` turns a traced :class:`~chainrule.graph.Graph` into a :class:`Program`
(forward statements, backward statements, returns) with the simplifications a teaching assistant
would make: the seed named once (``dout = np.ones_like(out)``, multiplied in where a rule multiplies
by the upstream gradient, so no gradient is ever one of the caller's arrays), constant local gradients
not multiplied by (add's 1), constant folding (by :mod:`symbolic`'s
constructors), dead code left out, repeated subexpressions computed once, and forward values
reused in the backward pass (sigmoid's ``out * (1 - out)``). :meth:`Program.source` prints it;
``chainrule.compile`` lowers the same program (built with the seed folded to 1) to fast code, so the
two never disagree.
"""

from __future__ import annotations

import ast
import inspect
import keyword
import textwrap
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gates import FAN_OUT, GATES, Gate, pullback, unbroadcast
from .symbolic import NumpyPrinter, Sym, binary, call, const, ops, sym

__all__ = ["Program", "Stmt", "build_program", "graph_source", "expr_key"]

_RESERVED = {"np"}


@dataclass
class Stmt:
    """One line of the generated function: ``target = expr``, with an optional comment."""

    target: str
    expr: Sym
    comment: str | None = None


@dataclass
class Program:
    """The combined forward+backward function as data (see module docstring)."""

    params: list[str]                      # argument names, in order
    forward: list[Stmt]
    backward: list[Stmt]
    returns: list[str]                     # the output, then one gradient per differentiated input
    shapes: dict[str, tuple[int, ...]]     # every named value's shape
    helpers: dict[str, tuple[list[str], list[Stmt], Sym]] = field(default_factory=dict)
    helper_gates: dict[str, str] = field(default_factory=dict)  # helper name -> the gate it computes
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    #: gates whose forward the source includes as a helper function (scatter-add, item assignment)
    gate_helpers: list[str] = field(default_factory=list)
    #: functions of gates you defined (``cr.gate``) that the source includes: name -> source
    user_functions: dict[str, str] = field(default_factory=dict)
    #: the gradients' float dtype (the output's, as the eager engine's ones seed has): a number the
    #: folded program materializes as an array (``np.full``) takes it, so float32 stays float32
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))

    def source(self, name: str = "f", inline_constants: bool = True, returns: Iterable[str] | None = None,
               provided: dict[str, str] | None = None) -> str:
        """Standalone Python importing only numpy: ``def name(*params): ... return out, d...``.

        ``returns`` names what is returned, as a worksheet's skeleton does (``out, fx, fy, fz``): the
        output is bound to its name after the forward pass (``out = d``) and each gradient is computed
        under its own name. ``provided`` maps gates to helper functions the caller's code already
        defines (``{"sigmoid": "sigmoid"}``): the function calls them and does not define its own."""
        provided = provided or {}
        given = list(self.returns if returns is None else returns)
        taken = set(self.params) | set(self.shapes) | set(self.helpers) | set(self.constants)
        rename = dict(zip(self.returns[1:], given[1:]))
        if len(given) != len(self.returns) or len(set(given)) != len(given) or any(
                not n.isidentifier() or keyword.iskeyword(n) or (n in taken and n != old)
                for old, n in zip(self.returns, given)):
            raise ValueError(f"returns: {len(self.returns)} distinct new names are needed (the output, then one "
                             f"gradient per input), not {given}")
        printer = CodePrinter(self, rename, {h: provided[g] for h, g in self.helper_gates.items() if g in provided})
        lines = ["import numpy as np", ""]
        for gname in self.gate_helpers:
            lines += ["", *helper_source(GATES[gname]).splitlines(), ""]
        for source in self.user_functions.values():
            lines += ["", *source.splitlines(), ""]
        for hname, (hparams, body, result) in self.helpers.items():
            if self.helper_gates.get(hname) in provided:
                continue
            lines += ["", f"def {hname}({', '.join(hparams)}):"]
            lines += [f"    {s.target} = {printer.text(s.expr)}" for s in body]
            lines += [f"    return {printer.text(result)}", ""]
        lines += ["", f"def {name}({', '.join(self.params)}):"]
        body: list[str] = []
        if inline_constants and self.constants:
            body.append("# constants")
            for cname, value in self.constants.items():
                dname = "bool_" if value.dtype.kind == "b" else value.dtype.name   # np.bool is NumPy 2's only
                body.append(f"{cname} = np.array({printer.elements(value.tolist())}, dtype=np.{dname})")
        body.append("# forward pass")
        body += _statement_lines(self.forward, printer)
        if given[0] != self.returns[0]:
            body.append(f"{given[0]} = {self.returns[0]}")
        body.append("# backward pass")
        body += _statement_lines(self.backward, printer)
        body.append(f"return {', '.join(given)}")
        lines += ["    " + b for b in body]
        if not any("np." in line for line in lines[1:]):  # nothing calls numpy: no unused import
            lines = lines[3:]
        if any("scipy.special." in line for line in lines):  # a special-function gate's code imports SciPy too
            at = 1 if lines[:1] == ["import numpy as np"] else 0
            lines[at:at] = ["import scipy.special"] if at else ["import scipy.special", "", ""]
        return "\n".join(lines) + "\n"


def _statement_lines(stmts: list[Stmt], printer: CodePrinter) -> list[str]:
    out = []
    for s in stmts:
        target = printer.rename.get(s.target, s.target)
        line = f"{target} = {printer.text(s.expr)}"
        if len(line) > 96 and s.expr.op in ("add", "sub"):  # a long sum: one term per line
            terms: list[tuple[str, Sym]] = []
            e = s.expr
            while e.op in ("add", "sub"):
                terms.append((" + " if e.op == "add" else " - ", e.args[1]))
                e = e.args[0]
            first = printer.wrap(e, 60)
            rest = [f"    {op.strip()} {printer.wrap(t, 61)}" for op, t in reversed(terms)]
            if s.comment:
                out.append(f"# {s.comment}")
            out += [f"{target} = (", f"    {first}", *rest, ")"]
            continue
        if s.comment:
            if len(line) + len(s.comment) + 6 <= 100:
                line = f"{line}  # {s.comment}"
            else:
                out.append(f"# {s.comment}")
        out.append(line)
    return out


def helper_source(gate: Gate) -> str:
    """A helper gate's own forward (annotations dropped), as generated code includes and calls it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(gate.forward)))
    fn = tree.body[0]
    for a in [*fn.args.args, *fn.args.kwonlyargs]:
        a.annotation = None
    fn.returns = None
    return ast.unparse(tree)


# ---------------------------------------------------------------------------------------------
# printing code
# ---------------------------------------------------------------------------------------------


class CodePrinter(NumpyPrinter):
    """NumPy-code printer that knows the program's helpers and named constants."""

    def __init__(self, program: Program | None = None, rename: dict[str, str] | None = None,
                 calls: dict[str, str] | None = None) -> None:
        super().__init__("np")
        self.program = program
        self.rename = rename or {}  # names printed under other names (a skeleton's fx for dx)
        self.calls = calls or {}  # helper calls printed as calls of the caller's own functions

    def text(self, e: Any) -> str:
        return self.render(e)[0]

    def array(self, v: np.ndarray) -> str:
        if self.program is not None:
            for cname, value in self.program.constants.items():
                if value is v:
                    return cname
        return f"np.array({v.tolist()!r})"

    def render(self, e: Any) -> tuple[str, int]:
        if isinstance(e, Sym) and e.op == "name" and e.value in self.rename:
            return self.rename[e.value], 100
        if isinstance(e, Sym) and e.op == "getitem":
            return f"{self.wrap(e.args[0], 100)}[{self.index(e.params['index'])}]", 100
        if isinstance(e, Sym) and e.op == "call" and e.value == "broadcast_to" and e.args[0].op == "num":
            v = e.args[0].value
            shape = repr(tuple(e.params["shape"]))
            dtype = self.program.dtype if self.program is not None else np.dtype(np.float64)
            dt = "" if dtype == np.float64 else f", dtype=np.{dtype.name}"  # float32 programs stay float32
            if isinstance(v, bool) or v not in (0, 1):
                return f"np.full({shape}, {self.number(float(v))}{dt})", 100
            return f"np.{'ones' if v == 1 else 'zeros'}({shape}{dt})", 100
        if (isinstance(e, Sym) and e.op == "call" and e.value == "broadcast_to" and e.args[0].op == "name"
                and e.args[0].known_shape == ()):  # one 0-d value everywhere: a writable array, not a view
            return f"np.full({tuple(e.params['shape'])!r}, {e.args[0].value})", 100
        if isinstance(e, Sym) and e.op == "call" and e.value == "zeros_like":
            return f"np.zeros_like({self.text(e.args[0])})", 100
        if isinstance(e, Sym) and e.op == "call" and e.value == "full_like":
            v = e.params["fill"]
            if v == 1:
                return f"np.ones_like({self.text(e.args[0])})", 100
            return f"np.full_like({self.text(e.args[0])}, {self.number(v)})", 100
        return super().render(e)

    def param(self, key: str, value: Any, enclosed: bool = False) -> str:
        if key in ("index", "indices"):
            return self.index(value, tuple_parens=not enclosed)
        if isinstance(value, np.ndarray):
            return self.array(value)
        return repr(value)

    def gate_code(self, gate: Gate, operands: tuple[Sym, ...], params: dict[str, Any]) -> tuple[str, int]:
        if gate.helper:  # a helper function the source includes: _scatter(np, g, index=..., shape=...)
            args = ["np", *(self.render(a)[0] for a in operands)]
            args += [f"{k}={self.param(k, v)}" for k, v in params.items()]
            return f"{helper_name(gate)}({', '.join(args)})", 100
        return super().gate_code(gate, operands, params)

    def index(self, index: Any, tuple_parens: bool = False) -> str:
        def one(i: Any) -> str:
            if i is Ellipsis:
                return "..."
            if isinstance(i, slice):
                if tuple_parens:
                    return f"slice({i.start!r}, {i.stop!r}, {i.step!r})"
                parts = ["" if v is None else repr(v) for v in (i.start, i.stop, i.step)]
                return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
            if isinstance(i, np.ndarray):
                return self.array(i)
            if isinstance(i, list):
                return repr(i)
            return repr(i)

        if isinstance(index, tuple):
            inner = ", ".join(one(i) for i in index)
            if tuple_parens or not index:
                return f"({inner}{',' if len(index) == 1 else ''})"
            return inner + ("," if len(index) == 1 else "")
        return one(index)

    def call_name(self, name: str) -> str:
        if name in self.calls:
            return self.calls[name]
        if self.program is not None and (name in self.program.helpers or name in self.program.user_functions):
            return name
        return super().call_name(name)


# ---------------------------------------------------------------------------------------------
# structural keys (for forward-value reuse and common subexpressions)
# ---------------------------------------------------------------------------------------------


def _freeze(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, slice):
        return ("slice", v.start, v.stop, v.step)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, *(_freeze(i) for i in v))
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    try:
        hash(v)
    except TypeError:
        return ("repr", repr(v))
    return (type(v).__name__, v) if isinstance(v, (bool, int, float, complex)) else v


def expr_key(e: Sym, memo: dict[int, Any] | None = None) -> Any:
    """A hashable key equal for structurally identical expressions (iterative, memoized by id)."""
    memo = {} if memo is None else memo
    stack = [e]
    while stack:
        x = stack[-1]
        if id(x) in memo:
            stack.pop()
            continue
        pending = [a for a in x.args if id(a) not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        if x.op == "name":
            k: Any = ("name", x.value)
        elif x.op == "num":
            k = ("num", _freeze(x.value))
        elif x.op == "array":
            k = ("array", _freeze(x.value))
        else:
            k = (x.op, x.value if x.op == "call" else None, _freeze(x.params),
                 tuple(memo[id(a)] for a in x.args))
        memo[id(x)] = k
    return memo[id(e)]


def _rebuild(e: Sym, args: tuple[Sym, ...]) -> Sym:
    if all(a is b for a, b in zip(args, e.args)):
        return e
    return Sym(e.op, args, value=e.value, params=e.params, shape=e.known_shape)


def _postorder(e: Sym) -> list[Sym]:
    """The distinct subexpressions of ``e``, each after its arguments (iterative)."""
    order: list[Sym] = []
    seen: set[int] = set()
    stack: list[tuple[Sym, bool]] = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if ready:
            order.append(x)
            continue
        if id(x) in seen:
            continue
        seen.add(id(x))
        stack.append((x, True))
        stack.extend((a, False) for a in reversed(x.args) if id(a) not in seen)
    return order


def _substitute(e: Sym, table: dict[Any, Sym], memo: dict[int, Any], done: dict[int, Sym]) -> Sym:
    """``e`` with every subexpression whose key is in ``table`` replaced by the table's leaf, and
    shape operations on plain numbers folded (``reshape(1, (1, 1))`` is 1)."""
    for x in _postorder(e):
        if id(x) in done:
            continue
        hit = table.get(expr_key(x, memo))
        if hit is not None:
            done[id(x)] = hit
            continue
        args = tuple(done[id(a)] for a in x.args)
        y = _rebuild(x, args)
        if y is not x and x.op in ("add", "sub", "mul", "div", "pow"):
            y = binary(x.op, *args)  # simplify again after folding (1 * x -> x)
        elif y is not x and x.op == "neg":
            y = -args[0]
        if y.op == "call" and y.value == "reshape" and y.args[0].op == "num":
            y = y.args[0]
        elif (y.op == "call" and y.value == "broadcast_to" and y.args[0].op == "call"
              and y.args[0].value == "reshape" and y.args[0].args[0].known_shape == ()):
            y = call("broadcast_to", y.args[0].args[0], shape=tuple(y.params["shape"]))  # a 0-d value
        elif (y.op == "call" and y.value in ("reshape", "broadcast_to") and y.args[0].op == "call"
              and y.args[0].value == "broadcast_to" and y.args[0].args[0].op == "num"):
            # still all one number; the shape the reshape resolved (its params may say -1)
            y = call("broadcast_to", y.args[0].args[0],
                     shape=tuple(y.known_shape if y.known_shape is not None else y.params["shape"]))
        elif (y.op == "call" and y.value in ("reshape", "broadcast_to") and y.args[0].op != "num"
              and y.args[0].known_shape is not None
              and tuple(y.args[0].known_shape) == tuple(y.params["shape"])):
            y = y.args[0]
        done[id(x)] = y
    return done[id(e)]


def _is_trivial(e: Sym) -> bool:
    return e.op in ("name", "num", "array") or (e.op == "neg" and e.args[0].op in ("name", "num"))


def _walk(e: Sym) -> Iterable[Sym]:
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(reversed(x.args))


def _count_uses(stmts: list[Stmt], memo: dict[int, Any], hoisted: set[Any]) -> dict[Any, int]:
    """How often each subexpression is evaluated, when each ``hoisted`` one is computed once."""
    counts: dict[Any, int] = {}
    opened: set[Any] = set()
    for s in stmts:
        stack = [s.expr]
        while stack:
            x = stack.pop()
            k = expr_key(x, memo)
            counts[k] = counts.get(k, 0) + 1
            if k in hoisted:
                if k in opened:
                    continue
                opened.add(k)
            stack.extend(x.args)
    return counts


def common_subexpressions(stmts: list[Stmt], taken: set[str], prefix: str = "tmp") -> list[Stmt]:
    """Statements with every repeated non-trivial subexpression computed once, into a temporary
    (or the statement that computes it whole), emitted just before its first use."""
    memo: dict[int, Any] = {}
    hoisted: set[Any] = set()
    while True:  # add the outermost repeated subexpressions, then look again inside what is left
        counts = _count_uses(stmts, memo, hoisted)
        new: set[Any] = set()
        for s in stmts:
            stack = [s.expr]
            while stack:
                x = stack.pop()
                k = expr_key(x, memo)
                if k not in hoisted and counts[k] >= 2 and not _is_trivial(x):
                    new.add(k)
                    continue
                stack.extend(x.args)
        if not new:
            break
        hoisted |= new
    if not hoisted:
        return stmts
    defined: dict[Any, Sym] = {}
    out: list[Stmt] = []
    n = 0

    def fresh() -> str:
        nonlocal n
        while True:
            n += 1
            name = f"{prefix}{n}"
            if name not in taken:
                taken.add(name)
                return name

    def lower(e: Sym, root_target: str | None) -> Sym:
        # replace hoisted subtrees (innermost first) by their names, defining them on first use
        order = list(_walk(e))
        done: dict[int, Sym] = {}
        for x in reversed(order):
            if id(x) in done:
                continue
            k = expr_key(x, memo)
            if k in defined:
                done[id(x)] = defined[k]
                continue
            y = _rebuild(x, tuple(done[id(a)] for a in x.args))
            if k in hoisted and x is not e:
                name = fresh()
                out.append(Stmt(name, y))
                defined[k] = sym(name, x.known_shape)
                done[id(x)] = defined[k]
            else:
                done[id(x)] = y
        return done[id(e)]

    for s in stmts:
        k = expr_key(s.expr, memo)
        e = lower(s.expr, s.target)
        out.append(Stmt(s.target, e, s.comment))
        if k in hoisted and k not in defined:
            defined[k] = sym(s.target, s.expr.known_shape)
    return out


# ---------------------------------------------------------------------------------------------
# graph -> program
# ---------------------------------------------------------------------------------------------


def _short_explain(gate: Gate) -> str:
    # the gate's idea in words: the code beside it already shows the rule in the function's own names
    text = gate.idea.split(" — ")[0].split("; ")[0]
    return text if len(text) <= 70 else text[:67].rsplit(" ", 1)[0] + " ..."


class _Namer:
    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken) | _RESERVED

    def claim(self, base: str) -> str:
        if not base.isidentifier() or keyword.iskeyword(base):
            base = "v_" + "".join(ch if ch.isalnum() else "_" for ch in base)
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def _forward_expr(gate: Gate, args: list[Sym], params: dict[str, Any]) -> Sym:
    """The gate's forward evaluated on stand-ins: ``xp`` is the symbolic ops namespace. A helper
    gate's forward is Python the generated code includes: it stays one call of the gate."""
    if gate.helper:
        return ops.apply_gate(gate, *args, **params)
    if gate.np_name is not None:
        return getattr(ops, gate.name)(*args, **params)
    return gate.forward(ops, *args, **params)


def _size(e: Sym) -> int:
    return sum(1 for x in _walk(e) if x.op not in ("name", "num", "array"))


def build_program(graph: Any, wrt: Iterable[str] | None = None, fold_seed: bool = False,
                  reserved: Callable[[str], bool] | None = None) -> Program:
    """The combined forward+backward function of a traced graph as a :class:`Program`.

    ``reserved``: names the code this program becomes uses for itself (``cr.compile``'s buffers
    and runners); a value of the graph named so is renamed (``_run`` -> ``run_``).

    ``wrt``: names of the inputs whose gradients are returned (default: all, in argument order).
    ``fold_seed``: the readable answer key (default) names the seed, ``dout = np.ones_like(out)``, and
    multiplies by it where a rule multiplies by the upstream gradient; ``True`` folds it to the number 1
    (``dt1 = z``), which is fewer passes for ``chainrule.compile`` (whose lowering copies any result
    that would alias an input).
    """
    nodes = graph.nodes
    namer = _Namer(n.name for n in nodes if n.kind != "const")
    ident: dict[int, str] = {}          # node id -> identifier in the code
    value: dict[int, Sym] = {}          # node id -> its stand-in
    shapes: dict[str, tuple[int, ...]] = {}
    program = Program(params=[], forward=[], backward=[], returns=[], shapes=shapes)
    out_dtype = np.asarray(graph.output.value).dtype
    program.dtype = out_dtype if out_dtype.kind in "fc" else np.dtype(np.float64)
    fwd_table: dict[Any, Sym] = {}      # key of a forward expression -> the name holding it
    memo: dict[int, Any] = {}
    helper_cache: dict[Any, str] = {}
    nonfloat: set[str] = set()          # named forward values that are not floats (masks)

    def code_name(n: Any) -> str:
        ok = n.name not in _RESERVED and n.name.isidentifier() and not keyword.iskeyword(n.name)
        if ok and reserved is not None and reserved(n.name):
            return namer.claim(n.name.strip("_") + "_" if n.name.strip("_") else "v_")
        return n.name if ok else namer.claim(n.name)

    def constant(v: Any, base: str) -> Sym:
        arr = np.asarray(v)
        if arr.ndim == 0:
            return const(arr.item() if isinstance(v, (np.ndarray, np.generic)) else v)
        cname = namer.claim(base if base.isidentifier() else "c")
        program.constants[cname] = arr
        return Sym("array", value=arr, shape=arr.shape)

    for n in nodes:
        shape = tuple(np.shape(n.value))
        if n.kind == "input":
            name = code_name(n)
            ident[id(n)] = name
            program.params.append(name)
            value[id(n)] = sym(name, shape)
            shapes[name] = shape
        elif n.kind == "const":
            value[id(n)] = constant(n.value, n.name)
        else:
            name = code_name(n)
            ident[id(n)] = name
            args = [value[id(i)] for i in n.inputs]
            expr = _forward_expr(n.gate, args, n.params)
            if _size(expr) > 1:
                expr = _helper_call(program, n.gate, args, n.params, helper_cache, namer)
            if np.asarray(n.value).dtype.kind in "fc" and not _is_float(expr, nonfloat):
                expr = Sym("mul", (const(1.0), expr), shape=shape)  # mask * 1.0 folded to the mask: keep floats
            program.forward.append(Stmt(name, expr))
            if expr.op not in ("name", "num", "array"):
                fwd_table.setdefault(expr_key(expr, memo), sym(name, shape))
            value[id(n)] = sym(name, shape)
            shapes[name] = shape
            if np.asarray(n.value).dtype.kind not in "fc":
                nonfloat.add(name)  # a mask (z > 0): a gradient that is one must still be a float

    # ---- which nodes carry gradient: on a path from a differentiated input to the output ----
    wanted = list(graph.inputs) if wrt is None else [graph[w] for w in wrt]
    wanted_ids = {id(n) for n in wanted}
    live: set[int] = set(wanted_ids)
    for n in nodes:
        if n.kind == "op" and n.gate.differentiable and any(id(i) in live for i in n.inputs):
            live.add(id(n))
    out = graph.output
    consumers: dict[int, list[Any]] = {}
    for n in nodes:
        if n.kind == "op" and id(n) in live:
            for i in n.inputs:
                if id(i) in live:
                    consumers.setdefault(id(i), []).append(n)

    # ---- backward: each gate's rule on stand-ins, nodes taken as soon as their gradient is whole ----
    contribs: dict[int, list[tuple[Sym, Gate]]] = {}
    grad_leaf: dict[int, Sym] = {}
    grad_name: dict[int, str] = {}
    backward: list[Stmt] = []
    if id(out) in live and fold_seed:
        contribs[id(out)] = [(const(1), None)]  # the ones seed: folded away, never multiplied by
    remaining = {k: len(v) for k, v in consumers.items()}
    queue: deque[Any] = deque([out] if id(out) in live else [])

    def finish(n: Any) -> None:
        """Emit ``d<n> = sum of contributions`` and make ``d<n>`` the upstream gradient of n."""
        parts = contribs.get(id(n), [])
        shape = tuple(np.shape(n.value))
        if not parts:
            return
        total = parts[0][0]
        for p, _ in parts[1:]:
            total = binary("add", total, p)
        if n is out and total.op == "num":
            grad_leaf[id(n)] = total
            return
        total = _substitute(total, fwd_table, memo, {})
        if total.op != "num" and not _is_float(total, nonfloat):  # e.g. 2 * (x > 0): keep gradients floats
            if total.op == "mul" and total.args[0].op == "num" and not isinstance(total.args[0].value, bool):
                total = Sym("mul", (const(float(total.args[0].value)), total.args[1]), shape=total.known_shape)
            else:
                total = Sym("mul", (const(1.0), total), shape=total.known_shape)
        if (total.op == "call" and total.value == "broadcast_to" and total.args[0].op == "num"
                and tuple(total.params["shape"]) == shape):
            total = total.args[0]  # ones of the node's shape: the number 1, folded on
        if total.op == "num" and n.kind != "input":  # a constant gradient: keep folding it
            grad_leaf[id(n)] = total
            return
        if total.op == "num":  # an input's constant gradient, as an array of its shape
            total = call("full_like", value[id(n)], fill=total.value)
        gname = namer.claim("d" + ident[id(n)])
        grad_name[id(n)] = gname
        if len(parts) > 1:
            comment = f"{ident[id(n)]} is used {len(parts)} times: " + FAN_OUT.split(": ", 1)[1]
        else:
            gate = parts[0][1]
            comment = _short_explain(gate) if gate is not None else None
        total = _substitute(total, fwd_table, memo, {})
        backward.append(Stmt(gname, total, comment))
        grad_leaf[id(n)] = sym(gname, shape)
        shapes[gname] = shape

    def process(n: Any) -> list[Any]:
        g = grad_leaf.get(id(n))
        ready = []
        if g is None or n.kind != "op":
            return ready
        gate: Gate = n.gate
        args = [value[id(i)] for i in n.inputs]
        out_sym = value[id(n)]
        needs = [id(i) in live for i in n.inputs]
        nshape = tuple(np.shape(n.value))
        if g.op == "num" and gate.local is None:
            g = call("broadcast_to", g, shape=nshape)  # shape-aware rules need the array
        grads = pullback(gate, ops, g, args, out_sym, needs, n.params,
                         reduce=lambda m, gi, shape: _to_shape(_wrap_local(gi), nshape, shape))
        for inp, need, gi in zip(n.inputs, needs, grads):
            if not need:
                continue
            if gi is not None:
                gi = const(gi) if not isinstance(gi, Sym) else gi
                if not _is_zero(gi):
                    contribs.setdefault(id(inp), []).append((gi, gate))
            remaining[id(inp)] -= 1
            if remaining[id(inp)] == 0:
                ready.append(inp)
        return ready

    finish_order: list[Any] = []
    if queue and not fold_seed:  # the named seed: d<out> = np.ones_like(out)
        gname = namer.claim("d" + ident[id(out)])
        grad_name[id(out)] = gname
        shape = tuple(np.shape(out.value))
        backward.append(Stmt(gname, call("full_like", value[id(out)], fill=1)))
        grad_leaf[id(out)] = sym(gname, shape)
        shapes[gname] = shape
    elif queue:
        finish(out)
    if queue:
        finish_order.append(out)
    while queue:
        n = queue.popleft()
        for r in process(n):
            finish(r)
            finish_order.append(r)
            queue.append(r)

    # ---- gradients of the differentiated inputs, in argument order ----
    returns = [ident[id(out)] if id(out) in ident else None]
    if returns[0] is None:  # the output is a constant: name it
        cname = namer.claim("out")
        program.forward.append(Stmt(cname, value[id(out)]))
        returns[0] = cname
    for n in wanted:
        shape = tuple(np.shape(n.value))
        x = value[id(n)]
        if id(n) in grad_name:
            gname = grad_name[id(n)]
            last = next(s for s in backward if s.target == gname)
            if last.expr.known_shape is not None and tuple(last.expr.known_shape) != shape:
                last.expr = call("broadcast_to", last.expr, shape=shape)
            returns.append(gname)
            continue
        gname = namer.claim("d" + ident[id(n)])
        g = grad_leaf.get(id(n))
        if g is None:
            why = "its gradient is identically 0" if id(n) in consumers else "no path to the output: the gradient is 0"
            backward.append(Stmt(gname, call("zeros_like", x), why))
        else:  # a constant gradient, e.g. of x in x + 2 * y
            backward.append(Stmt(gname, call("full_like", x, fill=g.value)))
        shapes[gname] = shape
        returns.append(gname)
    program.backward = common_subexpressions(backward, namer.taken)
    program.returns = returns
    used = {x.value for s in [*program.forward, *program.backward] for x in _walk(s.expr) if x.op == "call"}
    program.gate_helpers = sorted(n for n in used if n in GATES and GATES[n].helper)
    from .custom import USER_CALLS

    program.user_functions = {n: USER_CALLS[n]() for n in sorted(used) if n in USER_CALLS}
    return program


def helper_name(gate: Gate) -> str:
    """The name generated code calls a helper gate by (its forward's own name: ``_scatter``)."""
    return gate.forward.__name__


def _is_float(e: Sym, nonfloat: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether an expression is floating point (named values are, except those in ``nonfloat``,
    masks like ``t1 = z > 0``; comparisons and ints are not)."""
    memo: dict[int, bool] = {}
    for x in _postorder(e):
        if x.op == "name":
            r = x.value not in nonfloat
        elif x.op == "array":
            r = np.asarray(x.value).dtype.kind in "fc"
        elif x.op == "num":
            r = isinstance(x.value, (float, complex)) and not isinstance(x.value, bool)
        elif x.op in ("gt", "ge", "lt", "le", "eq", "ne") or (
                x.op == "call" and x.value in GATES and GATES[x.value].boolean):
            r = False
        elif x.op == "div":
            r = True
        elif x.op == "call" and x.value == "broadcast_to" and x.args[0].op == "num":
            r = True  # printed as np.ones / np.full of a float
        else:
            r = any(memo[id(a)] for a in x.args)
        memo[id(x)] = r
    return memo[id(e)]


def _wrap_local(v: Any) -> Sym:
    return v if isinstance(v, Sym) else const(v)


def _is_zero(e: Sym) -> bool:
    return e.op == "num" and not isinstance(e.value, bool) and e.value == 0


def _to_shape(gi: Sym, node_shape: tuple[int, ...], target: tuple[int, ...]) -> Sym:
    """An elementwise contribution summed over broadcast axes so it has the input's shape.

    The seed is folded to the number 1, so a contribution may have the local's shape rather than
    the node's; it is broadcast first where summing alone would not reach ``target``."""
    shape = () if gi.op == "num" else gi.known_shape
    if shape is None:
        return gi
    node_size, size = int(np.prod(node_shape)), int(np.prod(target))
    if tuple(shape) == target or gi.op == "num":
        # the ones seed was folded: the contribution is the same at every broadcast copy, so its
        # sum over them is a multiple
        return gi if node_size == size else binary("mul", node_size // size, gi)
    try:
        fits = tuple(np.broadcast_shapes(shape, target)) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        gi = call("broadcast_to", gi, shape=node_shape)
    return unbroadcast(ops, gi, target)


def _helper_call(program: Program, gate: Gate, args: list[Sym], params: dict[str, Any],
                 cache: dict[Any, str], namer: _Namer) -> Sym:
    """A composite forward (sigmoid's stable form, logsumexp, ...) as a helper function call."""
    # one helper per gate, parameters and input shapes (shape-dependent forwards bake shapes in)
    key = (gate.name, _freeze(params), tuple((a.known_shape, None if a.op == "name" else expr_key(a))
                                             for a in args))
    hname = cache.get(key)
    stand_ins = [a if a.op != "name" else None for a in args]
    pnames = ["x", "y", "w", "v"][: len(args)] if len(args) <= 4 else [f"x{i}" for i in range(len(args))]
    if hname is None:
        hname = namer.claim("_" + gate.name)
        leaves = [sym(p, a.known_shape) if s is None else s for p, a, s in zip(pnames, args, stand_ins)]
        result = gate.forward(ops, *leaves, **params)
        body = common_subexpressions([Stmt("_result", result)], set(pnames) | {"np"}, prefix="t")
        program.helpers[hname] = ([p for p, s in zip(pnames, stand_ins) if s is None], body[:-1], body[-1].expr)
        program.helper_gates[hname] = gate.name
        cache[key] = hname
    return Sym("call", tuple(a for a in args if a.op == "name"), value=hname, shape=None)


def graph_source(graph: Any, name: str = "f") -> str:
    """``Graph.to_source``: the graph's combined forward+backward function as NumPy source."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"to_source: {name!r} is not a valid Python function name")
    return build_program(graph).source(name)
