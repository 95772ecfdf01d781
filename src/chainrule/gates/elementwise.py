"""Elementwise gates: each output element depends on the same element of each input (broadcasting).

Their derivative is a *local* rule per input, ``(m, *inputs, out) -> ∂out/∂input``; the engine chains
it with the upstream gradient and sums over broadcast axes (:func:`.core.pullback`). Composites
(sigmoid, tanh, relu) also say how they stage into simpler gates (``expand``).
"""

from __future__ import annotations

import math
from typing import Any

from .core import ELEMENTWISE, NONDIFF, Gate, mask, number, register


def _gate(name: str, forward: Any, explain: str, fmt: str, **kw: Any) -> Gate:
    return register(Gate(name, forward, explain, fmt, kind=kw.pop("kind", ELEMENTWISE), **kw))


# ---- forwards that are more than one xp call --------------------------------------------------


def _sigmoid(xp: Any, x: Any) -> Any:
    # stable for large |x|: exp is only ever taken of a non-positive number
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _relu(xp: Any, x: Any) -> Any:
    return xp.maximum(x, 0)


def _where_std(xp: Any, c: Any, x: Any, y: Any) -> Any:
    # the standard takes at most one Python number among x and y; NumPy takes two
    if not hasattr(x, "shape") and not hasattr(y, "shape"):
        x = xp.asarray(x)
    return xp.where(c, x, y)


def _round_std(xp: Any, x: Any, decimals: int = 0) -> Any:
    # the standard's round has no decimals: NumPy's own way, scale, round half to even, scale back
    if decimals == 0:
        return xp.round(x)
    return xp.round(x * 10.0**decimals) / 10.0**decimals


# ---- rules that look at their operands ---------------------------------------------------------


def _pow_dx(m: Any, x: Any, y: Any, out: Any) -> Any:
    k = number(y)
    if k is not None:  # a known exponent: 3·x², and x⁰ has gradient 0 everywhere (also at x = 0)
        return 0 if k == 0 else k * x ** (k - 1)
    return m.guard(y == 0, 0, y * x ** (y - 1))  # x⁰'s gradient is 0, also at x = 0 (not 0·∞)


def _pow_dy(m: Any, x: Any, y: Any, out: Any) -> Any:
    k = number(x)
    if k is not None and k > 0:  # a known base: 2ʸ has gradient 2ʸ·ln 2
        return out * math.log(k)
    # 0ʸ has gradient 0 (for y > 0, where out = 0): ln is taken of 1 there, so no 0·(-inf)
    return out * m.log(m.guard(x == 0, 1, x))


def _sinc_d(m: Any, x: Any, out: Any) -> Any:
    # d/dx sin(πx)/(πx) = (cos(πx) − sinc(x)) / x, and 0 at x = 0
    safe = m.guard(x == 0, 1, x)
    return m.guard(x == 0, 0, (m.cos(math.pi * safe) - out) / safe)


def _pick(m: Any, a: Any, b: Any, out: Any) -> Any:
    """1 where ``a`` was chosen as ``out`` (fmax/fmin, which skip NaN), ½ on ties."""
    return mask(m, a == out) - 0.5 * mask(m, a == b)


# ---- arithmetic -----------------------------------------------------------------------------------

ADD = _gate("add", "add", "add gate: distributes the upstream gradient unchanged to both inputs",
            "{0} + {1}", local=(lambda m, x, y, out: 1, lambda m, x, y, out: 1))
SUB = _gate("sub", "subtract", "sub gate: passes the gradient to the first input and its negative to the second",
            "{0} - {1}", local=(lambda m, x, y, out: 1, lambda m, x, y, out: -1))
MUL = _gate("mul", "multiply", "mul gate: swaps its inputs — each gets the upstream gradient times the other",
            "{0} * {1}", local=(lambda m, x, y, out: y, lambda m, x, y, out: x))
DIV = _gate("div", "divide", "div gate: ∂(x/y)/∂x = 1/y and ∂(x/y)/∂y = -x/y²",
            "{0} / {1}", local=(lambda m, x, y, out: 1 / y, lambda m, x, y, out: -x / y**2),
            idea="div gate: numerator and denominator each have their own rule")
NEG = _gate("neg", "negative", "neg gate: flips the sign of the gradient", "-{0}", local=(lambda m, x, out: -1,))
POW = _gate("pow", "power", "pow gate: ∂(xʸ)/∂x = y·xʸ⁻¹ and ∂(xʸ)/∂y = xʸ·ln x", "{0} ** {1}",
            local=(_pow_dx, _pow_dy),
            idea="pow gate: the exponent comes down, the power drops by one", std="pow")
FLOAT_POWER = _gate("float_power", "float_power", "pow gate in float64: ∂(xʸ)/∂x = y·xʸ⁻¹, ∂(xʸ)/∂y = xʸ·ln x",
                    "float_power({0}, {1})", local=(_pow_dx, _pow_dy),
                    idea="pow gate in float64: the exponent comes down, the power drops by one")
REMAINDER = _gate("remainder", "remainder",
                  "remainder gate: x mod y = x − ⌊x/y⌋·y, so ∂/∂x = 1 and ∂/∂y = −⌊x/y⌋",
                  "{0} % {1}", local=(lambda m, x, y, out: 1, lambda m, x, y, out: -m.floor(x / y)),
                  code="{0} % {1}",
                  idea="remainder gate: the divisor gets minus the whole quotient")
FMOD = _gate("fmod", "fmod", "fmod gate: x − trunc(x/y)·y, so ∂/∂x = 1 and ∂/∂y = −trunc(x/y)",
             "fmod({0}, {1})", local=(lambda m, x, y, out: 1, lambda m, x, y, out: -m.trunc(x / y)),
             idea="fmod gate: the divisor gets minus the truncated quotient")
IDENTITY = _gate("identity", "positive", "identity gate: passes the gradient through", "{0}",
                 local=(lambda m, x, out: 1,))
SQUARE = _gate("square", "square", "square gate: local gradient 2x", "{0}²", local=(lambda m, x, out: 2 * x,),
               idea="square gate: the local gradient is twice the input")
RECIPROCAL = _gate("reciprocal", "reciprocal", "reciprocal gate: ∂(1/x)/∂x = -1/x²", "1 / {0}",
                   local=(lambda m, x, out: -out**2,),
                   idea="reciprocal gate: the local gradient is minus the output squared")
SQRT = _gate("sqrt", "sqrt", "sqrt gate: local gradient 1/(2√x)", "sqrt({0})", local=(lambda m, x, out: 0.5 / out,),
             idea="sqrt gate: the local gradient is one over twice the output")
CBRT = _gate("cbrt", "cbrt", "cbrt gate: local gradient 1/(3·∛x²)", "cbrt({0})",
             local=(lambda m, x, out: 1 / (3 * out**2),),
             idea="cbrt gate: local gradient one over three times the output squared")
ABS = _gate("abs", "abs", "abs gate: routes the gradient with the input's sign (0 at 0)", "|{0}|",
            local=(lambda m, x, out: m.sign(x),), numpy=("abs", "absolute"))
FABS = _gate("fabs", "fabs", "fabs gate: routes the gradient with the input's sign (0 at 0)", "|{0}|",
             local=(lambda m, x, out: m.sign(x),))

# ---- exponentials and logarithms ----------------------------------------------------------------

EXP = _gate("exp", "exp", "exp gate: its local gradient is its own output, eˣ", "exp({0})",
            local=(lambda m, x, out: out,),
            idea="exp gate: its local gradient is its own output")
EXP2 = _gate("exp2", "exp2", "exp2 gate: ∂2ˣ/∂x = 2ˣ·ln 2, from its own output", "exp2({0})",
             local=(lambda m, x, out: out * math.log(2),),
             idea="exp2 gate: its local gradient is its own output times ln 2")
EXPM1 = _gate("expm1", "expm1", "expm1 gate: ∂(eˣ − 1)/∂x = eˣ = out + 1", "expm1({0})",
              local=(lambda m, x, out: out + 1,),
              idea="expm1 gate: its local gradient is its own output plus one")
LOG = _gate("log", "log", "log gate: local gradient 1/x", "ln({0})", local=(lambda m, x, out: 1 / x,),
            idea="log gate: the local gradient is one over the input")
LOG2 = _gate("log2", "log2", "log2 gate: local gradient 1/(x·ln 2)", "log2({0})",
             local=(lambda m, x, out: 1 / (x * math.log(2)),),
             idea="log2 gate: the local gradient is one over the input times ln 2")
LOG10 = _gate("log10", "log10", "log10 gate: local gradient 1/(x·ln 10)", "log10({0})",
              local=(lambda m, x, out: 1 / (x * math.log(10)),),
              idea="log10 gate: the local gradient is one over the input times ln 10")
LOG1P = _gate("log1p", "log1p", "log1p gate: ∂ln(1 + x)/∂x = 1/(1 + x)", "log1p({0})",
              local=(lambda m, x, out: 1 / (1 + x),),
              idea="log1p gate: the local gradient is one over one plus the input")
LOGADDEXP = _gate("logaddexp", "logaddexp",
                  "logaddexp gate: ln(eˣ + eʸ); each input gets its softmax weight, e^(input − out)",
                  "logaddexp({0}, {1})",
                  local=(lambda m, x, y, out: m.exp(x - out), lambda m, x, y, out: m.exp(y - out)),
                  idea="logaddexp gate: each input gets its softmax weight")
LOGADDEXP2 = _gate("logaddexp2", "logaddexp2",
                   "logaddexp2 gate: log₂(2ˣ + 2ʸ); each input gets 2^(input − out)",
                   "logaddexp2({0}, {1})",
                   local=(lambda m, x, y, out: m.exp2(x - out), lambda m, x, y, out: m.exp2(y - out)),
                   idea="logaddexp2 gate: each input gets its base-2 softmax weight")

# ---- trigonometric and hyperbolic ----------------------------------------------------------------

SIN = _gate("sin", "sin", "sin gate: local gradient cos x", "sin({0})", local=(lambda m, x, out: m.cos(x),),
            idea="sin gate: the local gradient is the cosine of the input")
COS = _gate("cos", "cos", "cos gate: local gradient -sin x", "cos({0})", local=(lambda m, x, out: -m.sin(x),),
            idea="cos gate: the local gradient is minus the sine of the input")
TAN = _gate("tan", "tan", "tan gate: local gradient 1 + tan²x = sec²x", "tan({0})",
            local=(lambda m, x, out: 1 + out**2,),
            idea="tan gate: the local gradient is one plus the output squared")
ARCSIN = _gate("arcsin", "arcsin", "arcsin gate: local gradient 1/√(1 − x²)", "arcsin({0})",
               local=(lambda m, x, out: 1 / m.sqrt(1 - x**2),),
               idea="arcsin gate", std="asin")
ARCCOS = _gate("arccos", "arccos", "arccos gate: local gradient −1/√(1 − x²)", "arccos({0})",
               local=(lambda m, x, out: -1 / m.sqrt(1 - x**2),),
               idea="arccos gate", std="acos")
ARCTAN = _gate("arctan", "arctan", "arctan gate: local gradient 1/(1 + x²)", "arctan({0})",
               local=(lambda m, x, out: 1 / (1 + x**2),),
               idea="arctan gate", std="atan")
ARCTAN2 = _gate("arctan2", "arctan2", "arctan2 gate: the angle of (x, y); ∂/∂y = x/(x² + y²), ∂/∂x = −y/(x² + y²)",
                "arctan2({0}, {1})",
                local=(lambda m, y, x, out: x / (x**2 + y**2), lambda m, y, x, out: -y / (x**2 + y**2)),
                idea="arctan2 gate: each coordinate has a local gradient of its own", std="atan2")
HYPOT = _gate("hypot", "hypot", "hypot gate: √(x² + y²); each input gets input/out", "hypot({0}, {1})",
              local=(lambda m, x, y, out: x / out, lambda m, x, y, out: y / out),
              idea="hypot gate: each input gets itself divided by the output")
SINH = _gate("sinh", "sinh", "sinh gate: local gradient cosh x", "sinh({0})", local=(lambda m, x, out: m.cosh(x),),
             idea="sinh gate: the local gradient is the cosh of the input")
COSH = _gate("cosh", "cosh", "cosh gate: local gradient sinh x", "cosh({0})", local=(lambda m, x, out: m.sinh(x),),
             idea="cosh gate: the local gradient is the sinh of the input")
TANH = _gate("tanh", "tanh", "tanh gate: local gradient 1 − tanh²x, from its own output", "tanh({0})",
             local=(lambda m, x, out: 1 - out**2,),
             expand=lambda m, x: (lambda e: (1 - e) / (1 + e))(m.exp(-2 * x)),
             idea="tanh gate: the local gradient is one minus the output squared")
ARCSINH = _gate("arcsinh", "arcsinh", "arcsinh gate: local gradient 1/√(x² + 1)", "arcsinh({0})",
                local=(lambda m, x, out: 1 / m.sqrt(x**2 + 1),),
                idea="arcsinh gate", std="asinh")
ARCCOSH = _gate("arccosh", "arccosh", "arccosh gate: local gradient 1/√(x² − 1)", "arccosh({0})",
                local=(lambda m, x, out: 1 / m.sqrt(x**2 - 1),),
                idea="arccosh gate", std="acosh")
ARCTANH = _gate("arctanh", "arctanh", "arctanh gate: local gradient 1/(1 − x²)", "arctanh({0})",
                local=(lambda m, x, out: 1 / (1 - x**2),),
                idea="arctanh gate", std="atanh")
DEG2RAD = _gate("deg2rad", "deg2rad", "deg2rad gate: multiplies the gradient by π/180", "deg2rad({0})",
                local=(lambda m, x, out: math.pi / 180,), numpy=("deg2rad", "radians"))
RAD2DEG = _gate("rad2deg", "rad2deg", "rad2deg gate: multiplies the gradient by 180/π", "rad2deg({0})",
                local=(lambda m, x, out: 180 / math.pi,), numpy=("rad2deg", "degrees"))
SINC = _gate("sinc", "sinc", "sinc gate: ∂(sin πx/πx)/∂x = (cos πx − sinc x)/x (0 at 0)", "sinc({0})",
             local=(_sinc_d,),
             idea="sinc gate")

# ---- choosing between inputs ---------------------------------------------------------------------

MAXIMUM = _gate("maximum", "maximum", "max gate: routes the gradient to the larger input (ties share it)",
                "max({0}, {1})",
                local=(lambda m, x, y, out: mask(m, x > y) + 0.5 * mask(m, x == y),
                       lambda m, x, y, out: mask(m, y > x) + 0.5 * mask(m, x == y)))
MINIMUM = _gate("minimum", "minimum", "min gate: routes the gradient to the smaller input (ties share it)",
                "min({0}, {1})",
                local=(lambda m, x, y, out: mask(m, x < y) + 0.5 * mask(m, x == y),
                       lambda m, x, y, out: mask(m, y < x) + 0.5 * mask(m, x == y)))
FMAX = _gate("fmax", "fmax", "fmax gate: routes the gradient to the larger input, skipping NaN (ties share it)",
             "fmax({0}, {1})",
             local=(lambda m, x, y, out: _pick(m, x, y, out), lambda m, x, y, out: _pick(m, y, x, out)))
FMIN = _gate("fmin", "fmin", "fmin gate: routes the gradient to the smaller input, skipping NaN (ties share it)",
             "fmin({0}, {1})",
             local=(lambda m, x, y, out: _pick(m, x, y, out), lambda m, x, y, out: _pick(m, y, x, out)))
WHERE = _gate("where", "where",
              "where gate: routes the gradient to the branch that was chosen; the condition gets none",
              "where({0}, {1}, {2})",
              local=(None, lambda m, c, x, y, out: m.where(c, 1.0, 0.0), lambda m, c, x, y, out: m.where(c, 0.0, 1.0)),
              std=_where_std)

GUARD = _gate("guard", "where", "guard gate: the value x itself, with a harmless stand-in where a formula would "
              "give 0·∞ (x = 0 in ln x): the gradient passes where x is used", "{2}",
              local=(None, lambda m, c, s, x, out: m.where(c, 1.0, 0.0), lambda m, c, s, x, out: m.where(c, 0.0, 1.0)),
              code="np.where({0}, {1}, {2})", numpy=(), std=_where_std)

# ---- composites with a fused rule ----------------------------------------------------------------

SIGMOID = _gate("sigmoid", _sigmoid, "sigmoid gate: local gradient σ(x)·(1 − σ(x)), from its own output", "σ({0})",
                local=(lambda m, x, out: out * (1 - out),), expand=lambda m, x: m.reciprocal(1 + m.exp(-x)),
                numpy=(),
                idea="sigmoid gate: its local gradient comes from its own output")
RELU = _gate("relu", _relu, "relu gate: passes the gradient where the input was positive, blocks it elsewhere",
             "relu({0})", local=(lambda m, x, out: mask(m, x > 0),), expand=lambda m, x: m.maximum(x, 0), numpy=())

# ---- non-differentiable: results are constants as far as gradients go ------------------------------
# (applied to tensors that depend on the inputs, they are forward-only nodes: recomputed by compile)

_CONSTANT = "{}: a constant as far as gradients go (its derivative is zero or undefined)"

_TRUTH = {"greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "logical_not", "logical_and",
          "logical_or", "logical_xor", "isfinite", "isnan", "isinf", "isneginf", "isposinf", "signbit"}
for _name, _np, _fmt, _arity in [
    ("sign", "sign", "sign({0})", 1), ("greater", "greater", "{0} > {1}", 2),
    ("greater_equal", "greater_equal", "{0} >= {1}", 2), ("less", "less", "{0} < {1}", 2),
    ("less_equal", "less_equal", "{0} <= {1}", 2), ("equal", "equal", "{0} == {1}", 2),
    ("not_equal", "not_equal", "{0} != {1}", 2), ("logical_not", "logical_not", "not {0}", 1),
    ("logical_and", "logical_and", "{0} and {1}", 2), ("logical_or", "logical_or", "{0} or {1}", 2),
    ("logical_xor", "logical_xor", "{0} xor {1}", 2),
    ("isfinite", "isfinite", "isfinite({0})", 1), ("isnan", "isnan", "isnan({0})", 1),
    ("isinf", "isinf", "isinf({0})", 1),
    ("isneginf", "isneginf", "isneginf({0})", 1), ("isposinf", "isposinf", "isposinf({0})", 1),
    ("signbit", "signbit", "signbit({0})", 1),
    ("floor", "floor", "⌊{0}⌋", 1), ("ceil", "ceil", "⌈{0}⌉", 1), ("rint", "rint", "rint({0})", 1),
    ("trunc", "trunc", "trunc({0})", 1), ("fix", "fix", "fix({0})", 1),
    ("floor_divide", "floor_divide", "{0} // {1}", 2),
]:
    _gate(_name, _np, _CONSTANT.format(_name), _fmt, kind=NONDIFF, differentiable=False, arity=_arity,
          boolean=_name in _TRUTH)

ROUND = _gate("round", "round", _CONSTANT.format("round"), "round({0})", kind=NONDIFF, differentiable=False,
              params={"decimals": 0}, numpy=("round", "around"), std=_round_std)
