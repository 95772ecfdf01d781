"""cr.check_backward: accepts correct hand-written solutions (whatever their names), catches wrong
ones and names the wrong value, the element, expected vs got, and the first wrong step."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr


def ref_q2a(x, y, z):
    return (x + y) * z


def ref_q2c(x, y, z):
    return (np.log(x) + np.sin(y)) ** 2 + 4 * x


def ref_complex(x, y):
    return np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2)


def q2a_ok(x, y, z):
    q = x + y
    f = q * z
    dq = z
    dz = q
    fx = dq * 1.0
    fy = dq * 1.0
    return f, fx, fy, dz


def q2a_other_names(a, b, c):  # different names, no staging, grads as a tuple
    s = a + b
    return s * c, (np.ones_like(s) * c, c * 1.0, s + 0.0)


def q2a_wrong_sign(x, y, z):
    q = x + y
    out = q * z
    dq = -z
    dz = q
    dx = dq
    dy = dq
    return out, dx, dy, dz


def q2a_wrong_local(x, y, z):
    q = x + y
    out = q * z
    dq = z
    dz = z  # should be q
    dx = dq
    dy = dq
    return out, dx, dy, dz


def q2c_missing_fanout(x, y, z):
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    d = c**2
    e = 4 * x
    g = d + e
    dd = 1.0
    de = 1.0  # noqa: F841 - the student computes it, then forgets to use it
    dc = dd * 2 * c
    da = dc
    db = dc
    gx = da / x  # forgot "+ de * 4": x is used twice
    gy = db * np.cos(y)
    gz = np.zeros_like(z)
    return g, gx, gy, gz


def complex_ok(x, y):
    a = np.log(x)
    b = np.sqrt(y)
    c = 1 / (1 + np.exp(-b))
    d = x + y
    e = d**2
    g = 1 / (1 + np.exp(-e))
    h = a * c
    f = h / g
    dh = 1 / g
    dg = -h / g**2
    de = dg * g * (1 - g)
    dd = de * 2 * d
    da = dh * c
    dc = dh * a
    db = dc * c * (1 - c)
    fx = da / x + dd
    fy = db * 0.5 / b + dd
    return f, fx, fy


def complex_wrong_step(x, y):
    a = np.log(x)
    b = np.sqrt(y)
    c = 1 / (1 + np.exp(-b))
    d = x + y
    e = d**2
    g = 1 / (1 + np.exp(-e))
    h = a * c
    f = h / g
    dh = 1 / g
    dg = -h / g**2
    de = dg * g * (1 - g)
    dd = de * d  # forgot the 2 of d(d²)/dd
    da = dh * c
    dc = dh * a
    db = dc * c * (1 - c)
    fx = da / x + dd
    fy = db * 0.5 / b + dd
    return f, fx, fy


def test_accepts_correct_solutions():
    rep = cr.check_backward(q2a_ok, ref_q2a, 1.0, 3.0, 2.0)
    assert rep and rep.ok and "correct" in str(rep)
    assert len(rep.checked) == 4  # the given inputs and three random ones
    assert cr.check_backward(q2a_other_names, ref_q2a, 1.0, 3.0, 2.0)
    x, y = np.array([1.5, 2.0, 0.7]), np.array([0.5, 1.0, 1.9])
    assert cr.check_backward(complex_ok, ref_complex, x, y)


def test_wrong_sign_is_named_with_expected_and_got():
    rep = cr.check_backward(q2a_wrong_sign, ref_q2a, 1.0, 3.0, 2.0)
    assert not rep
    assert [m.name for m in rep.wrong] == ["dx", "dy"]
    assert (rep.wrong[0].expected, rep.wrong[0].got) == (2.0, -2.0)
    assert rep.first_wrong_step.name == "dq"
    assert "dq: expected 2, got -2" in str(rep)


def test_wrong_local_gradient():
    rep = cr.check_backward(q2a_wrong_local, ref_q2a, 1.0, 3.0, 2.0)
    assert [m.name for m in rep.wrong] == ["dz"]
    assert "dz: expected 4, got 2" in str(rep)


def test_missing_fan_out_sum_names_the_gradient_and_element():
    x = np.array([np.e, 1.0, 2.0])
    rep = cr.check_backward(q2c_missing_fanout, ref_q2c, x, np.full(3, np.pi / 2), np.full(3, 2.0))
    assert [m.name for m in rep.wrong] == ["gx"]
    m = rep.wrong[0]
    assert m.index == (0,) and m.count == 3
    assert m.expected - m.got == pytest.approx(4.0)


def test_first_wrong_intermediate_is_found_by_value():
    x, y = np.array([1.5, 2.0]), np.array([0.5, 1.0])
    rep = cr.check_backward(complex_wrong_step, ref_complex, x, y)
    assert {m.name for m in rep.wrong} == {"fx", "fy"}
    assert rep.first_wrong_step is not None and rep.first_wrong_step.name == "dd"
    assert "first wrong step: dd[0]" in str(rep)


def test_wrong_only_at_random_inputs_is_caught():
    def sneaky(x, y, z):  # right at x=1, y=3, z=2 only
        return (x + y) * z, z, z, 4.0 + 0 * z

    rep = cr.check_backward(sneaky, ref_q2a, 1.0, 3.0, 2.0)
    assert not rep and rep.label.startswith("random inputs")
    assert cr.check_backward(sneaky, ref_q2a, 1.0, 3.0, 2.0, random=0)


def test_broken_functions_get_one_clear_message():
    def too_few(x, y, z):
        return (x + y) * z, z

    def raises(x, y, z):
        raise ZeroDivisionError("oops")

    rep = cr.check_backward(too_few, ref_q2a, 1.0, 3.0, 2.0)
    assert "returned 2 values; expected 4" in str(rep)
    rep = cr.check_backward(raises, ref_q2a, 1.0, 3.0, 2.0)
    assert "raised ZeroDivisionError: oops" in str(rep)
    with pytest.raises(TypeError, match="needs the inputs"):
        cr.check_backward(q2a_ok, ref_q2a)


def sigmoid_hw(x):  # the worksheet's staged sigmoid, with one wrong local gradient
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = c**-1
    out = d
    dd = 1
    dc = dd * -1 / c**2
    db = dc
    da = db * a  # should be db * b
    dx = -da
    return out, dx


def test_first_wrong_step_inside_a_fused_composite():
    s = 1 / (1 + np.exp(-2.0))
    for ref in (cr.sigmoid, lambda x: 1 / (1 + np.exp(-x))):  # one fused gate, or its stages
        rep = cr.check_backward(sigmoid_hw, ref, 2.0)
        assert [m.name for m in rep.wrong] == ["dx"]
        step = rep.first_wrong_step
        assert step is not None and step.name == "da"
        assert step.expected == pytest.approx(-s * (1 - s))  # ∂σ/∂a = -σ'(x)
        assert "first wrong step: da" in str(rep)


def test_function_that_cannot_take_the_inputs_is_one_clear_error():
    def f(x):
        return x * x, 2 * x

    with pytest.raises(TypeError, match=r"f takes \(x\) but 2 inputs were given"):
        cr.check_backward(f, ref_q2a, 1.0, 2.0)
