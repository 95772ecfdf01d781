"""autograd.numpy.linalg in the shim: NumPy's linalg plus autograd's helpers ``T`` and ``_dot``."""

from functools import partial
from typing import Any

import numpy as _np
import numpy.linalg as _la
from numpy.linalg import *  # noqa: F403 - the whole of numpy.linalg


def T(x: Any) -> Any:
    """Swap the last two axes (autograd's batched transpose)."""
    return _np.swapaxes(x, -1, -2)


_dot = partial(_np.einsum, "...ij,...jk->...ik")  # autograd's batched matrix product


def __getattr__(name: str) -> Any:
    return getattr(_la, name)
