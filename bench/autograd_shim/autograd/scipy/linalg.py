"""autograd.scipy.linalg in the shim: scipy.linalg's own functions."""

from ._proxy import module_getattr

__getattr__ = module_getattr("scipy.linalg")
