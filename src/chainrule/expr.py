"""A safe parser for expressions typed by people (the ``chainrule`` command, the web explorer).

The text is tokenized here (so ``^`` can mean power, ``2y`` can mean ``2*y`` and every error can
point at a character), rebuilt as Python syntax, parsed with :func:`ast.parse`, and then walked
against a whitelist: numbers, names, ``+ - * / **``, unary signs, calls of a fixed set of functions,
and staged assignments ``q = x + y``. Nothing is ever ``eval``-ed: :meth:`Expression.function`
interprets the checked tree with chainrule's ops, so tracing it records the user's own staging.

>>> e = parse("q = x + y; f = q * z")
>>> e.variables, e.output
(['x', 'y', 'z'], 'f')
>>> float(e.function()(1.0, 3.0, 2.0))
8.0
"""

from __future__ import annotations

import ast
import bisect
import inspect
import keyword
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import functions as F
from .gates import split_call
from .tensor import Tensor

__all__ = [
    "CONSTANTS", "FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "MAX_VALUE_ELEMENTS", "ExprError", "Expression", "Statement",
    "parse", "parse_value", "parse_values", "Program", "ProgramCall", "ProgramError", "parse_program", "evaluate",
    "gate_of",
]

#: Longest expression accepted (characters); ``--at`` values may be longer (lists), up to MAX_VALUE_LENGTH.
MAX_LENGTH = 2000
MAX_VALUE_LENGTH = 100_000
#: Most elements one ``--at`` value may have, and any step of computing it (a broadcast of a row by
#: a column would otherwise turn 100 KB of text into gigabytes). The explorer passes its own, smaller one.
MAX_VALUE_ELEMENTS = 100_000
#: Deepest nesting accepted (parentheses, or operators nested in the parsed tree).
MAX_DEPTH = 64
_MAX_NUMBER = 400  # characters in one number

#: Named constants. They cannot be used as variable names.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


@dataclass(frozen=True)
class _Fn:
    """One callable name: the chainrule function, how many arguments, and a line of help."""

    fn: Callable[..., Any]
    arity: tuple[int, int]  # (least, most); most -1 = any
    doc: str


def _fold_max(*xs: Any) -> Any:
    if len(xs) == 1:
        return F.max(xs[0])
    out = xs[0]
    for x in xs[1:]:
        out = F.maximum(out, x)
    return out


def _fold_min(*xs: Any) -> Any:
    if len(xs) == 1:
        return F.min(xs[0])
    out = xs[0]
    for x in xs[1:]:
        out = F.minimum(out, x)
    return out


#: The functions an expression may call.
FUNCTIONS: dict[str, _Fn] = {
    "ln": _Fn(F.log, (1, 1), "natural logarithm"),
    "log": _Fn(F.log, (1, 1), "natural logarithm (same as ln)"),
    "exp": _Fn(F.exp, (1, 1), "e to the power x"),
    "sin": _Fn(F.sin, (1, 1), "sine"),
    "cos": _Fn(F.cos, (1, 1), "cosine"),
    "tan": _Fn(F.tan, (1, 1), "tangent"),
    "sqrt": _Fn(F.sqrt, (1, 1), "square root"),
    "abs": _Fn(F.abs, (1, 1), "absolute value"),
    "sigmoid": _Fn(F.sigmoid, (1, 1), "logistic sigmoid 1/(1+e^-x)"),
    "tanh": _Fn(F.tanh, (1, 1), "hyperbolic tangent"),
    "relu": _Fn(F.relu, (1, 1), "max(x, 0)"),
    "max": _Fn(_fold_max, (1, -1), "max(a, b, ...) elementwise; max(x) the largest element"),
    "min": _Fn(_fold_min, (1, -1), "min(a, b, ...) elementwise; min(x) the smallest element"),
    "sum": _Fn(F.sum, (1, 1), "sum of all elements"),
    "mean": _Fn(F.mean, (1, 1), "mean of all elements"),
}


def gate_of(name: str) -> str | None:
    """The gate a function of the expression language stands for, by the gate table's name: ``ln``
    → ``log``, ``max(a, b)`` → ``maximum`` (elementwise; ``max(x)`` of one vector is the reduction);
    None for a name that is not one of :data:`FUNCTIONS`."""
    f = FUNCTIONS.get(name)
    if f is None:
        return None
    return {_fold_max: "maximum", _fold_min: "minimum"}.get(f.fn, f.fn.__name__)


class ExprError(ValueError):
    """Text that is not an expression chainrule accepts: one message, and where (a character offset)."""

    def __init__(self, message: str, position: int | None = None, text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def render(self) -> str:
        """The message, then the offending line of text with a caret under the position."""
        if self.position is None or not self.text:
            return self.message
        pos = max(0, min(self.position, len(self.text)))
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        line = self.text[start: len(self.text) if end < 0 else end]
        col = pos - start
        lineno = self.text.count("\n", 0, pos) + 1
        where = f" (line {lineno})" if "\n" in self.text else ""
        # show at most ~100 characters around the caret
        if len(line) > 100:
            lo = max(0, col - 60)
            shown = ("…" if lo else "") + line[lo: lo + 100] + ("…" if lo + 100 < len(line) else "")
            col = col - lo + (1 if lo else 0)
            line = shown
        line = line.replace("\t", " ")
        return f"{self.message}{where}\n    {line}\n    {' ' * col}^"

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------


@dataclass
class _Tok:
    kind: str  # num name op lpar rpar lbr (a list) sub (a subscript's "[") rbr comma colon sep eq sup
    text: str  # the Python text this token becomes
    pos: int  # offset in the original text
    length: int  # characters in the original text
    space_before: bool = False


_NUM = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUPERSCRIPT = {"⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8",
                "⁹": "9", "⁻": "-"}
_UNICODE_OPS = {"×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "−": "-", "–": "-"}
_BAD_CHARS = {
    "'": "strings are not allowed", '"': "strings are not allowed",
    ":": "':' is not allowed (no lambdas or annotations; slices only inside x[...])",
    "<": "comparisons are not supported", ">": "comparisons are not supported",
    "!": "'!' is not supported", "%": "'%' is not supported",
    "&": "'&' is not supported", "|": "'|' is not supported", "~": "'~' is not supported",
    "{": "braces are not allowed", "}": "braces are not allowed", "#": "comments are not allowed",
    "\\": "backslashes are not allowed", "`": "backquotes are not allowed", "$": "'$' is not supported",
    "?": "'?' is not supported",
}


def _tokenize(text: str, allow_lists: bool) -> list[_Tok]:
    """Split ``text`` into tokens, rejecting what can never be valid, with positions."""
    toks: list[_Tok] = []
    depth: list[_Tok] = []  # open brackets
    i, n = 0, len(text)
    space = False
    while i < n:
        c = text[i]
        if c in " \t\r\f\v" or (c == "\n" and depth):
            space = True
            i += 1
            continue
        if c == "\n" or c == ";":
            toks.append(_Tok("sep", ";", i, 1, space))
            i += 1
            space = True
            continue
        m = _NUM.match(text, i)
        if m:
            s = m.group()
            if len(s) > _MAX_NUMBER:
                raise ExprError(f"number too long ({len(s)} characters)", i, text)
            j = i + len(s)
            if j < n and text[j] == "." and (j + 1 >= n or not text[j + 1].isalpha()):
                raise ExprError("a number cannot have two decimal points", j, text)
            toks.append(_Tok("num", s, i, len(s), space))
            i += len(s)
            space = False
            continue
        m = _NAME.match(text, i)
        if m:
            s = m.group()
            if s == "lambda":
                raise ExprError("lambdas are not allowed", i, text)
            if keyword.iskeyword(s):
                raise ExprError(f"'{s}' is a Python keyword; it is not allowed in an expression", i, text)
            if s.startswith("__") or (s.startswith("_") and s.endswith("__")):
                raise ExprError(f"names with double underscores ({s}) are not allowed", i, text)
            toks.append(_Tok("name", s, i, len(s), space))
            i += len(s)
            space = False
            continue
        if c == "π":
            toks.append(_Tok("name", "pi", i, 1, space))
            i += 1
            space = False
            continue
        if c in _SUPERSCRIPT:
            j = i
            while j < n and text[j] in _SUPERSCRIPT:
                j += 1
            digits = "".join(_SUPERSCRIPT[ch] for ch in text[i:j])
            if not re.fullmatch(r"-?\d+", digits):
                raise ExprError("a superscript must be a whole number, like x² or x⁻¹", i, text)
            toks.append(_Tok("sup", f"**{digits}" if digits[0] != "-" else f"**({digits})", i, j - i, space))
            i = j
            space = False
            continue
        if text.startswith("**", i):
            toks.append(_Tok("op", "**", i, 2, space))
            i += 2
        elif c == "^":
            toks.append(_Tok("op", "**", i, 1, space))
            i += 1
        elif c in "+-*/" or c in _UNICODE_OPS:
            op = _UNICODE_OPS.get(c, c)
            if op == "/" and text.startswith("//", i):
                raise ExprError("'//' is not supported; use '/'", i, text)
            toks.append(_Tok("op", op, i, 1, space))
            i += 1
        elif c == "=":
            if text.startswith("==", i):
                raise ExprError("comparisons are not supported", i, text)
            if toks and toks[-1].kind == "op" and toks[-1].pos + toks[-1].length == i:
                raise ExprError(f"'{toks[-1].text}=' is not supported; write each step as name = expression",
                                toks[-1].pos, text)
            toks.append(_Tok("eq", "=", i, 1, space))
            i += 1
        elif c in "([":
            kind = "lpar" if c == "(" else "lbr"
            prev = toks[-1] if toks else None
            subscript = c == "[" and prev is not None and prev.kind in ("name", "rpar", "rbr")
            if c == "[" and not allow_lists and not subscript:
                if prev is not None and prev.kind == "num":
                    raise ExprError("a number cannot be indexed (x[0] indexes a variable)", i, text)
                raise ExprError("lists are only allowed as input values (--at x=[1,2,3])", i, text)
            tok = _Tok("sub" if subscript and not allow_lists else kind, c, i, 1, space)
            depth.append(tok)
            if len(depth) > MAX_DEPTH:
                raise ExprError(f"too deeply nested (more than {MAX_DEPTH} brackets)", i, text)
            toks.append(tok)
            i += 1
        elif c == ":" and depth and depth[-1].kind == "sub":  # a slice inside a subscript: x[0:2]
            toks.append(_Tok("colon", ":", i, 1, space))
            i += 1
        elif c == "@":
            toks.append(_Tok("op", "@", i, 1, space))
            i += 1
        elif c in ")]":
            want = "(" if c == ")" else "["
            if not depth:
                raise ExprError(f"unmatched '{c}'", i, text)
            if depth[-1].text != want:
                raise ExprError(f"'{c}' does not match '{depth[-1].text}'", i, text)
            depth.pop()
            toks.append(_Tok("rpar" if c == ")" else "rbr", c, i, 1, space))
            i += 1
        elif c == ",":
            toks.append(_Tok("comma", ",", i, 1, space))
            i += 1
        elif c == ".":
            raise ExprError("attribute access (.name) is not allowed", i, text)
        elif c in _BAD_CHARS:
            raise ExprError(_BAD_CHARS[c], i, text)
        else:
            raise ExprError(f"unexpected character {c!r}", i, text)
        space = False
    if depth:
        raise ExprError(f"'{depth[-1].text}' is never closed", depth[-1].pos, text)
    return toks


def _operand_start(toks: list[_Tok], end: int) -> int:
    """Index of the first token of the operand that ends at ``toks[end]`` (a number, name, group or call)."""
    k = end
    if toks[k].kind in ("rpar", "rbr"):
        level = 0
        while k >= 0:
            if toks[k].kind in ("rpar", "rbr"):
                level += 1
            elif toks[k].kind in ("lpar", "lbr", "sub"):
                level -= 1
                if level == 0:
                    break
            k -= 1
        if toks[k].kind == "sub":  # w[0], f(x)[1]: the operand is what is indexed, with its index
            return _operand_start(toks, k - 1)
        if k > 0 and toks[k - 1].kind == "name":
            k -= 1
    # x^2y: the operand of the implicit product is the whole power x^2
    if k >= 2 and toks[k - 1].kind == "op" and toks[k - 1].text == "**":
        return _operand_start(toks, k - 2)
    return k


def _implicit_products(toks: list[_Tok], text: str) -> list[_Tok]:
    """Insert ``*`` where two operands meet (``2y``, ``4x``, ``(x+1) z``, ``2 pi``, ``x y``)."""
    out: list[_Tok] = []
    for tok in toks:
        if out:
            prev = out[-1]
            left = prev.kind in ("num", "rpar", "rbr", "sup") or (prev.kind == "name" and tok.kind == "name")
            right = tok.kind in ("name", "lpar") or (tok.kind == "num" and prev.kind in ("rpar", "sup"))
            if prev.kind == "num" and tok.kind == "num":
                left = False
            if left and right:
                start = _operand_start(out, len(out) - 1 if prev.kind != "sup" else len(out) - 2)
                if start > 0 and out[start - 1].kind == "op" and out[start - 1].text == "/":
                    a = text[out[start].pos: prev.pos + prev.length].strip()
                    raise ExprError(
                        f"ambiguous implicit multiplication after '/': write .../({a}*{tok.text}...) or "
                        f"(.../{a})*{tok.text}...", tok.pos, text)
                out.append(_Tok("op", "*", tok.pos, 0, True))
        out.append(tok)
    return out


def _rebuild(toks: list[_Tok]) -> tuple[str, list[tuple[int, _Tok]]]:
    """Python text for the tokens, and each token's offset in it (to map positions back)."""
    parts: list[str] = []
    where: list[tuple[int, _Tok]] = []
    off = 0
    for tok in toks:
        if tok.space_before and parts:
            parts.append(" ")
            off += 1
        where.append((off, tok))
        parts.append(tok.text)
        off += len(tok.text)
    return "".join(parts), where


class _PosMap:
    """Maps an offset in the rebuilt Python text back to the original text."""

    def __init__(self, where: list[tuple[int, _Tok]], text: str) -> None:
        self.starts = [w for w, _ in where]
        self.toks = [t for _, t in where]
        self.text = text

    def __call__(self, off: int) -> int:
        if not self.toks:
            return 0
        k = bisect.bisect_right(self.starts, off) - 1
        if k < 0:
            return self.toks[0].pos
        tok = self.toks[k]
        if tok.length == 0:
            return tok.pos
        return tok.pos + min(max(off - self.starts[k], 0), tok.length - 1)

    def end(self) -> int:
        return len(self.text.rstrip())


# ---------------------------------------------------------------------------------------------
# the whitelist
# ---------------------------------------------------------------------------------------------

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}
_UNARY = {ast.USub: "-", ast.UAdd: "+"}


def _depth(tree: ast.AST) -> int:
    """Depth of the tree, computed without recursion (deep input must not crash the checker)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _syntax_message(msg: str) -> str:
    msg = re.split(r"\. (?:Perhaps|Maybe|Did you)", msg)[0]
    if "cannot assign" in msg:
        return "the left side of '=' must be a plain name (q = x + y)"
    if msg.startswith("invalid syntax") or msg in ("invalid decimal literal",):
        return "invalid syntax"
    if "was never closed" in msg:
        return msg
    if msg.startswith("expected"):
        return "incomplete expression"
    return msg


class _Checker:
    """Walks the parsed tree: only whitelisted nodes, positions mapped back for every error."""

    def __init__(self, text: str, pmap: _PosMap, values: bool) -> None:
        self.text = text
        self.pmap = pmap
        self.values = values  # value mode: constants and lists only

    def pos(self, node: ast.AST) -> int:
        return self.pmap(getattr(node, "col_offset", 0))

    def fail(self, message: str, node: ast.AST) -> ExprError:
        return ExprError(message, self.pos(node), self.text)

    def check(self, node: ast.AST, names: list[tuple[str, ast.AST]]) -> None:
        """Raise ExprError for anything outside the whitelist; collect the names read."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                kind = "strings" if isinstance(node.value, (str, bytes)) else f"{type(node.value).__name__} values"
                raise self.fail(f"{kind} are not allowed", node)
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id.endswith("__"):
                raise self.fail(f"names with double underscores ({node.id}) are not allowed", node)
            if node.id in FUNCTIONS and node.id not in CONSTANTS:
                raise self.fail(f"'{node.id}' is a function: call it as {node.id}(...)", node)
            if self.values and node.id not in CONSTANTS:
                raise self.fail(f"a value cannot use the name '{node.id}' (only numbers, pi, e, lists and "
                                "functions of them)", node)
            names.append((node.id, node))
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.fail("this operator is not supported", node)
            self.check(node.left, names)
            self.check(node.right, names)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise self.fail("this operator is not supported", node)
            self.check(node.operand, names)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise self.fail("only the named functions can be called", node)
            name = node.func.id
            if name.startswith("__") or name.endswith("__"):
                raise self.fail(f"names with double underscores ({name}) are not allowed", node)
            if name not in FUNCTIONS:
                raise self.fail(f"unknown function '{name}' (known: {', '.join(FUNCTIONS)}); "
                                f"to multiply, write {name}*(...)", node)
            if node.keywords:
                raise self.fail(f"{name}() takes no keyword arguments", node.keywords[0].value)
            for a in node.args:
                if isinstance(a, ast.Starred):
                    raise self.fail("'*' unpacking is not allowed", a)
            lo, hi = FUNCTIONS[name].arity
            if len(node.args) < lo or (hi >= 0 and len(node.args) > hi):
                want = f"{lo}" if lo == hi else f"at least {lo}"
                raise self.fail(f"{name}() takes {want} argument{'s' if want != '1' else ''}, "
                                f"got {len(node.args)}", node)
            for a in node.args:
                self.check(a, names)
        elif isinstance(node, ast.List) and self.values:
            if not node.elts:
                raise self.fail("an empty list has no values", node)
            for el in node.elts:
                if isinstance(el, ast.Starred):
                    raise self.fail("'*' unpacking is not allowed", el)
                self.check(el, names)
        elif isinstance(node, ast.Attribute):
            raise self.fail("attribute access (.name) is not allowed", node)
        elif isinstance(node, ast.Subscript):
            if self.values:
                raise self.fail("subscripts (x[...]) are not allowed in a value", node)
            self.check(node.value, names)
            static_index(node.slice, self.fail)
        elif isinstance(node, ast.Lambda):
            raise self.fail("lambdas are not allowed", node)
        elif isinstance(node, ast.Tuple):
            raise self.fail("tuples (a, b) are not allowed; separate statements with ';'", node)
        elif isinstance(node, ast.List):
            raise self.fail("lists are only allowed as input values (--at x=[1,2,3])", node)
        elif isinstance(node, (ast.Starred,)):
            raise self.fail("'*' unpacking is not allowed", node)
        else:
            raise self.fail(f"{type(node).__name__.lower()} expressions are not allowed", node)


def static_index(node: ast.AST, fail: Callable[[str, ast.AST], Exception]) -> Any:
    """The index inside ``x[...]`` as Python values: whole numbers (``0``, ``-1``), slices of them
    (``0:2``, ``::2``) and, for arrays of more dimensions, several of these (``W[0, 1]``). Indices
    are fixed by the text: a variable cannot be an index (the graph would change with its value)."""
    def number(n: ast.AST | None) -> int | None:
        if n is None:
            return None
        sign = 1
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(n.op, ast.USub) else 1
            n = n.operand
        if isinstance(n, ast.Constant) and type(n.value) is int:
            return sign * n.value
        raise fail("an index must be a whole number, like x[0] or x[-1] (or a slice, x[0:2])", n)

    def one(n: ast.AST) -> Any:
        if isinstance(n, ast.Slice):
            return slice(number(n.lower), number(n.upper), number(n.step))
        return number(n)

    if isinstance(node, ast.Tuple):
        if not node.elts:
            raise fail("an empty index", node)
        return tuple(one(e) for e in node.elts)
    return one(node)


def _parse_python(text: str, allow_lists: bool, max_length: int) -> tuple[ast.Module, _PosMap, list[_Tok]]:
    if not isinstance(text, str):
        raise ExprError(f"an expression must be text, not {type(text).__name__}")
    if len(text) > max_length:
        raise ExprError(f"too long: {len(text)} characters (at most {max_length})", max_length, text)
    toks = _tokenize(text, allow_lists)
    # statement separators: drop leading, trailing and repeated ones
    cleaned: list[_Tok] = []
    for tok in toks:
        if tok.kind == "sep" and (not cleaned or cleaned[-1].kind == "sep"):
            continue
        cleaned.append(tok)
    while cleaned and cleaned[-1].kind == "sep":
        cleaned.pop()
    if not cleaned:
        raise ExprError("empty expression", 0, text)
    toks = _implicit_products(cleaned, text)
    py, where = _rebuild(toks)
    pmap = _PosMap(where, text)
    try:
        tree = ast.parse(py, mode="exec")
    except SyntaxError as e:
        off = (e.offset or 1) - 1
        pos = pmap(off) if off < len(py) else pmap.end()
        raise ExprError(_syntax_message(e.msg or "invalid syntax"), pos, text) from None
    except (RecursionError, MemoryError, ValueError, OverflowError):
        raise ExprError(f"too deeply nested (more than {MAX_DEPTH} levels)", 0, text) from None
    if _depth(tree) > MAX_DEPTH + 4:
        raise ExprError(f"too deeply nested (more than {MAX_DEPTH} levels)", 0, text)
    return tree, pmap, toks


# ---------------------------------------------------------------------------------------------
# expressions
# ---------------------------------------------------------------------------------------------


@dataclass
class Statement:
    """One staged statement: ``target = expr`` (target None for the final bare expression)."""

    target: str | None
    node: ast.expr
    position: int  # where the statement starts in the original text
    source: str  # its normalized Python form, e.g. "q = x + y"


@dataclass
class Expression:
    """A parsed, checked expression or staged program, ready to run with chainrule ops."""

    text: str
    statements: list[Statement]
    variables: list[str]
    name: str | None = None  # from a header "g(x, y, z) = ..."
    positions: dict[str, int] = field(default_factory=dict)  # first appearance of each variable
    _opmap: dict[int, int] = field(default_factory=dict, repr=False)  # id(ast node) -> position

    @property
    def output(self) -> str:
        """The name of the result: the last statement's target, or ``out`` for a bare expression."""
        return self.statements[-1].target or "out"

    @property
    def normalized(self) -> str:
        """How the text was read, in plain Python syntax (``2y`` becomes ``2 * y``, ``^`` becomes ``**``)."""
        body = "; ".join(s.source for s in self.statements)
        if self.name is not None:
            return f"{self.name}({', '.join(self.variables)}) = {body}" if len(self.statements) == 1 else \
                f"{self.name}({', '.join(self.variables)}): {body}"
        return body

    def signature(self, given: Sequence[str] = ()) -> list[str]:
        """The inputs in the order a generated function takes them: a declared ``g(x, y) = ...`` wins;
        otherwise the order the values were ``given`` in (``--at``, the explorer's value boxes), then
        any variable not given, in order of first appearance. Names in ``given`` that the text does
        not use stay as inputs (the worksheet's q2c takes a ``z`` it never reads)."""
        if self.name is not None:
            return [*self.variables, *[g for g in given if g not in self.variables]]
        order = list(dict.fromkeys(given))
        return [*order, *[v for v in self.variables if v not in order]]

    def header(self, order: Sequence[str], name: str | None = None) -> str:
        """The text with its signature in front: ``f(x, y) = (x + y) * z``, ``f(x, y): q = ...; f = ...``
        (a declared header is the text itself)."""
        if self.name is not None:
            return self.text
        sig = self.signature_text(order, name)
        return f"{sig} = {self.text}" if len(self.statements) == 1 else f"{sig}: {self.text}"

    def signature_text(self, order: Sequence[str], name: str | None = None) -> str:
        """``f(x, y)``: the function's name (declared, else ``name``, else ``f``) and its inputs."""
        return f"{self.name or name or 'f'}({', '.join(order)})"

    def function(self, params: Sequence[str] | None = None, max_elements: int | None = None) -> Callable[..., Any]:
        """A Python function of the variables (positional in ``variables`` order, or by keyword) that
        computes the expression with chainrule ops; each statement's result carries its target's name.

        ``params`` reorders the parameters (to match a hand-written function's) and may add inputs
        the expression does not use (their gradient is zero); it must name every variable.
        ``max_elements`` refuses, before computing it, any step whose result would be larger (what
        a person typed on the command line or in the explorer: ``x * y`` of a row and a column).
        """
        names = list(self.variables if params is None else params)
        missing = [v for v in self.variables if v not in names]
        if missing:
            raise ExprError(f"the parameters must include every variable; missing {', '.join(missing)}",
                            self.positions.get(missing[0]), self.text)
        for v in names:
            if not _NAME.fullmatch(v) or keyword.iskeyword(v) or v in CONSTANTS or v in FUNCTIONS:
                raise ExprError(f"'{v}' cannot be a parameter name")
        if len(set(names)) != len(names):
            raise ExprError("a parameter is named twice")
        sig = inspect.Signature([inspect.Parameter(v, inspect.Parameter.POSITIONAL_OR_KEYWORD) for v in names])
        run = self._run

        def fn(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{fn.__name__}{sig}: {e}") from None
            return run(bound.arguments, max_elements)

        fn.__signature__ = sig  # type: ignore[attr-defined]
        fn.__name__ = fn.__qualname__ = self.name or "f"
        fn.__doc__ = f"chainrule expression: {self.normalized}"
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate at the given values (same arguments as :meth:`function`)."""
        return self.function()(*args, **kwargs)

    # -- evaluation ----------------------------------------------------------------------------
    def _run(self, values: dict[str, Any], max_elements: int | None = None) -> Any:
        env: dict[str, Any] = dict(values)
        result: Any = None
        for st in self.statements:
            result = _Evaluator(self, env, max_elements).eval(st.node)
            if st.target is not None:
                if isinstance(result, Tensor) and result.requires_grad:
                    if any(result is v for v in env.values()):
                        result = F.positive(result)  # an alias (b = a) gets a node of its own
                    result.name = st.target
                env[st.target] = result
        if self.statements[-1].target is None and isinstance(result, Tensor) and result.requires_grad \
                and any(result is v for v in env.values()):
            result = F.positive(result)  # the output is an input or a named step: give it its own node
        return result


class _Evaluator:
    """Interprets a checked tree with chainrule ops; constants are folded with float64 NumPy."""

    def __init__(self, expr: Expression, env: dict[str, Any], max_elements: int | None = None) -> None:
        self.expr = expr
        self.env = env
        self.max_elements = max_elements  # for values: the size of every step, checked before computing it

    def bound(self, node: ast.AST, operands: list[Any]) -> None:
        """Refuse (before allocating) a step whose result would exceed ``max_elements``."""
        if self.max_elements is None:
            return
        shapes = [np.shape(v) for v in operands]
        if isinstance(node, ast.List):
            n = sum(math.prod(s) for s in shapes)
            how = f"a list of {len(shapes)} items"
        else:
            try:
                shape = np.broadcast_shapes(*shapes)
            except ValueError:
                return  # the operation itself reports shapes that do not fit
            n = math.prod(shape)
            how = f"shapes {' and '.join(map(str, shapes))} broadcast to {shape}"
        if n > self.max_elements:
            raise ExprError(f"this step would make an array of {n:,} elements ({how}); at most "
                            f"{self.max_elements:,} are allowed", self.expr._opmap.get(id(node)), self.expr.text)

    def fail(self, node: ast.AST, err: Exception) -> ExprError:
        msg = _numpy_message(err)
        pos = self.expr._opmap.get(id(node))
        return ExprError(msg, pos, self.expr.text)

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**53:
                return v  # integers stay integers, so generated code reads `x ** 2`, `2 * y`
            try:
                return float(v)
            except OverflowError:
                return math.inf
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            return CONSTANTS[node.id]
        try:
            with np.errstate(all="ignore"):
                if isinstance(node, ast.BinOp):
                    a, b = self.eval(node.left), self.eval(node.right)
                    self.bound(node, [a, b])
                    return _fold(_binop(type(node.op), a, b))
                if isinstance(node, ast.UnaryOp):
                    v = self.eval(node.operand)
                    if isinstance(node.op, ast.UAdd):
                        return v
                    return -v if isinstance(v, int) else _fold(-_numeric(v))
                if isinstance(node, ast.Call):
                    args = [self.eval(a) for a in node.args]
                    self.bound(node, args)
                    return _fold(FUNCTIONS[node.func.id].fn(*args))
                if isinstance(node, ast.Subscript):
                    v = self.eval(node.value)
                    if not isinstance(v, (Tensor, np.ndarray)) or np.ndim(v) == 0:
                        raise ValueError("a single number cannot be indexed: x[0] needs x to be a list of "
                                         "values, like --at x=[1,2,3]")
                    return v[static_index(node.slice, lambda msg, n: ValueError(msg))]
                if isinstance(node, ast.List):
                    items = [self.eval(el) for el in node.elts]
                    self.bound(node, items)
                    return _as_array(items)
        except ExprError:
            raise
        except (ValueError, TypeError, ArithmeticError, IndexError) as err:
            raise self.fail(node, err) from None
        raise ExprError(f"cannot evaluate {type(node).__name__}", self.expr._opmap.get(id(node)), self.expr.text)


def _numeric(v: Any) -> Any:
    return np.float64(v) if isinstance(v, float) else v


def _binop(op: type, a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):  # folding constants: NumPy's rules (1/0 is inf)
        a, b = np.float64(a), np.float64(b)
    a, b = _numeric(a), _numeric(b)
    if op is ast.Add:
        return a + b
    if op is ast.Sub:
        return a - b
    if op is ast.Mult:
        return a * b
    if op is ast.Div:
        return a / b
    if op is ast.MatMult:
        if np.ndim(a) == 0 or np.ndim(b) == 0:
            raise ValueError("@ multiplies vectors or matrices (w @ x); for numbers use *")
        return a @ b
    return a ** b


def _fold(v: Any) -> Any:
    """Plain numbers stay plain Python floats (so they read as constants in the graph)."""
    if isinstance(v, Tensor) and not v.requires_grad:
        v = v.data
    if isinstance(v, (np.generic, np.ndarray)) and np.ndim(v) == 0:
        return float(v)
    return v


def _as_array(items: list[Any]) -> np.ndarray:
    try:
        arr = np.array(items, dtype=np.float64)
    except ValueError as e:
        raise ValueError("a list must be rectangular (rows of equal length)") from e
    return arr


def _collect_opmap(tree: ast.AST, py_text: str, pmap: _PosMap, out: dict[int, int]) -> None:
    """Position of each operation: the operator for binary ops, the name for calls."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            gap = py_text[node.left.end_col_offset: node.right.col_offset]  # type: ignore[misc]
            sym = _BINOPS.get(type(node.op), "")
            k = gap.find(sym) if sym else -1
            if sym == "*" and gap.find("**") == k and type(node.op) is ast.Mult:
                k = -1
            out[id(node)] = pmap((node.left.end_col_offset or 0) + k) if k >= 0 else pmap(node.col_offset)
        elif hasattr(node, "col_offset"):
            out[id(node)] = pmap(node.col_offset)



def _split_header(toks: list[_Tok], text: str) -> tuple[str | None, list[str], list[_Tok]]:
    """``g(x, y, z) = body``: the declared name and inputs, and the body's tokens."""
    if len(toks) < 4 or toks[0].kind != "name" or toks[1].kind != "lpar":
        return None, [], toks
    k = 2
    params: list[_Tok] = []
    while k < len(toks) and toks[k].kind == "name":
        params.append(toks[k])
        k += 1
        if k < len(toks) and toks[k].kind == "comma":
            k += 1
        else:
            break
    if k + 1 >= len(toks) or toks[k].kind != "rpar" or toks[k + 1].kind != "eq":
        return None, [], toks
    name = toks[0].text
    if name in FUNCTIONS or name in CONSTANTS:
        raise ExprError(f"'{name}' is a built-in name; call the function something else", toks[0].pos, text)
    seen: set[str] = set()
    for p in params:
        if p.text in FUNCTIONS or p.text in CONSTANTS:
            raise ExprError(f"'{p.text}' is a built-in name and cannot be an input", p.pos, text)
        if p.text in seen:
            raise ExprError(f"input '{p.text}' is declared twice", p.pos, text)
        seen.add(p.text)
    body = toks[k + 2:]
    if not body:
        raise ExprError("nothing after '='", toks[k + 1].pos, text)
    return name, [p.text for p in params], body


def parse(text: str) -> Expression:
    """Parse and check an expression or a staged program typed by a person.

    Accepts ``(x + y) * z``, ``(x^2 + 2y) z^3``, ``q = x + y; f = q * z`` (statements separated by
    ``;`` or new lines; the last one is the output) and ``g(x, y, z) = ...`` (declared inputs, in
    that order, even ones the body does not use). Raises :class:`ExprError` with a position.
    """
    if not isinstance(text, str):
        raise ExprError(f"an expression must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"too long: {len(text)} characters (at most {MAX_LENGTH})", MAX_LENGTH, text)
    toks = _tokenize(text, allow_lists=False)
    name, declared, body = _split_header(toks, text)
    if name is not None:
        # re-parse only the body, keeping original positions
        start = body[0].pos
        masked = " " * start + text[start:]
        try:
            tree, pmap, _ = _parse_python(masked, False, MAX_LENGTH)
        except ExprError as e:
            raise ExprError(e.message, e.position, text) from None
        pmap.text = text
    else:
        tree, pmap, _ = _parse_python(text, False, MAX_LENGTH)
    return _build(text, tree, pmap, name, declared)


def _build(text: str, tree: ast.Module, pmap: _PosMap, name: str | None, declared: list[str]) -> Expression:
    checker = _Checker(text, pmap, values=False)
    statements: list[Statement] = []
    assigned: dict[str, ast.AST] = {}
    free: list[str] = []
    positions: dict[str, int] = {}
    body = tree.body
    for k, st in enumerate(body):
        last = k == len(body) - 1
        if isinstance(st, ast.Expr):
            if not last:
                raise checker.fail("only the last statement can be a bare expression; name this step "
                                   "(t = ...)", st)
            target, value = None, st.value
        elif isinstance(st, ast.Assign):
            if len(st.targets) != 1:
                raise checker.fail("one name per '=' (no chained assignment)", st.targets[1])
            tgt = st.targets[0]
            if not isinstance(tgt, ast.Name):
                raise checker.fail("the left side of '=' must be a plain name (q = x + y)", tgt)
            target, value = tgt.id, st.value
            if target in FUNCTIONS or target in CONSTANTS:
                raise checker.fail(f"'{target}' is a built-in name; choose another name for this step", tgt)
            if target.startswith("__") or target.endswith("__"):
                raise checker.fail(f"names with double underscores ({target}) are not allowed", tgt)
        elif isinstance(st, ast.AugAssign):
            raise checker.fail("'+=' and friends are not supported; write each step as name = expression", st)
        else:
            raise checker.fail(f"{type(st).__name__.lower()} statements are not allowed", st)
        names: list[tuple[str, ast.AST]] = []
        checker.check(value, names)
        for nm, node in names:
            if nm in CONSTANTS or nm in assigned:
                continue
            if name is not None and nm not in declared:
                raise checker.fail(f"'{nm}' is not an input of {name}({', '.join(declared)})", node)
            if nm not in positions:
                positions[nm] = checker.pos(node)
                free.append(nm)
        if target is not None:
            if target in assigned:
                raise checker.fail(f"'{target}' is already assigned; give each step its own name", st.targets[0])
            if target in positions or target in declared:
                raise checker.fail(f"'{target}' is an input; give the new value its own name", st.targets[0])
            assigned[target] = st
        src = ast.unparse(st)
        statements.append(Statement(target, value, checker.pos(st), src))
    variables = list(declared) if name is not None else free
    expr = Expression(text, statements, variables, name, positions)
    # positions of every operation, for errors while evaluating
    py_text = _py_text_of(pmap)
    _collect_opmap(tree, py_text, pmap, expr._opmap)
    return expr


def _py_text_of(pmap: _PosMap) -> str:
    """The rebuilt Python text behind a position map (token texts at their offsets)."""
    if not pmap.toks:
        return ""
    end = pmap.starts[-1] + len(pmap.toks[-1].text)
    buf = [" "] * end
    for s, t in zip(pmap.starts, pmap.toks):
        buf[s: s + len(t.text)] = list(t.text)
    return "".join(buf)


# ---------------------------------------------------------------------------------------------
# input values
# ---------------------------------------------------------------------------------------------


def parse_value(text: str, max_elements: int = MAX_VALUE_ELEMENTS) -> float | np.ndarray:
    """A number, a constant expression (``pi/2``, ``e``, ``sqrt(2)``) or a list (``[1, 2, 3]``,
    ``[[1, 2], [3, 4]]``), checked like an expression and computed with float64 NumPy; the value and
    every step of computing it have at most ``max_elements`` elements (checked before computing)."""
    tree, pmap, _ = _parse_python(text, True, MAX_VALUE_LENGTH)
    checker = _Checker(text, pmap, values=True)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        st = tree.body[1] if len(tree.body) > 1 else tree.body[0]
        raise checker.fail("a value is one number, constant expression or list", st)
    node = tree.body[0].value
    checker.check(node, [])
    expr = Expression(text, [Statement(None, node, 0, "")], [])
    _collect_opmap(tree, _py_text_of(pmap), pmap, expr._opmap)
    v = _Evaluator(expr, {}, max_elements).eval(node)
    if isinstance(v, np.ndarray):
        return v.astype(np.float64)
    return float(v)


def parse_values(
    items: Iterable[str], variables: Sequence[str] | Expression, *, allow_extra: bool = False,
    max_elements: int = MAX_VALUE_ELEMENTS,
) -> dict[str, float | np.ndarray]:
    """Values for ``--at x=1 y=pi/2 z=[1,2,3]``, in the order of ``variables``.

    Every variable needs a value and every value needs a variable (unless ``allow_extra``: then
    values for names the expression does not use are returned after the variables' own, as inputs
    whose gradient is 0, like the worksheet's q2c(x, y, z)); with an :class:`Expression` a missing
    value is pointed out in the expression itself.
    """
    expr = variables if isinstance(variables, Expression) else None
    names = list(expr.variables if expr is not None else variables)
    items = list(items)
    split: list[tuple[str, str, int, str]] = []
    for item in items:
        if not isinstance(item, str):
            raise ExprError(f"a value must be text like x=1, not {type(item).__name__}")
        if "=" not in item:
            raise ExprError("expected name=value, like x=1 or y=pi/2", len(item), item)
        key, _, val = item.partition("=")
        k0 = len(key) - len(key.lstrip())
        split.append((key.strip(), val, k0, item))
    keys = {key for key, _, _, _ in split}
    got: dict[str, float | np.ndarray] = {}
    for key, val, k0, item in split:
        if not _NAME.fullmatch(key) or keyword.iskeyword(key):
            raise ExprError(f"'{key}' is not a variable name", k0, item)
        if key in CONSTANTS or key in FUNCTIONS:
            raise ExprError(f"'{key}' is a built-in name, not a variable", k0, item)
        if key in got:
            raise ExprError(f"'{key}' is given twice", k0, item)
        if key not in names and not allow_extra:
            missing = [n for n in names if n not in keys]
            if missing:
                hint = f"; did you mean {missing[0]}?"
            elif expr is not None and expr.name is None:
                hint = ("; to keep it as an input that the output does not use (gradient 0), declare the "
                        f"inputs: f({', '.join([*names, key])}) = ...")
            else:
                hint = ""
            have = ", ".join(names) if names else "none"
            raise ExprError(f"'{key}' is not a variable of the expression (its variables: {have}){hint}",
                            k0, item)
        if not val.strip():
            raise ExprError(f"no value after '{key}='", len(item), item)
        off = len(item) - len(val)
        try:
            got[key] = parse_value(" " * off + val, max_elements)
        except ExprError as e:
            raise ExprError(e.message, e.position, item) from None
    missing = [n for n in names if n not in got]
    if missing:
        m = missing[0]
        msg = f"variable '{m}' has no value: add {m}=... to --at"
        if len(missing) > 1:
            msg = f"variables {', '.join(missing)} have no values: add {'=... '.join(missing)}=... to --at"
        unused = [k for k in got if k not in names]
        if unused:
            msg += f" ({unused[0]} was given but is not in the expression: a typo?)"
        if expr is not None and m in expr.positions:
            raise ExprError(msg, expr.positions[m], expr.text)
        raise ExprError(msg)
    ordered = {n: got[n] for n in names}
    ordered.update({k: v for k, v in got.items() if k not in ordered})
    return ordered


# ---------------------------------------------------------------------------------------------
# programs: a combined forward+backward function typed by a person, checked but never run as Python
# ---------------------------------------------------------------------------------------------

#: Longest program accepted (characters), and the most statements one call may run.
MAX_PROGRAM_LENGTH = 20_000
MAX_PROGRAM_STEPS = 5_000

_AUG = {ast.Add: operator.iadd, ast.Sub: operator.isub, ast.Mult: operator.imul, ast.Div: operator.itruediv,
        ast.Pow: operator.ipow, ast.MatMult: operator.imatmul}
_PLAIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow, ast.MatMult: operator.matmul}
#: np.<name> constants a program may read
_NP_CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf}


def _np_gates() -> dict[str, Any]:
    """The gate table by NumPy name (``exp``, ``sum``, ``linalg.inv``, ...): what ``np.<name>(...)`` may
    call. (NumPy's stride tricks read memory by hand: never offered to text typed by a person.)"""
    from .gates import GATES

    return {name: gate for gate in GATES.values() for name in gate.numpy if not name.startswith("lib.")}


#: np.<name> functions that are not gates: constructors, and products made of gates
_NP_HELPERS = ("ones_like", "zeros_like", "full_like", "ones", "zeros", "full", "array", "asarray", "dot", "outer",
               "inner", "vdot")


@dataclass
class ProgramCall:
    """One run of a :class:`Program`: what it returned and its local variables when it returned,
    in the shape :func:`chainrule.check.capture_call` gives them."""

    result: Any
    holders: list[list[str]]
    locals: dict[str, Any]


class ProgramError(ExprError):
    """A program that failed while running (it is not a parse error): a message, where, and the line."""

    def __init__(self, message: str, position: int | None, text: str, line: int | None) -> None:
        super().__init__(message, position, text)
        self.line = line


@dataclass
class Program:
    """A checked Python subset, as the worksheet's part (iii) functions are written::

        import numpy as np

        def q2a(x, y, z):
            q = x + y
            out = q * z
            dq = z
            ...
            return out, dx, dy, dz

    ``def`` (helper functions too, like Q4's ``sigmoid``), assignments (``a = ...``, ``a, b = ...``,
    ``+=`` and friends), arithmetic (``+ - * / ** @``), ``np.<function>`` of the gate table (and
    ``np.ones_like``, ``np.array``, ``np.dot``, ...), ``np.pi``, fixed indices (``w[0]``), and
    ``return``. No loops, ifs, imports other than NumPy's, attributes other than ``np.``'s, or
    anything else: the tree is interpreted with NumPy, never executed as Python.
    """

    text: str
    name: str
    params: list[str]
    functions: dict[str, ast.FunctionDef]
    _offsets: list[int] = field(default_factory=list, repr=False)

    def position(self, node: ast.AST) -> int:
        """The character offset of ``node`` in the text."""
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        return self._offsets[min(line, len(self._offsets)) - 1] + col if self._offsets else 0

    def fail(self, message: str, node: ast.AST, run: bool = False) -> ExprError:
        pos = self.position(node)
        if run:
            return ProgramError(message, pos, self.text, getattr(node, "lineno", None))
        return ExprError(message, pos, self.text)

    def assignments(self) -> dict[str, list[tuple[int, str, bool]]]:
        """Where the checked function assigns each local: ``name -> [(line, text, augmented)]``."""
        from .feedback import Source

        src = Source.parse(self.text, self.name)
        return src.assignments if src is not None else {}

    def call(self, args: Sequence[Any], max_elements: int = MAX_VALUE_ELEMENTS) -> ProgramCall:
        """Run the function at ``args`` (NumPy arrays, in the order of :attr:`params`): its result, the
        locals holding each returned item and its final locals. A failure raises :class:`ProgramError`
        naming the line."""
        run = _ProgramRun(self, max_elements)
        env = dict(zip(self.params, [np.array(a, dtype=np.float64, copy=True) for a in args]))
        result = run.body(self.functions[self.name], env)
        items = list(result) if isinstance(result, tuple) else [result]
        if len(items) == 2 and isinstance(items[1], tuple):
            items = [items[0], *items[1]]
        holders = [[k for k, v in env.items() if v is item] for item in items]
        return ProgramCall(tuple(items) if isinstance(result, tuple) else result, holders, env)


def parse_program(text: str) -> Program:
    """Check a pasted combined forward+backward function (see :class:`Program`); raise
    :class:`ExprError` with a position for anything outside the subset. The checked function is the
    last ``def`` in the text; the ones before it are helpers it may call."""
    if not isinstance(text, str):
        raise ExprError(f"a program must be text, not {type(text).__name__}")
    if len(text) > MAX_PROGRAM_LENGTH:
        raise ExprError(f"too long: {len(text)} characters (at most {MAX_PROGRAM_LENGTH})", MAX_PROGRAM_LENGTH, text)
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        line = max(1, e.lineno or 1)
        pos = offsets[min(line, len(offsets)) - 1] + max(0, (e.offset or 1) - 1)
        raise ExprError(f"{e.msg}", min(pos, len(text)), text) from None
    except (RecursionError, MemoryError, ValueError, OverflowError):
        raise ExprError(f"too deeply nested (more than {MAX_DEPTH} levels)", 0, text) from None
    if _depth(tree) > MAX_DEPTH + 8:
        raise ExprError(f"too deeply nested (more than {MAX_DEPTH} levels)", 0, text)
    prog = Program(text, "", [], {}, offsets)
    for st in tree.body:
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            ok = isinstance(st, ast.Import) and all(a.name == "numpy" and a.asname in (None, "np") for a in st.names)
            if not ok:
                raise prog.fail("only `import numpy as np` may be imported", st)
        elif isinstance(st, ast.FunctionDef):
            if st.name in prog.functions:
                raise prog.fail(f"function {st.name} is defined twice", st)
            _check_def(prog, st)
            prog.functions[st.name] = st
        elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
            continue  # a docstring
        else:
            raise prog.fail("only `import numpy as np` and function definitions may be at the top level", st)
    if not prog.functions:
        raise ExprError("no function: paste a def like `def q2a(x, y, z): ... return out, dx, dy, dz`", 0, text)
    prog.name = list(prog.functions)[-1]
    main = prog.functions[prog.name]
    prog.params = [a.arg for a in main.args.args]
    if not prog.params:
        raise prog.fail(f"{prog.name} takes no inputs", main)
    return prog


def _check_def(prog: Program, fn: ast.FunctionDef) -> None:
    a = fn.args
    if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults or fn.decorator_list:
        raise prog.fail("a function here takes plain inputs only: def f(x, y, z):", fn)
    if fn.returns is not None:
        raise prog.fail("no annotations, please", fn)
    for k, st in enumerate(fn.body):
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str) \
                and k == 0:
            continue
        _check_statement(prog, st)


def _check_statement(prog: Program, st: ast.stmt) -> None:
    if isinstance(st, ast.Assign):
        for t in st.targets:
            _check_target(prog, t)
        _check_value(prog, st.value, tuples=True)  # fx, fy = dq, dq
    elif isinstance(st, ast.AugAssign):
        if not isinstance(st.target, ast.Name) or type(st.op) not in _AUG:
            raise prog.fail("`+=`, `-=`, `*=`, `/=` work on a plain name: dx += ...", st)
        _check_value(prog, st.value)
    elif isinstance(st, ast.Return):
        if st.value is None:
            raise prog.fail("return what the function computes: return out, dx, ...", st)
        _check_value(prog, st.value, tuples=True)
    elif isinstance(st, ast.Pass):
        return
    elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
        return  # a string used as a comment
    elif isinstance(st, (ast.For, ast.While, ast.If, ast.With, ast.Try)):
        kind = type(st).__name__.lower()
        raise prog.fail(f"`{kind}` is not supported here: write each step as its own line", st)
    else:
        raise prog.fail(f"{type(st).__name__.lower()} statements are not supported here", st)


def _check_target(prog: Program, t: ast.expr) -> None:
    if isinstance(t, ast.Name):
        if t.id == "np" or t.id.startswith("__"):
            raise prog.fail(f"'{t.id}' cannot be assigned", t)
        return
    if isinstance(t, ast.Tuple):
        for e in t.elts:
            _check_target(prog, e)
        return
    raise prog.fail("the left side of '=' must be a name (or names: a, b = ...)", t)


def _check_value(prog: Program, node: ast.expr, tuples: bool = False) -> None:
    """The expression whitelist of programs (positions mapped for every error)."""
    stack: list[tuple[ast.AST, bool]] = [(node, tuples)]
    while stack:
        n, allow_tuple = stack.pop()
        if isinstance(n, ast.Constant):
            if isinstance(n.value, bool) or not isinstance(n.value, (int, float)):
                raise prog.fail("only numbers may be written as constants", n)
        elif isinstance(n, ast.Name):
            if n.id.startswith("__"):
                raise prog.fail(f"names with double underscores ({n.id}) are not allowed", n)
        elif isinstance(n, ast.BinOp):
            if type(n.op) not in _PLAIN:
                raise prog.fail("this operator is not supported", n)
            stack += [(n.left, False), (n.right, False)]
        elif isinstance(n, ast.UnaryOp):
            if type(n.op) not in _UNARY:
                raise prog.fail("this operator is not supported", n)
            stack.append((n.operand, False))
        elif isinstance(n, ast.Attribute):
            _np_path(prog, n)  # np.pi, np.e: checked, nothing below it
        elif isinstance(n, ast.Subscript):
            static_index(n.slice, lambda msg, at: prog.fail(msg, at))
            stack.append((n.value, False))
        elif isinstance(n, ast.Call):
            _check_call(prog, n)
            stack += [(a, True) for a in n.args] + [(k.value, True) for k in n.keywords]
        elif isinstance(n, (ast.Tuple, ast.List)):
            if isinstance(n, ast.Tuple) and not allow_tuple:
                raise prog.fail("a tuple (a, b) here is not supported", n)
            stack += [(e, True) for e in n.elts]
        else:
            raise prog.fail(f"{type(n).__name__.lower()} expressions are not supported here", n)


def _np_path(prog: Program, n: ast.Attribute) -> str:
    """``np.exp`` -> ``"exp"``, ``np.linalg.inv`` -> ``"linalg.inv"`` (refusing every other attribute)."""
    parts = []
    cur: ast.AST = n
    while isinstance(cur, ast.Attribute):
        parts.append(cur.attr)
        cur = cur.value
    if not (isinstance(cur, ast.Name) and cur.id == "np"):
        raise prog.fail("attributes are not supported (x.sum() is np.sum(x), x.T is np.transpose(x))", n)
    return ".".join(reversed(parts))


def _check_call(prog: Program, n: ast.Call) -> None:
    if isinstance(n.func, ast.Name):
        if n.func.id not in prog.functions and n.func.id != "abs":
            hint = f"; NumPy's is np.{n.func.id}" if n.func.id in _np_gates() or n.func.id in _NP_HELPERS else \
                "; define it above the function that calls it"
            raise prog.fail(f"unknown function '{n.func.id}'{hint}", n)
        if n.keywords:
            raise prog.fail("keyword arguments only for np. functions", n)
    elif isinstance(n.func, ast.Attribute):
        path = _np_path(prog, n.func)
        if path not in _np_gates() and path not in _NP_HELPERS:
            raise prog.fail(f"np.{path} is not available here", n)
    else:
        raise prog.fail("only named functions can be called", n)
    for a in n.args:
        if isinstance(a, ast.Starred):
            raise prog.fail("'*' unpacking is not allowed", a)
    for k in n.keywords:
        if k.arg is None:
            raise prog.fail("'**' unpacking is not allowed", k.value)


class _ProgramRun:
    """One run of a :class:`Program`: its statements interpreted with NumPy (bounded in steps, call
    depth and the size of every array it makes)."""

    def __init__(self, prog: Program, max_elements: int) -> None:
        self.prog = prog
        self.max_elements = max_elements
        self.steps = 0
        self.depth = 0
        self.gates = _np_gates()

    def body(self, fn: ast.FunctionDef, env: dict[str, Any]) -> Any:
        self.depth += 1
        if self.depth > 16:
            raise self.prog.fail(f"{fn.name} calls functions more than 16 deep", fn, run=True)
        try:
            for st in fn.body:
                self.steps += 1
                if self.steps > MAX_PROGRAM_STEPS:
                    raise self.prog.fail(f"more than {MAX_PROGRAM_STEPS} steps", st, run=True)
                if isinstance(st, ast.Return):
                    return self.eval(st.value, env)
                if isinstance(st, ast.Assign):
                    value = self.eval(st.value, env)
                    for t in st.targets:
                        self.bind(t, value, env)
                elif isinstance(st, ast.AugAssign):
                    name = st.target.id  # type: ignore[attr-defined]
                    if name not in env:
                        raise self.prog.fail(f"{name} += ...: {name} has no value yet (write {name} = ... first)",
                                             st, run=True)
                    value = self.eval(st.value, env)
                    env[name] = self.arith(_AUG[type(st.op)], env[name], value, st)
            raise self.prog.fail(f"{fn.name} ends without a return", fn, run=True)
        finally:
            self.depth -= 1

    def bind(self, target: ast.expr, value: Any, env: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
            return
        items = list(value) if isinstance(value, (tuple, list)) else None
        elts = target.elts  # type: ignore[attr-defined]
        if items is None or len(items) != len(elts):
            n = len(items) if items is not None else 1
            raise self.prog.fail(f"{len(elts)} names on the left, {n} value{'s' if n != 1 else ''} on the right",
                                 target, run=True)
        for t, v in zip(elts, items):
            self.bind(t, v, env)

    def size(self, value: Any, node: ast.AST) -> Any:
        if isinstance(value, np.ndarray) and value.size > self.max_elements:
            raise self.prog.fail(f"this makes an array of {value.size:,} elements; at most {self.max_elements:,}",
                                 node, run=True)
        return value

    def arith(self, op: Callable[[Any, Any], Any], a: Any, b: Any, node: ast.AST) -> Any:
        if isinstance(a, int) and isinstance(b, int):  # NumPy's rules for numbers: 1/0 is inf, no huge ints
            a, b = np.float64(a), np.float64(b)
        shape = self.broadcast(a, b, node)
        if shape is not None and math.prod(shape) > self.max_elements:
            raise self.prog.fail(f"this makes an array of shape {shape}; at most {self.max_elements:,} elements",
                                 node, run=True)
        try:
            with np.errstate(all="ignore"):
                return self.size(op(a, b), node)
        except (ValueError, TypeError, ArithmeticError) as e:
            raise self.prog.fail(_numpy_message(e), node, run=True) from None

    def broadcast(self, a: Any, b: Any, node: ast.AST) -> tuple[int, ...] | None:
        try:
            return tuple(np.broadcast_shapes(np.shape(a), np.shape(b)))
        except ValueError:
            return None  # the operation reports it (or it is a matmul)

    def eval(self, node: ast.expr, env: dict[str, Any]) -> Any:
        prog = self.prog
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise prog.fail(f"name '{node.id}' has no value here", node, run=True)
            return env[node.id]
        if isinstance(node, ast.BinOp):
            a, b = self.eval(node.left, env), self.eval(node.right, env)
            return self.arith(_PLAIN[type(node.op)], a, b, node)
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand, env)
            return v if isinstance(node.op, ast.UAdd) else -v  # (-1 stays an int: reshape(x, (-1, 1)))
        if isinstance(node, ast.Tuple):
            return tuple(self.eval(e, env) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.eval(e, env) for e in node.elts]
        if isinstance(node, ast.Attribute):
            path = _np_path(prog, node)
            if path not in _NP_CONSTANTS:
                raise prog.fail(f"np.{path} is a function: call it, np.{path}(...)", node, run=True)
            return _NP_CONSTANTS[path]
        if isinstance(node, ast.Subscript):
            v = self.eval(node.value, env)
            if np.ndim(v) == 0:
                raise prog.fail("a single number cannot be indexed", node, run=True)
            try:
                return np.asarray(v)[static_index(node.slice, lambda msg, at: prog.fail(msg, at, run=True))]
            except IndexError as e:
                raise prog.fail(str(e), node, run=True) from None
        if isinstance(node, ast.Call):
            return self.call(node, env)
        raise prog.fail(f"cannot evaluate {type(node).__name__}", node, run=True)

    def call(self, node: ast.Call, env: dict[str, Any]) -> Any:
        prog = self.prog
        args = [self.eval(a, env) for a in node.args]
        kwargs = {k.arg: self.eval(k.value, env) for k in node.keywords if k.arg is not None}
        if isinstance(node.func, ast.Name):
            name = node.func.id
            if name == "abs":
                return self.numpy_call("abs", args, kwargs, node)
            fn = prog.functions.get(name)
            if fn is None:
                raise prog.fail(f"{name} is not a function defined here", node, run=True)
            params = [a.arg for a in fn.args.args]
            if len(args) != len(params):
                raise prog.fail(f"{name} takes {len(params)} input{'s' if len(params) != 1 else ''}, got {len(args)}",
                                node, run=True)
            return self.body(fn, dict(zip(params, args)))
        return self.numpy_call(_np_path(prog, node.func), args, kwargs, node)  # type: ignore[arg-type]

    def numpy_call(self, path: str, args: list[Any], kwargs: dict[str, Any], node: ast.AST) -> Any:
        prog = self.prog
        cap = self.max_elements
        try:
            with np.errstate(all="ignore"):
                if path in ("ones_like", "zeros_like", "full_like"):
                    return getattr(np, path)(np.asarray(args[0], dtype=np.float64), *args[1:], **kwargs)
                if path in ("ones", "zeros", "full"):
                    shape = args[0] if args else kwargs.get("shape", ())
                    n = int(math.prod(shape) if isinstance(shape, (tuple, list)) else shape)
                    if n > cap:
                        raise ValueError(f"np.{path} of {n:,} elements; at most {cap:,}")
                    return getattr(np, path)(*args, **kwargs)
                if path in ("array", "asarray"):
                    return self.size(np.array(args[0], dtype=np.float64), node)
                if path in ("dot", "outer", "inner", "vdot"):
                    if np.size(args[0]) * np.size(args[1]) > cap:
                        raise ValueError(f"np.{path} of these sizes is too large (at most {cap:,} products)")
                    return getattr(np, path)(*args, **kwargs)
                gate = self.gates[path]
                inputs, params = split_call(gate, args, kwargs, f"np.{path}")
                shape = gate.out_shape([np.shape(i) for i in inputs], params)
                if math.prod(shape) > cap:
                    raise ValueError(f"np.{path} would make an array of shape {shape}; at most {cap:,} elements")
                return self.size(gate.fn(*inputs, **params), node)
        except ProgramError:
            raise
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError) as e:
            raise prog.fail(_numpy_message(e), node, run=True) from None


def evaluate(node: ast.expr, env: dict[str, Any], max_elements: int = MAX_VALUE_ELEMENTS) -> Any:
    """One expression of the :class:`Program` subset (``db * 2 * x``, ``np.exp(a)``) interpreted with
    NumPy at the values ``env`` gives its names, never run as Python; anything outside the subset, or
    a call of a function other than NumPy's, raises :class:`ExprError`."""
    return _ProgramRun(Program("", "", [], {}), max_elements).eval(node, env)


def _numpy_message(e: Exception) -> str:
    return re.sub(r" at (?:<[^>]*>|\S+):\d+$", "", str(e)) or type(e).__name__
