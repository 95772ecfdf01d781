"""autograd.builtins: its container types are the plain ones here (gradients with respect to containers
are unmappable), and ``isinstance``/``type`` look at the value under a chainrule tensor, as autograd's do."""

import builtins as _builtins
from typing import Any

from autograd_shim_core import getval

dict = _builtins.dict
list = _builtins.list
tuple = _builtins.tuple


def isinstance(x: Any, t: Any) -> bool:
    return _builtins.isinstance(getval(x), t)


def type(x: Any) -> Any:
    return _builtins.type(getval(x))


__all__ = ["dict", "isinstance", "list", "tuple", "type"]
