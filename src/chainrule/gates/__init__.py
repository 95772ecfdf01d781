"""The gate table: every primitive operation, declared once, in the family module it belongs to.

:mod:`.core` defines the :class:`Gate` entry (forward, derivative rule, calling convention, shape
rule, printing), the registry and the one chain-rule step (:func:`pullback`); the families are
:mod:`.elementwise`, :mod:`.reductions`, :mod:`.shape`, :mod:`.linalg` and :mod:`.special` (SciPy's
special functions, SciPy imported only when one runs). ``GATES`` maps each
gate's name to its entry. Adding an op means adding one entry (and a row in ``tests/test_gates.py``).
"""

from . import elementwise, linalg, reductions, shape, special  # noqa: F401 - special: SciPy's special functions
from .core import (
    ELEMENTWISE,
    FAN_OUT,
    GATES,
    LINALG,
    NONDIFF,
    REDUCTION,
    SHAPE,
    Gate,
    apply_in,
    bind,
    bind_library,
    constant,
    count,
    index_into,
    keepdims_shape,
    local_gradient,
    mask,
    normalize_axis,
    number,
    numpy_call,
    on_register,
    pullback,
    pushforward,
    reduced_shape,
    register,
    resolve,
    shape_of,
    split_call,
    unbroadcast,
)
from .shape import _scatter, normalize_pad_width

__all__ = [
    "ELEMENTWISE", "FAN_OUT", "GATES", "LINALG", "NONDIFF", "REDUCTION", "SHAPE", "Gate", "bind", "count",
    "bind_library", "constant", "index_into", "mask", "numpy_call",
    "keepdims_shape", "local_gradient", "normalize_axis", "number", "on_register", "pullback", "pushforward",
    "apply_in", "reduced_shape", "register", "resolve", "shape_of", "split_call", "unbroadcast", "elementwise",
    "reductions", "shape", "linalg", "normalize_pad_width", "_scatter",
]
