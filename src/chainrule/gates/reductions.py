"""Reductions and scans: gates that combine many elements along axes (sum, prod, var, cumsum, softmax...).

Their derivative is a vector-Jacobian rule ``(m, g, x, out, needs, **params) -> (grad,)``, written
with the ops namespace ``m`` so it runs on arrays, on differentiable functions and on symbols.
"""

from __future__ import annotations

from typing import Any

from .core import REDUCTION, Gate, count, index_into, keepdims_shape, mask, normalize_axis, reduced_shape, register

_AXES = {"axis": None, "keepdims": False}
_SUM_ORDER = ("axis", "dtype", "out", "keepdims")     # np.sum(a, axis, dtype, out, keepdims)
_MAX_ORDER = ("axis", "out", "keepdims")              # np.max(a, axis, out, keepdims)
_VAR_ORDER = ("axis", "dtype", "out", "ddof", "keepdims")


def _gate(name: str, forward: Any, explain: str, fmt: str, **kw: Any) -> Gate:
    return register(Gate(name, forward, explain, fmt, kind=kw.pop("kind", REDUCTION), **kw))


def _spread(m: Any, g: Any, shape: tuple[int, ...], axis: Any, keepdims: bool) -> Any:
    """Upstream gradient of a reduction, reshaped so it broadcasts against the input."""
    return g if keepdims else m.reshape(g, keepdims_shape(shape, axis))


def _same_shape(shape: tuple[int, ...], **_: Any) -> tuple[int, ...]:
    return shape


# ---- forwards that are more than one xp call ---------------------------------------------------


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
    return scale * xp.sum(lse - index_into(x, index))


# ---- the standard's forms where NumPy's differ ------------------------------------------------------


def _var_std(xp: Any, x: Any, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    return xp.var(x, axis=axis, correction=ddof, keepdims=keepdims)


def _std_std(xp: Any, x: Any, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    return xp.std(x, axis=axis, correction=ddof, keepdims=keepdims)


def _scan_std(name: str) -> Any:
    def scan(xp: Any, x: Any, axis: Any = None) -> Any:
        # NumPy's scans flatten when axis is None; the standard's need an axis
        if axis is None:
            x, axis = xp.reshape(x, (-1,)), 0
        return getattr(xp, name)(x, axis=axis)

    return scan


# ---- vector-Jacobian rules ---------------------------------------------------------------------------


def _sum_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    return (m.broadcast_to(_spread(m, g, x.shape, axis, keepdims), x.shape),)


def _mean_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    return (m.broadcast_to(_spread(m, g, x.shape, axis, keepdims) / count(x.shape, axis), x.shape),)


def _extreme_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    # the gradient goes to the element(s) that won; ties share it equally
    hit = mask(m, x == _spread(m, out, x.shape, axis, keepdims))
    return (_spread(m, g, x.shape, axis, keepdims) * hit / m.sum(hit, axis=axis, keepdims=True),)


def _prod_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    # ∂Πx/∂xᵢ is the product of the *other* elements: exclusive products from the left and from the
    # right (cumprod), exact where some xᵢ are 0 (where out/x would give 0/0)
    axes = normalize_axis(axis, x.ndim)
    rest = tuple(a for a in range(x.ndim) if a not in axes)
    perm = rest + axes
    xt = m.transpose(x, perm) if perm != tuple(range(x.ndim)) else x
    lead = tuple(x.shape[a] for a in rest)
    flat = m.reshape(xt, lead + (count(x.shape, axis),))
    ones = m.ones_like(flat[..., :1])
    left = m.concatenate([ones, m.cumprod(flat[..., :-1], axis=-1)], axis=-1)
    right = m.flip(m.concatenate([ones, m.cumprod(m.flip(flat, axis=-1)[..., :-1], axis=-1)], axis=-1), axis=-1)
    others = m.reshape(left * right, xt.shape)
    if perm != tuple(range(x.ndim)):
        inverse = [0] * len(perm)
        for i, a in enumerate(perm):
            inverse[a] = i
        others = m.transpose(others, tuple(inverse))
    return (_spread(m, g, x.shape, axis, keepdims) * others,)


def _var_vjp(m, g, x, out, needs, axis=None, ddof=0, keepdims=False):
    n = count(x.shape, axis) - ddof
    centred = x - m.mean(x, axis=axis, keepdims=True)
    return (_spread(m, g, x.shape, axis, keepdims) * (2 / n) * centred,)


def _std_vjp(m, g, x, out, needs, axis=None, ddof=0, keepdims=False):
    # at zero spread (one element, or all equal) std has a kink, like |x| at 0: the gradient is 0 there
    n = count(x.shape, axis) - ddof
    centred = x - m.mean(x, axis=axis, keepdims=True)
    spread = _spread(m, out, x.shape, axis, keepdims)
    return (_spread(m, g, x.shape, axis, keepdims) * centred / (n * m.where(spread == 0, 1.0, spread)),)


def _nansum_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    return (_spread(m, g, x.shape, axis, keepdims) * mask(m, m.logical_not(m.isnan(x))),)


def _nanmean_vjp(m, g, x, out, needs, axis=None, keepdims=False):
    present = mask(m, m.logical_not(m.isnan(x)))
    return (_spread(m, g, x.shape, axis, keepdims) * present / m.sum(present, axis=axis, keepdims=True),)


def _cumsum_vjp(m, g, x, out, needs, axis=None):
    # each xᵢ feeds every later partial sum: the gradient is the reversed running sum of g
    if axis is None:
        return (m.reshape(_reverse_cumsum(m, m.reshape(g, (-1,)), 0), x.shape),)
    return (_reverse_cumsum(m, g, axis),)


def _cumprod_vjp(m, g, x, out, needs, axis=None):
    # out_j = Π_{k≤j} x_k, so ∂out_j/∂x_i = out_j / x_i (i ≤ j) where x_i ≠ 0. Exact where x has
    # zeros: after the first zero of a run every later x_i gets 0, and the first zero itself gets
    # Σ_{j≥i} g_j·Π_{k≤j, k≠i} x_k, the same sum with that zero replaced by 1
    if axis is None:
        flat = _cumprod_vjp(m, m.reshape(g, (-1,)), m.reshape(x, (-1,)), m.reshape(out, (-1,)), needs, axis=0)[0]
        return (m.reshape(flat, x.shape),)
    zero = x == 0
    first = m.logical_and(zero, m.cumsum(mask(m, zero), axis=axis) == 1)
    tail = _reverse_cumsum(m, g * out, axis)
    plain = m.where(zero, 0.0, tail / m.where(zero, 1.0, x))
    others = m.cumprod(m.where(first, 1.0, x), axis=axis)
    return (m.where(first, _reverse_cumsum(m, g * others, axis), plain),)


def _reverse_cumsum(m, v, axis):
    return m.flip(m.cumsum(m.flip(v, axis=axis), axis=axis), axis=axis)


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


def _scan_shape(shape: tuple[int, ...], axis: Any = None) -> tuple[int, ...]:
    return (int(_prod(shape)),) if axis is None else shape


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---- forward-mode rules (the gates without one are linear, or transpose their vjp) ------------------------


def _extreme_jvp(m, tangents, x, out, axis=None, keepdims=False):
    hit = mask(m, x == _spread(m, out, x.shape, axis, keepdims))
    share = m.sum(tangents[0] * hit, axis=axis, keepdims=keepdims)
    return share / m.sum(hit, axis=axis, keepdims=keepdims)


def _prod_jvp(m, tangents, x, out, axis=None, keepdims=False):
    others = _prod_vjp(m, m.ones_like(out), x, out, (True,), axis=axis, keepdims=keepdims)[0]
    return m.sum(tangents[0] * others, axis=axis, keepdims=keepdims)


def _var_jvp(m, tangents, x, out, axis=None, ddof=0, keepdims=False):
    centred = x - m.mean(x, axis=axis, keepdims=True)
    return m.sum(centred * tangents[0], axis=axis, keepdims=keepdims) * (2 / (count(x.shape, axis) - ddof))


def _std_jvp(m, tangents, x, out, axis=None, ddof=0, keepdims=False):
    centred = x - m.mean(x, axis=axis, keepdims=True)
    spread = m.where(out == 0, 1.0, out)
    return m.sum(centred * tangents[0], axis=axis, keepdims=keepdims) / ((count(x.shape, axis) - ddof) * spread)


def _nansum_jvp(m, tangents, x, out, axis=None, keepdims=False):
    return m.sum(m.where(m.isnan(x), 0.0, tangents[0]), axis=axis, keepdims=keepdims)


def _nanmean_jvp(m, tangents, x, out, axis=None, keepdims=False):
    present = m.logical_not(m.isnan(x))
    return m.sum(m.where(present, tangents[0], 0.0), axis=axis, keepdims=keepdims) / \
        m.sum(mask(m, present), axis=axis, keepdims=keepdims)


def _logsumexp_jvp(m, tangents, x, out, axis=None, keepdims=False):
    return m.sum(m.exp(x - _spread(m, out, x.shape, axis, keepdims)) * tangents[0], axis=axis, keepdims=keepdims)


def _softmax_jvp(m, tangents, x, out, axis=-1):
    t = tangents[0]
    return out * (t - m.sum(out * t, axis=axis, keepdims=True))


def _log_softmax_jvp(m, tangents, x, out, axis=-1):
    t = tangents[0]
    return t - m.sum(m.exp(out) * t, axis=axis, keepdims=True)


def _cross_entropy_jvp(m, tangents, x, out, index=None, scale=1.0):
    t = tangents[0]
    e = m.exp(x - m.max(x, axis=-1, keepdims=True))
    return scale * (m.sum(e / m.sum(e, axis=-1, keepdims=True) * t) - m.sum(index_into(t, index)))


# ---- the gates ---------------------------------------------------------------------------------------

SUM = _gate("sum", "sum", "sum gate: copies the upstream gradient to every summed element", "sum({0})",
            linear="linear", vjp=_sum_vjp, order=_SUM_ORDER, params=_AXES, method="sum")
MEAN = _gate("mean", "mean", "mean gate: shares the upstream gradient equally, 1/n to each element", "mean({0})",
             linear="linear", vjp=_mean_vjp, order=_SUM_ORDER, params=_AXES, method="mean")
MAX = _gate("max", "max", "max gate: routes the gradient to the largest element (ties share it)", "max({0})",
            jvp=_extreme_jvp, vjp=_extreme_vjp, order=_MAX_ORDER, params=_AXES, numpy=("max", "amax"), method="max")
MIN = _gate("min", "min", "min gate: routes the gradient to the smallest element (ties share it)", "min({0})",
            jvp=_extreme_jvp, vjp=_extreme_vjp, order=_MAX_ORDER, params=_AXES, numpy=("min", "amin"), method="min")
PROD = _gate("prod", "prod", "prod gate: each element gets the upstream gradient times the product of the others",
             "prod({0})", jvp=_prod_jvp, vjp=_prod_vjp, order=_SUM_ORDER, params=_AXES, method="prod")
VAR = _gate("var", "var", "var gate: each element gets 2·(x − mean)/(n − ddof) times the upstream gradient",
            "var({0})", jvp=_var_jvp, vjp=_var_vjp, order=_VAR_ORDER, params={"axis": None, "ddof": 0,
            "keepdims": False},
            method="var", std=_var_std)
STD = _gate("std", "std", "std gate: each element gets (x − mean)/((n − ddof)·std) times the upstream gradient",
            "std({0})", jvp=_std_jvp, vjp=_std_vjp, order=_VAR_ORDER,
            params={"axis": None, "ddof": 0, "keepdims": False}, method="std", std=_std_std)
NANSUM = _gate("nansum", "nansum", "nansum gate: like sum; NaN elements were skipped and get no gradient",
               "nansum({0})", jvp=_nansum_jvp, vjp=_nansum_vjp, order=_SUM_ORDER, params=_AXES)
NANMEAN = _gate("nanmean", "nanmean", "nanmean gate: shares the gradient equally among the elements that are not NaN",
                "nanmean({0})", jvp=_nanmean_jvp, vjp=_nanmean_vjp, order=_SUM_ORDER, params=_AXES)
CUMSUM = _gate("cumsum", "cumsum", "cumsum gate: each element feeds every later partial sum, so its gradient is "
               "the running sum of the upstream gradient from the end", "cumsum({0})", linear="linear", vjp=_cumsum_vjp,
               params={"axis": None}, order=("axis", "dtype", "out"), shape=_scan_shape, method="cumsum",
               std=_scan_std("cumulative_sum"))
CUMPROD = _gate("cumprod", "cumprod", "cumprod gate: each partial product out_j sends g_j·out_j/x_i to every "
                "earlier element x_i", "cumprod({0})", vjp=_cumprod_vjp, params={"axis": None},
                order=("axis", "dtype", "out"), shape=_scan_shape,
                method="cumprod", std=_scan_std("cumulative_prod"))
LOGSUMEXP = _gate("logsumexp", _logsumexp, "logsumexp gate: its gradient is the softmax of its input",
                  "logsumexp({0})", jvp=_logsumexp_jvp, vjp=_logsumexp_vjp, params=_AXES,
                  expand=lambda m, x, axis=None, keepdims=False: _logsumexp(m, x, axis, keepdims, guard=False))
SOFTMAX = _gate("softmax", _softmax, "softmax gate: s·(g − Σ g·s), from its own output s", "softmax({0})",
                jvp=_softmax_jvp, vjp=_softmax_vjp, params={"axis": -1}, shape=_same_shape,
                expand=lambda m, x, axis=-1: _softmax(m, x, axis, guard=False))
LOG_SOFTMAX = _gate("log_softmax", _log_softmax, "log-softmax gate: g − softmax(x)·Σ g", "log_softmax({0})",
                    jvp=_log_softmax_jvp, vjp=_log_softmax_vjp, params={"axis": -1}, shape=_same_shape,
                    expand=lambda m, x, axis=-1: x - m.logsumexp(x, axis=axis, keepdims=True))
CROSS_ENTROPY = _gate("cross_entropy", _cross_entropy,
                      "cross-entropy gate: softmax(x) minus the one-hot of the labels, times the upstream "

                                           "gradient (scaled by 1/n for a mean)",
                      "cross_entropy({0})", jvp=_cross_entropy_jvp, vjp=_cross_entropy_vjp,
                      params={"index": None, "scale": 1.0},
                      shape=lambda shape, **_: (),
                      expand=lambda m, x, index=None, scale=1.0: -scale * m.sum(m.log_softmax(x, axis=-1)[index]))
