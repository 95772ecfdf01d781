"""Dask benchmark (issue 16): the worksheet's complex_layer, forward and backward, beyond one NumPy array.

At N = 1e8 float64 elements (0.8 GB per array) it times ``cr.value_and_grad(complex_layer)`` on NumPy
arrays, the same call on Dask arrays on a ``distributed.LocalCluster`` of threads (one worker, two
threads) and of processes (two workers, one thread each), and ``cr.compile`` on the Dask arrays (its
generated kernel run once per chunk) on both clusters. On the clusters the inputs are generated and
kept on the workers first (not timed); the timed part builds the graph and computes the value and
both gradients, which stay on the workers (``persist``), as a NumPy call keeps its results in memory.

``--out-of-core`` runs N = 2e9 (16 GB per array, 48 GB for the value and two gradients: more than this
machine's memory): the inputs are generated chunk by chunk inside the graph and the results are
reduced to their sums as they stream, so nothing whole is ever held. Every mode runs in a process of
its own; its peak memory is the largest sum, over one sampling instant every 50 ms, of the resident
memory of that process and all of its children (the cluster's workers). A slice of every result is
checked against NumPy on the same values.

    python bench/bench_dask.py                                  # N = 1e8, all modes (a few minutes)
    python bench/bench_dask.py --out-of-core --modes compile-processes
    python bench/bench_dask.py --n 1e7 --chunk 1e6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

MODES = ("numpy", "threads", "processes", "compile-threads", "compile-processes")


def complex_layer(x: Any, y: Any) -> Any:
    import numpy as np

    import chainrule as cr

    return np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2)


class PeakMemory:
    """Samples the resident memory of this process and all of its children every ``every`` seconds."""

    def __init__(self, every: float = 0.05) -> None:
        import psutil

        self.me = psutil.Process()
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _cluster(mode: str) -> Any:
    from distributed import Client, LocalCluster

    processes = mode.endswith("processes")
    cluster = LocalCluster(n_workers=2 if processes else 1, threads_per_worker=1 if processes else 2,
                           processes=processes, dashboard_address=None)
    return Client(cluster)


def _check_slice(x: Any, y: Any, results: tuple[Any, ...], m: int = 100_000) -> float:
    """Largest relative difference between the first ``m`` elements of each result and NumPy's."""
    import dask
    import numpy as np

    import chainrule as cr

    xs, ys, *got = dask.compute(x[:m], y[:m], *[r[:m] for r in results])
    out, (fx, fy) = cr.value_and_grad(complex_layer, argnums=(0, 1))(np.asarray(xs), np.asarray(ys))
    return max(float(np.max(np.abs(g - e) / np.maximum(np.abs(e), 1e-300))) for g, e in zip(got, (out, fx, fy)))


def run_one(mode: str, n: int, chunk: int, out_of_core: bool, seed: int = 16) -> dict[str, Any]:
    """One mode in this process: timings, peak memory, the check."""
    import numpy as np

    import chainrule as cr

    row: dict[str, Any] = {"mode": mode, "n": n, "chunk": chunk, "out_of_core": out_of_core}
    if mode == "numpy":
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(0.5, 2.0, n), rng.uniform(0.0, 2.0, n)
        with PeakMemory() as mem:
            t = time.perf_counter()
            out, (fx, fy) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
            row["seconds"] = time.perf_counter() - t
        row["peak_gb"] = mem.peak / 1e9
        m = 100_000
        ref = cr.value_and_grad(complex_layer, argnums=(0, 1))(x[:m], y[:m])
        row["max_rel_err"] = max(float(np.max(np.abs(a[:m] - b) / np.abs(b))) for a, b in
                                 zip((out, fx, fy), (ref[0], *ref[1])))
        return row

    import dask
    import dask.array as da
    from distributed import wait

    with PeakMemory() as mem:
        client = _cluster(mode)
        rng = da.random.default_rng(seed)
        x = rng.uniform(0.5, 2.0, size=n, chunks=chunk)
        y = rng.uniform(0.0, 2.0, size=n, chunks=chunk)
        if not out_of_core:  # the inputs on the workers first, like a NumPy array in memory
            x, y = client.persist([x, y])
            wait([x, y])
        fn = cr.compile(complex_layer, argnums=(0, 1)) if mode.startswith("compile") else \
            cr.value_and_grad(complex_layer, argnums=(0, 1))
        t = time.perf_counter()
        out, (fx, fy) = fn(x, y)
        row["graph_seconds"] = time.perf_counter() - t
        row["tasks"] = len(out.__dask_graph__()) + len(fx.__dask_graph__()) + len(fy.__dask_graph__())
        if out_of_core:  # streamed: each chunk's results reduced as they come
            sums = dask.compute(out.sum(), fx.sum(), fy.sum())
            row["sums"] = [float(s) for s in sums]
        else:
            results = client.persist([out, fx, fy])
            wait(results)
        row["seconds"] = time.perf_counter() - t
        row["max_rel_err"] = _check_slice(x, y, (out, fx, fy))
        client.close()
    row["peak_gb"] = mem.peak / 1e9
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, default=None, help="elements per array (default 1e8; 2e9 out of core)")
    p.add_argument("--chunk", type=float, default=None, help="elements per chunk (default 1e7; 2.5e6 out of core)")
    p.add_argument("--modes", default=None, help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--out-of-core", action="store_true", help="N = 2e9, inputs generated and results summed "
                   "as they stream (modes default to compile-processes,processes)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode in this process
    args = p.parse_args(argv)
    n = int(args.n or (2e9 if args.out_of_core else 1e8))
    chunk = int(args.chunk or (2.5e6 if args.out_of_core else 1e7))
    if args.one:
        print(json.dumps(run_one(args.one, n, chunk, args.out_of_core)))
        return 0
    modes = (args.modes or ("compile-processes,processes" if args.out_of_core else ",".join(MODES))).split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.out_of_core and "numpy" in modes:
        p.error("the numpy mode holds whole arrays: it cannot run out of core")
    load = os.getloadavg()
    print(f"complex_layer forward+backward, N = {n:.3g} ({n * 8 / 1e9:.1f} GB per array), chunks of {chunk:.3g}; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'mode':18s} {'seconds':>8s} {'graph s':>8s} {'tasks':>7s} {'peak GB':>8s} {'max rel err':>12s}")
    rows = []
    for mode in modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", mode, "--n", str(n), "--chunk", str(chunk)]
        if args.out_of_core:
            cmd.append("--out-of-core")
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode or not lines:
            print(f"{mode:18s} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(lines[-1])
        row["load_before"] = load
        rows.append(row)
        print(f"{mode:18s} {row['seconds']:8.2f} {row.get('graph_seconds', 0):8.2f} {row.get('tasks', 0):7d} "
              f"{row['peak_gb']:8.2f} {row['max_rel_err']:12.2e}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
        from chainrule.fileio import atomic_write

        atomic_write(args.json, json.dumps(rows, indent=2))
    return 0 if len(rows) == len(modes) else 1


if __name__ == "__main__":
    sys.exit(main())
