"""cr.signal.convolve against scipy.signal.convolve and np.convolve on tensors against NumPy, every mode and
shape kind, with first and second derivatives checked by central differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.signal as ss

import chainrule as cr

_SHAPES = [((5,), (3,)), ((3,), (6,)), ((4, 3), (2, 2)), ((5, 4), (3, 2)), ((6, 7), (4, 1)), ((2, 3), (4, 5)),
           ((3, 4, 5), (2, 2, 3)), ((1,), (1,)), ((4,), (4,))]


def _inputs(s1: tuple[int, ...], s2: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(len(s1) * 100 + sum(s1) * 10 + sum(s2))
    return r.standard_normal(s1), r.standard_normal(s2)


def _two_orders(f: Any, *args: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal(f(*args).shape)
    nums = tuple(range(len(args)))

    def loss(*a: Any) -> Any:
        return (f(*a) * w).sum()

    assert cr.gradcheck(loss, *args, rtol=1e-5, atol=1e-7)
    vs = [rng.standard_normal(np.shape(a)) for a in args]

    def along_v(*a: Any) -> Any:
        return sum((g * v).sum() for g, v in zip(cr.grad(loss, argnums=nums)(*a), vs))

    assert cr.gradcheck(along_v, *args, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("s1, s2", _SHAPES, ids=[f"{a}*{b}" for a, b in _SHAPES])
def test_convolve_matches_scipy_with_both_gradients(s1: tuple[int, ...], s2: tuple[int, ...], mode: str) -> None:
    a, b = _inputs(s1, s2)
    out = cr.signal.convolve(a, b, mode)
    ref = ss.convolve(a, b, mode)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-12, atol=1e-12)
    _two_orders(lambda x, y: cr.signal.convolve(x, y, mode), a, b)


def test_convolve_staged_is_pad_windows_and_a_contraction() -> None:
    g = cr.trace(lambda x, k: cr.signal.convolve(x, k).sum(), x=np.arange(5.0), k=np.array([1.0, -1.0]))
    staged = g.staged()
    assert "pad(x, ((1, 1),))" in staged and "windows(t1, (2,))" in staged and "flip(k)" in staged
    assert "einsum('ab,b->a', t2, t3)" in staged


def test_convolve_refuses_what_scipy_refuses() -> None:
    with pytest.raises(ValueError, match="at least as large as the other in every dimension"):
        cr.signal.convolve(np.ones((4, 2)), np.ones((2, 4)), "valid")
    with pytest.raises(ValueError, match="same dimensionality"):
        cr.signal.convolve(np.ones(4), np.ones((2, 2)))
    with pytest.raises(ValueError, match="acceptable mode flags"):
        cr.signal.convolve(np.ones(4), np.ones(2), "circular")


def test_convolve_of_scalars_and_empty() -> None:
    x = cr.tensor(2.0, requires_grad=True)
    out = cr.signal.convolve(x, 3.0)
    assert out.item() == ss.convolve(2.0, 3.0) == 6.0
    out.backward()
    assert x.grad == 3.0
    with pytest.raises(ValueError, match="cannot be empty"):  # as SciPy (through np.convolve) refuses
        cr.signal.convolve(np.ones(0), np.ones(3))


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("na, nv", [(6, 3), (3, 6), (5, 5), (4, 1)])
def test_np_convolve_on_tensors(na: int, nv: int, mode: str) -> None:
    a, v = _inputs((na,), (nv,))
    out = np.convolve(cr.tensor(a, requires_grad=True), v, mode)
    assert isinstance(out, cr.Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, np.convolve(a, v, mode), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cr.convolve(a, v, mode).data, np.convolve(a, v, mode), rtol=1e-12, atol=1e-12)
    _two_orders(lambda x, y: np.convolve(x, y, mode), a, v)


def test_np_convolve_refuses_what_numpy_refuses() -> None:
    with pytest.raises(ValueError, match="must be 1-D"):
        cr.convolve(np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="cannot be empty"):
        cr.convolve(np.ones(3), np.ones(0))
    np.testing.assert_allclose(cr.convolve(2.0, [1.0, 3.0]).data, np.convolve(2.0, [1.0, 3.0]))
