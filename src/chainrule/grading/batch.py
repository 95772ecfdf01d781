"""Grading a class: submissions handed to workers, each result appended to ``results.jsonl`` the moment
it is finished, a progress line, ``--resume`` after an interruption.

Workers: ``-j N`` threads in this process, each with its own sandbox runner (a process that forks one
sandboxed child per submission; the children run in parallel, the scoring runs in the threads), or
tasks on a Dask cluster (``dask="local"`` for a ``distributed.LocalCluster`` of N worker processes,
or a scheduler's address), where each task forks its own sandboxed child from a runner kept by that
worker process. Dask cannot interrupt a running task, which is why the limits are the sandbox's.

Nothing finished is lost: each record is one line written with one ``write`` to a file opened for
appending, so a crash or a kill leaves at most a torn last line, which ``--resume`` drops (and
grades that submission again). Every submission's files are read once when the batch starts (their
SHA-256): a submission whose files changed before its turn (another submission wrote them) is not
run but reported, and ``--resume`` keeps only records bound to the files as they are now (a record for
a submission that is not there, or for other contents, is graded again and said so).
``grading.json`` holds what decides the grades; a resume against different problems, points or test
points is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..fileio import atomic_write
from ..sandbox import Runner
from .grade import Plan, grade_fatal, grade_submission
from .submissions import Submission, digest

__all__ = ["GradingError", "run_batch", "read_results", "Progress", "BatchOutcome"]

RESULTS = "results.jsonl"
PLAN = "grading.json"


class GradingError(ValueError):
    """A batch that cannot start as asked (one message)."""


@dataclass
class BatchOutcome:
    records: list[dict[str, Any]] = field(default_factory=list)   # every finished record, previous runs' too
    graded_now: int = 0
    skipped_done: int = 0
    refused: list[str] = field(default_factory=list)   # records --resume did not trust (why, one line each)
    interrupted: bool = False
    error: str | None = None      # why the batch stopped early (a runner or the cluster failed)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# results.jsonl
# ---------------------------------------------------------------------------------------------


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records in ``results.jsonl`` (the last one per id); a torn last line (the process was killed
    while writing it) is dropped, and with ``repair`` cut off the file, so appending goes on cleanly."""
    return _read(path, repair)[0]


def _read(path: Path, repair: bool = False) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int]]:
    """The records, and how many times each (id, sha256) was started since its last record for those
    contents (a line ``{"id", "started": sha256}`` is written before each submission runs)."""
    if not path.exists():
        return [], {}
    data = path.read_bytes()
    records: dict[str, dict[str, Any]] = {}
    starts: dict[tuple[str, str], int] = {}
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if isinstance(rec, dict) and "id" in rec:
            if "started" in rec:
                key = (str(rec["id"]), str(rec["started"]))
                starts[key] = starts.get(key, 0) + 1
            else:
                records[str(rec["id"])] = rec
                starts.pop((str(rec["id"]), str(rec.get("sha256"))), None)  # finished: its starts are done
        good += len(line)
    if repair and good < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return list(records.values()), starts


class _Appender:
    """Appends one JSON record per line, each with a single write (O_APPEND)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def add(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass
        os.close(self.fd)


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot write a {type(v).__name__} as JSON")


def _check_plan(out: Path, plan: Plan, resume: bool, restart: bool) -> None:
    """``grading.json``: written on the first run; on ``--resume`` it must match the plan."""
    results, saved = out / RESULTS, out / PLAN
    want = plan.describe()
    if results.exists() and results.stat().st_size and not resume:
        if not restart:
            raise GradingError(f"{out} already holds grades ({RESULTS}): add --resume to go on grading what is "
                               "not done, or --restart to grade everything again (the old results are kept "
                               "beside, renamed)")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        results.rename(out / f"results.{stamp}.jsonl")
    if resume and saved.exists():
        try:
            have = json.loads(saved.read_text(encoding="utf-8"))
        except ValueError:
            have = None
        if have != json.loads(json.dumps(want)):
            raise GradingError(f"--resume: the problems, points or test points differ from those of the grades in "
                               f"{out} ({PLAN}); grade into a new --out folder, or use --restart")
    atomic_write(saved, json.dumps(want, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------


class Progress:
    """``graded 120/500  4.1/s  ETA 1m33s`` on stderr: redrawn in place on a terminal, a line every
    ten percent otherwise; off with ``enabled=False``."""

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.start_done, self.done = total, done, done
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = _isatty(self.stream)
        self.t0 = time.monotonic()
        self.last = 0.0
        self.failed = 0
        self.next_line = done + max(1, total // 10)

    def step(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.failed += any(p.get("status") == "failed" for p in record.get("problems", []))
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty and (now - self.last > 0.1 or self.done == self.total):
            self.last = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
        elif not self.tty and (self.done >= self.next_line or self.done == self.total):
            self.next_line = self.done + max(1, self.total // 10)
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        spent = time.monotonic() - self.t0
        rate = (self.done - self.start_done) / spent if spent > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = "" if left is None or self.done == self.total else f"  ETA {_duration(left)}"
        failed = f"  ({self.failed} did not run)" if self.failed else ""
        return f"graded {self.done}/{self.total}  {rate:.1f}/s{eta}{failed}"

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# the batch
# ---------------------------------------------------------------------------------------------


def run_batch(subs: list[Submission], plan: Plan, out: Path, *, jobs: int = 1, dask: str | None = None,
              resume: bool = False, restart: bool = False, progress: bool = True,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              on_start: Callable[[list[str]], None] | None = None) -> BatchOutcome:
    """Grade ``subs`` into ``out``/results.jsonl (see the module docstring). Ctrl-C stops the batch
    (the running children are killed), keeps what is finished and returns with ``interrupted``; a
    failure of the machinery itself (a runner that cannot start, a lost cluster) returns with ``error``.
    ``on_start`` is called with the records ``--resume`` refused once the output folder is accepted,
    before any submission runs. A submission during which the grading process ended twice (it was
    killed: by the submission, where Landlock does not stop it, or for want of memory) is not run a
    third time: it fails with that reason."""
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(out, plan, resume, restart)
    t0 = time.monotonic()
    subs = [dataclasses.replace(s, sha256=digest(s)) for s in subs]  # every file read once, before any runs
    ids = {s.id: s for s in subs}
    done: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    previous, starts = _read(out / RESULTS, repair=True) if resume else ([], {})
    for r in previous:
        rid = str(r["id"])
        if rid not in ids:
            refused.append(f"{rid}: no such submission in this folder")
        elif r.get("sha256") != ids[rid].sha256:
            refused.append(f"{rid}: its record was not made from these files (graded again)")
        else:
            done[rid] = r
    todo = [s for s in subs if s.id not in done]
    outcome = BatchOutcome(skipped_done=len(subs) - len(todo), refused=refused)
    if on_start is not None:
        on_start(refused)
    bar = Progress(len(subs), len(subs) - len(todo), enabled=progress)
    appender = _Appender(out / RESULTS)
    fresh: dict[str, dict[str, Any]] = {}

    def take(record: dict[str, Any]) -> None:
        appender.add(record)
        fresh[record["id"]] = record
        bar.step(record)
        if on_record is not None:
            on_record(record)

    fatal = [s for s in todo if starts.get((s.id, s.sha256), 0) >= 2]
    todo = [s for s in todo if s not in fatal]

    def started(sub: Submission) -> None:  # from a worker thread: one write, before the code runs
        appender.add({"id": sub.id, "started": sub.sha256})

    try:
        for s in fatal:
            take(grade_fatal(s, plan))
        if todo:
            if dask:
                _run_dask(todo, plan, jobs, dask, take)
            else:
                _run_local(todo, plan, jobs, take, started)
    except KeyboardInterrupt:
        outcome.interrupted = True
    except GradingError:
        raise
    except Exception as e:  # noqa: BLE001 - a worker or the cluster failed: keep what is done, say why
        outcome.error = f"{type(e).__name__}: {e}"
    finally:
        appender.close()
        bar.close()
    outcome.graded_now = len(fresh)
    merged = {**done, **fresh}
    outcome.records = [merged[s.id] for s in subs if s.id in merged]
    outcome.seconds = time.monotonic() - t0
    return outcome


def _run_local(todo: list[Submission], plan: Plan, jobs: int, take: Callable[[dict[str, Any]], None],
               started: Callable[[Submission], None]) -> None:
    """``jobs`` threads, each with its own runner process; records come back to this thread."""
    work: queue.Queue[Submission | None] = queue.Queue()
    for s in todo:
        work.put(s)
    results: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()
    runners = [Runner(plan.limits) for _ in range(max(1, min(jobs, len(todo))))]

    def worker(runner: Runner) -> None:
        while not stop.is_set():
            try:
                sub = work.get_nowait()
            except queue.Empty:
                break
            try:
                started(sub)
                results.put(("ok", grade_submission(sub, plan, runner)))
            except BaseException as e:  # noqa: BLE001 - reported in the main thread
                if stop.is_set():
                    break
                results.put(("error", e))
                break
        results.put(("done", None))

    threads = [threading.Thread(target=worker, args=(r,), daemon=True, name=f"grade-{k}")
               for k, r in enumerate(runners)]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            try:
                kind, value = results.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "ok":
                take(value)
            elif kind == "done":
                running -= 1
            else:
                raise value
    finally:
        stop.set()
        for r in runners:
            r.close()  # a run in flight ends now: its child is killed with the runner
        for t in threads:
            t.join(timeout=10)


# each Dask worker process keeps one runner per thread, started on its first task
_LOCAL = threading.local()


def grade_task(sub: Submission, plan: Plan) -> dict[str, Any]:
    """One Dask task: grade ``sub`` with this worker thread's runner (each run forks its own sandboxed
    child, with the plan's limits: Dask itself cannot stop a running task)."""
    runner = getattr(_LOCAL, "runner", None)
    if runner is None:
        import atexit

        runner = _LOCAL.runner = Runner(plan.limits)
        atexit.register(runner.close)
    return grade_submission(sub, plan, runner)


def _run_dask(todo: list[Submission], plan: Plan, jobs: int, address: str,
              take: Callable[[dict[str, Any]], None]) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise GradingError("--dask needs the distributed package: pip install 'chainrule[grade]'") from None
    cluster = None
    try:
        if address == "local":
            cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=50)  # not the shutdown races
            client = Client(cluster)
        else:
            client = Client(address, timeout="30s")
    except OSError as e:
        raise GradingError(f"--dask {address}: cannot reach the scheduler: {e}") from None
    try:
        plan_future = client.scatter(plan, broadcast=True)
        futures = [client.submit(grade_task, s, plan_future, key=f"chainrule-grade-{s.id}-{id(s)}", pure=False)
                   for s in todo]
        for fut in as_completed(futures):
            take(fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def default_jobs() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
