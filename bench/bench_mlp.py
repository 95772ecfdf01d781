"""Benchmark: one training step of a 784-256-256-10 ReLU MLP (batch 128, float32, softmax
cross-entropy, plain SGD) — chainrule eager (cr.nn + cr.optim) against hand-written NumPy.

The NumPy step, the initial weights and the batch come from the peer harness
(``../shared/bench/run_peers.py``: ``mlp_init``, ``mlp_numpy``), so the numbers line up with its
PyTorch/JAX tables. Both steps are timed alternately in the same process, several rounds, and the
ratio chainrule / NumPy is reported per round and as the median. First both run one step with
lr=1 from the same weights and must agree (loss and every parameter update).

    python bench/bench_mlp.py                 # 7 rounds
    python bench/bench_mlp.py --rounds 15 --threads 1 --json out.json

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
DEFAULT_HARNESS = Path(os.environ.get("CHAINRULE_BENCH_HARNESS", ROOT.parent / "shared" / "bench"))


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
                 "(or set CHAINRULE_BENCH_HARNESS)")
    sys.path.insert(0, str(args.harness))
    import numpy as np
    from run_peers import MLP_BATCH, MLP_LR, MLP_SIZES, PARAM_NAMES, mlp_init, mlp_numpy

    import chainrule as cr

    def mlp_chainrule(init: dict, X: np.ndarray, y: np.ndarray, lr: float):
        """The step as a user writes it: model, loss, zero_grad, backward, SGD step."""
        sizes = list(zip(MLP_SIZES[:-1], MLP_SIZES[1:]))
        layers: list[cr.nn.Module] = []
        for i, (fi, fo) in enumerate(sizes):
            layers.append(cr.nn.Linear(fi, fo))
            if i < len(sizes) - 1:
                layers.append(cr.nn.ReLU())
        model = cr.nn.Sequential(*layers)
        linear_names = [n.rsplit(".", 1)[0] for n, _ in model.named_parameters()][::2]
        model.load_state_dict({f"{linear_names[i // 2]}.{'weight' if k.startswith('W') else 'bias'}": init[k]
                               for i, k in enumerate(PARAM_NAMES)})
        opt = cr.optim.SGD(model.parameters(), lr=lr)

        def step():
            loss = cr.nn.cross_entropy(model(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        return step, lambda: [p.data.copy() for p in model.parameters()]

    init, X, y = mlp_init()

    # correctness: the same update as the hand-written step
    ref_step, ref_params = mlp_numpy(init, X, y, 1.0)
    ref_loss = float(ref_step())
    ref_delta = [p - init[k] for p, k in zip(ref_params(), PARAM_NAMES)]
    step, params = mlp_chainrule(init, X, y, 1.0)
    loss = step()
    delta = [p - init[k] for p, k in zip(params(), PARAM_NAMES)]
    err = max(float(np.max(np.abs(d - r)) / np.max(np.abs(r))) for d, r in zip(delta, ref_delta))
    dtypes = {str(loss.dtype)} | {str(p.dtype) for p in params()}
    print(f"check: loss {float(loss.item()):.6f} vs NumPy {ref_loss:.6f}, max relative update error {err:.1e}, "
          f"dtypes {sorted(dtypes)}")
    if abs(float(loss.item()) - ref_loss) > 1e-4 * abs(ref_loss) or err > 1e-4 or dtypes != {"float32"}:
        print("bench_mlp: chainrule's step does not match the hand-written one", file=sys.stderr)
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

    numpy_step, _ = mlp_numpy(init, X, y, MLP_LR)
    cr_step, _ = mlp_chainrule(init, X, y, MLP_LR)
    rounds = []
    for r in range(args.rounds):
        t_np = per_step(numpy_step)
        t_cr = per_step(cr_step)
        rounds.append((t_np, t_cr))
        print(f"round {r + 1}: numpy {t_np * 1e3:.3f} ms  chainrule {t_cr * 1e3:.3f} ms  ratio {t_cr / t_np:.3f}")
    ratios = [c / n for n, c in rounds]
    med_np = statistics.median(n for n, _ in rounds)
    med_cr = statistics.median(c for _, c in rounds)
    arch = "-".join(map(str, MLP_SIZES))
    print(f"\nMLP {arch}, batch {MLP_BATCH}, float32, SGD step: hand-written NumPy {med_np * 1e3:.3f} ms, "
          f"chainrule eager {med_cr * 1e3:.3f} ms; ratio chainrule/NumPy median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} rounds)")

    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": f"mlp {arch} batch {MLP_BATCH} float32 sgd step",
            "numpy_ms": [n * 1e3 for n, _ in rounds], "chainrule_ms": [c * 1e3 for _, c in rounds],
            "ratio_median": statistics.median(ratios), "numpy": np.__version__, "chainrule": cr.__version__,
        }, indent=2))
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(lambda: [cr_step() for _ in range(300)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
