"""The worksheet's questions by value: chainrule's answers against the hand-derived numbers
(section2-backprop-worksheet.md, questions 2, 3 and 4) and closed-form derivatives written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

# ---- the worksheet's functions, written as a student would with NumPy ------------------------------
from worksheet_functions import complex_layer, q2a, q2b, q2c

import chainrule as cr


def sigmoid_staged(x):
    """Question 3's forward pass exactly as printed: a = -x, b = eˣ, c = 1 + b, d = c⁻¹."""
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = c**-1
    return d


def helper_sigmoid(x):
    """Question 4's helper function, as printed."""
    return 1 / (1 + np.exp(-x))


def complex_layer_helper(x, y):
    return np.log(x) * helper_sigmoid(np.sqrt(y)) / helper_sigmoid((x + y) ** 2)


ALL = (0, 1, 2)


# ---- question 2 ------------------------------------------------------------------------------------


def test_q2a_at_1_3_2() -> None:
    out, (fx, fy, fz) = cr.value_and_grad(q2a, argnums=ALL)(1.0, 3.0, 2.0)
    assert out == 8.0
    assert (fx, fy, fz) == (2.0, 2.0, 4.0)


def test_q2a_elementwise_on_arrays_and_with_tensors() -> None:
    """The worksheet's inputs are arrays of identical size: each element is its own problem."""
    x, y, z = np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([2.0, 5.0])
    out, (fx, fy, fz) = cr.value_and_grad(q2a, argnums=ALL)(x, y, z)
    np.testing.assert_array_equal(out, [8.0, 5.0])
    np.testing.assert_array_equal(fx, z)
    np.testing.assert_array_equal(fy, z)
    np.testing.assert_array_equal(fz, x + y)
    tx, ty, tz = (cr.tensor(v, requires_grad=True) for v in (1.0, 3.0, 2.0))
    q2a(tx, ty, tz).backward()
    assert (tx.grad, ty.grad, tz.grad) == (2.0, 2.0, 4.0)


def test_q2b_at_3_1_2() -> None:
    out, grads = cr.value_and_grad(q2b, argnums=ALL)(3.0, 1.0, 2.0)
    assert out == 88.0
    np.testing.assert_allclose(grads, (48.0, 16.0, 132.0), rtol=1e-15)


def test_q2b_against_its_closed_form_at_random_points(rng) -> None:
    x, y, z = rng.normal(size=(3, 5))
    _, (hx, hy, hz) = cr.value_and_grad(q2b, argnums=ALL)(x, y, z)
    np.testing.assert_allclose(hx, 2 * x * z**3, rtol=1e-13)
    np.testing.assert_allclose(hy, 2 * z**3, rtol=1e-13)
    np.testing.assert_allclose(hz, 3 * z**2 * (x**2 + 2 * y), rtol=1e-13)


def test_q2c_at_e_halfpi_2() -> None:
    out, (gx, gy, gz) = cr.value_and_grad(q2c, argnums=ALL)(math.e, math.pi / 2, 2.0)
    np.testing.assert_allclose(out, 4 + 4 * math.e, rtol=1e-15)
    np.testing.assert_allclose(gx, 4 / math.e + 4, rtol=1e-15)
    np.testing.assert_allclose(gy, 0.0, atol=1e-15)  # 2(ln x + sin y)·cos(π/2)
    assert gz == 0.0  # z is not used: its gradient is exactly zero
    assert isinstance(gz, np.ndarray) and gz.shape == ()


def test_q2c_against_its_closed_form_at_random_points(rng) -> None:
    x, y, z = rng.uniform(0.5, 3, 4), rng.normal(size=4), rng.normal(size=4)
    _, (gx, gy, gz) = cr.value_and_grad(q2c, argnums=ALL)(x, y, z)
    inner = np.log(x) + np.sin(y)
    np.testing.assert_allclose(gx, 2 * inner / x + 4, rtol=1e-13)
    np.testing.assert_allclose(gy, 2 * inner * np.cos(y), rtol=1e-13)
    np.testing.assert_array_equal(gz, np.zeros(4))


# ---- question 3 ------------------------------------------------------------------------------------

SIGMA_PRIME_2 = 0.104994  # the worksheet: "you should have gotten around 0.1"
X_AFTER_STEP = 1.979001  # x − 0.2 · σ'(2)


@pytest.mark.parametrize("f", [cr.sigmoid, sigmoid_staged, helper_sigmoid], ids=["fused", "staged", "helper"])
def test_q3_sigmoid_gradient_at_2_and_one_step(f) -> None:
    out, fx = cr.value_and_grad(f)(2.0)
    np.testing.assert_allclose(out, 1 / (1 + math.exp(-2.0)), rtol=1e-15)
    assert abs(fx - SIGMA_PRIME_2) < 5e-7
    s = 1 / (1 + math.exp(-2.0))
    np.testing.assert_allclose(fx, s * (1 - s), rtol=1e-14)
    assert abs((2.0 - 0.2 * fx) - X_AFTER_STEP) < 5e-7


@pytest.mark.parametrize("f", [cr.sigmoid, sigmoid_staged], ids=["fused", "staged"])
def test_q3_gradient_descent_step_with_a_tensor(f) -> None:
    x = cr.tensor(2.0, requires_grad=True)
    f(x).backward()
    assert abs(x.grad - SIGMA_PRIME_2) < 5e-7
    step_size = 0.2
    x -= step_size * x.grad  # parameters -= step_size * gradient
    assert abs(x.item() - X_AFTER_STEP) < 5e-7


def test_q3_fused_and_expanded_sigmoid_agree() -> None:
    x = np.linspace(-6, 6, 13)
    fused = cr.value_and_grad(cr.sigmoid)(x)
    with cr.expanded():
        staged = cr.value_and_grad(cr.sigmoid)(x)
    np.testing.assert_allclose(staged[0], fused[0], rtol=1e-14)
    np.testing.assert_allclose(staged[1], fused[1], rtol=1e-12)


# ---- question 4 ------------------------------------------------------------------------------------


def closed_form_complex_layer(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f = ln x · σ(√y) / σ((x+y)²), differentiated by hand.

    With s₁ = σ(√y), s₂ = σ(u), u = (x+y)², and σ' = σ(1−σ):
      ∂f/∂x = s₁/(x·s₂) − ln x · s₁ · s₂(1−s₂)·2(x+y) / s₂²  = (s₁/s₂)·(1/x − 2(x+y)(1−s₂)·ln x)
      ∂f/∂y = ln x · s₁(1−s₁)/(2√y) / s₂ − ln x · s₁ · 2(x+y)(1−s₂)/s₂
            = (ln x · s₁/s₂)·((1−s₁)/(2√y) − 2(x+y)(1−s₂))
    """
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    s1, s2 = sig(np.sqrt(y)), sig((x + y) ** 2)
    f = np.log(x) * s1 / s2
    fx = (s1 / s2) * (1 / x - 2 * (x + y) * (1 - s2) * np.log(x))
    fy = (np.log(x) * s1 / s2) * ((1 - s1) / (2 * np.sqrt(y)) - 2 * (x + y) * (1 - s2))
    return f, fx, fy


@pytest.mark.parametrize("layer", [complex_layer, complex_layer_helper], ids=["cr.sigmoid", "helper"])
def test_q4_complex_layer_against_its_closed_form(layer, rng) -> None:
    for x, y in [(np.array([1.5, 2.0]), np.array([0.5, 1.0])),
                 (rng.uniform(0.2, 2.5, 7), rng.uniform(0.1, 2.0, 7))]:
        out, (fx, fy) = cr.value_and_grad(layer, argnums=(0, 1))(x, y)
        f, ex, ey = closed_form_complex_layer(x, y)
        np.testing.assert_allclose(out, f, rtol=1e-13)
        np.testing.assert_allclose(fx, ex, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(fy, ey, rtol=1e-11, atol=1e-14)


def test_q4_with_tensors() -> None:
    x = cr.tensor([1.5, 2.0], requires_grad=True)
    y = cr.tensor([0.5, 1.0], requires_grad=True)
    complex_layer(x, y).backward()
    _, ex, ey = closed_form_complex_layer(np.array([1.5, 2.0]), np.array([0.5, 1.0]))
    np.testing.assert_allclose(x.grad, ex, rtol=1e-12)
    np.testing.assert_allclose(y.grad, ey, rtol=1e-12)
