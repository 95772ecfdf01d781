"""What is graded: problems read from ``--against`` references, each with its test points and points.

A reference is one of

- an expression (``"(x + y) * z"``, or ``"q2a(x, y, z) = (x + y) z"`` whose declared name is the
  function to grade), parsed by :mod:`chainrule.expr`, never evaluated as Python;
- a function in the teaching staff's own Python file (``key.py:q2a``, several with
  ``key.py:q2a,q2b,q2c``): it computes the output (a key written as the worksheet's combined function,
  returning ``out, fx, ...``, works too: its first value is the output). Its default argument values
  are its given test point where ``--at`` does not give one. The key runs in the grading process,
  never in a submission's sandbox;
- a worksheet file (``*.toml``, chainrule's worksheet format): every problem that asks for code, at
  once, each graded as its skeleton names the function.

Every :class:`Problem` holds only text and arrays (a reference is a string, the function is loaded
where it is used), so a plan travels to Dask workers as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..expr import ExprError, parse, parse_value

__all__ = ["Problem", "ProblemError", "problems_from", "worksheet_problems", "assign_points", "input_sets"]


class ProblemError(ValueError):
    """A reference, a value or a points specification that cannot be used (one message)."""


@dataclass(frozen=True)
class Problem:
    """One graded problem: the function to call in each submission, the reference that computes the
    right output (``expr:TEXT`` or ``py:PATH:FUNC``), its inputs in the reference's order, the given
    test point (by name; may hold extra parameters of the student's function, like q2c's unused z),
    and the points it is worth."""

    name: str
    function: str
    reference: str
    variables: tuple[str, ...]
    values: dict[str, Any] = field(compare=False)
    points: float = 1.0

    def reference_function(self, order: Sequence[str]) -> Callable[..., Any]:
        """The reference as a function taking its inputs in ``order`` (the student's order)."""
        kind, _, rest = self.reference.partition(":")
        if kind == "expr":
            return parse(rest).function(params=list(order))
        path, _, func = rest.rpartition(":")
        return _by_name(_key_function(path, func), order)

    def describe(self) -> dict[str, Any]:
        """The problem as plain data (for the grading record and the resume check)."""
        ref = self.reference
        if ref.startswith("py:"):
            path = ref[3:].rpartition(":")[0]
            ref += f" (sha256 {_sha256(path)[:16]})"
        return {"name": self.name, "function": self.function, "reference": ref, "variables": list(self.variables),
                "values": {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.values.items()},
                "points": self.points}


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

def problems_from(references: Sequence[str], at: Sequence[str], function: str | None = None) -> list[Problem]:
    """Problems from ``--against`` references and ``--at NAME=VALUE`` values (see the module docstring).

    With one expression, ``--at`` may name extra parameters of the student's function (gradient 0);
    otherwise each problem takes the values of its own inputs and every value must belong to one."""
    given = _values(at)
    problems: list[Problem] = []
    for ref in references:
        problems += _read_reference(ref.strip(), function if len(references) == 1 else None)
    if function is not None and len(problems) != 1:
        raise ProblemError("--function names the graded function of one expression; with several problems, "
                           "declare each one's name in it: \"q2a(x, y, z) = (x + y) z\"")
    names = [p.name for p in problems]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ProblemError(f"problem {dup[0]!r} is given twice")
    used: set[str] = set()
    out = []
    for p in problems:
        inputs = set(p.variables) | set(p.values)
        values = dict(p.values)
        # one expression may be given values for more inputs than it uses (q2c's z): the student's
        # function takes them; a key function's parameters are all its inputs
        extra_ok = len(problems) == 1 and p.reference.startswith("expr:")
        for k, v in given.items():
            if k in inputs or extra_ok:
                values[k] = v
                used.add(k)
        missing = [v for v in p.variables if v not in values]
        if missing:
            raise ProblemError(f"{p.name}: no value for {', '.join(missing)}: add "
                               f"{'=... '.join(missing)}=... to --at")
        out.append(Problem(p.name, p.function, p.reference, p.variables, values, p.points))
    unused = [k for k in given if k not in used]
    if unused:
        shown = ", ".join(p.name + "(" + ", ".join(p.variables) + ")" for p in problems)
        raise ProblemError(f"--at {unused[0]}: not an input of any problem ({shown})")
    return out


def _values(at: Sequence[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for item in at:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ProblemError(f"--at {item!r}: expected NAME=VALUE, like x=1 or y=pi/2")
        if key in got:
            raise ProblemError(f"--at: {key} is given twice")
        try:
            got[key] = parse_value(text)
        except ExprError as e:
            raise ProblemError(f"--at {item}: {e.message}") from None
    return got


def _read_reference(ref: str, function: str | None) -> list[Problem]:
    if not ref:
        raise ProblemError("--against: an empty reference")
    path_text, sep, funcs = ref.rpartition(":")
    if sep and path_text.endswith(".py") and funcs:
        return _python_problems(Path(path_text), funcs)
    if ref.lower().endswith(".toml"):
        return worksheet_problems(Path(ref))
    if ref.endswith(".py"):
        raise ProblemError(f"--against {ref}: name the key's functions too, like {ref}:q2a or {ref}:q2a,q2b,q2c")
    try:
        expr = parse(ref)
    except ExprError as e:
        raise ProblemError(f"--against: {e.render()}") from None
    name = expr.name or function
    if name is None:
        raise ProblemError(f"--against {ref!r}: which function of the submissions computes it? Give --function NAME, "
                           f"or declare it: \"q2a({', '.join(expr.variables)}) = {ref}\"")
    if not name.isidentifier():
        raise ProblemError(f"--function {name!r} is not a Python function name")
    return [Problem(name, name, "expr:" + ref, tuple(expr.variables), {}, 1.0)]


def _python_problems(path: Path, funcs: str) -> list[Problem]:
    if not path.is_file():
        raise ProblemError(f"--against {path}: no such file")
    out = []
    for func in [f.strip() for f in funcs.split(",")]:
        if not func.isidentifier():
            raise ProblemError(f"--against {path}:{funcs}: {func!r} is not a function name")
        try:
            fn = _key_function(str(path.resolve()), func)
        except ProblemError:
            raise
        except Exception as e:  # noqa: BLE001 - the key failed to import: say how
            raise ProblemError(f"--against {path}: importing the key raised {type(e).__name__}: {e}") from None
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not params:
            raise ProblemError(f"--against {path}:{func}: the reference needs at least one input")
        defaults = {}
        for p in params:
            if p.default is not p.empty:
                try:
                    defaults[p.name] = np.asarray(p.default, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ProblemError(f"{path}:{func}: the default value of {p.name} is not a number") from None
        out.append(Problem(func, func, f"py:{path.resolve()}:{func}", tuple(p.name for p in params), defaults, 1.0))
    return out


def worksheet_problems(path: Path) -> list[Problem]:
    """The problems of a worksheet file (chainrule's TOML worksheet format) that ask for code: each is
    graded as its skeleton names the function (``code.name``), against its function, at its inputs.
    The format has no points per problem: each is worth 1 unless ``--points`` says otherwise."""
    try:
        from ..worksheet.spec import WorksheetError, load
    except ImportError:
        raise ProblemError(f"--against {path}: grading against a worksheet file needs chainrule's worksheet file "
                           "format, which this installation does not have; give the problems as key.py:q2a,q2b "
                           "or as expressions") from None
    if not path.is_file():
        raise ProblemError(f"--against {path}: no such file")
    try:
        sheet = load(path)
    except WorksheetError as e:
        raise ProblemError(str(e)) from None
    out = [Problem(p.id, p.code.name, "expr:" + p.function, tuple(p.variables), p.values(), 1.0)
           for p in sheet.problems if p.code is not None and "code" in p.parts]
    if not out:
        raise ProblemError(f"--against {path}: no problem asks for code (answer = [..., \"code\"]): nothing to grade")
    return out


_KEYS: dict[tuple[str, int, int], Any] = {}
_KEYS_LOCK = threading.Lock()


def _key_function(path: str, func: str) -> Callable[..., Any]:
    """``func`` from the key file at ``path`` (imported once per process and per version of the file)."""
    st = os.stat(path)
    tag = (path, st.st_mtime_ns, st.st_size)
    with _KEYS_LOCK:
        module = _KEYS.get(tag)
        if module is None:
            name = "_chainrule_key_" + hashlib.sha1(path.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ProblemError(f"{path} cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _KEYS[tag] = module
    fn = getattr(module, func, None)
    if not callable(fn):
        have = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_")
                      and v.__module__ == module.__name__)
        raise ProblemError(f"{os.path.basename(path)} has no function {func!r}"
                           + (f" (it has {', '.join(have)})" if have else ""))
    return fn


def _by_name(fn: Callable[..., Any], order: Sequence[str]) -> Callable[..., Any]:
    """``fn`` taking its inputs in ``order`` (its parameters, reordered); its first value when it
    returns several (a key written as the combined forward+backward function)."""
    sig = inspect.Signature([inspect.Parameter(v, inspect.Parameter.POSITIONAL_OR_KEYWORD) for v in order])

    def reference(*args: Any) -> Any:
        out = fn(**dict(zip(order, args)))
        return out[0] if isinstance(out, (tuple, list)) else out

    reference.__signature__ = sig  # type: ignore[attr-defined]
    reference.__name__ = getattr(fn, "__name__", "reference")
    return reference


def _sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


# ---------------------------------------------------------------------------------------------
# points and test points
# ---------------------------------------------------------------------------------------------


def assign_points(problems: list[Problem], spec: str | None) -> list[Problem]:
    """``--points 2`` (each problem) or ``--points q2a=2,q2b=3`` (the rest keep theirs)."""
    if not spec:
        return problems
    spec = spec.strip()
    per: dict[str, float] = {}
    if "=" not in spec:
        value = _points(spec)
        per = {p.name: value for p in problems}
    else:
        names = {p.name for p in problems}
        for item in spec.split(","):
            key, _, text = item.partition("=")
            key = key.strip()
            if key not in names:
                raise ProblemError(f"--points {item.strip()}: no problem named {key!r} "
                                   f"(the problems: {', '.join(p.name for p in problems)})")
            per[key] = _points(text)
    return [Problem(p.name, p.function, p.reference, p.variables, p.values, per.get(p.name, p.points))
            for p in problems]


def _points(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProblemError(f"--points: {text.strip()!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ProblemError(f"--points: {text.strip()} is not a number of points")
    return value


def input_sets(problem: Problem, random: int, seed: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The test points: the given values, then ``random`` seeded random ones of the same shapes
    (uniform in [0.5, 2), as ``chainrule check`` draws them: logs and square roots are defined)."""
    from ..check import _input_sets

    names = list(problem.values)
    arrays = [np.asarray(problem.values[k], dtype=np.float64) for k in names]
    return [(label, dict(zip(names, inputs))) for label, inputs in _input_sets(arrays, random, seed)]
