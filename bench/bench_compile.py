"""Benchmark ``cr.compile`` against the hand-written staged NumPy functions of the worksheet.

Times forward+backward of q2a, q2b, q2c, sigmoid and complex_layer with the hand-written NumPy
reference (``../shared/bench/seed_functions.py``), ``cr.compile`` (the default ``auto`` backend,
the NumPy backend, the fused numba backend, the numexpr backend) and, for scale, eager
``cr.value_and_grad``: all in one process, pinned to one CPU, with the peer harness's allocator
settings, and prints each ratio to hand-written NumPy (lower is faster) and the geometric means.
Where jax is importable (the peer environment) jax.jit runs in the same process, through the
harness's own engine; otherwise its figure comes from the stored peer baseline, when given.

    .venv/bin/python bench/bench_compile.py [--sizes 1,1000000] [--baseline ../shared/bench/baseline-1cpu.json]
    ../peers-venv/bin/python bench/bench_compile.py --sizes 1000000     # with jax.jit in the same run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from types import SimpleNamespace

_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
_THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _reexec() -> None:
    """Same allocator thresholds and thread counts as the peer harness (set before numpy loads)."""
    if all(os.environ.get(k) == v for k, v in _MALLOC.items()):
        return
    env = dict(os.environ, **_MALLOC, **{k: "1" for k in _THREADS})
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def timeit(call, min_time: float = 0.15, repeats: int = 7) -> float:
    """Median seconds per call over ``repeats`` rounds of at least ``min_time`` each."""
    call()
    number = 1
    while True:
        t = time.perf_counter()
        for _ in range(number):
            call()
        dt = time.perf_counter() - t
        if dt >= min_time / repeats or number >= 1 << 20:
            break
        number *= 4
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - t) / number)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_shared = os.path.normpath(os.path.join(here, "..", "..", "shared", "bench"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,1000000")
    p.add_argument("--shared", default=default_shared, help="folder holding seed_functions.py")
    p.add_argument("--baseline", default=os.path.join(default_shared, "baseline-1cpu.json"))
    p.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: no pinning)")
    p.add_argument("--min-time", type=float, default=0.15)
    p.add_argument("--eager", action="store_true", help="also time eager value_and_grad")
    p.add_argument("--no-jax", action="store_true", help="do not time jax.jit even where jax is importable")
    args = p.parse_args(argv)
    _reexec()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    sys.path.insert(0, args.shared)
    import numpy as np
    import seed_functions as sf

    import chainrule as cr

    try:
        import numexpr

        numexpr.set_num_threads(1)
        has_ne = True
    except ImportError:
        has_ne = False
    try:
        import numba

        has_nb = True
    except ImportError:
        has_nb = False
    jax_engine = None
    if not args.no_jax:
        try:
            jax_engine = sf.Jax(jit=True).setup()
        except Exception:  # noqa: BLE001 - jax missing or unusable: use the stored baseline
            jax_engine = None
    m = SimpleNamespace(log=np.log, sin=np.sin, exp=np.exp, sqrt=np.sqrt)
    baseline = {} if jax_engine is not None else _baseline(args.baseline)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    engines = (["auto-compiled", "numpy-compiled"] + (["numba-compiled"] if has_nb else [])
               + (["numexpr-compiled"] if has_ne else []) + (["jax-jit"] if jax_engine is not None else [])
               + (["eager"] if args.eager else []))
    print(f"numpy {np.__version__}, numexpr {'(1 thread)' if has_ne else 'not installed'}, "
          f"numba {numba.__version__ if has_nb else 'not installed'}; pinned to CPU {args.cpu}; "
          "times in ms, ratio = time / hand-written NumPy time (lower is faster)")
    for n in sizes:
        ratios: dict[str, list[float]] = {e: [] for e in engines}
        jax_ratios: list[float] = []
        print(f"\nN = {n}")
        print(f"{'function':14s} {'hand-numpy':>11s} " + " ".join(f"{e:>22s}" for e in engines)
              + ("   jax.jit (baseline)" if baseline else ""))
        for name, spec in sf.FUNCTIONS.items():
            arrays = sf.make_inputs(name, n)
            argnums = tuple(range(spec.n_inputs))
            f = (lambda g: lambda *a: g(m, *a))(spec.generic)
            calls = {"hand": (lambda call_, a: lambda: call_(*a))(spec.numpy, arrays)}
            ref = spec.numpy(*arrays)
            for e in engines:
                if e == "jax-jit":
                    call = jax_engine.make_call(name, jax_engine.prepare(arrays))
                    ok, err = sf.compare(ref, jax_engine.to_numpy(call(), arrays))
                else:
                    if e == "eager":
                        fn = cr.value_and_grad(f, argnums=argnums)
                    else:
                        fn = cr.compile(f, argnums=argnums, backend=e.split("-")[0])
                    ok, err = sf.compare(ref, fn(*arrays))
                    call = (lambda call_, a: lambda: call_(*a))(fn, arrays)
                if not ok:
                    print(f"  {name} {e}: MISMATCH (max rel err {err:.2e})")
                calls[e] = call
            times = {k: timeit(c, args.min_time) for k, c in calls.items()}
            row = f"{name:14s} {times['hand'] * 1e3:11.4f} "
            for e in engines:
                r = times[e] / times["hand"]
                ratios[e].append(r)
                row += f" {times[e] * 1e3:11.4f} ({r:5.2f}x)  "
            if baseline:
                b = baseline.get((name, n))
                if b:
                    jr = b["jax-jit"] / b["numpy"]
                    jax_ratios.append(jr)
                    row += f"   {b['jax-jit'] * 1e3:.4f} ({jr:.2f}x)"
            print(row)
        geo = "  ".join(f"{e} {_geomean(r):.3f}x" for e, r in ratios.items())
        print(f"geomean ratio to hand-written NumPy at N={n}: {geo}"
              + (f"  (jax.jit baseline {_geomean(jax_ratios):.3f}x)" if jax_ratios else ""))
    return 0


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def _baseline(path: str) -> dict:
    """Median seconds per (function, N) of the stored peer baseline: numpy and jax-jit."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as fh:
        data = json.load(fh)
    acc: dict = {}
    for run in data.get("runs", []):
        if run.get("section") != "seed" or run.get("engine") not in ("numpy", "jax-jit"):
            continue
        for c in run.get("cells", []):
            if c.get("median"):
                acc.setdefault((c["function"], c["n"]), {}).setdefault(run["engine"], []).append(c["median"])
    return {k: {e: statistics.median(v) for e, v in d.items()} for k, d in acc.items()
            if "numpy" in d and "jax-jit" in d}


if __name__ == "__main__":
    sys.exit(main())
