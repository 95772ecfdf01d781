"""Benchmark ``cr.compile`` against the hand-written staged NumPy functions of the worksheet and against
the memory-bandwidth limit.

Times forward+backward of q2a, q2b, q2c, sigmoid and complex_layer with the hand-written NumPy
reference (``../shared/bench/seed_functions.py``), ``cr.compile`` (the default ``auto`` back end,
the NumPy back end, the fused numba back end, the numexpr back end), the peers that are importable
(jax.jit, PyTorch eager) and, for scale, eager ``cr.value_and_grad``: all in one process, pinned to
the CPUs given, with the peer harness's allocator settings. Each function's **streaming limit** is
measured in the same process: the minimal bytes moved once (each input read once, the output and
every gradient written once, by ``np.copyto`` into preallocated arrays). Every figure is the median
over ``--repeat`` rounds (7 samples each); the table gives each time's ratio to hand-written NumPy and to the limit.

``--errors`` adds the worst relative error of the fused loops against the NumPy plan per function;
``--compile-times`` the first call's time (trace + lowering + numba) in a fresh process with an
empty kernel cache and in a second fresh process that finds the first one's kernels on disk.

    python3 bench/bench_compile.py --sizes 1,1000000                         # one CPU (CPU 0)
    python3 bench/bench_compile.py --sizes 1000000 --cpus 0,1                # two CPUs
    ../peers-venv/bin/python bench/bench_compile.py --sizes 1,1000000 --errors --compile-times
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
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


def timeit(call, min_time: float = 0.15, repeats: int = 7) -> list[float]:
    """Seconds per call in each of ``repeats`` rounds of at least ``min_time / repeats`` each."""
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
    return samples


def streaming_limit(arrays, nout: int):
    """The physical limit: each input read once, each of ``nout`` results written once (np.copyto
    into preallocated arrays; results beyond the inputs' count are written without a read)."""
    import numpy as np

    outs = [np.empty_like(arrays[0]) for _ in range(nout)]

    def call():
        for k, o in enumerate(outs):
            np.copyto(o, arrays[k] if k < len(arrays) else 0.0)
    return call


def worst_relative_error(got, want) -> tuple[float, float]:
    """(max over results and elements of |got - want| / |want|, max over results of
    max|got - want| / max|want|): the elementwise figure is large where a result is a difference of
    nearly equal terms (an ulp of the terms, relative to a tiny result); the second is the error
    relative to the result's scale. Elements where want is 0 or not finite are skipped."""
    import numpy as np

    elementwise = scaled = 0.0
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        g, w = np.asarray(g), np.asarray(w)
        ok = np.isfinite(w) & (w != 0)
        if ok.any():
            err = np.abs(g[ok] - w[ok])
            elementwise = max(elementwise, float(np.max(err / np.abs(w[ok]))))
            scaled = max(scaled, float(np.max(err) / np.max(np.abs(w[ok]))))
    return elementwise, scaled


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_shared = os.environ.get("CHAINRULE_PEER_BENCH") or os.path.normpath(
        os.path.join(here, "..", "..", "shared", "bench"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,1000000")
    p.add_argument("--shared", default=default_shared, help="folder holding seed_functions.py")
    p.add_argument("--cpus", default="0", help="pin to these CPUs (comma-separated; 'all': no pinning)")
    p.add_argument("--min-time", type=float, default=0.15)
    p.add_argument("--repeat", type=int, default=3, help="rounds of the whole table; each cell is their median")
    p.add_argument("--functions", default="", help="comma-separated subset of the worksheet's functions")
    p.add_argument("--eager", action="store_true", help="also time eager value_and_grad")
    p.add_argument("--no-peers", action="store_true", help="do not time jax.jit / torch even where importable")
    p.add_argument("--libmvec", action="store_true",
                   help="also time the fused loops with every transcendental a libmvec call (before inline_math)")
    p.add_argument("--errors", action="store_true", help="worst relative error, fused loops vs the NumPy plan")
    p.add_argument("--compile-times", action="store_true",
                   help="first-call time in a fresh process, with an empty kernel cache and with a warm one")
    p.add_argument("--json", help="write every measured cell here")
    p.add_argument("--_first-call", dest="first_call", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _reexec()
    if args.cpus != "all" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if not os.path.isfile(os.path.join(args.shared, "seed_functions.py")):
        sys.exit(f"peer benchmark harness not found at {args.shared}; set CHAINRULE_PEER_BENCH or --shared")
    sys.path.insert(0, args.shared)
    import numpy as np
    import seed_functions as sf

    import chainrule as cr

    m = SimpleNamespace(log=np.log, sin=np.sin, exp=np.exp, sqrt=np.sqrt)
    names = args.functions.split(",") if args.functions else list(sf.FUNCTIONS)

    def compiled(name: str, backend: str = "auto"):
        spec = sf.FUNCTIONS[name]
        f = (lambda g: lambda *a: g(m, *a))(spec.generic)
        return cr.compile(f, argnums=tuple(range(spec.n_inputs)), backend=backend)

    if args.first_call:   # a child of --compile-times: print each function's first-call time
        from chainrule.compile import vecmath

        t = time.perf_counter()
        vecmath.available()   # import numba once, before the first function: not a compile cost
        print(json.dumps({"numba_import": time.perf_counter() - t}))
        for name in names:
            arrays = sf.make_inputs(name, 1_000_000)
            times = []
            for _ in range(2):   # the second: the same kernels, already compiled in this process
                fn = compiled(name)
                t = time.perf_counter()
                fn(*arrays)
                times.append(time.perf_counter() - t)
            print(json.dumps({"function": name, "first_call": times[0], "retrace": times[1],
                              "backend": fn.backend_used}))
        return 0

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
    peers = {}
    if not args.no_peers:
        for peer in ("jax-jit", "torch"):
            try:
                peers[peer] = sf.ENGINES[peer].setup()
            except Exception:  # noqa: BLE001 - not installed or unusable here: not measured
                pass
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    engines = (["auto-compiled", "numpy-compiled"] + (["numba-compiled"] if has_nb else [])
               + (["libmvec-compiled"] if has_nb and args.libmvec else [])
               + (["numexpr-compiled"] if has_ne else []) + list(peers) + (["eager"] if args.eager else []))
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"numpy {np.__version__}, numba {numba.__version__ if has_nb else 'not installed'}, numexpr "
          f"{'(1 thread)' if has_ne else 'not installed'}, peers: {', '.join(peers) or 'none importable'}; "
          f"CPUs {args.cpus} ({ncpu} available to this process); load average {os.getloadavg()[0]:.2f} at start; "
          f"median of {args.repeat} rounds")
    print("times in ms; (x hand): ratio to hand-written NumPy; [x lim]: ratio to the streaming limit")
    record: list[dict] = []
    for n in sizes:
        cells: dict[tuple[str, str], list[float]] = {}
        calls: dict[str, dict[str, object]] = {}
        for name in names:
            spec = sf.FUNCTIONS[name]
            arrays = sf.make_inputs(name, n)
            ref = spec.numpy(*arrays)
            c = {"hand": (lambda call_, a: lambda: call_(*a))(spec.numpy, arrays),
                 "limit": streaming_limit(arrays, 1 + spec.n_inputs)}
            for e in engines:
                if e in peers:
                    call = peers[e].make_call(name, peers[e].prepare(arrays))
                    ok, err = sf.compare(ref, peers[e].to_numpy(call(), arrays))
                else:
                    if e == "eager":
                        f = (lambda g: lambda *a: g(m, *a))(spec.generic)
                        fn = cr.value_and_grad(f, argnums=tuple(range(spec.n_inputs)))
                    elif e == "libmvec-compiled":   # lowered (on the first call) with libmvec only
                        from chainrule.compile import vecmath

                        fn = compiled(name, "numba")
                        with vecmath.libmvec_only():
                            fn(*arrays)
                    else:
                        fn = compiled(name, e.split("-")[0])
                    ok, err = sf.compare(ref, fn(*arrays))
                    call = (lambda call_, a: lambda: call_(*a))(fn, arrays)
                if not ok:
                    print(f"  {name} {e}: MISMATCH (max rel err {err:.2e})")
                c[e] = call
            calls[name] = c
        for _ in range(args.repeat):
            for name in names:
                for k, call in calls[name].items():
                    cells.setdefault((name, k), []).extend(timeit(call, args.min_time))
        med = {k: statistics.median(v) for k, v in cells.items()}
        best = {k: min(v) for k, v in cells.items()}
        print(f"\nN = {n}")
        print(f"{'function':14s} {'hand-numpy':>10s} {'limit':>8s} " + " ".join(f"{e:>26s}" for e in engines))
        ratios: dict[str, list[float]] = {e: [] for e in engines}
        for name in names:
            hand, lim = med[(name, "hand")], med[(name, "limit")]
            row = f"{name:14s} {hand * 1e3:10.4f} {lim * 1e3:8.4f} "
            for e in engines:
                t = med[(name, e)]
                ratios[e].append(t / hand)
                row += f" {t * 1e3:9.4f} ({t / hand:5.2f}x) [{t / lim:5.2f}x]"
                record.append({"n": n, "function": name, "engine": e, "seconds": t, "hand": hand, "limit": lim,
                               "samples": cells[(name, e)], "limit_samples": cells[(name, "limit")]})
            print(row)
        geo = "  ".join(f"{e} {_geomean(r):.3f}x" for e, r in ratios.items())
        print(f"geomean ratio to hand-written NumPy at N={n}: {geo}")
        print("best of all rounds (the least disturbed by other processes), ratio to the best limit: "
              + "; ".join(f"{name} " + " ".join(f"{e.split('-')[0]} {best[(name, e)] / best[(name, 'limit')]:.2f}x"
                                              for e in engines) for name in names))
        if args.errors and has_nb:
            eps = float(np.finfo(np.float64).eps)
            print("worst relative error, fused loops vs the NumPy plan, over every element of the output and "
                  "gradients: elementwise | relative to each result's largest magnitude (in ulps of it)")
            for name in names:
                arrays = sf.make_inputs(name, max(n, 4096))
                got, want = compiled(name, "numba")(*arrays), compiled(name, "numpy")(*arrays)
                e, sc = worst_relative_error(got, want)
                print(f"  {name:14s} {e:.2e} | {sc:.2e} ({sc / eps:.1f} ulp)")
    if args.compile_times:
        _compile_times(names, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1)
    return 0


def _compile_times(names: list[str], args) -> None:
    """First-call times in two fresh processes sharing one new kernel cache: cold, then warm."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, CHAINRULE_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            cmd = [sys.executable, os.path.abspath(__file__), "--_first-call", "--cpus", args.cpus,
                   "--shared", args.shared, "--functions", ",".join(names)]
            t = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            runs.append(([json.loads(line) for line in out.splitlines() if line.startswith("{")],
                         time.perf_counter() - t))
    print("\nfirst call at N = 1e6, seconds: in a fresh process with an empty kernel cache, then in a second fresh "
          "process (kernels on disk); 'trace' is a second first call in the same process (trace, lowering and the "
          "validation probes at N = 1e6; the kernels already compiled): the rest is numba's")
    cold, warm = runs[0][0], runs[1][0]
    print(f"  (numba imported first: {cold[0]['numba_import']:.2f} s, then {warm[0]['numba_import']:.2f} s)")
    print(f"  {'function':14s} {'cold':>7s} {'trace':>7s} {'numba':>7s}   {'2nd':>7s} {'trace':>7s} {'numba':>7s}")
    for c, w in zip(cold[1:], warm[1:]):
        # numba's share: the first call less the second (the two are timed apart: noise may swap them)
        cn, wn = max(0.0, c["first_call"] - c["retrace"]), max(0.0, w["first_call"] - w["retrace"])
        print(f"  {c['function']:14s} {c['first_call']:7.3f} {c['retrace']:7.3f} {cn:7.3f}"
              f"   {w['first_call']:7.3f} {w['retrace']:7.3f} {wn:7.3f}  ({c['backend']})")
    print(f"  whole process (imports included): {runs[0][1]:.2f} s, then {runs[1][1]:.2f} s")


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


if __name__ == "__main__":
    sys.exit(main())
