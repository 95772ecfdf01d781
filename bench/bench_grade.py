"""``chainrule grade`` on a class of generated submissions of the worksheet's Q2 (q2a, q2b, q2c in one
file each; the given inputs and 5 random points): wall time for the class, per-submission cost,
and the isolation strategies compared.

    python bench/bench_grade.py --n 500 -j 2
    python bench/bench_grade.py --n 500 -j 2 --compare --json grade-bench.json

The class is drawn from the test class (tests/grading_class.py): 70% right (written in several
styles), 25% with one classic mistake (a sign, a missing factor, a fan-out gradient overwritten, a
mul gate not swapped, ...), 5% failing fast (a syntax error, sys.exit, a crash, a 2 GB allocation,
...); its endless loops are left out, as each costs its --timeout whatever the strategy. Every score
is checked against the one worked out by hand.

Strategies (``--compare``, one runner, on a sample): (A) what ``chainrule grade`` does: a warm
runner forks one sandboxed child per submission, which imports the file once and runs its three
functions; (B) one child per function (three forks and imports per submission); (C) a fresh Python
interpreter per submission, importing NumPy and chainrule (what a naive grader pays).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chainrule.fileio import atomic_write  # noqa: E402

# the class is drawn from the test class of tests/grading_class.py (its submissions and their scores,
# worked out by hand), leaving out the endless loops: each costs its --timeout, whatever the strategy
sys.path.insert(0, str(ROOT / "tests"))
import grading_class  # noqa: E402

KEY, ARGS = grading_class.KEY, grading_class.ARGS


def make_class(folder: Path, n: int, seed: int = 0) -> dict[str, float]:
    """``n`` submissions in ``folder`` (70% right, 25% with a mistake, 5% failing fast); returns the
    score each must get (out of 10)."""
    rng = random.Random(seed)
    pools: dict[str, list[tuple[str, grading_class.Expect]]] = {"r": [], "m": [], "f": []}
    for sid, e in grading_class.build().items():
        if not sid.startswith(("f23", "f24", "r07")) and isinstance(e.source, str):
            pools[sid[0]].append((sid, e))
    expected = {}
    for k in range(n):
        roll = rng.random()
        kind, e = rng.choice(pools["r" if roll < 0.7 else ("m" if roll < 0.95 else "f")])
        sid = f"s{k:04d}_{kind}"
        (folder / f"{sid}{e.suffix}").write_text(e.source)
        expected[sid] = e.score
    return expected


def grade_cli(folder: Path, jobs: int, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (this command and everything it started) of ``chainrule grade``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [a.replace("key.py", str(folder / "key.py")) for a in ARGS]
    cmd = [sys.executable, "-m", "chainrule", "grade", str(folder / "subs"), *args, "--random", "5", "-j", str(jobs),
           "--out", str(out), "-q", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(folder: Path, sample: int) -> dict[str, float]:
    """Seconds per submission for strategies A, B and C (one worker), on ``sample`` submissions."""
    from chainrule import sandbox
    from chainrule.grading import Plan, grade_submission, problems_from
    from chainrule.grading.grade import input_sets
    from chainrule.grading.submissions import Submission

    plan = Plan(tuple(problems_from([f"{folder / 'key.py'}:q2a,q2b,q2c"], [])), random=5)
    files = sorted((folder / "subs").glob("*.py"))[:sample]
    subs = [Submission(f.stem, str(f), (str(f),)) for f in files]
    res = {}
    with sandbox.Runner(plan.limits) as runner:
        grade_submission(subs[0], plan, runner)  # warm: the runner started, the right answers traced
        t = time.perf_counter()
        for s in subs:
            grade_submission(s, plan, runner)
        res["A_one_child_per_submission"] = (time.perf_counter() - t) / len(subs)
        t = time.perf_counter()
        for f in files:
            for p in plan.problems:
                sets = [inputs for _, inputs in input_sets(p, plan.random, plan.seed)]
                runner.run(sandbox.Job(str(f), p.function, sets, list(p.variables)), plan.limits)
        res["B_one_child_per_function_runs_only"] = (time.perf_counter() - t) / len(files)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cold = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, chainrule"], check=True, env=env)
        cold.append(time.perf_counter() - t)
    res["C_fresh_interpreter_start_only"] = statistics.median(cold)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="submissions (default 500)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="workers (default 2)")
    p.add_argument("--dask", action="store_true", help="also time --dask local")
    p.add_argument("--compare", action="store_true", help="also time the isolation strategies, one worker")
    p.add_argument("--sample", type=int, default=60, help="submissions for --compare (default 60)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    figures: dict[str, object] = {"submissions": args.n, "jobs": args.jobs, "cpus": os.cpu_count(),
                                  "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "subs").mkdir()
        (folder / "key.py").write_text(KEY)
        expected = make_class(folder / "subs", args.n)
        runs = [("local", [])] + ([("dask", ["--dask", "local"])] if args.dask else [])
        for name, extra in runs:
            out = folder / f"grades-{name}"
            wall, cpu = grade_cli(folder, args.jobs, out, extra)
            from chainrule.grading.batch import read_results  # finished records only (not the "started" lines)

            got = {rec["id"]: rec["score"] for rec in read_results(out / "results.jsonl")}
            wrong = [k for k in expected if abs(got.get(k, -1) - expected[k]) > 1e-9]
            if wrong:
                print(f"{name}: {len(wrong)} scores differ from the intended ones, e.g. {wrong[:3]}")
                return 1
            figures[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                             "per_submission_ms": round(wall / args.n * 1e3, 1),
                             "per_submission_per_worker_ms": round(wall * args.jobs / args.n * 1e3, 1)}
            print(f"{name}: {args.n} submissions x 3 problems x 6 points with -j {args.jobs}: {wall:.1f} s wall "
                  f"({wall / args.n * 1e3:.0f} ms per submission, {wall * args.jobs / args.n * 1e3:.0f} ms per "
                  f"submission per worker), {cpu:.1f} s CPU; every score as intended")
        if args.compare:
            c = compare(folder, args.sample)
            figures["strategies_s_per_submission_one_worker"] = {k: round(v, 4) for k, v in c.items()}
            print(f"one worker, {args.sample} submissions: (A) one child per submission, file imported once: "
                  f"{c['A_one_child_per_submission'] * 1e3:.1f} ms each, scoring included; (B) one child per "
                  f"function: {c['B_one_child_per_function_runs_only'] * 1e3:.1f} ms each for the runs alone; (C) a "
                  f"fresh interpreter: {c['C_fresh_interpreter_start_only'] * 1e3:.0f} ms each just to start")
    figures["load_after"] = os.getloadavg()[0]
    print(f"load average before {figures['load_before']:.2f}, after {figures['load_after']:.2f} "
          f"({os.cpu_count()} CPUs)")
    if args.json:
        atomic_write(args.json, json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
