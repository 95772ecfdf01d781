"""autograd.extend: custom primitives run on plain values; differentiating one is unmappable (this shim
does not map autograd's defvjp onto cr.gate), and autograd's vector-space internals are unmappable."""

from typing import Any

from autograd_shim_core import Primitive, Unmappable, engine, notrace_primitive, primitive, register

defvjp = register("defvjp")
defjvp = register("defjvp")
defvjp_argnum = register("defvjp_argnum")
defjvp_argnum = register("defjvp_argnum")
defvjp_argnums = register("defvjp_argnums")
defjvp_argnums = register("defjvp_argnums")
def_linear = register("def_linear")
register_notrace = register("register_notrace")


def vspace(value: Any) -> Any:
    raise Unmappable("autograd.core.vspace: autograd's vector-space internals")


class VSpace:
    """autograd's vector spaces: internals with no chainrule counterpart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise Unmappable("autograd.extend.VSpace: autograd's vector-space internals")


class SparseObject(VSpace):
    """autograd's sparse gradient objects: internals with no chainrule counterpart."""


class VJPNode(VSpace):
    """autograd's graph nodes: internals with no chainrule counterpart."""


JVPNode = VJPNode


def __getattr__(name: str) -> Any:
    if name == "Box":  # a traced value is a chainrule Tensor (imported on first use)
        return engine().Tensor
    raise AttributeError(f"module 'autograd.extend' (shim) has no attribute {name!r}")


__all__ = [
    "JVPNode", "Primitive", "SparseObject", "VJPNode", "VSpace", "def_linear", "defjvp", "defjvp_argnum",
    "defjvp_argnums", "defvjp", "defvjp_argnum", "defvjp_argnums", "notrace_primitive", "primitive",
    "register_notrace", "vspace",
]
