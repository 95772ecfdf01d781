"""The backward pass and the functional API: grad / value_and_grad / vjp, argnums, input types,
aliasing, deep graphs, released intermediates, anomaly mode, and hypothesis properties of the
engine core (random expression trees against central differences; linearity in the seed)."""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

import numpy as np
import pytest
from conftest import numeric_grad
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr

# ---- functional API ----------------------------------------------------------------------------


def q2a(x, y, z):
    return (x + y) * z


def test_grad_with_int_argnums_returns_one_array() -> None:
    g = cr.grad(q2a)(1.0, 3.0, 2.0)
    assert isinstance(g, np.ndarray) and g.shape == () and g == 2.0


def test_grad_with_tuple_argnums_returns_a_tuple_in_that_order() -> None:
    gz, gx = cr.grad(q2a, argnums=(2, 0))(1.0, 3.0, 2.0)
    assert (gz, gx) == (4.0, 2.0)
    (gy,) = cr.grad(q2a, argnums=(1,))(1.0, 3.0, 2.0)
    assert gy == 2.0
    assert cr.grad(q2a, argnums=[0, 1])(1.0, 3.0, 2.0) == (2.0, 2.0)
    assert cr.grad(q2a, argnums=-1)(1.0, 3.0, 2.0) == 4.0


def test_value_and_grad() -> None:
    out, (fx, fy, fz) = cr.value_and_grad(q2a, argnums=(0, 1, 2))(1.0, 3.0, 2.0)
    assert isinstance(out, (np.ndarray, np.generic)) and np.shape(out) == () and out == 8.0
    assert (fx, fy, fz) == (2.0, 2.0, 4.0)


def test_keyword_arguments_pass_through_undifferentiated() -> None:
    def f(x, scale=1.0):
        return x * x * scale

    np.testing.assert_allclose(cr.grad(f)(3.0, scale=2.0), 12.0)


@pytest.mark.parametrize("argnums, err, msg", [
    (3, ValueError, "argument 3"),
    ((0, 5), ValueError, "argument 5"),
    (-4, ValueError, "argument -4"),
    ("0", TypeError, "argnums"),
    (1.0, TypeError, "argnums"),
    ((), TypeError, "argnums"),
    ((0, 0), ValueError, "twice"),
    (True, TypeError, "argnums"),
    ((0, "1"), TypeError, "argnums"),
])
def test_wrong_argnums_are_clear_errors(argnums, err, msg) -> None:
    with pytest.raises(err, match=msg):
        cr.grad(q2a, argnums=argnums)(1.0, 3.0, 2.0)


@pytest.mark.parametrize("bad", ["abc", None, {"a": 1}, object(), [1, "a"], np.array(["x"])])
def test_unsupported_input_types_are_clear_errors(bad) -> None:
    with pytest.raises(TypeError, match=r"argument 1 \('y'\)"):
        cr.grad(q2a, argnums=(0, 1))(1.0, bad, 2.0)


def test_function_returning_a_tuple_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="one array"):
        cr.grad(lambda x: (x, x))(1.0)


@pytest.mark.parametrize("arg, shape", [(2, ()), (2.5, ()), ([1, 2, 3], (3,)), ([[1.0], [2.0]], (2, 1)),
                                        (np.arange(6).reshape(2, 3), (2, 3)), (np.float64(1.5), ()),
                                        (True, ())])
def test_inputs_of_any_numeric_kind_give_float_arrays_shaped_like_them(arg, shape) -> None:
    g = cr.grad(lambda x: x * x)(arg)
    assert isinstance(g, np.ndarray) and g.shape == shape and g.dtype == np.float64
    np.testing.assert_allclose(g, 2 * np.asarray(arg, dtype=np.float64))


def test_tensor_inputs_to_grad() -> None:
    x = cr.tensor([1.0, 2.0])
    np.testing.assert_array_equal(cr.grad(lambda t: t * t)(x), [2.0, 4.0])
    w = cr.tensor([1.0, 2.0], requires_grad=True)
    g = cr.grad(lambda t: t * t)(w)  # at top level: a plain gradient, and w's own .grad stays untouched
    np.testing.assert_array_equal(np.asarray(getattr(g, "data", g)), [2.0, 4.0])
    assert w.grad is None


def test_non_scalar_output_is_the_gradient_of_its_sum() -> None:
    x = np.array([[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(cr.grad(np.sin)(x), np.cos(x))
    np.testing.assert_allclose(cr.grad(lambda t: t[:, None] * t)(np.array([1.0, 2.0])), [6.0, 6.0])


def test_output_not_depending_on_the_input_gives_zeros() -> None:
    g = cr.grad(lambda x, y: y * 2, argnums=(0, 1))(np.ones((2, 2)), 3.0)
    np.testing.assert_array_equal(g[0], np.zeros((2, 2)))
    assert g[1] == 2.0
    np.testing.assert_array_equal(cr.grad(lambda x: 5.0)(np.ones(3)), np.zeros(3))


def test_gradients_never_alias_each_other_or_the_inputs() -> None:
    dx, dy, dz = cr.grad(q2a, argnums=(0, 1, 2))(np.ones(3), np.ones(3), np.full(3, 2.0))
    assert dx is not dy and not np.shares_memory(dx, dy)
    dx += 100
    np.testing.assert_array_equal(dy, [2.0, 2.0, 2.0])
    x0 = np.array([1.0, 2.0])
    g = cr.grad(lambda x: x)(x0)
    assert not np.shares_memory(g, x0)
    g[0] = 7
    np.testing.assert_array_equal(x0, [1.0, 2.0])
    a, b = cr.grad(lambda x, y: x + y, argnums=(0, 1))(np.ones(2), np.ones(2))
    assert not np.shares_memory(a, b)


def test_results_stay_valid_after_the_next_call() -> None:
    f = cr.grad(lambda x: cr.sin(x) * x)
    g1 = f(np.array([0.1, 0.2]))
    keep = g1.copy()
    f(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(g1, keep)


def test_vjp() -> None:
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    out, vjp_fn = cr.vjp(lambda a, b: a * b + a, x, y)
    np.testing.assert_array_equal(out, x * y + x)
    gx, gy = vjp_fn(np.array([1.0, -2.0]))
    np.testing.assert_array_equal(gx, (y + 1) * [1.0, -2.0])
    np.testing.assert_array_equal(gy, x * [1.0, -2.0])
    gx2, _ = vjp_fn(np.array([0.5, 0.5]))  # callable many times
    np.testing.assert_array_equal(gx2, (y + 1) * 0.5)
    with pytest.raises(ValueError, match="shape"):
        vjp_fn(np.ones(3))


def test_vjp_of_a_matrix_function_builds_the_jacobian_row_by_row() -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    v = np.array([0.5, -1.0])
    out, vjp_fn = cr.vjp(lambda m, x: m @ cr.tanh(x), a, v)
    rows = [vjp_fn(e)[1] for e in np.eye(2)]
    np.testing.assert_allclose(np.array(rows), a * (1 - np.tanh(v) ** 2))


# ---- nested differentiation ---------------------------------------------------------------------


def test_grad_of_grad_with_respect_to_an_argument_the_inner_grad_does_not_differentiate() -> None:
    """∂/∂y of (∂/∂x x·y²) = 2y: the inner grad's result must stay connected to the outer y."""
    inner = cr.grad(lambda x, y: x * y * y, argnums=0)
    np.testing.assert_allclose(cr.grad(lambda y: inner(1.5, y))(3.0), 6.0)
    np.testing.assert_allclose(cr.grad(lambda y, x: inner(x, y))(3.0, 1.5), 6.0)


def test_grad_of_grad_through_a_closure() -> None:
    def outer(y):
        return cr.grad(lambda x: x * x * y)(2.0)  # 4y

    np.testing.assert_allclose(cr.grad(outer)(5.0), 4.0)


def test_hessian_of_a_two_argument_function() -> None:
    def f(x, y):
        return x * x * y + cr.sin(x * y)

    x, y = 0.7, -1.3
    fx = cr.grad(f, argnums=0)
    fy = cr.grad(f, argnums=1)
    hxx, hxy = cr.grad(fx, argnums=(0, 1))(x, y)
    hyx, hyy = cr.grad(fy, argnums=(0, 1))(x, y)
    s, c = np.sin(x * y), np.cos(x * y)
    np.testing.assert_allclose([hxx, hxy, hyx, hyy],
                               [2 * y - y * y * s, 2 * x + c - x * y * s, 2 * x + c - x * y * s, -x * x * s],
                               rtol=1e-12)


def test_backward_create_graph_gives_differentiable_gradients() -> None:
    x = cr.tensor(0.5, requires_grad=True)
    y = cr.sin(x) * x
    y.backward(create_graph=True)
    g = x.grad
    assert isinstance(g, cr.Tensor) and g.requires_grad
    np.testing.assert_allclose(g.data, np.cos(0.5) * 0.5 + np.sin(0.5))
    x.grad = None
    g.backward()
    np.testing.assert_allclose(x.grad, -np.sin(0.5) * 0.5 + 2 * np.cos(0.5))


# ---- robustness ---------------------------------------------------------------------------------


def test_a_chain_of_100000_ops_backprops_without_recursion_error() -> None:
    x = cr.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    y.backward()
    np.testing.assert_allclose(x.grad, 1.00001**100_000, rtol=1e-9)


def test_a_deep_functional_chain() -> None:
    def f(x):
        for _ in range(20_000):
            x = cr.sin(x) + 0.0
        return x

    g = cr.grad(f)(0.1)
    x, d = 0.1, 1.0
    for _ in range(20_000):
        d *= np.cos(x)
        x = np.sin(x)
    np.testing.assert_allclose(g, d, rtol=1e-9)


def test_second_backward_without_retain_graph_is_a_clear_error() -> None:
    x = cr.tensor(2.0, requires_grad=True)
    y = cr.exp(x) * x
    y.backward()
    with pytest.raises(cr.GraphFreedError, match="retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward() -> None:
    x = cr.tensor(2.0, requires_grad=True)
    y = cr.exp(x) * x
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 3 * np.exp(2.0))


def _mid_ref(retain: bool) -> weakref.ref:
    x = cr.tensor(np.ones(1000), requires_grad=True)
    mid = cr.exp(x)
    ref = weakref.ref(mid)
    out = (mid * 2).sum()
    del mid
    out.backward(retain_graph=retain)
    gc.collect()
    return ref, out


def test_backward_releases_intermediates() -> None:
    ref, out = _mid_ref(retain=False)
    assert ref() is None, "the exp node's output is still held after backward"
    ref, out = _mid_ref(retain=True)
    assert ref() is not None


def test_backward_on_a_tensor_without_grad_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="requires_grad"):
        cr.tensor([1.0, 2.0]).sum().backward()


def test_detect_anomaly_names_the_forward_op_and_the_source_line() -> None:
    x = cr.tensor([1.0, -1.0], requires_grad=True)
    with cr.detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(cr.AnomalyError) as info:
            y = cr.log(x)  # LINE-LOG
            y * 2
    msg = str(info.value)
    assert "log" in msg and f"{__file__}:{_line_of('LINE-LOG')}" in msg
    with cr.detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(cr.AnomalyError) as info:
            np.log(x)  # LINE-NPLOG: through NumPy's dispatch, the user's line is still named
    assert f"{__file__}:{_line_of('LINE-NPLOG')}" in str(info.value)


def test_detect_anomaly_names_the_backward_op_and_where_it_was_created() -> None:
    x = cr.tensor([0.0, 4.0], requires_grad=True)
    with cr.detect_anomaly(), np.errstate(all="ignore"):
        y = cr.sqrt(x)  # LINE-SQRT
        out = (y * 3).sum()
        with pytest.raises(cr.AnomalyError) as info:
            out.backward()
    msg = str(info.value)
    assert "sqrt" in msg and "backward" in msg and f"{__file__}:{_line_of('LINE-SQRT')}" in msg


def test_detect_anomaly_ignores_values_that_were_already_nan_and_is_off_by_default() -> None:
    with cr.detect_anomaly():
        y = cr.tensor([np.nan, 1.0], requires_grad=True) * 2  # NaN in, NaN out: not this op's fault
    assert np.isnan(y.data[0])
    with np.errstate(invalid="ignore"):
        z = cr.log(cr.tensor([-1.0], requires_grad=True))  # outside anomaly mode: no error
    assert np.isnan(z.data[0])


def test_detect_anomaly_works_as_a_decorator() -> None:
    @cr.detect_anomaly()
    def f(x):
        return cr.log(x)

    with pytest.raises(cr.AnomalyError), np.errstate(all="ignore"):
        f(cr.tensor([-1.0], requires_grad=True))


def _line_of(marker: str) -> int:
    with open(__file__) as fh:
        for n, line in enumerate(fh, 1):
            if "# " + marker in line:
                return n
    raise AssertionError(marker)


# ---- hypothesis: random expression trees ----------------------------------------------------------

# Unary and binary ops whose values stay bounded on bounded inputs (so the trees stay well-conditioned).
UNARY = {
    "sin": cr.sin, "cos": cr.cos, "tanh": cr.tanh, "sigmoid": cr.sigmoid, "neg": lambda a: -a,
    "square": cr.square, "exp_tanh": lambda a: cr.exp(cr.tanh(a)), "log1p_sq": lambda a: cr.log(1 + a * a),
    "sqrt1p_sq": lambda a: cr.sqrt(1 + a * a), "recip": lambda a: 1 / (2 + cr.sin(a)),
    "sum_keep": lambda a: a.sum(axis=-1, keepdims=True), "mean0": lambda a: cr.mean(a, axis=0, keepdims=True),
    "softmax": lambda a: cr.softmax(a, axis=-1), "lse": lambda a: cr.logsumexp(a, axis=-1, keepdims=True),
    "T2": lambda a: a.T.T, "pow3": lambda a: a**3, "abs_shift": lambda a: abs(a) * 0 + a,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.5 + cr.cos(b)), "max": lambda a, b: cr.maximum(a, b + 10.0),
    "where": lambda a, b: cr.where(np.array([[True], [False], [True]]), a, b),
}


def trees(depth: int) -> st.SearchStrategy[Any]:
    leaf = st.sampled_from(["x", "y", "c"])
    return st.recursive(
        leaf,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(sorted(UNARY)), sub),
            st.tuples(st.sampled_from(sorted(BINARY)), sub, sub),
        ),
        max_leaves=depth,
    )


def evaluate(tree: Any, env: dict[str, Any]) -> Any:
    if isinstance(tree, str):
        return env[tree]
    if len(tree) == 2:
        return UNARY[tree[0]](evaluate(tree[1], env))
    return BINARY[tree[0]](evaluate(tree[1], env), evaluate(tree[2], env))


def program(tree: Any) -> Any:
    c = np.array([0.3, -0.7, 1.1, 0.2])  # a constant operand, shape (4,)

    def f(x, y):  # x: (3, 1), y: (4,) -- every binary op broadcasts to (3, 4)
        out = evaluate(tree, {"x": x, "y": y, "c": c}) + 0 * x + 0 * y
        return out

    return f


_X = hnp.arrays(np.float64, (3, 1), elements=st.floats(-2, 2))
_Y = hnp.arrays(np.float64, (4,), elements=st.floats(-2, 2))


@settings(max_examples=int(os.environ.get("CR_HYPOTHESIS_EXAMPLES", 60)), deadline=None)
@given(tree=trees(8), x=_X, y=_Y)
def test_random_trees_gradient_matches_central_differences(tree, x, y) -> None:
    f = program(tree)
    w = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    loss = lambda a, b: f(a, b) * w  # noqa: E731 - a random-looking seed for the backward pass
    value, (gx, gy) = cr.value_and_grad(loss, argnums=(0, 1))(x, y)
    assert gx.shape == x.shape and gy.shape == y.shape
    assert isinstance(gx, np.ndarray) and isinstance(gy, np.ndarray)
    # central differences lose ~1e-10 of the function's magnitude to rounding: scale atol with it
    atol = 1e-5 * max(1.0, 1e-3 * float(np.abs(value).sum()))
    np.testing.assert_allclose(gx, numeric_grad(loss, [x, y], 0), rtol=1e-4, atol=atol)
    np.testing.assert_allclose(gy, numeric_grad(loss, [x, y], 1), rtol=1e-4, atol=atol)


@settings(max_examples=int(os.environ.get("CR_HYPOTHESIS_EXAMPLES", 40)), deadline=None)
@given(tree=trees(8), x=_X, y=_Y,
       a=st.floats(-3, 3), b=st.floats(-3, 3),
       g1=hnp.arrays(np.float64, (3, 4), elements=st.floats(-2, 2)),
       g2=hnp.arrays(np.float64, (3, 4), elements=st.floats(-2, 2)))
def test_backward_is_linear_in_the_seed(tree, x, y, a, b, g1, g2) -> None:
    _, vjp_fn = cr.vjp(program(tree), x, y)
    lhs = vjp_fn(a * g1 + b * g2)
    r1, r2 = vjp_fn(g1), vjp_fn(g2)
    for k in range(2):
        np.testing.assert_allclose(lhs[k], a * r1[k] + b * r2[k], rtol=1e-9, atol=1e-9)


@settings(max_examples=int(os.environ.get("CR_HYPOTHESIS_EXAMPLES", 40)), deadline=None)
@given(tree=trees(6), x=_X, y=_Y)
def test_tensor_backward_agrees_with_functional_grad(tree, x, y) -> None:
    f = program(tree)
    tx, ty = cr.tensor(x, requires_grad=True), cr.tensor(y, requires_grad=True)
    f(tx, ty).backward()
    gx, gy = cr.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(tx.grad, gx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ty.grad, gy, rtol=1e-12, atol=1e-14)
    # create_graph=True evaluates the same rules with chainrule's own functions: same numbers
    tx.grad = ty.grad = None
    f(tx, ty).backward(create_graph=True)
    np.testing.assert_allclose(tx.grad.data, gx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ty.grad.data, gy, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("f", [lambda x: x.sum(), lambda x: x.mean(), lambda x: cr.broadcast_to(x, (2, 3)),
                               lambda x: x.reshape(3, 1) + 0, lambda x: x.T])
def test_gradients_are_writable_arrays_of_their_own(f) -> None:
    """Optimizers update gradients in place: never hand out read-only broadcast views or views."""
    g = cr.grad(f)(np.ones(3))
    assert g.flags.writeable and g.base is None
    x = cr.tensor(np.ones(3), requires_grad=True)
    f(x).backward()
    assert x.grad.flags.writeable and x.grad.base is None
    x.grad *= 0.5


def test_an_error_inside_a_differentiated_function_leaves_no_nesting_behind() -> None:
    def boom(x):
        raise ZeroDivisionError("inside f")

    with pytest.raises(ZeroDivisionError):
        cr.grad(boom)(1.0)
    g = cr.grad(lambda x: x * x)(3.0)  # a plain top-level call again: NumPy arrays, not tensors
    assert isinstance(g, np.ndarray) and g == 6.0
