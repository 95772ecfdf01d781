"""Checks of gradients against independent answers: numerical differences (``gradcheck``), and
hand-written forward+backward functions against chainrule's own answer (``check_backward``)."""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .autodiff import as_float_array, value_and_grad
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central differences (the message says where)."""


def _values(x: Any) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float64)


def numerical_grad(f: Callable[..., Any], args: list[np.ndarray], k: int, eps: float) -> np.ndarray:
    """Central differences of sum(f(*args)) with respect to every element of ``args[k]``."""
    base = args[k]
    g = np.zeros_like(base)
    with no_grad():
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fp = _values(f(*args[:k], plus, *args[k + 1:])).sum()
            fm = _values(f(*args[:k], minus, *args[k + 1:])).sum()
            g[idx] = (fp - fm) / (2 * eps)
    return g


def kinks(f: Callable[..., Any], *args: Any, h: float = 1e-4) -> list[tuple[int, tuple[int, ...]]]:
    """Where ``sum(f(*args))`` is not differentiable along one input element: ``(argument, index)``
    pairs at which the forward and backward difference quotients disagree by an amount that does not
    shrink with the step (a kink such as max's tie or relu at 0, or a jump). Elsewhere the two differ
    by about ``step·f''``, which a tenfold smaller step makes tenfold smaller."""
    arrays = [np.array(_values(a), dtype=np.float64) for a in args]
    eps = np.finfo(np.float64).eps

    def at(k: int, idx: tuple[int, ...], dx: float) -> float:
        moved = arrays[k].copy()
        moved[idx] += dx
        with no_grad(), np.errstate(all="ignore"):
            return float(_values(f(*arrays[:k], moved, *arrays[k + 1:])).sum())

    found = []
    for k, a in enumerate(arrays):
        for idx in np.ndindex(a.shape):
            f0 = at(k, idx, 0.0)
            gaps = []
            for step in (h * max(1.0, abs(a[idx])), h * max(1.0, abs(a[idx])) / 10):
                fp, fm = at(k, idx, step), at(k, idx, -step)
                ahead, behind = (fp - f0) / step, (f0 - fm) / step
                noise = 100 * eps * (abs(fp) + abs(f0) + abs(fm)) / step  # rounding in the differences
                gaps.append((abs(ahead - behind), 1e-6 * (1 + abs(ahead) + abs(behind)) + noise))
            (wide, _), (narrow, floor) = gaps
            if not np.isfinite(narrow) or (narrow > floor and narrow > 0.5 * wide):
                found.append((k, idx))
    return found


def gradcheck(
    f: Callable[..., Any], *args: Any, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
) -> bool:
    """Compare chainrule's gradient of ``sum(f(*args))`` with central differences, for every argument.

    Returns True, or raises :class:`GradcheckError` naming the argument, the element index, the
    analytic and numerical values and their relative error. Use float64 inputs: float32 rounding
    swamps the differences.
    """
    arrays = [as_float_array(a, f"argument {i}").astype(np.float64) for i, a in enumerate(args)]
    if not arrays:
        raise TypeError("gradcheck needs at least one argument to differentiate")
    _, analytic = value_and_grad(f, argnums=tuple(range(len(arrays))))(*arrays)
    names = _param_names(f)
    for k, (a, ga) in enumerate(zip(arrays, analytic)):
        gn = numerical_grad(f, arrays, k, eps)
        ga = _values(ga).reshape(a.shape)
        bad = ~np.isclose(ga, gn, rtol=rtol, atol=atol, equal_nan=False)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            an, nu = float(ga[idx]), float(gn[idx])
            rel = abs(an - nu) / max(abs(nu), abs(an), 1e-300)
            where = f"[{', '.join(map(str, idx))}]" if idx else ""
            label = f"argument {k}" + (f" ({names[k]!r})" if k < len(names) else "")
            raise GradcheckError(
                f"gradient of {label}{where} is wrong: analytic {an:.10g}, numerical {nu:.10g}, "
                f"relative error {rel:.3g} (atol={atol}, rtol={rtol}); "
                f"{int(bad.sum())} of {bad.size} elements disagree"
            )
    return True


def _param_names(f: Callable[..., Any]) -> tuple[str, ...]:
    code = getattr(f, "__code__", None) or getattr(getattr(f, "__wrapped__", None), "__code__", None)
    return tuple(code.co_varnames[: code.co_argcount]) if code else ()


# ---------------------------------------------------------------------------------------------
# check_backward: is a hand-written combined forward+backward function right?
# ---------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    """One value that disagrees with chainrule's answer: what, where, expected vs got."""

    name: str                      # "out", "fx", or a local variable of the checked function
    index: tuple[int, ...]         # first element that differs (() for scalars)
    expected: float
    got: float
    count: int = 1                 # how many elements differ
    note: str = ""
    line: int | None = None        # the line of the checked file that last assigns it (intermediates)
    got_text: str | None = None    # what it returned, as text, where that is not a real number (complex)

    def to_json(self) -> dict[str, Any]:
        """As JSON-ready data (inf and nan as the strings "inf", "nan"; a complex value as its text)."""
        return {"name": self.name, "index": list(self.index), "expected": _json_value(self.expected),
                "got": self.got_text if self.got_text is not None else _json_value(self.got), "count": self.count,
                "note": self.note, "line": self.line, "text": str(self)}

    def __str__(self) -> str:
        note = f" — {self.note}" if self.note else ""
        if self.got_text is not None:
            return f"{self.name}: expected {self.expected:.10g}, got {self.got_text}{note}"
        if math.isnan(self.expected) and math.isnan(self.got) and self.note:
            return f"{self.name}: {self.note}"  # a wrong kind or shape: there are no two numbers to show
        where = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        more = f" ({self.count} elements differ)" if self.count > 1 else ""
        if math.isnan(self.expected) and self.note:  # a value with nothing to compare it with
            return f"{self.name}{where} = {self.got:.10g}{note}"
        return f"{self.name}{where}: expected {self.expected:.10g}, got {self.got:.10g}{more}{note}"


@dataclass
class BackwardReport:
    """The verdict of :func:`check_backward`: truthy when every returned value is right.

    ``status`` is ``"correct"``, ``"wrong"`` (it returned values, and some are wrong) or
    ``"failed"`` (it did not return: it raised, exited, crashed or ran out of time; ``failure`` says
    how, in one line). Code checked in a sandbox also brings back what it printed.

    For a wrong function, ``first_wrong_step`` is the first wrong intermediate (a local variable of
    the checked function, matched to the reference by name and value: :mod:`chainrule.feedback`),
    ``mistake`` names the classic mistake that explains it at every input set (a key of
    :data:`chainrule.feedback.MISTAKES`: ``fan_out_overwritten``, ``wrong_input``,
    ``upstream_missing``, ``local_missing``, ``lost_sign``, ``missing_factor``, ``wrong_element``,
    ``wrong_shape`` (said first: no arithmetic mistake is looked for in a value of the wrong shape), else
    ``wrong_value`` or ``wrong_forward``), ``feedback`` says it in one sentence that names only what
    the checked code itself wrote (its variables, its lines, the gate rules in its names), and
    ``line`` is the line of the checked file where that step goes wrong (of several lines adding up
    a gradient, the one whose term is wrong; None if unknown).
    """

    ok: bool
    function: str
    inputs: dict[str, Any]                 # the inputs where it went wrong (or the given ones)
    label: str                             # "the given inputs" / "random inputs #k"
    wrong: list[Mismatch] = field(default_factory=list)       # returned values that are wrong
    first_wrong_step: Mismatch | None = None                  # first wrong intermediate (by local name)
    error: str | None = None                                  # the function raised, or returned a wrong shape
    checked: list[str] = field(default_factory=list)          # the input sets checked
    failure: str | None = None                                # the code did not return: why, in one line
    failure_kind: str | None = None                           # timeout, exit, signal, memory, raised, ...
    stdout: str = ""                                          # what the checked code printed (sandbox)
    stderr: str = ""
    mistake: str | None = None                                # the kind of mistake (feedback.MISTAKES)
    feedback: str | None = None                               # one sentence, in the checked code's names
    line: int | None = None                                   # the line of the first wrong step

    def __bool__(self) -> bool:
        return self.ok

    @property
    def status(self) -> str:
        """``"correct"``, ``"wrong"`` or ``"failed"``."""
        return "correct" if self.ok else ("failed" if self.failure else "wrong")

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (numbers as floats; inf and nan as "inf", "nan")."""
        return {"ok": self.ok, "status": self.status, "function": self.function, "label": self.label,
                "inputs": {k: _json_value(v) for k, v in self.inputs.items()}, "checked": list(self.checked),
                "wrong": [m.to_json() for m in self.wrong],
                "first_wrong_step": None if self.first_wrong_step is None else self.first_wrong_step.to_json(),
                "mistake": self.mistake, "feedback": self.feedback, "line": self.line, "error": self.error,
                "failure": self.failure, "failure_kind": self.failure_kind, "report": str(self)}

    def __str__(self) -> str:
        if self.ok:
            return f"{self.function}: correct (output and every gradient) at {', '.join(self.checked)}"
        if self.failure and not self.inputs:
            return f"{self.function} failed: {self.failure}"
        ins = ", ".join(f"{k}={_short(v)}" for k, v in self.inputs.items())
        lines = [f"{self.function} {'failed' if self.failure else 'is wrong'} at {self.label} ({ins}):"]
        if self.error or self.failure:
            lines.append(f"  {self.error or self.failure}")
        lines += [f"  {m}" for m in self.wrong]
        if self.first_wrong_step is not None:
            at = f" (line {self.line})" if self.line is not None else ""
            lines.append(f"  first wrong step: {self.first_wrong_step}{at}")
        if self.feedback:
            lines.append(f"  what went wrong: {self.feedback}")
        return "\n".join(lines)

    __repr__ = __str__


def _json_value(v: Any) -> Any:
    """A number or array as JSON: floats (nested lists), inf and nan as strings."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        x = float(a)
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    return [_json_value(x) for x in a]


@dataclass(frozen=True)
class Opaque:
    """A returned value that is not numbers (a string, None, an object), as its type and repr."""

    type_name: str
    text: str = ""


def _short(v: Any) -> str:
    a = np.asarray(v)
    return f"{a.item():.6g}" if a.size == 1 else np.array2string(a, precision=4, threshold=6)


def _kind_problem(got: Any, expected: np.ndarray) -> str | None:
    """Why ``got`` cannot be the real number(s) expected, or None: complex, booleans, not numbers."""
    if isinstance(got, Opaque):
        return f"not a number or array ({got.type_name})"
    try:
        g = np.asarray(got)
    except Exception:  # noqa: BLE001 - an object NumPy cannot read
        return f"not a number or array ({type(got).__name__})"
    if g.dtype.kind == "c":
        return (f"complex values (dtype {g.dtype}); the answer is real"
                + ("" if g.size == 0 or not np.any(g.imag) else f", and {_short(g.imag.ravel()[0])}j is not 0"))
    if g.dtype.kind == "b":
        return "True/False values, not numbers"
    if g.dtype.kind not in "iuf":
        return f"not a number or array ({type(got).__name__})"
    return None


def _first_diff(name: str, expected: Any, got: Any, rtol: float, atol: float) -> Mismatch | None:
    """The first element where ``got`` differs from ``expected``; a different shape (no broadcasting,
    no reshaping) or kind of number (complex, booleans) is wrong as a whole, and says so."""
    e = np.asarray(expected, dtype=np.float64)
    problem = _kind_problem(got, e)
    if problem is not None:
        m = Mismatch(name, (), float("nan"), float("nan"), note=problem)
        if not isinstance(got, Opaque) and np.asarray(got).dtype.kind == "c":  # show both numbers
            g = np.asarray(got)
            m.expected = float(e.ravel()[0]) if e.size else float("nan")
            m.got_text = str(g.ravel()[0]) if g.size == 1 or g.shape == e.shape else np.array2string(g, threshold=6)
        return m
    g = np.asarray(got, dtype=np.float64)
    if g.shape != e.shape:
        return Mismatch(name, (), float("nan"), float("nan"), note=_shape_note(e.shape, g.shape))
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol)
    if not bad.any():
        return None
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return Mismatch(name, idx, float(e[idx]), float(g[idx]), int(bad.sum()))


def _shape_note(expected: tuple[int, ...], got: tuple[int, ...], short: bool = False) -> str:
    scalar = " (a scalar)" if expected == () else ""
    text = f"expected {expected}{scalar}, got {got}"
    return text if short else (f"wrong shape: {text} (a value has exactly the shape of what it belongs to; "
                               "nothing is broadcast)")


@dataclass
class Captured:
    """One call of a checked function: what it returned (``out, (g1, g2)`` flattened into one tuple),
    for each returned item the local variables holding it, and its local variables when it returned."""

    result: Any
    holders: list[list[str]]
    locals: dict[str, Any]


def capture_call(fn: Callable[..., Any], args: Sequence[Any]) -> Captured:
    """Call ``fn(*args)`` and keep its final local variables (in order of first appearance).

    Only the function's ``return`` is traced (its line events are switched off), so a loop of
    millions of iterations costs about what it costs untraced, not a Python call per line."""
    result, final = _run_capturing(fn, list(args))
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], (tuple, list)):
        result = (result[0], *result[1])
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    holders = [[k for k, v in final.items() if v is item] for item in items]
    return Captured(result, holders, final)


def _run_capturing(fn: Callable[..., Any], args: list[Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``fn``; return its result and its local variables at the moment it returned."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return fn(*args), {}
    tracer = _ReturnTracer(code)
    prev = sys.gettrace()
    sys.settrace(tracer.on_call)
    try:
        result = fn(*args)
    finally:
        sys.settrace(prev)
    return result, tracer.final


class _ReturnTracer:
    """Trace hooks that keep the local variables of one code object's frame when it returns.

    A class rather than closures: a closure returning itself would be a reference cycle, keeping
    the traced frame's arrays alive until the garbage collector runs."""

    def __init__(self, code: Any) -> None:
        self.code = code
        self.final: dict[str, Any] = {}

    def on_call(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not self.code:
            return None
        frame.f_trace_lines = False  # no per-line events: only this frame's return (and exceptions)
        return self

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "return":  # the outermost call returns last (recursion)
            self.final = dict(frame.f_locals)
        return self


def _input_sets(arrays: Sequence[np.ndarray], random: int, seed: int) -> list[tuple[str, list[np.ndarray]]]:
    """The given inputs, then ``random`` sets of the same shapes, uniform in [0.5, 2) (so logs and
    square roots are defined)."""
    rng = np.random.default_rng(seed)
    sets = [("the given inputs", list(arrays))]
    sets += [(f"random inputs #{k + 1}", [rng.uniform(0.5, 2.0, size=a.shape) for a in arrays]) for k in range(random)]
    return sets


def judge(fname: str, reference: Callable[..., Any], params: list[str], inputs: list[np.ndarray], label: str,
          captured: Captured, checked: list[str], rtol: float, atol: float, *, runs: list[Any] | None = None,
          failing: int = 0, source: Any = None) -> BackwardReport | None:
    """Compare one call's result with the reference at ``inputs``: None when it is right, else the
    report (which returned value is wrong, expected vs got, the first wrong intermediate and the
    mistake). ``runs`` (:class:`chainrule.feedback.Run`, one per input set checked, ``failing`` the
    index of this one) let a mistake be confirmed at every input set; ``source``
    (:class:`chainrule.feedback.Source`) gives the lines of the checked code."""
    from .feedback import Run, diagnose
    from .graph import trace

    graph = trace(reference, *inputs)
    expected = [graph.output.value] + [n.grad for n in graph.inputs]
    report = BackwardReport(False, fname, dict(zip(params, inputs)), label, checked=checked)
    result = captured.result
    if not isinstance(result, (tuple, list)) or len(result) != len(inputs) + 1:
        n = len(result) if isinstance(result, (tuple, list)) else 1
        what = "None (no return statement?)" if _is_none(result) else f"{n} value{'s' if n != 1 else ''}"
        report.error = (f"{fname} returned {what}; expected {len(inputs) + 1} values: "
                        f"the output, then one gradient per input ({', '.join(params)})")
        return report
    holders = captured.holders + [[]] * (len(result) - len(captured.holders))
    names = [_returned_name(holders[0], "out", "out", params)]
    names += [_returned_name(h, f"gradient of {p}", p, params) for p, h in zip(params, holders[1:])]
    for nm, e, g in zip(names, expected, result):
        m = _first_diff(nm, e, g, rtol, atol)
        if m is not None:
            report.wrong.append(m)
    if not report.wrong:
        return None
    if any(_kind_problem(g, np.asarray(e, dtype=np.float64)) is not None for e, g in zip(expected, result)):
        return report  # not numbers: there is no arithmetic mistake to find
    shapes = [(nm, np.shape(e), np.shape(g)) for nm, e, g in zip(names, expected, result) if np.shape(e) != np.shape(g)]
    if shapes:  # said first, and alone: a value of the wrong shape is no arithmetic mistake to diagnose
        nm, e_shape, g_shape = shapes[0]
        report.mistake = "wrong_shape"
        report.feedback = f"{nm} has the wrong shape: {_shape_note(e_shape, g_shape, short=True)}"
        return report
    if runs is None:
        runs, failing = [Run(list(inputs), captured.locals, result)], 0
    # a wrong returned gradient that no local variable holds (return out, 2 * x) is looked at as it is
    returned = {nm: p for nm, p, m in zip(names[1:], params, [_first_diff(nm, e, g, rtol, atol) for nm, e, g in
                                                              zip(names[1:], expected[1:], result[1:])])
                if m is not None and nm == f"gradient of {p}"}
    try:
        d = diagnose(reference, params, runs, failing, holders, source=source, returned=returned,
                     output_wrong=report.wrong[0].name == names[0], rtol=rtol, atol=atol)
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError):
        d = None  # the verdict stands without a diagnosis (the reference could not be retraced, say)
    if d is not None and d.name is not None:
        step = _first_diff(d.name, d.expected, d.got, rtol, atol) if d.expected is not None else None
        if step is None:
            got = np.asarray(d.got, dtype=np.float64).ravel()
            step = Mismatch(d.name, (), float("nan"), float(got[0]) if got.size else float("nan"))
        step.note, step.line = d.note, d.line
        report.first_wrong_step = step
        report.mistake, report.feedback, report.line = d.mistake, d.feedback, d.line
    return report


def _is_none(v: Any) -> bool:
    """``None`` returned, here or described by the sandbox (an :class:`Opaque` of NoneType)."""
    return v is None or (isinstance(v, Opaque) and v.type_name == "NoneType")


def check_backward(
    fn: Callable[..., Any], reference: Callable[..., Any], *args: Any, random: int = 3,
    rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0,
) -> BackwardReport:
    """Check a hand-written combined forward+backward function against chainrule's answer.

    ``fn(*args)`` returns ``out, g1, g2, ...`` (or ``out, (g1, g2, ...)``), one gradient of
    ``sum(out)`` per argument, as the worksheet's functions do; ``reference`` computes the same
    ``out``. Both run at ``args`` and at ``random`` random inputs of the same shapes (uniform in
    [0.5, 2), so logs and square roots are defined). Every returned value must have exactly the
    reference's shape (a gradient of shape (3,) for a scalar input is wrong, not broadcast) and be
    real numbers (complex values are wrong). The report names the wrong output or gradient,
    the first element that differs, expected vs got, and -- where ``fn``'s locals follow the staged
    habit (``q``, ``dq``; matched to the reference's nodes by value, so names need not match) --
    the first intermediate gradient that goes wrong.

    ``fn`` runs in this process: use it for your own code. Code handed over by someone else is
    checked with :func:`check_file`, which runs it in a sandboxed child process.
    """
    if not callable(fn) or not callable(reference):
        raise TypeError("check_backward(fn, reference, *args): fn and reference must be functions")
    if not args:
        raise TypeError("check_backward needs the inputs to check at: check_backward(fn, reference, x, y, ...)")
    arrays = [as_float_array(a, f"argument {i}").astype(np.float64) for i, a in enumerate(args)]
    fname = getattr(fn, "__name__", "fn")
    _check_arity(fn, fname, len(arrays))
    params = list(_param_names(fn))[: len(arrays)]
    params += [f"x{i + 1}" for i in range(len(params), len(arrays))]
    from .feedback import Source

    return _check_runs(fname, reference, params, _input_sets(arrays, random, seed),
                       lambda inputs: capture_call(fn, [a.copy() for a in inputs]), Source.of(fn), rtol, atol)


def _check_runs(fname: str, reference: Callable[..., Any], params: list[str],
                sets: list[tuple[str, list[np.ndarray]]], call: Callable[[list[np.ndarray]], Any], source: Any,
                rtol: float, atol: float) -> BackwardReport:
    """Call the checked function at every input set, then judge the calls in order: the first that
    failed or is wrong makes the report (a mistake found there is confirmed at the other sets)."""
    from .feedback import Run

    calls: list[Any] = []
    for _, inputs in sets:
        try:
            calls.append(call(inputs))
        except Exception as e:  # noqa: BLE001 - the checked code failed: reported below, in order
            calls.append(e)
    runs = [Run(inputs, None if isinstance(c, Exception) else c.locals,
                None if isinstance(c, Exception) else _flat(c.result)) for (_, inputs), c in zip(sets, calls)]
    checked: list[str] = []
    for k, ((label, inputs), captured) in enumerate(zip(sets, calls)):
        checked.append(label)
        if isinstance(captured, Exception):  # the checked code failed: say so, do not crash
            report = BackwardReport(False, fname, dict(zip(params, inputs)), label, checked=checked)
            line = getattr(captured, "line", None)  # a program's own error names its line
            report.error = report.failure = (f"{fname} failed on line {line}: {captured}" if line is not None
                                             else f"{fname} raised {type(captured).__name__}: {captured}")
            report.failure_kind, report.line = "raised", line
            return report
        report = judge(fname, reference, params, inputs, label, captured, checked, rtol, atol, runs=runs, failing=k,
                       source=source)
        if report is not None:
            return report
    return BackwardReport(True, fname, dict(zip(params, sets[0][1])), sets[0][0], checked=checked)


def check_program(program: Any, reference: Callable[[list[str]], Callable[..., Any]], values: dict[str, Any],
                  *, random: int = 3, rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0,
                  max_elements: int = 100_000) -> BackwardReport:
    """:func:`check_backward` for a :class:`chainrule.expr.Program` (a function typed into the
    explorer): it is interpreted, never run as Python, at ``values`` (by name: the program's
    parameters; or by position, in the order given) and at random inputs. ``reference(order)``
    returns the reference taking its inputs in ``order``."""
    from .feedback import Source

    names = list(values)
    params = list(program.params)
    if set(names) <= set(params):
        missing = [p for p in params if p not in names]
        if missing:
            raise ValueError(f"{program.name}({', '.join(params)}) takes {', '.join(missing)}, which the function "
                             "above does not: give it a value there (an unused input has gradient 0)")
        order = params
    elif len(params) == len(names):
        order = names  # by position: the program names its inputs its own way
    else:
        raise ValueError(f"{program.name}({', '.join(params)}) takes {len(params)} inputs, but the function above has "
                         f"{len(names)} ({', '.join(names)})")
    arrays = [as_float_array(values[k], k).astype(np.float64) for k in order]
    source = Source.parse(program.text, program.name) or Source({})
    return _check_runs(program.name, reference(order), params, _input_sets(arrays, random, seed),
                       lambda inputs: program.call(inputs, max_elements), source, rtol, atol)


def _flat(result: Any) -> Any:
    """``out, (g1, g2)`` as ``out, g1, g2`` (the checked functions may return either)."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], (tuple, list)):
        return (result[0], *result[1])
    return result


def check_file(
    path: str | os.PathLike[str], func: str, reference: Callable[[list[str]], Callable[..., Any]],
    values: dict[str, Any], variables: Sequence[str], *, random: int = 3, rtol: float = 1e-6,
    atol: float = 1e-9, seed: int = 0, limits: Any = None, runner: Any = None,
) -> BackwardReport:
    """:func:`check_backward` for a function in someone's file, run in a sandboxed child process
    (:mod:`chainrule.sandbox`: time and memory limits, output captured, exits and crashes reported).

    ``values`` are the inputs by name (``variables``, the reference's own, and any extra parameter
    of ``func``, like q2c's unused z); ``reference(order)`` returns the reference function taking
    its inputs in ``order``, the order in which ``func`` takes them (by its parameter names, or by
    position). A failure of the checked code (it raised, exited, crashed, timed out, or the file
    does not import) is a report with ``status == "failed"`` and a one-line ``failure``.
    """
    from . import sandbox

    arrays = {k: as_float_array(v, k).astype(np.float64) for k, v in values.items()}
    names = list(arrays)
    sets = _input_sets([arrays[k] for k in names], random, seed)
    job = sandbox.Job(os.path.abspath(path), func, [dict(zip(names, inputs)) for _, inputs in sets], list(variables))
    res = (runner or sandbox).run(job, limits)
    shown = f"{os.path.basename(os.fspath(path))}:{func}"
    if not res.ok:
        report = BackwardReport(False, shown, {}, "", failure=res.reason, failure_kind=res.kind)
        return _with_output(report, res)
    from .feedback import Run

    order = res.order
    ref = reference(order)
    checked: list[str] = []
    runs = []
    for (_, inputs), call in zip(sets, res.calls):
        named = dict(zip(names, inputs))
        runs.append(Run([named[k] for k in order], None if call.error is not None else call.locals, call.result))
    source = _file_source(path, func)
    for k, ((label, inputs), call) in enumerate(zip(sets, res.calls)):
        checked.append(label)
        named = dict(zip(names, inputs))
        ordered = [named[k] for k in order]
        if call.error is not None:
            report = BackwardReport(False, func, dict(zip(order, ordered)), label, checked=checked,
                                    failure=call.error, failure_kind="raised")
            return _with_output(report, res)
        captured = Captured(call.result, call.holders, call.locals)
        report = judge(func, ref, order, ordered, label, captured, checked, rtol, atol, runs=runs, failing=k,
                       source=source)
        if report is not None:
            return _with_output(report, res)
    first = sets[0][1]
    named = dict(zip(names, first))
    return _with_output(BackwardReport(True, func, {k: named[k] for k in order}, sets[0][0], checked=checked), res)


def _file_source(path: str | os.PathLike[str], func: str) -> Any:
    """Where ``func`` in the checked file assigns its variables (read as text and parsed, never run)."""
    from .feedback import Source

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(4 << 20)
    except OSError:
        return None
    return Source.parse(text, func)


def _with_output(report: BackwardReport, res: Any) -> BackwardReport:
    report.stdout = res.stdout + (f"\n[... {res.stdout_dropped} more bytes not shown]" if res.stdout_dropped else "")
    report.stderr = res.stderr + (f"\n[... {res.stderr_dropped} more bytes not shown]" if res.stderr_dropped else "")
    return report


def _check_arity(fn: Callable[..., Any], fname: str, n: int) -> None:
    """One clear TypeError when ``fn`` cannot take ``n`` inputs (rather than a crash inside the check)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*range(n))
    except TypeError:
        names = ", ".join(p.name for p in sig.parameters.values())
        raise TypeError(f"{fname} takes ({names}) but {n} input{'s were' if n != 1 else ' was'} given "
                        "to check at") from None


def _returned_name(holders: list[str], default: str, hint: str, params: list[str]) -> str:
    """The local variable that holds a returned value (preferring ``out`` / ``dx`` / ``fx`` names)."""
    names = [k for k in holders if k not in params]
    if not names:
        return default
    fitting = [k for k in names if k == hint or (k.endswith(hint) and len(k) == len(hint) + 1)]
    return fitting[0] if fitting else names[-1]
