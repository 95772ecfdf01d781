"""autograd.numpy in the shim: plain NumPy, so chainrule sees every call through its tensor dispatch
(``__array_ufunc__`` / ``__array_function__``), plus the names autograd's numpy adds that its tests use."""

import importlib
import sys
from typing import Any

import numpy as _np
import numpy.fft as fft
import numpy.random as random
from numpy import *  # noqa: F403 - the whole of NumPy, as autograd.numpy re-exports it

# after `import *`, which binds NumPy's own linalg (a plain `from . import linalg` would then keep it)
linalg = importlib.import_module(__name__ + ".linalg")

# `import autograd.numpy.random as npr` and `autograd.numpy.fft` are NumPy's own modules
sys.modules[__name__ + ".random"] = random
sys.modules[__name__ + ".fft"] = fft


def make_diagonal(D: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    """autograd's batched diagonal matrix from the last axis of ``D`` (only offset 0, axes -1/-2, as in
    autograd), written as a NumPy user would: ``D[..., None] * eye``."""
    if not (offset == 0 and axis1 == -1 and axis2 == -2):
        raise NotImplementedError("make_diagonal only supports offset=0, axis1=-1, axis2=-2 (as autograd's)")
    return D[..., None] * _np.eye(_np.shape(D)[-1])


def __getattr__(name: str) -> Any:
    return getattr(_np, name)  # names `import *` leaves out (np.__version__, ...)


def array(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """autograd.numpy.array is autograd's own wrapper, which stacks lists holding traced values; the
    shim's is chainrule's (``cr.array``) for lists holding tensors, NumPy's for everything else."""
    import chainrule

    if isinstance(obj, (list, tuple)) and _holds_tensor(obj):
        return chainrule.array(obj, *args[:1], **{k: v for k, v in kwargs.items() if k == "dtype"})
    return _np.array(obj, *args, **kwargs)


def _holds_tensor(seq: Any) -> bool:
    import chainrule

    stack = [seq]
    while stack:
        for v in stack.pop():
            if isinstance(v, chainrule.Tensor):
                return True
            if isinstance(v, (list, tuple)):
                stack.append(v)
    return False
