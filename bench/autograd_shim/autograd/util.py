"""autograd.util: the deprecated ``quick_grad_check``, as autograd defines it (a first-order reverse check)."""

from typing import Any

from autograd_shim_core import check_grads


def quick_grad_check(fun: Any, arg0: Any, extra_args: Any = (), kwargs: Any = None, **_: Any) -> None:
    kwargs = kwargs or {}
    check_grads(lambda x: fun(x, *extra_args, **kwargs), modes=["rev"], order=1)(arg0)


__all__ = ["quick_grad_check"]
