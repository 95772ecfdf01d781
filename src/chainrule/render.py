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
    call = re.fullmatch(r"([^\s{}()]+)\((?:\{0\}|…)\)", fmt)
    if call:
        return call.group(1)
    if fmt == "-{0}":
        return "neg"
    if fmt == "{0}":
        return "="  # identity (a gradient passed on unchanged): not an "x" to be read as ×
    return fmt.replace("{0}", "x").replace("{1}", "y").replace("{2}", "z").replace(" ", "")


def _dot_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _edge_label(value: Any, grad: Any) -> str:
    parts = [f'<font color="{VALUE_COLOR}">{html.escape(_short(value))}</font>']
    if grad is not None:
        parts.append(f'<font color="{GRAD_COLOR}">{html.escape(_short(grad))}</font>')
    return "<" + "<br/>".join(parts) + ">"


def _check_size(graph: Graph, max_nodes: int | None) -> None:
    limit = MAX_NODES if max_nodes is None else max_nodes
    if len(graph.nodes) > limit:
        raise GraphTooLargeError(
            f"this graph has {len(graph.nodes)} nodes, more than {limit} can be drawn usefully; read it with "
            "g.staged() or g.table(), trace a smaller piece (fewer layers, smaller loops), or pass "
            "max_nodes= to draw it anyway")


def to_dot(graph: Graph, max_nodes: int | None = None) -> str:
    """The graph as Graphviz DOT text (deterministic: the same graph gives the same text)."""
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
    ids = {id(n): f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = [
        "digraph chainrule {",
        '  graph [id="chainrule-graph", rankdir=LR, bgcolor="white", nodesep=0.25, ranksep=0.5, '
        'fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=12, penwidth=1.2];',
        '  edge [fontname="Helvetica", fontsize=10, arrowsize=0.6, color="#57606a"];',
    ]
    const_k = 0
    const_ids: dict[int, str] = {}
    for n in graph.nodes:
        nid = ids[id(n)]
        fan = uses.get(id(n), 0) > 1 and n.grad is not None and labels
        total = (f'<br/><font point-size="9" color="{GRAD_COLOR}">Σ {html.escape(_short(n.grad))}</font>'
                 if fan else "")
        if n.kind == "input" and uses.get(id(n), 0) == 0 and labels:  # unused: no edge shows it
            total = f'<br/><font point-size="9" color="{VALUE_COLOR}">{html.escape(_short(n.value))}</font>'
            if n.grad is not None:
                total += f'<br/><font point-size="9" color="{GRAD_COLOR}">{html.escape(_short(n.grad))}</font>'

        if n.kind == "const":
            const_k += 1
            const_ids[id(n)] = f"const-{const_k}"
            lines.append(f'  {nid} [id="const-{const_k}", shape=plaintext, fontcolor="#57606a", fontsize=10, '
                         f'label={_dot_str(_short(n.value))}];')
        elif n.kind == "input":
            tip = f"input {n.name} = {fmt_value(n.value)}"
            lines.append(f'  {nid} [id={_dot_str("node-" + n.name)}, shape=plaintext, '
                         f'label=<<b>{html.escape(n.name)}</b>{total}>, tooltip={_dot_str(tip)}];')
        else:
            tip = f"{n.name} = {equation_text(n)} = {fmt_value(n.value)}"
            if n.grad is not None:
                tip += f"; ∂{graph.output.name}/∂{n.name} = {fmt_value(n.grad)}"
            sym_ = html.escape(gate_symbol(n))
            lines.append(
                f'  {nid} [id={_dot_str("node-" + n.name)}, shape=circle, margin=0.02, '
                f'label=<<font point-size="15">{sym_}</font><br/><font point-size="9" color="#57606a">'
                f'{html.escape(n.name)}</font>{total}>, tooltip={_dot_str(tip)}];')
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
    for n in graph.ops:
        for k, inp in enumerate(n.inputs):
            src = ids[id(inp)]
            if copy_far and inp.kind != "const" and depth[id(n)] - depth[id(inp)] > FAR:
                copies[id(inp)] = copies.get(id(inp), 1) + 1
                src = f"{src}_{copies[id(inp)]}"
                lines.append(f'  {src} [id={_dot_str(f"node-{inp.name}-use{copies[id(inp)]}")}, '
                             f'class={_dot_str("copy-of-" + inp.name)}, shape=plaintext, '
                             f'label=<<b>{html.escape(inp.name)}</b>>];')
            eid = f"edge-{_id_name(inp, const_ids)}-{n.name}-{k}"
            attrs = [f"id={_dot_str(eid)}"]
            if labels and inp.kind != "const":
                attrs.append(f"label={_edge_label(inp.value, shares.get((id(n), k)))}")
            if inp.kind == "const":
                attrs.append('style=dashed')
            lines.append(f"  {src} -> {ids[id(n)]} [{', '.join(attrs)}];")
    for i, o in enumerate(graph.outputs):
        sink = f"r{i}"
        lines.append(f'  {sink} [id={_dot_str("node-" + o.name + "-result")}, shape=plaintext, '
                     f'label=<<b>{html.escape(o.name)}</b>>];')
        attrs = [f'id={_dot_str("edge-" + o.name + "-result")}']
        if labels:
            attrs.append(f"label={_edge_label(o.value, o.grad)}")
        lines.append(f"  {ids[id(o)]} -> {sink} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _id_name(n: Node, const_ids: dict[int, str]) -> str:
    return const_ids[id(n)] if n.kind == "const" else n.name


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
    """Lay out DOT text into ``fmt`` (``svg``, ``png`` or ``pdf``) bytes."""
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"cannot draw to {fmt!r}: use svg, png or pdf")
    prog, kind = find_engine(engine)
    if kind == "graphviz-pure" and fmt == "pdf":
        return jpeg_to_pdf(_run(prog, dot_text, "jpeg", [f"-Gdpi={_DPI}"]), _DPI)
    extra = [f"-Gdpi={_DPI}"] if fmt == "png" else []
    return _run(prog, dot_text, fmt, extra)


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


_EXTENSIONS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}


def render(graph: Graph, path: str | os.PathLike[str], engine: str | None = None,
           max_nodes: int | None = None) -> Path:
    """Write the picture to ``path``; the format comes from its extension (.svg .png .pdf .dot)."""
    path = Path(path)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the picture format from {path.name!r}: end the name with "
                         ".svg, .png, .pdf or .dot")
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
