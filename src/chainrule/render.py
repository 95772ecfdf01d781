"""Pictures of a traced :class:`~chainrule.graph.Graph`: Graphviz DOT, and SVG/PNG/PDF files.

The picture follows the classic course diagrams: inputs on the left, each gate a circle with its
symbol (``+``, ``×``, ``exp``, ``σ``) and the node's name under it, and on every edge the value that
flows forward (green, above) and the gradient that flows back (red, below). A value used more
than once shows its total gradient (Σ) at its node, since its edges carry one share each.

Layout is done by Graphviz's ``dot`` program when installed, else by ``graphviz-pure`` (a
self-contained port of Graphviz on PyPI, the ``render`` extra: ``pip install chainrule[render]``).
graphviz-pure writes no PDF, so for it a PDF is made here around its JPEG (one page, one image).
DOT needs neither program. SVG node ids are ``node-<name>`` so a web page can highlight nodes.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .fileio import atomic_write

if TYPE_CHECKING:
    from .graph import Graph, Node

__all__ = ["to_dot", "render", "to_svg", "layout", "find_engine", "RenderError", "GraphTooLargeError",
           "MAX_NODES"]

#: Graphs with more nodes than this are refused: such a picture is unreadable and slow to lay out.
MAX_NODES = 5000
#: Above this many nodes, edges carry no labels (the layout stays fast; values are in the table).
LABEL_LIMIT = 400
#: An edge is "far" when it skips more than this many ranks; in a graph of more than
#: COPY_ABOVE_NODES nodes, or whose far edges skip more than COPY_ABOVE_SPAN ranks in all, the
#: value is drawn again (by name) beside each far use: dot's layout time explodes with long edges.
FAR = 3
COPY_ABOVE_NODES = 100
COPY_ABOVE_SPAN = 60
#: Seconds a layout program may run before it is stopped.
TIMEOUT = 120.0

VALUE_COLOR = "#1a7f37"  # green: values, forward
GRAD_COLOR = "#cf222e"  # red: gradients, backward
EDGE_COLOR = "#57606a"
_DPI = 144

_INSTALL = (
    "install one of: `pip install 'chainrule[render]'` (graphviz-pure, a self-contained Graphviz), "
    "or Graphviz's dot program (`apt-get install graphviz`, `brew install graphviz`, "
    "`conda install graphviz`); g.to_dot() works without either"
)


class RenderError(RuntimeError):
    """No program to draw with, or the layout program failed."""


class GraphTooLargeError(ValueError):
    """The graph has too many nodes to draw usefully."""


# ---------------------------------------------------------------------------------------------
# DOT
# ---------------------------------------------------------------------------------------------


def _short(v: Any) -> str:
    from .graph import fmt_value

    text = fmt_value(v, max_items=4)
    if len(text) > 36:
        shape = np.shape(v)
        return f"array {shape}"
    return text


def gate_symbol(node: Node) -> str:
    """What a gate's circle shows: the operator of an infix gate (``+``, ``×``), the function name
    of a call (``exp``, ``σ``), else the gate's display form with x, y for its operands."""
    gate = node.gate
    if gate is None:
        return node.name
    fmt = gate.fmt
    pick = re.fullmatch(r"\{0\}(\[.*\])", fmt)
    if pick:  # indexing: the index it picks, [0] (a picture of w[0], w[1], w[2] tells them apart)
        from .symbolic import _EQUATION, fill_template

        return fill_template(pick.group(1), lambda k, enclosed: "", 1, dict(node.params), gate, _EQUATION.param)
    infix = re.fullmatch(r"\{0\} (\S+) \{1\}", fmt)
    if infix:
        return {"*": "×", "-": "−", "/": "÷"}.get(infix.group(1), infix.group(1))
    call = re.fullmatch(r"([^\s{}()\[\]]+)\(.*\)", fmt)  # a call, whatever its operands and params
    if call:
        return call.group(1)
    if fmt == "-{0}":
        return "neg"
    if fmt in ("{0}", "{2}"):
        return "="  # identity, guard (a value passed on): not an "x" to be read as ×
    text = fmt.replace("{0}", "x").replace("{1}", "y").replace("{2}", "z").replace(" ", "")
    return re.sub(r"\{(\w+)\}", "…", text)  # params (x[{index}]) are in the node's tooltip


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _check_size(graph: Graph, max_nodes: int | None) -> None:
    limit = MAX_NODES if max_nodes is None else max_nodes
    if len(graph.nodes) > limit:
        raise GraphTooLargeError(
            f"this graph has {len(graph.nodes)} nodes, more than {limit} can be drawn usefully; read it with "
            "g.staged() or g.table(), trace a smaller piece (fewer layers, smaller loops), or pass "
            "max_nodes= to draw it anyway")


@dataclass
class SceneNode:
    """One thing in the picture: a graph node (input, gate, constant, a far use's copy), the output's
    sink, or the label of an edge (its value above the line, its gradient below)."""

    key: str  # the DOT node id (n0, l3, r0)
    kind: str  # "input", "gate", "const", "copy", "result" or "label"
    html_id: str  # the SVG element id: node-x, const-1, label-x-t1-0, node-out-result
    name: str = ""
    symbol: str = ""  # a gate's symbol
    value: str | None = None  # what flows forward (labels), a constant's or an unused input's value
    grad: str | None = None  # what flows back (labels), the total of a value used twice (Σ), an unused input's
    tooltip: str | None = None
    css_class: str | None = None


@dataclass
class SceneEdge:
    """One line: ``kind`` "arrow" (tail to head), "const" (dashed), "in" (tail to the west end of a
    label's rule) or "out" (from the east end of the rule to the head, with the arrow)."""

    tail: str
    head: str
    html_id: str
    kind: str


@dataclass
class Scene:
    """What :func:`to_dot` draws and :mod:`chainrule.tikz` typesets, laid out by the same program."""

    nodes: list[SceneNode]
    edges: list[SceneEdge]
    blank: bool


def scene(graph: Graph, max_nodes: int | None = None, blank: bool = False) -> Scene:
    """The picture as data. Each labelled edge is drawn through a label node of its own, whose rule
    joins the two halves of the edge: the value sits above the line and the gradient below it, and
    the layout program keeps every label clear of every other (a label is a node to it).
    ``blank`` keeps the nodes and the places for the numbers, but no numbers (a student's handout)."""
    from .graph import _backward_step, _uses, equation_text, fmt_value

    _check_size(graph, max_nodes)
    labels = len(graph.nodes) <= LABEL_LIMIT
    uses = _uses(graph)
    # per edge (consumer, position): the gradient share that flows back along it
    shares: dict[tuple[int, int], Any] = {}
    if graph.has_grads and labels:
        for n in graph.ops:
            step = _backward_step(n)
            if step is None:
                continue
            for part in step.parts:
                k = next(i for i, inp in enumerate(n.inputs) if inp is part.input
                         and (id(n), i) not in shares)
                shares[(id(n), k)] = part.grad
    number = (lambda v: None) if blank else _short
    keys = {id(n): f"n{i}" for i, n in enumerate(graph.nodes)}
    nodes: list[SceneNode] = []
    edges: list[SceneEdge] = []
    const_k = 0
    const_ids: dict[int, str] = {}
    for n in graph.nodes:
        key = keys[id(n)]
        if n.kind == "const":
            const_k += 1
            const_ids[id(n)] = f"const-{const_k}"
            nodes.append(SceneNode(key, "const", f"const-{const_k}", value=_short(n.value)))
            continue
        fan = uses.get(id(n), 0) > 1 and n.grad is not None and labels
        unused = n.kind == "input" and uses.get(id(n), 0) == 0 and labels
        value = number(n.value) if unused else None
        grad = number(n.grad) if (fan or unused) and n.grad is not None else None
        if n.kind == "input":
            tip = f"input {n.name} = {fmt_value(n.value)}"
            nodes.append(SceneNode(key, "input", f"node-{n.name}", n.name, value=value, grad=grad,
                                   tooltip=None if blank else tip))
        else:
            tip = f"{n.name} = {equation_text(n)} = {fmt_value(n.value)}"
            if n.grad is not None:
                tip += f"; ∂{graph.output.name}/∂{n.name} = {fmt_value(n.grad)}"
            nodes.append(SceneNode(key, "gate", f"node-{n.name}", n.name, gate_symbol(n), grad=grad,
                                   tooltip=None if blank else tip))
    # In a large graph, a value used far downstream (a weight shared by every layer, a skip
    # connection) is drawn again, by name, beside each distant use: long edges make dot's layout
    # very slow (minutes for a few hundred nodes).
    depth: dict[int, int] = {}
    for n in graph.nodes:
        depth[id(n)] = 1 + max((depth[id(i)] for i in n.inputs), default=-1)
    far = [depth[id(n)] - depth[id(i)] for n in graph.ops for i in n.inputs
           if i.kind != "const" and depth[id(n)] - depth[id(i)] > FAR]
    copy_far = len(graph.nodes) > COPY_ABOVE_NODES or sum(far) > COPY_ABOVE_SPAN
    copies: dict[int, int] = {}

    def connect(tail: str, head: str, eid: str, value: Any, grad: Any) -> None:
        if not labels:
            edges.append(SceneEdge(tail, head, eid, "arrow"))
            return
        label = f"l{len(edges)}"
        nodes.append(SceneNode(label, "label", eid.replace("edge-", "label-", 1), value=number(value),
                               grad=None if grad is None else number(grad)))
        edges.append(SceneEdge(tail, label, f"{eid}-tail", "in"))
        edges.append(SceneEdge(label, head, eid, "out"))

    for n in graph.ops:
        for k, inp in enumerate(n.inputs):
            src = keys[id(inp)]
            if copy_far and inp.kind != "const" and depth[id(n)] - depth[id(inp)] > FAR:
                copies[id(inp)] = copies.get(id(inp), 1) + 1
                src = f"{src}_{copies[id(inp)]}"
                nodes.append(SceneNode(src, "copy", f"node-{inp.name}-use{copies[id(inp)]}", inp.name,
                                       css_class=f"copy-of-{inp.name}"))
            eid = f"edge-{const_ids[id(inp)] if inp.kind == 'const' else inp.name}-{n.name}-{k}"
            if inp.kind == "const":
                edges.append(SceneEdge(src, keys[id(n)], eid, "const"))
            else:
                connect(src, keys[id(n)], eid, inp.value, shares.get((id(n), k)))
    for i, o in enumerate(graph.outputs):
        nodes.append(SceneNode(f"r{i}", "result", f"node-{o.name}-result", o.name))
        connect(keys[id(o)], f"r{i}", f"edge-{o.name}-result", o.value, o.grad)
    return Scene(nodes, edges, blank)


#: A blank label's room for a number to be written in by hand (points).
_BLANK_CELL = 'width="52" height="15" fixedsize="true"'


def _label_html(n: SceneNode, blank: bool) -> str:
    def cell(text: str | None, color: str) -> str:
        if blank:
            return f"<td {_BLANK_CELL}> </td>"
        body = f'<font color="{color}" point-size="10">{html.escape(text)}</font>' if text is not None else " "
        return f"<td>{body}</td>"

    return (f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1" color="{EDGE_COLOR}">'
            f"<tr>{cell(n.value, VALUE_COLOR)}</tr><hr/><tr>{cell(n.grad, GRAD_COLOR)}</tr></table>>")


def _node_dot(n: SceneNode, blank: bool) -> str:
    tip = f", tooltip={_dot_str(n.tooltip)}" if n.tooltip else ""
    extra = ""
    if n.value is not None:
        extra += f'<br/><font point-size="9" color="{VALUE_COLOR}">{html.escape(n.value)}</font>'
    if n.grad is not None:  # a total (Σ) where the value is used twice; an unused input's own gradient
        total = "" if n.value is not None else "Σ "
        extra += f'<br/><font point-size="9" color="{GRAD_COLOR}">{total}{html.escape(n.grad)}</font>'
    if n.kind == "const":
        return (f'  {n.key} [id="{n.html_id}", shape=plaintext, width=0, height=0, margin=0.04, '
                f'fontcolor="#57606a", fontsize=10, '
                f"label={_dot_str(n.value or '')}];")
    if n.kind == "label":
        return f'  {n.key} [id="{n.html_id}", shape=plain, label={_label_html(n, blank)}];'
    if n.kind in ("input", "copy", "result"):
        cls = f", class={_dot_str(n.css_class)}" if n.css_class else ""
        return (f"  {n.key} [id={_dot_str(n.html_id)}{cls}, shape=plaintext, "
                f"label=<<b>{html.escape(n.name)}</b>{extra}>{tip}];")
    return (f"  {n.key} [id={_dot_str(n.html_id)}, shape=circle, margin=0.02, "
            f'label=<<font point-size="15">{html.escape(n.symbol)}</font><br/><font point-size="9" '
            f'color="#57606a">{html.escape(n.name)}</font>{extra}>{tip}];')


def _edge_dot(e: SceneEdge) -> str:
    attrs = [f"id={_dot_str(e.html_id)}"]
    tail, head = e.tail, e.head
    if e.kind == "const":
        attrs.append("style=dashed")
    elif e.kind == "in":
        head = f"{head}:w"
        attrs.append("dir=none")
    elif e.kind == "out":
        tail = f"{tail}:e"
    return f"  {tail} -> {head} [{', '.join(attrs)}];"


def scene_dot(sc: Scene) -> str:
    """A scene as Graphviz DOT text."""
    # labels are nodes of their own, in ranks between the gates': closer ranks keep the width as it was
    spacing = "nodesep=0.18, ranksep=0.22" if any(n.kind == "label" for n in sc.nodes) else \
        "nodesep=0.25, ranksep=0.5"
    lines = [
        "digraph chainrule {",
        f'  graph [id="chainrule-graph", rankdir=LR, bgcolor="white", {spacing}, fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=12, penwidth=1.2];',
        f'  edge [fontname="Helvetica", fontsize=10, arrowsize=0.6, color="{EDGE_COLOR}"];',
    ]
    lines += [_node_dot(n, sc.blank) for n in sc.nodes]
    lines += [_edge_dot(e) for e in sc.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, max_nodes: int | None = None, blank: bool = False) -> str:
    """The graph as Graphviz DOT text (deterministic: the same graph gives the same text); ``blank``
    draws the nodes and edges with empty places for the values and gradients."""
    return scene_dot(scene(graph, max_nodes=max_nodes, blank=blank))


# ---------------------------------------------------------------------------------------------
# layout programs
# ---------------------------------------------------------------------------------------------


def find_engine(engine: str | None = None) -> tuple[str, str]:
    """``(program path, kind)`` of the layout program to use; ``kind`` is ``"dot"`` or
    ``"graphviz-pure"``. ``engine=None`` prefers Graphviz's dot, then graphviz-pure."""
    if engine not in (None, "auto", "dot", "graphviz-pure"):
        raise ValueError(f"engine must be 'dot', 'graphviz-pure' or None, not {engine!r}")
    if engine in (None, "auto", "dot"):
        prog = _which("dot")
        if prog:
            return prog, "dot"
        if engine == "dot":
            raise RenderError("Graphviz's dot program is not installed (apt-get install graphviz, "
                              "brew install graphviz, conda install graphviz), or use engine='graphviz-pure'")
    prog = _which("graphviz-pure")
    if prog:
        return prog, "graphviz-pure"
    if engine == "graphviz-pure":
        raise RenderError("graphviz-pure is not installed: pip install 'chainrule[render]' (or pip install "
                          "graphviz-pure)")
    raise RenderError(f"drawing a graph needs a Graphviz layout program: {_INSTALL}")


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # a program installed by pip into this interpreter's environment, not on PATH (no activation)
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        cand = d / (name + (".exe" if os.name == "nt" else ""))
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def layout(dot_text: str, fmt: str, engine: str | None = None) -> bytes:
    """Lay out DOT text into ``fmt`` (``svg``, ``png`` or ``pdf``) bytes; ``plain`` gives the positions
    (Graphviz's plain text format), from which :mod:`chainrule.tikz` typesets the same picture."""
    if fmt not in ("svg", "png", "pdf", "plain"):
        raise ValueError(f"cannot draw to {fmt!r}: use svg, png or pdf")
    prog, kind = find_engine(engine)
    if kind == "graphviz-pure" and fmt == "pdf":
        return jpeg_to_pdf(_run(prog, dot_text, "jpeg", [f"-Gdpi={_DPI}"]), _DPI)
    extra = [f"-Gdpi={_DPI}"] if fmt == "png" else []
    return _run(prog, dot_text, fmt, extra)


def layout_many(dot_texts: list[str], fmt: str, engine: str | None = None) -> list[bytes]:
    """Lay out several graphs with one run of the layout program (starting it is most of the time a
    small graph takes): ``svg``, ``png`` or ``plain`` bytes for each, in order."""
    if fmt not in ("svg", "png", "plain"):
        raise ValueError(f"cannot lay out several graphs into {fmt!r}: use svg, png or plain")
    if not dot_texts:
        return []
    data = layout("".join(dot_texts), fmt, engine)
    if fmt == "svg":
        parts = [b"<?xml" + chunk for chunk in data.split(b"<?xml")[1:]]
    elif fmt == "plain":
        parts = [chunk + b"stop\n" for chunk in data.split(b"stop\n")[:-1]]
    else:  # PNG files end with their IEND chunk and its checksum
        marker = b"IEND\xaeB`\x82"
        parts = [chunk + marker for chunk in data.split(marker)[:-1]]
    if len(parts) != len(dot_texts):
        raise RenderError(f"the layout program returned {len(parts)} pictures for {len(dot_texts)} graphs")
    return parts


def _run(prog: str, dot_text: str, fmt: str, extra: list[str]) -> bytes:
    try:
        res = subprocess.run([prog, f"-T{fmt}", *extra], input=dot_text.encode("utf-8"), capture_output=True,
                             timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{Path(prog).name} took more than {TIMEOUT:.0f} s to lay out the graph; draw a "
                          "smaller piece of it") from None
    except OSError as e:
        raise RenderError(f"could not run {prog}: {e}") from None
    if res.returncode != 0 or not res.stdout:
        msg = res.stderr.decode("utf-8", "replace").strip()
        raise RenderError(f"{Path(prog).name} -T{fmt} failed (exit {res.returncode}): {msg}")
    return res.stdout


_EXTENSIONS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot", ".tex": "tex"}


def render(graph: Graph, path: str | os.PathLike[str], engine: str | None = None,
           max_nodes: int | None = None) -> Path:
    """Write the picture to ``path``; the format comes from its extension (.svg .png .pdf .dot, and
    .tex: a LaTeX document holding the picture as TikZ)."""

    path = Path(path)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the picture format from {path.name!r}: end the name with "
                         ".svg, .png, .pdf, .dot or .tex")
    if fmt == "tex":
        from .tikz import to_tikz

        data = to_tikz(graph, engine=engine, max_nodes=max_nodes, standalone=True).encode("utf-8")
    else:
        dot_text = to_dot(graph, max_nodes=max_nodes)
        data = dot_text.encode("utf-8") if fmt == "dot" else layout(dot_text, fmt, engine)
    atomic_write(path, data)  # a failed write leaves an earlier picture whole
    return path


def to_svg(graph: Graph, engine: str | None = None, max_nodes: int | None = None) -> str:
    """The picture as SVG text."""
    return layout(to_dot(graph, max_nodes=max_nodes), "svg", engine).decode("utf-8")


def _cached_svg(graph: Graph) -> str:
    # Jupyter asks for both reprs; lay the graph out once (a traced graph does not change)
    cached = graph.__dict__.get("_svg_cache")
    if cached is None:
        cached = graph.__dict__["_svg_cache"] = to_svg(graph)
    return cached


def repr_svg(graph: Graph) -> str | None:
    """Jupyter's SVG view; None (so Jupyter falls back to text) when nothing can draw it."""
    try:
        return _cached_svg(graph)
    except (RenderError, GraphTooLargeError):
        return None


def repr_html(graph: Graph) -> str:
    """Jupyter's HTML view: the picture, or the staged equations with a note saying why not."""
    try:
        return f'<div class="chainrule-graph">{_strip_xml_header(_cached_svg(graph))}</div>'
    except (RenderError, GraphTooLargeError) as e:
        return (f'<div class="chainrule-graph"><pre>{html.escape(graph.staged())}</pre>'
                f"<p><i>{html.escape(str(e))}</i></p></div>")


def _strip_xml_header(svg: str) -> str:
    at = svg.find("<svg")
    return svg[at:] if at >= 0 else svg


# ---------------------------------------------------------------------------------------------
# a PDF around one JPEG (graphviz-pure writes no PDF)
# ---------------------------------------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's start-of-frame marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            raise RenderError("the layout program wrote a malformed JPEG")
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h, data[i + 9]
        i += 2 + length
    raise RenderError("the layout program wrote a JPEG without a frame header")


def jpeg_to_pdf(jpeg: bytes, dpi: float) -> bytes:
    """A one-page PDF showing the JPEG at ``dpi`` (the JPEG is embedded as it is: DCTDecode)."""
    w, h, comps = _jpeg_size(jpeg)
    pw, ph = w * 72.0 / dpi, h * 72.0 / dpi
    space = {1: "/DeviceGray", 3: "/DeviceRGB", 4: "/DeviceCMYK"}.get(comps, "/DeviceRGB")
    content = f"q {pw:.2f} 0 0 {ph:.2f} 0 0 cm /Im0 Do Q".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {pw:.2f} {ph:.2f}] "
         "/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>").encode("ascii"),
        (f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace {space} "
         f"/BitsPerComponent 8 /Filter /DCTDecode /Length {len(jpeg)} >>\nstream\n").encode("ascii")
        + jpeg + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode("ascii") + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for k, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{k} 0 obj\n".encode("ascii") + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode("ascii")
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode("ascii")
    return bytes(out)
