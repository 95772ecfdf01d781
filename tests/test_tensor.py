"""The Tensor API: construction, attributes, operators, no_grad, gradient accumulation, in-place
updates, NumPy dispatch, broadcasting and fan-out, dtypes."""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest

import chainrule as cr

# ---- construction and attributes ----------------------------------------------------------------


def test_tensor_attributes() -> None:
    x = cr.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    assert isinstance(x, cr.Tensor)
    assert isinstance(x.data, np.ndarray)
    assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float64
    assert x.requires_grad is True and x.grad is None and x.is_leaf
    np.testing.assert_array_equal(x.numpy(), [[1, 2, 3], [4, 5, 6]])
    assert cr.Tensor([1.0]).requires_grad is False


def test_item_and_python_conversions() -> None:
    t = cr.tensor(2.5, requires_grad=True)
    assert t.item() == 2.5 and isinstance(t.item(), float)
    assert t.shape == () and t.ndim == 0
    assert float(t.detach()) == 2.5 and float(cr.tensor(2.5)) == 2.5
    with cr.no_grad():
        assert float(t) == 2.5
    assert cr.tensor([[7.0]]).item() == 7.0
    with pytest.raises(ValueError):
        cr.tensor([1.0, 2.0]).item()


def test_python_number_conversions_never_drop_a_gradient() -> None:
    # math.exp(x) calls float(x): on a tensor that takes part in a gradient that would silently
    # compute with a plain number, so it is refused with a message saying what to use instead
    with pytest.raises(TypeError, match="would drop its gradient.*cr.exp"):
        cr.grad(lambda x: math.exp(x))(1.0)
    with pytest.raises(TypeError, match="would drop its gradient"):
        cr.grad(lambda x: x * math.sqrt(x))(4.0)
    assert cr.grad(lambda x: x * np.sqrt(x))(4.0) == pytest.approx(3.0)


def test_dtype_argument_and_integer_promotion() -> None:
    assert cr.tensor([1, 2, 3], requires_grad=True).dtype == np.float64  # ints need floats for grads
    assert cr.tensor([1, 2, 3]).dtype.kind == "i"  # a constant keeps its type
    assert cr.tensor([1, 2], dtype=np.float32).dtype == np.float32
    assert cr.tensor(np.arange(3, dtype=np.float32), requires_grad=True).dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        cr.tensor([1, 2], dtype=np.int64, requires_grad=True)


def test_tensor_from_tensor_and_numpy_array_does_not_link_graph() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = cr.tensor(x * 2)
    assert not y.requires_grad and y.is_leaf
    np.testing.assert_array_equal(y.data, [2.0, 4.0])


def test_detach_and_numpy() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [3.0, 6.0])
    z = (d * x).sum()
    z.backward()
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])  # nothing flowed through the detached branch


def test_repr_mentions_values_and_grad_flag() -> None:
    r = repr(cr.tensor([1.0, 2.0], requires_grad=True))
    assert "1." in r and "2." in r and "requires_grad=True" in r


# ---- operators ------------------------------------------------------------------------------


BINARY = [
    (operator.add, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    (operator.sub, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
    (operator.mul, lambda a, b: (b, a)),
    (operator.truediv, lambda a, b: (1 / b, -a / b**2)),
    (operator.pow, lambda a, b: (b * a ** (b - 1), a**b * np.log(a))),
]


@pytest.mark.parametrize("op, d", BINARY, ids=["add", "sub", "mul", "truediv", "pow"])
def test_binary_operators_and_reflected(op, d) -> None:
    a, b = np.array([1.5, 2.0, 0.7]), np.array([0.5, 1.25, 2.0])
    da, db = d(a, b)
    # tensor op tensor
    x, y = cr.tensor(a, requires_grad=True), cr.tensor(b, requires_grad=True)
    out = op(x, y)
    np.testing.assert_allclose(out.data, op(a, b))
    out.backward()
    np.testing.assert_allclose(x.grad, da)
    np.testing.assert_allclose(y.grad, db)
    # tensor op constant, constant op tensor (the reflected operator), with floats and arrays
    for const in (b, b.tolist()[0], np.float64(b[0])):
        x = cr.tensor(a, requires_grad=True)
        out = op(x, const)
        np.testing.assert_allclose(out.data, op(a, np.asarray(const)))
        out.backward()
        np.testing.assert_allclose(x.grad, d(a, np.asarray(const) + 0 * a)[0])
        y = cr.tensor(a, requires_grad=True)
        out = op(const, y)
        assert isinstance(out, cr.Tensor)
        np.testing.assert_allclose(out.data, op(np.asarray(const), a))
        out.backward()
        np.testing.assert_allclose(y.grad, d(np.asarray(const) + 0 * a, a)[1])


def test_matmul_operator_and_reflected() -> None:
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(12.0).reshape(3, 4) / 10
    x = cr.tensor(b, requires_grad=True)
    out = a @ x
    assert isinstance(out, cr.Tensor)
    np.testing.assert_allclose(out.data, a @ b)
    out.backward()
    np.testing.assert_allclose(x.grad, a.T @ np.ones((2, 4)))
    y = cr.tensor(a, requires_grad=True)
    (y @ b).backward()
    np.testing.assert_allclose(y.grad, np.ones((2, 4)) @ b.T)


def test_unary_operators() -> None:
    x = cr.tensor([-1.5, 2.0], requires_grad=True)
    np.testing.assert_array_equal((-x).data, [1.5, -2.0])
    assert (+x) is x or np.array_equal((+x).data, x.data)
    np.testing.assert_array_equal(abs(x).data, [1.5, 2.0])
    (abs(x) + -x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-2.0, 0.0])


def test_comparisons_are_constants() -> None:
    x = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for op in (operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne):
        r = op(x, 2.0)
        assert isinstance(r, cr.Tensor) and not r.requires_grad
        np.testing.assert_array_equal(r.data, op(np.array([1.0, 2.0, 3.0]), 2.0))
    # a mask multiplies like a constant: d/dx (x * (x > 1.5)) = (x > 1.5)
    (x * (x > 1.5)).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0])


def test_indexing_and_iteration() -> None:
    x = cr.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    rows = list(x)
    assert len(rows) == 2 and all(isinstance(r, cr.Tensor) for r in rows)
    (rows[0] * 2 + rows[1] * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [[2, 2, 2], [3, 3, 3]])
    assert len(x) == 2


def test_indexing_with_a_tensor_index_and_list() -> None:
    x = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[cr.tensor([2, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0])
    x.grad = None
    x[[1, 1]].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 0.0])


def test_setitem_on_a_constant_writes_and_on_a_graph_tensor_is_recorded() -> None:
    c = cr.tensor([1.0, 2.0, 3.0])
    c[1] = 5.0
    np.testing.assert_array_equal(c.data, [1.0, 5.0, 3.0])
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    y[0] = 7.0  # y takes part in the graph: a new node, the 3x it held stays for the gradient
    y.sum().backward()
    np.testing.assert_array_equal(y.data, [7.0, 6.0])
    np.testing.assert_array_equal(x.grad, [0.0, 3.0])


def test_methods_mirror_numpy() -> None:
    a = np.arange(1.0, 7.0).reshape(2, 3)
    x = cr.tensor(a, requires_grad=True)
    np.testing.assert_allclose(x.sum(axis=0).data, a.sum(axis=0))
    np.testing.assert_allclose(x.mean().data, a.mean())
    np.testing.assert_allclose(x.max(axis=1).data, a.max(axis=1))
    np.testing.assert_allclose(x.min().data, a.min())
    np.testing.assert_allclose(x.reshape(3, 2).data, a.reshape(3, 2))
    np.testing.assert_allclose(x.reshape((6,)).data, a.reshape(6))
    np.testing.assert_allclose(x.transpose().data, a.T)
    np.testing.assert_allclose(x.T.data, a.T)
    np.testing.assert_allclose(x.flatten().data, a.ravel())
    np.testing.assert_allclose(x.exp().data, np.exp(a))
    np.testing.assert_allclose(x.log().data, np.log(a))
    np.testing.assert_allclose(x.sqrt().data, np.sqrt(a))
    np.testing.assert_allclose(x.tanh().data, np.tanh(a))
    np.testing.assert_allclose(x.sigmoid().data, 1 / (1 + np.exp(-a)))
    np.testing.assert_allclose((x - 3).relu().data, np.maximum(a - 3, 0))


# ---- backward, accumulation, no_grad -----------------------------------------------------------


def test_backward_on_non_scalar_seeds_ones() -> None:
    x = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_backward_with_explicit_grad() -> None:
    x = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).backward(np.array([1.0, 0.0, -2.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, -12.0])
    with pytest.raises(ValueError, match="shape"):
        (x * x).backward(np.ones(2))


def test_leaf_gradients_accumulate_across_backward_calls() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3 + 2, 3 + 4])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_non_leaf_intermediates_never_get_grad() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    out = (h * h).sum()
    out.backward()
    assert h.grad is None and out.grad is None
    np.testing.assert_array_equal(x.grad, 8 * np.array([1.0, 2.0]))
    # a second graph through a fresh intermediate: still nothing leaks
    h2 = x + 1
    (h2 * 3).sum().backward()
    assert h2.grad is None


def test_gradients_of_two_leaves_do_not_alias() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = cr.tensor([3.0, 4.0], requires_grad=True)
    (x + y).sum().backward()
    assert x.grad is not y.grad and not np.shares_memory(x.grad, y.grad)
    x.grad += 1  # changing one never changes the other
    np.testing.assert_array_equal(y.grad, [1.0, 1.0])


def test_grad_of_constant_seed_is_not_the_callers_array() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    seed = np.array([1.0, 1.0])
    (x + 0.0).backward(seed)
    x.grad *= 5
    np.testing.assert_array_equal(seed, [1.0, 1.0])


def test_no_grad_records_nothing() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    with cr.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()

    @cr.no_grad()
    def f(t):
        return t * t

    assert not f(x).requires_grad
    assert (x * 2).requires_grad  # switched back on afterwards


def test_enable_grad_inside_no_grad() -> None:
    x = cr.tensor([1.0], requires_grad=True)
    with cr.no_grad():
        with cr.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and not z.requires_grad


def test_in_place_update_of_a_leaf_keeps_the_same_array() -> None:
    """The worksheet's `w -= step_size * w.grad` updates the leaf's values in place."""
    w = cr.tensor([1.0, -2.0], requires_grad=True)
    buf = w.data
    (w * w).sum().backward()
    w -= 0.1 * w.grad
    assert isinstance(w, cr.Tensor) and w.is_leaf and w.requires_grad
    assert w.data is buf
    np.testing.assert_allclose(w.data, [0.8, -1.6])
    w += cr.tensor([1.0, 1.0])
    w *= 2
    w /= 4
    np.testing.assert_allclose(buf, [0.9, -0.3])
    with pytest.raises(ValueError):
        w += np.ones((3, 2))


def test_in_place_on_an_intermediate_builds_a_node() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    y += x
    y *= x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 4 * np.array([1.0, 2.0]))  # d/dx 2x² = 4x


def test_requires_grad_can_be_switched_on_for_a_leaf() -> None:
    x = cr.tensor([1, 2])
    x.requires_grad_()
    assert x.requires_grad and x.dtype == np.float64
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


# ---- broadcasting, fan-out, constants, 0-d, dtypes -------------------------------------------------


@pytest.mark.parametrize("sa, sb", [((), (3,)), ((3,), ()), ((3, 1), (1, 4)), ((2, 3, 4), (4,)),
                                    ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1)), ((1,), (2, 2))])
def test_broadcasting_gradients_are_summed_back_to_input_shapes(sa, sb) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    x, y = cr.tensor(a, requires_grad=True), cr.tensor(b, requires_grad=True)
    (x * y).sum().backward()
    bshape = np.broadcast_shapes(sa, sb)
    np.testing.assert_allclose(x.grad, _sum_to(np.broadcast_to(b, bshape), sa))
    np.testing.assert_allclose(y.grad, _sum_to(np.broadcast_to(a, bshape), sb))
    assert x.grad.shape == sa and y.grad.shape == sb


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Independent reduction of a broadcast gradient back to ``shape`` (an explicit loop)."""
    out = np.zeros(shape)
    lead = g.ndim - len(shape)
    for idx in np.ndindex(g.shape):
        tgt = tuple(0 if s == 1 else i for i, s in zip(idx[lead:], shape))
        out[tgt] += g[idx]
    return out


def test_fan_out_gradients_add_up() -> None:
    x = cr.tensor(3.0, requires_grad=True)
    (x * x).backward()
    assert x.grad == 6.0
    a = cr.tensor([1.0, 2.0], requires_grad=True)
    b = a + a
    c = b + b
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0])
    # a diamond: x feeds two paths that meet again
    x = cr.tensor(0.5, requires_grad=True)
    u, v = cr.sin(x), cr.exp(x)
    (u * v + u).backward()
    np.testing.assert_allclose(x.grad, np.cos(0.5) * np.exp(0.5) + np.sin(0.5) * np.exp(0.5) + np.cos(0.5))


def test_constants_get_no_gradient_and_do_not_break_backward() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    c = cr.tensor([10.0, 20.0])
    out = (x * c + np.array([1.0, 1.0]) * 2 + 5).sum()
    out.backward()
    np.testing.assert_array_equal(x.grad, [10.0, 20.0])
    assert c.grad is None


def test_zero_dimensional_arrays() -> None:
    x = cr.tensor(np.array(2.0), requires_grad=True)
    y = cr.exp(x) * x
    assert y.shape == ()
    y.backward()
    assert x.grad.shape == ()
    np.testing.assert_allclose(x.grad, np.exp(2.0) * 3)


def test_integer_inputs_are_promoted_for_gradients() -> None:
    x = cr.tensor(3, requires_grad=True)
    (x * x).backward()
    assert x.grad.dtype == np.float64 and x.grad == 6.0
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    (x * np.array([2, 3])).sum().backward()  # an integer constant
    np.testing.assert_array_equal(x.grad, [2.0, 3.0])


def test_float32_is_preserved() -> None:
    x = cr.tensor(np.array([0.5, 1.5], dtype=np.float32), requires_grad=True)
    y = cr.sigmoid(x * 2.0 + 1) ** 2
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    s = 1 / (1 + np.exp(-(2 * x.data.astype(np.float64) + 1)))
    np.testing.assert_allclose(x.grad, 2 * s * s * (1 - s) * 2, rtol=1e-5)
    g = cr.grad(lambda t: (t * t).sum())(np.array([1.0, 2.0], dtype=np.float32))
    assert g.dtype == np.float32


def test_lists_as_inputs() -> None:
    out = cr.exp([0.0, 1.0])
    np.testing.assert_allclose(out.data, np.exp([0.0, 1.0]))
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    (x * [3.0, 4.0]).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_unsupported_operand_type_is_a_clear_error() -> None:
    x = cr.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="str"):
        x + "a"


def test_shape_mismatch_names_op_and_both_shapes() -> None:
    x = cr.tensor(np.ones((2, 3)), requires_grad=True)
    y = cr.tensor(np.ones((4,)))
    with pytest.raises(ValueError) as info:
        x + y
    msg = str(info.value)
    assert "add" in msg and "(2, 3)" in msg and "(4,)" in msg
    assert isinstance(info.value, cr.ShapeError)
    with pytest.raises(cr.ShapeError) as info:
        x @ cr.tensor(np.ones((2, 2)))
    assert "matmul" in str(info.value) and "(2, 3)" in str(info.value) and "(2, 2)" in str(info.value)
    assert __file__ in str(info.value)  # and where the user wrote it


def test_array_conversion_of_a_grad_tensor_is_refused() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="detach"):
        np.asarray(x)
    np.testing.assert_array_equal(np.asarray(cr.tensor([1.0, 2.0])), [1.0, 2.0])


# ---- NumPy dispatch ------------------------------------------------------------------------------


_A = np.array([[0.5, 1.0, 2.0], [1.5, 0.25, 3.0]])
_B = np.array([[1.0, 0.5, 2.5], [0.75, 2.0, 1.0]])

DISPATCH = [
    ("exp", lambda x: np.exp(x)),
    ("log", lambda x: np.log(x)),
    ("sin", lambda x: np.sin(x)),
    ("cos", lambda x: np.cos(x)),
    ("sqrt", lambda x: np.sqrt(x)),
    ("tanh", lambda x: np.tanh(x)),
    ("square", lambda x: np.square(x)),
    ("maximum", lambda x: np.maximum(x, _B)),
    ("minimum", lambda x: np.minimum(_B, x)),
    ("add", lambda x: np.add(x, _B)),
    ("multiply", lambda x: np.multiply(_B, x)),
    ("divide", lambda x: np.divide(_B, x)),
    ("power", lambda x: np.power(x, _B)),
    ("sum", lambda x: np.sum(x, axis=0)),
    ("mean", lambda x: np.mean(x, axis=1, keepdims=True)),
    ("max", lambda x: np.max(x, axis=1)),
    ("matmul", lambda x: np.matmul(x, _B.T)),
    ("dot", lambda x: np.dot(x, _B.T)),
    ("where", lambda x: np.where(_A > 1, x, -x)),
    ("reshape", lambda x: np.reshape(x, (3, 2))),
    ("transpose", lambda x: np.transpose(x)),
    ("concatenate", lambda x: np.concatenate([x, x * 2], axis=1)),
    ("stack", lambda x: np.stack([x, _B])),
    ("broadcast_to", lambda x: np.broadcast_to(x, (4, 2, 3))),
    ("expand_dims", lambda x: np.expand_dims(x, 1)),
    ("squeeze", lambda x: np.squeeze(np.expand_dims(x, 0))),
    ("swapaxes", lambda x: np.swapaxes(x, 0, 1)),
    ("clip", lambda x: np.clip(x, 0.4, 2.2)),
]


@pytest.mark.parametrize("name, f", DISPATCH, ids=[d[0] for d in DISPATCH])
def test_numpy_functions_on_tensors_are_differentiated(name, f) -> None:
    from conftest import numeric_grad

    w = np.random.default_rng(1).standard_normal(np.shape(f(_A)))
    x = cr.tensor(_A, requires_grad=True)
    out = f(x)
    assert isinstance(out, cr.Tensor) and out.requires_grad, name
    np.testing.assert_allclose(out.data, f(_A))
    (out * w).sum().backward()
    np.testing.assert_allclose(x.grad, numeric_grad(lambda a: f(a) * w, [_A], 0), rtol=1e-6, atol=1e-8)


def test_numpy_shape_queries_on_tensors() -> None:
    x = cr.tensor(np.ones((2, 3)), requires_grad=True)
    assert np.shape(x) == (2, 3) and np.ndim(x) == 2 and np.size(x) == 6
    assert np.zeros_like(x).shape == (2, 3)


@pytest.mark.parametrize("call, name", [
    (lambda t: np.correlate(t, t), "correlate"),
    (lambda t: np.nanmedian(t), "nanmedian"),
    (lambda t: np.add.reduce(t), "add.reduce"),
    (lambda t: np.heaviside(t, 0.5), "heaviside"),
    (lambda t: np.exp(t, out=np.empty(2)), "exp"),
])
def test_unsupported_numpy_functions_raise_type_error_naming_them(call, name) -> None:
    t = cr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match=name.replace(".", r"\.")):
        call(t)


def test_truth_tests_answer_plainly_and_unsupported_names_are_exact() -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True)
    assert np.all(x > 0) and np.any(x > 1.5) and (x > 0).all() and not (x > 5).any()
    assert np.allclose(x, [1.0, 2.0])
    with pytest.raises(TypeError, match=r"np\.linalg\.eig is not supported"):
        np.linalg.eig(cr.tensor(np.eye(2), requires_grad=True))


def test_expanded_softmax_defines_every_name_it_uses() -> None:
    g = cr.trace(lambda x: cr.softmax(x), x=np.array([1.0, 2.0, 3.0]), expand=True)
    defined = {n.name for n in g.inputs} | {e.name for e in g.equations}
    for e in g.equations:
        for name in e.inputs:
            assert name in defined or name.lstrip("-").replace(".", "").isdigit(), (e, name)
    np.testing.assert_allclose(g.value, np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
