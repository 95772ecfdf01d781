"""gradcheck: True on correct functions; a GradcheckError that names the argument, the element,
the analytic and numerical values and the relative error on wrong ones."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from chainrule.gates import Gate, unbroadcast
from chainrule.tensor import apply


@pytest.mark.parametrize("f, args", [
    (lambda x, y, z: (x + y) * z, (1.0, 3.0, 2.0)),
    (lambda x: cr.sigmoid(x) * cr.tanh(x), (np.linspace(-2, 2, 5),)),
    (lambda a, b: cr.softmax(a @ b, axis=-1), (np.arange(6.0).reshape(2, 3) / 5, np.ones((3, 4)) / 3)),
    (lambda x: cr.logsumexp(x, axis=0), (np.array([[1.0, 2.0], [3.0, -1.0]]),)),
    (lambda x: np.sqrt(x) * np.log(x), ([0.5, 1.5, 2.5],)),  # lists
    (lambda x, n: x**n, (np.array([1.2, 0.7]), 3)),  # an integer argument is promoted and checked too
])
def test_gradcheck_passes_on_correct_functions(f, args) -> None:
    assert cr.gradcheck(f, *args) is True


def test_gradcheck_takes_eps_atol_rtol() -> None:
    x = np.array([0.3, 1.2])
    assert cr.gradcheck(cr.exp, x, eps=1e-4, atol=1e-6, rtol=1e-6)
    with pytest.raises(cr.GradcheckError):  # a coarse step cannot meet a tight tolerance
        cr.gradcheck(cr.exp, x, eps=0.5, atol=0.0, rtol=1e-6)


def test_gradcheck_needs_an_argument() -> None:
    with pytest.raises(TypeError):
        cr.gradcheck(lambda: cr.tensor(1.0))


def _detached(v):
    """``v.detach()`` for a tensor; gradcheck's numerical pass calls the function on plain arrays."""
    return v.detach() if isinstance(v, cr.Tensor) else v


_REPORT = re.compile(
    r"argument (?P<arg>\d+) \('(?P<name>\w+)'\)\[(?P<idx>[\d, ]+)\].*analytic (?P<an>[-\d.e+]+), "
    r"numerical (?P<nu>[-\d.e+]+), relative error (?P<rel>[-\d.e+]+)")


def _report(err: cr.GradcheckError) -> dict[str, str]:
    m = _REPORT.search(str(err))
    assert m, f"unexpected gradcheck report: {err}"
    return m.groupdict()


def test_gradcheck_reports_argument_element_values_and_relative_error() -> None:
    """A function whose gradient is wrong at one element only: x[1, 2] is used through .detach(),
    so chainrule sees half of its real derivative there."""

    def f(w, x):
        picked = x[1, 2]
        return (w * x).sum() + picked * _detached(picked)

    w = np.full((2, 3), 0.5)
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with pytest.raises(cr.GradcheckError) as info:
        cr.gradcheck(f, w, x)
    r = _report(info.value)
    assert (r["arg"], r["name"]) == ("1", "x")
    assert tuple(int(i) for i in r["idx"].split(",")) == (1, 2)
    analytic, numerical = 0.5 + 6.0, 0.5 + 2 * 6.0  # d/dx of x·x is 2x; the detached copy hides half
    np.testing.assert_allclose(float(r["an"]), analytic, rtol=1e-6)
    np.testing.assert_allclose(float(r["nu"]), numerical, rtol=1e-6)
    np.testing.assert_allclose(float(r["rel"]), abs(analytic - numerical) / numerical, rtol=1e-3)
    assert isinstance(info.value, AssertionError)  # pytest reports it as a failed check


def _wrong_elementwise_gate() -> Gate:
    """A test-local sin gate whose local gradient has the wrong sign (never added to GATES)."""
    gate = Gate("sin", "sin", "a deliberately wrong sin", "sin({0})", kind="elementwise",
                local=(lambda m, x, out: -m.cos(x),))
    gate.fn = np.sin
    return gate


def _wrong_vjp_gate() -> Gate:
    """A test-local broadcast-add gate whose rule forgets to sum over the broadcast axes of ``y``:
    it sends only the first row of the gradient back."""

    def vjp(m, g, x, y, out, needs):
        return unbroadcast(m, g, x.shape), g[:1] if g.ndim == 2 else g

    gate = Gate("add", "add", "a deliberately wrong add", "{0} + {1}", kind="linalg", vjp=vjp)
    gate.fn = np.add
    return gate


def test_gradcheck_catches_a_wrong_local_rule() -> None:
    bad = _wrong_elementwise_gate()
    x = np.array([0.1, 0.2, 0.3])
    with pytest.raises(cr.GradcheckError) as info:
        cr.gradcheck(lambda x: apply(bad, x) * 2, x)
    r = _report(info.value)
    assert (r["arg"], r["name"], r["idx"]) == ("0", "x", "0")
    np.testing.assert_allclose(float(r["an"]), -2 * np.cos(0.1), rtol=1e-8)
    np.testing.assert_allclose(float(r["nu"]), 2 * np.cos(0.1), rtol=1e-6)
    np.testing.assert_allclose(float(r["rel"]), 2.0, rtol=1e-5)
    assert "3 of 3 elements" in str(info.value)
    # the same check on the table's own sin gate passes
    assert cr.gradcheck(lambda x: cr.sin(x) * 2, x)


def test_gradcheck_catches_a_wrong_vjp_rule() -> None:
    bad = _wrong_vjp_gate()
    x, y = np.ones((3, 2)), np.array([[0.5, -0.5]])
    with pytest.raises(cr.GradcheckError) as info:
        cr.gradcheck(lambda x, y: apply(bad, x, y) * 3, x, y)
    r = _report(info.value)
    assert (r["arg"], r["name"], r["idx"]) == ("1", "y", "0, 0")
    np.testing.assert_allclose(float(r["an"]), 3.0, rtol=1e-8)
    np.testing.assert_allclose(float(r["nu"]), 9.0, rtol=1e-6)


def test_gradcheck_error_when_only_a_far_element_is_wrong() -> None:
    """Only the last element is wrong: the report points at it, not at the first."""

    def f(x):
        last = x[-1]
        return cr.sin(x).sum() + last * _detached(last)

    with pytest.raises(cr.GradcheckError, match=r"argument 0 \('x'\)\[4\].*1 of 5 elements"):
        cr.gradcheck(f, np.linspace(0.1, 0.9, 5))
