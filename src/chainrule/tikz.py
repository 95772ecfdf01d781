"""A traced graph as a TikZ picture, for LaTeX handouts and answer keys (``g.to_tikz()``).

The picture is the one :mod:`chainrule.render` draws: the same scene (gates as circles, inputs and
the output by name, constants in grey, every edge through a label of its own), laid out by the same
program (Graphviz's ``dot``, or ``graphviz-pure``), whose positions and edge curves are read from
its ``plain`` output and written as TikZ coordinates. Values are typeset in green above each edge,
gradients in red below it. The picture needs only the ``tikz`` package (core arrows, no libraries);
``standalone=True`` wraps it in a small ``article`` document that pdflatex compiles as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import latex, render
from .render import EDGE_COLOR, GRAD_COLOR, VALUE_COLOR, Scene, SceneNode

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["to_tikz", "scene_tikz"]

#: dot's arrowheads (arrowsize 0.6 of 10 points) end this far past where ``plain`` stops the curve, in inches
_ARROW = 0.6 * 10 / 72
#: the widest picture (inches) that fits a page's text width; wider ones are scaled down to fit
_PAGE_WIDTH = 6.3


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float


def _parse_plain(text: str) -> tuple[float, float, dict[str, _Box], list[tuple[str, str, list[tuple[float, float]]]]]:
    """Graphviz's plain output: the picture's size, each node's box and each edge's curve (inches)."""
    boxes: dict[str, _Box] = {}
    edges: list[tuple[str, str, list[tuple[float, float]]]] = []
    width = height = 0.0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "graph":
            width, height = float(parts[2]), float(parts[3])
        elif parts[0] == "node":
            boxes[parts[1]] = _Box(*(float(v) for v in parts[2:6]))
        elif parts[0] == "edge":
            n = int(parts[3])
            coords = [float(v) for v in parts[4:4 + 2 * n]]
            edges.append((parts[1], parts[2], list(zip(coords[::2], coords[1::2]))))
    return width, height, boxes, edges


def _pt(p: tuple[float, float]) -> str:
    return f"({p[0]:.4f},{p[1]:.4f})"


def _curve(points: list[tuple[float, float]]) -> str:
    """A Bezier spline (1 + 3k points) as a TikZ path."""
    out = _pt(points[0])
    for k in range(1, len(points) - 2, 3):
        out += f" .. controls {_pt(points[k])} and {_pt(points[k + 1])} .. {_pt(points[k + 2])}"
    return out


def _tip(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Where dot's arrowhead ends: past the curve's last point, along its last direction."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    d = math.hypot(x1 - x0, y1 - y0)
    if d == 0:
        return x1, y1
    return x1 + (x1 - x0) / d * _ARROW, y1 + (y1 - y0) / d * _ARROW


def _number(text: str | None) -> str:
    return f"${latex.math(text)}$" if text else ""


def _node_tex(n: SceneNode, box: _Box) -> str:
    at = _pt((box.x, box.y))
    lines: list[str] = []
    if n.kind == "gate":
        lines.append(f"${latex.math(n.symbol)}$" if not n.symbol.isalpha() else latex.text(n.symbol))
        lines.append(rf"{{\tiny\color{{crgray}}${latex.name(n.name)}$}}")
    elif n.kind == "const":
        return rf"\node[crconst] ({n.key}) at {at} {{{_number(n.value)}}};"
    else:
        lines.append(rf"\textbf{{{latex.text(n.name)}}}")
    if n.value is not None:
        lines.append(rf"{{\tiny\color{{crvalue}}{_number(n.value)}}}")
    if n.grad is not None:
        total = "" if n.value is not None else r"\Sigma\,"
        lines.append(rf"{{\tiny\color{{crgrad}}${total}{latex.math(n.grad)}$}}")
    body = r"\shortstack{" + r"\\".join(lines) + "}" if len(lines) > 1 else lines[0]
    if n.kind == "gate":
        return rf"\node[crgate, minimum size={min(box.w, box.h):.4f}in] ({n.key}) at {at} {{{body}}};"
    return rf"\node[crvar] ({n.key}) at {at} {{{body}}};"


def scene_tikz(sc: Scene, plain: str, standalone: bool = False) -> str:
    """Typeset a scene at the positions of Graphviz's ``plain`` output for it."""
    width, height, boxes, curves = _parse_plain(plain)
    by_pair: dict[tuple[str, str], list[list[tuple[float, float]]]] = {}
    for tail, head, pts in curves:
        by_pair.setdefault((tail, head), []).append(pts)
    kinds = {n.key: n for n in sc.nodes}
    lines = [
        "% the computational graph, drawn by chainrule: values in green above the edges, gradients in red below",
        r"\begin{tikzpicture}[x=1in, y=1in, >=stealth, line cap=butt,",
        r"  crgate/.style={circle, draw, line width=0.8pt, inner sep=0pt, align=center},",
        r"  crvar/.style={inner sep=1pt, align=center, font=\small},",
        r"  crconst/.style={inner sep=1pt, text=crgray, font=\footnotesize},",
        r"  crvalue/.style={above, inner sep=1.5pt, text=crvalue, font=\footnotesize},",
        r"  crgrad/.style={below, inner sep=1.5pt, text=crgrad, font=\footnotesize},",
        r"  credge/.style={draw=crgray, line width=0.6pt}]",
        rf"\definecolor{{crvalue}}{{HTML}}{{{VALUE_COLOR[1:].upper()}}}",
        rf"\definecolor{{crgrad}}{{HTML}}{{{GRAD_COLOR[1:].upper()}}}",
        rf"\definecolor{{crgray}}{{HTML}}{{{EDGE_COLOR[1:].upper()}}}",
        rf"\path[use as bounding box] (0,0) rectangle ({width:.4f},{height:.4f});",
    ]
    for n in sc.nodes:
        if n.kind != "label":
            lines.append(_node_tex(n, boxes[n.key]))
    into: dict[str, tuple[str, str]] = {}  # label key -> (tail, the curve into its rule)
    for e in sc.edges:
        pts = by_pair[(e.tail, e.head)].pop(0)
        if e.kind == "in":
            into[e.head] = (e.tail, _curve(pts))
            continue
        style = "credge, ->" + (", dashed" if e.kind == "const" else "")
        path = f"{_curve(pts)} -- {_pt(_tip(pts))}"
        if e.kind == "out":  # the curve into the label, its rule, and the curve on to the head
            label, box = kinds[e.tail], boxes[e.tail]
            west, east = (box.x - box.w / 2, box.y), (box.x + box.w / 2, box.y)
            path = f"{into[e.tail][1]} -- {_pt(west)} -- {_pt(east)} -- {path}"
            if label.value:
                lines.append(rf"\node[crvalue] at {_pt((box.x, box.y))} {{{_number(label.value)}}};")
            if label.grad:
                lines.append(rf"\node[crgrad] at {_pt((box.x, box.y))} {{{_number(label.grad)}}};")
        lines.append(rf"\draw[{style}] {path};")
    lines.append(r"\end{tikzpicture}")
    picture = "\n".join(lines)
    if not standalone:
        return picture + "\n"
    if width > _PAGE_WIDTH:
        picture = "\\resizebox{\\linewidth}{!}{%\n" + picture + "%\n}"
    return ("\\documentclass{article}\n\\usepackage{graphicx}\n\\usepackage{tikz}\n"
            "\\usepackage[margin=2cm]{geometry}\n\\pagestyle{empty}\n\\begin{document}\n\\begin{center}\n"
            + picture + "\n\\end{center}\n\\end{document}\n")


def to_tikz(graph: Graph, engine: str | None = None, max_nodes: int | None = None, blank: bool = False,
            standalone: bool = False) -> str:
    """The graph as a TikZ picture (``\\begin{tikzpicture} ... \\end{tikzpicture}``; with
    ``standalone`` a whole LaTeX document). Laid out by the picture's layout program, so it needs
    Graphviz's dot or graphviz-pure as :meth:`Graph.render` does; ``blank`` leaves out the numbers.
    In your own document: ``\\usepackage{tikz}``; a picture wider than the page can be fitted with
    graphicx's ``\\resizebox{\\linewidth}{!}{...}``."""
    sc = render.scene(graph, max_nodes=max_nodes, blank=blank)
    plain = render.layout(render.scene_dot(sc), "plain", engine).decode("utf-8")
    return scene_tikz(sc, plain, standalone=standalone)
