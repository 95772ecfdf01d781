"""autograd.scipy.stats.chi2 in the shim: scipy.stats.chi2's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "chi2")
