"""Worksheets as data: a teaching assistant's TOML file solved into an answer key, a blank handout
and per-student variants, as Markdown, self-contained HTML, LaTeX (TikZ pictures) and PDF.

The seed worksheet (section 2, backprop) ships as ``section2.toml`` beside this module and is what
``chainrule worksheet`` solves when it is given no file. The format is read by :mod:`.spec`, each
problem is solved by :mod:`.solve` (exact answers by :mod:`.exact`, with sympy, only when asked
for; derivations by :mod:`.derive`), and :mod:`.report` lays the answers out as documents
(:mod:`.doc`) which are written here, every file atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write
from .doc import Doc, Figure
from .solve import Solved, descend, solve
from .spec import Worksheet, WorksheetError, draw_key, load, loads, variant

__all__ = ["FORMATS", "SEED", "WorksheetError", "WorksheetResult", "descend", "examples", "load", "loads",
           "solve_worksheet"]

#: The seed worksheet, solved when ``chainrule worksheet`` is given no file.
SEED = Path(__file__).with_name("section2.toml")
FORMATS = ("md", "html", "tex", "pdf")


@dataclass
class WorksheetResult:
    """What :func:`solve_worksheet` wrote and found."""

    report: Path  # the answer key (in the first format asked for)
    files: list[Path]
    pictures: list[Path]
    picture_problem: str | None
    rows: list[tuple[str, str]]
    answers: dict[str, dict[str, Any]]
    ok: bool
    variants: list[Path] = field(default_factory=list)

    def summary_rows(self) -> list[list[str]]:
        return [[q, a] for q, a in self.rows]

    def summary_json(self) -> dict[str, Any]:
        return {"report": str(self.report), "files": [str(p) for p in self.files],
                "pictures": [str(p) for p in self.pictures], "picture_problem": self.picture_problem,
                "ok": self.ok, "answers": self.answers, "variants": [str(p) for p in self.variants],
                "summary": [{"question": q, "answer": a} for q, a in self.rows]}


def _exact_module() -> Any:
    try:
        from . import exact
    except ImportError as e:
        raise ImportError(str(e)) from None
    return exact


def solve_all(ws: Worksheet, exact: bool = False) -> dict[str, Solved]:
    """Every problem of ``ws`` solved, by id."""
    module = _exact_module() if exact else None
    return {p.id: solve(p, module) for p in ws.problems}


def solve_worksheet(out: Path | str, source: Path | str | None = None, formats: tuple[str, ...] = ("md",),
                    pictures: str = "svg", blank: bool = False, variants: int = 0, seed: int = 0,
                    exact: bool = False, pdf_engine: str | None = None) -> WorksheetResult:
    """Solve a worksheet file (the seed worksheet when ``source`` is None) into the folder ``out``:
    ``worksheet.<format>`` (the key) for each of ``formats``, ``worksheet-blank.<format>`` with
    ``blank``, ``answers.json``, the pictures, and ``variant-<k>/`` for each of ``variants``."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"format must be among {', '.join(FORMATS)}, not {bad[0] if bad else 'nothing'}")
    if pictures not in ("svg", "png"):
        raise ValueError(f"pictures must be 'svg' or 'png', not {pictures!r}")
    if variants < 0:
        raise ValueError("the number of variants cannot be negative")
    path = Path(source) if source is not None else SEED
    ws = load(path)
    shown = path.name if source is None else str(source)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    writer = _Writer(formats, pictures, pdf_engine)
    result = writer.write(ws, solve_all(ws, exact), folder, shown, exact, blank)
    if variants:
        rng = np.random.default_rng(seed)
        taken = {draw_key(ws.problems)}
        for k in range(1, variants + 1):
            wk = variant(ws, k, rng, taken)
            sub = folder / f"variant-{k}"
            sub.mkdir(exist_ok=True)
            r = writer.write(wk, solve_all(wk, exact), sub, f"{shown}, variant {k} (seed {seed})", exact, blank)
            result.files += r.files
            result.pictures += r.pictures
            result.ok = result.ok and r.ok
            result.picture_problem = result.picture_problem or r.picture_problem
            result.variants.append(sub)
    return result


class _Writer:
    def __init__(self, formats: tuple[str, ...], pictures: str, pdf_engine: str | None) -> None:
        self.formats = formats
        self.pictures = pictures
        self.pdf_engine = pdf_engine

    def write(self, ws: Worksheet, solved: dict[str, Solved], folder: Path, source: str, exact: bool,
              blank: bool) -> WorksheetResult:
        from . import report

        docs = [("worksheet", report.key(ws, solved, exact, source))]
        if blank:
            docs.append(("worksheet-blank", report.blank(ws, solved)))
        figures = [f for _, d in docs for f in d.figures()]
        written_pictures, problem = self._pictures(figures, folder)
        files: list[Path] = []
        for stem, doc in docs:
            files += self._documents(doc, folder / stem)
        answers = report.answers_json(ws, solved)
        ok = all(s.ok for s in solved.values())
        data = {"worksheet": ws.title, "source": source, "variant": ws.variant, "ok": ok, "answers": answers}
        files.append(atomic_write(folder / "answers.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n"))
        return WorksheetResult(files[0], files + written_pictures, written_pictures, problem,
                               report.summary_rows(ws, solved), answers, ok)

    def _documents(self, doc: Doc, stem: Path) -> list[Path]:
        out = []
        html_text = doc.html() if ("html" in self.formats or "pdf" in self.formats) else ""
        tex_text = doc.latex() if ("tex" in self.formats or "pdf" in self.formats) else ""
        for fmt in self.formats:
            target = stem.with_suffix(f".{fmt}")
            if fmt == "md":
                atomic_write(target, doc.markdown())
            elif fmt == "html":
                atomic_write(target, html_text)
            elif fmt == "tex":
                atomic_write(target, tex_text)
            else:
                from .pdf import write_pdf

                write_pdf(target, html_text, tex_text, self.pdf_engine)
            out.append(target)
        return out

    def _pictures(self, figures: list[Figure], folder: Path) -> tuple[list[Path], str | None]:
        """Draw every figure in the forms the formats need: SVG or PNG for Markdown, HTML and PDF,
        TikZ for LaTeX (a PDF may be printed from either)."""
        from .. import render
        from ..tikz import scene_tikz

        drawn = bool({"md", "html", "pdf"} & set(self.formats))
        need_svg = drawn and self.pictures == "svg"
        need_png = drawn and self.pictures == "png"
        need_tikz = "tex" in self.formats or "pdf" in self.formats

        scenes = [render.scene(f.graph, blank=f.blank) for f in figures]
        for f, sc in zip(figures, scenes):
            f.dot = render.scene_dot(sc)
        wanted = [fmt for fmt, need in (("svg", need_svg), ("png", need_png), ("plain", need_tikz)) if need]
        for fmt in wanted:
            try:  # one run of the layout program for all of them; one by one if that fails
                outputs = render.layout_many([f.dot for f in figures], fmt)
            except (ImportError, RuntimeError, OSError, ValueError):
                outputs = [self._one(f, fmt) for f in figures]
            for f, sc, data in zip(figures, scenes, outputs):
                if data is None:
                    continue
                if fmt == "svg":
                    f.svg = data.decode("utf-8")
                elif fmt == "png":
                    f.png = data
                else:
                    f.tikz = scene_tikz(sc, data.decode("utf-8"))
        written: list[Path] = []
        problem = next((f.problem for f in figures if f.problem), None)
        if "md" in self.formats:
            for fig in figures:
                if fig.problem is None:
                    path = folder / f"{fig.stem}.{self.pictures}"
                    atomic_write(path, fig.svg if self.pictures == "svg" else fig.png)
                    fig.file = path.name
                else:
                    path = folder / f"{fig.stem}.dot"
                    atomic_write(path, fig.dot)
                written.append(path)
        return written, problem

    @staticmethod
    def _one(fig: Figure, fmt: str) -> bytes | None:
        from .. import render

        try:
            return render.layout(fig.dot, fmt)
        except (ImportError, RuntimeError, OSError, ValueError) as e:
            fig.problem = str(e)
            return None


def examples() -> list[dict[str, Any]]:
    """The seed worksheet's problems that have inputs, as the explorer's examples: title, expression,
    values as written, and the step size of a descent part."""
    out = []
    for p in load(SEED).problems:
        if not p.inputs:
            continue
        title = p.id[0].upper() + p.id[1:]
        ex: dict[str, Any] = {"title": f"{title}  {p.math or p.function.split(' = ', 1)[-1]}",
                              "expression": p.function, "values": dict(p.inputs)}
        if p.descent is not None:
            ex["lr"] = float(p.descent.lr)
        out.append(ex)
    return out
