"""Grading one submission: its functions run in a sandboxed child, each problem scored with its
verdict per returned value and feedback on the first wrong step.

:func:`grade_submission` is what a worker runs (a thread of ``chainrule grade -j N`` or a Dask task):
it takes a :class:`Plan` and a :class:`~chainrule.grading.submissions.Submission`, and returns the
submission's record as plain JSON-able data, the line ``results.jsonl`` keeps.

Scoring: a returned value (the output, or one gradient) is right when it is right at every test
point (exact shape, real numbers, within the tolerances); with partial credit (the default) a
problem earns its points times the fraction of its values that are right, otherwise all or nothing.
A problem whose function did not return at some test point (it raised, exited, crashed, hung, ran out
of memory, or the file does not import) scores 0, with the reason. The right answers come from
chainrule's own trace of the reference, computed once per problem and test point in each process.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..check import BackwardReport, Captured, _file_source, _first_diff, judge
from ..feedback import MISTAKES, Run
from ..sandbox import Job, Limits, Runner, RunResult
from .problems import Problem, input_sets
from .submissions import Submission, _relative, digest, file_choices

__all__ = ["Plan", "grade_submission", "grade_fatal", "value_names"]


@dataclass(frozen=True)
class Plan:
    """Everything that decides a grade: the problems, the test points (the given ones plus ``random``
    seeded random ones), the tolerances, partial credit, and the sandbox's limits."""

    problems: tuple[Problem, ...]
    limits: Limits = Limits()
    random: int = 5
    seed: int = 0
    rtol: float = 1e-6
    atol: float = 1e-9
    partial: bool = True

    @property
    def max_score(self) -> float:
        return float(sum(p.points for p in self.problems))

    def describe(self) -> dict[str, Any]:
        """What must be the same for results to be combined (``--resume``); the limits may change."""
        return {"problems": [p.describe() for p in self.problems], "random": self.random, "seed": self.seed,
                "rtol": self.rtol, "atol": self.atol, "partial": self.partial}


def value_names(problem: Problem, order: list[str] | None = None) -> list[str]:
    """How the returned values are called in reports: ``out``, then ``∂/∂x`` per input."""
    return ["out"] + [f"∂/∂{v}" for v in (order or list(problem.values))]


# the right answers, per process: (problem, order, test point) -> output and gradients
_EXPECTED: dict[tuple[Any, ...], list[np.ndarray]] = {}
_EXPECTED_LOCK = threading.Lock()


def _expected(problem: Problem, order: list[str], k: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from ..graph import trace

    key = (problem.name, problem.reference, _values_key(problem), tuple(order), k)
    with _EXPECTED_LOCK:
        hit = _EXPECTED.get(key)
    if hit is None:
        with np.errstate(all="ignore"):
            graph = trace(problem.reference_function(order), *inputs)
        hit = [np.asarray(graph.output.value)] + [np.asarray(n.grad) for n in graph.inputs]
        with _EXPECTED_LOCK:
            _EXPECTED[key] = hit
    return hit


def _values_key(problem: Problem) -> tuple[tuple[str, bytes, tuple[int, ...]], ...]:
    return tuple((k, np.asarray(v, dtype=np.float64).tobytes(), np.shape(v)) for k, v in problem.values.items())


def grade_submission(sub: Submission, plan: Plan, runner: Runner) -> dict[str, Any]:
    """Run and score every problem of ``sub``; returns its record (plain data, one line of results.jsonl).

    A submission whose files changed since the batch read them (``sub.sha256``) is not run: every
    problem fails with that reason (another submission may have written them)."""
    sha = digest(sub)
    if sub.sha256 and sha != sub.sha256:
        why = ("its files changed after grading began (another submission may have written them): check "
               "them, then grade it again")
        records = [_failed(p, "changed", why) for p in plan.problems]
        return _record(sub, plan, records, [], 0.0, sha, [])
    chosen, notes = file_choices(sub, [p.function for p in plan.problems])
    by_file: dict[str, list[Problem]] = {}
    for p in plan.problems:
        f = chosen[p.function]
        if f is not None:
            by_file.setdefault(f, []).append(p)
    results: dict[str, tuple[str | None, RunResult]] = {}
    outputs: list[tuple[str, RunResult]] = []
    seconds = 0.0
    for f, problems in by_file.items():
        jobs = [Job(f, p.function, [inputs for _, inputs in input_sets(p, plan.random, plan.seed)],
                    list(p.variables), readable=sub.readable()) for p in problems]
        runs = runner.run_all(jobs, plan.limits)
        for p, res in zip(problems, runs):
            results[p.name] = (f, res)
        outputs.append((f, runs[0]))
        seconds += runs[0].seconds
    records = []
    for p in plan.problems:
        if p.name in results:
            f, res = results[p.name]
            records.append(_score(p, plan, res, _shown(f, sub), f))
        else:
            files = ", ".join(_shown(f, sub) for f in sub.files)
            records.append(_failed(p, "missing_function", f"no file defines {p.function} (files: {files})"))
    return _record(sub, plan, records, [_output(_shown(f, sub), res) for f, res in outputs], seconds, sha, notes)


def grade_fatal(sub: Submission, plan: Plan) -> dict[str, Any]:
    """The record of a submission during which the grading process ended twice (``--resume``): it is
    not run again."""
    why = ("the grading process ended twice while this submission ran: it killed or stopped the grader "
           "(or the machine ran out of memory)")
    return _record(sub, plan, [_failed(p, "runner", why) for p in plan.problems], [], 0.0, sub.sha256, [])


def _record(sub: Submission, plan: Plan, records: list[dict[str, Any]], output: list[dict[str, Any]],
            seconds: float, sha: str, notes: list[str]) -> dict[str, Any]:
    """A submission's record. Its status: ``correct`` (every problem), else ``wrong`` when some function
    returned wrong values, else ``failed`` (some function did not run)."""
    score = round(sum(r["score"] for r in records), 6)
    statuses = {r["status"] for r in records}
    status = "correct" if statuses == {"correct"} else ("wrong" if "wrong" in statuses else "failed")
    feedback = "; ".join(f"{', '.join(names)}: {text}" for names, text in _grouped(records)) or "all correct"
    feedback = "; ".join(["note: " + n for n in notes] + [feedback])
    return {"id": sub.id, "name": sub.name, "path": sub.path, "late": sub.late, "score": score,
            "max": plan.max_score, "status": status, "feedback": feedback,
            "problems": records, "output": output, "seconds": round(seconds, 4), "sha256": sha, "notes": notes}


def _grouped(records: list[dict[str, Any]]) -> list[tuple[list[str], str]]:
    """The problems that are not right, those with the same feedback together (a file that does not
    import fails every problem in it the same way: said once)."""
    groups: dict[str, list[str]] = {}
    for r in records:
        if r["status"] != "correct":
            groups.setdefault(r["feedback"], []).append(r["problem"])
    return [(names, text) for text, names in groups.items()]


def _shown(path: str, sub: Submission) -> str:
    """A file as the student knows it: relative to their submission folder where it is inside it."""
    from pathlib import Path

    return _relative(path, Path(sub.path))


def _output(shown: str, res: RunResult) -> dict[str, Any]:
    more = {"stdout": res.stdout_dropped, "stderr": res.stderr_dropped}
    return {"file": shown, "stdout": res.stdout, "stderr": res.stderr, "dropped": more}


def _failed(p: Problem, kind: str, reason: str, file: str | None = None) -> dict[str, Any]:
    return {"problem": p.name, "function": p.function, "file": file, "points": p.points, "score": 0.0,
            "status": "failed", "kind": kind, "reason": reason, "values": [], "feedback": reason, "report": reason,
            "wrong_at": None, "inputs": None, "wrong": [], "first_wrong_step": None, "mistake": None}


def _score(p: Problem, plan: Plan, res: RunResult, shown: str, path: str | None = None) -> dict[str, Any]:
    if not res.ok:
        return _failed(p, res.kind or "failed", res.reason or "did not run", shown)
    order = res.order
    sets = input_sets(p, plan.random, plan.seed)
    names = value_names(p, order)
    right = [True] * len(names)
    report: BackwardReport | None = None
    error: str | None = None
    checked: list[str] = []
    # every input set's locals and the file's lines, so the feedback confirms a mistake at each set
    runs = [Run([named[v] for v in order], None if call.error is not None else call.locals, call.result)
            for (_, named), call in zip(sets, res.calls)]
    source = _file_source(path, p.function) if path is not None else None
    for k, ((label, named), call) in enumerate(zip(sets, res.calls)):
        checked.append(label)
        inputs = [named[v] for v in order]
        if call.error is not None:
            right = [False] * len(names)
            error = error or call.error
            if report is None:
                report = BackwardReport(False, p.function, dict(zip(order, inputs)), label, checked=list(checked),
                                        failure=call.error, failure_kind="raised")
            continue
        expected = _expected(p, order, k, inputs)
        result = call.result
        fits = isinstance(result, (tuple, list)) and len(result) == len(expected)
        wrong_here = [True] * len(names) if not fits else \
            [_first_diff(nm, e, g, plan.rtol, plan.atol) is not None for nm, e, g in zip(names, expected, result)]
        if any(wrong_here):
            right = [r and not w for r, w in zip(right, wrong_here)]
            if report is None:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")  # a student's complex locals, compared with real nodes
                    report = judge(p.function, p.reference_function(order), order, inputs, label,
                                   Captured(call.result, call.holders, call.locals), list(checked), plan.rtol,
                                   plan.atol, runs=runs, failing=k, source=source)
    n_right = sum(right)
    if error is not None:
        status, score = "failed", 0.0
    elif n_right == len(names):
        status, score = "correct", p.points
    else:
        status = "wrong"
        score = p.points * n_right / len(names) if plan.partial else 0.0
    rec = {"problem": p.name, "function": p.function, "file": shown, "points": p.points, "score": round(score, 6),
           "status": status, "kind": "raised" if error else None, "reason": error,
           "values": [{"name": nm, "yours": yours, "right": ok}
                      for nm, ok, yours in zip(names, right, _yours(res, order))],
           "feedback": "correct at every test point" if report is None else _one_line(report),
           "report": "" if report is None else str(report),
           "wrong_at": None if report is None else report.label,
           "inputs": None if report is None else {k: np.asarray(v).tolist() for k, v in report.inputs.items()},
           "wrong": [] if report is None else [str(m) for m in report.wrong],
           "first_wrong_step": None if report is None or report.first_wrong_step is None
           else str(report.first_wrong_step),
           "mistake": _mistake(p, names, right, report)}
    return rec


def _yours(res: RunResult, order: list[str]) -> list[str | None]:
    """For each returned value, the student's local variable that holds it (``fx``, ``dq``), if any."""
    holders = next((c.holders for c in res.calls if c.error is None and c.holders), [])
    names = [next((h for h in hs if h not in order), None) for hs in holders]
    return names + [None] * (len(order) + 1 - len(names))


def _one_line(report: BackwardReport) -> str:
    """The report in one line: the recognized mistake where the report names one, else the first
    wrong step, else the first wrong value, else why it failed."""
    feedback = getattr(report, "feedback", None)  # the learner's feedback sentence, where chainrule has one
    if feedback:
        text = str(feedback)
    elif report.failure:
        text = report.failure
    elif report.error:
        text = report.error
    elif report.first_wrong_step is not None:
        text = f"first wrong step {report.first_wrong_step}"
    elif report.wrong:
        text = str(report.wrong[0])
    else:
        text = "wrong"
    return " ".join(text.split())[:400]


def _mistake(p: Problem, names: list[str], right: list[bool], report: BackwardReport | None) -> str | None:
    """What the class summary counts: which values of which problem were wrong (and the recognized
    mistake, where the report names one)."""
    if report is None:
        return None
    if report.failure:
        return f"{p.name}: raised an exception"
    wrong = [nm for nm, ok in zip(names, right) if not ok]
    text = f"{p.name}: returned the wrong number of values" if report.error else f"{p.name}: {', '.join(wrong)} wrong"
    kind = getattr(report, "mistake", None)  # the kind, not the sentence: one row for every student who made it
    if kind and kind not in ("wrong_value", "wrong_forward"):
        return f"{text} ({MISTAKES.get(kind, kind)})"
    return text
