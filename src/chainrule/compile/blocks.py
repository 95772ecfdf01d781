"""Running an elementwise program block by block, on one core or several.

The tiled and fused back ends emit ``_block(inputs..., outputs..., buffers...)`` for one block of
the flattened arrays; :func:`driver_source` writes the ``_compiled`` that allocates the outputs and
runs it, and :func:`run` splits the arrays among threads when the call is large and more than one
CPU is available to this process (its CPU affinity, read at each call: ``taskset`` or a container's
CPU set is followed). Each thread gets a set of block buffers of its own.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .ir import lit

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

#: elementwise programs on large arrays run in blocks of this many elements (buffers stay in cache)
TILE = 65536
#: calls on at least this many elements run on several threads where several CPUs are available
PARALLEL_MIN_SIZE = 1 << 17
#: no range handed to a thread is shorter than this
_MIN_CHUNK = 1 << 16
#: ranges per thread: threads that finish early take more
_RANGES_PER_THREAD = 4

_POOL: tuple[int, int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def cpus() -> int:
    """How many CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _pool(workers: int) -> ThreadPoolExecutor:
    """At least ``workers`` worker threads (made anew in a forked child, whose parent's threads do
    not exist, and when more CPUs are available than there are workers)."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor

    pid = os.getpid()
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid or _POOL[1] < workers:
            if _POOL is not None and _POOL[0] == pid:
                _POOL[2].shutdown(wait=False)
            _POOL = (pid, workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chainrule-compile"))
        return _POOL[2]


class Buffers:
    """Block buffers of the given dtypes, one set per thread (made on first use)."""

    def __init__(self, dtypes: Sequence[Any], tile: int) -> None:
        self.dtypes = list(dtypes)
        self.tile = tile
        self.sets: list[tuple[np.ndarray, ...]] = []

    def get(self, n: int) -> list[tuple[np.ndarray, ...]]:
        while len(self.sets) < n:
            self.sets.append(tuple(np.empty(self.tile, dtype=dt) for dt in self.dtypes))
        return self.sets[:n]

    def __repr__(self) -> str:
        return f"{len(self.dtypes)} block buffers of {self.tile} elements per thread"


def _blocks(block: Callable[..., Any], flat: Sequence[np.ndarray], lo: int, hi: int, tile: int,
            bufs: tuple[np.ndarray, ...]) -> None:
    for s in range(lo, hi, tile):
        e = min(s + tile, hi)
        if e - s == tile:
            block(*[a[s:e] for a in flat], *bufs)
        else:
            block(*[a[s:e] for a in flat], *[b[:e - s] for b in bufs])


def split(size: int, n: int, align: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges covering ``range(size)``, their bounds multiples of ``align``."""
    step = -(-size // n)
    step = -(-step // align) * align
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def run(block: Callable[..., Any], flat: Sequence[np.ndarray], size: int, tile: int | None,
        buffers: Buffers | None, parallel: bool = False) -> None:
    """Run ``block`` over ``flat`` (the flattened inputs and outputs) in blocks of ``tile`` elements
    (None: one block per range), on as many threads as CPUs are available when ``parallel``: the
    arrays are cut into a few ranges per thread, which the threads (the caller's among them) take
    in turn, so a CPU busy with another process simply takes fewer of them."""
    n = max(1, min(cpus(), size // _MIN_CHUNK)) if parallel else 1
    sets = buffers.get(n) if buffers is not None else [()] * n
    if n == 1:
        _blocks(block, flat, 0, size, tile or size, sets[0])
        return
    ranges = split(size, min(_RANGES_PER_THREAD * n, max(n, size // _MIN_CHUNK)), tile or 64)
    turn = itertools.count()   # next() on a count is atomic: each range is taken by one thread

    def work(bufs: tuple[np.ndarray, ...]) -> None:
        while (k := next(turn)) < len(ranges):
            lo, hi = ranges[k]
            _blocks(block, flat, lo, hi, tile or hi - lo, bufs)

    pool = _pool(n - 1)
    jobs: list[Future[None]] = [pool.submit(work, sets[t]) for t in range(1, n)]
    work(sets[0])
    for j in jobs:
        j.result()


def driver_source(params: list[str], fills: list[Any], shape: tuple[int, ...], size: int, tile: int | None,
                  buf_dtypes: list[Any], env: dict[str, Any], block: str = "_block",
                  args: list[str] | None = None, parallel: bool = False) -> list[str]:
    """Source lines of ``_compiled(*params, _cr_out=None)``: allocate the outputs ``o0, o1, ...``
    (``np.full`` where ``fills`` gives a constant, else ``np.empty``; or take them from ``_cr_out``),
    then run ``block`` over blocks of ``tile`` elements of the flattened ``args`` (default: the params,
    then the outputs; a tile of None: the whole arrays, or one range per thread), with block buffers
    of ``buf_dtypes`` (put into ``env`` with the runner); returns the outputs."""
    nret = len(fills)
    # _cr_out: C-contiguous arrays of the results' shape and dtype that the caller gives (compile's
    # out=, checked there): the blocks write into them instead of new arrays
    lines = ["", "", f"def _compiled({', '.join([*params, '_cr_out=None'])}):", "    if _cr_out is None:"]
    for k, fill in enumerate(fills):
        alloc = f"np.empty({shape!r})" if fill is None else f"np.full({shape!r}, {lit(float(fill))})"
        lines.append(f"        o{k} = {alloc}")
    lines += ["    else:", f"        {', '.join(f'o{k}' for k in range(nret))}{',' if nret == 1 else ''} = _cr_out"]
    lines += [f"        o{k}.fill({lit(float(fill))})" for k, fill in enumerate(fills) if fill is not None]
    args = args if args is not None else [*params, *(f"o{k}" for k in range(nret))]
    flat = [f"{a}.reshape(-1)" for a in args]
    parallel = parallel and size >= PARALLEL_MIN_SIZE
    if tile is None and not buf_dtypes and not parallel:   # one call on the whole arrays
        lines.append(f"    {block}({', '.join(flat)})")
    else:
        env["_run"] = run
        env["_bufs"] = Buffers(buf_dtypes, tile or size) if buf_dtypes else None
        lines.append(f"    _run({block}, ({', '.join(flat)},), {size}, {tile}, _bufs, {parallel})")
    lines.append(f"    return ({', '.join(f'o{k}' for k in range(nret))}{',' if nret == 1 else ''})")
    return lines
