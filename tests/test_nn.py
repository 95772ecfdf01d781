"""cr.nn: layers and losses against numerical gradients and NumPy references; Module bookkeeping
(parameters, modes, state_dict, save/load); a small network overfitting a tiny batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import numeric_grad, overfit

import chainrule as cr
from chainrule import nn


def param_grads_match(model: nn.Module, loss_of_model, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Backpropagated parameter gradients equal central differences of the loss in each parameter."""
    model.zero_grad()
    loss_of_model().backward()
    for name, p in model.named_parameters():
        expected = np.zeros_like(p.data)
        for idx in np.ndindex(p.shape):
            old = p.data[idx]
            p.data[idx] = old + 1e-6
            with cr.no_grad():
                up = float(loss_of_model().item())
            p.data[idx] = old - 1e-6
            with cr.no_grad():
                down = float(loss_of_model().item())
            p.data[idx] = old
            expected[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(p.grad, expected, rtol=rtol, atol=atol, err_msg=name)


# ---- layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["he", "xavier", "lecun", "uniform"])
def test_linear_gradients(rng, init):
    layer = nn.Linear(4, 3, init=init, dtype=np.float64, rng=1)
    x = rng.standard_normal((5, 4))
    w = rng.standard_normal((5, 3))
    assert cr.gradcheck(lambda x: cr.sum(layer(x) * w), x)
    param_grads_match(layer, lambda: cr.sum(cr.tanh(layer(x)) * w))


def test_linear_is_x_at_w_plus_b(rng):
    layer = nn.Linear(3, 2, init="uniform", dtype=np.float64, rng=rng)
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(layer(x).data, x @ layer.weight.data + layer.bias.data)
    assert layer.weight.shape == (3, 2) and layer.bias.shape == (2,)
    no_bias = nn.Linear(3, 2, bias=False, rng=rng)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_linear_initialisations_have_their_scales():
    he = nn.Linear(400, 300, init="he", rng=0)
    assert abs(he.weight.data.std() - math.sqrt(2 / 400)) < 0.002
    assert np.all(he.bias.data == 0)
    lecun = nn.Linear(400, 300, init="lecun", rng=0)
    assert abs(lecun.weight.data.std() - math.sqrt(1 / 400)) < 0.002
    xavier = nn.Linear(400, 300, init="xavier", rng=0).weight.data
    bound = math.sqrt(6 / 700)
    assert xavier.max() <= bound and xavier.min() >= -bound and xavier.max() > 0.95 * bound
    uni = nn.Linear(400, 300, init="uniform", rng=0)
    assert np.abs(uni.weight.data).max() <= 1 / 20 and np.abs(uni.bias.data).max() <= 1 / 20
    assert np.any(uni.bias.data != 0)
    assert he.weight.dtype == np.float32  # float32 by default, as for training speed


def test_linear_rejects_bad_settings():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="init"):
        nn.Linear(2, 3, init="glorious")


def test_seeded_layers_are_reproducible():
    a, b = nn.Linear(5, 4, rng=7), nn.Linear(5, 4, rng=7)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    nn.manual_seed(3)
    c = nn.Linear(5, 4)
    nn.manual_seed(3)
    d = nn.Linear(5, 4)
    np.testing.assert_array_equal(c.weight.data, d.weight.data)


@pytest.mark.parametrize("act,ref", [
    (nn.ReLU, lambda x: np.maximum(x, 0)),
    (nn.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh, np.tanh),
])
def test_activations(rng, act, ref):
    x = rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.2, 2.0, (3, 4))  # away from relu's kink
    np.testing.assert_allclose(act()(x).data, ref(x))
    np.testing.assert_allclose(cr.grad(lambda x: cr.sum(act()(x)))(x), numeric_grad(lambda x: ref(x), [x], 0),
                               rtol=1e-6, atol=1e-8)
    assert cr.gradcheck(lambda x: act()(x), x)


def test_sequential_gradients_and_names(rng):
    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64, rng=0), nn.Tanh(),
                          nn.Linear(4, 2, dtype=np.float64, rng=1))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(model) == 3 and isinstance(model[1], nn.Tanh)
    x = rng.standard_normal((6, 3))
    labels = np.array([0, 1, 1, 0, 1, 0])
    assert cr.gradcheck(lambda x: nn.cross_entropy(model(x), labels), x)
    param_grads_match(model, lambda: nn.cross_entropy(model(x), labels))
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.Linear(2, 2), cr.relu)


def test_dropout(rng):
    drop = nn.Dropout(0.25, rng=0)
    x = cr.tensor(np.ones((200, 50)), requires_grad=True)
    y = drop(x)
    kept = y.data != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y.data[kept], 1 / 0.75)  # survivors scaled: the expectation is unchanged
    cr.sum(y).backward()
    np.testing.assert_allclose(x.grad, y.data)  # d(x·mask)/dx = mask
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.0)
    # gradient check with a fixed mask: two calls with the same seed draw the same mask
    x2 = rng.standard_normal((4, 5))
    assert cr.gradcheck(lambda x: nn.Dropout(0.5, rng=1)(x) * 2.0, x2)


def test_train_eval_reach_nested_modules():
    inner = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model = nn.Sequential(inner, nn.ReLU())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


class TwoHeads(nn.Module):
    """A custom module: shared body (a list of layers) and a tied parameter used twice."""

    def __init__(self):
        super().__init__()
        self.body = [nn.Linear(3, 3, dtype=np.float64, rng=0), nn.Tanh()]
        self.scale = nn.Parameter(np.array([2.0]))
        self.also_scale = self.scale  # the same parameter under a second name

    def forward(self, x):
        for layer in self.body:
            x = layer(x)
        return x * self.scale * self.also_scale


def test_custom_module_parameters_and_tied_weights(rng):
    m = TwoHeads()
    assert [n for n, _ in m.named_parameters()] == ["body.0.weight", "body.0.bias", "scale"]
    x = rng.standard_normal((2, 3))
    param_grads_match(m, lambda: cr.sum(m(x) ** 2))
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert m.num_parameters() == 9 + 3 + 1


def test_parameter_is_a_leaf_that_requires_grad():
    p = nn.Parameter([1, 2, 3])
    assert p.requires_grad and p.is_leaf and p.dtype == np.float64
    assert isinstance(p, cr.Tensor) and repr(p).startswith("Parameter(")


# ---- state ------------------------------------------------------------------------------------


def _model(seed):
    return nn.Sequential(nn.Linear(4, 8, rng=seed), nn.ReLU(), nn.Linear(8, 3, rng=seed + 1))


def test_state_dict_round_trip(rng, tmp_path):
    a, b = _model(0), _model(10)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    assert not np.allclose(a(x).data, b(x).data)
    state = a.state_dict()
    state["0.weight"][0, 0] = 99.0  # a copy: changing it must not change the model
    assert a.state_dict()["0.weight"][0, 0] != 99.0
    weight_array = b[0].weight.data
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert b[0].weight.data is weight_array  # loaded in place: optimizers keep their references

    c = _model(20)
    a.save(tmp_path / "model.npz")
    c.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(a(x).data, c(x).data)


def test_load_state_dict_errors():
    m = _model(0)
    state = m.state_dict()
    with pytest.raises(KeyError, match="missing 2.bias"):
        m.load_state_dict({k: v for k, v in state.items() if k != "2.bias"})
    with pytest.raises(KeyError, match="unexpected extra"):
        m.load_state_dict({**state, "extra": np.zeros(1)})
    m.load_state_dict({"0.bias": np.ones(8)}, strict=False)
    np.testing.assert_array_equal(m[0].bias.data, 1)
    with pytest.raises(ValueError, match=r"0.weight has shape \(5, 8\)"):
        m.load_state_dict({**state, "0.weight": np.zeros((5, 8))})


def test_repr():
    text = repr(_model(0))
    assert "(0): Linear(4 → 8)" in text and "(1): ReLU()" in text


# ---- losses -----------------------------------------------------------------------------------


def ref_cross_entropy(x, y):
    """Per-row −log softmax(x)[y], from the definition (for moderate x)."""
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y])


@pytest.mark.parametrize("reduction,agg", [("mean", np.mean), ("sum", np.sum), ("none", lambda v: v)])
def test_cross_entropy(rng, reduction, agg):
    x = rng.standard_normal((6, 4)) * 2
    y = np.array([0, 3, 1, 1, 2, 3])
    np.testing.assert_allclose(nn.cross_entropy(x, y, reduction=reduction).data, agg(ref_cross_entropy(x, y)))
    assert cr.gradcheck(lambda x: nn.cross_entropy(x, y, reduction=reduction), x)
    np.testing.assert_allclose(
        cr.grad(lambda x: cr.sum(nn.cross_entropy(x, y, reduction=reduction)))(x),
        numeric_grad(lambda x: agg(ref_cross_entropy(x, y)), [x], 0), rtol=1e-6, atol=1e-8)


def test_cross_entropy_gradient_is_softmax_minus_one_hot(rng):
    x = rng.standard_normal((3, 5))
    y = np.array([4, 0, 2])
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(cr.grad(lambda x: nn.cross_entropy(x, y))(x), (p - np.eye(5)[y]) / 3)


def test_cross_entropy_is_stable_and_keeps_float32():
    x = np.array([[1e4, 0.0, -1e4], [0.0, 5e3, 5e3]], dtype=np.float32)
    y = np.array([1, 2])
    loss = nn.cross_entropy(cr.tensor(x, requires_grad=True), y)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), (1e4 + np.log(2)) / 2, rtol=1e-6)
    g = cr.grad(lambda x: nn.cross_entropy(x, y))(x)
    assert g.dtype == np.float32 and np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[0.5, -0.5, 0], [0, 0.25, -0.25]], atol=1e-7)


def test_cross_entropy_second_derivative(rng):
    x = rng.standard_normal((3, 4))
    y = np.array([1, 0, 3])
    assert cr.gradcheck(lambda x: cr.sum(cr.grad(lambda x: nn.cross_entropy(x, y))(x) ** 2), x)


@pytest.mark.parametrize("labels,err,match", [
    (np.array([0, 1]), ValueError, r"shape \(3,\)"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer"),
    (np.array([0, 1, 4]), ValueError, "0..3"),
    (np.array([0, -1, 2]), ValueError, "0..3"),
])
def test_cross_entropy_label_errors(labels, err, match):
    with pytest.raises(err, match=match):
        nn.cross_entropy(np.zeros((3, 4)), labels)
    with pytest.raises(ValueError, match="2-D"):
        nn.cross_entropy(np.zeros(4), np.array([1]))


def test_mse_loss(rng):
    p, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(nn.mse_loss(p, t).data, np.mean((p - t) ** 2))
    np.testing.assert_allclose(nn.mse_loss(p, t, reduction="sum").data, np.sum((p - t) ** 2))
    assert cr.gradcheck(lambda p, t: nn.mse_loss(p, t), p, t)
    np.testing.assert_allclose(cr.grad(lambda p: nn.mse_loss(p, t))(p), 2 * (p - t) / p.size)
    with pytest.raises(ValueError, match="shape"):
        nn.mse_loss(p, t[:, :2])


def ref_svm(s, y, margin=1.0):
    """Multiclass hinge loss with explicit loops (the definition)."""
    total = []
    for i in range(len(y)):
        total.append(sum(max(0.0, s[i, j] - s[i, y[i]] + margin) for j in range(s.shape[1]) if j != y[i]))
    return np.array(total)


def test_svm_loss(rng):
    s = rng.standard_normal((5, 4))
    y = np.array([0, 3, 2, 2, 1])
    # keep every margin away from the hinge's kink, where the derivative is undefined
    while np.min(np.abs(s - s[np.arange(5), y][:, None] + 1)) < 0.05:
        s = rng.standard_normal((5, 4))
    np.testing.assert_allclose(nn.svm_loss(s, y).data, ref_svm(s, y).mean())
    np.testing.assert_allclose(nn.svm_loss(s, y, margin=0.5, reduction="none").data, ref_svm(s, y, 0.5))
    assert cr.gradcheck(lambda s: nn.svm_loss(s, y), s)
    np.testing.assert_allclose(cr.grad(lambda s: nn.svm_loss(s, y))(s),
                               numeric_grad(lambda s: ref_svm(s, y).mean(), [s], 0), atol=1e-8)
    with pytest.raises(ValueError, match="labels"):
        nn.svm_loss(s, y[:3])


# ---- learning -----------------------------------------------------------------------------------


def test_overfits_a_tiny_batch():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    model = nn.Sequential(nn.Linear(5, 32, rng=1), nn.ReLU(), nn.Linear(32, 3, rng=2))
    loss = overfit(model, X, y, lr=0.01, steps=300)
    assert loss.item() < 1e-3
    assert np.array_equal(model(X).data.argmax(axis=1), y)
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())


def test_float32_end_to_end():
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Sigmoid(), nn.Linear(4, 2, rng=1))
    x = np.ones((2, 3), dtype=np.float32)
    out = model(x)
    loss = nn.mse_loss(out, np.zeros((2, 2), dtype=np.float32))
    assert out.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
