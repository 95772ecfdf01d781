"""Benchmark: one training step of a 784-256-256-10 ReLU MLP (batch 128, float32, softmax
cross-entropy, plain SGD) — chainrule eager (cr.nn + cr.optim) and chainrule compiled
(``cr.compile`` of the loss as a function of the parameters, then ``opt.step(grads)``) against
hand-written NumPy, and against jax.jit where jax is installed (the peer environment).

The NumPy and JAX steps, the initial weights and the batch come from the peer harness
(``../shared/bench/run_peers.py``: ``mlp_init``, ``mlp_numpy``, ``mlp_jax_jit``), so the numbers
line up with its PyTorch/JAX tables. All steps are timed alternately in the same process, several
rounds; each round's ratios to NumPy are reported and their medians. First every step runs once
with lr=1 from the same weights and must agree with NumPy (loss and every parameter update).

    python bench/bench_mlp.py                 # 7 rounds
    python bench/bench_mlp.py --rounds 15 --threads 1 --cpu 0 --json out.json
    ../peers-venv/bin/python bench/bench_mlp.py --threads 1 --cpu 0   # with jax.jit

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HARNESS = Path(os.environ.get("CHAINRULE_PEER_BENCH", ROOT.parent / "shared" / "bench"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of steps per timing (default 0.2)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (sets OPENBLAS/OMP/MKL_NUM_THREADS before NumPy loads)")
    p.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (Linux)")
    p.add_argument("--harness", type=Path, default=DEFAULT_HARNESS,
                   help="folder of the peer harness run_peers.py (default ../shared/bench)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--profile", action="store_true", help="print a cProfile of 300 chainrule steps")
    p.add_argument("--no-jax", action="store_true", help="leave jax.jit out even where jax is installed")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads is not None:  # before NumPy sizes its thread pool
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(args.threads)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if not (args.harness / "run_peers.py").exists():
        sys.exit(f"bench_mlp: the peer harness run_peers.py is not in {args.harness}; pass --harness DIR "
                 "(or set CHAINRULE_PEER_BENCH)")
    sys.path.insert(0, str(args.harness))
    import numpy as np
    from run_peers import MLP_BATCH, MLP_LR, MLP_SIZES, PARAM_NAMES, mlp_init, mlp_jax_jit, mlp_numpy

    import chainrule as cr
    from chainrule.fileio import atomic_write

    # the chainrule steps are the ones the peer harness runs (bench/peers.py), so both benchmarks time
    # the same code
    os.environ["CHAINRULE_PEER_BENCH"] = str(args.harness)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import mlp_chainrule
    from peers import mlp_chainrule_compiled as mlp_compiled

    builders = {"numpy": mlp_numpy, "chainrule": mlp_chainrule, "chainrule-compiled": mlp_compiled}
    if not args.no_jax:
        try:
            import jax  # noqa: F401

            builders["jax-jit"] = mlp_jax_jit
        except ImportError:
            print("(jax is not installed here: no jax.jit column; run with ../peers-venv/bin/python)")

    init, X, y = mlp_init()

    # correctness: the same update as the hand-written step
    ref_step, ref_params = mlp_numpy(init, X, y, 1.0)
    ref_loss = float(ref_step())
    ref_delta = [p - init[k] for p, k in zip(ref_params(), PARAM_NAMES)]
    for name, build in builders.items():
        step, params = build(init, X, y, 1.0)
        out = step()
        loss = float(np.asarray(getattr(out, "data", out)))  # a Tensor (eager), an array or a jax value
        got = [np.asarray(p) for p in params()]
        delta = [p.astype(np.float64) - init[k] for p, k in zip(got, PARAM_NAMES)]
        err = max(float(np.max(np.abs(d - r)) / np.max(np.abs(r))) for d, r in zip(delta, ref_delta))
        dtypes = sorted({str(p.dtype) for p in got})
        print(f"check {name:18s}: loss {loss:.6f} vs NumPy {ref_loss:.6f}, max relative update error {err:.1e}, "
              f"dtypes {dtypes}")
        if abs(loss - ref_loss) > 1e-4 * abs(ref_loss) or err > 1e-4 or dtypes != ["float32"]:
            print(f"bench_mlp: the {name} step does not match the hand-written one", file=sys.stderr)
            return 1

    def per_step(fn) -> float:
        """Seconds per call: the fastest of 5 timed batches of calls (the least disturbed by other
        processes on a shared machine), each batch about min_time / 5 long."""
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        fn()
        n = max(1, int(args.min_time / 5 / max(time.perf_counter() - t0, 1e-6)))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    steps = {name: build(init, X, y, MLP_LR)[0] for name, build in builders.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, fn in steps.items():
            times[name].append(per_step(fn))
        print(f"round {r + 1}: " + "  ".join(f"{n} {t[-1] * 1e3:.3f} ms" for n, t in times.items()))
    med = {name: statistics.median(t) for name, t in times.items()}

    def ratio(a: str, b: str) -> str:
        rs = [x / y for x, y in zip(times[a], times[b])]
        return f"{a}/{b} median {statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f})"

    arch = "-".join(map(str, MLP_SIZES))
    print(f"\nMLP {arch}, batch {MLP_BATCH}, float32, SGD step, median of {args.rounds} rounds: "
          + ", ".join(f"{n} {m * 1e3:.3f} ms" for n, m in med.items()))
    print("ratios per round: " + "; ".join(
        [ratio("chainrule", "numpy"), ratio("chainrule-compiled", "numpy")]
        + ([ratio("chainrule-compiled", "jax-jit")] if "jax-jit" in times else [])))

    if args.json:
        atomic_write(args.json, json.dumps({
            "benchmark": f"mlp {arch} batch {MLP_BATCH} float32 sgd step",
            **{f"{n}_ms": [t * 1e3 for t in ts] for n, ts in times.items()},
            "ratio_median": statistics.median(c / n for n, c in zip(times["numpy"], times["chainrule"])),
            "compiled_ratio_median": statistics.median(
                c / n for n, c in zip(times["numpy"], times["chainrule-compiled"])),
            "numpy": np.__version__, "chainrule": cr.__version__,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        }, indent=2))
    cr_step = steps["chainrule"]
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(lambda: [cr_step() for _ in range(300)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
