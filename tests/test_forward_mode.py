"""Forward mode (cr.jvp), Jacobians and Hessians, forward-mode tables, and gates you define (issue 11).

References are independent: central differences written here, and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from worksheet_functions import q2a, q2b, q2c

import chainrule as cr


def central_jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f(x) / d x by central differences, shaped out.shape + x.shape."""
    x = np.array(x, dtype=np.float64)
    out = np.asarray(f(x))
    jac = np.zeros(out.shape + x.shape)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = np.asarray(f(x))
        x[idx] = old - eps
        down = np.asarray(f(x))
        x[idx] = old
        jac[(Ellipsis,) + idx] = (up - down) / (2 * eps)
    return jac


def values(t):
    return np.asarray(t.data if isinstance(t, cr.Tensor) else t)


# ---- jvp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("f, point", [(q2a, (1.0, 3.0, 2.0)), (q2b, (1.0, 3.0, 2.0)),
                                      (q2c, (math.e, math.pi / 2, 2.0))])
def test_jvp_along_each_input_is_that_partial_derivative(f, point) -> None:
    grads = cr.grad(f, argnums=(0, 1, 2))(*point)
    for k in range(3):
        tangents = tuple(1.0 if j == k else 0.0 for j in range(3))
        out, t = cr.jvp(f, point, tangents)
        assert out == pytest.approx(float(values(f(*point))))
        assert t == pytest.approx(float(grads[k]), abs=1e-12)


def test_jvp_of_arrays_tuples_and_errors(rng) -> None:
    x, v = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    out, t = cr.jvp(lambda x: cr.tanh(x) @ np.ones(4), (x,), (v,))
    np.testing.assert_allclose(t, ((1 - np.tanh(x) ** 2) * v) @ np.ones(4))
    (a, b), (ta, tb) = cr.jvp(lambda x: (cr.sin(x), x.sum()), (x,), (v,))
    np.testing.assert_allclose(ta, np.cos(x) * v)
    assert tb == pytest.approx(v.sum())
    with pytest.raises(ValueError, match="tangent 0 has shape"):
        cr.jvp(cr.sin, (x,), (np.ones(3),))
    with pytest.raises(TypeError, match="tuple"):
        cr.jvp(cr.sin, x, v)


def test_forward_mode_differentiates_again(rng) -> None:
    """Reverse over forward: the gradient of a directional derivative, against the closed form."""
    x = rng.normal(size=4)
    h = lambda x: cr.jvp(lambda z: cr.sum(cr.sin(z) * z), (x,), (np.ones(4),))[1]  # noqa: E731
    # d/dz_i sum(sin z · z) = cos z_i · z_i + sin z_i; its derivative: 2 cos z_i − z_i sin z_i
    np.testing.assert_allclose(cr.grad(h)(x), 2 * np.cos(x) - x * np.sin(x), rtol=1e-12)


# ---- jacobian, hessian, hvp --------------------------------------------------------------------


def test_jacobian_modes_agree_with_each_other_and_with_differences(rng) -> None:
    A = rng.normal(size=(3, 4))
    f = lambda x: cr.tanh(A @ x) * x[:3]  # noqa: E731
    x = rng.normal(size=4)
    rev, fwd, auto = (cr.jacobian(f, mode=m)(x) for m in ("rev", "fwd", None))
    assert rev.shape == (3, 4)
    np.testing.assert_allclose(rev, fwd, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(auto, rev)
    np.testing.assert_allclose(rev, central_jacobian(lambda x: values(f(x)), x), rtol=1e-6, atol=1e-9)


def test_jacobian_shapes_follow_jax_and_argnums_tuple(rng) -> None:
    x, y = rng.normal(size=(2, 3)), rng.normal(size=3)
    f = lambda x, y: cr.sin(x) * y  # noqa: E731
    jx, jy = cr.jacobian(f, argnums=(0, 1))(x, y)
    assert jx.shape == (2, 3, 2, 3) and jy.shape == (2, 3, 3)
    np.testing.assert_allclose(jx, central_jacobian(lambda x: values(f(x, y)), x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jy, central_jacobian(lambda y: values(f(x, y)), y), rtol=1e-6, atol=1e-9)
    for mode in ("fwd", "rev"):
        np.testing.assert_allclose(cr.jacobian(f, argnums=1, mode=mode)(x, y), jy, rtol=1e-12)
    with pytest.raises(ValueError, match="mode"):
        cr.jacobian(f, mode="sideways")(x, y)


def test_hessian_of_a_quadratic_form_is_a_plus_a_transposed(rng) -> None:
    A = rng.normal(size=(4, 4))
    H = cr.hessian(lambda x: x @ A @ x)(rng.normal(size=4))
    np.testing.assert_allclose(H, A + A.T, rtol=1e-12, atol=1e-14)


def test_hessian_closed_forms_and_tuples(rng) -> None:
    x = rng.normal(size=3)
    np.testing.assert_allclose(cr.hessian(lambda x: cr.sum(cr.sin(x)))(x), np.diag(-np.sin(x)), atol=1e-14)
    y = rng.normal(size=3)
    (hxx, hxy), (hyx, hyy) = cr.hessian(lambda x, y: cr.sum(x * x * y), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(hxx, np.diag(2 * y))
    np.testing.assert_allclose(hxy, np.diag(2 * x))
    np.testing.assert_allclose(hyx, np.diag(2 * x))
    np.testing.assert_allclose(hyy, np.zeros((3, 3)))


def test_hessian_of_a_vector_function_is_one_hessian_per_output(rng) -> None:
    """JAX's shape out.shape + in.shape + in.shape, never the Hessian of the outputs' sum."""
    f = lambda a: cr.stack([a[0] * a[1], a[0] ** 2, cr.sum(cr.sin(a))])  # noqa: E731
    a = rng.normal(size=2)
    H = cr.hessian(f)(a)
    assert H.shape == (3, 2, 2)
    np.testing.assert_allclose(H[0], [[0, 1], [1, 0]], atol=1e-14)
    np.testing.assert_allclose(H[1], [[2, 0], [0, 0]], atol=1e-14)
    np.testing.assert_allclose(H[2], np.diag(-np.sin(a)), atol=1e-14)
    with pytest.raises(ValueError, match=r"hvp needs f to return one number; it returned shape \(3,\)"):
        cr.hvp(f, a, a)


def test_hessian_keeps_integer_labels_integers() -> None:
    """The arguments not differentiated (labels, indices) reach f as given, also in the nested pass."""
    H = cr.hessian(lambda w, y: cr.sum(w[y] ** 3))(np.array([1.0, 2.0, 3.0]), np.array([0, 2]))
    np.testing.assert_allclose(H, np.diag([6.0, 0.0, 18.0]))


def test_hvp_is_hessian_times_vector(rng) -> None:
    A = rng.normal(size=(5, 5))
    f = lambda x: cr.sum(cr.exp(A @ x) / 10) + x @ A @ x  # noqa: E731
    x, v = rng.normal(size=5) * 0.3, rng.normal(size=5)
    np.testing.assert_allclose(cr.hvp(f, x, v), cr.hessian(f)(x) @ v, rtol=1e-10)


# ---- the forward-mode table ---------------------------------------------------------------------


def test_forward_mode_table_on_the_worksheet() -> None:
    g = cr.trace(q2a, x=1.0, y=3.0, z=2.0, mode="forward")
    text = g.table()
    assert "Forward mode" in text and "ẋ = 1" in text and "ẏ = 0" in text
    assert "= ẋ + ẏ = 1" in text
    assert "Result: ∂out/∂x = 2" in text
    g = cr.trace(q2a, x=1.0, y=3.0, z=2.0, mode="forward", wrt="z")
    assert g.output.tangent == pytest.approx(4.0)  # ∂out/∂z = x + y
    steps = g.forward_steps()
    assert [s.rule for s in steps][-1] is not None
    with pytest.raises(ValueError, match="wrt='w' is not an input"):
        cr.trace(q2a, x=1.0, y=3.0, z=2.0, mode="forward", wrt="w")


def test_forward_mode_table_on_an_array_says_it_gives_a_direction_not_the_gradient() -> None:
    x = np.array([0.3, -1.2])
    g = cr.trace(lambda x: cr.sum(cr.sinh(x) ** 2), x=x, mode="forward")
    along = float(np.sum(2 * np.sinh(x) * np.cosh(x)))  # ∂out/∂x · [1, 1], by the closed form
    assert float(g.output.tangent) == pytest.approx(along)
    text = g.table()
    assert f"Result: ∂out/∂x · ẋ = {cr.graph.fmt_value(g.output.tangent)}" in text
    assert "not the gradient" in text and "Result: ∂out/∂x =" not in text


def test_forward_tangents_equal_reverse_gradients_node_by_node() -> None:
    for name in ("x", "y", "z"):
        g = cr.trace(q2c, x=math.e, y=math.pi / 2, z=2.0, mode="forward", wrt=name)
        assert g.output.tangent == pytest.approx(float(g.grads[name]), abs=1e-12)


# ---- gates you define ---------------------------------------------------------------------------


def _affine():
    @cr.gate(explain="affine layer: x @ w + b", check=True)
    def affine(x, w, b):
        return x @ w + b

    @affine.vjp
    def affine_vjp(g, x, w, b, out):
        return g @ w.T, x.T @ g, g.sum(axis=0)

    return affine


def test_a_gate_you_define_is_one_node_with_your_explanation(rng) -> None:
    affine = _affine()
    x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    f = lambda x, w, b: cr.sum(cr.tanh(affine(x, w, b)) ** 2)  # noqa: E731
    assert cr.gradcheck(f, x, w, b)
    g = cr.trace(f, x=x, w=w, b=b)
    assert g.equations[0].op == "affine" and "t1 = affine(x, w, b)" in g.staged()
    assert "affine layer: x @ w + b" in g.table()
    assert 'node-t1' in g.to_dot() and "affine" in g.to_dot()


def test_your_backward_is_checked_and_a_wrong_one_is_refused_naming_the_input() -> None:
    @cr.gate(check=True)
    def scale(x, y):
        return x * y

    @scale.vjp
    def scale_vjp(g, x, y, out):
        return g * y, -g * x  # the wrong sign, in y's gradient

    with pytest.raises(cr.GradcheckError, match=r"input 1 \('y'\)"):
        scale(np.ones(3), np.full(3, 2.0))
    # a check that failed is not taken as passed: the next call is refused again, never a wrong gradient
    with pytest.raises(cr.GradcheckError, match=r"input 1 \('y'\)"):
        cr.grad(lambda y: cr.sum(scale(np.ones(3), y)))(np.full(3, 2.0))

    @scale.vjp
    def scale_vjp_fixed(g, x, y, out):
        return g * y, g * x

    np.testing.assert_allclose(cr.grad(lambda y: cr.sum(scale(np.ones(3), y)))(np.full(3, 2.0)), np.ones(3))


def test_your_forward_mode_rule_is_checked_too() -> None:
    @cr.gate(check=True)
    def my_square(x):
        return x * x

    @my_square.vjp
    def my_square_vjp(g, x, out):
        return 2 * g * x

    @my_square.jvp
    def my_square_jvp(tangents, x, out):
        return -2 * x * tangents[0]  # the wrong sign

    with pytest.raises(cr.GradcheckError, match="forward-mode rule"):
        cr.jacobian(my_square, mode="fwd")(np.array([1.0, 2.0]))


def test_a_gate_you_define_never_replaces_one_of_the_table() -> None:
    with pytest.raises(ValueError, match=r"'square' is a gate of chainrule's table.*name='my_square'"):
        @cr.gate
        def square(x):
            return x * x
    assert cr.GATES["square"].kind != "custom"
    np.testing.assert_allclose(cr.grad(lambda x: cr.sum(np.square(x)))(np.array([1.0, 2.0])), [2.0, 4.0])


def test_gates_you_define_take_keywords_and_defaults() -> None:
    @cr.gate
    def scale(x, k=2.0):
        return x * k

    @scale.vjp
    def scale_vjp(g, x, k, out):
        return g * k, None

    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(cr.grad(lambda z: cr.sum(scale(z, k=3.0)))(x), [3.0, 3.0])
    np.testing.assert_allclose(cr.grad(lambda z: cr.sum(scale(z)))(x), [2.0, 2.0])
    with pytest.raises(TypeError, match=r"scale takes 2 inputs \(x, k\)"):
        scale(x, 1.0, 2.0)


def test_gates_you_define_differentiate_again_and_in_forward_mode(rng) -> None:
    affine = _affine()
    x, w, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    inner = lambda x: cr.sum(affine(x, w, b) ** 2)  # noqa: E731
    outer = lambda x: cr.sum(cr.grad(inner)(x) ** 2)  # noqa: E731
    np.testing.assert_allclose(cr.grad(outer)(x), central_jacobian(lambda x: values(outer(x)), x), rtol=1e-5)
    v = rng.normal(size=x.shape)
    _, t = cr.jvp(lambda x: cr.tanh(affine(x, w, b)), (x,), (v,))  # by transposing your vjp
    jac = central_jacobian(lambda x: np.tanh(x @ w + b), x)
    np.testing.assert_allclose(t, np.tensordot(jac, v, axes=2), rtol=1e-6, atol=1e-9)


def test_generated_code_calls_your_functions_and_compile_says_it_cannot(rng) -> None:
    affine = _affine()
    x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    f = lambda x, w, b: cr.sum(affine(x, w, b) ** 2)  # noqa: E731
    src = cr.trace(f, x=x, w=w, b=b).to_source("net")
    assert "def affine(x, w, b):" in src and "def affine_vjp(g, x, w, b, out):" in src
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)  # noqa: S102 - generated by chainrule
    out, *grads = ns["net"](x, w, b)
    ref_out, ref_grads = cr.value_and_grad(f, argnums=(0, 1, 2))(x, w, b)
    np.testing.assert_allclose(out, ref_out)
    for a, r in zip(grads, ref_grads):
        np.testing.assert_allclose(a, r)
    with pytest.raises(ValueError, match="gate you defined"):
        cr.compile(f, argnums=(0, 1, 2))(x, w, b)
