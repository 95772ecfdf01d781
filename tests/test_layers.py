"""cr.nn's convolution, pooling and normalization layers: forwards against naive loops (conftest's),
gradients against central differences (conftest's own, not chainrule's), BatchNorm's train/eval
behaviour and running statistics, saving and loading buffers, and the layers' error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import naive_conv2d, naive_pool2d, numeric_grad, overfit

import chainrule as cr
from chainrule import nn


def grads_match(f, args, seed=0, rtol=1e-6, atol=1e-8):
    """chainrule's gradients of sum(f(*args) * R), R random (so no symmetry hides a wrong gradient),
    equal central differences for every argument."""
    out_shape = np.shape(f(*args).data)
    weights = np.random.default_rng(seed).standard_normal(out_shape)

    def loss(*a):
        return cr.sum(f(*a) * weights)

    _, grads = cr.value_and_grad(loss, argnums=tuple(range(len(args))))(*args)
    for k, g in enumerate(grads):
        np.testing.assert_allclose(g, numeric_grad(loss, list(args), k), rtol=rtol, atol=atol,
                                   err_msg=f"argument {k}")


# ---- convolution -----------------------------------------------------------------------------


CONV_CASES = [  # (N, C, H, W), (O, kh, kw), stride, padding
    ((2, 3, 5, 5), (4, 3, 3), (1, 1), (1, 1)),
    ((1, 2, 6, 7), (3, 3, 2), (2, 1), (0, 1)),
    ((2, 1, 7, 6), (2, 3, 3), (2, 2), (1, 0)),
    ((1, 2, 4, 4), (2, 2, 2), (2, 2), (0, 0)),  # tiling windows: the reshape path
    ((1, 2, 5, 5), (2, 2, 2), (2, 2), (0, 0)),  # tiling windows with a row and column left over
    ((2, 2, 3, 4), (3, 1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_forward_matches_loops(rng, xs, ws, stride, padding):
    x = rng.standard_normal(xs)
    w = rng.standard_normal((ws[0], xs[1], ws[1], ws[2]))
    b = rng.standard_normal(ws[0])
    out = nn.conv2d(x, w, b, stride=stride, padding=padding)
    np.testing.assert_allclose(out.data, naive_conv2d(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)
    no_bias = nn.conv2d(x, w, stride=stride, padding=padding)
    np.testing.assert_allclose(no_bias.data, naive_conv2d(x, w, None, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_gradients(rng, xs, ws, stride, padding):
    x = rng.standard_normal(xs)
    w = rng.standard_normal((ws[0], xs[1], ws[1], ws[2]))
    b = rng.standard_normal(ws[0])
    grads_match(lambda x, w, b: nn.conv2d(x, w, b, stride=stride, padding=padding), [x, w, b])


def test_conv2d_second_order(rng):
    # the backward is made of gates too, so it differentiates again: d/dw of a gradient norm
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3))

    def grad_norm(w):
        gx = cr.grad(lambda x: cr.sum(cr.tanh(nn.conv2d(x, w, padding=1))))(x)
        return cr.sum(gx * gx)

    assert cr.gradcheck(grad_norm, w)


def test_conv2d_module(rng):
    layer = nn.Conv2d(3, 5, 3, padding="same", dtype=np.float64, rng=1)
    assert layer.weight.shape == (5, 3, 3, 3) and layer.bias.shape == (5,)
    x = rng.standard_normal((2, 3, 6, 6))
    out = layer(x)
    assert out.shape == (2, 5, 6, 6)
    np.testing.assert_allclose(out.data, naive_conv2d(x, layer.weight.data, layer.bias.data, (1, 1), (1, 1)))
    loss = cr.sum(out * rng.standard_normal(out.shape))
    loss.backward()
    assert layer.weight.grad.shape == layer.weight.shape and layer.bias.grad.shape == (5,)
    assert repr(layer) == "Conv2d(3 → 5, kernel_size=3, padding=1)"
    assert [n for n, _ in nn.Conv2d(1, 2, 3, bias=False).named_parameters()] == ["weight"]


def test_conv2d_float32_stays_float32(rng):
    layer = nn.Conv2d(2, 4, 3, padding=1, rng=0)
    x = cr.tensor(rng.standard_normal((3, 2, 5, 5)).astype(np.float32), requires_grad=True)
    out = layer(x)
    cr.sum(out).backward()
    assert out.dtype == np.float32 and x.grad.dtype == np.float32 and layer.weight.grad.dtype == np.float32


def test_conv2d_kaiming_initialisation():
    layer = nn.Conv2d(16, 64, 3, rng=0)  # fan-in 16·3·3 = 144
    assert abs(layer.weight.data.std() - math.sqrt(2 / 144)) < 0.003
    assert np.all(layer.bias.data == 0)
    uniform = nn.Conv2d(16, 64, 3, init="uniform", rng=0)
    assert np.abs(uniform.weight.data).max() <= 1 / 12 and np.abs(uniform.bias.data).max() <= 1 / 12
    with pytest.raises(ValueError, match="Conv2d: init must be one of"):
        nn.Conv2d(1, 1, 3, init="glorot")


@pytest.mark.parametrize("call, message", [
    (lambda: nn.Conv2d(3, 4, 3)(np.zeros((2, 2, 5, 5))), r"Conv2d: expected 3 input channels .* shape \(2, 2, 5, 5\)"),
    (lambda: nn.Conv2d(1, 4, 3)(np.zeros((2, 5, 5))), r"add the channel axis"),
    (lambda: nn.Conv2d(1, 4, 7)(np.zeros((1, 1, 5, 5))), r"kernel \(7\) is larger than the padded input's height"),
    (lambda: nn.Conv2d(1, 4, 0), r"kernel_size must be a positive integer"),
    (lambda: nn.Conv2d(1, 4, 3, stride=(1, 0)), r"stride must be a positive integer"),
    (lambda: nn.Conv2d(1, 4, 3, padding=-1), r"padding must be a non-negative integer"),
    (lambda: nn.Conv2d(1, 4, 2, padding="same"), r"'same' needs stride 1 and an odd kernel"),
    (lambda: nn.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3))), r"weight must have shape"),
    (lambda: nn.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), np.zeros(3)), r"bias must have shape \(2,\)"),
])
def test_conv2d_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- pooling ---------------------------------------------------------------------------------


POOL_CASES = [  # (N, C, H, W), kernel, stride, padding
    ((2, 3, 4, 4), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 5, 7), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1)),
    ((2, 1, 6, 5), (3, 2), (1, 2), (0, 1)),
]


@pytest.mark.parametrize("xs, k, s, p", POOL_CASES)
def test_max_pool_matches_loops_and_gradchecks(rng, xs, k, s, p):
    x = rng.standard_normal(xs)  # distinct values: no ties, so the gradient is unique
    out = nn.max_pool2d(x, k, s, p)
    np.testing.assert_allclose(out.data, naive_pool2d(x, k, s, p, np.max, -np.inf))
    grads_match(lambda x: nn.max_pool2d(x, k, s, p), [x])
    assert nn.MaxPool2d(k, s, p)(x).shape == out.shape


@pytest.mark.parametrize("xs, k, s, p", POOL_CASES)
def test_avg_pool_matches_loops_and_gradchecks(rng, xs, k, s, p):
    x = rng.standard_normal(xs)
    out = nn.avg_pool2d(x, k, s, p)
    np.testing.assert_allclose(out.data, naive_pool2d(x, k, s, p, np.mean, 0.0))
    grads_match(lambda x: nn.avg_pool2d(x, k, s, p), [x])
    assert nn.AvgPool2d(k, s, p)(x).shape == out.shape


def test_max_pool_gradient_goes_to_the_winner():
    x = cr.tensor(np.arange(16.0).reshape(1, 1, 4, 4), requires_grad=True)
    cr.sum(nn.MaxPool2d(2)(x)).backward()
    expected = np.zeros((4, 4))
    expected[1::2, 1::2] = 1  # the bottom-right element of each 2×2 block is its largest
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_pool_errors():
    with pytest.raises(ValueError, match="at most half the kernel size"):
        nn.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match=r"MaxPool2d: kernel_size must be a positive integer"):
        nn.MaxPool2d(0)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, C, H, W\)"):
        nn.avg_pool2d(np.zeros((4, 4)), 2)


# ---- batch normalization ------------------------------------------------------------------------


def test_batch_norm2d_training_normalizes_with_batch_statistics(rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.weight.data[:] = [1.0, 2.0, 0.5]
    bn.bias.data[:] = [0.0, -1.0, 3.0]
    x = rng.standard_normal((4, 3, 5, 5)) * 3 + 2
    out = bn(x).data
    mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * bn.weight.data.reshape(1, 3, 1, 1) + bn.bias.data.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # running statistics moved 10% of the way to the batch's (unbiased variance), PyTorch's convention
    n = 4 * 5 * 5
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean.ravel())
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var.ravel() * n / (n - 1))
    assert int(bn.num_batches_tracked) == 1


def test_batch_norm_eval_uses_running_statistics_and_changes_nothing(rng):
    bn = nn.BatchNorm2d(2, momentum=0.5, dtype=np.float64)
    for _ in range(3):
        bn(rng.standard_normal((8, 2, 3, 3)) * 2 + 1)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    bn.eval()
    x = rng.standard_normal((1, 2, 3, 3))  # one sample works in evaluation mode
    out = bn(x).data
    np.testing.assert_allclose(out, (x - rm.reshape(1, 2, 1, 1)) / np.sqrt(rv.reshape(1, 2, 1, 1) + 1e-5))
    np.testing.assert_array_equal(bn.running_mean, rm)  # evaluation never updates the statistics
    np.testing.assert_array_equal(bn.running_var, rv)
    bn.train()
    bn(rng.standard_normal((8, 2, 3, 3)))
    assert not np.array_equal(bn.running_mean, rm)


def test_batch_norm_cumulative_average_with_momentum_none(rng):
    bn = nn.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [rng.standard_normal((6, 3)) + i for i in range(4)]
    for b in batches:
        bn(b)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(axis=0) for b in batches], axis=0))
    np.testing.assert_allclose(bn.running_var, np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0))


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6)])
def test_batch_norm1d_gradients_in_both_modes(rng, shape):
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    grads_match(lambda x, w, b: nn.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True), [x, w, b])
    grads_match(lambda x, w, b: nn.batch_norm(x, rm, rv, w, b, training=False), [x, w, b])


def test_batch_norm2d_gradients(rng):
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    x = rng.standard_normal((3, 2, 3, 4))
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    grads_match(lambda x, w, b: nn.batch_norm(x, None, None, w, b, training=True), [x, w, b])
    # the module: its parameters get the same gradients as the functional form's arguments
    weights = rng.standard_normal(x.shape)
    bn.weight.data[:], bn.bias.data[:] = w, b
    cr.sum(bn(x) * weights).backward()
    _, (gw, gb) = cr.value_and_grad(lambda w, b: cr.sum(nn.batch_norm(x, None, None, w, b, training=True) * weights),
                                    argnums=(0, 1))(w, b)
    np.testing.assert_allclose(bn.weight.grad, gw)
    np.testing.assert_allclose(bn.bias.grad, gb)


def test_batch_norm_without_affine_has_no_parameters_but_buffers():
    bn = nn.BatchNorm2d(4, affine=False)
    assert list(bn.parameters()) == []
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input of shape \(N, 3, H, W\), got shape \(2, 4, 5"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected input of shape \(N, 3\) or \(N, 3, L\)"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm1d(3, momentum=1.5)


def test_train_and_eval_switch_batch_norm_and_dropout_in_a_model(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, dtype=np.float64, rng=0), nn.BatchNorm2d(2, dtype=np.float64),
                          nn.ReLU(), nn.Flatten(), nn.Dropout(0.5, rng=0), nn.Linear(32, 3, dtype=np.float64, rng=0))
    x = rng.standard_normal((6, 1, 4, 4))
    model.train()
    a, b = model(x).data, model(x).data
    assert not np.allclose(a, b)  # dropout draws a new mask
    model.eval()
    assert not model[1].training and not model[4].training
    c, d = model(x).data, model(x).data
    np.testing.assert_array_equal(c, d)  # deterministic, from the running statistics
    np.testing.assert_allclose(model(x[:1]).data, c[:1])  # a sample's output does not depend on the batch


def test_state_dict_and_save_load_include_running_statistics(rng, tmp_path):
    def make():
        return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2, rng=0))

    model = make()
    for _ in range(2):
        model(rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    state = model.state_dict()
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(state)
    model.save(tmp_path / "cnn.npz")
    fresh = make().load(tmp_path / "cnn.npz")
    for name, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    x = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    model.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(x).data, model(x).data)
    bad = dict(state)
    bad["1.running_var"] = np.array([1.0, np.nan])
    with pytest.raises(ValueError, match=r"1.running_var holds 1 NaN"):
        fresh.load_state_dict(bad)
    del bad["1.running_var"]
    with pytest.raises(KeyError, match="missing 1.running_var"):
        fresh.load_state_dict(bad)


# ---- layer normalization and flatten ---------------------------------------------------------------


@pytest.mark.parametrize("shape, norm", [((4, 6), 6), ((2, 3, 4), (3, 4))])
def test_layer_norm(rng, shape, norm):
    ln = nn.LayerNorm(norm, dtype=np.float64)
    ln.weight.data[...] = rng.standard_normal(ln.weight.shape)
    ln.bias.data[...] = rng.standard_normal(ln.bias.shape)
    x = rng.standard_normal(shape) * 2 + 1
    axes = tuple(range(len(shape) - np.ndim(np.zeros(norm)), len(shape)))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    np.testing.assert_allclose(ln(x).data, (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data)
    ln.eval()
    np.testing.assert_allclose(ln(x).data, (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data)
    grads_match(lambda x, w, b: nn.layer_norm(x, norm, w, b), [x, ln.weight.data.copy(), ln.bias.data.copy()])
    with pytest.raises(ValueError, match="last axes must have shape"):
        ln(np.zeros((2, 5)))


def test_flatten(rng):
    x = cr.tensor(rng.standard_normal((2, 3, 4, 5)), requires_grad=True)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(2)(x).shape == (2, 3, 20)
    cr.sum(nn.Flatten()(x) * 2).backward()
    np.testing.assert_array_equal(x.grad, np.full(x.shape, 2.0))
    with pytest.raises(ValueError, match="cannot join axes 2..1"):
        nn.Flatten(2, 1)(x)


def test_a_small_cnn_learns_a_batch(rng):
    # overfit 16 random images with random labels: the whole composition trains end to end
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3, padding=1, rng=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.LayerNorm(32), nn.Linear(32, 3, rng=3))
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    loss = overfit(model, x, y, lr=0.02, steps=60)
    model.eval()
    assert float(loss.item()) < 0.1
    assert (model(x).data.argmax(axis=1) == y).mean() == 1.0
