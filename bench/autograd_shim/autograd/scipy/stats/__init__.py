"""autograd.scipy.stats in the shim: scipy.stats's own distributions."""

from . import beta, chi2, dirichlet, gamma, multivariate_normal, norm, poisson, t
from ._all import __getattr__  # noqa: F401 - any other scipy.stats name

__all__ = ["beta", "chi2", "dirichlet", "gamma", "multivariate_normal", "norm", "poisson", "t"]
