"""cr.optim: each update rule against its formula written out by hand, in place on the parameters."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim


def make_param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def set_grad(p, g):
    p.grad = np.array(g, dtype=np.float64)


def test_sgd_one_step_is_w_minus_lr_grad():
    """The worksheet: w -= step_size * grad, computed through a real backward pass."""
    w = make_param([1.0, -2.0, 3.0])
    x = np.array([0.5, 1.5, -1.0])
    data = w.data
    opt = optim.SGD([w], lr=0.1)
    loss = cr.sum(w * w * x)  # d/dw = 2 w x
    loss.backward()
    expected = np.array([1.0, -2.0, 3.0]) - 0.1 * (2 * np.array([1.0, -2.0, 3.0]) * x)
    opt.step()
    np.testing.assert_allclose(w.data, expected)
    assert w.data is data  # updated in place


def test_sgd_momentum_nesterov_weight_decay_by_hand():
    g1, g2 = np.array([1.0, -0.5]), np.array([0.25, 2.0])
    w0 = np.array([0.3, -0.7])
    lr, mu, wd = 0.1, 0.9, 0.01
    for nesterov in (False, True):
        w = make_param(w0)
        opt = optim.SGD([w], lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
        # by hand: d = g + wd*w; v = mu*v + d; step along v (or d + mu*v with Nesterov)
        v = np.zeros(2)
        expect = w0.copy()
        for g in (g1, g2):
            set_grad(w, g)
            opt.step()
            d = g + wd * expect
            v = mu * v + d
            expect = expect - lr * (d + mu * v if nesterov else v)
            np.testing.assert_allclose(w.data, expect, rtol=1e-12)


def adam_by_hand(w, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    w = w.copy()
    for t, g in enumerate(grads, start=1):
        if wd and decoupled:
            w = w - lr * wd * w
        elif wd:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("cls,wd", [(optim.Adam, 0.0), (optim.Adam, 0.1), (optim.AdamW, 0.1)])
def test_adam_steps_by_hand(cls, wd):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    w = make_param(w0)
    opt = cls([w], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    for i, g in enumerate(grads, start=1):
        set_grad(w, g)
        opt.step()
        expected = adam_by_hand(w0, grads[:i], 0.01, 0.8, 0.95, 1e-6, wd, decoupled=cls is optim.AdamW)
        np.testing.assert_allclose(w.data, expected, rtol=1e-12)


def test_first_adam_step_is_lr_times_sign():
    w = make_param([1.0, 1.0, 1.0])
    set_grad(w, [3.0, -0.01, 250.0])
    optim.Adam([w], lr=0.5, eps=1e-12).step()
    np.testing.assert_allclose(w.data, [0.5, 1.5, 0.5])


def test_adamw_defaults_decay_and_float32_is_kept():
    w = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.AdamW([w])
    assert opt.weight_decay == 0.01
    w.grad = np.array([1, 1, 1], dtype=np.float32)
    opt.step()
    assert w.dtype == np.float32 and opt.m[0].dtype == np.float32


def test_zero_grad_and_parameters_without_gradients():
    a, b = make_param([1.0]), make_param([2.0])
    opt = optim.SGD([a, b], lr=1.0)
    set_grad(a, [0.5])
    opt.step()  # b has no gradient: left alone
    assert a.data[0] == 0.5 and b.data[0] == 2.0
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_gradients_accumulate_until_zero_grad():
    w = make_param([1.0])
    opt = optim.SGD([w], lr=0.1)
    for _ in range(2):
        cr.sum(3 * w).backward()
    np.testing.assert_allclose(w.grad, [6.0])
    opt.zero_grad()
    cr.sum(3 * w).backward()
    np.testing.assert_allclose(w.grad, [3.0])


def test_sgd_converges_on_a_quadratic():
    target = np.array([1.0, -2.0, 0.5])
    w = make_param(np.zeros(3))
    opt = optim.SGD([w], lr=0.1, momentum=0.5)
    for _ in range(100):
        opt.zero_grad()
        cr.sum((w - target) ** 2).backward()
        opt.step()
    np.testing.assert_allclose(w.data, target, atol=1e-6)


def test_learning_rate_can_change_between_steps():
    w = make_param([0.0])
    opt = optim.SGD([w], lr=1.0)
    set_grad(w, [1.0])
    opt.step()
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(w.data, [-1.5])


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD([], lr=0.1), "no parameters"),
    (lambda p: optim.SGD([np.zeros(2)], lr=0.1), "parameter 0"),
    (lambda p: optim.SGD([p], lr=-1.0), "lr must be positive"),
    (lambda p: optim.SGD([p], lr="fast"), "lr must be a number"),
    (lambda p: optim.SGD([p], momentum=1.5), "momentum"),
    (lambda p: optim.SGD([p], nesterov=True), "nesterov"),
    (lambda p: optim.Adam([p], betas=(0.9,)), "betas"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p: optim.AdamW([p], weight_decay=-1), "weight_decay"),
])
def test_bad_settings_are_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(make_param([1.0]))


def test_used_up_iterator_is_explained():
    model = nn.Linear(2, 2)
    params = model.parameters()
    list(params)
    with pytest.raises(ValueError, match="used up"):
        optim.SGD(params)


def test_a_backward_pass_through_a_graph_made_before_a_step_raises() -> None:
    """The step changes the values the graph's nodes read: never a gradient at the new values."""
    for opt_class in (cr.optim.SGD, cr.optim.Adam):
        w = cr.nn.Parameter(np.array([1.0, 2.0]))
        opt = opt_class([w], lr=0.5)
        loss = (w ** 3).sum()
        loss.backward(retain_graph=True)
        np.testing.assert_allclose(w.grad, [3.0, 12.0])
        opt.step()
        opt.zero_grad()
        with pytest.raises(RuntimeError, match="changed in place"):
            loss.backward()
