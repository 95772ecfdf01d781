"""Gradients against an independent engine (HIPS autograd, in the test extra): same functions,
written once against an ops namespace, differentiated by both."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr

autograd = pytest.importorskip("autograd")
anp = pytest.importorskip("autograd.numpy")


def _sigmoid_ag(x):
    return 1 / (1 + anp.exp(-x))


class CR:
    """chainrule's names for the ops the functions below use."""

    log, exp, sin, cos, tanh, sqrt, sum, mean, maximum, where = (
        cr.log, cr.exp, cr.sin, cr.cos, cr.tanh, cr.sqrt, cr.sum, cr.mean, cr.maximum, cr.where)
    sigmoid = staticmethod(cr.sigmoid)
    logsumexp = staticmethod(cr.logsumexp)
    softmax = staticmethod(cr.softmax)


class AG:
    log, exp, sin, cos, tanh, sqrt, sum, mean, maximum, where = (
        anp.log, anp.exp, anp.sin, anp.cos, anp.tanh, anp.sqrt, anp.sum, anp.mean, anp.maximum, anp.where)
    sigmoid = staticmethod(_sigmoid_ag)

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False):
        from autograd.scipy.special import logsumexp

        return logsumexp(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def softmax(x, axis=-1):
        e = anp.exp(x - anp.max(x, axis=axis, keepdims=True))
        return e / anp.sum(e, axis=axis, keepdims=True)


FUNCTIONS = {
    "complex_layer": lambda m, x, y: m.log(x) * m.sigmoid(m.sqrt(y)) / m.sigmoid((x + y) ** 2),
    "q2c": lambda m, x, y: (m.log(x) + m.sin(y)) ** 2 + 4 * x,
    "broadcast_matmul": lambda m, x, y: m.tanh(x[:, None] * y[None, :] @ (y[:, None] + 1.5)),
    "reductions": lambda m, x, y: m.logsumexp(x * y[::-1], axis=0) + m.mean(m.maximum(x, y) ** 2),
    "softmax": lambda m, x, y: m.sum(m.softmax(x[None, :] * y[:, None], axis=1) * m.cos(y)[:, None]),
    "where_fanout": lambda m, x, y: m.where(x > 1.0, x * x * y, m.exp(-y) + x),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_gradients_agree_with_autograd(name: str) -> None:
    f = FUNCTIONS[name]
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    out, (gx, gy) = cr.value_and_grad(lambda a, b: f(CR, a, b), argnums=(0, 1))(x, y)
    ref_out = f(AG, x, y)
    ag = autograd.grad(lambda ab: anp.sum(f(AG, ab[0], ab[1])))((x, y))
    np.testing.assert_allclose(out, ref_out, rtol=1e-12)
    np.testing.assert_allclose(gx, ag[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gy, ag[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["complex_layer", "q2c"])
def test_second_derivatives_agree_with_autograd(name: str) -> None:
    f = FUNCTIONS[name]
    x, y = np.array([1.3, 0.7]), np.array([0.9, 1.6])
    ours = cr.grad(lambda a: cr.grad(lambda b: f(CR, b, y))(a))(x)
    theirs = autograd.grad(lambda a: anp.sum(autograd.elementwise_grad(lambda b: f(AG, b, y))(a)))(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
