"""autograd.scipy.stats.norm in the shim: the normal density and distribution function as formulas
(``ndtr``/``log_ndtr`` are SciPy's ufuncs, chainrule's gates on tensors); other methods are SciPy's."""

import math
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "norm")

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def logpdf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    z = (x - loc) / scale
    return -0.5 * z**2 - np.log(scale) - _LOG_SQRT_2PI


def pdf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return np.exp(logpdf(x, loc, scale))


def cdf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return ndtr((x - loc) / scale)


def logcdf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return log_ndtr((x - loc) / scale)


def sf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return ndtr(-(x - loc) / scale)


def logsf(x: Any, loc: Any = 0.0, scale: Any = 1.0) -> Any:
    return log_ndtr(-(x - loc) / scale)
