"""Any scipy.stats name the shim's stats package does not list."""

from .._proxy import module_getattr

__getattr__ = module_getattr("scipy.stats")
