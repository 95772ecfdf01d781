"""Solving one problem of a worksheet: trace it, answer each part it asks for, check the answers.

The function is traced at the problem's inputs (the staged equations, the graph, the forward and
backward table all read that one graph). The combined forward+backward function is generated in the
skeleton's own form (its name, its return names, calling the helpers it provides; intermediates
named as in the staged equations), then run and compared with the engine and with central
differences before it goes into a key. Exact answers (:mod:`.exact`) are checked against the
engine's decimals; the derivation comes from :mod:`.derive`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import latex as L
from ..check import GradcheckError, gradcheck
from ..codegen import CodePrinter, build_program
from ..expr import Expression, parse_value
from ..gates import GATES
from ..graph import Graph, fmt_value, trace
from ..symbolic import MathPrinter, Sym, const, ops, sym
from .derive import Derivation, Line, derive
from .spec import Problem

__all__ = ["Solved", "descend", "helper_source", "solve"]


def descend(fn: Callable[..., Any], variables: list[str], values: dict[str, Any], lr: float, steps: int,
            wrt: list[str] | None = None) -> list[dict[str, Any]]:
    """Gradient descent ``w -= lr * grad`` (the worksheet's update) for ``steps`` steps.

    Returns one record per step 0..steps: the values at that step, the output there and its
    gradients (the last record's gradients are at the final values, where no step is taken).
    """
    from ..autodiff import value_and_grad

    wrt = list(variables if wrt is None else wrt)
    vg = value_and_grad(fn, argnums=tuple(variables.index(v) for v in wrt))
    current = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    history: list[dict[str, Any]] = []
    for k in range(steps + 1):
        value, grads = vg(*[current[v] for v in variables])
        value = np.asarray(getattr(value, "data", value))
        history.append({"step": k, "values": dict(current), "output": value, "gradients": dict(zip(wrt, grads))})
        if k == steps:
            break
        current = dict(current)
        for v, gv in zip(wrt, grads):
            current[v] = current[v] - lr * np.asarray(gv)
    return history


@dataclass
class Solved:
    """A problem with every part it asks for answered (see the module docstring)."""

    problem: Problem
    expr: Expression
    graph: Graph
    values: dict[str, Any]
    display: Line
    staged: list[Line]
    names: list[str]  # what the answers are called: the skeleton's return names (out, fx, ...)
    answers: dict[str, Any] = field(default_factory=dict)
    key_code: str | None = None
    skeleton: str | None = None
    checked: str = ""
    ok: bool = True
    exact: dict[str, Any] = field(default_factory=dict)  # name -> exact.Exact
    descent: list[dict[str, Any]] | None = None
    descent_exact: dict[str, Any] = field(default_factory=dict)
    derivation: Derivation | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def has_values(self) -> bool:
        return bool(self.problem.inputs)


# ---------------------------------------------------------------------------------------------


def solve(problem: Problem, exact: Any = None) -> Solved:
    """Answer every part ``problem`` asks for; ``exact`` is the :mod:`.exact` module (sympy), or None."""
    expr = problem.expression()
    values = problem.values() if problem.inputs else {v: 0.5 for v in expr.variables}
    with np.errstate(all="ignore"):
        graph = trace(expr.function(), expand=problem.expand, **values)
    code = problem.code
    names = list(code.returns) if code else ["out", *(f"d{v}" for v in expr.variables)]
    s = Solved(problem, expr, graph, values, _display(problem, expr, graph), _staged(graph), names)
    if problem.inputs:
        s.answers = dict(zip(names, [graph.output.value, *[n.grad for n in graph.inputs]]))
    if code is not None:
        _code(s)
    if problem.descent is not None:
        d = problem.descent
        s.descent = descend(expr.function(), list(expr.variables), values, float(parse_value(d.lr)), d.steps,
                            list(d.wrt) if d.wrt else None)
    if exact is not None and problem.inputs:
        _exact(s, exact)
    if "derivation" in problem.parts:
        s.derivation = derive(graph, exact)
    return s


def _display(problem: Problem, expr: Expression, graph: Graph) -> Line:
    """How the function reads: the file's own ``math``, else written out from the staged equations."""
    if problem.math:
        return Line(problem.math, L.math(problem.math))
    full: dict[int, Any] = {}
    for n in graph.nodes:
        if n.kind == "input":
            full[id(n)] = sym(n.name)
        elif n.kind == "const":
            v = np.asarray(n.value)
            full[id(n)] = const(int(v) if v.ndim == 0 and float(v).is_integer() else v.item() if v.ndim == 0 else v)
        else:
            full[id(n)] = getattr(ops, n.gate.name)(*[full[id(i)] for i in n.inputs], **n.params)
    body = full[id(graph.output)]
    head = f"{expr.name or graph.output.name}({', '.join(expr.variables)})"
    return Line(f"{head} = {MathPrinter().render(body)[0]}",
                f"{L.name(expr.name or graph.output.name)}({', '.join(L.name(v) for v in expr.variables)}) = "
                f"{L.LatexPrinter().render(body)[0]}")


def _staged(graph: Graph) -> list[Line]:
    from .derive import forward_sym

    text = graph.staged(values=False).splitlines()
    return [Line(t, f"{L.name(n.name)} = {L.LatexPrinter().render(forward_sym(n))[0]}")
            for t, n in zip(text, graph.ops)]


# ---------------------------------------------------------------------------------------------
# code in the skeleton's form
# ---------------------------------------------------------------------------------------------


def _operator_form(fmt: str) -> bool:
    """Whether a gate's display form is plain Python arithmetic (``1 / {0}``, ``-{0}``)."""
    try:
        tree = ast.parse(fmt.replace("{0}", "_a").replace("{1}", "_b"), mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.operator, ast.unaryop,
               ast.expr_context)
    return all(isinstance(n, allowed) for n in ast.walk(tree))


class _HelperPrinter(CodePrinter):
    """NumPy code as a person writes it: a gate whose display form is arithmetic prints as that
    arithmetic (``1 / (1 + np.exp(-x))`` rather than ``np.reciprocal(...)``)."""

    def call(self, e: Sym) -> tuple[str, int]:
        gate = GATES.get(e.value)
        if gate is not None and not e.params and _operator_form(gate.fmt):
            text = gate.fmt
            for k, a in enumerate(e.args):
                text = text.replace("{" + str(k) + "}", self.wrap(a, 100))
            return text, 70
        return super().call(e)


def helper_source(gate_name: str) -> str:
    """The helper a skeleton provides for a composite gate, written from the gate's own expansion:
    ``def sigmoid(x): return 1 / (1 + np.exp(-x))``."""
    body = GATES[gate_name].expand(ops, sym("x"))
    return f"def {gate_name}(x):\n    return {_HelperPrinter().text(body)}\n"


def _comments(names: list[str], variables: list[str]) -> list[str]:
    out, grads = names[0], names[1:]
    if len(variables) == 1:
        lines = [f"# inputs: a NumPy array `{variables[0]}`",
                 f"# outputs: forward pass in `{out}`, gradient for {variables[0]} in `{grads[0]}`"]
    else:
        lines = [f"# inputs: NumPy arrays {', '.join(f'`{v}`' for v in variables)} of identical size",
                 f"# outputs: forward pass in `{out}`, gradients for {', '.join(variables)} in "
                 f"{', '.join(f'`{g}`' for g in grads)} respectively"]
    return lines


def _code(s: Solved) -> None:
    code = s.problem.code
    assert code is not None
    program = build_program(s.graph)
    source = program.source(code.name, returns=code.returns, provided={h: h for h in code.helpers})
    source = source.removeprefix("import numpy as np\n\n\n")
    head = ["import numpy as np", "", ""]
    if code.helpers:
        head.append("# helper function" + ("s" if len(code.helpers) > 1 else "") + " (provided)")
        for h in code.helpers:
            head += [*helper_source(h).rstrip("\n").splitlines(), "", ""]
    head += _comments(s.names, list(s.expr.variables))
    s.key_code = "\n".join(head) + "\n" + source
    # the skeleton: signature, comments and provided parts, room to write, the return line
    lines = source.splitlines()
    signature = lines[0]
    fwd_at = lines.index("    # forward pass")
    bwd_at = lines.index("    # backward pass")
    body = [signature]
    if code.given == "forward":
        body += ["    # forward pass (provided)", *lines[fwd_at + 1:bwd_at], "",
                 f"    # TODO: backward pass: `{s.names[1]}` is ∂{s.names[0]}/∂{s.expr.variables[0]}"
                 if len(s.names) == 2 else "    # TODO: backward pass"]
    else:
        body += ["    # forward pass", *[""] * code.lines, "    # backward pass"]
    body += [*[""] * code.lines, f"    return {', '.join(s.names)}"]
    s.skeleton = "\n".join(head) + "\n" + "\n".join(body) + "\n"
    s.checked, s.ok = _check(s, code.name)


def _check(s: Solved, name: str) -> tuple[str, bool]:
    """Run the key's code (chainrule's own output, not text from the file) and compare it with the
    engine; compare the engine's gradients with central differences."""
    namespace: dict[str, Any] = {}
    exec(compile(s.key_code or "", f"<generated {name}>", "exec"), namespace)  # noqa: S102 - generated code
    args = [np.asarray(v, dtype=np.float64) for v in s.values.values()]
    got = namespace[name](*args)
    want = [s.graph.output.value, *[n.grad for n in s.graph.inputs]]
    same = len(got) == len(want) and all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))
    try:
        gradcheck(s.expr.function(), *args)
    except GradcheckError as e:
        return f"**the gradients disagree with central differences**: {e}", False
    if not same:
        return "**the generated function does not reproduce the engine's values**", False
    call = f"{name}({', '.join(fmt_value(v) for v in s.values.values())})"
    return (f"Checked: `{call}` returns {', '.join(f'`{n}`' for n in s.names)} equal to the engine's output and "
            "gradients, and the gradients agree with central differences."), True


# ---------------------------------------------------------------------------------------------
# exact answers
# ---------------------------------------------------------------------------------------------


def _exact(s: Solved, exact: Any) -> None:
    import sympy as sp

    if any(np.ndim(v) for v in s.values.values()):
        s.notes.append("Exact answers are given for scalar inputs only.")
        return
    p = s.problem
    try:
        inputs = {v: exact.exact_value(p.inputs[v]) for v in s.expr.variables}
        eg = exact.exact_graph(s.graph, inputs)
    except ValueError as e:
        s.notes.append(f"No exact answers: {e}.")
        return
    exprs = [eg.values[s.graph.output.name], *[eg.grads[n.name] for n in s.graph.inputs]]
    forms: list[Any] = [None] * len(exprs)
    if len(s.graph.inputs) == 1:  # the whole function one composite gate: its own forms (σ(2), σ(2)(1 − σ(2)))
        x = sp.Symbol(s.graph.inputs[0].name, real=True)
        symbolic = exact.exact_graph(s.graph, {x.name: x})
        found = exact.recognize(symbolic.values[s.graph.output.name], x)
        if found is not None:
            _, out, rule = found
            x0 = inputs[x.name]
            forms = [out.subs(x, x0), rule.subs(x, x0)]
    decimals = [s.graph.output.value, *[n.grad for n in s.graph.inputs]]
    for name, e, form, dec in zip(s.names, exprs, forms, decimals):
        if form is not None and not exact.same(form, e):
            form = None
        if not exact.agrees(e, dec):
            s.notes.append(f"The exact value of {name} is left out: it disagrees with the decimal {fmt_value(dec)}.")
            continue
        s.exact[name] = exact.Exact.of(e, form)
    if s.descent is not None and p.descent is not None and p.descent.steps == 1:
        lr = exact.exact_value(p.descent.lr)
        wrt = list(p.descent.wrt or s.expr.variables)
        last = s.descent[-1]["values"]
        for k, v in enumerate(s.expr.variables):
            if v not in wrt:
                continue
            g, form = exprs[1 + k], forms[1 + k]
            e = inputs[v] - lr * g
            if not exact.agrees(e, last[v]):
                continue
            # as it is worked out by hand: x − lr·(the gradient in its own form), e.g. 2 − 0.2·σ(2)(1 − σ(2))
            grad = form if form is not None else g
            gt, gl = exact.to_text(grad), exact.to_latex(grad)
            if grad.is_Add or gt.startswith("−"):
                gt, gl = f"({gt})", rf"\left({gl}\right)"
            x0t, x0l = exact.to_text(inputs[v]), exact.to_latex(inputs[v])
            lr_text, lr_tex = p.descent.lr, L.math(p.descent.lr)
            s.descent_exact[v] = exact.Exact(e, exact.to_text(e), exact.to_latex(e), f"{x0t} − {lr_text}·{gt}",
                                             rf"{x0l} - {lr_tex} \cdot {gl}")
