"""autograd.scipy.stats.poisson in the shim: the mass function as a formula with ``gammaln`` (−inf, mass 0,
off the integers, as SciPy), the distribution function as ``gammaincc(⌊k⌋ + 1, mu)`` (differentiable in mu,
as autograd's); other methods are SciPy's."""

from typing import Any

import numpy as np
from scipy.special import gammaincc, gammaln

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "poisson")


def logpmf(k: Any, mu: Any) -> Any:
    return np.where(np.equal(np.mod(k, 1), 0), k * np.log(mu) - mu - gammaln(k + 1), -np.inf)


def pmf(k: Any, mu: Any) -> Any:
    return np.exp(logpmf(k, mu))


def cdf(k: Any, mu: Any) -> Any:
    return np.where(np.less(k, 0), 0.0, gammaincc(np.floor(k) + 1, mu))
