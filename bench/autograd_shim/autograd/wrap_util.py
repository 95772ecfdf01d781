"""autograd.wrap_util: ``unary_to_nary`` and ``get_name``."""

from typing import Any

from autograd_shim_core import unary_to_nary


def get_name(f: Any) -> str:
    return getattr(f, "__name__", "[unknown name]")


__all__ = ["get_name", "unary_to_nary"]
