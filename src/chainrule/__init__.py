"""chainrule: backpropagation you can see, check and run fast.

Write a function with NumPy (``np.exp``, ``x * y``, ...) or chainrule's own functions; chainrule
records the computational graph, runs the chain rule backwards, and gives the gradients.

>>> import numpy as np, chainrule as cr
>>> cr.grad(lambda x, y, z: (x + y) * z, argnums=(0, 1, 2))(1.0, 3.0, 2.0)
(array(2.), array(2.), array(4.))
"""

from __future__ import annotations

from . import backend
from .autodiff import AnomalyError, GraphFreedError, detect_anomaly, grad, value_and_grad, vjp
from .check import GradcheckError, gradcheck
from .functions import (
    abs, absolute, add, amax, amin, broadcast_to, clip, concatenate, cos, divide, dot, equal, exp,
    expand_dims, greater, greater_equal, less, less_equal, log, log_softmax, logsumexp, matmul, max,
    maximum, mean, min, minimum, multiply, negative, not_equal, power, reciprocal, relu, reshape,
    scatter, sigmoid, sign, sin, softmax, sqrt, square, squeeze, stack, subtract, sum, swapaxes, tan,
    tanh, transpose, where,
)
from .gates import GATES, Gate
from .graph import Equation, Graph, Node, trace
from .tensor import ShapeError, Tensor, enable_grad, expanded, no_grad, tensor

backend.set_array_namespace(backend.get_array_namespace())

__version__ = "0.1.0"

__all__ = [
    "AnomalyError", "Equation", "GATES", "Gate", "Graph", "Node", "trace", "GradcheckError", "GraphFreedError", "ShapeError", "Tensor",
    "abs", "absolute", "add", "amax", "amin", "broadcast_to", "clip", "concatenate", "cos", "detect_anomaly",
    "divide", "dot", "enable_grad", "equal", "exp", "expand_dims", "expanded", "grad", "gradcheck", "greater",
    "greater_equal", "less", "less_equal", "log", "log_softmax", "logsumexp", "matmul", "max", "maximum",
    "mean", "min", "minimum", "multiply", "negative", "no_grad", "not_equal", "power", "reciprocal", "relu",
    "reshape", "scatter", "sigmoid", "sign", "sin", "softmax", "sqrt", "square", "squeeze", "stack",
    "subtract", "sum", "swapaxes", "tan", "tanh", "tensor", "transpose", "value_and_grad", "vjp", "where",
]
