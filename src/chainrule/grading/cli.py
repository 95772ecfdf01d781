"""``chainrule grade``: a class's submissions, each run in the sandbox, scored against a reference,
with a results table, a feedback page per student, a class summary and Gradescope's format."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_grade"]

EPILOG = """\
examples:
  chainrule grade submissions/ --against key.py:q2a --at x=1 y=3 z=2 --random 5 \\
      --timeout 10 --memory 512M -j 8 --out grades/
  chainrule grade submissions/ --against key.py:q2a,q2b,q2c --points q2a=2,q2b=3,q2c=5 --out grades/
  chainrule grade submissions/ --against "q2a(x, y, z) = (x + y) z" --at x=1 y=3 z=2
  chainrule grade submissions/ --against "(x + y) * z" --function q2a --at x=1 y=3 z=2 --resume
  chainrule grade submissions/ --against key.py:q2a --dask local -j 4      # a Dask LocalCluster
  chainrule grade submissions/ --against key.py:q2a --dask tcp://scheduler:8786
  chainrule grade /autograder/submission --against /autograder/source/key.py:q2a \\
      --gradescope /autograder/results/results.json                     # in Gradescope's run_autograder

SUBMISSIONS holds one file or folder per student (alice.py, bob/solution.py, carol.ipynb), or
Gradescope's or Canvas's "Download Submissions" export, unzipped. Every submission runs in a
sandboxed child process (time, CPU, memory and file-size limits, a scratch folder, a scrubbed
environment, output captured); one that hangs, crashes or exits scores 0 for that problem, with
its reason, and the batch goes on. The sandbox does not stop network use or reading files: run the
whole command in a container for that (README, "Grading a class").

--out gets results.csv (one row per student), results.jsonl (everything, appended as each
submission finishes), feedback/ID.md and .html, summary.html and .md with histogram.svg. After an
interruption (Ctrl-C, a kill), the same command with --resume grades only what is not done.
Exit codes: 0 graded, 1 could not finish, 2 a mistake on the command line, 130 interrupted."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``grade`` on an ``argparse`` subparsers object (handler: :func:`cmd_grade`)."""
    from ..cli import _formatter, _size, count, positive_float, positive_int

    p = subparsers.add_parser(
        "grade", help="grade a class: every submission sandboxed, scored, with feedback on its first wrong step",
        description="Run each student's combined forward+backward function(s) in a sandboxed child process, "
                    "compare every returned value with chainrule's answer for the reference at the --at values and "
                    "at --random seeded random points, and score each problem (partial credit per right value). "
                    "A reference is a function in your key file (key.py:q2a, or key.py:q2a,q2b,q2c; its default "
                    "argument values are its given inputs), an expression (\"(x + y) * z\" with --function, or "
                    "\"q2a(x, y, z) = (x + y) z\"), or a worksheet file.",
        epilog=EPILOG, formatter_class=_formatter)
    p.add_argument("submissions", metavar="SUBMISSIONS", help="the folder of submissions (or one submission)")
    p.add_argument("--against", required=True, nargs="+", metavar="REF",
                   help="the reference(s): key.py:q2a[,q2b...], an expression, or a worksheet file")
    p.add_argument("--function", metavar="NAME", help="the submissions' function for an expression without a name")
    p.add_argument("--at", nargs="*", default=[], metavar="NAME=VALUE",
                   help="the given test point: x=1 y=3 z=2 (values of a key function's inputs default to its "
                        "default arguments)")
    p.add_argument("--random", type=count, default=5, metavar="K", help="random test points besides (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random test points (default 0)")
    p.add_argument("--points", metavar="SPEC", help="points per problem: 2 (each), or q2a=2,q2b=3 (default 1)")
    p.add_argument("--all-or-nothing", action="store_true",
                   help="a problem scores its points only when every value is right (default: partial credit per "
                        "right value)")
    p.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                   help="wall-clock (and CPU-time) limit per function, the import counted with the first "
                        "(default 10)")
    p.add_argument("--memory", type=_size, default=1 << 30, metavar="SIZE",
                   help="memory a submission may allocate (default 1G)")
    p.add_argument("-j", "--jobs", type=positive_int, default=None, metavar="N",
                   help="submissions graded at once (default: the number of CPUs)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the submissions as Dask tasks: 'local' (a LocalCluster of -j workers) or a "
                        "scheduler's address (tcp://host:8786); needs pip install 'chainrule[grade]'")
    p.add_argument("--out", metavar="DIR", help="folder for the results (default grades/)")
    p.add_argument("--resume", action="store_true", help="keep the results in --out and grade only the rest")
    p.add_argument("--restart", action="store_true",
                   help="grade everything again (the old results.jsonl is kept, renamed)")
    p.add_argument("--gradescope", metavar="FILE",
                   help="SUBMISSIONS is one student's submission: write Gradescope's results.json to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_grade)
    return p


def cmd_grade(args: argparse.Namespace) -> int:
    """Grade the submissions; returns the exit code (0 graded, 130 interrupted)."""
    from ..cli import Failure, UsageError
    from ..sandbox import Limits
    from .batch import GradingError, default_jobs, run_batch
    from .grade import Plan
    from .problems import ProblemError, assign_points, problems_from
    from .report import write_gradescope, write_reports
    from .submissions import SubmissionsError, discover

    if args.resume and args.restart:
        raise UsageError("--resume and --restart: choose one")
    try:
        problems = assign_points(problems_from(args.against, args.at, args.function), args.points)
        limits = Limits(seconds=args.timeout, memory_bytes=args.memory)
    except (ProblemError, ValueError) as e:
        raise UsageError(str(e)) from None
    plan = Plan(tuple(problems), limits, random=args.random, seed=args.seed, partial=not args.all_or_nothing)
    jobs = args.jobs or default_jobs()
    gradescope = Path(args.gradescope) if args.gradescope else None
    if gradescope is not None and not gradescope.parent.is_dir():
        raise UsageError(f"--gradescope {gradescope}: the folder {gradescope.parent} does not exist")
    scratch_out = gradescope is not None and args.out is None  # inside Gradescope: only results.json
    out = Path(tempfile.mkdtemp(prefix="chainrule-grade-")) if scratch_out else Path(args.out or "grades")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    staging = Path(tempfile.mkdtemp(prefix="chainrule-staging-"))
    try:
        try:
            if gradescope is not None:
                subs, skipped = _one_submission(Path(args.submissions), staging)
            else:
                subs, skipped = discover(args.submissions, staging)
        except SubmissionsError as e:
            raise UsageError(str(e)) from None
        say = (lambda text: None) if args.quiet else (lambda text: sys.stderr.write(text + "\n"))
        for s in skipped:
            say(f"chainrule grade: skipped {s}")
        if not subs:
            raise UsageError(f"{args.submissions}: no submissions found (Python files, notebooks or folders)")
        ids = [s.id for s in subs]

        def announce(refused: list[str]) -> None:
            for why in refused:
                sys.stderr.write(f"chainrule grade: --resume: did not use the record of {why}\n")
            say(f"grading {len(subs)} submission{'s' if len(subs) != 1 else ''} on "
                f"{', '.join(p.name for p in problems)} ({_num(plan.max_score)} point"
                f"{'' if plan.max_score == 1 else 's'}) with "
                + (f"Dask ({args.dask}, {jobs} workers)" if args.dask else f"{jobs} worker{'s' if jobs != 1 else ''}"))

        try:
            outcome = run_batch(subs, plan, out, jobs=jobs, dask=args.dask, resume=args.resume,
                                restart=args.restart, progress=not (args.no_progress or args.quiet), on_start=announce)
        except GradingError as e:
            raise UsageError(str(e)) from None
        for r in outcome.records:
            for note in r.get("notes", []):
                say(f"chainrule grade: {r['id']}: {note}")
        write_reports(out, outcome.records, plan)
        if gradescope is not None and outcome.records:
            write_gradescope(gradescope, outcome.records[0], plan)
        missing = len(ids) - len(outcome.records)
        if outcome.error:
            raise Failure(f"grading stopped: {outcome.error}; {len(outcome.records)} of {len(ids)} graded, written to "
                          f"{out}; run the same command with --resume to grade the other {missing}")
        if outcome.interrupted:
            sys.stderr.write(f"chainrule grade: interrupted: {len(outcome.records)} of {len(ids)} graded, written to "
                             f"{out}; run the same command with --resume to grade the other {missing}\n")
            return 130
        if not args.quiet:
            _print_summary(outcome, plan, out, gradescope)
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if scratch_out:
            shutil.rmtree(out, ignore_errors=True)


def _one_submission(path: Path, staging: Path) -> tuple[list[Any], list[str]]:
    """Gradescope's ``/autograder/submission``: the whole folder (or file) is one student's."""
    from .submissions import Submission, SubmissionsError, _one, _python_files

    if path.is_file():
        return [_one(path.stem, path, [path], staging)], []
    if not path.is_dir():
        raise SubmissionsError(f"{path}: no such file or folder")
    files = _python_files(path)
    if not files:
        raise SubmissionsError(f"{path}: no Python file or notebook in the submission")
    sub = _one("submission", path, files, staging)
    return [Submission(sub.id, sub.path, sub.files)], []


def _num(x: float) -> str:
    return f"{x:.4g}"


def _print_summary(outcome: Any, plan: Any, out: Path, gradescope: Path | None) -> None:
    import statistics

    from .report import status_counts

    recs = outcome.records
    mean = statistics.fmean(r["score"] for r in recs) if recs else 0.0
    done = f" ({outcome.skipped_done} already graded)" if outcome.skipped_done else ""
    print(f"graded {outcome.graded_now} submission{'s' if outcome.graded_now != 1 else ''} in "
          f"{outcome.seconds:.1f} s{done}: mean {_num(mean)} / {_num(plan.max_score)}; {status_counts(recs)}")
    if gradescope is not None:
        print(f"Gradescope results: {gradescope}")
    else:
        print(f"results in {out}{os.sep}: results.csv, results.jsonl, summary.html, feedback/")
