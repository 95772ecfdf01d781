"""autograd.scipy.integrate in the shim: scipy.integrate's own functions."""

from ._proxy import module_getattr

__getattr__ = module_getattr("scipy.integrate")
