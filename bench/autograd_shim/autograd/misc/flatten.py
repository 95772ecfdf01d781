"""autograd.misc.flatten: flattening nested containers of parameters is autograd's (unmappable)."""

from autograd_shim_core import unmappable_operator

flatten = unmappable_operator("flatten", "flattening containers (lists, tuples, dicts) of parameters")(None)

__all__ = ["flatten"]
