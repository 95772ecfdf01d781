"""autograd.scipy.stats.t in the shim: scipy.stats.t's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "t")
