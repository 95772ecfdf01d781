"""PDF keys and handouts, printed by a program found on this machine.

The default is Chromium (or Chrome) printing the self-contained HTML page: the project already uses
Debian's Chromium for the explorer's browser tests (``.ci/run`` installs it), it renders the inline
SVG pictures and the MathML exactly as the HTML key shows them, and it takes about a second. Where no
Chromium is found, a TeX engine (pdflatex, lualatex, xelatex or tectonic) compiles the LaTeX version,
whose pictures are TikZ. ``engine`` picks one: ``"chromium"``, ``"latex"`` (the first TeX engine
found), or a TeX engine by name (``"pdflatex"``, ``"lualatex"``, ``"xelatex"``, ``"tectonic"``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..fileio import atomic_path, atomic_write

__all__ = ["ENGINES", "PdfError", "find_pdf_engine", "write_pdf"]

_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_TEX = ("pdflatex", "lualatex", "xelatex", "tectonic")
ENGINES = ("chromium", "latex", *_TEX)  # what ``engine`` (``--pdf-engine``) may name
TIMEOUT = 180.0


class PdfError(RuntimeError):
    """No program to print a PDF with, or the program failed."""


def find_pdf_engine(engine: str | None = None) -> tuple[str, str]:
    """``(kind, program)``: kind ``"chromium"`` or ``"latex"`` (see the module docstring)."""
    if engine not in (None, "auto", *ENGINES):
        raise ValueError(f"the PDF engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine in _TEX:
        found = shutil.which(engine)
        if found:
            return "latex", found
        raise PdfError(f"a PDF with --pdf-engine {engine} needs {engine} on the PATH; --pdf-engine latex takes "
                       "whichever TeX engine is installed")
    if engine in (None, "auto", "chromium"):
        for name in _CHROMIUM:
            found = shutil.which(name)
            if found:
                return "chromium", found
    if engine in (None, "auto", "latex"):
        for name in _TEX:
            found = shutil.which(name)
            if found:
                return "latex", found
    wanted = {"chromium": "Chromium (apt-get install chromium)",
              "latex": "a TeX engine (pdflatex: apt-get install texlive-latex-recommended texlive-pictures)"}
    raise PdfError("a PDF needs " + (wanted[engine] if engine in wanted else
                                     f"{wanted['chromium']} or {wanted['latex']}") + "; the HTML and LaTeX "
                   "versions (--format html,tex) need neither")


def write_pdf(path: Path, html_text: str, tex_text: str, engine: str | None = None) -> str:
    """Print the document into ``path`` (atomically); returns the program used."""
    kind, prog = find_pdf_engine(engine)
    with tempfile.TemporaryDirectory(prefix="chainrule-pdf-") as tmp:
        work = Path(tmp)
        if kind == "chromium":
            page = work / "page.html"
            page.write_text(html_text, encoding="utf-8")
            with atomic_path(path) as out:
                args = [prog, "--headless", "--disable-gpu", "--no-first-run", "--no-pdf-header-footer",
                        f"--user-data-dir={work / 'profile'}", f"--print-to-pdf={out}", page.as_uri()]
                if hasattr(os, "geteuid") and os.geteuid() == 0:
                    args.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise; the page is ours
                _run(args, work, prog)
                if not out.exists() or out.stat().st_size == 0:
                    raise PdfError(f"{Path(prog).name} wrote no PDF")
        else:
            (work / "doc.tex").write_text(tex_text, encoding="utf-8")
            args = [prog, "doc.tex"] if Path(prog).name == "tectonic" else \
                [prog, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"]
            _run(args, work, prog)
            atomic_write(path, (work / "doc.pdf").read_bytes())
    return Path(prog).name


def _run(args: list[str], cwd: Path, prog: str) -> None:
    try:
        res = subprocess.run(args, cwd=cwd, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise PdfError(f"{Path(prog).name} took more than {TIMEOUT:.0f} s to print the PDF") from None
    except OSError as e:
        raise PdfError(f"could not run {prog}: {e}") from None
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).decode("utf-8", "replace").strip().splitlines()[-8:]
        raise PdfError(f"{Path(prog).name} failed (exit {res.returncode}): " + " / ".join(tail))
