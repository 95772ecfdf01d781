"""In-place operations never lie (issue 10): inside a differentiated function they are recorded (the
tensor's node replaced, as PyTorch versions it) or refused with an error naming the operation and the
user's line; the caller's arrays are never modified; a value saved for backward and changed in place
makes backward raise; optimizer updates of leaves outside differentiation keep working.

Every expected gradient is a closed form or central differences of the same function run on copies of
plain NumPy arrays (``conftest.numeric_grad``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import numeric_grad

import chainrule as cr

X = np.array([1.0, 2.0, 3.0])
M = np.array([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]])
W = np.array([[0.7, -0.2, 1.1], [0.4, 0.9, -1.3]])


def on_copies(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` run on copies of its arguments (``f`` mutates them; the numerical reference must not)."""
    return lambda *a: f(*[np.array(v, dtype=np.float64) for v in a])


def times_two(x):
    x *= 2
    return np.sum(x ** 2)


def test_imul_inside_grad_is_recorded_and_leaves_the_callers_array_alone() -> None:
    x = X.copy()
    g = cr.grad(times_two)(x)
    np.testing.assert_allclose(g, [8.0, 16.0, 24.0])  # d/dx (2x)^2 = 8x
    np.testing.assert_array_equal(x, X)


def test_iadd_inside_grad_leaves_the_callers_array_alone() -> None:
    def f(x):
        x += 1
        return np.sum(x * x)

    x = X.copy()
    np.testing.assert_allclose(cr.grad(f)(x), 2 * (X + 1))
    np.testing.assert_array_equal(x, X)


@pytest.mark.parametrize("api", ["grad", "value_and_grad", "vjp", "trace", "compile"])
def test_no_functional_api_modifies_the_callers_array(api: str) -> None:
    x = X.copy()
    if api == "grad":
        cr.grad(times_two)(x)
    elif api == "value_and_grad":
        value, _ = cr.value_and_grad(times_two)(x)
        assert value == pytest.approx(56.0)
    elif api == "vjp":
        cr.vjp(times_two, x)[1](1.0)
    elif api == "trace":
        cr.trace(times_two, x=x)
    else:
        fast = cr.compile(times_two)
        for _ in range(2):  # traced on the first call, the compiled program on the second
            out, g = fast(x)
            assert out == pytest.approx(56.0)
            np.testing.assert_allclose(g, [8.0, 16.0, 24.0])
    np.testing.assert_array_equal(x, X)


def test_isub_of_the_row_max_is_recorded() -> None:
    def f(x):
        x -= x.max(axis=1, keepdims=True)  # the stable-softmax idiom, written in place
        return np.sum(np.exp(x) * W)

    x = M.copy()
    g = cr.grad(f)(x)
    np.testing.assert_array_equal(x, M)
    np.testing.assert_allclose(g, numeric_grad(on_copies(f), [M], 0), rtol=1e-6, atol=1e-8)


def _recorded_or_refused(f: Callable[..., Any], args: list[np.ndarray], line: int) -> None:
    """An item assignment on an input inside ``cr.grad``: its gradient is right, or it is refused with an
    error naming the operation and the user's line. Either way the caller's arrays are unchanged."""
    before = [a.copy() for a in args]
    try:
        grads = cr.grad(f, argnums=tuple(range(len(args))))(*args)
    except (TypeError, RuntimeError, ValueError) as e:
        assert "assign" in str(e).lower(), f"the error does not name the operation: {e}"
        assert f"{os.path.basename(__file__)}:{line}" in str(e), f"the error does not name the user's line: {e}"
    else:
        for k, g in enumerate(grads):
            np.testing.assert_allclose(g, numeric_grad(on_copies(f), before, k), rtol=1e-6, atol=1e-8)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b, err_msg="the caller's array was modified")


def _line_of(f: Callable[..., Any], text: str) -> int:
    lines, start = inspect.getsourcelines(f)
    return start + next(i for i, s in enumerate(lines) if text in s)


def test_index_assignment_of_a_value_into_an_input() -> None:
    def f(x, v):
        x[0, 1:] = v
        return np.sum(x ** 2 * W)

    _recorded_or_refused(f, [M.copy(), np.array([0.5, -0.25])], _line_of(f, "x[0, 1:] = v"))


def test_masked_assignment_of_zero_into_an_input() -> None:
    def f(x):
        x[x < 0] = 0
        return np.sum(x ** 2 * W)

    _recorded_or_refused(f, [M.copy()], _line_of(f, "x[x < 0] = 0"))


def test_svm_margins_index_assignment_is_recorded() -> None:
    y = np.array([2, 0])

    def svm(scores):
        N = scores.shape[0]
        margins = np.maximum(0, scores - scores[np.arange(N), y][:, np.newaxis] + 1.0)
        margins[np.arange(N), y] = 0
        return np.sum(margins) / N

    scores = np.array([[0.3, 1.2, 1.0], [1.5, 2.1, -0.4]])
    s = scores.copy()
    g = cr.grad(svm)(s)
    np.testing.assert_array_equal(s, scores)
    np.testing.assert_allclose(g, numeric_grad(on_copies(svm), [scores], 0), rtol=1e-6, atol=1e-8)
    # by hand: margins [0.3, 1.2, -] and [-, 1.6, -0.9]; +1 per positive margin, -count at the label, over N
    np.testing.assert_allclose(g, [[0.5, 0.5, -1.0], [-0.5, 0.5, 0.0]], atol=1e-12)


def test_masked_assignment_on_an_intermediate_is_recorded() -> None:
    def f(x):
        h = x * 1.5
        h[h < 0] = 0  # relu in place on an intermediate
        return np.sum(h * W)

    g = cr.grad(f)(M.copy())
    np.testing.assert_allclose(g, 1.5 * W * (M > 0), rtol=1e-9, atol=1e-10)


def test_a_saved_input_changed_in_place_makes_backward_raise() -> None:
    x = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = np.sum(x * x)  # mul saves x for its backward
    # changing the saved values would make the backward pass compute 2 (x - 0.5): silently wrong. Refusing
    # the update itself (as PyTorch does for a leaf outside no_grad) is as good as refusing the backward.
    with pytest.raises((RuntimeError, TypeError), match=r"(?i)in[- ]place|modified"):
        x -= 0.5
        loss.backward()
    assert x.grad is None


def test_a_saved_input_changed_in_place_under_no_grad_makes_backward_raise() -> None:
    w = cr.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    out = np.sum(np.tanh(w @ np.array([1.0, 2.0])))
    with cr.no_grad():
        w *= 0.9
    with pytest.raises(RuntimeError, match=r"(?i)in[- ]place|modified"):
        out.backward()
    assert w.grad is None


def test_optimizer_style_update_of_a_leaf_still_works() -> None:
    w = cr.tensor([1.0, -2.0], requires_grad=True)
    lr = 0.1
    expected = np.array([1.0, -2.0])
    for _ in range(3):  # gradient descent on sum(w^2): w <- w - lr * 2w
        w.grad = None
        loss = np.sum(w * w)
        loss.backward()
        np.testing.assert_allclose(w.grad, 2 * expected)
        with cr.no_grad():
            w -= lr * w.grad
        expected = expected - lr * 2 * expected
        np.testing.assert_allclose(w.data, expected)
        assert w.requires_grad and w.is_leaf


# ---- writes through views: x[0:2], x.T, x.reshape(3) share x's memory in NumPy ------------------------

def _reshape_then_assign(x):
    x.reshape(3).__setitem__(0, 0)
    return np.sum(x ** 2)


def _transpose_then_assign(x):
    y = x.T
    y[0] = 0
    return np.sum(x ** 2 * np.array([[1.0, 2.0], [3.0, 4.0]]))


def _slice_times_three(x):
    r = x[0:2]
    r *= 3
    return np.sum(x ** 2)


def _base_write_seen_by_view(x):
    v = x[0:2]
    x[0] = 5.0
    return np.sum(v ** 2) + np.sum(x)


def _write_seen_by_sibling_view(x):
    a, b = x[0:2], x[1:3]
    a[1] = a[1] * 4
    return np.sum(b ** 3)


def _view_of_a_view(x):
    h = x.reshape(2, 2)
    r = h[1]
    r += h[0]
    return np.sum(x * np.arange(4.0))


def _write_through_flip(x):
    np.flip(x)[0] = x[1] * 3
    return np.sum(x ** 2)


def _alias_sees_the_update(x):
    h = x * 1.0
    y = h
    h *= 2
    return np.sum(y ** 2)


@pytest.mark.parametrize("f, x", [
    (_reshape_then_assign, [1.0, 2.0, 3.0]), (_transpose_then_assign, [[1.0, 2.0], [3.0, 4.0]]),
    (_slice_times_three, [1.0, 2.0, 3.0]), (_base_write_seen_by_view, [1.0, 2.0, 3.0]),
    (_write_seen_by_sibling_view, [1.0, 2.0, 3.0]), (_view_of_a_view, [1.0, 2.0, 3.0, 4.0]),
    (_write_through_flip, [1.0, 2.0, 3.0]), (_alias_sees_the_update, [1.0, 2.0, 3.0]),
], ids=lambda v: getattr(v, "__name__", ""))
def test_writes_through_views_give_numpys_value_and_the_true_gradient(f: Callable[..., Any], x: Any) -> None:
    x0 = np.array(x)
    arg = x0.copy()
    value, g = cr.value_and_grad(f)(arg)
    assert value == pytest.approx(on_copies(f)(x0))  # NumPy's own answer on a plain array
    np.testing.assert_allclose(g, numeric_grad(on_copies(f), [x0], 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arg, x0, err_msg="the caller's array was modified")


def test_the_reviewers_view_cases_by_hand() -> None:
    # x.reshape(3)[0] = 0 zeroes x[0]: sum(x^2) = 13, gradient [0, 4, 6]
    assert cr.value_and_grad(_reshape_then_assign)(X.copy())[0] == pytest.approx(13.0)
    np.testing.assert_allclose(cr.grad(_reshape_then_assign)(X.copy()), [0.0, 4.0, 6.0])
    # x[0:2] *= 3: sum(9 x0^2 + 9 x1^2 + x2^2), gradient [18 x0, 18 x1, 2 x2]
    np.testing.assert_allclose(cr.grad(_slice_times_three)(X.copy()), [18.0, 36.0, 6.0])


def test_writes_through_views_compile_to_the_same_answer() -> None:
    fast = cr.compile(_transpose_then_assign)
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    for _ in range(2):
        out, g = fast(x)
        assert out == pytest.approx(on_copies(_transpose_then_assign)(x))
        np.testing.assert_allclose(g, numeric_grad(on_copies(_transpose_then_assign), [x], 0), atol=1e-6)
    np.testing.assert_array_equal(x, [[1.0, 2.0], [3.0, 4.0]])


def test_writing_into_a_read_only_view_is_refused_as_numpy_does() -> None:
    def f(x):
        np.broadcast_to(x, (2, 3))[0, 0] = 1.0
        return np.sum(x)

    with pytest.raises(ValueError, match="read-only"):
        f(X.copy())  # NumPy's own refusal
    with pytest.raises(ValueError, match=r"read-only view made by broadcast_to.*test_inplace_semantics\.py:\d+"):
        cr.grad(f)(X.copy())


# ---- arrays that are not differentiated (training data, labels) --------------------------------------

def _changes_y(x, y):
    y += 1
    return np.sum(x) + np.sum(y * y)


@pytest.mark.parametrize("api", ["grad", "value_and_grad", "jacobian", "hessian", "compile"])
def test_an_argument_not_differentiated_is_never_changed(api: str) -> None:
    x, y = np.array([0.5, 1.5]), X.copy()
    run = {"grad": cr.grad, "value_and_grad": cr.value_and_grad, "jacobian": cr.jacobian, "hessian": cr.hessian,
           "compile": cr.compile}[api]
    with pytest.raises(cr.ArgumentChangedError,
                       match=r"changed its argument 1 \('y'\) in place at .*test_inplace_semantics\.py:\d+"):
        run(_changes_y)(x, y)
    np.testing.assert_array_equal(y, X)
    np.testing.assert_array_equal(x, [0.5, 1.5])


def test_a_keyword_argument_written_through_a_slice_is_named() -> None:
    def f(x, *, data):
        rows = data[:1]
        rows[0] = 0.0
        return np.sum(x * data)

    data = X.copy()
    with pytest.raises(ValueError, match=r"changed its argument 'data' in place"):
        cr.grad(f)(np.ones(3), data=data)
    np.testing.assert_array_equal(data, X)


def test_reading_arguments_that_are_not_differentiated_still_works() -> None:
    labels = np.array([2, 0])

    def loss(w, data, labels):
        scores = data @ w
        return -np.sum(scores[np.arange(2), labels])

    data = M.copy()
    g = cr.grad(loss)(np.ones((3, 3)), data, labels)
    np.testing.assert_allclose(g, numeric_grad(on_copies(lambda w: loss(w, M, labels)), [np.ones((3, 3))], 0),
                               atol=1e-6)


def test_compile_names_the_in_place_argument_not_an_if() -> None:
    # the reviewer's case: the update is made by calling __iadd__ (its result discarded)
    f = lambda x, y: (y.__iadd__(1), np.sum(np.exp(x)) + np.sum(y * y))[1]  # noqa: E731
    a = X.copy()
    with pytest.raises(cr.ArgumentChangedError, match=r"argument 1 \('y'\)") as err:
        cr.compile(f)(np.array([0.5, 1.5, 2.5]), a)
    assert "`if`" not in str(err.value)
    np.testing.assert_array_equal(a, X)


def test_non_broadcastable_in_place_update_is_refused_as_numpy_does() -> None:
    def f(x):
        x = x.reshape(3, 1)
        x += np.ones((3, 4))
        return np.sum(x)

    with pytest.raises(ValueError, match="non-broadcastable output operand"):
        f(X.copy())  # NumPy's own refusal
    with pytest.raises(cr.ShapeError, match=r"add=: non-broadcastable output operand with shape \(3, 1\).*\(3, 4\)"):
        cr.grad(f)(X.copy())
    w = cr.tensor(np.zeros((3, 1)))  # outside differentiation, in place on the values
    with pytest.raises(cr.ShapeError, match="non-broadcastable"):
        w += np.ones((3, 4))


@pytest.mark.parametrize("api", ["grad", "value_and_grad", "vjp", "jvp", "trace", "compile"])
def test_a_function_returning_none_is_refused(api: str) -> None:
    def f(x):
        x.sort()
        return x.sort()  # the in-place method's None, not the sorted values

    x = np.array([3.0, 1.0, 2.0])
    with pytest.raises(TypeError, match=r"f returned None.*np\.sort"):
        if api == "grad":
            cr.grad(f)(x)
        elif api == "value_and_grad":
            cr.value_and_grad(f)(x)
        elif api == "vjp":
            cr.vjp(f, x)
        elif api == "jvp":
            cr.jvp(f, (x,), (np.ones(3),))
        elif api == "trace":
            cr.trace(f, x=x)
        else:
            cr.compile(f)(x)
    with pytest.raises(TypeError, match="returned None"):
        cr.grad(lambda x: None)(1.0)
    np.testing.assert_array_equal(x, [3.0, 1.0, 2.0])


# ---- a second review of the view semantics ---------------------------------------------------------

def test_flatten_and_unary_plus_are_copies_ravel_is_a_view() -> None:
    """NumPy's flatten and +y make new arrays (a write into them never reaches y); ravel is a view."""
    def with_(make):
        def f(x):
            y = x * 1.0
            r = make(y)
            r[0] = 100.0
            return np.sum(y * y) + np.sum(r)
        return f

    x = np.array([1.0, 2.0, 3.0])
    for make in (lambda y: y.flatten(), lambda y: +y, lambda y: y.ravel()):
        f = with_(make)
        y = x * 1.0
        r = make(y)  # NumPy on copies: the expected value
        r[0] = 100.0
        value, grad = cr.value_and_grad(f)(x)
        assert value == pytest.approx(np.sum(y * y) + np.sum(r))
        np.testing.assert_allclose(grad, numeric_grad(on_copies(f), [x], 0), rtol=1e-6, atol=1e-8)


def test_writing_through_a_view_of_a_parameter_is_refused_outside_differentiation() -> None:
    """The leaf would become a node and lose its gradient (PyTorch refuses too); under no_grad the
    update reaches the parameter's values and it stays a leaf."""
    w = cr.tensor(np.arange(4.0), requires_grad=True)
    v = w[0:2]
    with pytest.raises(RuntimeError, match="view of a leaf that requires grad.*cr.no_grad"):
        v += 1
    with pytest.raises(RuntimeError, match="view of a leaf that requires grad"):
        w.T[1] = 5.0
    with cr.no_grad():
        v = w[0:2]
        v += 1
    np.testing.assert_array_equal(w.data, [1.0, 2.0, 2.0, 3.0])
    assert w.is_leaf
    cr.sum(w * w).backward()
    np.testing.assert_array_equal(w.grad, 2 * w.data)


def test_arrays_inside_containers_are_never_changed() -> None:
    W, L = np.ones(3), [np.zeros(3)]

    def f(W, L):
        L[0] += 1
        return cr.sum(W * L[0])

    with pytest.raises(cr.ArgumentChangedError, match=r"argument 1 \('L'\)\[0\] in place"):
        cr.grad(f)(W, L)
    np.testing.assert_array_equal(L[0], np.zeros(3))

    def g(W, d):
        d["seen"] = True  # the container is f's own copy
        return cr.sum(W * d["a"])

    d = {"a": np.arange(3.0)}
    np.testing.assert_array_equal(cr.grad(g)(W, d), np.arange(3.0))
    assert d == {"a": d["a"]} and "seen" not in d


def test_an_item_of_a_plain_tensor_is_updated_in_place() -> None:
    t = cr.tensor(np.zeros((2, 2)))
    t[0, 1] += 3
    t[0, 1] *= 3
    np.testing.assert_array_equal(t.data, [[0.0, 9.0], [0.0, 0.0]])
    i = cr.tensor(np.arange(3))
    i[1] += 5
    assert i.data.dtype.kind == "i" and list(i.data) == [0, 6, 2]


def test_a_differentiated_input_changed_under_no_grad_never_reaches_the_caller() -> None:
    x = np.array([1.0, 2.0])

    def f(x):
        with cr.no_grad():
            x += 1
            x[0] = 5.0
        return np.sum(x * x)

    np.testing.assert_allclose(cr.grad(f)(x), [10.0, 6.0])  # 2x at x = [5, 3], as NumPy computes f
    np.testing.assert_array_equal(x, [1.0, 2.0])
