"""Engine switches (no_grad, enable_grad, detect_anomaly, the nesting of grad) hold for one thread or
one asyncio task only (issue 12, item 6)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

import chainrule as cr


def test_value_and_grad_in_four_threads_gives_arrays_every_time() -> None:
    f = cr.value_and_grad(lambda x, y: (x * y + cr.sin(x)).sum(), argnums=(0, 1))
    x, y = np.linspace(0.1, 1.0, 5), np.linspace(1.0, 2.0, 5)
    expected = f(x, y)
    bad: list[str] = []
    start = threading.Barrier(5)

    def work() -> None:
        start.wait()
        for _ in range(1500):
            out, (gx, gy) = f(x, y)
            if not (type(gx) is np.ndarray and type(gy) is np.ndarray and np.allclose(gx, expected[1][0])):
                bad.append(repr(type(gx)))
                return

    def block_grad() -> None:  # a fifth thread switching recording off and on all the time
        start.wait()
        for _ in range(3000):
            with cr.no_grad():
                cr.tensor([1.0], requires_grad=True) * 2

    threads = [threading.Thread(target=work) for _ in range(4)] + [threading.Thread(target=block_grad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:3]


def test_no_grad_in_one_thread_leaves_another_threads_backward_alone() -> None:
    inside = threading.Event()
    leave = threading.Event()

    def hold_no_grad() -> None:
        with cr.no_grad():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=hold_no_grad)
    t.start()
    inside.wait(5)
    try:
        x = cr.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        np.testing.assert_array_equal(x.grad, [2.0, 4.0])
        assert cr.tensor([1.0], requires_grad=True).__mul__(2).requires_grad
    finally:
        leave.set()
        t.join()


def test_anomaly_mode_is_per_thread() -> None:
    seen: dict[str, bool] = {}

    def other() -> None:
        with np.errstate(all="ignore"):
            cr.log(cr.tensor([-1.0], requires_grad=True))  # no AnomalyError here: the mode is not on
        seen["other"] = True

    with cr.detect_anomaly():
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == {"other": True}


def test_switches_are_per_asyncio_task() -> None:
    async def recording() -> bool:
        await asyncio.sleep(0.01)
        return (cr.tensor([1.0], requires_grad=True) * 2).requires_grad

    async def not_recording() -> bool:
        with cr.no_grad():
            await asyncio.sleep(0.02)
            return (cr.tensor([1.0], requires_grad=True) * 2).requires_grad

    async def main() -> list[bool]:
        return await asyncio.gather(not_recording(), recording(), recording())

    assert asyncio.run(main()) == [False, True, True]
