"""``cr.special``: SciPy's special functions, differentiable (``cr.special.erf(x)``, ``cr.special.jn(2, x)``).

Each function here is a gate of :mod:`chainrule.gates.special` called with SciPy's own convention, plus
two composites SciPy has as Python functions: :func:`logsumexp` (with SciPy's ``b=`` and
``return_sign=``) and :func:`multigammaln`. SciPy's ufuncs called on tensors reach the same
functions through NumPy's dispatch (``scipy.special.erf(t)``): :func:`scipy_ufunc` finds them by
identity, without importing SciPy (it only looks at an already imported ``scipy.special``).

Orders and shape parameters (jn's ``n``, iv's ``v``, betainc's ``a`` and ``b``) are constants: a
tensor that requires grad there raises a "no gradient rule" TypeError naming the argument, as soon as
the function is called.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import functions as F
from .gates import GATES, split_call
from .gates.special import SCIPY_NAMES, constant_inputs
from .tensor import Tensor, apply, apply1, current

__all__ = ["beta", "betainc", "betaln", "digamma", "erf", "erfc", "erfcinv", "erfinv", "expit", "gamma", "gammainc",
           "gammaincc", "gammaln", "gammasgn", "i0", "i1", "iv", "ive", "j0", "j1", "jn", "jv", "log_ndtr", "logit",
           "logsumexp", "multigammaln", "ndtr", "polygamma", "psi", "rgamma", "stdtr", "y0", "y1", "yn"]


def _function(name: str) -> Callable[..., Any]:
    """The public function of special gate ``name``, called as ``scipy.special.<name>`` is."""
    gate = GATES[name]
    who = f"scipy.special.{SCIPY_NAMES[name]}"
    constants = constant_inputs(gate)
    if gate.arity == 1:
        def fn(x: Any, **kwargs: Any) -> Tensor:
            if kwargs:
                split_call(gate, (x,), kwargs, who)  # neutral NumPy arguments pass, others raise naming them
            return apply1(gate, x)
    else:
        def fn(*args: Any, **kwargs: Any) -> Tensor:
            inputs, _ = split_call(gate, args, kwargs, who)
            for i in constants:
                if isinstance(inputs[i], Tensor) and inputs[i].requires_grad and current().grad_enabled:
                    gate.local[i]()  # raises: this input takes no gradient
            return apply(gate, *inputs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{who}, differentiable.\n\nGradient: {gate.explain}."
    return fn


erf, erfc, erfinv, erfcinv, ndtr, log_ndtr = (_function(n) for n in ("erf", "erfc", "erfinv", "erfcinv", "ndtr",
                                                                     "log_ndtr"))
gammaln, digamma, polygamma, gamma, rgamma, gammasgn = (_function(n) for n in ("gammaln", "digamma", "polygamma",
                                                                               "gamma", "rgamma", "gammasgn"))
psi = digamma
expit, logit = _function("expit"), _function("logit")
j0, j1, y0, y1, jn, yn, i0, i1, iv, ive = (_function(n) for n in ("j0", "j1", "y0", "y1", "jn", "yn", "i0", "i1",
                                                                   "iv", "ive"))
jv = jn
beta, betaln, betainc, gammainc, gammaincc, stdtr = (_function(n) for n in ("beta", "betaln", "betainc", "gammainc",
                                                                           "gammaincc", "stdtr"))


def logsumexp(a: Any, axis: Any = None, b: Any = None, keepdims: bool = False, return_sign: bool = False) -> Any:
    """``scipy.special.logsumexp``: ln Σ b·eᵃ over ``axis``, computed stably (shifted by the largest ``a``).

    Without ``b`` it is chainrule's logsumexp gate. With ``b`` (weights, broadcast against ``a``, any
    sign) the gradient is b·e^(a − out) for ``a`` and e^(a − out) for ``b``; a negative sum gives NaN as
    in SciPy unless ``return_sign=True``, which returns ``(ln|Σ|, sign)`` (the sign a plain array).
    """
    if b is None and not return_sign:
        return F.logsumexp(a, axis=axis, keepdims=keepdims)
    av = F._values(a)
    bv = np.asarray(1.0) if b is None else F._values(b)
    shape = np.broadcast_shapes(np.shape(av), np.shape(bv))
    if b is not None and np.shape(bv) != shape:
        b = F.broadcast_to(b, shape)
    if np.shape(av) != shape:
        a = F.broadcast_to(a, shape)
        av = np.broadcast_to(av, shape)
    # the shift: the largest a where b is not zero (a constant: the result does not depend on it)
    with np.errstate(invalid="ignore"):
        picked = av if b is None else np.where(np.broadcast_to(bv, shape) != 0, av, -np.inf)
        shift = np.max(picked, axis=axis, keepdims=True) if picked.size else np.zeros((1,) * len(shape))
    shift = np.where(np.isfinite(shift), shift, 0.0)
    exponent = F.subtract(a, shift)
    if b is None:
        terms = F.exp(exponent)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            overflow = ~np.isfinite(np.exp(av - shift)) & (np.broadcast_to(bv, shape) == 0)
        if overflow.any():  # a zero weight far above the rest: its term is 0 (as in SciPy), not 0·inf
            if isinstance(b, Tensor) and b.requires_grad and current().grad_enabled:
                raise FloatingPointError("logsumexp: the gradient with respect to a zero weight b overflows: "
                                         "e^(a − out) is beyond the float range there")
            exponent = F.where(overflow, 0.0, exponent)
        terms = F.multiply(b, F.exp(exponent))
        if overflow.any():
            terms = F.where(overflow, 0.0, terms)
    total = F.sum(terms, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = F.add(F.log(F.abs(total) if return_sign else total), shift)
        sign = np.sign(F._values(total))
    if not keepdims:
        reduced = np.sum(np.empty(shape, dtype=np.int8), axis=axis).shape
        out = F.reshape(out, reduced)
        sign = np.reshape(sign, reduced)
    return (out, sign) if return_sign else out


def multigammaln(a: Any, d: int) -> Tensor:
    """``scipy.special.multigammaln``: ln Γ_d(a) = d(d−1)/4·ln π + Σⱼ gammaln(a − j/2), j = 0..d−1;
    differentiable in ``a`` (``d``, a positive integer, is a constant)."""
    if not (isinstance(d, (int, np.integer)) or (np.ndim(d) == 0 and float(d) == int(d))) or int(d) < 1:
        raise ValueError(f"multigammaln: d must be a positive integer, got {d!r}")
    d = int(d)
    av = F._values(a)
    if np.any(av <= 0.5 * (d - 1)):
        raise ValueError(f"multigammaln: condition a ({av}) > 0.5 * (d-1) ({0.5 * (d - 1)}) not met")
    terms = gammaln(F.subtract(F.expand_dims(a, -1), np.arange(d) / 2.0))
    return F.add(F.sum(terms, axis=-1), d * (d - 1) / 4.0 * math.log(math.pi))


_BY_UFUNC_NAME: dict[str, Callable[..., Any]] = {scipy: globals()[name] for name, scipy in SCIPY_NAMES.items()}


def scipy_ufunc(ufunc: np.ufunc) -> Callable[..., Any] | None:
    """The function here that SciPy's ufunc ``ufunc`` is (``scipy.special.erf`` -> :func:`erf`), or None.

    Found by identity in an already imported ``scipy.special`` (never imported here): a ufunc of the
    same name from anywhere else is not taken for SciPy's.
    """
    sp = sys.modules.get("scipy.special")
    name = getattr(ufunc, "__name__", None)
    fn = _BY_UFUNC_NAME.get(name) if sp is not None else None
    if fn is not None and getattr(sp, name, None) is ufunc:
        return fn
    return None


def ufunc_label(ufunc: np.ufunc) -> str:
    """How an error names ``ufunc``: ``np.exp``, or ``scipy.special.kv`` for one of SciPy's."""
    name = getattr(ufunc, "__name__", "?")
    sp = sys.modules.get("scipy.special")
    if getattr(np, name, None) is not ufunc and sp is not None and getattr(sp, name, None) is ufunc:
        return f"scipy.special.{name}"
    return f"np.{name}"
