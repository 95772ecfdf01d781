"""autograd.scipy.stats.t in the shim: Student's t density as a formula with ``gammaln``, its distribution
function as SciPy's ``stdtr`` (differentiable in x and loc, as autograd's); other methods are SciPy's."""

import math
from typing import Any

import numpy as np
from scipy.special import gammaln, stdtr

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "t")


def logpdf(x: Any, df: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    y = (x - loc) / scale
    return (gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * math.pi) - np.log(scale)
            - (df + 1) / 2 * np.log1p(y**2 / df))


def pdf(x: Any, df: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return np.exp(logpdf(x, df, loc, scale))


def cdf(x: Any, df: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return stdtr(df, (x - loc) / scale)


def logcdf(x: Any, df: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return np.log(stdtr(df, (x - loc) / scale))
