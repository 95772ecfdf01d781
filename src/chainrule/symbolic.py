"""Symbolic stand-ins for arrays, so the gate table's own derivative rules can be *printed*.

A gate's rule (``gates.py``) is a function of an ops namespace ``m`` and its inputs. Called with
:data:`ops` and :class:`Sym` stand-ins instead of arrays, it returns an expression tree that prints
as the rule reads: ``MUL.local[0](ops, sym("t1"), sym("z"), sym("out"))`` prints ``z``, SIN's gives
``cos(y)``, SIGMOID's ``out·(1 − out)``. Derivative formulas therefore live only in the gate table.

API
---
``sym(name, shape=None)``
    a named leaf (a variable). ``shape`` is optional; give it when the rule looks at shapes
    (the vector-Jacobian rules of sum, reshape, matmul, ...): shapes are then inferred through every op.
``const(value)``
    a number (also made implicitly: ``2 * sym("x")``).
``ops``
    the namespace to call rules with: ``ops.exp``, ``ops.log``, ``ops.cos``, ``ops.sign``,
    ``ops.where``, ``ops.sum(x, axis=, keepdims=)``, ``ops.reshape(x, shape)``, ``ops.matmul``,
    ``ops.scatter(g, index=, shape=)``, ... -- one function per gate of the table (by its gate name
    and by NumPy's name), so a new gate is covered without touching this module.
Operators on :class:`Sym`
    ``+ - * / ** @``, unary ``-``, comparisons (giving expressions, not booleans), ``x[index]``,
    ``.shape``, ``.ndim``. Simplified as they are built: numbers fold (``-1 - 1`` → ``-2``),
    ``x*1``, ``1*x``, ``x+0``, ``x/1``, ``x**1`` → ``x``, ``--x`` → ``x``, ``-1*x`` → ``-x``.
``expr.text(style)`` / ``to_text(expr, style)``
    ``style="math"`` (``str(expr)``): ``2x``, ``cos(y)``, ``out·(1 − out)``, ``x²``, ``[x > 0]``.
    ``style="numpy"``: Python/NumPy code, ``2 * x``, ``np.cos(y)``, ``out * (1 - out)``,
    ``x ** 2``, ``(x > 0)``. ``to_text(expr, "numpy", np_prefix="xp")`` changes the module
    prefix; :class:`NumpyPrinter` may be subclassed to rename calls (``call_name``).
    Plain Python numbers (a rule that returns ``1``) are accepted everywhere too.
``expr.evaluate(env)``
    the expression's value with arrays bound to its leaf names (``env = {"z": 2.0, ...}``),
    computed with the gate table's own forwards -- a check that the printed text means what it says.
``expr.leaves()``
    the names of the leaves it uses, in first-use order.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .gates import GATES, REDUCTION, Gate, normalize_axis, split_call

__all__ = ["Sym", "sym", "const", "ops", "to_text", "MathPrinter", "NumpyPrinter", "is_number", "binary", "neg", "call",
           "equation_text", "fill_template"]

# binding strengths (higher binds tighter), Python's order
_ATOM, _POW, _UNARY, _MUL, _ADD, _CMP = 100, 90, 80, 70, 60, 50

_BINARY = {"add": _ADD, "sub": _ADD, "mul": _MUL, "div": _MUL, "matmul": _MUL, "pow": _POW}
_COMPARE = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
_COMPARE_GATE = {"greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le",
                 "equal": "eq", "not_equal": "ne"}
_ARITH_GATE = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "matmul": "matmul"}


def is_number(v: Any) -> bool:
    """A plain scalar number (Python or NumPy 0-d), which folds and prints inline."""
    if isinstance(v, Sym):
        return v.op == "num"
    return isinstance(v, (numbers.Number, np.generic)) or (isinstance(v, np.ndarray) and v.ndim == 0)


def _num_value(v: Any) -> Any:
    if isinstance(v, Sym):
        return v.value
    if isinstance(v, np.ndarray):
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


class Sym:
    """A symbolic expression: a leaf (``op == "name"``), a number (``"num"``), an operator
    (``add sub mul div pow matmul neg`` or a comparison) or a call of a gate by name."""

    __slots__ = ("op", "args", "value", "params", "_shape")
    __array_priority__ = 2000.0  # NumPy scalars defer to our operators

    def __init__(self, op: str, args: tuple[Sym, ...] = (), value: Any = None,
                 params: dict[str, Any] | None = None, shape: tuple[int, ...] | None = None) -> None:
        self.op = op
        self.args = args
        self.value = value
        self.params = params or {}
        self._shape = shape

    # ---- shapes ---------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        if self._shape is None:
            raise ValueError(f"the symbolic value {self.text()} has no known shape: give the leaves shapes, "
                             "sym(name, shape=...), to evaluate rules that look at shapes")
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def known_shape(self) -> tuple[int, ...] | None:
        """The shape if it is known, else None (never raises)."""
        return self._shape

    # ---- operators ----------------------------------------------------------------------------
    def __add__(self, o: Any) -> Sym:
        return binary("add", self, o)

    def __radd__(self, o: Any) -> Sym:
        return binary("add", o, self)

    def __sub__(self, o: Any) -> Sym:
        return binary("sub", self, o)

    def __rsub__(self, o: Any) -> Sym:
        return binary("sub", o, self)

    def __mul__(self, o: Any) -> Sym:
        return binary("mul", self, o)

    def __rmul__(self, o: Any) -> Sym:
        return binary("mul", o, self)

    def __truediv__(self, o: Any) -> Sym:
        return binary("div", self, o)

    def __rtruediv__(self, o: Any) -> Sym:
        return binary("div", o, self)

    def __pow__(self, o: Any) -> Sym:
        return binary("pow", self, o)

    def __rpow__(self, o: Any) -> Sym:
        return binary("pow", o, self)

    def __matmul__(self, o: Any) -> Sym:
        return binary("matmul", self, o)

    def __rmatmul__(self, o: Any) -> Sym:
        return binary("matmul", o, self)

    def __neg__(self) -> Sym:
        return neg(self)

    def __pos__(self) -> Sym:
        return self

    def __abs__(self) -> Sym:
        return call("abs", self)

    def __gt__(self, o: Any) -> Sym:  # type: ignore[override]
        return binary("gt", self, o)

    def __ge__(self, o: Any) -> Sym:
        return binary("ge", self, o)

    def __lt__(self, o: Any) -> Sym:
        return binary("lt", self, o)

    def __le__(self, o: Any) -> Sym:
        return binary("le", self, o)

    def __eq__(self, o: Any) -> Sym:  # type: ignore[override]
        return binary("eq", self, o)

    def __ne__(self, o: Any) -> Sym:  # type: ignore[override]
        return binary("ne", self, o)

    def __invert__(self) -> Sym:
        return call("logical_not", self)

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        raise TypeError(f"a symbolic expression ({self.text()}) has no truth value")

    def __getitem__(self, index: Any) -> Sym:
        return Sym("getitem", (self,), params={"index": index}, shape=_getitem_shape(self._shape, index))

    # ---- views ------------------------------------------------------------------------------------
    def text(self, style: str = "math", **kw: Any) -> str:
        """The expression as text: ``"math"`` for people, ``"numpy"`` for code (see module docstring)."""
        return to_text(self, style, **kw)

    def __str__(self) -> str:
        return self.text("math")

    def __repr__(self) -> str:
        return f"Sym({self.text('math')})"

    def leaves(self) -> list[str]:
        """Names of the leaves this expression uses, in first-use order."""
        seen: dict[str, None] = {}
        stack: list[Sym] = [self]
        while stack:
            e = stack.pop()
            if e.op == "name":
                seen.setdefault(e.value, None)
            stack.extend(reversed(e.args))
        return list(seen)

    def evaluate(self, env: dict[str, Any]) -> Any:
        """The value with arrays bound to the leaf names, computed with the gate table's forwards."""
        return _evaluate(self, env)


# ---------------------------------------------------------------------------------------------
# constructors (with simplification)
# ---------------------------------------------------------------------------------------------


def sym(name: str, shape: tuple[int, ...] | None = None) -> Sym:
    """A named leaf; ``shape`` (optional) lets shape-dependent rules evaluate."""
    return Sym("name", value=name, shape=None if shape is None else tuple(shape))


def const(value: Any) -> Sym:
    """A number as an expression (arrays: a 0-d array's number; larger arrays are kept whole)."""
    if isinstance(value, Sym):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Sym("num", value=bool(value), shape=())
    if is_number(value):
        return Sym("num", value=_num_value(value), shape=())
    arr = np.asarray(value)
    return Sym("array", value=arr, shape=arr.shape)


def _wrap(v: Any) -> Sym:
    return v if isinstance(v, Sym) else const(v)


def _is(v: Sym, number: float) -> bool:
    if v.op != "num" or isinstance(v.value, bool):
        return False
    try:
        return bool(v.value == number)
    except TypeError:
        return False


def _bshape(*args: Sym) -> tuple[int, ...] | None:
    shapes = [a._shape for a in args]
    if any(s is None for s in shapes):
        return None
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError as e:
        raise ValueError(f"shapes {' and '.join(map(str, shapes))} do not broadcast: {e}") from None


_FOLD: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
}


def binary(op: str, a: Any, b: Any) -> Sym:
    """``a <op> b`` with the simplifications listed in the module docstring."""
    a, b = _wrap(a), _wrap(b)
    if a.op == "num" and b.op == "num" and op in _FOLD:
        try:
            folded = _FOLD[op](a.value, b.value)
            if not isinstance(folded, complex) and (not isinstance(folded, float) or math.isfinite(folded)):
                return const(folded)
        except ZeroDivisionError:
            # as NumPy computes it (1/0 is inf, 0/0 nan), never an exception in generated code
            with np.errstate(all="ignore"):
                return const(float(_FOLD[op](np.float64(a.value), np.float64(b.value))))
        except (OverflowError, ValueError):
            pass
    if op == "add":
        if _is(a, 0):
            return b
        if _is(b, 0):
            return a
        if b.op == "neg":
            return binary("sub", a, b.args[0])
        if b.op == "num" and not isinstance(b.value, bool) and b.value < 0:
            return binary("sub", a, const(-b.value))
    elif op == "sub":
        if _is(b, 0):
            return a
        if _is(a, 0):
            return neg(b)
        if b.op == "neg":
            return binary("add", a, b.args[0])
        if b.op == "num" and not isinstance(b.value, bool) and b.value < 0:
            return binary("add", a, const(-b.value))
    elif op == "mul":
        if b.op == "num" and a.op != "num":  # numbers first: 2x, not x·2
            a, b = b, a
        if _is(a, 1):
            return b
        if _is(b, 1):
            return a
        if _is(a, -1):
            return neg(b)
        if a.op == "num" and not isinstance(a.value, bool) and b.op == "neg":
            return binary("mul", const(-a.value), b.args[0])
        if a.op == "num" and b.op == "mul" and b.args[0].op == "num":
            return binary("mul", binary("mul", a, b.args[0]), b.args[1])
        if a.op == "neg" and b.op != "num":
            return neg(binary("mul", a.args[0], b))
        if b.op == "neg":
            return neg(binary("mul", a, b.args[0]))
    elif op == "div":
        if _is(b, 1):
            return a
        if a.op == "neg":
            return neg(binary("div", a.args[0], b))
    elif op == "pow":
        if _is(b, 1):
            return a
        if _is(b, 0):
            return const(1)
    if op == "matmul":
        shape = None if a._shape is None or b._shape is None else GATES["matmul"].out_shape([a._shape, b._shape], {})
        return Sym(op, (a, b), shape=shape)
    return Sym(op, (a, b), shape=_bshape(a, b))


def neg(a: Any) -> Sym:
    """``-a``, folding numbers and double negation."""
    a = _wrap(a)
    if a.op == "num" and not isinstance(a.value, bool):
        return const(-a.value)
    if a.op == "neg":
        return a.args[0]
    if a.op == "sub":  # -(p - q) = q - p
        return binary("sub", a.args[1], a.args[0])
    return Sym("neg", (a,), shape=a._shape)


def call(name: str, *args: Any, **params: Any) -> Sym:
    """A call of the gate (or helper) ``name`` on expressions, with keyword parameters."""
    wrapped = tuple(_wrap(a) for a in args)
    return Sym("call", wrapped, value=name, params=params, shape=_call_shape(name, wrapped, params))


# ---------------------------------------------------------------------------------------------
# shape inference (pure Python on shape tuples; never allocates full arrays)
# ---------------------------------------------------------------------------------------------


def _getitem_shape(shape: tuple[int, ...] | None, index: Any) -> tuple[int, ...] | None:
    if shape is None:
        return None
    return np.broadcast_to(np.zeros((), dtype=np.int8), shape)[index].shape


#: calls of a few array constructors that rules and generated code use besides the gates
_CONSTRUCTORS = {"zeros", "zeros_like", "full_like"}


def _call_shape(name: str, args: tuple[Sym, ...], params: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of a call, from the gate's own shape rule (None while an input's shape is unknown)."""
    if name == "zeros":
        return tuple(params["shape"])
    if name in ("zeros_like", "full_like"):
        return args[0]._shape
    gate = GATES.get(name)
    if gate is None or any(a._shape is None for a in args):
        return None
    return gate.out_shape([a._shape for a in args], params)


# ---------------------------------------------------------------------------------------------
# the ops namespace: one function per gate, by gate name and by NumPy's name
# ---------------------------------------------------------------------------------------------


def _make_op(gate: Gate) -> Callable[..., Sym]:
    """The symbolic function of a gate, called with NumPy's convention (as rules call ``m.<name>``)."""
    name = gate.name
    if name in _ARITH_GATE:
        op = _ARITH_GATE[name]
        return lambda a, b: binary(op, a, b)
    if name in _COMPARE_GATE:
        op = _COMPARE_GATE[name]
        return lambda a, b: binary(op, a, b)
    if name == "neg":
        return neg
    if name == "identity":
        return lambda a: _wrap(a)

    def fn(*args: Any, **kwargs: Any) -> Sym:
        inputs, params = split_call(gate, args, kwargs, f"ops.{name}")
        axis = params.get("axis")
        if gate.kind == REDUCTION and axis is not None and inputs and isinstance(inputs[0], Sym) \
                and inputs[0].known_shape is not None:  # one spelling of each axis, for printing and keys
            axes = normalize_axis(axis, len(inputs[0].known_shape))
            params["axis"] = axes[0] if len(axes) == 1 else axes
        for k in ("shape", "axes", "window_shape"):
            if isinstance(params.get(k), list):
                params[k] = tuple(params[k])
        if isinstance(params.get("shape"), int):
            params["shape"] = (params["shape"],)
        return call(name, *inputs, **params)

    return fn


class _Ops(SimpleNamespace):
    """The symbolic ops namespace: one function per gate (by its name and its NumPy names), found in
    the table when first used, so gates registered later are covered too."""

    def __getattr__(self, name: str) -> Any:
        gate = GATES.get(name)
        if gate is None:
            gate = next((g for g in GATES.values() if any(n.split(".")[-1] == name for n in g.numpy)), None)
        if gate is None:
            raise AttributeError(f"the symbolic ops namespace has no {name!r} (no gate of that name)")
        fn = _make_op(gate)
        setattr(self, name, fn)
        return fn


def _build_ops() -> SimpleNamespace:
    ns = _Ops()
    aliases = {"negative": "neg", "subtract": "sub", "multiply": "mul", "divide": "div", "power": "pow",
               "positive": "identity"}
    for alias, name in aliases.items():
        setattr(ns, alias, getattr(ns, name))
    ns.zeros = lambda shape, dtype=None: call("zeros", shape=tuple(shape))
    ns.namespace_kind = "symbolic"
    ns.apply_gate = lambda gate, *args, **params: call(gate.name, *args, **params)
    ns.ones_like = lambda a, dtype=None: call("full_like", a, fill=1)
    ns.zeros_like = lambda a, dtype=None: call("zeros_like", a)
    return ns


#: The symbolic ops namespace: call a gate rule with ``m=ops`` and :class:`Sym` inputs.
ops = _build_ops()
_EQUATION = None  # set below, once the printers exist


# ---------------------------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------------------------

_ONE_LETTER = re.compile(r"[A-Za-zα-ω](?![A-Za-z0-9_α-ω])")  # 2x and 3z², but 2·t3
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def index_text(index: Any) -> str:
    """An index as it is written inside brackets: ``0, 1:3``, ``..., None``, ``[0, 2]``."""
    def one(i: Any) -> str:
        if i is Ellipsis:
            return "..."
        if i is None:
            return "None"
        if isinstance(i, slice):
            parts = ["" if v is None else str(v) for v in (i.start, i.stop, i.step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
        if isinstance(i, np.ndarray):
            return repr(i.tolist()) if i.size <= 8 else f"<{i.dtype} index of shape {i.shape}>"
        return repr(i)

    if isinstance(index, tuple):
        return ", ".join(one(i) for i in index) if index else "()"
    return one(index)


def _is_reversal(e: Sym) -> bool:
    """A transpose that reverses all axes (``xᵀ``, ``x.T``)."""
    if e.value != "transpose":
        return False
    axes = e.params.get("axes")
    if axes is None:
        return True
    return tuple(axes) == tuple(range(len(axes) - 1, -1, -1))


class MathPrinter:
    """Prints expressions for people: ``2x``, ``x²``, ``out·(1 − out)``, ``cos(y)``, ``[x > 0]``."""

    mul = "·"
    minus = "−"
    compare = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "eq": "=", "ne": "≠"}

    def number(self, v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
            return str(int(v)).replace("-", self.minus)
        return format(v, ".6g").replace("-", self.minus)

    def array(self, v: np.ndarray) -> str:
        return np.array2string(v, separator=", ", threshold=8) if v.size <= 8 else f"<array {v.shape}>"

    def render(self, e: Any) -> tuple[str, int]:
        """(text, binding strength) of an expression; numbers print inline."""
        e = _wrap(e)
        if e.op == "name":
            return str(e.value), _ATOM
        if e.op == "num":
            t = self.number(e.value)
            return t, (_UNARY if t.startswith(("-", self.minus)) else _ATOM)
        if e.op == "array":
            return self.array(e.value), _ATOM
        if e.op == "neg":  # -(a·b) reads -a·b: the same number (negation is exact)
            return self.minus + self.wrap(e.args[0], _MUL), _MUL
        if e.op in _COMPARE:
            a, b = self.render(e.args[0])[0], self.render(e.args[1])[0]
            return self.comparison(a, self.compare[e.op], b)
        if e.op == "getitem":
            return f"{self.wrap(e.args[0], _ATOM)}[{index_text(e.params['index'])}]", _ATOM
        if e.op == "call":
            return self.call(e)
        return self.binary(e)

    def comparison(self, a: str, op: str, b: str) -> tuple[str, int]:
        return f"[{a} {op} {b}]", _ATOM  # Iverson bracket: 1 where it holds, else 0

    def wrap(self, e: Any, need: int, right: bool = False) -> str:
        text, p = self.render(e)
        if p < need or (right and p == need):
            return f"({text})"
        return text

    def binary(self, e: Sym) -> tuple[str, int]:
        a, b = e.args
        op = e.op
        p = _BINARY[op]
        if op == "pow":
            base = self.wrap(a, _POW + 1)
            if b.op == "num" and isinstance(b.value, (int, float)) and float(b.value).is_integer() \
                    and abs(b.value) < 100:
                return base + str(int(b.value)).translate(_SUPERSCRIPT), _POW
            return f"{base}^{self.wrap(b, _POW)}", _POW
        left = self.wrap(a, p)
        right = self.wrap(b, p, right=op in ("sub", "div", "mul", "matmul"))
        if op == "mul":
            if a.op == "num" and _ONE_LETTER.match(right) and not left[-1:].isalpha() and b.op != "call":
                return f"{left}{right}", p  # 2x, 3z²
            return f"{left}{self.mul}{right}", p
        sym_ = {"add": " + ", "sub": f" {self.minus} ", "div": "/", "matmul": " @ "}[op]
        if op == "div" and (" " in left or " " in right):
            sym_ = " / "
        return f"{left}{sym_}{right}", p

    def call(self, e: Sym) -> tuple[str, int]:
        name = e.value
        gate = GATES.get(name)
        if _is_reversal(e):
            return self.wrap(e.args[0], _ATOM) + "ᵀ", _POW
        if gate is None:
            args = [self.render(a)[0] for a in e.args]
            args += [f"{k}={self.param(k, v)}" for k, v in e.params.items()]
            return f"{self.call_name(name)}({', '.join(args)})", _ATOM
        return self.fill(gate.fmt, e.args, gate, e.params)

    def call_name(self, name: str) -> str:
        return {"log": "ln", "neg": "negative"}.get(name, name)

    def param(self, key: str, value: Any, enclosed: bool = False) -> str:
        """A parameter's value as it reads in this style (``enclosed``: inside brackets already)."""
        if key in ("index", "indices"):
            return index_text(value)
        if isinstance(value, np.ndarray):
            return self.array(value)
        return repr(value)

    def fill(self, fmt: str, args: tuple[Sym, ...], gate: Gate | None = None,
             params: dict[str, Any] | None = None) -> tuple[str, int]:
        """Fill a gate's display ``fmt`` with operands, bracketing those that would read wrongly."""
        if re.fullmatch(r"\{\d+\}", fmt):  # the gate reads as one of its operands (a guard)
            return self.render(args[int(fmt[1:-1])])

        def operand(k: int, enclosed: bool) -> str:
            return self.render(args[k])[0] if enclosed else self.wrap(args[k], _ATOM)

        out = fill_template(fmt, operand, len(args), params or {}, gate, self.param)
        bare = fmt.startswith("{") or fmt.endswith("}") or fmt.startswith("-")
        return out, (_UNARY if fmt.startswith("-") else (_POW if bare else _ATOM))


_PLACE = re.compile(r"\{(\w+)\}")


def fill_template(template: str, operand: Callable[[int, bool], str], n: int, params: dict[str, Any],
                  gate: Gate | None, param: Callable[[str, Any, bool], str], code: bool = False) -> str:
    """A gate's template filled in: ``{0}``, ``{1}`` are operands (``operand(k, enclosed)`` renders
    one, told whether brackets or commas already enclose it), ``{xs}`` all operands, ``{name}`` a
    param. Params the template does not name are appended as ``key=value`` where they differ from the
    gate's defaults: inside the call's parentheses, or after it in brackets (``xᵀ  [axes=(1, 0)]``)."""
    used: set[str] = set()
    pieces: list[str] = []
    pos = 0
    for mt in _PLACE.finditer(template):
        pieces.append(template[pos:mt.start()])
        key = mt.group(1)
        before = template[:mt.start()].rstrip(" ")[-1:]
        after = template[mt.end():].lstrip(" ")[:1]
        enclosed = before in ("(", ",", "|", "[") and after in (")", ",", "|", "]")
        if key.isdigit():
            pieces.append(operand(int(key), enclosed))
        elif key == "xs":
            pieces.append(", ".join(operand(k, True) for k in range(n)))
        else:
            used.add(key)
            default = gate.params.get(key) if gate is not None else None
            pieces.append(param(key, params.get(key, default), enclosed))
        pos = mt.end()
    pieces.append(template[pos:])
    text = "".join(pieces)
    shown = gate.shown_params(params) if gate is not None else dict(params)
    extra = [f"{k}={param(k, v)}" for k, v in shown.items() if k not in used]
    if extra:
        if text.endswith(")"):
            text = f"{text[:-1]}, {', '.join(extra)})"
        elif not code:
            text = f"{text}  [{', '.join(extra)}]"
    return text


def equation_text(node: Any, bracket_negatives: bool = False) -> str:
    """The right-hand side of a node's staged equation, read with its gate's ``fmt`` and its inputs'
    names (``x + y``, ``exp(a)``, ``c ** -1``, ``sum(t1, axis=1)``). With ``bracket_negatives`` (the
    numbers put in for the names) every negative operand not already enclosed by a call's brackets
    or commas is bracketed: ``(-1) ** 2``, ``(-3) * (-2)``, ``exp(-3)``."""
    gate = node.gate
    if gate is None:
        from .graph import fmt_value

        return fmt_value(node.value)
    names = [i.name for i in node.inputs]

    def operand(k: int, enclosed: bool) -> str:
        name = names[k]
        if not name.startswith("-"):
            return name
        if bracket_negatives:  # -1 ** 2 is -1 in Python: a number put in is bracketed unless enclosed
            return name if enclosed else f"({name})"
        at = gate.fmt.find("{" + str(k) + "}")
        before = gate.fmt[:at].rstrip()
        if before and before[-1] not in "(,*[":  # x - (-2), not x - -2
            return f"({name})"
        return name

    return fill_template(gate.fmt, operand, len(names), dict(node.params), gate, _EQUATION.param)


class NumpyPrinter(MathPrinter):
    """Prints expressions as Python/NumPy code: ``2 * x``, ``x ** 2``, ``np.cos(y)``, ``(x > 0)``."""

    mul = " * "
    minus = "-"
    compare = _COMPARE

    #: gate names whose NumPy function has another name
    numpy_names = {"neg": "negative", "identity": "positive", "max": "max", "min": "min"}

    def __init__(self, np_prefix: str = "np") -> None:
        self.prefix = np_prefix + "." if np_prefix else ""

    def number(self, v: Any) -> str:
        if isinstance(v, bool):
            return repr(v)
        if isinstance(v, float) and not math.isfinite(v):
            return f"{self.prefix}inf" if v > 0 else (f"-{self.prefix}inf" if v < 0 else f"{self.prefix}nan")
        return repr(v)

    def array(self, v: np.ndarray) -> str:
        return f"{self.prefix}array({self.elements(v.tolist())})"

    def elements(self, v: Any) -> str:
        """An array's nested list as source, its infinities and NaN as NumPy's names (``np.nan``)."""
        if isinstance(v, list):
            return "[" + ", ".join(self.elements(x) for x in v) + "]"
        return self.number(v)

    def comparison(self, a: str, op: str, b: str) -> tuple[str, int]:
        return f"{a} {op} {b}", _CMP

    def binary(self, e: Sym) -> tuple[str, int]:
        a, b = e.args
        op = e.op
        p = _BINARY[op]
        if op == "pow":
            return f"{self.wrap(a, _POW + 1)} ** {self.wrap(b, _UNARY)}", _POW
        sym_ = {"add": " + ", "sub": " - ", "mul": " * ", "div": " / ", "matmul": " @ "}[op]
        right = self.wrap(b, p, right=op in ("sub", "div", "mul", "matmul"))
        return f"{self.wrap(a, p)}{sym_}{right}", p

    def render(self, e: Any) -> tuple[str, int]:
        e = _wrap(e)
        if e.op == "neg":
            return "-" + self.wrap(e.args[0], _MUL), _MUL
        if e.op == "num" and not isinstance(e.value, bool) and e.value < 0:
            return self.number(e.value), _UNARY
        return super().render(e)

    def call(self, e: Sym) -> tuple[str, int]:
        name = e.value
        if _is_reversal(e):
            return self.wrap(e.args[0], _ATOM) + ".T", _ATOM
        gate = GATES.get(name)
        args = [self.render(a)[0] for a in e.args]
        if gate is None:
            args += [f"{k}={self.param(k, v)}" for k, v in e.params.items()]
            return f"{self.call_name(name)}({', '.join(args)})", _ATOM
        return self.gate_code(gate, e.args, e.params)

    def gate_code(self, gate: Gate, operands: tuple[Sym, ...], params: dict[str, Any]) -> tuple[str, int]:
        """A gate call as NumPy code: its ``code`` template, else ``np.<name>(inputs, params)``."""
        template = gate.code
        if callable(template):
            return template([self.render(a)[0] for a in operands], params), _ATOM
        if template is None:
            xs = "[{xs}]" if gate.arity is None else ", ".join("{" + str(k) + "}" for k in range(len(operands)))
            template = f"{self.call_name(gate.name)}({xs})"

        def operand(k: int, enclosed: bool) -> str:
            return self.render(operands[k])[0] if enclosed else self.wrap(operands[k], _ATOM)

        text = fill_template(template, operand, len(operands), params, gate, self.param, code=True)
        return text, (_ATOM if text.endswith((")", "]")) or text.endswith(".T") else _MUL)

    def param(self, key: str, value: Any, enclosed: bool = False) -> str:
        if key in ("index", "indices"):
            return _index_code(value)
        if isinstance(value, np.ndarray):
            return self.array(value)
        return repr(value)

    def call_name(self, name: str) -> str:
        """The function a call prints as; subclass to route gates without a NumPy twin (scatter)."""
        gate = GATES.get(name)
        if gate is not None and gate.np_name is not None:
            return self.prefix + gate.np_name
        return self.prefix + self.numpy_names.get(name, name)


class _IndexCode:
    def __init__(self, index: Any) -> None:
        self.index = index

    def __repr__(self) -> str:
        return _index_code(self.index)


def _index_code(index: Any) -> str:
    if isinstance(index, tuple):
        inner = ", ".join(_index_code(i) if not isinstance(i, slice) else f"slice({i.start}, {i.stop}, {i.step})"
                          for i in index)
        return f"({inner}{',' if len(index) == 1 else ''})"
    if isinstance(index, slice):
        return f"slice({index.start}, {index.stop}, {index.step})"
    if isinstance(index, np.ndarray):
        return f"np.array({index.tolist()!r})"
    if index is Ellipsis:
        return "Ellipsis"
    return repr(index)


def to_text(e: Any, style: str = "math", np_prefix: str = "np", printer: MathPrinter | None = None) -> str:
    """Text of an expression (or plain number): ``style`` is ``"math"`` or ``"numpy"``."""
    if printer is None:
        if style == "math":
            printer = MathPrinter()
        elif style == "numpy":
            printer = NumpyPrinter(np_prefix)
        else:
            raise ValueError(f"style must be 'math' or 'numpy', not {style!r}")
    return printer.render(e)[0]


# ---------------------------------------------------------------------------------------------
# evaluation (with the gate table's forwards: the same functions the engine runs)
# ---------------------------------------------------------------------------------------------

_EVAL_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    **{k: v for k, v in _FOLD.items()}, "matmul": lambda a, b: np.matmul(a, b),
}


def _evaluate(root: Sym, env: dict[str, Any]) -> Any:
    from . import backend

    values: dict[int, Any] = {}
    stack: list[tuple[Sym, bool]] = [(root, False)]
    while stack:
        e, ready = stack.pop()
        if id(e) in values:
            continue
        if not ready:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if id(a) not in values)
            continue
        if e.op == "name":
            if e.value not in env:
                raise KeyError(f"no value given for {e.value!r}")
            v = env[e.value]
        elif e.op in ("num", "array"):
            v = e.value
        else:
            args = [values[id(a)] for a in e.args]
            if e.op == "neg":
                v = backend.xp.negative(args[0])
            elif e.op in _EVAL_BINARY:
                v = _EVAL_BINARY[e.op](*args)
            elif e.op == "getitem":
                v = args[0][e.params["index"]]
            elif e.value == "zeros":
                v = backend.xp.zeros(e.params["shape"])
            elif e.value == "zeros_like":
                v = backend.xp.zeros_like(args[0])
            elif e.value == "full_like":
                v = backend.xp.full_like(args[0], e.params["fill"])
            else:
                v = GATES[e.value].fn(*args, **e.params)
        values[id(e)] = v
    return values[id(root)]


class _EquationPrinter(MathPrinter):
    """Params as a staged equation shows them (indices as written inside brackets)."""


_EQUATION = _EquationPrinter()
