"""Shared test helpers: a seeded random generator and an independent central-difference gradient."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

# CI replays the same examples every run (a red CI always means a real change); locally each run
# explores new ones. CHAINRULE_HYPOTHESIS_PROFILE=explore overrides either way.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore")
settings.load_profile(os.environ.get("CHAINRULE_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "explore"))


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fused kernels compiled by the tests are cached in a folder of the test session, not in the
    user's cache (the random-expression tests make new ones every run); CHAINRULE_CACHE_DIR set
    by the caller wins."""
    if "CHAINRULE_CACHE_DIR" not in os.environ:
        os.environ["CHAINRULE_CACHE_DIR"] = str(tmp_path_factory.mktemp("chainrule-cache"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test (deterministic, independent of test order)."""
    return np.random.default_rng(20261127)


def _values(x: Any) -> np.ndarray:
    return np.asarray(getattr(x, "data", x), dtype=np.float64)


def numeric_grad(f: Callable[..., Any], args: list[np.ndarray], k: int, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``sum(f(*args))`` with respect to every element of ``args[k]``.

    Written here, independently of ``chainrule.check``, so the tests do not trust the code they test.
    """
    args = list(args)
    base = args[k] = np.array(args[k], dtype=np.float64)
    out = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        old = base[idx]
        base[idx] = old + eps
        fp = _values(f(*args)).sum()
        base[idx] = old - eps
        fm = _values(f(*args)).sum()
        base[idx] = old
        out[idx] = (fp - fm) / (2 * eps)
    return out


def gates_in_graph(t: Any) -> set[str]:
    """Names of the gates recorded in the graph behind tensor ``t`` (an iterative walk)."""
    seen: set[int] = set()
    names: set[str] = set()
    stack = [t]
    while stack:
        node = stack.pop()
        if id(node) in seen or not hasattr(node, "_gate"):
            continue
        seen.add(id(node))
        if node._gate is not None:
            names.add(node._gate.name)
            stack.extend(node._parents or ())
    return names


def naive_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0)) -> np.ndarray:
    """2-D convolution (cross-correlation) of NCHW ``x`` with ``w`` (F, C, kh, kw), one output element
    at a time: the reference a vectorised layer is checked against."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, ho, wo))
    for i in range(n):
        for o in range(f):
            for y in range(ho):
                for z in range(wo):
                    patch = xp[i, :, y * sh:y * sh + kh, z * sw:z * sw + kw]
                    out[i, o, y, z] = np.sum(patch * w[o]) + (0.0 if b is None else b[o])
    return out


def naive_pool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int] = (0, 0),
                 reduce: Callable[..., Any] = np.max, fill: float = -np.inf) -> np.ndarray:
    """Pooling of NCHW ``x`` window by window with ``reduce`` (np.max, np.mean), padding with ``fill``."""
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), fill)
    xp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w] = x
    ho, wo = (xp.shape[2] - kernel[0]) // stride[0] + 1, (xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, ho, wo))
    for y in range(ho):
        for z in range(wo):
            window = xp[:, :, y * stride[0]:y * stride[0] + kernel[0], z * stride[1]:z * stride[1] + kernel[1]]
            out[:, :, y, z] = reduce(window, axis=(2, 3))
    return out


def overfit(model: Any, X: Any, y: Any, lr: float, steps: int) -> Any:
    """Adam on one batch for ``steps`` steps (the loop every user writes); returns the last loss."""
    import chainrule as cr

    opt = cr.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = cr.nn.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss
