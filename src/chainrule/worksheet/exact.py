"""Exact answers with sympy (the ``exact`` extra), from the gate table's own rules.

Every gate's forward and derivative rule is a function of an ops namespace ``m`` (see
:mod:`chainrule.gates`). :func:`namespace` builds one whose functions are sympy's, generically
from the table: a gate's NumPy name is looked up in sympy (``exp``, ``log``, ``sin``, ``sqrt``,
``tanh``, ...), the arithmetic NumPy names map to Python's operators, and a composite gate without
a sympy twin (sigmoid, relu) is either expanded through its own ``expand`` or kept whole as an
opaque function (``σ(2)``), whose local rule is again the gate's (``out·(1 − out)``). No derivative
is written in this module: the values and gradients of a traced graph come from running the rules
on exact numbers (:func:`exact_graph`), and the derivation's algebra from running them on symbols.

Printing follows a teaching assistant's hand: ``4 + 4e``, ``4/e + 4``, ``σ(2)(1 − σ(2))``,
``e^(−x)/(1 + e^(−x))²``; LaTeX through sympy's printer with ``\\ln`` and ``\\sigma``. Every exact
value is checked against the engine's decimal before it is shown.

sympy is imported when this module is, and this module only when exact answers are asked for.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

try:
    import sympy as sp
    from sympy.printing.latex import LatexPrinter
    from sympy.printing.precedence import PRECEDENCE, precedence
    from sympy.printing.str import StrPrinter
except ImportError as e:  # pragma: no cover - exercised by the CLI's message test
    raise ImportError("exact answers need sympy: pip install 'chainrule[exact]'") from e

from ..expr import gate_of, parse
from ..gates import GATES
from ..latex import MATH_SYMBOLS
from ..render import gate_symbol

__all__ = ["Exact", "exact_graph", "exact_value", "namespace", "to_latex", "to_text", "recognize", "same"]

# NumPy's names of the functions whose sympy counterpart is spelled differently (the gate table names
# each gate's NumPy function; sympy spells exp, log, sin, cos, tan, sqrt, tanh and sign as NumPy does).
_NUMPY_TO_SYMPY: dict[str, Any] = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "divide": operator.truediv,
    "power": operator.pow, "negative": operator.neg, "positive": operator.pos, "abs": sp.Abs,
    "absolute": sp.Abs, "square": lambda x: x**2, "reciprocal": lambda x: 1 / x, "maximum": sp.Max,
    "minimum": sp.Min, "where": lambda c, a, b: sp.Piecewise((a, c), (b, True)), "greater": sp.Gt,
    "greater_equal": sp.Ge, "less": sp.Lt, "less_equal": sp.Le, "equal": sp.Eq, "not_equal": sp.Ne,
    # NumPy names sympy spells otherwise (the rest, exp, log, sin, ..., share the name)
    "fabs": sp.Abs, "float_power": operator.pow, "remainder": sp.Mod,
    "fmod": lambda x, y: x - y * sp.sign(x / y) * sp.floor(sp.Abs(x / y)), "exp2": lambda x: 2**x,
    "expm1": lambda x: sp.exp(x) - 1, "log2": lambda x: sp.log(x, 2), "log10": lambda x: sp.log(x, 10),
    "log1p": lambda x: sp.log(1 + x), "logaddexp": lambda x, y: sp.log(sp.exp(x) + sp.exp(y)),
    "logaddexp2": lambda x, y: sp.log(2**x + 2**y, 2), "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan,
    "arctan2": sp.atan2, "hypot": lambda x, y: sp.sqrt(x**2 + y**2), "arcsinh": sp.asinh, "arccosh": sp.acosh,
    "arctanh": sp.atanh, "deg2rad": lambda x: x * sp.pi / 180, "rad2deg": lambda x: x * 180 / sp.pi,
    "sinc": lambda x: sp.sin(sp.pi * x) / (sp.pi * x), "cbrt": sp.cbrt, "fmax": sp.Max, "fmin": sp.Min,
    "floor": sp.floor, "ceil": sp.ceiling, "trunc": lambda x: sp.sign(x) * sp.floor(sp.Abs(x)),
    "logical_not": sp.Not, "isfinite": lambda x: sp.true, "isnan": lambda x: sp.false, "isinf": lambda x: sp.false,
}

_OPAQUE: dict[str, Any] = {}  # gate name -> its sympy function (kept whole), made once
_EXPANDED: SimpleNamespace | None = None  # the namespace whose composites are written out
_TWINS: dict[str, Any] = {}


def _special_twins() -> dict[str, Any]:
    """The special-function gates' sympy twins (they have no NumPy name to find them by)."""
    if not _TWINS:
        from ..gates.special import sympy_twins

        _TWINS.update(sympy_twins(sp))
    return _TWINS


def opaque(gate_name: str) -> Any:
    """The sympy function standing for a composite gate kept whole (``sigmoid(2)`` prints ``σ(2)``).
    At numbers where the gate's own expansion is no longer than its arguments it takes that value
    (``relu(4)`` is 4, ``relu(−1)`` is 0), as sympy's ``Max(4, 0)`` would; ``σ(2)`` stays whole."""
    if gate_name not in _OPAQUE:
        _OPAQUE[gate_name] = type(gate_name, (sp.Function,), {
            "is_real": True, "eval": classmethod(lambda cls, *args: _evaluate_opaque(gate_name, args))})
    return _OPAQUE[gate_name]


def _evaluate_opaque(gate_name: str, args: tuple[Any, ...]) -> Any:
    """The composite at numeric arguments, when its expansion simplifies to something as short as
    the arguments themselves; None (stay whole) otherwise or at symbols."""
    if not all(getattr(a, "is_number", False) for a in args):
        return None
    try:
        value = sp.sympify(GATES[gate_name].expand(_expanded_namespace(), *args))
    except (TypeError, ValueError):
        return None
    return value if sp.count_ops(value) <= sum(sp.count_ops(a) for a in args) else None


def _mask(b: Any) -> Any:
    """A truth value as a number in a rule's arithmetic (the engine's ``mask`` hook): a comparison
    of numbers (max's ``x > y`` at 4 and 0) is decided, so it counts 1 or 0; a comparison of symbols
    is left as it is, and :func:`_exact_number` says it has no single formula."""
    if isinstance(b, (bool, np.bool_)) or b in (sp.true, sp.false):
        return sp.Integer(1 if bool(b) else 0)
    return b


def namespace(expand: bool = False) -> SimpleNamespace:
    """The ops namespace whose functions are sympy's, one per gate (by gate name and NumPy name).
    Composite gates without a sympy twin are opaque functions, or, with ``expand``, their expansion."""
    ns = SimpleNamespace(mask=_mask)
    for gate in GATES.values():
        fn = _sympy_function(gate, ns, expand)
        if fn is None:
            continue
        setattr(ns, gate.name, fn)
        if gate.np_name:
            setattr(ns, gate.np_name, fn)
    return ns


def _sympy_function(gate: Any, ns: SimpleNamespace, expand: bool) -> Any:
    twin = _special_twins().get(gate.name)
    if twin is not None:
        return twin
    if gate.np_name is not None:
        fn = _NUMPY_TO_SYMPY.get(gate.np_name) or getattr(sp, gate.np_name, None)
        if fn is not None:
            return fn
    if gate.expand is not None and gate.local is not None:
        if expand:
            return lambda *args, _g=gate: _g.expand(ns, *args)
        return opaque(gate.name)
    return None


def _expanded_namespace() -> SimpleNamespace:
    global _EXPANDED
    if _EXPANDED is None:
        _EXPANDED = namespace(expand=True)
    return _EXPANDED


def expanded(e: Any) -> Any:
    """``e`` with every opaque composite written out by the gate's own expansion."""
    for name, fn in _OPAQUE.items():
        e = e.replace(fn, lambda *args, _n=name: GATES[_n].expand(_expanded_namespace(), *args))
    return e


def same(a: Any, b: Any) -> bool:
    """Whether two expressions are equal (their difference simplifies to zero)."""
    return sp.simplify(expanded(a) - expanded(b)) == 0


# ---------------------------------------------------------------------------------------------
# numbers typed by people, read exactly (checked by chainrule's parser, never evaluated as Python)
# ---------------------------------------------------------------------------------------------


def exact_value(text: str) -> Any:
    """A value as written (``2``, ``0.2``, ``e``, ``pi/2``, ``sqrt(2)``) as an exact sympy number."""
    expr = parse(text)
    if expr.variables or len(expr.statements) != 1:
        raise ValueError(f"{text!r} is not a single number")
    return _read(expr.statements[0].node, namespace())


def _read(node: ast.AST, ns: SimpleNamespace) -> Any:
    if isinstance(node, ast.Constant):
        return sp.Rational(str(node.value)) if not isinstance(node.value, bool) else sp.Integer(int(node.value))
    if isinstance(node, ast.Name):
        return {"pi": sp.pi, "e": sp.E}[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _read(node.operand, ns)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.Pow: operator.pow}
        return ops[type(node.op)](_read(node.left, ns), _read(node.right, ns))
    if isinstance(node, ast.Call):
        name = gate_of(node.func.id)  # the gate's name (max and min fold into maximum, minimum)
        fn = getattr(ns, name, None) if name is not None else None
        args = [_read(a, ns) for a in node.args]
        if fn is None or (len(args) == 1 and name in ("maximum", "minimum")):
            raise ValueError(f"{node.func.id}(...) has no exact value here")
        return fn(*args)
    raise ValueError(f"cannot read {ast.unparse(node)} exactly")


def _const(v: Any) -> Any:
    """A constant of the graph (a float) as the exact number it stands for (0.5 → 1/2)."""
    a = np.asarray(v)
    if a.ndim:
        raise ValueError("exact answers are for scalar problems; this one has array constants")
    x = a.item()
    if isinstance(x, (bool, np.bool_)):
        return sp.Integer(int(x))
    if float(x).is_integer():
        return sp.Integer(int(x))
    return sp.nsimplify(float(x), [sp.pi, sp.E], rational=False)


# ---------------------------------------------------------------------------------------------
# a traced graph, exactly
# ---------------------------------------------------------------------------------------------


@dataclass
class ExactGraph:
    """Exact value and gradient of every node of a graph, by node name."""

    values: dict[str, Any]
    grads: dict[str, Any]


def exact_graph(graph: Any, inputs: dict[str, Any], ns: SimpleNamespace | None = None) -> ExactGraph:
    """Run the graph's gates forward and their local rules backward on exact values (or symbols):
    ``inputs`` maps each input's name to a sympy number or symbol."""
    ns = ns or namespace()
    val: dict[int, Any] = {}
    for n in graph.nodes:
        if n.kind == "input":
            val[id(n)] = inputs[n.name]
        elif n.kind == "const":
            val[id(n)] = _const(n.value)
        else:
            fn = getattr(ns, n.gate.name, None)
            if fn is None or n.gate.kind not in ("elementwise", "nondiff"):
                raise ValueError(f"exact answers are for elementwise functions; the {n.gate.name} gate is not")
            try:
                val[id(n)] = _exact_number(fn(*[val[id(i)] for i in n.inputs], **n.params))
            except TypeError:
                raise ValueError(f"the {_gate_words(n.gate)} has no exact form here") from None
    grad: dict[int, Any] = {id(graph.output): sp.Integer(1)}
    for n in reversed(graph.ops):
        g = grad.get(id(n))
        if g is None or not n.gate.differentiable or n.gate.local is None:
            continue
        args = [val[id(i)] for i in n.inputs]
        for k, inp in enumerate(n.inputs):
            rule = n.gate.local[k]
            if rule is None or inp.kind == "const":
                continue
            try:
                local = _exact_number(rule(ns, *args, val[id(n)]))
                grad[id(inp)] = grad.get(id(inp), 0) + g * local
            except TypeError:  # a comparison of symbols (max's x > y) is logic, not a number
                if all(getattr(a, "is_number", False) for a in args):
                    raise ValueError(f"the {_gate_words(n.gate)}'s local gradient has no exact form here") from None
                raise ValueError(f"the {_gate_words(n.gate)}'s local gradient depends on how its inputs compare, "
                                 "so it has no single formula in terms of them") from None
    names = {id(n): n.name for n in graph.nodes if n.kind != "const"}
    return ExactGraph({names[k]: v for k, v in val.items() if k in names},
                      {names[k]: v for k, v in grad.items() if k in names} | {n.name: grad.get(id(n), sp.Integer(0))
                                                                               for n in graph.inputs})


def _gate_words(gate: Any) -> str:
    """How the gate's own explanation names it (``max gate`` for maximum)."""
    head = gate.explain.split(":")[0]
    return head if head.endswith(" gate") else f"{gate.name} gate"


def _exact_number(e: Any) -> Any:
    """A rule's result made exact: its decimal literals as fractions (sqrt's ``0.5 / out`` →
    ``1/(2 out)``), a comparison that holds or not (relu's ``x > 0`` at a number) as 1 or 0."""
    if isinstance(e, (bool, np.bool_)) or e in (sp.true, sp.false):
        return sp.Integer(1 if bool(e) else 0)
    e = sp.sympify(e)
    if isinstance(e, sp.logic.boolalg.BooleanFunction) or e.is_Relational:  # (a Symbol is a Boolean too)
        raise TypeError("a comparison of symbols")
    return e.xreplace({f: sp.Rational(repr(float(f))) for f in e.atoms(sp.Float)})


def numeric(e: Any) -> float:
    """The expression's value as a float (composites written out)."""
    return float(sp.N(expanded(e), 30))


def agrees(e: Any, value: Any) -> bool:
    """Whether an exact value equals the engine's decimal (to float64 rounding)."""
    try:
        return bool(np.isclose(numeric(e), float(np.asarray(value)), rtol=1e-9, atol=1e-12))
    except (TypeError, ValueError):
        return False


def recognize(f: Any, x: Any) -> tuple[str, Any, Any] | None:
    """The composite gate a function of one symbol ``x`` is, ``(gate name, the gate at x, its local
    rule at x)``: sigmoid for 1/(1 + e^(−x)), say, whose rule the table gives as ``out·(1 − out)``, so
    ``("sigmoid", σ(x), σ(x)(1 − σ(x)))``."""
    ns_x = namespace(expand=True)
    for gate in GATES.values():
        if gate.expand is None or gate.local is None or len(gate.local) != 1:
            continue
        try:
            if sp.simplify(expanded(f) - gate.expand(ns_x, x)) != 0:
                continue
        except (TypeError, ValueError, AttributeError):
            continue
        out = getattr(namespace(), gate.name)(x)
        return gate.name, out, gate.local[0](namespace(), x, out)
    return None


# ---------------------------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------------------------

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _display_name(gate_name: str) -> str:
    gate = GATES[gate_name]
    return gate_symbol(SimpleNamespace(gate=gate, name=gate_name))  # σ for sigmoid, from its display form


def _split(e: Any) -> tuple[list[Any], list[Any]]:
    """A product's numerator and denominator factors as a person writes them: √2/2 rather than
    1/2·√2, e^(−x)/(1 + e^(−x))² with e^(−x) on top, but 4/e for 4·e⁻¹."""
    coeff, rest = e.as_coeff_Mul()
    num: list[Any] = []
    den: list[Any] = []
    if isinstance(coeff, sp.Rational):
        num += [] if coeff.p == 1 else [sp.Integer(coeff.p)]
        den += [] if coeff.q == 1 else [sp.Integer(coeff.q)]
    elif coeff != 1:
        num.append(coeff)
    for f in sp.Mul.make_args(rest):
        if f.is_Pow and f.exp.is_number and f.exp < 0:
            den.append(sp.Pow(f.base, -f.exp))
        else:
            num.append(f)
    if not den:  # e⁻¹ after a number reads as a division: 4/e
        for f in list(num):
            if isinstance(f, sp.exp) and f.args[0].is_number and f.args[0] < 0 and all(
                    g.is_number and not isinstance(g, sp.exp) for g in num if g is not f):
                num.remove(f)
                den.append(sp.exp(-f.args[0]))
    return num, den


def _factor_order(f: Any) -> tuple[bool, bool]:
    """Numbers first, then atoms and calls, then sums: σ(2)(1 − σ(2)), 4e."""
    return (not f.is_number or not f.is_Rational, f.is_Add)


class _Text(StrPrinter):
    """``4 + 4e``, ``4/e + 4``, ``σ(2)(1 − σ(2))``, ``e^(−x)/(1 + e^(−x))²``, ``√2/2``, ``ln(3/2)``."""

    def _print_Exp1(self, e: Any) -> str:
        return "e"

    def _print_Pi(self, e: Any) -> str:
        return "π"

    def _print_exp(self, e: Any) -> str:
        a = e.args[0]
        if a == 1:
            return "e"
        if a.is_Integer:
            return "e" + str(a).translate(_SUPERSCRIPT)
        return f"e^({self._print(a)})"

    def _print_log(self, e: Any) -> str:
        return f"ln({self._print(e.args[0])})"

    def _print_Function(self, e: Any) -> str:
        name = type(e).__name__
        if name in _OPAQUE:
            return f"{_display_name(name)}({', '.join(self._print(a) for a in e.args)})"
        return super()._print_Function(e)

    def _print_Pow(self, e: Any, rational: bool = False) -> str:
        base, ex = e.args
        if ex == sp.Rational(1, 2):
            b = self._print(base)
            return f"√{b}" if base.is_Atom else f"√({b})"
        if ex.is_Integer and ex < 0:
            return f"1/{self._factor(sp.Pow(base, -ex))}"
        b = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
        if ex.is_Integer:
            return b + str(ex).translate(_SUPERSCRIPT)
        return f"{b}^{self.parenthesize(ex, PRECEDENCE['Pow'], strict=False)}"

    def _factor(self, e: Any) -> str:
        text = self._print(e)
        return f"({text})" if precedence(e) < PRECEDENCE["Mul"] or (e.is_Mul and len(e.args) > 1) else text

    def _print_Mul(self, e: Any) -> str:
        coeff, _ = e.as_coeff_Mul()
        if coeff < 0:
            return "-" + self._print_Mul(-e) if (-e).is_Mul else "-" + self._factor(-e)
        num, den = _split(e)
        top = self._product(num) if num else "1"
        if not den:
            return top
        bottom = self._product(den)
        if len(den) > 1 or (den[0].is_Add or den[0].is_Mul):
            bottom = f"({bottom})" if not bottom.startswith("(") or len(den) > 1 else bottom
        return f"{top}/{bottom}"

    def _product(self, factors: list[Any]) -> str:
        # numbers first, then atoms and calls, then sums in parentheses: σ(2)(1 − σ(2)), 4e
        order = sorted(factors, key=_factor_order)
        out = ""
        for f in order:
            text = self._factor(f)
            if out and out[-1].isdigit() and (text[:1].isdigit() or (len(text) > 1 and text[:2].isalpha())):
                out += "·"  # 2·3, 4·ln(3/2); but 4e
            elif out and not (text.startswith("(") or out[-1].isdigit() or out.endswith(")")) \
                    and not (text[:1].isalpha() or text[:1] in "√πσ"):
                out += "·"
            out += text
        return out


class _Latex(LatexPrinter):
    """sympy's LaTeX, with ``\\ln`` and the composite gates by their symbols (``\\sigma``)."""

    def __init__(self) -> None:
        super().__init__({"ln_notation": True, "mul_symbol": None})

    def _print_Mul(self, e: Any) -> str:
        coeff, _ = e.as_coeff_Mul()
        if coeff < 0:
            return "- " + self._print(-e)
        num, den = _split(e)  # the same split as the text: the two read alike

        def product(fs: list[Any]) -> str:
            parts = []
            for f in sorted(fs, key=_factor_order):
                t = self._print(f)
                parts.append(rf"\left({t}\right)" if f.is_Add and (len(fs) > 1 or den) and fs is num
                             or f.is_Add and len(fs) > 1 else t)
            return " ".join(parts) if parts else "1"

        top = product(num)
        return rf"\frac{{{top}}}{{{product(den)}}}" if den else top

    def _print_Function(self, e: Any, exp: Any = None) -> str:
        name = type(e).__name__
        if name in _OPAQUE:
            sym = _display_name(name)
            head = MATH_SYMBOLS.get(sym, rf"\operatorname{{{sym}}}")
            text = rf"{head}\left({', '.join(self._print(a) for a in e.args)}\right)"
            return f"{text}^{{{exp}}}" if exp is not None else text
        return super()._print_Function(e, exp)


def to_text(e: Any) -> str:
    """An exact expression as a teaching assistant writes it (unicode minus, implicit products)."""
    return _Text().doprint(e).replace(" - ", " − ").replace("-", "−").replace("*", "·")


def to_latex(e: Any) -> str:
    """An exact expression as LaTeX."""
    return _Latex().doprint(e)


@dataclass(frozen=True)
class Exact:
    """One exact answer: the expression, how it reads, its LaTeX, and a second form when the
    gate table gives a simpler one (the sigmoid's ``σ(2)(1 − σ(2))``)."""

    expr: Any
    text: str
    latex: str
    form_text: str = ""
    form_latex: str = ""

    @classmethod
    def of(cls, e: Any, form: Any = None) -> Exact:
        if form is not None and to_text(form) != to_text(e):
            return cls(e, to_text(e), to_latex(e), to_text(form), to_latex(form))
        return cls(e, to_text(e), to_latex(e))

    @property
    def best_text(self) -> str:
        return self.form_text or self.text
