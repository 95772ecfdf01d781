"""The pictures' geometry, read back from what the layout program drew: on every graph of the seed
worksheet and of the common-gates reference, values sit above their edge and gradients below it (as
the captions say), no two labels overlap, no label overlaps a gate, and no edge runs through a
label. The same pictures as TikZ: parsed structurally always, compiled when a TeX engine is here."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from chainrule import render as R
from chainrule.graph import fmt_value
from chainrule.worksheet import SEED, load, solve_all
from chainrule.worksheet.report import gate_gallery

HAVE_DOT = R._which("dot") is not None
HAVE_PURE = R._which("graphviz-pure") is not None
ENGINES = [
    pytest.param("dot", marks=pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed")),
    pytest.param("graphviz-pure", marks=pytest.mark.skipif(not HAVE_PURE, reason="graphviz-pure is not installed")),
]
SVG = "{http://www.w3.org/2000/svg}"

# Helvetica's advance widths (per 1000 units of the font size), for the characters the pictures use;
# anything else counts as wide (0.67 em), so a box is never estimated smaller than it is drawn.
_WIDTH = {**dict.fromkeys("0123456789", 556), ".": 278, ",": 278, "-": 333, " ": 278, "e": 556, "(": 333,
          ")": 333, "[": 278, "]": 278, "Σ": 650, "σ": 600, "×": 584, "÷": 584, "+": 584, "*": 389, "=": 584,
          "a": 556, "b": 556, "c": 500, "d": 556, "i": 222, "l": 222, "n": 556, "o": 556, "p": 556, "q": 556,
          "r": 333, "s": 500, "t": 278, "u": 556, "x": 500, "y": 500, "z": 500, "g": 556, "h": 556, "m": 833,
          "k": 500, "f": 278, "w": 722, "_": 556}


@dataclass
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    fill: str
    owner: str

    def overlaps(self, o: Box, tol: float = 0.5) -> bool:
        return min(self.x1, o.x1) - max(self.x0, o.x0) > tol and min(self.y1, o.y1) - max(self.y0, o.y0) > tol

    def contains(self, x: float, y: float, inset: float = 1.0) -> bool:
        return self.x0 + inset < x < self.x1 - inset and self.y0 + inset < y < self.y1 - inset


def text_box(el: ET.Element, owner: str) -> Box:
    size = float(el.get("font-size", "14"))
    text = el.text or ""
    width = sum(_WIDTH.get(ch, 670) for ch in text) / 1000 * size
    x, y = float(el.get("x")), float(el.get("y"))
    anchor = el.get("text-anchor", "start")
    x0 = x - width / 2 if anchor == "middle" else (x - width if anchor == "end" else x)
    return Box(x0, y - 0.75 * size, x0 + width, y + 0.22 * size, text, el.get("fill", "black"), owner)


def bezier_points(d: str) -> list[tuple[float, float]]:
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    pts = list(zip(nums[::2], nums[1::2]))
    out = []
    for k in range(0, len(pts) - 3, 3):
        p0, p1, p2, p3 = (np.array(p) for p in pts[k:k + 4])
        for t in np.linspace(0, 1, 25):
            out.append(tuple((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3))
    return out


def geometry(svg: str):
    root = ET.fromstring(svg)
    texts: list[Box] = []
    circles: list[tuple[float, float, float, str]] = []
    rules: dict[str, float] = {}
    label_texts: dict[str, list[Box]] = {}
    paths: list[tuple[str, list[tuple[float, float]]]] = []
    for g in root.iter(f"{SVG}g"):
        cls, gid = g.get("class"), (g.get("id") or "").replace("&#45;", "-")
        if cls == "node":
            for el in g.iter(f"{SVG}text"):
                if (el.text or "").strip():
                    box = text_box(el, gid)
                    texts.append(box)
                    if gid.startswith("label-"):
                        label_texts.setdefault(gid, []).append(box)
            for el in g.iter(f"{SVG}ellipse"):
                circles.append((float(el.get("cx")), float(el.get("cy")), float(el.get("rx")), gid))
            if gid.startswith("label-"):
                poly = next(g.iter(f"{SVG}polygon"))
                ys = {float(p.split(",")[1]) for p in poly.get("points").split()}
                assert len(ys) == 1, f"{gid}: the rule is not one horizontal line"
                rules[gid] = ys.pop()
        elif cls == "edge":
            for el in g.iter(f"{SVG}path"):
                paths.append((gid, bezier_points(el.get("d"))))
    return texts, circles, rules, label_texts, paths


def all_graphs():
    solved = solve_all(load(SEED))
    graphs = [(pid, s.graph) for pid, s in solved.items() if s.has_values]
    graphs += [(item.figure.stem, item.figure.graph) for item in gate_gallery(("add", "mul", "maximum", "copy", "sub",
                                                                               "div", "pow", "exp", "sigmoid"))]
    return graphs


GRAPHS = all_graphs()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name, graph", GRAPHS, ids=[n for n, _ in GRAPHS])
def test_values_above_gradients_below_and_no_collisions(engine: str, name: str, graph) -> None:
    svg = R.layout(graph.to_dot(), "svg", engine).decode("utf-8")
    texts, circles, rules, label_texts, paths = geometry(svg)
    labelled = [e for e in re.findall(r'id="(edge-[^"]+)"', graph.to_dot()) if not e.endswith("-tail")
                and "const-" not in e]
    assert len(rules) == len(labelled) > 0
    # each edge's value (green) is above its rule, its gradient (red) below
    for gid, rule_y in rules.items():
        boxes = label_texts[gid]
        value = [b for b in boxes if b.fill == R.VALUE_COLOR]
        grad = [b for b in boxes if b.fill == R.GRAD_COLOR]
        assert len(value) == 1 and len(grad) == 1, gid
        assert value[0].y1 <= rule_y + 0.5, f"{name} {gid}: the value {value[0].text} is not above its edge"
        assert grad[0].y0 >= rule_y - 0.5, f"{name} {gid}: the gradient {grad[0].text} is not below its edge"
    # no two labels overlap, and no label overlaps a gate it does not belong to
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            assert not a.overlaps(b), f"{name}: {a.text!r} ({a.owner}) overlaps {b.text!r} ({b.owner})"
        for cx, cy, r, owner in circles:
            if owner == a.owner:
                continue
            nx, ny = min(max(cx, a.x0), a.x1), min(max(cy, a.y0), a.y1)
            assert math.hypot(nx - cx, ny - cy) >= r - 0.5, f"{name}: {a.text!r} overlaps the gate {owner}"
    # no edge runs through a label
    for gid, pts in paths:
        for box in texts:
            if box.owner.startswith("label-") or box.owner.startswith("node-"):
                hit = next((p for p in pts if box.contains(*p)), None)
                assert hit is None, f"{name}: the edge {gid} runs through {box.text!r} ({box.owner}) at {hit}"


def test_the_checks_catch_labels_above_the_line() -> None:
    """The geometry checks fail on the old pictures, where both numbers sat above the edge."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg"><g id="label-x-t1-0" class="node">'
           '<text x="10" y="-20" font-size="10" fill="#1a7f37">1.5</text>'
           '<text x="10" y="-9" font-size="10" fill="#cf222e">0.45</text>'
           '<polygon points="0,-5 40,-5 40,-5 0,-5"/></g></svg>')
    _, _, rules, label_texts, _ = geometry(svg)
    grad = next(b for b in label_texts["label-x-t1-0"] if b.fill == R.GRAD_COLOR)
    assert not grad.y0 >= rules["label-x-t1-0"] - 0.5


# ---- TikZ -------------------------------------------------------------------------------------------

NEEDS_LAYOUT = pytest.mark.skipif(not (HAVE_DOT or HAVE_PURE), reason="no Graphviz layout program")


def _balanced(text: str) -> bool:
    """TeX's groups: every { closed, a backslash escaping the character after it (\\{ is a group)."""
    depth, i = 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


@NEEDS_LAYOUT
@pytest.mark.parametrize("name, graph", GRAPHS[:5], ids=[n for n, _ in GRAPHS[:5]])
def test_tikz_structure(name: str, graph) -> None:
    tex = graph.to_tikz()
    assert tex.count(r"\begin{tikzpicture}") == tex.count(r"\end{tikzpicture}") == 1 and _balanced(tex)
    assert "crvalue/.style={above" in tex and "crgrad/.style={below" in tex
    values = re.findall(r"\\node\[crvalue\] at \(([-\d.]+),([-\d.]+)\) \{\$([^$]*)\$\};", tex)
    grads = re.findall(r"\\node\[crgrad\] at \(([-\d.]+),([-\d.]+)\) \{\$([^$]*)\$\};", tex)
    edges = [e for e in re.findall(r'id="(edge-[^"]+)"', graph.to_dot()) if not e.endswith("-tail")
             and "const-" not in e]
    assert len(values) == len(grads) == len(edges)
    drawn = tex.replace(r"\,", "")
    for n in graph.nodes:  # every value and every gradient is typeset
        if n.kind != "const":
            assert re.search(rf"\$\\?-?{re.escape(fmt_value(n.value).lstrip('-'))}\$", drawn), (name, n.name)
    for (vx, vy, _), (gx, gy, _) in zip(values, grads):
        assert (vx, vy) == (gx, gy)  # at one point: the value above it, the gradient below it
        # ... which lies on a straight piece of the edge (the label's rule), drawn as -- (w) -- (e)
        assert re.search(rf"-- \([-\d.]+,{re.escape(vy)}\) -- \([-\d.]+,{re.escape(vy)}\)", tex)
    assert tex.count(r"\node[crgate") == len(graph.ops)  # one circle per gate
    assert tex.count(r"\draw[credge") == len(edges) + sum(n.kind == "const" for n in graph.nodes)


TEX = shutil.which("pdflatex")


@pytest.mark.skipif(TEX is None or not (HAVE_DOT or HAVE_PURE), reason="no TeX engine (pdflatex) here")
def test_tikz_and_the_latex_key_compile(tmp_path: Path) -> None:
    from chainrule.worksheet import solve_worksheet

    graph = dict(GRAPHS)["q4"]
    graph.render(tmp_path / "q4.tex")
    solve_worksheet(tmp_path, formats=("tex",), blank=True)
    for doc in ("q4.tex", "worksheet.tex", "worksheet-blank.tex"):
        res = subprocess.run([TEX, "-interaction=nonstopmode", "-halt-on-error", doc], cwd=tmp_path,
                             capture_output=True, timeout=300, check=False)
        assert res.returncode == 0, res.stdout.decode("utf-8", "replace")[-2000:]
        assert (tmp_path / doc.replace(".tex", ".pdf")).read_bytes().startswith(b"%PDF")
