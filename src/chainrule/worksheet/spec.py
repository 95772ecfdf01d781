"""The worksheet file format (TOML): what a teaching assistant writes, read and checked here.

A worksheet is a title, an introduction and sections; a section holds prose and problems. A problem
is a function (in chainrule's expression language, or as the source of a Python ``def``, which is
read, never run), its inputs, and the parts to answer: ``staged`` equations, the ``graph``, the
forward/backward ``table``, the ``gradients``, the combined ``code`` (with the skeleton's signature,
return names and provided helpers), an analytic ``derivation`` and ``descent`` steps. Inputs and
constants may be marked to ``vary`` between per-student variants. The README documents the format
with a complete example; every mistake is reported with the file, the problem and the key at fault.
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..expr import CONSTANTS, FUNCTIONS, ExprError, Expression, gate_of, parse, parse_value
from ..gates import GATES

__all__ = ["PARTS", "Code", "Descent", "Problem", "Section", "Worksheet", "WorksheetError", "load", "loads",
           "variant"]

#: The parts a problem can ask for, in the order they are answered.
PARTS = ("staged", "graph", "table", "gradients", "code", "derivation", "descent")
_NEED_INPUTS = {"graph", "table", "gradients", "code", "descent"}
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class WorksheetError(ValueError):
    """A worksheet file that cannot be used: one message naming the file, the place and the mistake."""


@dataclass(frozen=True)
class Code:
    """The combined forward+backward function a problem asks for, as its skeleton gives it."""

    name: str
    returns: tuple[str, ...]  # the output's name, then one gradient name per input
    helpers: tuple[str, ...] = ()  # gates the skeleton provides as helper functions (sigmoid)
    given: str | None = None  # "forward": the skeleton gives the forward pass
    lines: int = 12  # blank lines left for each pass in the student's skeleton


@dataclass(frozen=True)
class Descent:
    """Gradient descent ``w -= lr * grad`` from the problem's inputs."""

    lr: str
    steps: int = 1
    wrt: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Problem:
    """One problem: a function, its inputs, the parts to answer (see the module docstring)."""

    id: str
    label: str
    text: str
    body: str  # the function in chainrule's expression language, constants by name
    math: str  # how it is displayed (empty: written out from the staged equations)
    inputs: dict[str, str]  # name -> value text (numbers, e, pi/2, [1, 2])
    constants: dict[str, str]
    vary: dict[str, Any]
    parts: tuple[str, ...]
    expand: bool = False
    code: Code | None = None
    descent: Descent | None = None
    variables: tuple[str, ...] = ()
    python: str = ""  # the Python source the function was read from, as written ('' for an expression)

    @property
    def function(self) -> str:
        """The function with the constants' values in place of their names."""
        return _substitute(self.body, self.constants)

    def expression(self) -> Expression:
        """The function, parsed."""
        return parse(self.function)

    def values(self) -> dict[str, Any]:
        """The inputs as arrays/numbers, in the function's argument order."""
        return {v: parse_value(self.inputs[v]) for v in self.variables if v in self.inputs}


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    problems: tuple[Problem, ...] = ()
    gates: tuple[str, ...] | None = None  # a "Common gates" reference: the gates it shows


@dataclass(frozen=True)
class Worksheet:
    title: str
    subtitle: str
    intro: str
    sections: tuple[Section, ...]
    path: str = "<worksheet>"
    variant: int | None = None  # which variant this is (None: the worksheet as written)

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.sections for p in s.problems]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def load(path: str | Path) -> Worksheet:
    """Read and check a worksheet file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorksheetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorksheetError(f"{path}: cannot be read: {e}") from None
    return loads(text, str(path))


def loads(text: str, where: str = "<worksheet>") -> Worksheet:
    """Read and check a worksheet from TOML text (``where`` names it in messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WorksheetError(f"{where}: not valid TOML: {e}") from None
    ctx = _Ctx(where)
    _keys(ctx, data, {"title", "subtitle", "intro", "section"}, required={"title"})
    sections = []
    ids: set[str] = set()
    for k, raw in enumerate(_list(ctx, data, "section"), start=1):
        sections.append(_section(ctx.at(f"section {k}"), raw, ids))
    if not sections:
        raise WorksheetError(f"{where}: a worksheet needs at least one [[section]]")
    return Worksheet(_str(ctx, data, "title"), _str(ctx, data, "subtitle", ""), _str(ctx, data, "intro", ""),
                     tuple(sections), where)


@dataclass(frozen=True)
class _Ctx:
    where: str
    place: str = ""

    def at(self, place: str) -> _Ctx:
        return _Ctx(self.where, f"{self.place}, {place}" if self.place else place)

    def fail(self, msg: str) -> WorksheetError:
        return WorksheetError(f"{self.where}: {self.place + ': ' if self.place else ''}{msg}")


def _keys(ctx: _Ctx, table: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(table, dict):
        raise ctx.fail(f"expected a table, not {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ctx.fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(table))
    if missing:
        raise ctx.fail(f"'{missing[0]}' is missing")


def _str(ctx: _Ctx, table: dict[str, Any], key: str, default: str | None = None) -> str:
    v = table.get(key, default)
    if not isinstance(v, str):
        raise ctx.fail(f"'{key}' must be text, not {type(v).__name__}")
    return v


def _list(ctx: _Ctx, table: dict[str, Any], key: str) -> list[Any]:
    v = table.get(key, [])
    if not isinstance(v, list):
        raise ctx.fail(f"'{key}' must be a list ([[{key}]] tables or [...]), not {type(v).__name__}")
    return v


def _section(ctx: _Ctx, raw: Any, ids: set[str]) -> Section:
    _keys(ctx, raw, {"title", "text", "problem", "gates"}, required={"title"})
    ctx = _Ctx(ctx.where, f"section {raw['title']!r}" if isinstance(raw.get("title"), str) else ctx.place)
    gates = raw.get("gates")
    if gates is True:
        gates = DEFAULT_GATES
    elif gates is False or gates is None:
        gates = None
    elif isinstance(gates, list) and all(isinstance(g, str) for g in gates):
        named = []
        for g in gates:
            elementwise = g == "copy" or (g in GATES and GATES[g].local is not None)
            gate = g if elementwise else gate_of(g) or g  # the expression language's max (not the reduction), ln
            if gate != "copy" and (gate not in GATES or GATES[gate].local is None):
                raise ctx.fail(f"'gates': {g!r} is not an elementwise gate (known: copy, "
                               f"{', '.join(n for n, gt in GATES.items() if gt.local is not None)}, and the "
                               f"expression language's {', '.join(k for k in FUNCTIONS if gate_of(k) != k)})")
            named.append(gate)
        gates = tuple(dict.fromkeys(named))  # max and maximum are one gate: shown once
    else:
        raise ctx.fail("'gates' must be true or a list of gate names")
    problems = []
    for raw_p in _list(ctx, raw, "problem"):
        pid = raw_p.get("id") if isinstance(raw_p, dict) else None
        p = _problem(ctx.at(f"problem {pid}" if isinstance(pid, str) else "a problem"), raw_p)
        if p.id in ids:
            raise ctx.fail(f"problem id {p.id!r} is used twice (ids name the pictures and answers)")
        ids.add(p.id)
        problems.append(p)
    return Section(_str(ctx, raw, "title"), _str(ctx, raw, "text", ""), tuple(problems), gates)


#: The "Common gates" reference, when a section asks for it with ``gates = true``.
DEFAULT_GATES = ("add", "mul", "maximum", "copy", "sub", "neg", "div", "pow", "exp", "log", "sin", "cos", "sqrt",
                 "sigmoid", "tanh", "relu")

_PROBLEM_KEYS = {"id", "label", "text", "function", "python", "math", "inputs", "constants", "vary", "answer",
                 "expand", "code", "descent"}


def _problem(ctx: _Ctx, raw: Any) -> Problem:
    _keys(ctx, raw, _PROBLEM_KEYS, required={"id"})
    pid = _str(ctx, raw, "id")
    if not _ID.fullmatch(pid):
        raise ctx.fail(f"id {pid!r} must start with a letter and hold only letters, digits, _ and -")
    if ("function" in raw) == ("python" in raw):
        raise ctx.fail("give the function once: either 'function' (an expression) or 'python' (a def)")
    constants = _values(ctx, raw, "constants")
    body = _str(ctx, raw, "function") if "function" in raw else _python_to_expression(ctx, _str(ctx, raw, "python"))
    text = _substitute(body, constants)
    try:
        expr = parse(text)
    except ExprError as e:
        raise ctx.fail(f"the function cannot be read: {e.render()}") from None
    clash = sorted(set(constants) & set(expr.variables))
    if clash:
        raise ctx.fail(f"{clash[0]!r} is both an input and a constant")
    inputs = _values(ctx, raw, "inputs")
    if inputs:
        missing = [v for v in expr.variables if v not in inputs]
        extra = [k for k in inputs if k not in expr.variables]
        if missing:
            raise ctx.fail(f"input {missing[0]!r} has no value in 'inputs' (the function's inputs: "
                           f"{', '.join(expr.variables)})")
        if extra:
            raise ctx.fail(f"'inputs' gives {extra[0]!r}, which is not an input of the function (its inputs: "
                           f"{', '.join(expr.variables)}; declare an unused one as f({', '.join(expr.variables)}, "
                           f"{extra[0]}) = ...)")
        for k, v in inputs.items():
            try:
                parse_value(v)
            except ExprError as e:
                raise ctx.fail(f"inputs.{k} = {v!r}: {e.message}") from None
    answer = raw.get("answer", list(PARTS[:5]) if inputs else ["staged"])
    if not isinstance(answer, list) or not all(isinstance(a, str) for a in answer):
        raise ctx.fail("'answer' must be a list of parts, e.g. [\"staged\", \"graph\", \"code\"]")
    for a in answer:
        if a not in PARTS:
            raise ctx.fail(f"'answer': {a!r} is not a part (parts: {', '.join(PARTS)})")
    parts = [p for p in PARTS if p in answer]
    descent = _descent(ctx.at("descent"), raw["descent"], expr) if "descent" in raw else None
    if descent is not None and "descent" not in parts:
        parts.append("descent")
    code = _code(ctx.at("code"), raw.get("code", {}), pid, expr) if ("code" in parts or "code" in raw) else None
    if code is not None and "code" not in parts:
        parts.insert(min(len(parts), 4), "code")
    needing = [p for p in parts if p in _NEED_INPUTS]
    if needing and not inputs:
        raise ctx.fail(f"part {needing[0]!r} needs values: add inputs = {{ "
                       + ", ".join(f"{v} = ..." for v in expr.variables) + " }")
    vary = _vary(ctx.at("vary"), raw.get("vary", {}), set(inputs) | set(constants) | ({"lr"} if descent else set()))
    expand = raw.get("expand", False)
    if not isinstance(expand, bool):
        raise ctx.fail("'expand' must be true or false")
    math_ = _str(ctx, raw, "math", "")
    return Problem(pid, _str(ctx, raw, "label", ""), _str(ctx, raw, "text", ""), body, math_, inputs,
                   constants, vary, tuple(parts), expand, code, descent, tuple(expr.variables),
                   textwrap.dedent(raw["python"]).strip() + "\n" if "python" in raw else "")


def _value_text(ctx: _Ctx, key: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float, str, list)):
        raise ctx.fail(f"{key} must be a number, a constant expression such as \"pi/2\", or a list")
    if isinstance(v, list):
        return "[" + ", ".join(_value_text(ctx, key, x) for x in v) + "]"
    return v if isinstance(v, str) else repr(v)


def _values(ctx: _Ctx, raw: dict[str, Any], key: str) -> dict[str, str]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise ctx.fail(f"'{key}' must be a table of name = value, e.g. {key} = {{ x = 1, y = \"pi/2\" }}")
    out = {}
    for name, v in table.items():
        if not name.isidentifier() or keyword.iskeyword(name) or name in CONSTANTS or name in FUNCTIONS:
            raise ctx.fail(f"{key}: {name!r} cannot be a name here")
        out[name] = _value_text(ctx, f"{key}.{name}", v)
    return out


_TOKEN = re.compile(r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)")


def _substitute(text: str, constants: dict[str, str]) -> str:
    """The function with each named constant replaced by its value, in parentheses (``a x`` → ``(4) x``);
    numbers are skipped whole, so ``2e3`` and ``x2a`` are left as they are."""
    if not constants:
        return text
    return _TOKEN.sub(lambda m: f"({constants[m['name']]})" if m["name"] in constants else m[0], text)


def _vary(ctx: _Ctx, raw: Any, names: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ctx.fail("'vary' must be a table: vary = { x = [1, 2, 3], y = { min = -3, max = 3 } }")
    out: dict[str, Any] = {}
    for name, spec in raw.items():
        if name not in names:
            raise ctx.fail(f"{name!r} is not an input or constant of this problem ({', '.join(sorted(names))})")
        if isinstance(spec, list):
            if not spec:
                raise ctx.fail(f"{name}: the list of choices is empty")
            out[name] = tuple(_value_text(ctx, name, v) for v in spec)
        elif isinstance(spec, dict):
            _keys(ctx.at(name), spec, {"min", "max", "step"}, required={"min", "max"})
            lo, hi, step = spec["min"], spec["max"], spec.get("step", 1)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi, step)) \
                    or step <= 0 or hi < lo:
                raise ctx.fail(f"{name}: min <= max and step > 0 must be numbers")
            count = int(np.floor((hi - lo) / step + 1e-9)) + 1
            out[name] = tuple(_value_text(ctx, name, _tidy(lo + k * step)) for k in range(count))
        else:
            raise ctx.fail(f"{name}: give a list of choices or {{ min = ..., max = ..., step = ... }}")
    return out


def _tidy(v: float) -> int | float:
    """A grid value as written: 2 rather than 2.0, 0.3 rather than 0.30000000000000004."""
    r = round(v, 10)
    return int(r) if float(r).is_integer() else r


def _code(ctx: _Ctx, raw: Any, pid: str, expr: Expression) -> Code:
    _keys(ctx, raw, {"name", "returns", "helpers", "given", "lines"})
    name = raw.get("name", re.sub(r"\W", "_", pid))
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ctx.fail(f"name {name!r} is not a Python function name")
    default = ["out", *(f"d{v}" for v in expr.variables)]
    returns = raw.get("returns", default)
    if not isinstance(returns, list) or not all(isinstance(r, str) and r.isidentifier() for r in returns):
        raise ctx.fail("'returns' must be a list of Python names, e.g. [\"out\", \"fx\", \"fy\"]")
    if len(returns) != len(default):
        raise ctx.fail(f"'returns' names {len(returns)} values; the function returns {len(default)}: the output "
                       f"and one gradient for each input ({', '.join(expr.variables)})")
    if len(set(returns)) != len(returns) or name in returns or set(returns) & set(expr.variables):
        raise ctx.fail("the names in 'returns' must differ from each other, the inputs and the function")
    helpers = raw.get("helpers", [])
    if not isinstance(helpers, list) or not all(isinstance(h, str) for h in helpers):
        raise ctx.fail("'helpers' must be a list of gate names, e.g. [\"sigmoid\"]")
    for h in helpers:
        if h not in GATES or GATES[h].expand is None or GATES[h].local is None:
            raise ctx.fail(f"helper {h!r} is not a composite elementwise gate (those are: "
                           f"{', '.join(n for n, g in GATES.items() if g.expand is not None and g.local)})")
    given = raw.get("given")
    if given not in (None, "forward"):
        raise ctx.fail("'given' can only be \"forward\" (the skeleton gives the forward pass)")
    lines = raw.get("lines", 12)
    if not isinstance(lines, int) or isinstance(lines, bool) or not 0 <= lines <= 200:
        raise ctx.fail("'lines' must be a whole number from 0 to 200")
    return Code(name, tuple(returns), tuple(helpers), given, lines)


def _descent(ctx: _Ctx, raw: Any, expr: Expression) -> Descent:
    _keys(ctx, raw, {"lr", "steps", "wrt"}, required={"lr"})
    lr = _value_text(ctx, "lr", raw["lr"])
    try:
        if not float(parse_value(lr)) > 0:
            raise ctx.fail(f"lr = {lr}: the step size must be positive")
    except (ExprError, TypeError) as e:
        raise ctx.fail(f"lr = {lr!r}: {e}") from None
    steps = raw.get("steps", 1)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise ctx.fail("'steps' must be a whole number from 1 to 1000")
    wrt = raw.get("wrt")
    if wrt is not None:
        if not isinstance(wrt, list) or not all(w in expr.variables for w in wrt):
            raise ctx.fail(f"'wrt' must list inputs of the function ({', '.join(expr.variables)})")
        wrt = tuple(wrt)
    return Descent(lr, steps, wrt)


# ---------------------------------------------------------------------------------------------
# a Python def, read as staged equations (never run)
# ---------------------------------------------------------------------------------------------

_MODULES = {"np", "numpy", "math", "cr", "chainrule"}
_RENAMES = {"maximum": "max", "minimum": "min", "absolute": "abs", "log": "ln"}


def _python_to_expression(ctx: _Ctx, source: str) -> str:
    """``def f(x, y): a = x + y; ...; return out`` as ``f(x, y) = a = x + y; ...``: assignments to
    plain names and one final ``return``; ``np.exp``, ``math.exp`` (and ``np.pi``) read as ``exp``
    (``pi``). Everything is checked again by the expression parser, which is what runs."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ctx.fail(f"python: line {e.lineno}: {e.msg}") from None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    others = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.Import, ast.ImportFrom))
              and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if len(defs) != 1 or others:
        raise ctx.fail("python: give exactly one function (def name(inputs): ...), and nothing else but imports")
    fn = defs[0]
    args = fn.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
        raise ctx.fail(f"python: line {fn.lineno}: the function takes plain inputs only: def {fn.name}(x, y)")
    params = [a.arg for a in args.args]
    body = [st for st in fn.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
    if not body or not isinstance(body[-1], ast.Return) or body[-1].value is None:
        raise ctx.fail(f"python: {fn.name} must end with 'return <the output>'")
    statements: list[str] = []
    for st in body[:-1]:
        if not (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)):
            raise ctx.fail(f"python: line {st.lineno}: only assignments to a name (q = x + y) and the final "
                           "return can be read")
        statements.append(f"{st.targets[0].id} = {ast.unparse(_Plain(ctx).visit(st.value))}")
    ret = body[-1].value
    last = statements[-1].split(" = ", 1)[0] if statements else None
    if not (isinstance(ret, ast.Name) and ret.id == last):  # return q: q is already the last step
        if isinstance(ret, ast.Tuple):
            raise ctx.fail(f"python: line {body[-1].lineno}: return one value, the output (gradients are "
                           "what chainrule works out)")
        statements.append(ast.unparse(_Plain(ctx).visit(ret)))
    name = fn.name if fn.name not in FUNCTIONS and fn.name not in CONSTANTS else "f"  # def h(x, y) reads h(x, y) = ...
    return f"{name}({', '.join(params)}) = " + "; ".join(statements)  # one line, as a function is typed


class _Plain(ast.NodeTransformer):
    """``np.exp(x)`` → ``exp(x)``, ``math.pi`` → ``pi``; any other attribute is refused."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in _MODULES:
            name = _RENAMES.get(node.attr, node.attr)
            if name in FUNCTIONS or name in CONSTANTS:
                return ast.copy_location(ast.Name(name, ast.Load()), node)
        raise self.ctx.fail(f"python: line {node.lineno}: {ast.unparse(node)} is not something chainrule can "
                            f"read (functions: {', '.join(FUNCTIONS)}; constants: pi, e)")


# ---------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------


def variant(ws: Worksheet, number: int, rng: np.random.Generator, taken: set[Any]) -> Worksheet:
    """The worksheet with every marked input and constant drawn from its choices. ``taken`` holds the
    draws already used (the original's first): a variant is never the same as one of them."""
    for _ in range(200):
        problems: dict[str, Problem] = {}
        for p in ws.problems:
            problems[p.id] = _draw(p, rng) if p.vary else p
        key = draw_key(problems.values())
        if key in taken:
            continue
        bad = next((q for q in problems.values() if q.vary and not _usable(q)), None)
        if bad is not None:
            continue
        taken.add(key)
        sections = tuple(replace(s, problems=tuple(problems[p.id] for p in s.problems)) for s in ws.sections)
        return replace(ws, sections=sections, variant=number)
    raise WorksheetError(f"{ws.path}: could not draw variant {number}: the 'vary' choices allow too few different "
                         "worksheets with finite values away from kinks (give more choices)")


def draw_key(problems: Any) -> tuple[Any, ...]:
    """What makes two versions of a worksheet the same: every problem's inputs, constants and descent."""
    return tuple((p.id, tuple(sorted({**p.inputs, **p.constants}.items())), p.descent) for p in problems)


def _draw(p: Problem, rng: np.random.Generator) -> Problem:
    inputs, constants, descent = dict(p.inputs), dict(p.constants), p.descent
    for name, choices in p.vary.items():
        pick = choices[int(rng.integers(len(choices)))]
        if name in inputs:
            inputs[name] = pick
        elif name in constants:
            constants[name] = pick
        elif descent is not None:
            descent = replace(descent, lr=pick)
    return replace(p, inputs=inputs, constants=constants, descent=descent)


def _usable(p: Problem) -> bool:
    """Whether the problem's function and its gradients are finite at its inputs, and the function is
    differentiable there: not at a kink of a non-smooth gate (max's tie, relu or |x| at 0), where
    the gradient a student works out depends on a tie-breaking convention."""
    if not p.inputs:
        return True
    from ..autodiff import value_and_grad
    from ..check import kinks

    fn = p.expression().function()
    values = list(p.values().values())
    with np.errstate(all="ignore"):
        try:
            out, grads = value_and_grad(fn, argnums=tuple(range(len(values))))(*values)
        except (ValueError, ArithmeticError, TypeError):
            return False
    if not (np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)):
        return False
    return not kinks(fn, *values)
