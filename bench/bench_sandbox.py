"""Per-run cost of checking code in the sandbox (chainrule.sandbox), the figure a grader multiplies by
the number of submissions.

    python bench/bench_sandbox.py --runs 200

Times (1) starting a runner (Python + NumPy + chainrule, once per runner), (2) one sandboxed run of
a worksheet Q2(a) solution -- fork, import the file, 6 calls (the given inputs and 5 random ones),
results back, child reaped, scratch folder removed -- on a warm runner, and (3) the alternative the
runner avoids: a fresh ``python -c "import numpy, chainrule"`` per submission.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from chainrule import sandbox

Q2A = """
def q2a(x, y, z):
    q = x + y
    out = q * z
    dq = z
    dz = q
    dx = dq
    dy = dq
    return out, dx, dy, dz
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200, help="sandboxed runs to time (default 200)")
    p.add_argument("--cold", type=int, default=5, help="fresh interpreters to time (default 5)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    sets = [{"x": np.array(1.0), "y": np.array(3.0), "z": np.array(2.0)}]
    sets += [{k: rng.uniform(0.5, 2.0, size=()) for k in "xyz"} for _ in range(5)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q2a.py"
        path.write_text(Q2A)
        job = sandbox.Job(str(path), "q2a", sets, ["x", "y", "z"])
        t = time.perf_counter()
        runner = sandbox.Runner()
        runner.start()
        start = time.perf_counter() - t
        with runner:
            runner.run(job)  # first run: nothing left to warm up
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                res = runner.run(job)
                times.append(time.perf_counter() - t)
                assert res.ok and len(res.calls) == len(sets), res.reason
        src = str(Path(sandbox.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": src}
        cold = []
        for _ in range(args.cold):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import numpy, chainrule"], check=True, env=env)
            cold.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"runner start (once per runner): {start * 1e3:.0f} ms")
    print(f"one sandboxed run, warm runner (fork, import, {len(sets)} calls, results back), median of "
          f"{args.runs}: {med * 1e3:.1f} ms (p90 {statistics.quantiles(times, n=10)[-1] * 1e3:.1f} ms)")
    print(f"a fresh interpreter importing numpy and chainrule, median of {args.cold}: "
          f"{statistics.median(cold) * 1e3:.0f} ms ({statistics.median(cold) / med:.0f}x the warm run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
