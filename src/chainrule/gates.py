"""The gate table: every primitive operation, declared once.

Each :class:`Gate` entry holds

* ``forward`` -- how to compute it with the array namespace ``xp`` (a NumPy function name,
  or ``(xp, *inputs, **params) -> array``);
* its derivative, written once against an *ops namespace* ``m``:

  - elementwise gates give ``local``: one function per input, ``(m, *inputs, out) -> ∂out/∂input``,
    and the engine chains it (``upstream * local``) and sums over broadcast axes;
  - all other gates give ``vjp``: ``(m, g, *inputs, out, needs, **params) -> grads``, the
    vector-Jacobian product for the upstream gradient ``g`` (``needs[i]`` says whether input
    ``i`` wants a gradient, so expensive unused branches are skipped);

  ``m`` is either the bound array namespace (fast backward on raw arrays) or chainrule's own
  differentiable functions (``create_graph=True``: the backward pass is itself a graph, which can be
  traced, printed, turned into code and differentiated again). The same rule can also be evaluated
  on symbolic stand-ins to print it.
* ``explain`` -- one line for learners; ``fmt`` -- how one staged equation reads;
* ``expand`` (composites only) -- the same function staged into simpler gates, as the worksheet's
  question 3 splits the sigmoid.

Adding an op means adding one entry here (and a row in ``tests/test_gates.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

FAN_OUT = "a value used more than once: the gradients from each use add up"


class Gate:
    """One primitive operation: forward, derivative rule, explanation (see module docstring)."""

    __slots__ = (
        "name", "forward", "explain", "fmt", "local", "vjp", "expand", "kind", "differentiable", "fn",
        "np_name", "local_const",
    )

    def __init__(
        self,
        name: str,
        forward: str | Callable[..., Any],
        explain: str,
        fmt: str,
        *,
        kind: str,
        local: tuple[Callable[..., Any] | None, ...] | None = None,
        vjp: Callable[..., tuple[Any, ...]] | None = None,
        expand: Callable[..., Any] | None = None,
        differentiable: bool = True,
    ) -> None:
        self.name = name
        self.forward = forward
        self.np_name = forward if isinstance(forward, str) else None
        self.explain = explain
        self.fmt = fmt
        self.kind = kind
        self.local = local
        self.vjp = vjp
        self.expand = expand
        self.differentiable = differentiable
        self.fn: Callable[..., Any] = _unbound
        self.local_const = tuple(_constant_of(rule, len(local)) for rule in local) if local else None

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


def _constant_of(rule: Callable[..., Any] | None, arity: int) -> int | None:
    """The value of a local-gradient rule that is a plain integer constant (add's 1, neg's -1), so the
    backward pass can pass the gradient on without calling the rule; None for every other rule."""
    if rule is None:
        return None
    probe = object()
    try:
        value = rule(None, *([probe] * (arity + 1)))  # the inputs and out; a rule that reads them fails
    except Exception:
        return None
    return value if type(value) is int else None


def _unbound(*_args: Any, **_kw: Any) -> Any:  # replaced by bind() at import
    raise RuntimeError("gate table not bound to an array namespace")


# ----------------------------------------------------------------------------------------------
# shape helpers (pure Python on shape tuples; shared by rules and the engine)
# ----------------------------------------------------------------------------------------------


def normalize_axis(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """Axis argument as a sorted tuple of non-negative axes (None: all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(out))


def keepdims_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The shape a reduction over ``axis`` has with ``keepdims=True``."""
    axes = normalize_axis(axis, len(shape))
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def reduced_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The shape a reduction over ``axis`` has with ``keepdims=False``."""
    axes = normalize_axis(axis, len(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def unbroadcast(m: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, so it has ``shape``."""
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead < 0:
        return m.broadcast_to(g, shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and gshape[i + lead] != 1
    )
    if axes:
        g = m.sum(g, axis=axes, keepdims=True)
    return m.reshape(g, shape) if g.shape != shape else g


def _swap_last(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


# ----------------------------------------------------------------------------------------------
# forwards that are more than one xp call
# ----------------------------------------------------------------------------------------------


def _sigmoid(xp: Any, x: Any) -> Any:
    # stable for large |x|: exp is only ever taken of a non-positive number
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _relu(xp: Any, x: Any) -> Any:
    return xp.maximum(x, 0)


def _max_shifted(xp: Any, x: Any, axis: Any, guard: bool = True) -> Any:
    mx = xp.max(x, axis=axis, keepdims=True)
    # guard: all -inf rows stay -inf, not nan. The staged (expanded) form leaves the guard out:
    # it is there for learners to read, and shifting by the max is what they know.
    return xp.where(xp.isfinite(mx), mx, 0) if guard else mx


def _logsumexp(xp: Any, x: Any, axis: Any = None, keepdims: bool = False, guard: bool = True) -> Any:
    mx = _max_shifted(xp, x, axis, guard)
    r = xp.log(xp.sum(xp.exp(x - mx), axis=axis, keepdims=True)) + mx
    return r if keepdims else xp.reshape(r, reduced_shape(x.shape, axis))


def _softmax(xp: Any, x: Any, axis: int = -1, guard: bool = True) -> Any:
    e = xp.exp(x - _max_shifted(xp, x, axis, guard))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _log_softmax(xp: Any, x: Any, axis: int = -1) -> Any:
    s = x - _max_shifted(xp, x, axis)
    return s - xp.log(xp.sum(xp.exp(s), axis=axis, keepdims=True))


def _cross_entropy(xp: Any, x: Any, index: Any = None, scale: float = 1.0) -> Any:
    # scale · Σᵢ (logsumexp(xᵢ) − xᵢ[yᵢ]) over the rows i picked by index = (rows, labels); stable
    mx = _max_shifted(xp, x, -1)
    lse = xp.log(xp.sum(xp.exp(x - mx), axis=-1)) + mx[..., 0]
    return scale * xp.sum(lse - x[index])


def _scatter(xp: Any, g: Any, index: Any = None, shape: tuple[int, ...] = ()) -> Any:
    z = xp.zeros(shape, dtype=g.dtype)
    xp.add.at(z, index, g)  # repeated indices accumulate, unlike z[index] += g
    return z


def _getitem(xp: Any, x: Any, index: Any = None) -> Any:
    return x[index]


def _concatenate(xp: Any, *xs: Any, axis: int = 0) -> Any:
    return xp.concatenate(xs, axis=axis)


def _stack(xp: Any, *xs: Any, axis: int = 0) -> Any:
    return xp.stack(xs, axis=axis)


def _transpose(xp: Any, x: Any, axes: tuple[int, ...] | None = None) -> Any:
    return xp.transpose(x, axes)


def _reduction(name: str) -> Callable[..., Any]:
    def forward(xp: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        return getattr(xp, name)(x, axis=axis, keepdims=keepdims)

    return forward


# ----------------------------------------------------------------------------------------------
# vector-Jacobian rules of the non-elementwise gates
# ----------------------------------------------------------------------------------------------


def _spread(m: Any, g: Any, shape: tuple[int, ...], axis: Any, keepdims: bool) -> Any:
    """Upstream gradient of a reduction, reshaped so it broadcasts against the input."""
    return g if keepdims else m.reshape(g, keepdims_shape(shape, axis))


def _sum_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    return (m.broadcast_to(_spread(m, g, x.shape, axis, keepdims), x.shape),)


def _mean_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    count = math.prod(x.shape[a] for a in normalize_axis(axis, x.ndim))
    return (m.broadcast_to(_spread(m, g, x.shape, axis, keepdims) / count, x.shape),)


def _extreme_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    # the gradient goes to the element(s) that won; ties share it equally
    hit = x == _spread(m, out, x.shape, axis, keepdims)
    return (_spread(m, g, x.shape, axis, keepdims) * hit / m.sum(hit, axis=axis, keepdims=True),)


def _logsumexp_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    return (_spread(m, g, x.shape, axis, keepdims) * m.exp(x - _spread(m, out, x.shape, axis, keepdims)),)


def _softmax_vjp(m, g, x, out, needs, axis=-1):
    return (out * (g - m.sum(g * out, axis=axis, keepdims=True)),)


def _log_softmax_vjp(m, g, x, out, needs, axis=-1):
    return (g - m.exp(out) * m.sum(g, axis=axis, keepdims=True),)


def _cross_entropy_vjp(m, g, x, out, needs, index=None, scale=1.0):
    # softmax(x) minus the one-hot of the labels, times the upstream gradient and the 1/n of a mean
    # (the softmax spelled out in primitive ops, so generated code can write every step)
    e = m.exp(x - m.max(x, axis=-1, keepdims=True))
    gs = g * scale
    onehot = m.scatter(m.broadcast_to(gs, index[-1].shape), index=index, shape=x.shape)
    return (e / m.sum(e, axis=-1, keepdims=True) * gs - onehot,)


def _reshape_vjp(m, g, x, out, needs, shape=()):
    return (m.reshape(g, x.shape),)


def _transpose_vjp(m, g, x, out, needs, axes=None):
    if axes is None:
        return (m.transpose(g),)
    inverse = [0] * len(axes)
    for i, a in enumerate(axes):
        inverse[a % len(axes)] = i
    return (m.transpose(g, tuple(inverse)),)


def _broadcast_to_vjp(m, g, x, out, needs, shape=()):
    return (unbroadcast(m, g, x.shape),)


def _getitem_vjp(m, g, x, out, needs, index=None):
    return (m.scatter(g, index=index, shape=x.shape),)


def _scatter_vjp(m, g, src, out, needs, index=None, shape=()):
    return (g[index],)


def _concatenate_vjp(m, g, *args, axis=0):
    *xs, out, needs = args
    ax = axis % out.ndim
    grads, start = [], 0
    for x, need in zip(xs, needs):
        stop = start + x.shape[ax]
        grads.append(g[(slice(None),) * ax + (slice(start, stop),)] if need else None)
        start = stop
    return tuple(grads)


def _stack_vjp(m, g, *args, axis=0):
    *xs, out, needs = args
    ax = axis % out.ndim
    return tuple(g[(slice(None),) * ax + (i,)] if need else None for i, need in enumerate(needs))


def _matmul_vjp(m, g, a, b, out, needs):
    # promote 1-D operands to matrices as matmul does, differentiate, then undo the promotion
    a2 = m.reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = m.reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = m.reshape(g2, g2.shape[:-1] + (1,) + g2.shape[-1:]) if b.ndim > 1 else m.reshape(g2, (1,) + g2.shape)
    if b.ndim == 1:
        g2 = m.reshape(g2, g2.shape + (1,))
    ga = gb = None
    if needs[0]:
        ga = unbroadcast(m, m.matmul(g2, m.transpose(b2, _swap_last(b2.ndim))), a2.shape)
        ga = m.reshape(ga, a.shape) if a.ndim == 1 else ga
    if needs[1]:
        gb = unbroadcast(m, m.matmul(m.transpose(a2, _swap_last(a2.ndim)), g2), b2.shape)
        gb = m.reshape(gb, b.shape) if b.ndim == 1 else gb
    return ga, gb


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------

_E, _R, _S, _L, _N = "elementwise", "reduction", "shape", "linalg", "nondiff"

GATES: dict[str, Gate] = {}


def _gate(*args: Any, **kwargs: Any) -> Gate:
    g = Gate(*args, **kwargs)
    GATES[g.name] = g
    return g


ADD = _gate("add", "add", "add gate: distributes the upstream gradient unchanged to both inputs",
            "{0} + {1}", kind=_E, local=(lambda m, x, y, out: 1, lambda m, x, y, out: 1))
SUB = _gate("sub", "subtract", "sub gate: passes the gradient to the first input and its negative to the second",
            "{0} - {1}", kind=_E, local=(lambda m, x, y, out: 1, lambda m, x, y, out: -1))
MUL = _gate("mul", "multiply", "mul gate: swaps its inputs — each gets the upstream gradient times the other",
            "{0} * {1}", kind=_E, local=(lambda m, x, y, out: y, lambda m, x, y, out: x))
DIV = _gate("div", "divide", "div gate: ∂(x/y)/∂x = 1/y and ∂(x/y)/∂y = -x/y²",
            "{0} / {1}", kind=_E, local=(lambda m, x, y, out: 1 / y, lambda m, x, y, out: -x / y**2))
NEG = _gate("neg", "negative", "neg gate: flips the sign of the gradient",
            "-{0}", kind=_E, local=(lambda m, x, out: -1,))
POW = _gate("pow", "power", "pow gate: ∂(xʸ)/∂x = y·xʸ⁻¹ and ∂(xʸ)/∂y = xʸ·ln x",
            "{0} ** {1}", kind=_E,
            local=(lambda m, x, y, out: y * x ** (y - 1), lambda m, x, y, out: out * m.log(x)))
EXP = _gate("exp", "exp", "exp gate: its local gradient is its own output, eˣ",
            "exp({0})", kind=_E, local=(lambda m, x, out: out,))
LOG = _gate("log", "log", "log gate: local gradient 1/x",
            "ln({0})", kind=_E, local=(lambda m, x, out: 1 / x,))
SIN = _gate("sin", "sin", "sin gate: local gradient cos x", "sin({0})", kind=_E,
            local=(lambda m, x, out: m.cos(x),))
COS = _gate("cos", "cos", "cos gate: local gradient -sin x", "cos({0})", kind=_E,
            local=(lambda m, x, out: -m.sin(x),))
TAN = _gate("tan", "tan", "tan gate: local gradient 1 + tan²x = sec²x", "tan({0})", kind=_E,
            local=(lambda m, x, out: 1 + out**2,))
SQRT = _gate("sqrt", "sqrt", "sqrt gate: local gradient 1/(2√x)", "sqrt({0})", kind=_E,
             local=(lambda m, x, out: 0.5 / out,))
ABS = _gate("abs", "abs", "abs gate: routes the gradient with the input's sign (0 at 0)", "|{0}|", kind=_E,
            local=(lambda m, x, out: m.sign(x),))
SQUARE = _gate("square", "square", "square gate: local gradient 2x", "{0}²", kind=_E,
               local=(lambda m, x, out: 2 * x,))
RECIPROCAL = _gate("reciprocal", "reciprocal", "reciprocal gate: ∂(1/x)/∂x = -1/x²", "1 / {0}", kind=_E,
                   local=(lambda m, x, out: -out**2,))
MAXIMUM = _gate("maximum", "maximum", "max gate: routes the gradient to the larger input (ties share it)",
                "max({0}, {1})", kind=_E,
                local=(lambda m, x, y, out: (x > y) + 0.5 * (x == y), lambda m, x, y, out: (y > x) + 0.5 * (x == y)))
MINIMUM = _gate("minimum", "minimum", "min gate: routes the gradient to the smaller input (ties share it)",
                "min({0}, {1})", kind=_E,
                local=(lambda m, x, y, out: (x < y) + 0.5 * (x == y), lambda m, x, y, out: (y < x) + 0.5 * (x == y)))
SIGMOID = _gate("sigmoid", _sigmoid, "sigmoid gate: local gradient σ(x)·(1 − σ(x)), from its own output",
                "σ({0})", kind=_E, local=(lambda m, x, out: out * (1 - out),),
                expand=lambda m, x: m.reciprocal(1 + m.exp(-x)))
TANH = _gate("tanh", "tanh", "tanh gate: local gradient 1 − tanh²x, from its own output", "tanh({0})", kind=_E,
             local=(lambda m, x, out: 1 - out**2,),
             expand=lambda m, x: (lambda e: (1 - e) / (1 + e))(m.exp(-2 * x)))
RELU = _gate("relu", _relu, "relu gate: passes the gradient where the input was positive, blocks it elsewhere",
             "relu({0})", kind=_E, local=(lambda m, x, out: x > 0,), expand=lambda m, x: m.maximum(x, 0))
WHERE = _gate("where", "where",
              "where gate: routes the gradient to the branch that was chosen; the condition gets none",
              "where({0}, {1}, {2})", kind=_E,
              local=(None, lambda m, c, x, y, out: m.where(c, 1.0, 0.0), lambda m, c, x, y, out: m.where(c, 0.0, 1.0)))
IDENTITY = _gate("identity", "positive", "identity gate: passes the gradient through", "{0}", kind=_E,
                 local=(lambda m, x, out: 1,))

SUM = _gate("sum", _reduction("sum"), "sum gate: copies the upstream gradient to every summed element",
            "sum({0})", kind=_R, vjp=_sum_vjp)
MEAN = _gate("mean", _reduction("mean"), "mean gate: shares the upstream gradient equally, 1/n to each element",
             "mean({0})", kind=_R, vjp=_mean_vjp)
MAX = _gate("max", _reduction("max"), "max gate: routes the gradient to the largest element (ties share it)",
            "max({0})", kind=_R, vjp=_extreme_vjp)
MIN = _gate("min", _reduction("min"), "min gate: routes the gradient to the smallest element (ties share it)",
            "min({0})", kind=_R, vjp=_extreme_vjp)
LOGSUMEXP = _gate("logsumexp", _logsumexp, "logsumexp gate: its gradient is the softmax of its input",
                  "logsumexp({0})", kind=_R, vjp=_logsumexp_vjp,
                  expand=lambda m, x, axis=None, keepdims=False: _logsumexp(m, x, axis, keepdims, guard=False))
SOFTMAX = _gate("softmax", _softmax, "softmax gate: s·(g − Σ g·s), from its own output s",
                "softmax({0})", kind=_R, vjp=_softmax_vjp,
                expand=lambda m, x, axis=-1: _softmax(m, x, axis, guard=False))
LOG_SOFTMAX = _gate("log_softmax", _log_softmax, "log-softmax gate: g − softmax(x)·Σ g",
                    "log_softmax({0})", kind=_R, vjp=_log_softmax_vjp,
                    expand=lambda m, x, axis=-1: x - m.logsumexp(x, axis=axis, keepdims=True))

RESHAPE = _gate("reshape", "reshape", "reshape gate: the gradient is reshaped back", "reshape({0})",
                kind=_S, vjp=_reshape_vjp)
TRANSPOSE = _gate("transpose", _transpose, "transpose gate: the gradient is transposed back", "{0}ᵀ",
                  kind=_S, vjp=_transpose_vjp)
BROADCAST_TO = _gate("broadcast_to", "broadcast_to",
                     "broadcast gate: a value copied to many places — their gradients add up",
                     "broadcast({0})", kind=_S, vjp=_broadcast_to_vjp)
GETITEM = _gate("getitem", _getitem, "indexing gate: the gradient goes back to the picked elements (repeats add)",
                "{0}[…]", kind=_S, vjp=_getitem_vjp)
SCATTER = _gate("scatter", _scatter, "scatter-add gate: the gradient of indexing; repeated indices add up",
                "scatter({0})", kind=_S, vjp=_scatter_vjp)
CONCATENATE = _gate("concatenate", _concatenate, "concatenate gate: each input gets its slice of the gradient",
                    "concat(…)", kind=_S, vjp=_concatenate_vjp)
STACK = _gate("stack", _stack, "stack gate: each input gets its slice of the gradient", "stack(…)",
              kind=_S, vjp=_stack_vjp)

MATMUL = _gate("matmul", "matmul", "matmul gate: ∂(A@B) gives g@Bᵀ to A and Aᵀ@g to B (mul's swap, for matrices)",
               "{0} @ {1}", kind=_L, vjp=_matmul_vjp)

CROSS_ENTROPY = _gate("cross_entropy", _cross_entropy,
                      "cross-entropy gate: softmax(x) minus the one-hot of the labels, times the upstream "
                      "gradient (scaled by 1/n for a mean)",
                      "cross_entropy({0})", kind=_R, vjp=_cross_entropy_vjp,
                      expand=lambda m, x, index=None, scale=1.0: -scale * m.sum(m.log_softmax(x, axis=-1)[index]))

# Non-differentiable helpers: results are constants (no gradient flows through them).
for _name, _np, _fmt in [
    ("sign", "sign", "sign({0})"), ("greater", "greater", "{0} > {1}"),
    ("greater_equal", "greater_equal", "{0} >= {1}"), ("less", "less", "{0} < {1}"),
    ("less_equal", "less_equal", "{0} <= {1}"), ("equal", "equal", "{0} == {1}"),
    ("not_equal", "not_equal", "{0} != {1}"), ("logical_not", "logical_not", "not {0}"),
    ("isfinite", "isfinite", "isfinite({0})"), ("isnan", "isnan", "isnan({0})"), ("isinf", "isinf", "isinf({0})"),
]:
    _gate(_name, _np, f"{_name}: a constant as far as gradients go (its derivative is zero or undefined)",
          _fmt, kind=_N, differentiable=False)


def bind(xp: Any, namespace: Any) -> None:
    """Bind every gate's forward to the array module ``xp``; fill ``namespace`` with them by name."""
    for gate in GATES.values():
        if gate.np_name is not None:
            gate.fn = getattr(xp, gate.np_name)
        else:
            gate.fn = _bind_forward(gate.forward, xp)
        setattr(namespace, gate.name, gate.fn)


def _bind_forward(forward: Callable[..., Any], xp: Any) -> Callable[..., Any]:
    def fn(*args: Any, **params: Any) -> Any:
        return forward(xp, *args, **params)

    return fn
