"""A solved worksheet as documents: the answer key, and the blank handout a student fills in.

The key follows the worksheet: its prose, then each problem's parts in order (staged equations,
graph, forward/backward table, gradients with exact forms, the combined function in the skeleton's
form with what it was checked against, the derivation, the descent step). The handout keeps the
prose and the questions and leaves room: empty graphs (nodes and edges, no numbers), code skeletons
(signature, provided helpers and passes, return line). A section marked ``gates`` becomes, in the
key, a reference generated from the gate table's own explanations and rules, with a tiny graph each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import latex as L
from ..gates import FAN_OUT, GATES
from ..graph import Graph, fmt_value, trace
from ..symbolic import MathPrinter, ops, sym
from ..tensor import apply
from .doc import Doc, Figure, GalleryItem
from .solve import Solved
from .spec import Worksheet

__all__ = ["key", "blank", "summary_rows"]


def _fname(s: Solved) -> str:
    """What the function is called in ∂f/∂x: its declared name, the name in its display, or its output."""
    for name in (s.expr.name, s.problem.math.split("(", 1)[0].strip(), s.graph.output.name):
        if name and len(name) <= 3:
            return name
    return "f"  # complex_layer(x, y): ∂f/∂x, as the worksheet writes it


def _at(s: Solved) -> str:
    return ", ".join(f"{k} = {v}" for k, v in s.problem.inputs.items())


def _heading(s: Solved) -> str:
    return f"{s.problem.label} {s.display.text}".strip()


def key(ws: Worksheet, solved: dict[str, Solved], exact: bool, source: str) -> Doc:
    """The answer key."""
    doc = Doc(f"{ws.title}: answer key")
    doc.h(1, f"{ws.title}: answer key" + (f" (variant {ws.variant})" if ws.variant else ""))
    if ws.subtitle:
        doc.p(f"*{ws.subtitle}*")
    doc.prose(ws.intro)
    doc.p(f"Solved by chainrule from `{source}`. Every equation, number, picture and function below is computed "
          "from the worksheet's functions; gradients come from each gate's own local rule, chained back from the "
          "output, and every combined function was run and compared with the engine and with central differences."
          + ("" if exact else " Exact answers and the simplified derivations: run with `--exact`."))
    for sec in ws.sections:
        doc.h(2, sec.title)
        if sec.gates is not None:
            doc.p("Each gate's local gradient, from the gate table (upstream gradient × local gradient flows "
                  "back along each edge; in the pictures values are green above the edges, gradients red below):")
            doc.gallery(gate_gallery(sec.gates))
            continue
        doc.prose(sec.text)
        for p in sec.problems:
            _key_problem(doc, solved[p.id])
    return doc


def _key_problem(doc: Doc, s: Solved) -> None:
    p = s.problem
    doc.h(3, _heading(s))
    doc.prose(p.text)
    if p.inputs:
        doc.p(f"At {_at(s)}.")
    f = _fname(s)
    for part in p.parts:
        if part == "staged":
            doc.p(f"**Staged computation**, one operation per equation ({len(s.graph.ops)} equations):")
            doc.math([(t.text, t.latex) for t in s.staged], code=True)
        elif part == "graph":
            doc.p("**The computational graph** (values in green above the edges, gradients in red below):")
            doc.figure(Figure(p.id, f"computational graph of {s.display.text}", s.graph))
        elif part == "table":
            doc.p("**Forward and backward pass**: the forward pass in order, then the backward pass node by node "
                  "from the output (upstream gradient × local gradient):")
            doc.code(s.graph.table())
        elif part == "gradients":
            _gradients_table(doc, s, f)
        elif part == "code":
            doc.p("**The combined forward and backward pass**, in the skeleton's form:")
            doc.code(s.key_code or "", "python")
            doc.p(s.checked)
        elif part == "derivation" and s.derivation is not None:
            _derivation(doc, s)
        elif part == "descent" and s.descent is not None:
            _descent(doc, s, f)
    for note in s.notes:
        doc.p(f"*{note}*")


def _gradients_table(doc: Doc, s: Solved, f: str) -> None:
    rows = []
    labels = [s.names[0], *[f"{n} = ∂{f}/∂{v}" for n, v in zip(s.names[1:], s.expr.variables)]]
    for name, label in zip(s.names, labels):
        row = [label, fmt_value(s.answers[name])]
        if s.exact:
            e = s.exact.get(name)
            row.append("" if e is None else (f"{e.text} = {e.form_text}" if e.form_text else e.text))
        rows.append(row)
    doc.table(["", "value", *(["exact"] if s.exact else [])], rows)
    if s.exact:
        lines = []
        for name, var in zip(s.names, [None, *s.expr.variables]):
            e = s.exact.get(name)
            if e is not None:
                lhs = L.name(name) if var is None else rf"\frac{{\partial {L.math(f)}}}{{\partial {L.name(var)}}}"
                text = f"{name} = {e.text}" + (f" = {e.form_text}" if e.form_text else "")
                lines.append((text, f"{lhs} = {e.latex}" + (f" = {e.form_latex}" if e.form_latex else "")))
        doc.math(lines)


def _derivation(doc: Doc, s: Solved) -> None:
    d = s.derivation
    assert d is not None
    doc.p("**The analytical derivative, stage by stage.** Each stage's local derivative is its gate's own rule:")
    doc.math([(eq.text + "   " + "; ".join(x.text for x in locs), eq.latex + r" \qquad " + r",\quad ".join(
        x.latex for x in locs)) for eq, locs in d.stages])
    doc.p("**Chain rule**, from the output back: each upstream gradient times the stage's local derivative"
          + (" (then every stage written in terms of the inputs)" if any(i for _, i, _ in d.chain) else "")
          + f", and its value at {_at(s) or 'the inputs'}:")
    doc.math([(step.text + (f" = {ins.text}" if ins else "") + f" ≈ {value}",
               step.latex + (f" = {ins.latex}" if ins else "") + rf" \approx {L.math(value)}")
              for step, ins, value in d.chain])
    doc.p("**Result:**")
    doc.math([(r.text, r.latex) for r in d.results])
    for note in d.notes:
        doc.p(note)


def _descent(doc: Doc, s: Solved, f: str) -> None:
    p = s.problem
    assert p.descent is not None and s.descent is not None
    lr = p.descent.lr
    wrt = list(p.descent.wrt or s.expr.variables)
    if p.descent.steps == 1:
        first, last = s.descent[0], s.descent[-1]
        for v in wrt:
            g = fmt_value(first["gradients"][v])
            g = f"({g})" if g.startswith("-") else g
            text = (f"**One gradient-descent step of size {lr}:** {v} ← {v} − {lr} · ∂{f}/∂{v} = "
                    f"{fmt_value(first['values'][v])} − {lr} × {g} = **{fmt_value(last['values'][v])}**")
            e = s.descent_exact.get(v)
            if e is not None:
                text += f" (exactly {e.best_text})"
            doc.p(text + ".")
        return
    doc.p(f"**{p.descent.steps} gradient-descent steps of size {lr}** ({', '.join(wrt)} ← … − {lr} · gradient):")
    rows = [[str(r["step"]), *[fmt_value(r["values"][v]) for v in wrt], fmt_value(r["output"])] for r in s.descent]
    doc.table(["step", *wrt, s.names[0]], rows)


# ---------------------------------------------------------------------------------------------
# the handout
# ---------------------------------------------------------------------------------------------


def blank(ws: Worksheet, solved: dict[str, Solved]) -> Doc:
    """The student's handout: the questions, empty graphs, code skeletons, room to write."""
    doc = Doc(ws.title)
    doc.h(1, ws.title + (f" (variant {ws.variant})" if ws.variant else ""))
    if ws.subtitle:
        doc.p(f"*{ws.subtitle}*")
    doc.prose(ws.intro)
    for sec in ws.sections:
        doc.h(2, sec.title)
        doc.prose(sec.text)
        if sec.gates is not None:
            doc.space(10)
        for p in sec.problems:
            s = solved[p.id]
            doc.h(3, _heading(s))
            doc.prose(p.text)
            if p.inputs:
                doc.p(f"With input values {_at(s)}.")
            for part in p.parts:
                if part == "graph":
                    doc.p("Fill in the values (above each edge) and the gradients (below each edge):")
                    doc.figure(Figure(f"{p.id}-blank", f"the computational graph of {s.display.text}, to fill in",
                                      s.graph, blank=True))
                elif part == "code":
                    doc.code(s.skeleton or "", "python")
                elif part == "descent" and p.descent is not None:
                    doc.p(f"Step size {p.descent.lr}: the value after {p.descent.steps} gradient-descent "
                          f"step{'s' if p.descent.steps > 1 else ''}:")
                    doc.space(3)
                elif part in ("staged", "table", "gradients", "derivation"):
                    doc.space({"staged": len(s.graph.ops) + 2, "table": 8, "gradients": 3, "derivation": 10}[part])
    return doc


# ---------------------------------------------------------------------------------------------
# the common gates, from the gate table
# ---------------------------------------------------------------------------------------------

_ARGS = ("x", "y", "z")


def _gate_graph(name: str) -> tuple[Graph, list[tuple[str, str]]]:
    text, tex = MathPrinter(), L.LatexPrinter()
    if name == "copy":  # a value used twice: x·x, each edge carries one share, the node their sum
        g = trace(lambda x: x * x, x=3.0)
        return g, [("out = x·x", r"\mathrm{out} = x \cdot x"),
                   ("∂out/∂x = x + x (one share per use)", r"\frac{\partial\,\mathrm{out}}{\partial x} = x + x")]
    gate = GATES[name]
    arity = len(gate.local or ())
    args = [sym(a) for a in _ARGS[:arity]]
    values = dict(zip(_ARGS[:arity], (3.0, 2.0) if arity > 1 else (2.0,)))
    fn = (lambda x: apply(gate, x)) if arity == 1 else (lambda x, y: apply(gate, x, y))
    with np.errstate(all="ignore"):
        g = trace(fn, **values)
    eqs = [(f"out = {text.render(getattr(ops, name)(*args))[0]}",
            rf"\mathrm{{out}} = {tex.render(getattr(ops, name)(*args))[0]}")]
    for a, rule in zip(_ARGS, gate.local or ()):
        if rule is None:
            continue
        r = rule(ops, *args, sym("out"))
        eqs.append((f"∂out/∂{a} = {text.render(r)[0]}",
                    rf"\frac{{\partial\,\mathrm{{out}}}}{{\partial {a}}} = {tex.render(r)[0]}"))
    return g, eqs


def gate_gallery(names: tuple[str, ...]) -> list[GalleryItem]:
    """One entry per gate: its explanation and local rules from the table, and a tiny graph."""
    items = []
    for name in names:
        g, eqs = _gate_graph(name)
        title = "copy (fan-out)" if name == "copy" else name
        explain = FAN_OUT if name == "copy" else GATES[name].explain
        values = ", ".join(f"{n.name} = {fmt_value(n.value)}" for n in g.inputs)
        items.append(GalleryItem(title, f"{explain[0].upper()}{explain[1:]}. Example at {values}.", eqs,
                                 Figure(f"gate-{name}", f"the {title} gate at {values}", g)))
    return items


# ---------------------------------------------------------------------------------------------


def summary_rows(ws: Worksheet, solved: dict[str, Solved]) -> list[tuple[str, str]]:
    """One line per answer, for the command's summary."""
    rows: list[tuple[str, str]] = []
    for p in ws.problems:
        s = solved[p.id]
        if not p.inputs:
            rows.append((f"{p.id} {_heading(s)}", "; ".join(t.text for t in s.staged)))
            continue
        rows.append((f"{p.id} at {_at(s)}", ", ".join(f"{n} = {fmt_value(s.answers[n])}" for n in s.names)))
        if s.exact:
            rows.append((f"{p.id} exactly", ", ".join(f"{n} = {e.best_text}" for n, e in s.exact.items())))
        if s.descent is not None and p.descent is not None:
            last = s.descent[-1]["values"]
            for v in p.descent.wrt or s.expr.variables:
                rows.append((f"{p.id} {v} after {p.descent.steps} step{'s' if p.descent.steps > 1 else ''} of "
                             f"{p.descent.lr}", fmt_value(last[v])))
    return rows


def answers_json(ws: Worksheet, solved: dict[str, Solved]) -> dict[str, Any]:
    """Every answer as data (inputs as written, values, exact forms, descent), per problem id."""
    out: dict[str, Any] = {}
    for p in ws.problems:
        s = solved[p.id]
        entry: dict[str, Any] = {"function": p.function, "staged": [t.text for t in s.staged]}
        if p.python:
            entry["python"] = p.python  # the function as the file gave it; "function" is how chainrule reads it
        if p.inputs:
            entry["inputs"] = dict(p.inputs)
            entry["values"] = {n: _plain(s.answers[n]) for n in s.names}
        if s.exact:
            entry["exact"] = {n: e.best_text for n, e in s.exact.items()}
        if s.descent is not None and p.descent is not None:
            entry["descent"] = {"lr": p.descent.lr, "steps": p.descent.steps,
                                "after": {k: _plain(v) for k, v in s.descent[-1]["values"].items()}}
        if p.code is not None:
            entry["code"] = {"name": p.code.name, "returns": list(p.code.returns), "checked": s.ok}
        out[p.id] = entry
    return out


def _plain(v: Any) -> Any:
    """A value as JSON numbers; a zero is written 0.0, never -0.0 (cos's −sin 0 is no negative answer)."""
    a = np.asarray(v, dtype=float) + 0.0  # −0.0 + 0.0 is +0.0
    return float(a) if a.ndim == 0 else a.tolist()
