"""The array-namespace seam: every array computation in the engine goes through ``xp``.

NumPy is the default. Another Array-API-style module (CuPy, say) can be plugged in with
:func:`set_array_namespace`; the gate table is re-bound to it, so no engine code changes.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import numpy

xp: Any = numpy

#: The gate functions bound to ``xp`` by name (``array_ops.exp``, ``array_ops.sum``, ...):
#: the namespace the fast (non-differentiable) backward pass evaluates the gate rules in.
array_ops = SimpleNamespace()


def set_array_namespace(module: ModuleType) -> None:
    """Use ``module`` (NumPy-compatible: exp, sum, where, matmul, ...) for all array math."""
    global xp
    xp = module
    from . import gates

    gates.bind(module, array_ops)


def get_array_namespace() -> Any:
    """The array module in use (NumPy unless :func:`set_array_namespace` changed it)."""
    return xp
