"""autograd.scipy.special in the shim: scipy.special's own functions."""

from ._proxy import module_getattr

__getattr__ = module_getattr("scipy.special")
