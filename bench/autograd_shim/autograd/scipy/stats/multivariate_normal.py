"""autograd.scipy.stats.multivariate_normal in the shim: scipy.stats.multivariate_normal's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "multivariate_normal")
