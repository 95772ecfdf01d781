"""Checks of gradients against independent answers: numerical differences (``gradcheck``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .autodiff import as_float_array, value_and_grad
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central differences (the message says where)."""


def _values(x: Any) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float64)


def numerical_grad(f: Callable[..., Any], args: list[np.ndarray], k: int, eps: float) -> np.ndarray:
    """Central differences of sum(f(*args)) with respect to every element of ``args[k]``."""
    base = args[k]
    g = np.zeros_like(base)
    with no_grad():
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fp = _values(f(*args[:k], plus, *args[k + 1:])).sum()
            fm = _values(f(*args[:k], minus, *args[k + 1:])).sum()
            g[idx] = (fp - fm) / (2 * eps)
    return g


def gradcheck(
    f: Callable[..., Any], *args: Any, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
) -> bool:
    """Compare chainrule's gradient of ``sum(f(*args))`` with central differences, for every argument.

    Returns True, or raises :class:`GradcheckError` naming the argument, the element index, the
    analytic and numerical values and their relative error. Use float64 inputs: float32 rounding
    swamps the differences.
    """
    arrays = [as_float_array(a, f"argument {i}").astype(np.float64) for i, a in enumerate(args)]
    if not arrays:
        raise TypeError("gradcheck needs at least one argument to differentiate")
    _, analytic = value_and_grad(f, argnums=tuple(range(len(arrays))))(*arrays)
    names = _param_names(f)
    for k, (a, ga) in enumerate(zip(arrays, analytic)):
        gn = numerical_grad(f, arrays, k, eps)
        ga = _values(ga).reshape(a.shape)
        bad = ~np.isclose(ga, gn, rtol=rtol, atol=atol, equal_nan=False)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            an, nu = float(ga[idx]), float(gn[idx])
            rel = abs(an - nu) / max(abs(nu), abs(an), 1e-300)
            where = f"[{', '.join(map(str, idx))}]" if idx else ""
            label = f"argument {k}" + (f" ({names[k]!r})" if k < len(names) else "")
            raise GradcheckError(
                f"gradient of {label}{where} is wrong: analytic {an:.10g}, numerical {nu:.10g}, "
                f"relative error {rel:.3g} (atol={atol}, rtol={rtol}); "
                f"{int(bad.sum())} of {bad.size} elements disagree"
            )
    return True


def _param_names(f: Callable[..., Any]) -> tuple[str, ...]:
    code = getattr(f, "__code__", None) or getattr(getattr(f, "__wrapped__", None), "__code__", None)
    return tuple(code.co_varnames[: code.co_argcount]) if code else ()
