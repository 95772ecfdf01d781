"""Benchmark: forward + backward of one convolution layer (batch 64, 16 → 32 channels, 3×3 kernel,
padding 1, 28×28 images, float32): ``cr.nn.Conv2d`` (the engine's gates) against a hand-written
NumPy im2col layer (forward and backward written by hand, the CS231n "fast layers" way) and
PyTorch eager where torch is installed, in one process.

Each implementation computes the output and the gradients of the input, the weight and the bias
for the same upstream gradient; they are first checked against each other. Then they are timed
alternately, several rounds (each round: the fastest of 5 batches of calls, the least disturbed by
other processes on a shared machine), in wall-clock and in CPU time; each round's ratio to the
hand-written layer is reported, and the medians. The load average is printed before and after.

    python bench/bench_conv.py                               # 7 rounds, one BLAS thread
    python bench/bench_conv.py --rounds 15 --cpu 0 --json out.json
    ../peers-venv/bin/python bench/bench_conv.py             # with PyTorch (see ../shared/bench/README.md)
    python bench/bench_conv.py --profile                     # where the time goes, phase by phase

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
N, C_IN, C_OUT, SIZE, K, PAD = 64, 16, 32, 28, 3, 1


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of calls per timing (default 0.5)")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS and PyTorch threads (default 1: the machine is shared; 0 leaves the defaults)")
    p.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (Linux)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--profile", action="store_true", help="time each phase of both layers (thread CPU time)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even where it is installed")
    return p.parse_args()


# ----------------------------------------------------------------------------------------------
# the hand-written layer: CS231n's conv_forward_strides / conv_backward_strides, with the col2im
# loop written in NumPy (one strided add per kernel offset) instead of Cython
# ----------------------------------------------------------------------------------------------


def numpy_conv(x: Any, w: Any, b: Any, dout: Any, phases: dict[str, float] | None = None) -> tuple[Any, ...]:
    """Forward and backward of a stride-1 convolution with zero padding PAD, by hand; returns
    (out, dx, dw, db). ``phases``, when given, collects each step's thread CPU time."""
    import numpy as np

    clock = time.thread_time
    t = clock()

    def lap(name: str) -> None:
        nonlocal t
        if phases is not None:
            now = clock()
            phases[name] = phases.get(name, 0.0) + now - t
            t = now

    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    lap("pad")
    ho, wo = h + 2 * PAD - kh + 1, wd + 2 * PAD - kw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (n, c, ho, wo, kh, kw), a view
    cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)     # im2col: the one copy
    lap("im2col copy")
    w2 = w.reshape(f, -1)
    out2 = w2 @ cols
    lap("forward matmul")
    out2 += b.reshape(-1, 1)
    out = out2.reshape(f, n, ho, wo).transpose(1, 0, 2, 3)
    lap("bias")
    # backward
    dout2 = dout.transpose(1, 0, 2, 3).reshape(f, -1)
    lap("upstream to (F, N·H·W)")
    db = dout2.sum(axis=1)
    lap("db")
    dw = (dout2 @ cols.T).reshape(w.shape)
    lap("dw matmul")
    dcols = (w2.T @ dout2).reshape(c, kh, kw, n, ho, wo)
    lap("dcols matmul")
    dxp = np.zeros_like(xp)
    for i in range(kh):      # col2im: each kernel offset's columns added back where they came from
        for j in range(kw):
            dxp[:, :, i:i + ho, j:j + wo] += dcols[:, i, j].transpose(1, 0, 2, 3)
    lap("col2im adds")
    dx = dxp[:, :, PAD:PAD + h, PAD:PAD + wd]
    return out, dx, dw, db


def chainrule_conv(layer: Any, x: Any, dout: Any) -> tuple[Any, ...]:
    """Forward and backward through ``cr.nn.Conv2d``; returns (out, dx, dw, db)."""
    import chainrule as cr

    xt = cr.tensor(x, requires_grad=True)
    layer.zero_grad()
    out = layer(xt)
    out.backward(dout)
    return out.data, xt.grad, layer.weight.grad, layer.bias.grad


def torch_conv(torch: Any, x: Any, w: Any, b: Any, dout: Any) -> tuple[Any, ...]:
    """Forward and backward through PyTorch eager's conv2d; returns (out, dx, dw, db) as tensors."""
    xt = x.detach().requires_grad_()
    wt = w.detach().requires_grad_()
    bt = b.detach().requires_grad_()
    out = torch.nn.functional.conv2d(xt, wt, bt, padding=PAD)
    out.backward(dout)
    return out, xt.grad, wt.grad, bt.grad


def per_call(fn: Callable[[], Any], min_time: float) -> tuple[float, float]:
    """Seconds per call, wall-clock and CPU (this process's, all threads): each the fastest of 5
    timed batches of calls, each batch about min_time / 5 long. On a machine shared with other
    work the CPU time is the steadier measure (waiting for a core is not counted in it)."""
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    fn()
    n = max(1, int(min_time / 5 / max(time.perf_counter() - t0, 1e-6)))
    wall = cpu = float("inf")
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall = min(wall, (time.perf_counter() - t0) / n)
        cpu = min(cpu, (time.process_time() - c0) / n)
    return wall, cpu


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> int:
    args = parse_args()
    if args.threads:  # before NumPy and PyTorch size their thread pools
        for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[key] = str(args.threads)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    import chainrule as cr
    from chainrule.fileio import atomic_write

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("(PyTorch is not installed here: no torch column; run with ../peers-venv/bin/python)")
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C_IN, SIZE, SIZE)).astype(np.float32)
    dout = rng.standard_normal((N, C_OUT, SIZE, SIZE)).astype(np.float32)
    layer = cr.nn.Conv2d(C_IN, C_OUT, K, padding=PAD, rng=1)
    layer.bias.data[:] = rng.standard_normal(C_OUT)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()

    impls: dict[str, Callable[[], Any]] = {
        "numpy": lambda: numpy_conv(x, w, b, dout),
        "chainrule": lambda: chainrule_conv(layer, x, dout),
    }
    if torch is not None:
        tx, tw, tb, td = (torch.from_numpy(a) for a in (x, w, b, dout))
        impls["torch"] = lambda: torch_conv(torch, tx, tw, tb, td)

    # correctness: every implementation against the hand-written one
    ref = [r.astype(np.float64) for r in numpy_conv(x, w, b, dout)]
    for name, fn in impls.items():
        got = [np.asarray(getattr(r, "detach", lambda r=r: r)()) for r in fn()]
        errs = [float(np.max(np.abs(g - r)) / np.max(np.abs(r))) for g, r in zip(got, ref)]
        dtypes = sorted({str(g.dtype) for g in got})
        print(f"check {name:10s}: max relative error out {errs[0]:.1e}, dx {errs[1]:.1e}, dw {errs[2]:.1e}, "
              f"db {errs[3]:.1e}; dtypes {dtypes}")
        if max(errs) > 1e-4 or dtypes != ["float32"]:
            print(f"bench_conv: {name} does not match the hand-written layer", file=sys.stderr)
            return 1

    print(f"before: {load()}")
    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in impls} for clock in ("wall", "cpu")}
    for r in range(args.rounds):
        for name, fn in impls.items():
            wall, cpu = per_call(fn, args.min_time)
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
        last = [f"{n} {times['wall'][n][-1] * 1e3:.2f} ms (cpu {times['cpu'][n][-1] * 1e3:.2f})" for n in impls]
        print(f"round {r + 1}: " + "  ".join(last), flush=True)
    print(f"after: {load()}")
    ratios = {clock: {name: [a / b for a, b in zip(ts[name], ts["numpy"])] for name in impls if name != "numpy"}
              for clock, ts in times.items()}
    print(f"\nConv2d {C_IN}→{C_OUT}, {K}×{K}, padding {PAD}, batch {N}, {SIZE}×{SIZE}, float32, forward+backward, "
          f"{args.threads or 'default'} thread(s), median of {args.rounds} rounds:")
    for clock in ("wall", "cpu"):
        print(f"  {clock:4s} time: " + ", ".join(f"{n} {statistics.median(t) * 1e3:.2f} ms"
                                                for n, t in times[clock].items()))
        print(f"  {clock:4s} ratio to the hand-written NumPy layer, per round: " + "; ".join(
            f"{n} median {statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f})"
            for n, rs in ratios[clock].items()))

    if args.profile:
        profile(layer, x, w, b, dout, cr, np)
    if args.json:
        atomic_write(args.json, json.dumps({
            "benchmark": f"conv2d {C_IN}->{C_OUT} k{K} pad{PAD} batch {N} {SIZE}x{SIZE} float32 forward+backward",
            **{f"{n}_{clock}_ms": [t * 1e3 for t in ts] for clock in times for n, ts in times[clock].items()},
            **{f"{n}_{clock}_ratio_median": statistics.median(rs) for clock in ratios
               for n, rs in ratios[clock].items()},
            "threads": args.threads, "load_after": os.getloadavg(), "numpy": np.__version__,
            "torch": getattr(torch, "__version__", None), "chainrule": cr.__version__,
        }, indent=2))
    return 0


def profile(layer: Any, x: Any, w: Any, b: Any, dout: Any, cr: Any, np: Any, calls: int = 30) -> None:
    """Thread CPU time of each phase: the hand-written layer's steps, and chainrule's per gate
    (forward: the gate's NumPy function; backward: its rule), over ``calls`` calls."""
    from chainrule import autodiff
    from chainrule.gates import GATES

    phases: dict[str, float] = {}
    for _ in range(calls):
        numpy_conv(x, w, b, dout, phases)
    print(f"\nhand-written layer, thread CPU ms per call ({sum(phases.values()) / calls * 1e3:.2f} in all):")
    for name, t in phases.items():
        print(f"  {name:24s} {t / calls * 1e3:7.2f}")

    fwd: dict[str, float] = {}
    bwd: dict[str, float] = {}
    saved_fn = {name: gate.fn for name, gate in GATES.items()}
    saved_pullback = autodiff.pullback

    def timed_fn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                fwd[name] = fwd.get(name, 0.0) + time.thread_time() - t0
        return run

    def timed_pullback(gate: Any, *a: Any, **k: Any) -> Any:
        t0 = time.thread_time()
        try:
            return saved_pullback(gate, *a, **k)
        finally:
            bwd[gate.name] = bwd.get(gate.name, 0.0) + time.thread_time() - t0

    for name, gate in GATES.items():
        gate.fn = timed_fn(name, gate.fn)
    autodiff.pullback = timed_pullback
    try:
        t0 = time.thread_time()
        for _ in range(calls):
            chainrule_conv(layer, x, dout)
        total = time.thread_time() - t0
    finally:
        for name, gate in GATES.items():
            gate.fn = saved_fn[name]
        autodiff.pullback = saved_pullback
    gates = sorted(set(fwd) | set(bwd), key=lambda n: -(fwd.get(n, 0) + bwd.get(n, 0)))
    inside = sum(fwd.values()) + sum(bwd.values())
    print(f"chainrule, thread CPU ms per call ({total / calls * 1e3:.2f} in all, "
          f"{(total - inside) / calls * 1e3:.2f} outside the gates: recording, the backward walk, .grad):")
    for name in gates:
        f_ms, b_ms = fwd.get(name, 0) / calls * 1e3, bwd.get(name, 0) / calls * 1e3
        print(f"  {name:24s} forward {f_ms:7.2f}   backward {b_ms:7.2f}")


if __name__ == "__main__":
    sys.exit(main())
