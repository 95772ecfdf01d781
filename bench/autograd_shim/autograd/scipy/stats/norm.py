"""autograd.scipy.stats.norm in the shim: scipy.stats.norm's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "norm")
