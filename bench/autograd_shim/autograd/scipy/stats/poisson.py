"""autograd.scipy.stats.poisson in the shim: scipy.stats.poisson's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "poisson")
