"""autograd.scipy.stats.gamma in the shim: the density as a formula with ``gammaln`` (x > loc), the
distribution function as ``gammainc(a, x)`` (differentiable in x, as autograd's); other methods are SciPy's."""

from typing import Any

import numpy as np
from scipy.special import gammainc, gammaln

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "gamma")


def logpdf(x: Any, a: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    y = (x - loc) / scale
    return (a - 1) * np.log(y) - y - gammaln(a) - np.log(scale)


def pdf(x: Any, a: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return np.exp(logpdf(x, a, loc, scale))


def cdf(x: Any, a: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return gammainc(a, (x - loc) / scale)
