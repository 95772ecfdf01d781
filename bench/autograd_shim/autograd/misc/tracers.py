"""autograd.misc.tracers: ``const_graph`` replays a cached autograd graph (unmappable)."""

from autograd_shim_core import unmappable_operator

const_graph = unmappable_operator("const_graph", "replaying a cached autograd trace")

__all__ = ["const_graph"]
