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
