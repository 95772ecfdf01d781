"""autograd.misc: ``flatten`` (of containers) and ``const_graph`` (graph caching) are unmappable."""

from .flatten import flatten
from .tracers import const_graph

__all__ = ["const_graph", "flatten"]
