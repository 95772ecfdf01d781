"""autograd.scipy.stats in the shim: the distributions autograd differentiates (norm, t, chi2, beta, gamma,
poisson, dirichlet, multivariate_normal), their densities and distribution functions written as formulas
with NumPy calls and SciPy's special functions on the support (which dispatch to chainrule on tensors),
computing what autograd's wrappers compute (SciPy's own values, with autograd's gradients). Their other
methods (``rvs``, ...) and any other scipy.stats name are SciPy's own."""

from . import beta, chi2, dirichlet, gamma, multivariate_normal, norm, poisson, t
from ._all import __getattr__  # noqa: F401 - any other scipy.stats name

__all__ = ["beta", "chi2", "dirichlet", "gamma", "multivariate_normal", "norm", "poisson", "t"]
