"""A small document model for keys and handouts, written as Markdown, self-contained HTML or LaTeX.

Blocks: headings, prose (a teaching assistant's Markdown: paragraphs, ``-`` lists, ``**bold**``,
``*emphasis*``, ```code```, ``$math$``), code, display equations (each as text and as LaTeX),
figures (a traced graph, drawn once per format: an SVG file beside the Markdown, inline SVG in HTML,
TikZ in LaTeX), tables, a gallery (the common gates) and empty space for handouts.

HTML is one file with nothing outside it: pictures are inlined, and math is MathML (converted from
the LaTeX by ``latex2mathml`` when it is installed, else shown as text). LaTeX compiles with
pdflatex and the ``amsmath``, ``tikz`` and ``graphicx`` packages.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import latex as L

__all__ = ["Doc", "Figure", "GalleryItem", "inline_segments", "markdown_blocks"]


@dataclass
class Figure:
    """A picture of a traced graph in every format a writer may ask for (filled in by the caller)."""

    stem: str  # file name without extension
    alt: str
    graph: Any = None
    blank: bool = False  # nodes and edges, no numbers
    svg: str | None = None
    png: bytes | None = None
    tikz: str | None = None
    dot: str = ""
    problem: str | None = None  # why it could not be drawn
    file: str | None = None  # the picture file written beside a Markdown report


@dataclass
class GalleryItem:
    title: str
    text: str
    equations: list[tuple[str, str]]
    figure: Figure


@dataclass
class Doc:
    """A document as a list of blocks, written by :meth:`markdown`, :meth:`html` or :meth:`latex`."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def prose(self, text: str) -> None:
        if text.strip():
            self.blocks.append(("prose", text))

    def p(self, text: str) -> None:
        self.blocks.append(("prose", text))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (text.rstrip("\n"), lang)))

    def math(self, lines: list[tuple[str, str]], code: bool = False) -> None:
        """Display equations, each ``(text, latex)``; ``code``: Markdown shows them as text in a code
        block (staged equations, which read like the generated code) rather than as LaTeX."""
        if lines:
            self.blocks.append(("code-math" if code else "math", lines))

    def figure(self, fig: Figure) -> None:
        self.blocks.append(("figure", fig))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def gallery(self, items: list[GalleryItem]) -> None:
        self.blocks.append(("gallery", items))

    def space(self, lines: int) -> None:
        self.blocks.append(("space", lines))

    def figures(self) -> list[Figure]:
        out = [b for k, b in self.blocks if k == "figure"]
        out += [i.figure for k, b in self.blocks if k == "gallery" for i in b]
        return out

    # ---- Markdown --------------------------------------------------------------------------------
    def markdown(self) -> str:
        out: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"{'#' * v[0]} {v[1]}")
            elif kind == "prose":
                out.append(v.strip())
            elif kind == "code":
                out.append(f"```{v[1]}\n{v[0]}\n```")
            elif kind == "math":
                out.append(_md_math(v))
            elif kind == "code-math":
                out.append("```\n" + "\n".join(t for t, _ in v) + "\n```")
            elif kind == "figure":
                out.append(_md_figure(v))
            elif kind == "table":
                out.append(_md_table(*v))
            elif kind == "gallery":
                rows = [[f"**{i.title}**", i.text, "<br>".join(f"${t}$" for _, t in i.equations),
                         _md_figure(i.figure, inline=True)] for i in v]
                out.append(_md_table(["gate", "what it does", "local gradients", "example"], rows, escape=False))
            elif kind == "space":
                out.append("\n".join(["&nbsp;"] * max(1, v // 4)))
        return "\n\n".join(out) + "\n"

    # ---- HTML --------------------------------------------------------------------------------
    def html(self) -> str:
        math = _mathml()
        body: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                body.append(f"<h{v[0]}>{_html_inline(v[1], math)}</h{v[0]}>")
            elif kind == "prose":
                body.append(_html_prose(v, math))
            elif kind == "code":
                lang = html.escape(v[1] or "text")
                body.append(f'<pre><code class="language-{lang}">{html.escape(v[0])}</code></pre>')
            elif kind in ("math", "code-math"):
                body.append('<div class="math">' + "".join(_html_equation(t, tex, math) for t, tex in v) + "</div>")
            elif kind == "figure":
                attrs = ' class="blank"' if v.blank else ""
                body.append(f"<figure{attrs}>{_html_figure(v)}</figure>")
            elif kind == "table":
                header, rows = v
                head = "".join(f"<th>{_html_inline(c, math)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{_html_inline(c, math)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "gallery":
                cards = []
                for i in v:
                    eqs = "".join(_html_equation(t, tex, math) for t, tex in i.equations)
                    cards.append(f'<div class="gate"><h4>{html.escape(i.title)}</h4><p>{_html_inline(i.text, math)}'
                                 f'</p><div class="math">{eqs}</div>{_html_figure(i.figure)}</div>')
                body.append('<div class="gallery">' + "".join(cards) + "</div>")
            elif kind == "space":
                body.append(f'<div class="space" style="height:{1.4 * v:.1f}em"></div>')
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")

    # ---- LaTeX -------------------------------------------------------------------------------
    def latex(self) -> str:
        body: list[str] = []
        sections = {1: r"\section*", 2: r"\section*", 3: r"\subsection*", 4: r"\subsubsection*"}
        for kind, v in self.blocks:
            if kind == "h":
                if v[0] == 1:
                    body.append(rf"\begin{{center}}{{\LARGE\bfseries {_tex_inline(v[1])}}}\end{{center}}")
                else:
                    command = sections.get(v[0], r"\paragraph")
                    body.append(f"{command}{{{_tex_inline(v[1])}}}")
            elif kind == "prose":
                body.append(_tex_prose(v))
            elif kind == "code":
                body.append("\\begin{verbatim}\n" + L.ascii_code(v[0]) + "\n\\end{verbatim}")
            elif kind in ("math", "code-math"):
                body.append(_tex_math(v))
            elif kind == "figure":
                body.append(_tex_figure(v))
            elif kind == "table":
                body.append(_tex_table(*v))
            elif kind == "gallery":
                for i in v:
                    eqs = r"\\ ".join(f"${tex}$" for _, tex in i.equations)
                    body.append(rf"\noindent\begin{{minipage}}[c]{{0.52\linewidth}}\textbf{{{L.text(i.title)}}}: "
                                rf"{_tex_inline(i.text)}\\[2pt] {eqs}\end{{minipage}}\hfill"
                                rf"\begin{{minipage}}[c]{{0.44\linewidth}}\centering "
                                rf"{_tex_fit(_tex_picture(i.figure))}\end{{minipage}}\par\medskip")
            elif kind == "space":
                body.append(rf"\vspace{{{1.2 * v:.1f}em}}")
        return ("\\documentclass[11pt]{article}\n\\usepackage[margin=2cm]{geometry}\n\\usepackage{amsmath,amssymb}\n"
                "\\usepackage{graphicx}\n\\usepackage{tikz}\n\\usepackage{xcolor}\n"
                "\\setlength{\\parindent}{0pt}\\setlength{\\parskip}{0.5em}\n"
                "\\renewcommand{\\labelitemi}{$\\bullet$}\n"  # the math bullet: no text-companion font needed
                f"\\title{{{L.text(self.title)}}}\n\\date{{}}\n\\begin{{document}}\n"
                + "\n\n".join(body) + "\n\\end{document}\n")


# ---------------------------------------------------------------------------------------------
# a teaching assistant's Markdown: blocks and inline markup
# ---------------------------------------------------------------------------------------------

_INLINE = re.compile(r"(?P<esc>\\[\\`*_$#{}\[\]])|(?P<math>\$[^$]+\$)|(?P<code>`[^`]+`)|(?P<bold>\*\*[^*]+\*\*)"
                     r"|(?P<em>\*[^*\s][^*]*\*)")


def inline_segments(text: str) -> list[tuple[str, str]]:
    """Inline markup as ``(kind, content)``: text, math, code, bold, em (escapes become text)."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            out.append(("text", text[pos:m.start()]))
        kind = m.lastgroup or "text"
        g = m.group()
        if kind == "esc":
            out.append(("text", g[1]))
        elif kind == "math":
            out.append(("math", g[1:-1]))
        elif kind == "code":
            out.append(("code", g[1:-1]))
        elif kind == "bold":
            out.append(("bold", g[2:-2]))
        else:
            out.append(("em", g[1:-1]))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def markdown_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Paragraphs (``("p", [text])``) and bullet lists (``("ul", items)``), split at blank lines."""
    blocks: list[tuple[str, list[str]]] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in chunk.splitlines() if ln.strip()]
        if not lines:
            continue
        if all(re.match(r"\s*[-*]\s+", ln) or (k and ln.startswith(" ")) for k, ln in enumerate(lines)) \
                and re.match(r"\s*[-*]\s+", lines[0]):
            items: list[str] = []
            for ln in lines:
                m = re.match(r"\s*[-*]\s+(.*)", ln)
                if m:
                    items.append(m.group(1))
                else:
                    items[-1] += " " + ln.strip()
            blocks.append(("ul", items))
        else:
            blocks.append(("p", [" ".join(ln.strip() for ln in lines)]))
    return blocks


# ---------------------------------------------------------------------------------------------
# Markdown pieces
# ---------------------------------------------------------------------------------------------


def _md_math(lines: list[tuple[str, str]]) -> str:
    if len(lines) == 1:
        return f"$$\n{lines[0][1]}\n$$"
    rows = [tex.replace(" = ", " &= ", 1) if " = " in tex else "&" + tex for _, tex in lines]
    return "$$\n\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}\n$$"


def _md_figure(fig: Figure, inline: bool = False) -> str:
    if fig.file:
        return f"![{fig.alt}]({fig.file})"
    if inline:
        return "(no picture)"
    return (f"The picture could not be drawn here ({fig.problem}). The graph as Graphviz DOT (`dot -Tsvg` "
            f"draws it):\n\n```dot\n{fig.dot.rstrip()}\n```")


def _md_table(header: list[str], rows: list[list[str]], escape: bool = True) -> str:
    def cell(c: str) -> str:
        c = c.replace("\n", " ")
        return c.replace("|", "\\|") if escape else c

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# HTML pieces
# ---------------------------------------------------------------------------------------------

_CSS = ("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:62rem;margin:2rem auto;"
        "padding:0 1rem;line-height:1.5;color:#1f2328}pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;"
        "border-radius:6px}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;"
        "padding:.2rem .6rem;text-align:left}figure{margin:1rem 0;overflow-x:auto}figure svg,figure img"
        "{max-width:100%;height:auto}.math{margin:.6rem 0 .6rem 1.5rem}.math .eq{margin:.25rem 0}"
        "math{font-size:1.15em}code.tex{color:#57606a}.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(18rem,1fr));"
        "gap:1rem}.gate{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .8rem;min-width:0}"
        ".gate h4{margin:.2rem 0}.gate p{margin:.2rem 0}.gate .math{margin-left:.5rem;overflow-x:auto}"
        # a card's picture is scaled into the card (its viewBox keeps the proportions), never past its border
        ".gate svg,.gate img{display:block;max-width:100%;height:auto}"
        "figure.blank svg{width:min(100%,44rem)}"
        "@media print{body{margin:0;max-width:none}figure,pre,table,.gate,.math{break-inside:avoid}"
        "pre{white-space:pre-wrap;overflow:visible}"
        "h2,h3{break-after:avoid}}")


def _mathml() -> Callable[[str, bool], str] | None:
    try:
        from latex2mathml.converter import convert
    except ImportError:
        return None

    def to_mathml(tex: str, display: bool) -> str:
        return convert(tex, display="block" if display else "inline")

    return to_mathml


def _html_math(tex: str, text: str | None, math: Callable[[str, bool], str] | None, display: bool) -> str:
    if math is not None:
        try:
            return math(tex, display)
        except Exception:  # noqa: BLE001 - a formula latex2mathml cannot read is shown as text instead
            pass
    if text is not None:
        return f"<span>{html.escape(text)}</span>"
    return f'<code class="tex">{html.escape(tex)}</code>'


def _html_equation(text: str, tex: str, math: Callable[[str, bool], str] | None) -> str:
    return f'<div class="eq" title="{html.escape(tex)}">{_html_math(tex, text, math, False)}</div>'


def _inline(text: str, write: dict[str, Callable[[str], str]]) -> str:
    """Inline markup written with one function per kind (text, math, code, bold, em); bold and
    emphasis hold markup of their own, which ``write`` renders again."""
    return "".join(write[kind](c) for kind, c in inline_segments(text))


def _html_inline(text: str, math: Callable[[str, bool], str] | None) -> str:
    again = lambda c: _html_inline(c, math)  # noqa: E731
    return _inline(text, {"text": html.escape, "math": lambda c: _html_math(c, None, math, False),
                          "code": lambda c: f"<code>{html.escape(c)}</code>",
                          "bold": lambda c: f"<strong>{again(c)}</strong>", "em": lambda c: f"<em>{again(c)}</em>"})


def _html_prose(text: str, math: Callable[[str, bool], str] | None) -> str:
    out = []
    for kind, items in markdown_blocks(text):
        if kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(i, math)}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{_html_inline(items[0], math)}</p>")
    return "\n".join(out)


def _strip_xml_header(svg: str) -> str:
    at = svg.find("<svg")
    return svg[at:] if at >= 0 else svg


def _html_figure(fig: Figure) -> str:
    if fig.svg is not None:
        return _strip_xml_header(fig.svg)
    if fig.png is not None:
        data = base64.b64encode(fig.png).decode("ascii")
        return f'<img alt="{html.escape(fig.alt)}" src="data:image/png;base64,{data}">'
    return (f"<p>The picture could not be drawn here ({html.escape(fig.problem or '')}). The graph as Graphviz "
            f"DOT:</p><pre><code>{html.escape(fig.dot)}</code></pre>")


# ---------------------------------------------------------------------------------------------
# LaTeX pieces
# ---------------------------------------------------------------------------------------------


def _tex_inline(text: str) -> str:
    return _inline(text, {"text": L.text, "math": lambda c: f"${c}$",
                          "code": lambda c: rf"\texttt{{{L.text(L.ascii_code(c))}}}",
                          "bold": lambda c: rf"\textbf{{{_tex_inline(c)}}}",
                          "em": lambda c: rf"\emph{{{_tex_inline(c)}}}"})


def _tex_prose(text: str) -> str:
    out = []
    for kind, items in markdown_blocks(text):
        if kind == "ul":
            out.append("\\begin{itemize}\n" + "\n".join(rf"\item {_tex_inline(i)}" for i in items)
                       + "\n\\end{itemize}")
        else:
            out.append(_tex_inline(items[0]))
    return "\n\n".join(out)


def _tex_math(lines: list[tuple[str, str]]) -> str:
    rows = [tex.replace(" = ", " &= ", 1) if " = " in tex else "&" + tex for _, tex in lines]
    return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}"


def _tex_picture(fig: Figure) -> str:
    if fig.tikz is not None:
        return fig.tikz.strip()
    return rf"\fbox{{\parbox{{0.8\linewidth}}{{The picture could not be drawn here: {L.text(fig.problem or '')}}}}}"


def _tex_fit(picture: str) -> str:
    """A picture at its own size, or scaled down to the line's width when it is wider."""
    return r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{" + picture + "}"


def _tex_figure(fig: Figure) -> str:
    return "\\begin{center}\n" + _tex_fit(_tex_picture(fig)) + "\n\\end{center}"


def _tex_table(header: list[str], rows: Iterable[list[str]]) -> str:
    cols = "l" * len(header)
    head = " & ".join(rf"\textbf{{{_tex_inline(c)}}}" for c in header) + r" \\ \hline"
    body = "\n".join(" & ".join(_tex_inline(c) for c in r) + r" \\" for r in rows)
    return f"\\begin{{center}}\\begin{{tabular}}{{{cols}}}\n{head}\n{body}\n\\end{{tabular}}\\end{{center}}"
