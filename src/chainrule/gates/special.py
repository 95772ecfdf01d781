"""Special-function gates: SciPy's ``scipy.special`` ufuncs that HIPS autograd differentiates.

The error function and its inverses, the gamma family (gammaln, digamma, polygamma, gamma, rgamma),
expit/logit, the Bessel functions (j0 j1 jn y0 y1 yn i0 i1 iv ive), beta/betaln, the regularized
incomplete functions (betainc, gammainc, gammaincc: differentiable in their last argument only, as in
autograd), the normal CDF (ndtr, log_ndtr) and Student's t CDF (stdtr, in its second argument).

Each is an elementwise gate whose local rules are written with other gates of the table (erf's
is 2/√π·exp(−x²), digamma's is polygamma(1, x), jn's is (jn(n−1, x) − jn(n+1, x))/2), so second and
higher derivatives come from the same table. Orders and shape parameters that take no gradient (jn's
n, polygamma's n, iv's v, betainc's a and b) are inputs like any other, so NumPy's broadcasting and
SciPy's calling convention hold; asking for their gradient raises a "no gradient rule" error.

SciPy is not a dependency: the forwards import ``scipy.special`` when they first run (so ``import
chainrule`` never does), and without SciPy they raise one ImportError that says so. On the symbolic
stand-ins, the forward is one call of the gate itself, which prints and generates code as
``scipy.special.<name>(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .core import ELEMENTWISE, NONDIFF, Gate, number, register

_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def scipy_special() -> Any:
    """``scipy.special``, imported on first use; one clear error when SciPy is not installed."""
    try:
        import scipy.special
    except ImportError:
        raise ImportError("chainrule's special functions (erf, gammaln, jn, ...) compute with SciPy, which is "
                          "not installed: pip install scipy") from None
    return scipy.special


def special_functions(xp: Any) -> Any:
    """Where the special functions of the array namespace ``xp`` live: ``scipy.special`` for NumPy;
    any other namespace (the symbolic stand-ins) provides them itself, by gate name."""
    if getattr(xp, "__name__", None) == "numpy":
        return scipy_special()
    return xp


def _forward(name: str, scipy_name: str | None = None) -> Callable[..., Any]:
    """The forward of gate ``name``: SciPy's ``scipy_name`` (default: the same name) on arrays."""
    scipy_name = scipy_name or name

    def forward(xp: Any, *args: Any) -> Any:
        ns = special_functions(xp)
        return getattr(ns, scipy_name if ns is not xp else name)(*args)

    forward.__name__ = forward.__qualname__ = f"_{name}"  # generated code calls it by this name
    forward.__doc__ = f"scipy.special.{scipy_name} (SciPy imported on first use)."
    return forward


def _polygamma(xp: Any, n: Any, x: Any) -> Any:
    """scipy.special.polygamma (a Python function, not a ufunc), in the inputs' float type as a ufunc
    would give it (SciPy computes float32 inputs in float64)."""
    ns = special_functions(xp)
    if ns is xp:
        return xp.polygamma(n, x)
    out = ns.polygamma(n, x)
    dtype = np.result_type(n, x)
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
    return out.astype(dtype, copy=False) if isinstance(out, np.ndarray) else dtype.type(out)


def no_gradient(gate: str, arg: str, position: int, differentiable: str) -> Callable[..., Any]:
    """The local rule of an input that takes no gradient (an order, a shape parameter): asking for it
    raises one clear error instead of a silently missing gradient."""

    def rule(*_args: Any) -> Any:
        raise TypeError(f"scipy.special.{gate} has no gradient rule with respect to {arg} (argument {position}): "
                        f"only {differentiable} is differentiable, as in autograd; pass {arg} as a constant")

    rule.__name__ = f"no_gradient_{gate}"
    rule.no_gradient = True  # type: ignore[attr-defined]
    return rule


#: gate name -> its scipy.special name (the ufunc SciPy calls it by: digamma's is psi, jn's is jv)
SCIPY_NAMES: dict[str, str] = {}


def _gate(name: str, explain: str, fmt: str, *, scipy_name: str | None = None, forward: Any = None,
          **kw: Any) -> Gate:
    kw.setdefault("kind", ELEMENTWISE)
    SCIPY_NAMES[name] = scipy_name or name
    n = len(kw["local"]) if "local" in kw else kw.get("arity", 1)
    args = ", ".join("{" + str(k) + "}" for k in range(n))
    return register(Gate(name, forward or _forward(name, scipy_name), explain, fmt,
                         code=f"scipy.special.{scipy_name or name}({args})", numpy=(), **kw))


# ---- error function and the normal distribution ---------------------------------------------------

ERF = _gate("erf", "erf gate: local gradient 2/√π·exp(−x²), the bell curve", "erf({0})",
            local=(lambda m, x, out: (2 / _SQRT_PI) * m.exp(-x**2),))
ERFC = _gate("erfc", "erfc gate (1 − erf x): local gradient −2/√π·exp(−x²)", "erfc({0})",
             local=(lambda m, x, out: (-2 / _SQRT_PI) * m.exp(-x**2),))
ERFINV = _gate("erfinv", "erfinv gate: the inverse's slope, √π/2·exp(out²), one over erf's slope at out",
               "erfinv({0})", local=(lambda m, x, out: (_SQRT_PI / 2) * m.exp(out**2),))
ERFCINV = _gate("erfcinv", "erfcinv gate: the inverse's slope, −√π/2·exp(out²), one over erfc's slope at out",
                "erfcinv({0})", local=(lambda m, x, out: (-_SQRT_PI / 2) * m.exp(out**2),))
NDTR = _gate("ndtr", "ndtr gate (the normal CDF Φ): local gradient the normal density exp(−x²/2)/√(2π)",
             "Φ({0})", local=(lambda m, x, out: m.exp(-0.5 * x**2 - _LOG_SQRT_2PI),))
LOG_NDTR = _gate("log_ndtr", "log_ndtr gate (ln Φ): local gradient density/Φ = exp(−x²/2 − ln√(2π) − out), "
                 "stable where Φ underflows", "log_ndtr({0})",
                 local=(lambda m, x, out: m.exp(-0.5 * x**2 - _LOG_SQRT_2PI - out),))

# ---- the gamma family ----------------------------------------------------------------------------------

GAMMALN = _gate("gammaln", "gammaln gate (ln|Γ(x)|): local gradient digamma ψ(x)", "gammaln({0})",
                local=(lambda m, x, out: m.digamma(x),))
DIGAMMA = _gate("digamma", "digamma gate ψ(x) = Γ′(x)/Γ(x): local gradient the trigamma polygamma(1, x)", "ψ({0})",
                scipy_name="psi", local=(lambda m, x, out: m.polygamma(1, x),))
POLYGAMMA = _gate("polygamma", "polygamma gate ψ⁽ⁿ⁾(x): local gradient the next one, polygamma(n + 1, x); "
                  "the order n is a constant", "polygamma({0}, {1})", forward=_polygamma,
                  local=(no_gradient("polygamma", "the order n", 0, "x"),
                         lambda m, n, x, out: m.polygamma(n + 1, x)))
GAMMA = _gate("gamma", "gamma gate Γ(x): local gradient Γ(x)·ψ(x), its own output times digamma", "Γ({0})",
              local=(lambda m, x, out: out * m.digamma(x),))
RGAMMA = _gate("rgamma", "rgamma gate 1/Γ(x): local gradient −ψ(x)/Γ(x), minus its own output times digamma",
               "rgamma({0})", local=(lambda m, x, out: -out * m.digamma(x),))
GAMMASGN = _gate("gammasgn", "gammasgn: a constant as far as gradients go (the sign of Γ(x))", "gammasgn({0})",
                 kind=NONDIFF, differentiable=False, arity=1)

# ---- logistic --------------------------------------------------------------------------------------------

EXPIT = _gate("expit", "expit gate (the logistic sigmoid): local gradient out·(1 − out), from its own output",
              "expit({0})", local=(lambda m, x, out: out * (1 - out),))
LOGIT = _gate("logit", "logit gate ln(x/(1 − x)), expit's inverse: local gradient 1/(x·(1 − x))", "logit({0})",
              local=(lambda m, x, out: 1 / (x * (1 - x)),))

# ---- Bessel functions --------------------------------------------------------------------------------------

J0 = _gate("j0", "j0 gate (Bessel J₀): local gradient −J₁(x)", "J₀({0})", local=(lambda m, x, out: -m.j1(x),))
J1 = _gate("j1", "j1 gate (Bessel J₁): local gradient (J₀(x) − J₂(x))/2", "J₁({0})",
           local=(lambda m, x, out: (m.j0(x) - m.jn(2, x)) / 2,))
Y0 = _gate("y0", "y0 gate (Bessel Y₀): local gradient −Y₁(x)", "Y₀({0})", local=(lambda m, x, out: -m.y1(x),))
Y1 = _gate("y1", "y1 gate (Bessel Y₁): local gradient (Y₀(x) − Y₂(x))/2", "Y₁({0})",
           local=(lambda m, x, out: (m.y0(x) - m.yn(2, x)) / 2,))
JN = _gate("jn", "jn gate (Bessel Jₙ, any real order): local gradient (Jₙ₋₁(x) − Jₙ₊₁(x))/2; n is a constant",
           "jn({0}, {1})", scipy_name="jv",
           local=(no_gradient("jn", "the order n", 0, "x"), lambda m, n, x, out: (m.jn(n - 1, x) - m.jn(n + 1, x)) / 2))
YN = _gate("yn", "yn gate (Bessel Yₙ, integer order): local gradient (Yₙ₋₁(x) − Yₙ₊₁(x))/2; n is a constant",
           "yn({0}, {1})",
           local=(no_gradient("yn", "the order n", 0, "x"), lambda m, n, x, out: (m.yn(n - 1, x) - m.yn(n + 1, x)) / 2))
I0 = _gate("i0", "i0 gate (modified Bessel I₀): local gradient I₁(x)", "I₀({0})", local=(lambda m, x, out: m.i1(x),))
I1 = _gate("i1", "i1 gate (modified Bessel I₁): local gradient (I₀(x) + I₂(x))/2", "I₁({0})",
           local=(lambda m, x, out: (m.i0(x) + m.iv(2, x)) / 2,))
IV = _gate("iv", "iv gate (modified Bessel I_v): local gradient (I_v−1(x) + I_v+1(x))/2; the order v is a constant",
           "iv({0}, {1})",
           local=(no_gradient("iv", "the order v", 0, "x"), lambda m, v, x, out: (m.iv(v - 1, x) + m.iv(v + 1, x)) / 2))
IVE = _gate("ive", "ive gate (I_v(x)·e^−|x|): local gradient (ive(v−1, x) + ive(v+1, x))/2 − sign(x)·out; "
            "v is a constant", "ive({0}, {1})",
            local=(no_gradient("ive", "the order v", 0, "x"),
                   lambda m, v, x, out: (m.ive(v - 1, x) + m.ive(v + 1, x)) / 2 - m.sign(x) * out))

def _k_log(m: Any, k: Any, x: Any) -> Any:
    """k·ln x for a density's x^k, left out where k is a known 0 (gammainc(1, x) at x = 0: 0·ln 0 is NaN,
    x⁰ is 1)."""
    return 0 if number(k) == 0 else k * m.log(x)


# ---- beta and the regularized incomplete functions -----------------------------------------------------------

BETA = _gate("beta", "beta gate B(a, b) = Γ(a)Γ(b)/Γ(a + b): ∂/∂a = B·(ψ(a) − ψ(a + b)), likewise for b",
             "B({0}, {1})", local=(lambda m, a, b, out: out * (m.digamma(a) - m.digamma(a + b)),
                                   lambda m, a, b, out: out * (m.digamma(b) - m.digamma(a + b))))
BETALN = _gate("betaln", "betaln gate ln|B(a, b)|: ∂/∂a = ψ(a) − ψ(a + b), likewise for b", "betaln({0}, {1})",
               local=(lambda m, a, b, out: m.digamma(a) - m.digamma(a + b),
                      lambda m, a, b, out: m.digamma(b) - m.digamma(a + b)))
BETAINC = _gate("betainc", "betainc gate (regularized I_x(a, b)): ∂/∂x is the beta density "
                "x^(a−1)(1 − x)^(b−1)/B(a, b); a and b are constants", "betainc({0}, {1}, {2})",
                local=(no_gradient("betainc", "a", 0, "x (argument 2)"),
                       no_gradient("betainc", "b", 1, "x (argument 2)"),
                       lambda m, a, b, x, out: m.exp(_k_log(m, a - 1, x) + _k_log(m, b - 1, 1 - x) - m.betaln(a, b))))
GAMMAINC = _gate("gammainc", "gammainc gate (regularized lower P(a, x)): ∂/∂x is the gamma density "
                 "x^(a−1)·e^(−x)/Γ(a); a is a constant", "gammainc({0}, {1})",
                 local=(no_gradient("gammainc", "a", 0, "x (argument 1)"),
                        lambda m, a, x, out: m.exp(_k_log(m, a - 1, x) - x - m.gammaln(a))))
GAMMAINCC = _gate("gammaincc", "gammaincc gate (regularized upper Q(a, x) = 1 − P): ∂/∂x is minus the gamma "
                  "density; a is a constant", "gammaincc({0}, {1})",
                  local=(no_gradient("gammaincc", "a", 0, "x (argument 1)"),
                         lambda m, a, x, out: -m.exp(_k_log(m, a - 1, x) - x - m.gammaln(a))))
STDTR = _gate("stdtr", "stdtr gate (Student's t CDF): ∂/∂t is the t density; the degrees of freedom are a constant",
              "stdtr({0}, {1})",
              local=(no_gradient("stdtr", "the degrees of freedom df", 0, "t (argument 1)"),
                     lambda m, df, t, out: m.exp(m.gammaln((df + 1) / 2) - m.gammaln(df / 2)
                                                 - 0.5 * m.log(math.pi * df) - (df + 1) / 2 * m.log1p(t**2 / df))))



def constant_inputs(gate: Gate) -> tuple[int, ...]:
    """The positions of a gate's inputs that take no gradient (their rule is :func:`no_gradient`'s)."""
    return tuple(i for i, rule in enumerate(gate.local or ()) if getattr(rule, "no_gradient", False))


def sympy_twins(sp: Any) -> dict[str, Callable[..., Any]]:
    """Each special gate as a function of sympy (the module ``sp``, the caller's import): the exact form
    a symbolic view (exact answers) can use where a gate has no NumPy name to find its twin by."""
    half = sp.Rational(1, 2)

    def ndtr(x: Any) -> Any:
        return (1 + sp.erf(x / sp.sqrt(2))) / 2

    def stdtr(df: Any, t: Any) -> Any:  # ½ + t·Γ((ν+1)/2)·₂F₁(½, (ν+1)/2; 3/2; −t²/ν) / (√(πν)·Γ(ν/2))
        return half + t * sp.gamma((df + 1) / 2) * sp.hyper([half, (df + 1) / 2], [3 * half], -t**2 / df) / (
            sp.sqrt(sp.pi * df) * sp.gamma(df / 2))

    return {
        "erf": sp.erf, "erfc": sp.erfc, "erfinv": sp.erfinv, "erfcinv": lambda x: sp.erfinv(1 - x), "ndtr": ndtr,
        "log_ndtr": lambda x: sp.log(ndtr(x)), "gammaln": lambda x: sp.log(sp.Abs(sp.gamma(x))),
        "digamma": sp.digamma, "polygamma": sp.polygamma, "gamma": sp.gamma, "rgamma": lambda x: 1 / sp.gamma(x),
        "gammasgn": lambda x: sp.sign(sp.gamma(x)), "expit": lambda x: 1 / (1 + sp.exp(-x)),
        "logit": lambda x: sp.log(x / (1 - x)), "j0": lambda x: sp.besselj(0, x), "j1": lambda x: sp.besselj(1, x),
        "y0": lambda x: sp.bessely(0, x), "y1": lambda x: sp.bessely(1, x), "jn": sp.besselj, "yn": sp.bessely,
        "i0": lambda x: sp.besseli(0, x), "i1": lambda x: sp.besseli(1, x), "iv": sp.besseli,
        "ive": lambda v, x: sp.besseli(v, x) * sp.exp(-sp.Abs(x)), "beta": sp.beta,
        "betaln": lambda a, b: sp.log(sp.Abs(sp.beta(a, b))),
        "betainc": lambda a, b, x: sp.betainc_regularized(a, b, 0, x),
        "gammainc": lambda a, x: sp.lowergamma(a, x) / sp.gamma(a),
        "gammaincc": lambda a, x: sp.uppergamma(a, x) / sp.gamma(a), "stdtr": stdtr,
    }
