"""autograd.scipy.misc in the shim: its ``logsumexp`` is scipy.special's."""

from ._proxy import module_getattr

__getattr__ = module_getattr("scipy.special")
