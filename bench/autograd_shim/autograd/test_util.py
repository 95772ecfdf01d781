"""autograd.test_util: ``check_grads`` written again against chainrule, every check recorded."""

from autograd_shim_core import check_equivalent, check_grads, combo_check, scalar_close

__all__ = ["check_equivalent", "check_grads", "combo_check", "scalar_close"]
