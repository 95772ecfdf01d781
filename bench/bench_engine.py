"""Eager engine benchmark (issue 2): chainrule ``value_and_grad`` against hand-written NumPy.

Times forward+backward of the worksheet's five functions (q2a, q2b, q2c, sigmoid, complex_layer)
at N = 1, 1e3, 1e6 float64 elements, and the per-op overhead of a chain of 100 scalar mul/add ops
plus backward, all in one process and one run, and prints ratios to hand-written NumPy.

    python bench/bench_engine.py                 # everything (~1 minute)
    python bench/bench_engine.py --sizes 1,1000 --json out.json

For peers (PyTorch, JAX, autograd, micrograd) in the same run, use bench/peers.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import run_peers, seed_functions  # noqa: E402
from peers import chain_chainrule  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.fileio import atomic_write  # noqa: E402


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,1000,1000000", help="comma-separated N (default 1,1000,1000000)")
    p.add_argument("--functions", default=",".join(seed_functions.FUNCTIONS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    engine = seed_functions.ENGINES["chainrule"].setup()
    results: dict = {"seed": [], "chain": {}}
    print(f"chainrule {cr.__version__} eager value_and_grad vs hand-written NumPy (median per call)\n")
    print(f"{'function':14s} {'N':>8s} {'numpy':>10s} {'chainrule':>10s} {'ratio':>7s}")
    by_n: dict[int, list[float]] = {}
    for fname in args.functions.split(","):
        spec = seed_functions.FUNCTIONS[fname]
        for n in sizes:
            arrays = seed_functions.make_inputs(fname, n)
            ok, err = seed_functions.check_engine(engine, fname, n)
            if not ok:
                print(f"{fname} N={n}: chainrule disagrees with the hand-written version (max rel err {err:.2e})")
                return 1
            ref_call = lambda spec=spec, arrays=arrays: spec.numpy(*arrays)  # noqa: E731
            ref = run_peers.bench(ref_call, args.repeats, args.min_time)["median"]
            call = engine.make_call(fname, engine.prepare(arrays))
            got = run_peers.bench(call, args.repeats, args.min_time)["median"]
            ratio = got / ref
            by_n.setdefault(n, []).append(ratio)
            results["seed"].append({"function": fname, "n": n, "numpy_s": ref, "chainrule_s": got, "ratio": ratio})
            print(f"{fname:14s} {n:>8d} {run_peers.fmt_time(ref):>10s} {run_peers.fmt_time(got):>10s} "
                  f"{ratio:>6.2f}x")
    print()
    for n, rs in by_n.items():
        print(f"geomean ratio at N={n}: {geomean(rs):.2f}x")
    # per-op overhead: 100 scalar ops + backward
    ref = run_peers.bench(run_peers.chain_numpy(0.5), args.repeats, args.min_time)["median"]
    got = run_peers.bench(chain_chainrule(0.5), args.repeats, args.min_time)["median"]
    ops = run_peers.CHAIN_OPS
    results["chain"] = {"numpy_per_op_s": ref / ops, "chainrule_per_op_s": got / ops}
    print(f"\nper-op overhead, chain of {ops} scalar mul/add + backward: numpy {ref / ops * 1e6:.2f} us/op, "
          f"chainrule {got / ops * 1e6:.2f} us/op ({got / ref:.2f}x)")
    if args.json:
        atomic_write(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
