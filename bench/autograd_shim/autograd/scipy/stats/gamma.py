"""autograd.scipy.stats.gamma in the shim: scipy.stats.gamma's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "gamma")
