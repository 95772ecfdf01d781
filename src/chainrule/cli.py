"""The ``chainrule`` command: expressions in; staged equations, tables, pictures, code and checks out.

Subcommands: ``grad`` (one forward and backward pass), ``step`` (gradient descent), ``check`` (a
hand-written forward+backward function against an expression) and ``worksheet`` (a worksheet file,
the seed one by default, solved into a key, handouts and variants: :mod:`chainrule.worksheet`).
``train``, ``serve`` and ``grade`` live in their own modules (``chainrule.train``, ``chainrule.web``,
``chainrule.grading.cli``), each exposing ``add_parser(subparsers)``; they are imported only when
invoked, so a missing optional dependency never breaks the other subcommands.

Text typed by a person is parsed by :mod:`chainrule.expr`, never ``eval``-ed. Exit codes: 0 success,
1 a check found a wrong value or something could not be produced, 2 bad input (one message, position
marked), 3 (``check``) the checked code failed. Code handed to ``check`` runs only in a sandboxed child
process (:mod:`chainrule.sandbox`), never in this one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import keyword
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .expr import MAX_VALUE_ELEMENTS, ExprError, Expression, parse, parse_values

PROG = "chainrule"

#: Subcommands that live in other modules: name -> (module, pip extra, one-line help).
#: Each module exposes ``add_parser(subparsers)`` that registers the subcommand with
#: ``set_defaults(func=...)``; ``func(args)`` returns the exit code.
PLUGINS: dict[str, tuple[str, str, str]] = {
    "train": ("chainrule.train", "train", "train a small network with gradient descent"),
    "serve": ("chainrule.web", "web", "start the local explorer page"),
    "grade": ("chainrule.grading.cli", "grade",
              "grade a class: every submission sandboxed, scored, with feedback on its first wrong step"),
}


class UsageError(Exception):
    """A mistake in the command line that is not inside an expression (exit code 2)."""


class Failure(Exception):
    """Something that could not be produced (a picture without Graphviz, say): exit code 1."""


# ---------------------------------------------------------------------------------------------
# output: rich on a terminal, plain text when piped
# ---------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    from .graph import fmt_value

    return fmt_value(v)


class Printer:
    """Writes sections, text blocks, tables and code: with ``rich`` on a terminal, else plain text."""

    def __init__(self, plain: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.console: Any = None
        if not plain and _isatty(self.stream):
            try:
                from rich.console import Console
            except ImportError:
                Console = None  # noqa: N806
            if Console is not None:
                self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self._first = True

    @property
    def rich(self) -> bool:
        return self.console is not None

    def _gap(self) -> None:
        if not self._first:
            self.write("")
        self._first = False

    def write(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(text, markup=False)
        else:
            self.stream.write(text + "\n")

    def section(self, title: str) -> None:
        self._gap()
        if self.console is not None:
            self.console.print(f"[bold cyan]{_escape(title)}[/]")
        else:
            self.write(title)
            self.write("-" * len(title))

    def block(self, text: str) -> None:
        for line in text.splitlines():
            self.write(("  " + line).rstrip())

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        numeric = [k > 0 and all(_looks_numeric(r[k]) for r in rows) for k in range(len(columns))]
        if self.console is not None:
            from rich import box
            from rich.padding import Padding
            from rich.table import Table

            t = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
            for k, c in enumerate(columns):
                t.add_column(c, justify="right" if numeric[k] else "left", no_wrap=False)
            for r in rows:
                t.add_row(*[_escape(c) for c in r])
            self.console.print(Padding(t, (0, 0, 0, 2)))
            return
        widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
        def line(cells: Sequence[str]) -> str:
            return "  " + "  ".join(f"{c:>{w}}" if numeric[k] else f"{c:<{w}}"
                                    for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

        self.write(line(columns))
        self.write("  " + "  ".join("-" * w for w in widths))
        for r in rows:
            self.write(line(r))

    def code(self, source: str, lexer: str = "python") -> None:
        if self.console is not None:
            from rich.syntax import Syntax

            self.console.print(Syntax(source.rstrip("\n"), lexer, theme="ansi_dark", background_color="default"))
        else:
            self.stream.write(source if source.endswith("\n") else source + "\n")


def _looks_numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-+.[(" or cell in ("nan", "inf", "-inf"))


def _escape(text: str) -> str:
    try:
        from rich.markup import escape
    except ImportError:
        return text
    return escape(text)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# helpers shared by the subcommands
# ---------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    """Numbers and arrays as JSON: nested lists of floats; inf and nan as the strings "inf", "nan"."""
    from .tensor import Tensor

    a = np.asarray(v.data if isinstance(v, Tensor) else v)
    if a.dtype.kind in "biuf":
        a = a.astype(np.float64)
        if a.ndim == 0:
            return _num_json(float(a))
        return _deep(a.tolist())
    return str(v)


def _num_json(x: float) -> Any:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _deep(v: Any) -> Any:
    if isinstance(v, list):
        return [_deep(x) for x in v]
    return _num_json(float(v))


def _grad_label(output: str, var: str) -> str:
    return f"∂{output}/∂{var}"


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_fmt(v)}" for k, v in values.items())


def _warn(msg: str) -> None:
    sys.stderr.write(f"{PROG}: note: {msg}\n")


def _nonfinite_note(values: dict[str, Any]) -> None:
    bad = [k for k, v in values.items() if not np.all(np.isfinite(np.asarray(v, dtype=float)))]
    if bad:
        _warn(f"{', '.join(bad)} contain{'s' if len(bad) == 1 else ''} nan or inf "
              "(a function outside its domain, such as ln of a negative number?)")


# ---------------------------------------------------------------------------------------------
# grad
# ---------------------------------------------------------------------------------------------


def cmd_grad(args: argparse.Namespace, out: Printer) -> int:
    """One forward and backward pass: staged equations, table, output and gradients (and views)."""
    from .graph import trace

    expr = parse(args.expr.strip())
    # a value for a name the expression does not use (the worksheet's q2c gives z=2) makes it an
    # input whose gradient is 0; it is an error only when some variable is left without a value
    values = parse_values(args.at or [], expr, allow_extra=True)
    extra = [k for k in values if k not in expr.variables]
    # the generated function takes its inputs in the order they were given (a declared g(x, y) wins)
    order = expr.signature(_given_names(args.at))
    values = {k: values[k] for k in order}
    if args.code is not None and (not args.code.isidentifier() or keyword.iskeyword(args.code)):
        raise UsageError(f"--code {args.code!r}: the function needs a Python name, like q2a")
    if args.graph:
        _check_output(args.graph, "--graph", _PICTURES)
    if not expr.variables:
        return _constant_only(expr, args, out)
    if extra and not args.json:
        _warn(f"{', '.join(extra)} {'does' if len(extra) == 1 else 'do'} not appear in the expression; "
              "kept as input(s) with gradient 0")
    g = trace(expr.function(params=order, max_elements=MAX_VALUE_ELEMENTS), expand=args.expand, **values)
    name = g.output.name
    grads = {n.name: n.grad for n in g.inputs}
    picture: str | None = None
    if args.graph:
        picture = _render(g, args.graph)
    dot = g.to_dot() if args.dot else None
    code = g.to_source(args.code) if args.code else None
    if args.json:
        doc = {
            "expression": expr.text,
            "read_as": expr.normalized,
            "variables": expr.variables,
            "signature": expr.signature_text(order, args.code),
            "inputs": {k: _jsonable(v) for k, v in values.items()},
            "output": {"name": name, "value": _jsonable(g.output.value)},
            "gradients": {k: _jsonable(v) for k, v in grads.items()},
            "staged": [
                {"name": e.name, "op": e.op, "inputs": list(e.inputs), "value": _jsonable(e.value),
                 "grad": None if e.grad is None else _jsonable(e.grad)}
                for e in g.equations
            ],
            "staged_text": g.staged(values=False),
            "table": g.table(),
            "expanded": bool(args.expand),
        }
        if picture:
            doc["graph_file"] = picture
        if dot is not None:
            doc["dot"] = dot
        if code is not None:
            doc["code"] = code
        out.stream.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    if args.quiet:
        if dot is not None:
            out.code(dot, "dot")
        if code is not None:
            out.code(code)
        if picture:
            _warn(f"wrote {picture}")
        return 0
    out.section(f"{expr.header(order, args.code)}   at {_values_text(values)}")
    if expr.normalized.replace(" ", "") != expr.text.replace(" ", "").replace("\n", ";"):
        out.write(f"  read as: {expr.normalized}")
    out.section("staged computation" + (" (composites expanded)" if args.expand else ""))
    out.block(g.staged())
    out.section("forward and backward pass")
    out.block(g.table())
    out.section("result")
    rows = [[name, _fmt(g.output.value)]] + [[_grad_label(name, k), _fmt(v)] for k, v in grads.items()]
    out.table(["", "value"], rows)
    if picture:
        out.write(f"  graph written to {picture}")
    if dot is not None:
        out.section("graph (DOT)")
        out.code(dot, "dot")
    if code is not None:
        out.section(f"combined forward and backward pass: {args.code}()")
        out.code(code)
    _nonfinite_note({name: g.output.value, **{_grad_label(name, k): v for k, v in grads.items()}})
    return 0


def _given_names(items: Sequence[str]) -> list[str]:
    """The names of ``--at`` values, in the order they were typed (already checked by parse_values)."""
    return [item.partition("=")[0].strip() for item in items]


def _constant_only(expr: Expression, args: argparse.Namespace, out: Printer) -> int:
    """An expression without variables has a value and nothing to differentiate."""
    value = expr.function()()
    value = getattr(value, "data", value)
    if args.graph or args.dot or args.code:
        raise UsageError(f"{expr.text!r} has no variables: there is no graph to draw or differentiate")
    if args.json:
        doc = {"expression": expr.text, "read_as": expr.normalized, "variables": [], "inputs": {},
               "output": {"name": expr.output, "value": _jsonable(value)}, "gradients": {}, "staged": []}
        out.stream.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    out.section(expr.text)
    out.write(f"  {expr.output} = {_fmt(value)}   (no variables, so no gradients)")
    return 0


_PICTURES = (".svg", ".png", ".pdf", ".dot", ".gv", ".tex")


def _check_output(path: str, option: str, suffixes: Sequence[str]) -> None:
    """A file the command will write, checked before any work: extension, folder, permission."""
    from .fileio import OutputPathError, check_writable

    try:
        check_writable(path, option, suffixes)
    except OutputPathError as e:
        raise UsageError(str(e)) from None


def _render(g: Any, path: str) -> str:
    """Write the picture (atomically); a missing renderer or a failed write is a :class:`Failure`."""
    p = Path(path)
    if p.suffix.lower() not in _PICTURES:
        raise UsageError(f"--graph {path}: the file name must end in {', '.join(_PICTURES)}")
    try:
        written = g.render(str(p))
    except (ImportError, RuntimeError, OSError, ValueError) as e:
        raise Failure(f"could not draw {path}: {e}") from None
    return str(written or p)


# ---------------------------------------------------------------------------------------------
# step
# ---------------------------------------------------------------------------------------------


def cmd_step(args: argparse.Namespace, out: Printer) -> int:
    """Gradient descent ``w -= lr * grad`` on the variables, printing every step."""
    expr = parse(args.expr.strip())
    values = parse_values(args.at or [], expr)
    if not expr.variables:
        raise UsageError("the expression has no variables to step")
    order = expr.signature(_given_names(args.at))
    values = {k: values[k] for k in order}
    wrt = _wrt_list(args.wrt, expr, order)
    if args.steps < 0:
        raise UsageError("--steps must be 0 or more")
    if not math.isfinite(args.lr):
        raise UsageError("--lr must be a finite number")
    from .worksheet import descend

    history = descend(expr.function(params=order, max_elements=MAX_VALUE_ELEMENTS), order, values, args.lr,
                      args.steps, wrt)
    name = expr.output
    if args.json:
        doc = {
            "expression": expr.text, "lr": args.lr, "steps": args.steps, "wrt": wrt,
            "history": [{"step": h["step"], "values": {k: _jsonable(v) for k, v in h["values"].items()},
                         "output": _jsonable(h["output"]),
                         "gradients": {k: _jsonable(v) for k, v in h["gradients"].items()}} for h in history],
            "final": {k: _jsonable(v) for k, v in history[-1]["values"].items()},
        }
        out.stream.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    updates = ", ".join(f"{v} -= {args.lr:g} * {_grad_label(name, v)}" for v in wrt)
    out.section(f"gradient descent on {expr.text}: {updates}")
    columns = ["step", *order, name, *[_grad_label(name, v) for v in wrt]]
    every = max(1, args.every)
    rows = [[str(h["step"]), *[_fmt(h["values"][v]) for v in order], _fmt(h["output"]),
             *[_fmt(h["gradients"][v]) for v in wrt]]
            for h in history if h["step"] % every == 0 or h["step"] == args.steps]
    out.table(columns, rows)
    last = history[-1]
    out.write("")
    out.write(f"  after {args.steps} step{'s' if args.steps != 1 else ''}: "
              f"{_values_text({v: last['values'][v] for v in wrt})}, {name} = {_fmt(last['output'])}")
    _nonfinite_note({name: last["output"], **{v: last["values"][v] for v in wrt}})
    return 0


def _wrt_list(wrt: str | None, expr: Expression, order: list[str]) -> list[str]:
    if not wrt:
        return list(order)
    names = [w.strip() for w in wrt.replace(",", " ").split() if w.strip()]
    for w in names:
        if w not in expr.variables:
            raise UsageError(f"--wrt {w}: not a variable of the expression ({', '.join(expr.variables)})")
    return names


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


def _user_target(target: str) -> tuple[Path, str]:
    """``FILE:FUNC`` split and checked (without running anything in it)."""
    path_text, sep, func = target.rpartition(":")
    if not sep or not path_text or not func:
        raise UsageError(f"expected FILE:FUNC (like my_solution.py:q2a), got {target!r}")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{path_text}: no such file")
    if not func.isidentifier():
        raise UsageError(f"{func!r} is not a function name")
    return path, func


#: ``chainrule check`` exit codes by verdict.
CHECK_EXIT = {"correct": 0, "wrong": 1, "failed": 3}


def cmd_check(args: argparse.Namespace, out: Printer) -> int:
    """Run the user's combined forward+backward function, in a sandboxed child process, against
    chainrule's answer for EXPR. Exit 0 correct, 1 wrong, 2 usage error, 3 the checked code failed."""
    from .check import check_file
    from .sandbox import Limits, SandboxError

    path, func = _user_target(args.target)
    expr = parse(args.against.strip())
    # values for names the expression does not use may be parameters of the function (q2c's z)
    values = parse_values(args.at or [], expr, allow_extra=True)
    values = {k: values[k] for k in expr.signature(_given_names(args.at))}  # as typed (the header's order)
    try:
        limits = Limits(seconds=args.timeout, memory_bytes=args.memory)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        report = check_file(path, func, expr.function, values, expr.variables, limits=limits)
    except SandboxError as e:  # the code did not run (exit 3), whatever the reason: never "wrong" (exit 1)
        from .check import BackwardReport

        report = BackwardReport(False, f"{path.name}:{func}", {}, "", failure=f"the sandbox could not run it: {e}",
                                failure_kind="internal")
    if report.failure_kind == "needs_values":
        raise UsageError(report.failure)
    code = CHECK_EXIT[report.status]
    if args.json:
        rep = report.to_json()
        doc = {"target": args.target, "against": expr.text, "inputs": {k: _jsonable(v) for k, v in values.items()},
               "ok": report.ok, "status": report.status, "exit_code": code, "reason": report.failure,
               "report": rep["report"], "checked": report.checked, "wrong": rep["wrong"],
               "first_wrong_step": rep["first_wrong_step"], "mistake": report.mistake, "feedback": report.feedback,
               "line": report.line, "stdout": report.stdout, "stderr": report.stderr}
        out.stream.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return code
    out.section(f"check {args.target} against {expr.text}   at {_values_text(values)}")
    out.block(str(report))
    for stream, text in (("stdout", report.stdout), ("stderr", report.stderr)):
        if text.strip():
            out.section(f"what {path.name} printed ({stream})")
            for line in text.rstrip("\n").splitlines():
                more = f" [... {len(line) - 300} more characters]" if len(line) > 300 else ""
                out.write(f"  │ {line[:300]}{more}")
    if report.failure and not (_isatty(out.stream) and _isatty(sys.stderr)):
        # for scripts that read stderr; on a terminal the report above already said it once
        sys.stderr.write(f"{PROG} check: {args.target} failed: {report.failure}\n")
    return code


def positive_float(text: str) -> float:
    """An argparse type: a positive, finite number."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (x > 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return x


def positive_int(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    return _int_at_least(text, 1, "a positive whole number")


def count(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    return _int_at_least(text, 0, "a whole number, 0 or more")


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return n


def _size(text: str) -> int:
    from .sandbox import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# worksheet
# ---------------------------------------------------------------------------------------------


def cmd_worksheet(args: argparse.Namespace, out: Printer) -> int:
    """Solve a worksheet file (the seed worksheet without one) into a key, handouts and variants."""
    from .worksheet import FORMATS, WorksheetError, solve_worksheet
    from .worksheet.pdf import PdfError

    folder = Path(args.out)
    for p in (folder, *folder.parents):  # a file in the way: say so, before anything is written
        if p.exists() and not p.is_dir():
            what = "" if p == folder else f"{p}: "
            raise UsageError(f"--out {args.out}: {what}exists and is not a directory")
    formats = tuple(dict.fromkeys(f.strip() for item in args.format for f in item.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UsageError(f"--format {bad[0]}: choose among {', '.join(FORMATS)} (several with commas: md,html)")
    if args.variants < 0:
        raise UsageError("--variants must be 0 or more")
    try:
        result = solve_worksheet(folder, source=args.file, formats=formats or ("md",), pictures=args.pictures,
                                 blank=args.blank, variants=args.variants, seed=args.seed, exact=args.exact,
                                 pdf_engine=args.pdf_engine)
    except WorksheetError as e:
        raise UsageError(str(e)) from None
    except (ImportError, PdfError) as e:
        raise Failure(str(e)) from None
    if args.json:
        out.stream.write(json.dumps(result.summary_json(), indent=2, ensure_ascii=False) + "\n")
        return 0 if result.ok else 1
    out.section(f"worksheet solved: {result.report}")
    out.table(["question", "answer"], result.summary_rows())
    out.write("")
    if not result.ok:
        out.write("  a generated function did not pass its check: see the key")
    others = [p.name for p in result.files if p.parent == result.report.parent and p not in result.pictures]
    out.write(f"  written in {result.report.parent}: {', '.join(others)}"
              + (f" and {len(result.pictures)} pictures" if result.pictures else ""))
    for v in result.variants:
        out.write(f"  variant: {v}")
    if result.picture_problem:
        out.write(f"  pictures could not be rendered ({result.picture_problem}); the report holds the graphs as "
                  "DOT text instead")
    return 0 if result.ok else 1


def cmd_cache(args: argparse.Namespace, out: Printer) -> int:
    """Where cr.compile keeps its compiled loops, how much it holds, and clearing it."""
    import warnings

    from .compile import vecmath

    folder, count, size = vecmath.cache_usage()
    removed = freed = 0
    if args.clear:
        removed, freed = vecmath.clear_cache()
    with warnings.catch_warnings(record=True) as caught:   # a limit that is not a size: said on one line
        warnings.simplefilter("always")
        limit = vecmath.cache_limit()
    for w in caught:
        sys.stderr.write(f"{PROG} cache: note: {w.message}\n")
    info = {"folder": folder, "kernels": count, "bytes": size, "limit_bytes": limit,
            "removed": removed, "freed_bytes": freed}
    if args.json:
        out.stream.write(json.dumps(info, indent=2) + "\n")
        return 0
    if folder is None:
        out.write("no kernel cache: no folder could be written ($CHAINRULE_CACHE_DIR, $XDG_CACHE_HOME or "
                  "~/.cache); compiled loops are kept in memory only")
        return 0
    mib = 1 << 20
    out.write(f"kernel cache: {folder}")
    if args.clear:
        out.write(f"  removed {removed} compiled loop{'s' if removed != 1 else ''} ({freed / mib:.1f} MiB): they "
                  "compile again when next used")
        return 0
    shown = format(round(limit / mib, 3), "f").rstrip("0").rstrip(".")   # 0.5 stays 0.5, not 0
    out.write(f"  {count} compiled loop{'s' if count != 1 else ''}, {size / mib:.1f} MiB; limit "
              f"{shown} MiB ($CHAINRULE_CACHE_MAX_MB), past which the loops used longest ago are removed")
    return 0


# ---------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------

_EXPR_HELP = """\
expressions: numbers, variables, + - * / and ** or ^ (power), unary minus, parentheses, implicit
multiplication (2y, 4x, (x + 1) z^3, 2 pi), the functions ln log exp sin cos tan sqrt abs sigmoid
tanh relu max min sum mean, and the constants pi and e. Stage it yourself with ';' or new lines:
"q = x + y; f = q * z" (the last statement is the output). Declare the inputs, in order, with
"g(x, y, z) = ..." to keep an input the body does not use (its gradient is 0).
values (--at): numbers, constant expressions (pi/2, e, sqrt(2)) or lists (x=[1,2,3]).
"""


def _formatter(prog: str) -> argparse.RawDescriptionHelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def _add_common(p: argparse.ArgumentParser, json_help: str = "print everything as JSON") -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--plain", action="store_true", help="plain text even on a terminal (no colours or rich tables)")


def build_parser(invoked: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``invoked`` is the subcommand on the command line (plugins load only then)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Backpropagation you can see: staged equations, forward/backward tables, graph pictures, "
                    "generated NumPy code and checks, from an expression typed on the command line.",
        epilog="examples:\n"
               '  chainrule grad "(x + y) * z" --at x=1 y=3 z=2\n'
               '  chainrule step "sigmoid(x)" --at x=2 --lr 0.2 --steps 1\n'
               "  chainrule worksheet --out answers/\n\n"
               "'chainrule COMMAND --help' shows each command's options and examples.",
        formatter_class=_formatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser(
        "grad", help="forward and backward pass of an expression: staged equations, table, gradients",
        description="Split EXPR into staged computation (one operation per equation), run the forward and "
                    "backward pass at the values given with --at, and print the equations, the node-by-node "
                    "table and every gradient.\n\n" + _EXPR_HELP,
        epilog="examples:\n"
               '  chainrule grad "(x + y) * z" --at x=1 y=3 z=2\n'
               '  chainrule grad "(x^2 + 2y) z^3" --at x=3 y=1 z=2 --graph q2b.svg --code q2b\n'
               '  chainrule grad "g(x, y, z) = (ln(x) + sin(y))^2 + 4x" --at x=e y=pi/2 z=2\n'
               '  chainrule grad "sigmoid(x)" --at x=2 --expand\n'
               '  chainrule grad "q = x + y; f = q * z" --at x=1 y=3 z=2 --json\n'
               '  chainrule grad "x * y" --at x=[1,2,3] y=2\n'
               '  chainrule grad "(x + y) * z" --at x=1 y=3 z=2 --dot --quiet | dot -Tpng > q2a.png',
        formatter_class=_formatter,
    )
    g.add_argument("expr", metavar="EXPR", help='the expression, e.g. "(x + y) * z" (quote it)')
    g.add_argument("--at", nargs="*", metavar="NAME=VALUE", default=[],
                   help="a value for every variable: x=1 y=pi/2 z=[1,2,3]")
    g.add_argument("--graph", metavar="FILE",
                   help="draw the computational graph into FILE (.svg, .png, .pdf, .dot; .tex: a LaTeX document "
                        "with the picture in TikZ)")
    g.add_argument("--dot", action="store_true", help="print the graph as Graphviz DOT")
    g.add_argument("--code", metavar="NAME", help="print the combined forward+backward function, named NAME")
    g.add_argument("--expand", action="store_true",
                   help="expand composites (sigmoid, tanh, ...) into their staged parts")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="print only what --dot and --code ask for (for piping)")
    _add_common(g)
    g.set_defaults(func=cmd_grad)

    s = sub.add_parser(
        "step", help="gradient descent on an expression: w -= lr * grad, printing every step",
        description="Take gradient-descent steps w -= lr * ∂out/∂w on the variables (all of them, or those in "
                    "--wrt) and print each step's values, output and gradients. A non-scalar output is "
                    "differentiated through its sum.\n\n" + _EXPR_HELP,
        epilog="examples:\n"
               '  chainrule step "sigmoid(x)" --at x=2 --lr 0.2 --steps 1        # worksheet Q3\n'
               '  chainrule step "(w - 3)^2" --at w=0 --lr 0.1 --steps 20 --every 5\n'
               '  chainrule step "(w x - 1)^2" --at w=0 x=2 --wrt w --lr 0.05 --steps 3',
        formatter_class=_formatter,
    )
    s.add_argument("expr", metavar="EXPR", help="the expression to minimise")
    s.add_argument("--at", nargs="*", metavar="NAME=VALUE", default=[], help="starting values: x=2")
    s.add_argument("--lr", type=float, default=0.1, help="step size (default 0.1)")
    s.add_argument("--steps", type=int, default=1, help="number of steps (default 1)")
    s.add_argument("--wrt", metavar="NAMES", help="only step these variables (comma separated); the rest stay fixed")
    s.add_argument("--every", type=int, default=1, metavar="K", help="print every K-th step (and the last)")
    _add_common(s)
    s.set_defaults(func=cmd_step)

    c = sub.add_parser(
        "check", help="check a hand-written forward+backward function against an expression",
        description="Run FUNC from FILE (a combined forward+backward function returning out and one gradient "
                    "per input, as on the worksheet) in a sandboxed child process and compare it with "
                    "chainrule's answer for EXPR at the --at values and at random ones. Every value must have "
                    "the answer's shape and be real numbers.\n\n"
                    "exit codes: 0 correct, 1 wrong (with a report of what is wrong), 2 a mistake on the "
                    "command line, 3 the checked code failed (it raised, exited, crashed, ran out of time or "
                    "memory, or does not import), with a one-line reason.\n\n" + _EXPR_HELP,
        epilog="examples:\n"
               '  chainrule check my_solution.py:q2a --against "(x + y) * z" --at x=1 y=3 z=2\n'
               '  chainrule check sigmoid_hw.py:sigmoid --against "1 / (1 + exp(-x))" --at x=2\n'
               '  chainrule check slow.py:f --against "x^2" --at x=3 --timeout 60 --memory 4G\n'
               "note: FILE's top-level code runs (as with 'python FILE'), in a child process with a time and a "
               "memory limit, in a scratch folder; what it prints is shown apart from the verdict. The child can "
               "still read files and use the network: see the README to run it in a container.",
        formatter_class=_formatter,
    )
    c.add_argument("target", metavar="FILE:FUNC", help="your file and the function in it, e.g. my_solution.py:q2a")
    c.add_argument("--against", required=True, metavar="EXPR", help="the function it should compute")
    c.add_argument("--at", nargs="*", metavar="NAME=VALUE", default=[], help="input values, by parameter name")
    c.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                   help="wall-clock limit for importing and running the code (default 10)")
    c.add_argument("--memory", type=_size, default=1 << 30, metavar="SIZE",
                   help="memory the checked code may allocate (default 1G)")
    _add_common(c, "print the verdict and report as JSON")
    c.set_defaults(func=cmd_check)

    w = sub.add_parser(
        "worksheet", help="solve a backprop worksheet (a TOML file; the section 2 one by default) into a key",
        description="Solve a worksheet written as a TOML file (see the README for the format; without FILE, the "
                    "section 2 backprop worksheet that ships with chainrule): for each problem its staged "
                    "equations, graph, forward/backward values, gradients and the combined function in the "
                    "skeleton's own form, checked by running it. --blank adds the student handout (empty graphs, "
                    "code skeletons), --variants N per-student versions with their own keys, --exact exact "
                    "answers and derivations (sympy). Prints a summary.",
        epilog="examples:\n"
               "  chainrule worksheet --out answers/\n"
               "  chainrule worksheet --out answers/ --format html --exact\n"
               "  chainrule worksheet my_sheet.toml --out key/ --format md,html,tex,pdf --blank\n"
               "  chainrule worksheet my_sheet.toml --out week3/ --blank --variants 30 --seed 7",
        formatter_class=_formatter,
    )
    w.add_argument("file", nargs="?", metavar="FILE", help="the worksheet (.toml); default: the seed worksheet")
    w.add_argument("--out", default="answers", metavar="DIR",
                   help="folder for the key, handouts and pictures (default answers/)")
    w.add_argument("--format", action="append", default=[], metavar="FMT",
                   help="md (default), html (one self-contained page), tex (LaTeX with TikZ pictures), pdf "
                        "(printed by Chromium, or a TeX engine); several with commas or repeated")
    w.add_argument("--pictures", choices=("svg", "png"), default="svg", help="picture format (default svg)")
    w.add_argument("--blank", action="store_true", help="also write the student handout, worksheet-blank.*")
    w.add_argument("--variants", type=int, default=0, metavar="N",
                   help="also write N variants with other inputs (where the file marks them) into variant-K/")
    w.add_argument("--seed", type=int, default=0, help="random seed of the variants (default 0)")
    w.add_argument("--exact", action="store_true",
                   help="exact answers (4 + 4e, σ(2)(1 − σ(2))) and derivations; needs sympy (chainrule[exact])")
    w.add_argument("--pdf-engine", choices=("chromium", "latex", "pdflatex", "lualatex", "xelatex", "tectonic"),
                   default=None, help="what prints --format pdf: chromium (from the HTML), latex (any TeX engine "
                   "found) or a TeX engine by name (default: Chromium if found, else a TeX engine)")
    _add_common(w, "print the summary as JSON")
    w.set_defaults(func=cmd_worksheet)

    k = sub.add_parser(
        "cache", help="where cr.compile keeps its compiled loops, their size, and --clear",
        description="cr.compile writes each fused loop it compiles (numba's machine code beside its source) into "
                    "a cache folder, so that a second process loads it instead of compiling: "
                    "$CHAINRULE_CACHE_DIR, else $XDG_CACHE_HOME/chainrule, else ~/.cache/chainrule. The folder is "
                    "kept under $CHAINRULE_CACHE_MAX_MB MiB (default 256) by removing the loops used longest ago. "
                    "This prints the folder and its size; --clear empties it.",
        epilog="examples:\n  chainrule cache\n  chainrule cache --clear",
        formatter_class=_formatter,
    )
    k.add_argument("--clear", action="store_true", help="remove every cached loop (they compile again when used)")
    _add_common(k, "print the folder and sizes as JSON")
    k.set_defaults(func=cmd_cache)

    for name, (module, extra, help_text) in PLUGINS.items():
        if name == invoked and _add_plugin(sub, name, module, extra):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=_unavailable(name, module, extra))
    return parser


def _add_plugin(sub: Any, name: str, module: str, extra: str) -> bool:
    """Let ``module.add_parser`` register subcommand ``name``; False when it cannot be imported."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return False
    add = getattr(mod, "add_parser", None)
    if add is None:
        return False
    add(sub)
    return True


def _unavailable(name: str, module: str, extra: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (e.name == module or module.startswith(e.name + ".")):
                raise Failure(f"'{PROG} {name}' is not part of this installation ({module} is missing)") from None
            raise Failure(f"'{PROG} {name}' needs {e.name}: pip install 'chainrule[{extra}]'") from None
        except ImportError as e:
            raise Failure(f"'{PROG} {name}' cannot start: {e}; try pip install 'chainrule[{extra}]'") from None
        raise Failure(f"'{PROG} {name}' is not available ({module} has no add_parser)")

    return run


def _invoked(argv: Sequence[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a
    return None


def _protect_leading_minus(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """An expression may start with a minus ("-x^2"); argparse would take it for an option. Any
    argument after the subcommand that starts with '-' but is none of its options gets a leading
    space (the parser ignores it), so it reads as text."""
    command = _invoked(argv)
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if command is None or sub is None or command not in sub.choices:
        return argv
    options = set(sub.choices[command]._option_string_actions)
    # what argparse itself reads as a negative number ("-2", "-.5"; not "-2." or "-1e3")
    negative = getattr(sub.choices[command], "_negative_number_matcher", None)
    k = argv.index(command)
    out = argv[: k + 1]
    for a in argv[k + 1:]:
        if a.startswith("-") and len(a) > 1 and a != "--":
            head = a.split("=", 1)[0]
            known = head in options or (a.startswith("--") and any(o.startswith(head) for o in options))
            number = negative.match(a) if negative is not None else _is_number(a)
            if not known and not number:
                a = " " + a
        out.append(a)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chainrule`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
    parser = build_parser(_invoked(argv))
    args = parser.parse_args(_protect_leading_minus(parser, argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    command = args.command
    out = Printer(plain=getattr(args, "plain", False) or getattr(args, "json", False))
    try:
        with np.errstate(all="ignore"):
            code = args.func(args, out) if _takes_printer(args.func) else args.func(args)
        return int(code or 0)
    except ExprError as e:
        sys.stderr.write(f"{PROG} {command}: error: {e.render()}\n")
        return _json_error(args, 2, str(e))
    except UsageError as e:
        sys.stderr.write(f"{PROG} {command}: error: {e}\n")
        return _json_error(args, 2, str(e))
    except Failure as e:
        sys.stderr.write(f"{PROG} {command}: error: {e}\n")
        return _json_error(args, 1, str(e))
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {command}: interrupted\n")
        return 130
    except (ValueError, TypeError, ArithmeticError, RuntimeError, OSError) as e:
        if os.environ.get("CHAINRULE_DEBUG"):
            raise
        sys.stderr.write(f"{PROG} {command}: error: {type(e).__name__}: {e}\n"
                         "(set CHAINRULE_DEBUG=1 to see where)\n")
        return 1


def _json_error(args: argparse.Namespace, code: int, message: str) -> int:
    """With ``--json``, an error is one JSON object on stdout too (a script reading it gets an answer)."""
    if getattr(args, "json", False):
        doc = {"ok": False, "status": "usage_error" if code == 2 else "error", "exit_code": code, "error": message}
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return code


def _takes_printer(func: Callable[..., Any]) -> bool:
    return func in (cmd_grad, cmd_step, cmd_check, cmd_worksheet, cmd_cache)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
