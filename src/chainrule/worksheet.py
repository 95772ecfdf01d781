"""The seed worksheet (section 2, backprop), solved by chainrule into one report.

The worksheet's functions and inputs are data here, written in chainrule's expression language
(the same text a learner would give ``chainrule grad``); every equation, value, gradient, picture
and function in the report is computed from them: staged forms (Q1), graphs, forward/backward
passes and generated combined functions at the given inputs (Q2), the sigmoid's gradient and one
gradient-descent step (Q3), and the staged ``complex_layer`` (Q4). Each generated function is run
and compared with the engine and with central differences before it goes into the report.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .check import GradcheckError, gradcheck
from .expr import Expression, parse, parse_values
from .fileio import atomic_write
from .graph import Graph, fmt_value, trace

__all__ = ["QUESTIONS", "WorksheetResult", "descend", "solve_worksheet"]


@dataclass(frozen=True)
class Problem:
    """One function of the worksheet: its key (``q2a``), how it is written, its inputs."""

    key: str
    label: str  # "(a)"
    math: str  # as printed on the worksheet
    expr: str  # in chainrule's expression language
    at: tuple[str, ...]  # --at values
    prefix: str  # the worksheet's gradient names: fx, hx, gx


#: The worksheet's functions, as written on it, and the inputs it gives.
QUESTIONS: dict[str, Problem] = {
    "q2a": Problem("q2a", "(a)", "f(x, y, z) = (x + y)z", "f(x, y, z) = (x + y) z", ("x=1", "y=3", "z=2"), "f"),
    "q2b": Problem("q2b", "(b)", "h(x, y, z) = (x² + 2y)z³", "h(x, y, z) = (x^2 + 2y) z^3",
                   ("x=3", "y=1", "z=2"), "h"),
    "q2c": Problem("q2c", "(c)", "g(x, y, z) = (ln(x) + sin(y))² + 4x", "g(x, y, z) = (ln(x) + sin(y))^2 + 4x",
                   ("x=e", "y=pi/2", "z=2"), "g"),
    # Q3: the worksheet's own split a = -x, b = e^a, c = 1 + b, d = 1/c
    "q3": Problem("q3", "", "σ(x) = 1 / (1 + e^(−x))", "a = -x; b = exp(a); c = 1 + b; d = c^-1", ("x=2",), "f"),
    # Q4 gives no inputs: these are ours
    "q4": Problem("q4", "", "f = ln x · σ(√y) / σ((x + y)²)",
                  "complex_layer(x, y) = ln(x) * sigmoid(sqrt(y)) / sigmoid((x + y)^2)", ("x=1.5", "y=0.5"), "f"),
}
Q3_STEP = 0.2


# ---------------------------------------------------------------------------------------------
# a tiny document model, written as Markdown or HTML
# ---------------------------------------------------------------------------------------------


@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (text.rstrip("\n"), lang)))

    def img(self, path: str, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"{'#' * v[0]} {v[1]}")
            elif kind == "p":
                out.append(v)
            elif kind == "code":
                out.append(f"```{v[1]}\n{v[0]}\n```")
            elif kind == "img":
                out.append(f"![{v[1]}]({v[0]})")
            elif kind == "table":
                header, rows = v
                lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        def inline(text: str) -> str:
            t = html.escape(text)
            t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
            return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)

        body: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                body.append(f"<h{v[0]}>{inline(v[1])}</h{v[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline(v)}</p>")
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(v[0])}</code></pre>")
            elif kind == "img":
                body.append(f'<figure><img src="{html.escape(v[0])}" alt="{html.escape(v[1])}"></figure>')
            elif kind == "table":
                header, rows = v
                head = "".join(f"<th>{inline(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
                 "line-height:1.5}pre{background:#f6f8fa;padding:.8rem;overflow-x:auto}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:right}"
                 "td:first-child,th:first-child{text-align:left}figure img{max-width:100%}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------
# solving
# ---------------------------------------------------------------------------------------------


def descend(fn: Callable[..., Any], variables: list[str], values: dict[str, Any], lr: float, steps: int,
            wrt: list[str] | None = None) -> list[dict[str, Any]]:
    """Gradient descent ``w -= lr * grad`` (the worksheet's update) for ``steps`` steps.

    Returns one record per step 0..steps: the values at that step, the output there and its
    gradients (the last record's gradients are at the final values, where no step is taken).
    """
    from .autodiff import value_and_grad

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
class _Solved:
    problem: Problem
    expr: Expression
    values: dict[str, Any]
    graph: Graph
    source: str
    checked: str  # a sentence: what the generated function was checked against
    ok: bool


def _solve(problem: Problem, name: str, expand: bool = False) -> _Solved:
    expr = parse(problem.expr)
    values = parse_values(problem.at, expr)
    fn = expr.function()
    g = trace(fn, expand=expand, **values)
    source = g.to_source(name)
    checked, ok = _check_source(source, name, g, fn, values)
    return _Solved(problem, expr, values, g, source, checked, ok)


def _check_source(source: str, name: str, g: Graph, fn: Callable[..., Any], values: dict[str, Any]) -> tuple[str, bool]:
    """Run the generated function (chainrule's own output, not user text) and compare it with the
    engine's values and gradients, and the engine's gradients with central differences."""
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<generated {name}>", "exec"), namespace)  # noqa: S102 - our generated code
    args = [np.asarray(v, dtype=np.float64) for v in values.values()]
    got = namespace[name](*args)
    want = [g.output.value, *[n.grad for n in g.inputs]]
    same = len(got) == len(want) and all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))
    try:
        numeric = gradcheck(fn, *args)
    except GradcheckError as e:
        return f"**the gradients disagree with central differences**: {e}", False
    if not same:
        return "**the generated function does not reproduce the engine's values**", False
    return (f"Checked: `{name}({', '.join(_num(v) for v in values.values())})` returns the engine's output "
            "and gradients, and the gradients agree with central differences" + ("." if numeric else "?")), True


def _num(v: Any) -> str:
    return fmt_value(v)


@dataclass
class WorksheetResult:
    """What ``solve_worksheet`` wrote and found: the report, the pictures, the answers."""

    report: Path
    pictures: list[Path]
    picture_problem: str | None
    rows: list[tuple[str, str]]
    answers: dict[str, dict[str, Any]]
    ok: bool

    def summary_rows(self) -> list[list[str]]:
        return [[q, a] for q, a in self.rows]

    def summary_json(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list):
                return [conv(x) for x in v]
            if isinstance(v, (np.ndarray, np.generic, float, int)) and not isinstance(v, bool):
                a = np.asarray(v, dtype=float)
                return float(a) if a.ndim == 0 else a.tolist()
            return v

        return {"report": str(self.report), "pictures": [str(p) for p in self.pictures],
                "picture_problem": self.picture_problem, "ok": self.ok, "answers": conv(self.answers),
                "summary": [{"question": q, "answer": a} for q, a in self.rows]}


class _Pictures:
    """Draws each graph beside the report; after the first failure, falls back to DOT text."""

    def __init__(self, folder: Path, fmt: str) -> None:
        self.folder = folder
        self.fmt = fmt
        self.written: list[Path] = []
        self.problem: str | None = None

    def add(self, doc: _Doc, g: Graph, stem: str, alt: str) -> None:
        if self.problem is None:
            path = self.folder / f"{stem}.{self.fmt}"
            try:
                g.render(path)
            except (ImportError, RuntimeError, OSError, ValueError) as e:
                self.problem = str(e)
            else:
                self.written.append(path)
                doc.img(path.name, alt)
                return
        dot_path = self.folder / f"{stem}.dot"
        dot = g.to_dot()
        atomic_write(dot_path, dot)
        doc.p(f"The picture could not be drawn here ({self.problem}). The graph as Graphviz DOT "
              f"(also in `{dot_path.name}`; `dot -Tsvg {dot_path.name} > {stem}.svg` draws it):")
        doc.code(dot, "dot")


def _grad_name(prefix: str, var: str) -> str:
    return f"{prefix}{var}"


def _results_table(doc: _Doc, s: _Solved, prefix: str) -> dict[str, Any]:
    g = s.graph
    rows = [["out", _num(g.output.value)]]
    answer: dict[str, Any] = {"out": g.output.value}
    for n in g.inputs:
        rows.append([_grad_name(prefix, n.name) + f" = ∂{prefix}/∂{n.name}", _num(n.grad)])
        answer[_grad_name(prefix, n.name)] = n.grad
    doc.table(["", "value"], rows)
    return answer


def solve_worksheet(out: Path | str, fmt: str = "md", picture_format: str = "svg") -> WorksheetResult:
    """Solve every question of the worksheet into ``out``/worksheet.md (or .html) with pictures beside it."""
    if fmt not in ("md", "html"):
        raise ValueError(f"format must be 'md' or 'html', not {fmt!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pics = _Pictures(folder, picture_format)
    doc = _Doc()
    rows: list[tuple[str, str]] = []
    answers: dict[str, dict[str, Any]] = {}
    ok = True

    doc.h(1, "Section 2: Backpropagation — the worksheet, solved by chainrule")
    doc.p("Every equation, number, picture and function below was computed by chainrule from the worksheet's "
          "functions, written in chainrule's expression language (each question shows the command that "
          "reproduces it). Staged names `t1, t2, ...` are chainrule's; `out` is the output. Gradients come from "
          "each gate's local rule chained backwards from the output; every generated function was run and "
          "compared with the engine and with central differences.")

    q2 = {k: _solve(QUESTIONS[k], k) for k in ("q2a", "q2b", "q2c")}

    # ---- Q1 ----------------------------------------------------------------------------------
    doc.h(2, "1. Compute and Conquer")
    doc.p("Staged computation: one operation per equation.")
    for s in q2.values():
        pr = s.problem
        doc.h(3, f"{pr.label} {pr.math}")
        staged = s.graph.staged(values=False)
        doc.code(staged)
        doc.p(f"{len(s.graph.ops)} equations. Reproduce: `chainrule grad \"{pr.expr}\" --at {' '.join(pr.at)}`")
        rows.append((f"Q1 {pr.label} {pr.math}", "; ".join(staged.splitlines())))

    # ---- Q2 ----------------------------------------------------------------------------------
    doc.h(2, "2. Oh, node way!")
    for key, s in q2.items():
        pr = s.problem
        at = ", ".join(f"{k} = {v}" for k, v in (a.split("=", 1) for a in pr.at))
        doc.h(3, f"{pr.label} {pr.math}, at {at}")
        doc.p("**(i) The computational graph** (values in green above the edges, gradients in red below):")
        pics.add(doc, s.graph, key, f"computational graph of {pr.math}")
        doc.p("**(ii) Forward and backward pass**: the forward pass in order, then the backward pass node by "
              "node from the output (upstream gradient × local gradient):")
        doc.code(s.graph.table())
        answer = _results_table(doc, s, pr.prefix)
        answers[key] = answer
        doc.p(f"**(iii) The combined forward and backward pass** (returns `out` and `d<input>`, "
              f"the worksheet's `{pr.prefix}x, {pr.prefix}y, {pr.prefix}z`):")
        doc.code(s.source, "python")
        doc.p(s.checked)
        ok = ok and s.ok
        rows.append((f"Q2 {pr.label} at {at}",
                     ", ".join(f"{k} = {_num(v)}" for k, v in answer.items())))

    # ---- Q3 ----------------------------------------------------------------------------------
    pr = QUESTIONS["q3"]
    doc.h(2, "3. Sigmoid Shenanigans")
    s3 = _solve(pr, "sigmoid")
    x_in = s3.values["x"]
    fused = trace(parse("sigmoid(x)").function(), x=x_in)
    expanded = trace(parse("sigmoid(x)").function(), expand=True, x=x_in)
    grad = s3.graph.inputs[0].grad
    doc.p(f"{pr.math}, split as the worksheet suggests (a = −x, b = eᵃ, c = 1 + b, d = 1/c), at x = {_num(x_in)}.")
    doc.code(s3.graph.staged())
    doc.p("The computational graph:")
    pics.add(doc, s3.graph, "q3", "computational graph of the sigmoid, staged")
    doc.p("Backward pass:")
    doc.code(s3.graph.table())
    doc.p("The completed function (the worksheet's `fx` is `dx`):")
    doc.code(s3.source, "python")
    doc.p(s3.checked)
    ok = ok and s3.ok
    steps = fused.backward_steps()
    rule = steps[0].parts[0] if steps and steps[0].parts else None
    doc.p(f"**Gradient at x = {_num(x_in)}: ∂σ/∂x = {_num(grad)}** (\"around 0.1\"). chainrule's own sigmoid "
          f"expands into the same four stages (`chainrule grad \"sigmoid(x)\" --at x=2 --expand`):")
    doc.code(expanded.staged())
    if rule is not None and rule.rule:
        doc.p(f"The analytical derivative: the fused sigmoid gate's local rule is σ'(x) = {rule.rule} with out = "
              f"σ({_num(x_in)}) = {_num(fused.output.value)}, which gives {_num(rule.local)}; expanded, the "
              f"chain rule gives {_num(expanded.inputs[0].grad)}.")
    history = descend(s3.expr.function(), s3.expr.variables, s3.values, Q3_STEP, 1)
    x_new = history[-1]["values"]["x"]
    doc.p(f"**One gradient-descent step of size {Q3_STEP}:** x ← x − {Q3_STEP} · ∂σ/∂x = {_num(x_in)} − "
          f"{Q3_STEP} × {_num(grad)} = **{_num(x_new)}** "
          f"(`chainrule step \"sigmoid(x)\" --at x=2 --lr {Q3_STEP} --steps 1`).")
    answers["q3"] = {"x": x_in, "out": s3.graph.output.value, "gradient": grad, "fused_gradient": fused.inputs[0].grad,
                     "expanded_gradient": expanded.inputs[0].grad, "step": Q3_STEP, "x_after_step": x_new}
    rows.append((f"Q3 ∂σ/∂x at x = {_num(x_in)}", _num(grad)))
    rows.append((f"Q3 x after one step of {Q3_STEP}", _num(x_new)))

    # ---- Q4 ----------------------------------------------------------------------------------
    pr = QUESTIONS["q4"]
    doc.h(2, "4. A Backprop a Day Keeps the Derivative Away")
    s4 = _solve(pr, "complex_layer")
    at = ", ".join(f"{k} = {_num(v)}" for k, v in s4.values.items())
    doc.p(f"{pr.math}. The worksheet gives no inputs; the values below are at {at}. Staged, with the sigmoid "
          f"as one gate (its local gradient σ(x)·(1 − σ(x))): {len(s4.graph.ops)} equations, the last one "
          "being `out`:")
    doc.code(s4.graph.staged())
    doc.p("The computational graph:")
    pics.add(doc, s4.graph, "q4", "computational graph of complex_layer")
    doc.p("Backward pass:")
    doc.code(s4.graph.table())
    answers["q4"] = _results_table(doc, s4, pr.prefix)
    doc.p("The completed function:")
    doc.code(s4.source, "python")
    doc.p(s4.checked)
    ok = ok and s4.ok
    rows.append((f"Q4 complex_layer at {at}",
                 ", ".join(f"{k} = {_num(v)}" for k, v in answers["q4"].items())
                 + f" ({len(s4.graph.ops)} equations)"))

    if pics.problem:
        doc.p(f"Note: pictures could not be rendered ({pics.problem}); the graphs are given as DOT above.")
    report = folder / f"worksheet.{fmt}"
    text = doc.markdown() if fmt == "md" else doc.html("Section 2 backprop worksheet, solved by chainrule")
    atomic_write(report, text)
    return WorksheetResult(report, pics.written, pics.problem, rows, answers, ok)
