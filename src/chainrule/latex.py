"""LaTeX for people's text and for chainrule's expressions.

:func:`text` turns a line of prose (unicode math such as ``σ``, ``∂``, ``x²``, ``−`` included) into
text-mode LaTeX that pdflatex compiles; :func:`ascii_code` makes code printable in a ``verbatim``
block. :class:`LatexPrinter` prints the symbolic expressions of :mod:`chainrule.symbolic` (the
forward expressions of staged equations, the gate table's rules) as math-mode LaTeX:
``t_{1} = x + y``, ``\\frac{1}{c}``, ``e^{a}``, ``\\sigma\\left(t_{2}\\right)``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .gates import GATES
from .symbolic import _ATOM, _MUL, _POW, _UNARY, MathPrinter, Sym, _wrap

__all__ = ["MATH_SYMBOLS", "LatexPrinter", "ascii_code", "math", "name", "text"]

#: Unicode characters of math written in prose and in chainrule's displays, as math-mode LaTeX.
MATH_SYMBOLS: dict[str, str] = {
    "σ": r"\sigma", "π": r"\pi", "∂": r"\partial", "Σ": r"\Sigma", "∑": r"\sum", "×": r"\times",
    "÷": r"\div", "·": r"\cdot", "−": "-", "→": r"\to", "←": r"\leftarrow", "≈": r"\approx", "√": r"\surd",
    "≤": r"\le", "≥": r"\ge", "≠": r"\ne", "∞": r"\infty", "∈": r"\in", "∇": r"\nabla", "α": r"\alpha",
    "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon", "η": r"\eta", "θ": r"\theta",
    "λ": r"\lambda", "μ": r"\mu", "τ": r"\tau", "φ": r"\varphi", "ω": r"\omega", "⊙": r"\odot", "±": r"\pm",
}
_SUPER = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8", "⁹": "9",
          "⁻": "-", "⁺": "+", "ᵀ": "T", "ˣ": "x", "ʸ": "y", "ᵃ": "a", "ⁿ": "n"}
_SUB = {"₀": "0", "₁": "1", "₂": "2", "₃": "3", "₄": "4", "₅": "5", "₆": "6", "₇": "7", "₈": "8", "₉": "9"}
_TEXT = {"—": "---", "–": "--", "…": r"\dots{}", "“": "``", "”": "''", "‘": "`", "’": "'", "\u00a0": "~"}
_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
            "_": r"\_", "^": r"\^{}", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def _script(s: str, i: int) -> tuple[str, int] | None:
    """A run of super- or subscript characters at ``s[i]`` as ``^{...}`` or ``_{...}``, and where it ends."""
    table, mark = (_SUPER, "^") if s[i] in _SUPER else (_SUB, "_") if s[i] in _SUB else (None, "")
    if table is None:
        return None
    j = i
    while j < len(s) and s[j] in table:
        j += 1
    return f"{mark}{{{''.join(table[c] for c in s[i:j])}}}", j


def _convert(s: str, one: Any, math_mode: bool) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        run = _script(s, i)
        if run is not None:  # x², e⁻ˣ: one group
            out.append(run[0] if math_mode else f"${run[0]}$")
            i = run[1]
            continue
        out.append(one(s, i))
        i += 1
    return "".join(out)


def _text_char(s: str, i: int) -> str:
    ch = s[i]
    if ch in MATH_SYMBOLS:
        return f"${MATH_SYMBOLS[ch]}$"
    if ch in _TEXT:
        return _TEXT[ch]
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    return ch if ord(ch) < 128 or unicodedata.category(ch).startswith("L") else _ascii(ch)


def _math_char(s: str, i: int) -> str:
    ch = s[i]
    if ch in MATH_SYMBOLS:
        sym = MATH_SYMBOLS[ch]
        return sym + (" " if sym[-1:].isalpha() and s[i + 1:i + 2].isalnum() else "")
    if ch in "{}_#%&$":
        return "\\" + ch
    return {"\\": r"\backslash ", "^": r"\hat{}"}.get(ch) or (ch if ord(ch) < 128 else _ascii(ch))


def text(s: str) -> str:
    """Prose (no markup) as text-mode LaTeX: specials escaped, unicode math as inline math."""
    return _convert(s, _text_char, False).replace("$$", "")  # adjacent math pieces join into one


def math(s: str) -> str:
    """A short unicode math string (``−0.25``, ``σ(2)``, ``x²``) as math-mode LaTeX."""
    return _convert(s, _math_char, True)


def _ascii(ch: str) -> str:
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return plain or "?"


_CODE = {**_SUB, "σ": "sigma", "π": "pi", "∂": "d", "Σ": "sum", "×": "x", "÷": "/", "·": "*", "−": "-",
         "→": "->", "—": "-", "–": "-", "…": "...", "√": "sqrt", "≈": "~", "“": '"', "”": '"', "’": "'"}
_CODE_SUPER = _SUPER


def ascii_code(s: str) -> str:
    """Code for a ``verbatim`` block under pdflatex: every non-ASCII character spelled in ASCII
    (comments such as ``∂(xʸ)/∂x = y·xʸ⁻¹`` become ``d(x^y)/dx = y*x^(y-1)``)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] in _CODE_SUPER:
            j += 1
        if j > i:
            run = "".join(_CODE_SUPER[c] for c in s[i:j])
            out.append("^" + (run if len(run) == 1 else f"({run})"))
            i = j
            continue
        ch = s[i]
        out.append(ch if ord(ch) < 128 else _CODE.get(ch, _ascii(ch)))
        i += 1
    return "".join(out)


_INDEXED = re.compile(r"([A-Za-z]+)_?(\d+)")


def name(n: str) -> str:
    """A variable name in math mode: ``t1`` → ``t_{1}``, ``x`` → ``x``, ``out`` → ``\\mathrm{out}``."""
    m = _INDEXED.fullmatch(n)
    if m:
        base = m.group(1) if len(m.group(1)) == 1 else r"\mathrm{" + m.group(1) + "}"
        return f"{base}_{{{m.group(2)}}}"
    if len(n) == 1:
        return n
    if n in MATH_SYMBOLS:
        return MATH_SYMBOLS[n]
    return r"\mathrm{" + n.replace("_", r"\_") + "}"


#: Functions LaTeX has an operator for; the rest print as ``\operatorname{name}``.
_OPERATORS = {"ln": r"\ln", "log": r"\ln", "sin": r"\sin", "cos": r"\cos", "tan": r"\tan", "tanh": r"\tanh",
              "max": r"\max", "min": r"\min", "exp": r"\exp"}


class LatexPrinter(MathPrinter):
    """Prints :mod:`chainrule.symbolic` expressions as math-mode LaTeX (``2 x``, ``x^{2}``,
    ``\\frac{1}{c}``, ``e^{a}``, ``\\sqrt{y}``, ``\\sigma\\left(t_{2}\\right)``)."""

    mul = r" \cdot "
    minus = "-"
    compare = {"gt": ">", "ge": r"\ge", "lt": "<", "le": r"\le", "eq": "=", "ne": r"\ne"}

    def number(self, v: Any) -> str:
        return super().number(v).replace("e+", r"\times 10^{").replace("inf", r"\infty")

    def render(self, e: Any) -> tuple[str, int]:
        e = _wrap(e)
        if e.op == "name":
            return name(str(e.value)), _ATOM
        if e.op == "neg":
            return "-" + self.wrap(e.args[0], _MUL), _MUL
        return super().render(e)

    def comparison(self, a: str, op: str, b: str) -> tuple[str, int]:
        return rf"\left[{a} {op} {b}\right]", _ATOM

    def binary(self, e: Sym) -> tuple[str, int]:
        a, b = e.args
        if e.op == "div":
            return rf"\frac{{{self.render(a)[0]}}}{{{self.render(b)[0]}}}", _ATOM
        if e.op == "pow":
            return f"{self.wrap(a, _POW + 1)}^{{{self.render(b)[0]}}}", _POW
        if e.op == "mul":
            left, right = self.wrap(a, _MUL), self.wrap(b, _MUL, right=True)
            if a.op == "num" and b.op in ("name", "call", "pow") and not right[:1].isdigit():
                return f"{left} {right}", _MUL  # 2 x, 4 \ln(x)
            return f"{left}{self.mul}{right}", _MUL
        text_, p = super().binary(e)
        return text_.replace(" @ ", r" \mathbin{@} "), p

    def call(self, e: Sym) -> tuple[str, int]:
        gate = GATES.get(e.value)
        fmt = gate.fmt if gate is not None else ""
        if re.fullmatch(r"\{\d+\}", fmt):  # the gate reads as one of its operands (a guard)
            return self.render(e.args[int(fmt[1:-1])])
        args = [self.render(a)[0] for a in e.args]
        if len(args) == 1 and fmt == "exp({0})":
            return f"e^{{{args[0]}}}", _POW
        if len(args) == 1 and fmt == "sqrt({0})":
            return rf"\sqrt{{{args[0]}}}", _ATOM
        if len(args) == 1 and fmt == "1 / {0}":
            return rf"\frac{{1}}{{{args[0]}}}", _ATOM
        if len(args) == 1 and fmt == "|{0}|":
            return rf"\left|{args[0]}\right|", _ATOM
        if len(args) == 1 and fmt == "{0}²":
            return f"{self.wrap(e.args[0], _POW + 1)}^{{2}}", _POW
        if len(args) == 1 and fmt == "-{0}":
            return "-" + self.wrap(e.args[0], _MUL), _UNARY
        call = re.fullmatch(r"([^\s{}()]+)\(.*\)", fmt)
        fname = call.group(1) if call else str(e.value)
        op = _OPERATORS.get(fname) or (math(fname) if len(fname) == 1 else rf"\operatorname{{{fname}}}")
        return rf"{op}\left({', '.join(args)}\right)", _ATOM
