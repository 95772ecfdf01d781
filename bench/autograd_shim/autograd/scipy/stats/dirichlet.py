"""autograd.scipy.stats.dirichlet in the shim: scipy.stats.dirichlet's own methods."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats", "dirichlet")
