"""autograd.scipy.stats.dirichlet in the shim: the density as a formula with ``gammaln``, after SciPy's own
checks of its arguments (x on the simplex along its first axis); other methods are SciPy's."""

from typing import Any

import numpy as np
from scipy.special import gammaln

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "dirichlet")


def _values(x: Any) -> Any:
    return np.asarray(getattr(x, "data", x))


def _check(x: Any, alpha: Any) -> None:
    """SciPy's checks, on the values: one clear ValueError, as scipy.stats.dirichlet raises."""
    xv, av = _values(x), _values(alpha)
    if av.ndim != 1 or np.any(av <= 0):
        raise ValueError("All parameters must be greater than 0 (and alpha one-dimensional)")
    if xv.shape[0] != av.shape[0]:
        raise ValueError(f"Vector 'x' must have either the same number of entries as, or one entry fewer than, "
                         f"parameter vector 'a', but alpha.shape = {av.shape} and x.shape = {xv.shape}.")
    if np.any(xv < 0) or np.any(xv > 1):
        raise ValueError("Each entry in 'x' must be in [0, 1]")
    if np.any(np.abs(np.sum(xv, 0) - 1.0) > 10e-10):
        raise ValueError("The input vector 'x' must lie within the normal simplex. but np.sum(x, 0) = "
                         f"{np.sum(xv, 0)}.")


def logpdf(x: Any, alpha: Any) -> Any:
    _check(x, alpha)
    log_b = np.sum(gammaln(alpha)) - gammaln(np.sum(alpha))
    return np.sum((np.log(x).T * (alpha - 1)).T, 0) - log_b


def pdf(x: Any, alpha: Any) -> Any:
    return np.exp(logpdf(x, alpha))
