"""Course layers in plain NumPy, written the way a CS231n student writes them (``np.`` calls, in-place
index assignment, stride tricks), each differentiated by ``cr.grad`` unchanged.

Every gradient is checked against central differences of the same function run on plain NumPy arrays
(``conftest.numeric_grad``, independent of chainrule); the forward values against plain NumPy, and the
convolutions and poolings against naive loops. The caller's arrays must come back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import naive_conv2d, naive_pool2d, numeric_grad

import chainrule as cr

# ---------------------------------------------------------------------------------------------
# the layers, as a student writes them
# ---------------------------------------------------------------------------------------------


def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1).dot(w) + b


def relu_forward(x):
    return np.maximum(0, x)


def relu_forward_masked(x):
    out = x.copy()
    out[out < 0] = 0
    return out


def softmax_loss(x, y):
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    N = x.shape[0]
    return -np.sum(log_probs[np.arange(N), y]) / N


def svm_loss(x, y):
    N = x.shape[0]
    correct = x[np.arange(N), y]
    margins = np.maximum(0, x - correct[:, np.newaxis] + 1.0)
    margins[np.arange(N), y] = 0
    return np.sum(margins) / N


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    var = np.var(x, axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta


def batchnorm_forward_std(x, gamma, beta, eps=1e-5):
    x_hat = (x - np.mean(x, axis=0)) / (np.std(x, axis=0) + eps)
    return gamma * x_hat + beta


def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=1, keepdims=True)
    var = np.var(x, axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def dropout_forward(x, p=0.6):
    mask = np.random.default_rng(0).random(x.shape) < p
    return x * mask / p


def conv_forward_einsum(x, w, b, pad=1, stride=1):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,fcij->nfhw", windows, w) + b[None, :, None, None]


def conv_forward_tensordot(x, w, b, pad=1, stride=1):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, H', W', F)
    return out.transpose(0, 3, 1, 2) + b.reshape(1, -1, 1, 1)


def conv_forward_im2col(x, w, b, pad=1, stride=1, as_strided=np.lib.stride_tricks.as_strided):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho = (H + 2 * pad - HH) // stride + 1
    Wo = (W + 2 * pad - WW) // stride + 1
    sN, sC, sH, sW = xp.strides
    cols = as_strided(xp, shape=(N, Ho, Wo, C, HH, WW), strides=(sN, stride * sH, stride * sW, sC, sH, sW))
    cols = cols.reshape(N * Ho * Wo, C * HH * WW)
    out = cols @ w.reshape(F, -1).T + b
    return out.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2)


def max_pool_reshape(x, pool=2):
    N, C, H, W = x.shape
    return x.reshape(N, C, H // pool, pool, W // pool, pool).max(axis=3).max(axis=4)


def max_pool_windows(x, pool=2, stride=2):
    windows = np.lib.stride_tricks.sliding_window_view(x, (pool, pool), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(4, 5))


def two_layer_convnet_loss(x, w1, b1, w2, b2, y):
    h = max_pool_reshape(relu_forward(conv_forward_einsum(x, w1, b1)))
    return softmax_loss(affine_forward(h, w2, b2), y)


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------


def naive_conv(x, w, b, pad=1, stride=1):
    return naive_conv2d(x, w, b, (stride, stride), (pad, pad))


def naive_max_pool(x, pool=2, stride=2):
    return naive_pool2d(x, (pool, pool), (stride, stride))


def check_layer(f: Callable[..., Any], *args: np.ndarray, expected: Any = None) -> None:
    """``cr.value_and_grad`` of ``f`` with respect to every argument against plain NumPy: the value against
    ``f`` run on arrays (or ``expected``), each gradient against central differences; the caller's arrays
    unchanged."""
    args = tuple(np.array(a, dtype=np.float64) for a in args)
    before = [a.copy() for a in args]
    value, grads = cr.value_and_grad(f, argnums=tuple(range(len(args))))(*args)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b, err_msg="the caller's array was modified")
    plain = f(*[a.copy() for a in args])
    np.testing.assert_allclose(value, plain if expected is None else expected, rtol=1e-10, atol=1e-12)
    for k, g in enumerate(grads):
        num = numeric_grad(lambda *a: f(*[v.copy() for v in a]), list(args), k)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7, err_msg=f"gradient of argument {k}")


def weighted(f: Callable[..., Any], shape: tuple[int, ...], seed: int = 5) -> Callable[..., Any]:
    """``sum(f(...) * W)`` with a fixed random ``W``: a scalar whose gradient is not trivially zero (the
    plain sum of a normalisation layer's output does not depend on its input)."""
    W = np.random.default_rng(seed).standard_normal(shape)

    def loss(*args: Any) -> Any:
        return np.sum(f(*args) * W)

    return loss


@pytest.fixture
def data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    N, D, M, C = 4, 6, 5, 3
    return {"x": rng.standard_normal((N, 2, 3)), "w": rng.standard_normal((D, M)) * 0.5,
            "b": rng.standard_normal(M), "s": rng.standard_normal((N, C)) * 2, "y": np.array([0, 2, 1, 2]),
            "h": rng.standard_normal((N, D)), "img": rng.standard_normal((2, 3, 6, 6)),
            "wc": rng.standard_normal((4, 3, 3, 3)) * 0.3, "bc": rng.standard_normal(4)}


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------


def test_affine_forward(data: dict[str, np.ndarray]) -> None:
    check_layer(weighted(affine_forward, (4, 5)), data["x"], data["w"], data["b"])


@pytest.mark.parametrize("relu", [relu_forward, relu_forward_masked], ids=["np.maximum", "copy+mask assignment"])
def test_relu(relu: Callable[..., Any], data: dict[str, np.ndarray]) -> None:
    x = data["h"]
    assert np.min(np.abs(x)) > 1e-3  # no input at the kink, where central differences are meaningless
    check_layer(weighted(relu, x.shape), x)


def test_softmax_loss(data: dict[str, np.ndarray]) -> None:
    y = data["y"]
    check_layer(lambda s: softmax_loss(s, y), data["s"])


def test_softmax_loss_is_stable_for_large_scores(data: dict[str, np.ndarray]) -> None:
    y, s = data["y"], data["s"] + 800.0  # exp(800) overflows: only the max-shifted form survives
    g = cr.grad(lambda s: softmax_loss(s, y))(s)
    probs = np.exp(data["s"] - data["s"].max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(4), y] -= 1  # the closed form: (softmax - one_hot) / N
    np.testing.assert_allclose(g, probs / 4, rtol=1e-9, atol=1e-12)


def test_svm_loss_with_index_assignment(data: dict[str, np.ndarray]) -> None:
    y, s = data["y"], data["s"]
    margins = s - s[np.arange(4), y][:, None] + 1.0
    assert np.min(np.abs(margins)) > 1e-3  # away from the hinge's kink
    check_layer(lambda s: svm_loss(s, y), s)
    # the closed form: +1 for each positive margin, minus their count at the correct class, over N
    pos = (margins > 0).astype(float)
    pos[np.arange(4), y] = 0
    expected = pos.copy()
    expected[np.arange(4), y] = -pos.sum(axis=1)
    np.testing.assert_allclose(cr.grad(lambda s: svm_loss(s, y))(s), expected / 4, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bn", [batchnorm_forward, batchnorm_forward_std], ids=["np.var", "np.std"])
def test_batchnorm(bn: Callable[..., Any], rng: np.random.Generator) -> None:
    x, gamma, beta = rng.standard_normal((5, 3)) * 2 + 1, rng.standard_normal(3), rng.standard_normal(3)
    check_layer(weighted(bn, (5, 3)), x, gamma, beta)


def test_layernorm(rng: np.random.Generator) -> None:
    x, gamma, beta = rng.standard_normal((4, 6)) * 3, rng.standard_normal(6), rng.standard_normal(6)
    check_layer(weighted(layernorm_forward, (4, 6)), x, gamma, beta)


def test_dropout_with_a_fixed_mask(data: dict[str, np.ndarray]) -> None:
    x = data["h"]
    check_layer(weighted(dropout_forward, x.shape, seed=7), x)
    mask = np.random.default_rng(0).random(x.shape) < 0.6
    W = np.random.default_rng(7).standard_normal(x.shape)
    np.testing.assert_allclose(cr.grad(weighted(dropout_forward, x.shape, seed=7))(x), W * mask / 0.6,
                               rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("conv", [conv_forward_einsum, conv_forward_tensordot],
                         ids=["pad+windows+einsum", "pad+windows+tensordot"])
def test_conv_forward(conv: Callable[..., Any], data: dict[str, np.ndarray]) -> None:
    x, w, b = data["img"], data["wc"], data["bc"]
    np.testing.assert_allclose(conv(x, w, b), naive_conv(x, w, b), rtol=1e-12, atol=1e-12)  # the layer itself
    loss = weighted(conv, (2, 4, 6, 6))
    W = np.random.default_rng(5).standard_normal((2, 4, 6, 6))
    check_layer(loss, x, w, b, expected=np.sum(naive_conv(x, w, b) * W))


def test_conv_forward_with_stride_two(data: dict[str, np.ndarray]) -> None:
    x, w, b = data["img"], data["wc"], data["bc"]

    def f(x, w, b):
        return conv_forward_einsum(x, w, b, pad=1, stride=2)

    np.testing.assert_allclose(f(x, w, b), naive_conv(x, w, b, stride=2), rtol=1e-12, atol=1e-12)
    check_layer(weighted(f, (2, 4, 3, 3)), x, w, b)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_forward_im2col_as_strided(stride: int, data: dict[str, np.ndarray]) -> None:
    """im2col with ``np.lib.stride_tricks.as_strided``. NumPy gives as_strided no dispatch (it converts
    its input to a plain array), so chainrule may refuse it on tensors, but only with an error naming its
    own ``cr.as_strided``; the same layer written with that one must then be right."""
    x, w, b = data["img"], data["wc"], data["bc"]
    shape = (2, 4, 6 // stride, 6 // stride)
    W = np.random.default_rng(5).standard_normal(shape)
    expected = np.sum(naive_conv(x, w, b, stride=stride) * W)

    def student(x, w, b):
        return conv_forward_im2col(x, w, b, stride=stride)

    np.testing.assert_allclose(student(x, w, b), naive_conv(x, w, b, stride=stride), rtol=1e-12, atol=1e-12)
    try:
        check_layer(weighted(student, shape), x, w, b, expected=expected)
    except TypeError as e:
        if "cr.as_strided" not in str(e):
            raise

        def advised(x, w, b):
            return conv_forward_im2col(x, w, b, stride=stride, as_strided=cr.as_strided)

        check_layer(weighted(advised, shape), x, w, b, expected=expected)


@pytest.mark.parametrize("pool", [max_pool_reshape, max_pool_windows], ids=["reshape+max", "windows+max"])
def test_max_pool(pool: Callable[..., Any], data: dict[str, np.ndarray]) -> None:
    x = data["img"]
    np.testing.assert_allclose(pool(x), naive_max_pool(x), rtol=0, atol=0)
    W = np.random.default_rng(5).standard_normal((2, 3, 3, 3))
    check_layer(weighted(pool, (2, 3, 3, 3)), x, expected=np.sum(naive_max_pool(x) * W))


def test_two_layer_convnet_loss(data: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    x, w1, b1 = data["img"], data["wc"], data["bc"]
    w2, b2, y = rng.standard_normal((4 * 3 * 3, 5)) * 0.3, rng.standard_normal(5), np.array([1, 4])
    check_layer(lambda x, w1, b1, w2, b2: two_layer_convnet_loss(x, w1, b1, w2, b2, y), x, w1, b1, w2, b2)
