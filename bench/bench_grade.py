"""``chainrule grade`` on a class of generated submissions of the worksheet's Q2 (q2a, q2b, q2c in one
file each; the given inputs and 5 random points): wall time for the class, per-submission cost,
and the isolation strategies compared.

    python bench/bench_grade.py --n 500 -j 2
    python bench/bench_grade.py --n 500 -j 2 --compare --json grade-bench.json

The class: most submissions right (written in a few styles), a quarter with one classic mistake
(sign, missing factor, fan-out overwritten, wrong local gradient, upstream not multiplied), and a
few that fail fast (syntax error, sys.exit, a crash, an exception). Endless loops are left out:
each costs its --timeout, whatever the strategy. Every score is checked against the intended one.

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

KEY = """\
import numpy as np

def q2a(x=1.0, y=3.0, z=2.0):
    return (x + y) * z

def q2b(x=3.0, y=1.0, z=2.0):
    return (x ** 2 + 2 * y) * z ** 3

def q2c(x=np.e, y=np.pi / 2, z=2.0):
    return (np.log(x) + np.sin(y)) ** 2 + 4 * x
"""

RIGHT = """\
import numpy as np

def q2a(x, y, z):
    q = x + y
    f = q * z
    dq = z
    fz = q
    fx = dq
    fy = dq
    return f, fx, fy, fz

def q2b(x, y, z):
    a = x ** 2
    b = 2 * y
    c = a + b
    d = z ** 3
    h = c * d
    dc = d
    dd = c
    hx = 2 * x * dc
    hy = 2 * dc
    hz = 3 * z ** 2 * dd
    return h, hx, hy, hz

def q2c(x, y, z):
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    d = c ** 2
    g = d + 4 * x
    dc = 2 * c
    gx = dc / x
    gx += 4
    gy = dc * np.cos(y)
    gz = np.zeros_like(z)
    return g, gx, gy, gz
"""

STYLES = [  # (change, points lost out of 3: a quarter of a problem per wrong value)
    (None, 0.0),
    (("f = q * z", "f = z * q"), 0.0),
    (("gz = np.zeros_like(z)", "gz = 0.0 * z"), 0.0),
    (("return f, fx, fy, fz", "return f, (fx, fy, fz)"), 0.0),
]
MISTAKES = [
    (("fz = q", "fz = -q"), 0.25),                       # a lost sign
    (("hx = 2 * x * dc", "hx = x * dc"), 0.25),          # a missing factor
    (("gx += 4", "gx = 4.0 + 0 * x"), 0.25),             # a fan-out gradient overwritten
    (("gy = dc * np.cos(y)", "gy = dc * np.cos(x)"), 0.25),  # the local gradient of the wrong input
    (("hz = 3 * z ** 2 * dd", "hz = 3 * z ** 2"), 0.25),  # the upstream gradient not multiplied in
]
FAILURES = [
    (("def q2a(x, y, z):", "def q2a(x, y, z)"), 3.0),    # a syntax error: every problem
    (("    q = x + y\n", "    import sys\n    sys.exit(0)\n"), 1.0),
    (("    a = x ** 2\n", "    import ctypes\n    ctypes.string_at(0)\n"), 1.0),
    (("    b = np.sin(y)\n", "    b = 1 / 0\n"), 1.0),
]


def make_class(folder: Path, n: int, seed: int = 0) -> dict[str, float]:
    """``n`` submissions in ``folder``; returns the score each must get (out of 3)."""
    rng = random.Random(seed)
    expected = {}
    for k in range(n):
        roll = rng.random()
        pool = STYLES if roll < 0.7 else (MISTAKES if roll < 0.95 else FAILURES)
        change, lost = rng.choice(pool)
        text = RIGHT if change is None else RIGHT.replace(change[0], change[1], 1)
        sid = f"s{k:04d}"
        (folder / f"{sid}.py").write_text(text)
        expected[sid] = 3.0 - lost
    return expected


def grade_cli(folder: Path, jobs: int, out: Path, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (this command and everything it started) of ``chainrule grade``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "chainrule", "grade", str(folder / "subs"), "--against",
           f"{folder / 'key.py'}:q2a,q2b,q2c", "--random", "5", "-j", str(jobs), "--out", str(out), "-q", *extra]
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
            got = {}
            for line in (out / "results.jsonl").read_text().splitlines():
                rec = json.loads(line)
                got[rec["id"]] = rec["score"]
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
