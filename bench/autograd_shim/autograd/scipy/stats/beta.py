"""autograd.scipy.stats.beta in the shim: scipy.stats.beta's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "beta")
