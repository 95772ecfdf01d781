"""autograd.scipy.stats.beta in the shim: the density as a formula with ``betaln`` (0 < x < 1), the
distribution function as ``betainc(a, b, x)`` (differentiable in x, as autograd's); other methods are SciPy's."""

from typing import Any

import numpy as np
from scipy.special import betainc, betaln

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "beta")


def logpdf(x: Any, a: Any, b: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    y = (x - loc) / scale
    return (a - 1) * np.log(y) + (b - 1) * np.log1p(-y) - betaln(a, b) - np.log(scale)


def pdf(x: Any, a: Any, b: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return np.exp(logpdf(x, a, b, loc, scale))


def cdf(x: Any, a: Any, b: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return betainc(a, b, (x - loc) / scale)
