"""chainrule: backpropagation you can see, check and run fast.

Write a function with NumPy (``np.exp``, ``x * y``, ...) or chainrule's own functions; chainrule
records the computational graph, runs the chain rule backwards, and gives the gradients.

>>> import numpy as np, chainrule as cr
>>> cr.grad(lambda x, y, z: (x + y) * z, argnums=(0, 1, 2))(1.0, 3.0, 2.0)
(array(2.), array(2.), array(4.))
"""

from __future__ import annotations

from . import backend
from . import functions as _functions
from .autodiff import AnomalyError, ArgumentChangedError, GraphFreedError, detect_anomaly, grad, value_and_grad, vjp
from .backend import MixedLibrariesError, UnsupportedError
from .check import BackwardReport, GradcheckError, check_backward, gradcheck
from .compile import Compiled, compile  # the package chainrule.compile; the name is the function
from .custom import gate
from .forward import hessian, hvp, jacobian, jvp
from .functions import *  # noqa: F403 - every NumPy-named function (cr.exp, cr.var, cr.einsum, ...)
from .gates import GATES, Gate
from .graph import BackwardStep, Equation, Graph, LocalGrad, Node, trace
from .render import GraphTooLargeError, RenderError
from .tensor import LibraryTensor, ShapeError, Tensor, array, enable_grad, expanded, no_grad, tensor

backend.set_array_namespace(backend.get_array_namespace())

__version__ = "0.1.0"

__all__ = [
    "BackwardReport", "Compiled", "check_backward", "compile",
    "AnomalyError", "ArgumentChangedError", "Equation", "GATES", "Gate", "Graph", "Node", "trace", "GradcheckError",
    "GraphFreedError",
    "ShapeError", "Tensor", "array", "detect_anomaly", "enable_grad", "expanded", "grad", "gradcheck", "no_grad",
    "tensor", "value_and_grad", "vjp", "jvp", "jacobian", "hessian", "hvp", "gate", "nn", "optim", "data",  # noqa: F405 - nn, optim, data load lazily
    "BackwardStep", "LocalGrad", "GraphTooLargeError", "RenderError", "LibraryTensor", "MixedLibrariesError",
    "UnsupportedError",
    *_functions.__all__,
]
__all__ += ["special", "signal"]  # noqa: F405 - SciPy's special functions and convolution, loaded lazily

# submodules loaded on first use (``cr.nn``, ``cr.optim``, ``cr.data``, ``cr.special``, ``cr.signal``), so
# ``import chainrule`` stays fast (and never imports SciPy: cr.special's functions import it when they run)
_LAZY_SUBMODULES = {"nn", "optim", "data", "special", "signal"}


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'chainrule' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)
