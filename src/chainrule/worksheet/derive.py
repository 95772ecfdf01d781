"""The analytic derivative of a problem, derived stage by stage.

Each stage's local derivative is its gate's own rule, printed on the stage names
(:mod:`chainrule.symbolic`); the chain rule then runs from the output back, each step written as
upstream × local (a value used twice sums its shares), with its number at the inputs. With exact
answers (:mod:`.exact`, sympy), every step is also written in terms of the inputs, and the result
is simplified and, when the whole function is one of the table's composite gates (the four stages
of question 3 are the sigmoid), shown in that gate's own form, ``σ(x)(1 − σ(x))``, after sympy has
checked that the two are equal. Without sympy the same recognition is made numerically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import backend
from .. import latex as L
from ..gates import GATES
from ..graph import Graph, Node, fmt_value
from ..symbolic import MathPrinter, Sym, binary, const, ops, sym

__all__ = ["Derivation", "Line", "derive", "recognize_numerically"]

_GRAD = "∂:"  # stand-in names for ∂out/∂node in the chain's right-hand sides


@dataclass(frozen=True)
class Line:
    text: str
    latex: str


@dataclass
class Derivation:
    """Stages with their local derivatives; the chain from the output back; the results."""

    stages: list[tuple[Line, list[Line]]] = field(default_factory=list)
    chain: list[tuple[Line, Line | None, str]] = field(default_factory=list)  # step, in the inputs, value
    results: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Text(MathPrinter):
    def __init__(self, out: str) -> None:
        self.out = out

    def render(self, e: Any) -> tuple[str, int]:
        if isinstance(e, Sym) and e.op == "name" and str(e.value).startswith(_GRAD):
            return f"∂{self.out}/∂{e.value[len(_GRAD):]}", 100
        return super().render(e)


class _Latex(L.LatexPrinter):
    def __init__(self, out: str) -> None:
        self.out = out

    def render(self, e: Any) -> tuple[str, int]:
        if isinstance(e, Sym) and e.op == "name" and str(e.value).startswith(_GRAD):
            return _dlatex(self.out, e.value[len(_GRAD):]), 100
        return super().render(e)


def _dtext(out: str, n: str) -> str:
    return f"∂{out}/∂{n}"


def _dlatex(out: str, n: str) -> str:
    return rf"\frac{{\partial {L.name(out)}}}{{\partial {L.name(n)}}}"


def _stand_in(n: Node) -> Any:
    if n.kind == "const" and np.ndim(n.value) == 0:
        v = np.asarray(n.value).item()
        return const(int(v) if float(v).is_integer() else v)
    return sym(n.name)


def forward_sym(n: Node) -> Sym:
    """A stage's right-hand side on the names of its operands, as the gate computes it."""
    return getattr(ops, n.gate.name)(*[_stand_in(i) for i in n.inputs], **n.params)


def derive(graph: Graph, exact: Any = None, value_texts: dict[str, str] | None = None) -> Derivation:
    """The derivation of ``graph``'s gradients (see the module docstring); ``exact`` is the
    :mod:`.exact` module when exact answers are on."""
    out = graph.output.name
    text, tex = _Text(out), _Latex(out)
    d = Derivation()
    consumers: dict[int, list[tuple[Node, int]]] = {}
    for n in graph.ops:
        for k, i in enumerate(n.inputs):
            consumers.setdefault(id(i), []).append((n, k))
    # ---- stage by stage ----
    for n in graph.ops:
        eq = forward_sym(n)
        locs = []
        for k, i in enumerate(n.inputs):
            rule = n.gate.local[k] if n.gate.local else None
            if rule is None or i.kind == "const" or not n.gate.differentiable:
                continue
            r = rule(ops, *[_stand_in(j) for j in n.inputs], sym(n.name))
            locs.append(Line(f"∂{n.name}/∂{i.name} = {text.render(r)[0]}",
                             rf"\frac{{\partial {L.name(n.name)}}}{{\partial {L.name(i.name)}}} = {tex.render(r)[0]}"))
        d.stages.append((Line(f"{n.name} = {text.render(eq)[0]}", f"{L.name(n.name)} = {tex.render(eq)[0]}"), locs))
    # ---- in terms of the inputs (exact) ----
    symbolic = None
    if exact is not None:
        import sympy as sp

        symbols = {n.name: sp.Symbol(n.name, real=True) for n in graph.inputs}
        try:
            symbolic = exact.exact_graph(graph, symbols)
        except ValueError as e:
            d.notes.append(f"No derivation in terms of the inputs: {e}.")
    # ---- the chain, from the output back ----
    for n in [*reversed(graph.ops), *graph.inputs]:
        if n is graph.output:
            continue
        terms: Sym | None = None
        for c, k in consumers.get(id(n), []):
            rule = c.gate.local[k] if c.gate.local else None
            if rule is None or not c.gate.differentiable:
                continue
            up = const(1) if c is graph.output else sym(_GRAD + c.name)
            term = binary("mul", up, rule(ops, *[_stand_in(j) for j in c.inputs], sym(c.name)))
            terms = term if terms is None else binary("add", terms, term)
        if terms is None:
            continue
        step = Line(f"{_dtext(out, n.name)} = {text.render(terms)[0]}",
                    f"{_dlatex(out, n.name)} = {tex.render(terms)[0]}")
        in_inputs = None
        if symbolic is not None:
            g = symbolic.grads[n.name]
            in_inputs = Line(exact.to_text(g), exact.to_latex(g))
        d.chain.append((step, in_inputs, fmt_value(n.grad)))
    # ---- results ----
    if symbolic is not None:
        _exact_results(d, graph, exact, symbolic)
    else:
        _numeric_results(d, graph)
    return d


def _exact_results(d: Derivation, graph: Graph, exact: Any, symbolic: Any) -> None:
    import sympy as sp

    out = graph.output.name
    f = symbolic.values[out]
    for n in graph.inputs:
        g = symbolic.grads[n.name]
        simple = sp.simplify(exact.expanded(g))
        lines = [exact.to_text(g)]
        latex_lines = [exact.to_latex(g)]
        new_functions = {type(a) for a in simple.atoms(sp.Function)} - {type(a) for a in g.atoms(sp.Function)}
        if not new_functions and exact.to_text(simple) not in lines and len(exact.to_text(simple)) < len(lines[0]):
            lines.append(exact.to_text(simple))
            latex_lines.append(exact.to_latex(simple))
        d.results.append(Line(f"{_dtext(out, n.name)} = " + " = ".join(lines),
                              f"{_dlatex(out, n.name)} = " + " = ".join(latex_lines)))
    if len(graph.inputs) == 1:
        x = sp.Symbol(graph.inputs[0].name, real=True)
        found = exact.recognize(f, x)
        if found is not None and exact.same(symbolic.grads[x.name], found[2]):
            gate, fx, rule = found
            d.results.append(Line(f"{_dtext(out, x.name)} = {exact.to_text(rule)}",
                                  f"{_dlatex(out, x.name)} = {exact.to_latex(rule)}"))
            d.notes.append(f"The stages compute {exact.to_text(fx)} = {exact.to_text(exact.expanded(fx))}, the "
                           f"{gate} gate, and sympy confirms that the chain rule's product equals the {gate} gate's "
                           f"own rule, {exact.to_text(rule)}.")


def recognize_numerically(graph: Graph) -> tuple[str, str, float] | None:
    """For a function of one input: the composite gate it computes (compared at test points), its
    rule printed on ``σ(x)``-style names, and the rule's value at the input."""
    if len(graph.inputs) != 1 or np.ndim(graph.inputs[0].value) != 0:
        return None
    x0 = float(graph.inputs[0].value)
    pts = np.array([x0, -1.7, -0.3, 0.4, 1.3, 2.9])
    with np.errstate(all="ignore"):
        try:
            fn_vals = _replay(graph, pts)
        except (ValueError, TypeError, ArithmeticError):
            return None
        for gate in GATES.values():
            if gate.expand is None or gate.local is None or len(gate.local) != 1:
                continue
            want = gate.fn(pts)
            if np.all(np.isfinite(fn_vals)) and np.allclose(fn_vals, want, rtol=1e-12, atol=1e-14):
                name = graph.inputs[0].name
                fmt = gate.fmt.replace("{0}", name)
                rule = gate.local[0](ops, sym(name), sym(fmt))
                value = gate.local[0](backend.array_ops, np.float64(x0), gate.fn(np.float64(x0)))
                return gate.name, f"{MathPrinter().render(rule)[0]}", float(value)
    return None


def _replay(graph: Graph, x: Any) -> np.ndarray:
    """The graph's forward pass at other values of its one input, with the gates' own forwards."""
    vals: dict[int, Any] = {id(graph.inputs[0]): x}
    for n in graph.nodes:
        if n.kind == "const":
            vals[id(n)] = n.value
        elif n.kind == "op":
            vals[id(n)] = n.gate.fn(*[vals[id(i)] for i in n.inputs], **n.params)
    return np.asarray(vals[id(graph.output)])


def _numeric_results(d: Derivation, graph: Graph) -> None:
    out = graph.output.name
    for n in graph.inputs:
        d.results.append(Line(f"{_dtext(out, n.name)} = {fmt_value(n.grad)}",
                              f"{_dlatex(out, n.name)} = {L.math(fmt_value(n.grad))}"))
    found = recognize_numerically(graph)
    if found is not None:
        gate, rule, value = found
        x = graph.inputs[0].name
        d.notes.append(f"These stages compute the {gate} gate ({GATES[gate].fmt.replace('{0}', x)}; they agree "
                       f"with it at test points), whose own rule gives the same: ∂{out}/∂{x} = {rule} = "
                       f"{fmt_value(value)}. For the simplification step by step, run with --exact.")
