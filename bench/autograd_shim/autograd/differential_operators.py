"""autograd's differential operators: those chainrule can express, and those it cannot (unmappable)."""

from autograd_shim_core import (
    checkpoint,
    deriv,
    elementwise_grad,
    grad,
    grad_and_aux,
    holomorphic_grad,
    make_jvp,
    make_vjp,
    tensor_jacobian_product,
    unmappable_operator,
    value_and_grad,
)

vector_jacobian_product = tensor_jacobian_product
jacobian = unmappable_operator("jacobian", "full Jacobians (chainrule gives gradients and VJPs)")
hessian = unmappable_operator("hessian", "Hessians are Jacobians of gradients (no cr.jacobian)")
make_hvp = unmappable_operator("make_hvp", "Hessian-vector products are forward-over-reverse mode")
hessian_tensor_product = unmappable_operator("hessian_tensor_product", "built on autograd's jacobian")
hessian_vector_product = hessian_tensor_product
make_ggnvp = unmappable_operator("make_ggnvp", "Gauss-Newton products need forward mode")
multigrad_dict = unmappable_operator("multigrad_dict", "gradients returned as a dict (containers)")
grad_named = unmappable_operator("grad_named", "argument by name (chainrule takes argnums)")

__all__ = [
    "checkpoint", "deriv", "elementwise_grad", "grad", "grad_and_aux", "grad_named", "hessian",
    "hessian_tensor_product", "hessian_vector_product", "holomorphic_grad", "jacobian", "make_ggnvp",
    "make_hvp", "make_jvp", "make_vjp", "multigrad_dict", "tensor_jacobian_product", "value_and_grad",
    "vector_jacobian_product",
]
