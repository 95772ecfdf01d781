"""autograd.scipy.stats.chi2 in the shim: the density as a formula with ``gammaln`` (x > 0), the distribution
function as ``gammainc(df/2, x/2)`` (differentiable in x, as autograd's); other methods are SciPy's."""

import math
from typing import Any

import numpy as np
from scipy.special import gammainc, gammaln

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "chi2")


def logpdf(x: Any, df: Any) -> Any:
    return (df / 2 - 1) * np.log(x) - x / 2 - gammaln(df / 2) - df / 2 * math.log(2)


def pdf(x: Any, df: Any) -> Any:
    return np.exp(logpdf(x, df))


def cdf(x: Any, df: Any) -> Any:
    return gammainc(df / 2, x / 2)
