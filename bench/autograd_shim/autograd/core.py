"""autograd.core: ``make_vjp(fun, x)`` on chainrule; the rest of autograd's internals are unmappable."""

from typing import Any

from autograd_shim_core import make_vjp_unary as make_vjp
from autograd_shim_core import primitive

from .extend import VSpace, defjvp, defvjp, vspace

primitive_vjps: dict[Any, Any] = {}  # autograd's registry of VJPs: empty here (chainrule keeps its own)
primitive_jvps: dict[Any, Any] = {}

__all__ = ["VSpace", "defjvp", "defvjp", "make_vjp", "primitive", "primitive_jvps", "primitive_vjps", "vspace"]
