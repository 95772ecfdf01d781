"""cr.compile: same answers as value_and_grad (small, planned and tiled sizes, both backends), results
that stay valid across calls, re-tracing per signature, and the numexpr fallback."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import numeric_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codegen import build, expressions

import chainrule as cr
from chainrule import compiler


def q2a(x, y, z):
    return (x + y) * z


def q2b(x, y, z):
    return (x**2 + 2 * y) * z**3


def q2c(x, y, z):
    return (np.log(x) + np.sin(y)) ** 2 + 4 * x


def sigmoid(x):
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = 1 / c
    return d


def complex_layer(x, y):
    return np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2)


def complex_layer_staged(x, y):
    return np.log(x) * (1 / (1 + np.exp(-np.sqrt(y)))) / (1 / (1 + np.exp(-((x + y) ** 2))))


FUNCS = [(q2a, 3), (q2b, 3), (q2c, 3), (sigmoid, 1), (complex_layer, 2), (complex_layer_staged, 2)]
# 1: scalars, 7: plain code, 5000: planned buffers, 2*TILE+123: tiled blocks with a tail
SIZES = [None, 7, 5000, 2 * compiler.TILE + 123]


def _close(res, ref, rtol=1e-12):
    out, grads = res
    rout, rgrads = ref
    np.testing.assert_allclose(out, rout, rtol=rtol, atol=1e-300)
    assert len(grads) == len(rgrads)
    for g, r in zip(grads, rgrads):
        assert np.shape(g) == np.shape(r) and np.asarray(g).dtype == np.asarray(r).dtype
        np.testing.assert_allclose(g, r, rtol=rtol, atol=1e-13)


def _dests(res, fill=np.nan):
    out, grads = res
    return np.full_like(out, fill), tuple(np.full_like(g, fill) for g in grads)


@pytest.mark.parametrize("backend", ["numpy", "numexpr", "numba"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("f, n", FUNCS, ids=[f.__name__ for f, _ in FUNCS])
def test_compiled_matches_value_and_grad(f, n, size, backend, rng):
    if backend != "numpy":
        pytest.importorskip(backend)
    args = [rng.uniform(0.5, 2.0, size=size) if size else float(rng.uniform(0.5, 2.0)) for _ in range(n)]
    argnums = tuple(range(n))
    fast = cr.compile(f, argnums=argnums, backend=backend)
    ref = cr.value_and_grad(f, argnums=argnums)(*args)
    want = fast(*args)
    _close(want, ref)
    _close(fast(*args), ref)  # second call: the cached specialization
    assert "def _compiled(" in fast.source
    for _ in range(2):   # out=: the first such call learns the results' shapes, the second writes directly
        dests = _dests(want)
        got = fast(*args, out=dests)
        assert got[0] is dests[0] and all(g is d for g, d in zip(got[1], dests[1]))
        for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
            np.testing.assert_array_equal(g, w)


def test_compiled_matches_numerical_gradient(rng):
    args = [rng.uniform(0.5, 2.0, size=4) for _ in range(2)]
    out, (gx, gy) = cr.compile(complex_layer, argnums=(0, 1))(*args)
    np.testing.assert_allclose(gx, numeric_grad(complex_layer, args, 0), rtol=1e-6)
    np.testing.assert_allclose(gy, numeric_grad(complex_layer, args, 1), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("size", [7, 5000, 2 * compiler.TILE + 5])
def test_results_stay_valid_after_the_next_call(size, backend, rng):
    fast = cr.compile(q2a, argnums=(0, 1, 2), backend=backend)
    a = [rng.uniform(0.5, 2, size) for _ in range(3)]
    b = [rng.uniform(0.5, 2, size) for _ in range(3)]
    out1, g1 = fast(*a)
    keep = [out1.copy(), *(g.copy() for g in g1)]
    out2, g2 = fast(*b)
    for k, v in zip(keep, [out1, *g1]):
        np.testing.assert_array_equal(k, v)
    ids = [id(out1), *map(id, g1), id(out2), *map(id, g2)]
    assert len(set(ids)) == len(ids)                     # every result its own array
    for g in [*g1, *g2]:
        assert all(not np.shares_memory(g, x) for x in a + b)   # dx = dz is a copy, not the input
    g1[0][...] = 0                                       # the caller may write into a result
    _close(fast(*a), cr.value_and_grad(q2a, argnums=(0, 1, 2))(*a))


def test_int_argnums_gives_one_gradient_and_tuple_gives_tuple():
    out, g = cr.compile(q2a, argnums=2)(1.0, 3.0, 2.0)
    assert float(out) == 8.0 and float(g) == 4.0
    out, gs = cr.compile(q2a, argnums=(0, 2))(1.0, 3.0, 2.0)
    assert isinstance(gs, tuple) and [float(v) for v in gs] == [2.0, 4.0]
    assert np.shape(cr.compile(q2a)(1.0, 3.0, 2.0)[1]) == ()


def test_retraces_for_new_shapes_and_dtypes(rng):
    fast = cr.compile(q2b, argnums=(0, 1, 2))
    for shape in [(3,), (3,), (2, 2), ()]:
        args = [rng.uniform(0.5, 2, shape) for _ in range(3)]
        _close(fast(*args), cr.value_and_grad(q2b, argnums=(0, 1, 2))(*args))
    assert fast.signatures == 3
    args32 = [rng.uniform(0.5, 2, 4).astype(np.float32) for _ in range(3)]
    out, grads = fast(*args32)
    assert fast.signatures == 4 and out.dtype == np.float32
    fast([1, 2], [3, 4], [5, 6])  # lists of ints: promoted like value_and_grad does
    assert fast.signatures == 5


def test_broadcasting_reductions_matmul_and_static_args(rng):
    def layer(x, w, b, scale):
        return cr.sum(cr.tanh(x @ w + b) ** 2) * scale

    x, w, b = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    fast = cr.compile(layer, argnums=(1, 2))
    _close(fast(x, w, b, 0.5), cr.value_and_grad(layer, argnums=(1, 2))(x, w, b, 0.5))
    _close(fast(x, w, b, 2.0), cr.value_and_grad(layer, argnums=(1, 2))(x, w, b, 2.0))
    assert fast.signatures == 2

    def f(x, y):
        return cr.mean(x * y, axis=0) + cr.max(x) + cr.logsumexp(x[:, ::2], axis=1)[0]

    x, y = rng.normal(size=(3, 4)), rng.normal(size=4)
    _close(cr.compile(f, argnums=(0, 1))(x, y), cr.value_and_grad(f, argnums=(0, 1))(x, y))
    big = rng.normal(size=(300, 40))
    _close(cr.compile(lambda x: cr.sum(x * x, axis=1) + 1, argnums=0)(big),
           cr.value_and_grad(lambda x: cr.sum(x * x, axis=1) + 1)(big))


def test_unused_input_gets_zero_gradient():
    out, (gx, gy, gz) = cr.compile(q2c, argnums=(0, 1, 2))(np.e, np.pi / 2, 2.0)
    assert float(gz) == 0.0 and float(out) == pytest.approx(4 + 4 * np.e)
    big = [np.full(2 * compiler.TILE + 1, v) for v in (np.e, np.pi / 2, 2.0)]
    out, (gx, gy, gz) = cr.compile(q2c, argnums=(0, 1, 2))(*big)
    assert not gz.any() and gz.shape == big[2].shape


def test_source_is_inspectable():
    fast = cr.compile(complex_layer, argnums=(0, 1), backend="numpy")
    with pytest.raises(RuntimeError, match="call the function once"):
        fast.source  # noqa: B018
    fast(np.ones(5000), np.ones(5000))
    assert "# _b0: buffer float64 (5000,)" in fast.source   # planned buffers
    assert "def complex_layer(x, y):" in fast.program_source
    fast(np.ones(3), np.ones(3))
    assert "_b0" not in fast.source                   # tiny arrays: plain code


def test_powers_are_strength_reduced():
    fast = cr.compile(q2b, argnums=(0, 1, 2), backend="numpy")
    fast(*[np.ones(5000)] * 3)
    assert "np.power" not in fast.source and "np.square" in fast.source


def test_numexpr_backend_falls_back_without_numexpr(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "numexpr", None)  # import numexpr now raises ImportError
    args = [rng.uniform(0.5, 2, 40000) for _ in range(2)]
    fast = cr.compile(complex_layer, argnums=(0, 1), backend="numexpr")
    _close(fast(*args), cr.value_and_grad(complex_layer, argnums=(0, 1))(*args))
    assert fast._last.backend == "numpy"


def test_numexpr_backend_fuses_chains(rng):
    pytest.importorskip("numexpr")
    args = [rng.uniform(0.5, 2, 40000) for _ in range(2)]
    fast = cr.compile(complex_layer_staged, argnums=(0, 1), backend="numexpr")
    res = fast(*args)
    assert "numexpr[" in fast.source
    _close(res, cr.compile(complex_layer_staged, argnums=(0, 1))(*args), rtol=1e-13)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'numpy', 'numba', 'numexpr'"):
        cr.compile(q2a, backend="cuda")
    with pytest.raises(TypeError, match="function"):
        cr.compile(3)
    with pytest.raises(ValueError, match="argnums names argument 5"):
        cr.compile(q2a, argnums=5)(1.0, 2.0, 3.0)
    with pytest.raises(TypeError, match="one array or tensor"):
        cr.compile(lambda x: (x, x))(1.0)


def test_values_frozen_into_the_trace_are_refused():
    x = np.array([-1.0, 2.0, 3.0, -0.5])
    with pytest.raises(ValueError, match=r"does not trace to one fixed computation.*a\[a > 0\]"):
        cr.compile(lambda a: cr.sum(a[a > 0]))(x)             # boolean-mask index: shape depends on values
    with pytest.raises(ValueError, match="does not trace to one fixed computation"):
        cr.compile(lambda a: cr.sum(a * 2 if a.data[0] > 0 else a * 3))(x)  # .data read in Python
    out, g = cr.compile(lambda x: cr.relu(x) * 2)(x)          # the gate's own rule: fine
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [0.0, 2.0, 2.0, 0.0])


def leaky(z):
    return cr.sum(cr.where(z > 0, z, 0.1 * z))


def safe_sqrt(x):
    return cr.sum(cr.where(x > 0, cr.sqrt(cr.where(x > 0, x, 1.0)), 0.0))


def relu_like(z):
    return cr.sum(z * (z > 0))


# closed forms, written independently of the gate table
CLOSED = {
    leaky: (lambda z: np.where(z > 0, z, 0.1 * z).sum(), lambda z: np.where(z > 0, 1.0, 0.1)),
    safe_sqrt: (lambda x: np.sqrt(np.maximum(x, 0)).sum(),
                lambda x: np.where(x > 0, 0.5 / np.sqrt(np.abs(x) + (x <= 0)), 0.0)),
    relu_like: (lambda z: np.maximum(z, 0).sum(), lambda z: (z > 0).astype(float)),
}


@pytest.mark.parametrize("f", list(CLOSED), ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [0, 3, 5000])  # 0: a scalar
def test_masks_computed_from_the_inputs_are_recomputed_every_call(f, n, rng):
    value, grad = CLOSED[f]
    fast = cr.compile(f)
    base = rng.uniform(0.5, 2.0, n) if n else np.array(1.5)
    mixed = base * np.where(np.arange(max(n, 1)) % 2, 1.0, -1.0).reshape(base.shape)
    for x in (base, -base, mixed, -mixed):  # one compiled program, every sign pattern
        out, g = fast(x)
        assert g.dtype == np.float64 and np.all(np.isfinite(g))
        np.testing.assert_allclose(out, value(x), rtol=1e-12)
        np.testing.assert_allclose(g, grad(x), rtol=1e-12)
        ref_out, ref_g = cr.value_and_grad(f)(x)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12)
        np.testing.assert_allclose(g, ref_g, rtol=1e-12)
    assert fast.signatures == 1


def test_the_issue_example_and_the_mask_in_the_source():
    fast = cr.compile(lambda z: cr.where(z > 0, z, 0.1 * z).sum())
    out, g = fast(np.array([-1.0, 2.0, -3.0]))
    assert out == pytest.approx(-0.1 + 2.0 - 0.3)
    np.testing.assert_allclose(g, [0.1, 1.0, 0.1])
    assert "z > 0" in fast.source
    out, g = fast(np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(g, [1.0, 0.1, 1.0])


def test_a_mask_turned_into_numbers_keeps_float_results():
    f = lambda z: cr.sum((z > 0) * 1.0 + z * (z < 1.0))  # noqa: E731
    x = np.array([-1.0, 0.5, 2.0])
    out, g = cr.compile(f)(x)
    ref_out, ref_g = cr.value_and_grad(f)(x)
    assert np.asarray(out).dtype == np.float64 and out == ref_out
    np.testing.assert_array_equal(g, [1.0, 1.0, 0.0])


def test_tensor_arguments_are_accepted():
    x = np.array([1.0, 2.0])
    fast = cr.compile(lambda x: x * x)
    out, g = fast(cr.tensor(x))
    assert type(out) is np.ndarray and type(g) is np.ndarray
    np.testing.assert_array_equal(g, 2 * x)


def test_float32_large_arrays_keep_their_dtype(rng):
    args = [rng.uniform(0.5, 2, 2 * compiler.TILE + 1).astype(np.float32) for _ in range(2)]
    out, (gx, gy) = cr.compile(complex_layer, argnums=(0, 1))(*args)
    ref_out, (rx, ry) = cr.value_and_grad(complex_layer, argnums=(0, 1))(*args)
    assert out.dtype == gx.dtype == gy.dtype == np.float32
    for g, r in ((gx, rx), (gy, ry)):  # float32 rounding, relative to the gradient's scale
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))


def test_shape_gates_on_rewritten_values(rng):
    def f(x, y):  # 1 / (...) and -(...) feeding concatenate, stack and maximum
        a = 1 / (1 + x * x)
        b = -(y * x)
        return cr.sum(cr.concatenate([a, b]) * cr.stack([b, a]).reshape(-1)) + cr.sum(cr.maximum(a, b))

    for n in (3, 5000):
        x, y = rng.normal(size=n), rng.normal(size=n)
        _close(cr.compile(f, argnums=(0, 1))(x, y), cr.value_and_grad(f, argnums=(0, 1))(x, y))


# ---- the fused backend (numba) --------------------------------------------------------------------


def _numpy_plan(f, argnums, *args):
    return cr.compile(f, argnums=argnums, backend="numpy")(*args)


def _close_to_scale(res, ref, rtol=1e-13):
    """Equal to ``rtol`` relative to each result's largest magnitude: the fused loops' exp, log, sin
    differ from NumPy's by an ulp or two, and a difference of such values (exp(x) - exp(x) * y) keeps
    that absolute error while the result itself may be tiny."""
    for g, r in zip([res[0], *res[1]], [ref[0], *ref[1]]):
        assert np.shape(g) == np.shape(r) and np.asarray(g).dtype == np.asarray(r).dtype
        scale = float(np.max(np.abs(r), initial=0.0, where=np.isfinite(r)))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("f, n", FUNCS[:5], ids=[f.__name__ for f, _ in FUNCS[:5]])
def test_fused_agrees_with_the_numpy_backend(f, n, rng):
    """The worksheet's five functions: fused loops == the NumPy plan (to float64 rounding) ==
    value_and_grad, over whole blocks and a tail."""
    pytest.importorskip("numba")
    args = [rng.uniform(0.5, 2.0, size=compiler.TILE + 4321) for _ in range(n)]
    argnums = tuple(range(n))
    fast = cr.compile(f, argnums=argnums, backend="numba")
    res = fast(*args)
    assert fast.backend_used == "numba" and "numba.njit" in fast.source
    _close(res, _numpy_plan(f, argnums, *args), rtol=1e-14)
    _close(fast(*args), cr.value_and_grad(f, argnums=argnums)(*args))
    for g in res[1]:
        assert all(not np.shares_memory(g, a) for a in args)


def test_fused_program_is_one_loop_with_inline_transcendentals(rng):
    """exp and log run inside the fused loop, inline: the whole program is one loop over the whole
    arrays, reading its inputs and writing its results once."""
    pytest.importorskip("numba")
    from chainrule.compile import vecmath

    fast = cr.compile(complex_layer_staged, argnums=(0, 1), backend="numba")
    args = [rng.uniform(0.5, 2.0, size=5000) for _ in range(2)]
    res = fast(*args)
    if "exp" not in vecmath.INLINE_UFUNCS:
        pytest.skip("no inline math here (numba without what inline_math needs)")
    kernels, driver = fast.source.split("def _compiled")
    assert "def _block" not in kernels and kernels.count("def _kernel") == 1
    fast_loop, again = kernels.split("if g:")   # the loop, and the block again where log's argument is not normal
    assert fast_loop.count("for j in range(") == 1 and "_log_normal(" in fast_loop and "g += _log_outside(" in fast_loop
    assert fast_loop.count("_exp(") == 2 and "np.sqrt(" in fast_loop and "_log(" in again
    assert "np.exp" not in driver and "np.log" not in driver and driver.count("_k0(") == 1
    _close(res, _numpy_plan(complex_layer_staged, (0, 1), *args), rtol=1e-14)


def test_fused_program_with_libmvec_calls_it_on_blocks(rng):
    """The route before the inline functions (kept for the other transcendentals, and for measuring):
    libmvec's exp and log on blocks of the loop's values, exp(-t) negating in registers."""
    pytest.importorskip("numba")
    from chainrule.compile import vecmath

    fast = cr.compile(complex_layer_staged, argnums=(0, 1), backend="numba")
    args = [rng.uniform(0.5, 2.0, size=5000) for _ in range(2)]
    with vecmath.libmvec_only():
        res = fast(*args)
    if "exp" not in vecmath.VECTOR_UFUNCS:
        pytest.skip("no vector math library here: exp stays a NumPy call")
    kernels, driver = fast.source.split("def _compiled")
    assert "def _block" not in kernels and kernels.count("def _kernel") == 1
    assert "_log(" in kernels and kernels.count("_exp_neg(") == 2 and "np.sqrt(" in kernels   # exp(-t): no loop for -t
    assert "np.exp" not in driver and "np.log" not in driver and driver.count("_k0(") == 1
    _close(res, _numpy_plan(complex_layer_staged, (0, 1), *args), rtol=1e-14)


def test_fused_without_vector_math_calls_numpy_between_loops(monkeypatch, rng):
    """Where a ufunc has neither an inline nor a vector form (or neither is available), it runs as a
    NumPy call between kernels, block by block; the answers are the same."""
    pytest.importorskip("numba")
    from chainrule.compile import vecmath

    assert vecmath.available()
    monkeypatch.setattr(vecmath, "VECTOR_UFUNCS", {})
    monkeypatch.setattr(vecmath, "INLINE_UFUNCS", {})
    args = [rng.uniform(0.5, 2.0, size=compiler.TILE + 4321) for _ in range(2)]
    fast = cr.compile(complex_layer_staged, argnums=(0, 1), backend="numba")
    res = fast(*args)
    block = fast.source.split("def _block")[1].split("def _compiled")[0]
    assert "np.log(x, " in block and block.count("np.exp(") == 2
    kernels = fast.source.split("def _block")[0]
    assert "np.sqrt(" in kernels and "np.exp(" not in kernels and "np.log(" not in kernels
    _close(res, _numpy_plan(complex_layer_staged, (0, 1), *args), rtol=1e-14)


def test_fused_random_expressions(rng):
    """A corpus of random elementwise expressions (the codegen corpus): fused == NumPy plan."""
    pytest.importorskip("numba")
    cases = [
        [("u", 0, 0), ("b", 2, 3, 1), ("u", 5, 4)],                 # exp, mul, sigmoid (where)
        [("b", 4, 0, 1), ("u", 8, 3), ("b", 3, 4, 2)],              # maximum, neg, div
        [("u", 11, 2), ("u", 10, 3), ("b", 5, 4, 0), ("u", 6, 5)],  # abs, pow3, constants, sqrt
        [("u", 1, 1), ("u", 4, 3), ("b", 1, 4, 0), ("u", 7, 5)],    # log, tanh, sub, square
    ]
    for steps in cases:
        f = build(steps)
        args = [rng.uniform(-1.5, 1.5, size=3000) + 0.01 for _ in range(3)]
        fast = cr.compile(f, argnums=(0, 1, 2), backend="numba")
        res = fast(*args)
        assert fast.backend_used == "numba"
        _close_to_scale(res, _numpy_plan(f, (0, 1, 2), *args))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=expressions(), seed=st.integers(0, 2**16))
def test_fused_hypothesis_corpus(steps, seed):
    """Random expressions from the codegen corpus (few: each new one compiles its loops)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(seed)
    f = build(steps)
    args = [rng.uniform(-1.5, 1.5, size=2500) + 0.01 for _ in range(3)]
    with np.errstate(all="ignore"):
        res = cr.compile(f, argnums=(0, 1, 2), backend="numba")(*args)
        _close_to_scale(res, _numpy_plan(f, (0, 1, 2), *args))


def test_fused_falls_back_where_the_program_is_not_elementwise(rng):
    pytest.importorskip("numba")
    x = rng.normal(size=(100, 50))
    fast = cr.compile(lambda x: cr.sum(x * x, axis=1) + 1, backend="numba")
    _close(fast(x), cr.value_and_grad(lambda x: cr.sum(x * x, axis=1) + 1)(x))
    assert fast.backend_used == "numpy"
    small = cr.compile(q2a, argnums=(0, 1, 2), backend="numba")
    small(1.0, 2.0, 3.0)
    assert small.backend_used == "numpy"                 # tiny arrays: plain code, no kernel call
    f32 = [rng.uniform(0.5, 2, 5000).astype(np.float32) for _ in range(3)]
    small(*f32)
    assert small.backend_used == "numpy"                 # fused loops are float64 only


def test_numba_backend_warns_once_without_numba(monkeypatch, rng):
    from chainrule.compile import emit_numba, vecmath

    monkeypatch.setattr(vecmath, "_numba", False)        # as if numba were not installed
    monkeypatch.setattr(emit_numba, "_warned", False)
    args = [rng.uniform(0.5, 2, 5000) for _ in range(2)]
    with pytest.warns(RuntimeWarning, match="needs numba"):
        fast = cr.compile(complex_layer, argnums=(0, 1), backend="numba")
        res = fast(*args)
    assert fast.backend_used == "numpy"
    _close(res, cr.value_and_grad(complex_layer, argnums=(0, 1))(*args))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # once per process, and never for "auto"
        cr.compile(q2b, argnums=(0, 1, 2), backend="numba")(*[rng.uniform(0.5, 2, 5000)] * 3)
        auto = cr.compile(complex_layer, argnums=(0, 1))
        auto(*args)
    assert auto.backend_used == "numpy"


# ---- a compiled training step: float32 MLP, cross-entropy, SGD ------------------------------------


def _mlp_case(rng, n=64, sizes=(40, 32, 32, 10)):
    X = rng.normal(size=(n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    params = []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        params += [(rng.normal(size=(fi, fo)) / np.sqrt(fi)).astype(np.float32),
                   (0.1 * rng.normal(size=fo)).astype(np.float32)]

    def loss_fn(W1, b1, W2, b2, W3, b3, xb):
        h = cr.relu(xb @ W1 + b1)
        h = cr.relu(h @ W2 + b2)
        return cr.cross_entropy(h @ W3 + b3, y)

    return loss_fn, params, X


def test_float32_mlp_loss_stays_float32_and_matches_the_engine(rng):
    loss_fn, params, X = _mlp_case(rng)
    fast = cr.compile(loss_fn, argnums=tuple(range(6)))
    out, grads = fast(*params, X)
    ref_out, ref_grads = cr.value_and_grad(loss_fn, argnums=tuple(range(6)))(*params, X)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert "float64" not in fast.source                  # no buffer, seed or one-hot promoted
    assert fast.source.count("np.max(") == 1             # the softmax's max: forward and rule share it
    assert "np.ones(())" not in fast.program_source      # the folded seed keeps the dtype in the text too
    np.testing.assert_allclose(out, ref_out.data if hasattr(ref_out, "data") else ref_out, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
    # against float64 numerical gradients of the same loss (central differences on a few entries)
    p64 = [p.astype(np.float64) for p in params]
    f64 = cr.compile(loss_fn, argnums=tuple(range(6)))
    _, g64 = f64(*p64, X.astype(np.float64))
    for k in (0, 3, 5):
        for idx in [(0,) * p64[k].ndim, tuple(s - 1 for s in p64[k].shape)]:
            up, dn = [p.copy() for p in p64], [p.copy() for p in p64]
            up[k][idx] += 1e-6
            dn[k][idx] -= 1e-6
            X64 = X.astype(np.float64)
            num = (float(loss_fn(*up, X64).data) - float(loss_fn(*dn, X64).data)) / 2e-6
            assert g64[k][idx] == pytest.approx(num, rel=1e-5, abs=1e-9)
            assert grads[k][idx] == pytest.approx(num, rel=2e-3, abs=1e-5)


def test_matmul_results_and_bias_gradients_stay_valid_after_the_next_call(rng):
    loss_fn, params, X = _mlp_case(rng, n=128, sizes=(40, 64, 64, 10))   # large enough for planned buffers
    fast = cr.compile(loss_fn, argnums=tuple(range(6)))
    assert fast(*params, X) is not None and "_b0" in fast.source
    out1, g1 = fast(*params, X)
    keep = [g.copy() for g in g1]
    other = [p * 1.5 for p in params]
    out2, g2 = fast(*other, X)
    for k, g in zip(keep, g1):
        np.testing.assert_array_equal(k, g)
    arrays = [*g1, *g2]
    for i, a in enumerate(arrays):
        assert not any(np.shares_memory(a, b) for b in arrays[i + 1:] + params + other + [X])
    _, ref = cr.value_and_grad(loss_fn, argnums=tuple(range(6)))(*other, X)
    for g, r in zip(g2, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_compiled_sgd_step_with_parameters(rng):
    loss_fn, params, X = _mlp_case(rng)
    P = [cr.nn.Parameter(p.copy()) for p in params]
    opt = cr.optim.SGD(P, lr=0.1)
    fast = cr.compile(loss_fn, argnums=tuple(range(6)))
    data_ids = [id(p.data) for p in P]
    loss0, grads = fast(*P, X)                        # Parameters are accepted as arguments
    expected = [p - 0.1 * g for p, g in zip(params, grads)]
    opt.step(grads)                                   # the hand formula w -= lr * g, in place
    for p, e in zip(P, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-6)
    assert [id(p.data) for p in P] == data_ids
    opt.lr = 0.5
    losses = [float(loss0)]
    for _ in range(60):
        loss, grads = fast(*P, X)                     # the same compiled code on the updated values
        opt.step(grads)
        losses.append(float(loss))
    assert fast.signatures == 1                       # traced once, on the first call
    assert losses[-1] < 0.5 * losses[0]
    ref_loss, _ = cr.value_and_grad(loss_fn, argnums=0)(*[p.data for p in P], X)
    loss, _ = fast(*P, X)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    with pytest.raises(ValueError, match="got 2 gradients for 6 parameters"):
        opt.step(grads[:2])


def test_relu_reads_a_constant_array_of_zeros_and_keeps_nan(rng):
    x = rng.normal(size=5000).astype(np.float32)
    x[[3, 10]] = [np.nan, -np.inf]
    fast = cr.compile(lambda x: cr.relu(x) * x)
    with np.errstate(invalid="ignore"):  # -inf * 0 in the gradient, in both
        out, g = fast(x)
        ref_out, ref_g = cr.value_and_grad(lambda x: cr.relu(x) * x)(x)
    assert "np.maximum(x, _fill0" in fast.source and "constant float32 (5000,) of 0.0" in fast.source
    np.testing.assert_array_equal(out, ref_out.data if hasattr(ref_out, "data") else ref_out)  # nan stays nan
    np.testing.assert_allclose(g, ref_g, rtol=1e-6)


def test_integer_arguments_are_compiled_by_value_never_stale() -> None:
    # labels passed as an argument pick elements (an index), so the code is specialized to their
    # values: new labels must give new answers, never the first call's
    rng = np.random.default_rng(3)
    W = rng.standard_normal((5, 3))

    def loss(W, X, y):
        return cr.cross_entropy(X @ W, y)

    fast = cr.compile(loss, argnums=0)
    labels = [np.array([0, 1, 2, 0, 1, 2, 0, 1]), np.array([2, 2, 2, 2, 1, 1, 1, 1])]
    for y in labels + labels:
        X = rng.standard_normal((8, 5))
        out, g = fast(W, X, y)
        ref_out, ref_g = cr.value_and_grad(loss, argnums=0)(W, X, y)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12)
        np.testing.assert_allclose(g, ref_g, rtol=1e-12)
    assert fast.signatures == 2  # one per distinct label array, reused when it comes back


@pytest.mark.parametrize("x", [1.0, -1.0, np.ones(3), -np.ones(3)])
def test_a_python_if_on_values_is_refused_not_frozen(x) -> None:
    # tracing records array operations only: an `if` on the input's value would be frozen into the
    # code, so compile refuses it (value_and_grad handles it)
    f = lambda x: x * 2 if np.sum(x) > 0 else x * 3  # noqa: E731
    with pytest.raises(ValueError, match="does not trace to one fixed computation"):
        cr.compile(f)(x)
    out, g = cr.value_and_grad(f)(x)
    np.testing.assert_allclose(g, np.full(np.shape(x), 2.0 if np.sum(x) > 0 else 3.0))


# ---- NaN and infinity: every back end computes what the NumPy plan and the graph compute -----------


def _same_specials(got, want, rtol=1e-13):
    """NaN where the reference has NaN, the same infinities, finite values equal to rounding."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=1e-300)


# the cases of test_codegen's NaN/inf test: a NaN or an infinity in an upstream gradient reaches the
# inputs through a local gradient of 0
NAN_INF_CASES = [
    (lambda w, x: cr.sigmoid(cr.log((w * 0) - (x - x))), (0.7, 2.0)),
    (lambda w, x: cr.exp(1000 * cr.log(w)) * 0 + x, (0.7, 2.0)),
    (lambda w, x: cr.sqrt(w - w) * x, (0.7, 2.0)),
    (lambda x: x / 0, (0.7,)),
]


@pytest.mark.parametrize("backend", ["numpy", "numexpr", "numba"])
@pytest.mark.parametrize("size", [5000, 2 * compiler.TILE + 3])
@pytest.mark.parametrize("case", range(len(NAN_INF_CASES)))
def test_compiled_backends_and_graph_agree_on_nan_and_inf(case, size, backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    f, point = NAN_INF_CASES[case]
    args = [np.full(size, v) for v in point]
    argnums = tuple(range(len(args)))
    with np.errstate(all="ignore"):
        out, grads = cr.compile(f, argnums=argnums, backend=backend)(*args)
        ref_out, ref_grads = cr.value_and_grad(f, argnums=argnums)(*point)
    _same_specials(out, np.broadcast_to(ref_out, (size,)))
    for g, r in zip(grads, ref_grads):
        _same_specials(g, np.broadcast_to(r, (size,)))


SPECIAL = [0.0, -0.0, 1e-310, 0.5, 1.0, -1.0, 2.0, 710.0, -745.0, 1e308, -1e308, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("f, n", FUNCS, ids=[f.__name__ for f, _ in FUNCS])
def test_fused_and_numpy_plan_agree_on_every_special_value(f, n):
    """Every combination of zeros, subnormals, overflowing exponents, infinities and NaN: the fused
    loops (vector transcendentals included) give NaN and infinity exactly where the NumPy plan does."""
    pytest.importorskip("numba")
    grid = np.array(np.meshgrid(*[SPECIAL] * n)).reshape(n, -1)
    args = [np.resize(g, max(grid.shape[1], compiler.FUSED_MIN_SIZE)) for g in grid]
    argnums = tuple(range(n))
    with np.errstate(all="ignore"):
        fast = cr.compile(f, argnums=argnums, backend="numba")
        got = fast(*args)
        want = _numpy_plan(f, argnums, *args)
    assert fast.backend_used == "numba"
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        _same_specials(g, w, rtol=1e-12)


def test_large_fused_calls_split_among_as_many_threads_as_cpus(monkeypatch, rng):
    """A large call is cut into contiguous ranges, a few per CPU the process may use (its affinity),
    taken in turn by the caller's thread and as many worker threads as there are other CPUs; the
    results are those of one thread, bit for bit."""
    pytest.importorskip("numba")
    import os
    import threading

    from chainrule.compile import blocks

    if hasattr(os, "sched_getaffinity"):
        assert blocks.cpus() == len(os.sched_getaffinity(0))
    n = 3 * blocks.PARALLEL_MIN_SIZE + 77
    args = [rng.uniform(0.5, 2.0, n) for _ in range(2)]
    monkeypatch.setattr(blocks, "cpus", lambda: 1)
    fast = cr.compile(complex_layer, argnums=(0, 1), backend="numba")
    one = fast(*args)
    calls = []
    submitted = []
    real_blocks, real_pool = blocks._blocks, blocks._pool

    def spy(block, flat, lo, hi, tile, bufs):
        calls.append((lo, hi, threading.get_ident()))
        real_blocks(block, flat, lo, hi, tile, bufs)

    def pool(workers):
        submitted.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(blocks, "_blocks", spy)
    monkeypatch.setattr(blocks, "_pool", pool)
    monkeypatch.setattr(blocks, "cpus", lambda: 3)
    three = fast(*args)
    ranges = sorted((lo, hi) for lo, hi, _ in calls)
    assert submitted == [2] and len(ranges) > 3            # two worker threads, several ranges each
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] and a[1] % 64 == 0 for a, b in zip(ranges, ranges[1:]))
    assert len(calls) == len(ranges)                        # each range run once, by one thread
    for a, b in zip([one[0], *one[1]], [three[0], *three[1]]):
        np.testing.assert_array_equal(a, b)
    _close_to_scale(three, _numpy_plan(complex_layer, (0, 1), *args))


_CHILD = """
import numpy as np, chainrule as cr
fast = cr.compile(lambda x: 1 / (1 + np.exp(-x)))
fast(np.linspace(-2.0, 2.0, 5000))
kernels = [v for k, v in fast._last.fn.__globals__.items() if k.startswith("_k")]
print(fast.backend_used, sum(sum(k.stats.cache_hits.values()) for k in kernels))
"""


def test_a_second_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    """numba's machine code for a kernel is written beside the kernel's file in the cache folder, and
    a second process loads it instead of compiling (numba counts a cache hit)."""
    pytest.importorskip("numba")
    import os
    import subprocess

    env = dict(os.environ, CHAINRULE_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(cr.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    runs = [subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True,
                           timeout=120).stdout.split() for _ in range(2)]
    assert runs[0] == ["numba", "0"] and runs[1] == ["numba", "1"]
    assert any(p.suffix == ".nbc" for p in (tmp_path / "kernels" / "__pycache__").iterdir())


def test_without_a_writable_cache_folder_kernels_compile_in_memory(monkeypatch, tmp_path, rng):
    pytest.importorskip("numba")
    from chainrule.compile import vecmath

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(blocker))   # a file: no folder can be made there
    assert vecmath.cache_dir() is None
    f = lambda x: cr.sin(x) * x + 0.25  # noqa: E731 - a kernel this test alone compiles
    args = [rng.uniform(0.5, 2.0, 5000)]
    fast = cr.compile(f, argnums=(0,), backend="numba")
    _close_to_scale(fast(*args), _numpy_plan(f, (0,), *args))
    assert fast.backend_used == "numba"


def _fake_kernel(folder, digest, size, used_at):
    import os

    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / f"k_{digest}.py").write_text("#")
    (folder / "__pycache__" / f"k_{digest}._kernel-1.py311.1.nbc").write_bytes(b"x" * size)
    marker = folder / f"k_{digest}.used"
    marker.write_text("")
    os.utime(marker, (used_at, used_at))


def test_the_kernel_cache_keeps_under_its_limit_removing_the_least_recently_used(monkeypatch, tmp_path):
    import os
    import time

    from chainrule.compile import vecmath

    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "kernels"
    folder.mkdir()
    now = time.time()
    for k, digest in enumerate(["old", "mid", "new", "newest"]):
        _fake_kernel(folder, digest, 1000, now - 1000 * (4 - k))
    stale = folder / "abc.tmp"   # an interrupted write, two hours ago
    stale.write_text("partial")
    os.utime(stale, (now - 7200, now - 7200))
    assert vecmath.cache_usage()[1] == 4
    assert vecmath.prune_cache(limit=10_000) == (0, 0)            # under the limit: nothing goes
    removed, freed = vecmath.prune_cache(limit=3000, keep="old")  # to 3/4 of it: two go, not the one kept
    assert removed == 2 and freed > 2000
    left = sorted(p.name.split(".")[0] for p in folder.glob("k_*.py"))
    assert left == ["k_newest", "k_old"] and not stale.exists()
    assert not any("k_mid" in p.name or "k_new." in p.name for p in folder.rglob("*"))
    (folder / "k_gone.used").write_text("")   # a marker whose kernel is gone is not a kernel
    assert vecmath.cache_usage()[1] == 2
    assert vecmath.clear_cache()[0] == 2 and vecmath.cache_usage()[1:] == (0, 0)


def test_a_kernel_file_removed_while_it_loads_compiles_in_memory(monkeypatch, tmp_path):
    """Another process's prune or ``chainrule cache --clear`` can remove a kernel's file after its
    source was read and before numba's ``cache=True`` looks for it (numba then raises RuntimeError:
    no locator): the kernel compiles in memory instead, as when the folder cannot be written."""
    pytest.importorskip("numba")
    import importlib.machinery
    import os

    from chainrule.compile import vecmath

    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    loader = importlib.machinery.SourceFileLoader
    read = loader.get_code

    def read_then_lose(self, fullname):
        code = read(self, fullname)
        if fullname.startswith("chainrule_kernel_"):
            os.remove(self.path)   # what a concurrent clear does at this moment
        return code

    monkeypatch.setattr(loader, "get_code", read_then_lose)
    k = vecmath.kernel("def _kernel(x, o):\n    for j in range(x.size):\n        o[j] = x[j] * 1.8125\n", [])
    x, o = np.linspace(0.0, 1.0, 7), np.empty(7)
    k(x, o)
    np.testing.assert_array_equal(o, x * 1.8125)


@pytest.mark.parametrize("raw, mb", [("", 256), ("64", 64), ("0.5", 0.5), ("-1", 256), ("lots", 256), ("inf", 256)])
def test_the_cache_limit_comes_from_the_environment(monkeypatch, raw, mb):
    import warnings

    from chainrule.compile import vecmath

    monkeypatch.setenv("CHAINRULE_CACHE_MAX_MB", raw)
    vecmath._warn_limit.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert vecmath.cache_limit() == int(mb * (1 << 20))
    bad = raw not in ("", "64", "0.5")
    assert [str(w.message) for w in caught] == ([f"CHAINRULE_CACHE_MAX_MB={raw!r} is not a size in MiB (0 or more): "
                                                 "the kernel cache keeps 256 MiB"] if bad else [])


def test_a_new_kernel_past_the_limit_removes_the_older_ones_and_the_cli_reports_it(tmp_path):
    """A second process compiling another loop with a tiny limit removes the first loop's files (not
    its own); ``chainrule cache`` reports what is left and ``--clear`` empties the folder."""
    pytest.importorskip("numba")
    import json
    import os
    import subprocess

    env = dict(os.environ, CHAINRULE_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(cr.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, timeout=120, capture_output=True)
    first = {p.name for p in (tmp_path / "kernels").glob("k_*.py")}
    other = _CHILD.replace("np.exp(-x)", "np.exp(-2 * x)")
    subprocess.run([sys.executable, "-c", other], env=dict(env, CHAINRULE_CACHE_MAX_MB="0.001"), check=True,
                   timeout=120, capture_output=True)
    now = {p.name for p in (tmp_path / "kernels").glob("k_*.py")}
    assert len(first) == len(now) == 1 and first != now
    cli = [sys.executable, "-m", "chainrule", "cache", "--json"]
    info = json.loads(subprocess.run(cli, env=env, check=True, capture_output=True, text=True).stdout)
    assert info["kernels"] == 1 and info["folder"] == str(tmp_path / "kernels")
    info = json.loads(subprocess.run([*cli, "--clear"], env=env, check=True, capture_output=True, text=True).stdout)
    assert info["removed"] == 1 and not list((tmp_path / "kernels").glob("k_*"))


# ---- out=: results written into the caller's arrays -----------------------------------------------


def test_out_with_numba_writes_in_place_and_fills_constant_gradients(rng):
    pytest.importorskip("numba")
    n = compiler.FUSED_MIN_SIZE + 5
    args = [rng.uniform(0.5, 2.0, size=n) for _ in range(3)]
    fast = cr.compile(q2c, argnums=(0, 1, 2), backend="numba")   # dq2c/dz is zero everywhere
    want = fast(*args)
    assert fast.backend_used == "numba"
    dests = _dests(want)
    fast(*args, out=dests)
    dests = _dests(want)
    with np.errstate(all="raise"):   # no temporary results copied in: the loop wrote these arrays
        got = fast(*args, out=dests)
    np.testing.assert_array_equal(got[1][2], np.zeros(n))
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        np.testing.assert_array_equal(g, w)


def test_out_may_be_an_input_or_strided_as_with_numpy(rng):
    n = 2 * compiler.TILE + 123
    x, y = rng.uniform(0.5, 2.0, size=n), rng.uniform(0.5, 2.0, size=n)
    fast = cr.compile(complex_layer, argnums=(0, 1))
    want = fast(x.copy(), y.copy())
    wide = np.zeros((n, 2))
    xs, ys = x.copy(), y.copy()
    got = fast(xs, ys, out=(wide[:, 0], (xs, wide[:, 1])))   # the gradient for x into x itself
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(xs, want[1][0])
    np.testing.assert_array_equal(wide[:, 1], want[1][1])


def test_out_with_one_argnum_takes_one_gradient_array(rng):
    x = rng.uniform(0.5, 2.0, size=5)
    fast = cr.compile(sigmoid)
    out, grad = np.empty(5), np.empty(5)
    got = fast(x, out=(out, grad))
    assert got[0] is out and got[1] is grad
    np.testing.assert_allclose(grad, out * (1 - out), rtol=1e-12)


def test_out_with_tensor_parameters_and_integer_labels(rng):
    w = cr.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    X = rng.normal(size=(8, 3))
    labels = rng.integers(0, 4, size=8)

    def loss(w, X, labels):
        return cr.nn.cross_entropy(X @ w, labels)

    fast = cr.compile(loss, argnums=0)
    want = fast(w, X, labels)
    dests = (np.empty(()), np.empty((3, 4)))
    for _ in range(2):
        got = fast(w, X, labels, out=dests)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("bad, message", [
    (lambda o, g: o, "out= takes arrays to write the results into, shaped like the result \\(out, \\(grad, grad\\)\\)"),
    (lambda o, g: (o, g[0]), "out= takes arrays"),
    (lambda o, g: (o, [g[0], list(g[1])]), "array 2 is a list, not a NumPy array"),
    (lambda o, g: (o[:-1], g), "out= array 0 has shape \\(4,\\) and dtype float64; the output has shape \\(5,\\)"),
    (lambda o, g: (o, (g[0], g[1].astype(np.float32))), "array 2 .* dtype float32; the gradient for argument 1"),
    (lambda o, g: (o, (g[0], o)), "out= arrays 0 and 2 share memory"),
])
def test_out_mistakes_are_named(bad, message, rng):
    x, y = rng.uniform(0.5, 2.0, size=5), rng.uniform(0.5, 2.0, size=5)
    fast = cr.compile(complex_layer, argnums=(0, 1))
    fast(x, y)
    with pytest.raises((TypeError, ValueError), match=message):
        fast(x, y, out=bad(np.empty(5), (np.empty(5), np.empty(5))))


def test_out_given_for_a_function_of_its_own_out_is_named_before_tracing(rng):
    """``fast(x, out=y)`` where f has a parameter named out: out= is compile's, and the mistake is
    named (pass f's out by position) rather than f failing inside the trace with 'missing argument'."""
    def scaled(x, out):
        return cr.sum(x * out)

    x, y = rng.uniform(0.5, 2.0, size=5), rng.uniform(0.5, 2.0, size=5)
    fast = cr.compile(scaled)
    with pytest.raises(TypeError, match="an argument of scaled's own that is named out goes by position"):
        fast(x, out=y)
    np.testing.assert_allclose(fast(x, y)[1], y)


def test_out_read_only_is_refused_and_left_alone(rng):
    x = rng.uniform(0.5, 2.0, size=5)
    fast = cr.compile(sigmoid)
    out = np.zeros(5)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out= array 0 is read-only"):
        fast(x, out=(out, np.empty(5)))
    assert not out.any()


_NAMED_LIKE_THE_CODE = """
def f(np, r1, o0, _b0, _run, _k0, _cr_out):
    import numpy
    return numpy.exp(np) * numpy.sin(r1) + o0 / _b0 * _run - _k0 * _cr_out
"""


@pytest.mark.parametrize("size", [7, compiler.FUSED_MIN_SIZE + 3])
def test_arguments_named_like_the_generated_codes_own_names(size, rng):
    """Arguments called np, r1 (the plan's temporaries), o0 (outputs), _b0 (buffers), _run, _k0
    (kernels) or _cr_out are renamed in the program, and compile to the engine's answer."""
    ns: dict = {}
    exec(_NAMED_LIKE_THE_CODE, ns)  # noqa: S102 - a fixed test function whose parameter is named np
    f = ns["f"]
    args = [rng.uniform(0.5, 2.0, size) for _ in range(7)]
    fast = cr.compile(f, argnums=tuple(range(7)))
    _close(fast(*args), cr.value_and_grad(f, argnums=tuple(range(7)))(*args))
    assert "def f(np_2, r1_, o0_, b0_, run_, k0_, cr_out_)" in fast.program_source


def test_out_takes_either_byte_order_as_numpy_does(rng):
    x = rng.uniform(0.5, 2.0, compiler.FUSED_MIN_SIZE + 3)
    fast = cr.compile(lambda x: np.exp(-x) * x)
    want = fast(x)
    dests = (np.empty(x.size, dtype=">f8"), np.empty(x.size, dtype=">f8"))
    for _ in range(2):
        got = fast(x, out=dests)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


_RNG = np.random.default_rng(11)
_A, _R, _X = _RNG.normal(size=(4, 4)), _RNG.normal(size=(5, 3)), _RNG.uniform(0.5, 2.0, size=6)
_MORE = {
    "svd_values": (lambda A: np.linalg.svd(A, compute_uv=False).sum(), (_A,)),
    "svd_parts": (lambda R: (lambda u, s, vh: (u[:, :1] ** 2).sum() + s.sum() + (vh[0] ** 2).sum())(
        *np.linalg.svd(R, full_matrices=False)), (_R,)),
    "slogdet": (lambda A: np.linalg.slogdet(A @ A.T + np.eye(4))[1], (_A,)),
    "eigvalsh": (lambda A: (np.linalg.eigvalsh(A @ A.T) ** 2).sum(), (_A,)),
    "eigh": (lambda A: (lambda w, v: (w * v[0] ** 2).sum())(*np.linalg.eigh(A + A.T)), (_A,)),
    "cumprod": (lambda x: (np.cumprod(x) * x).sum(), (_X,)),
    "einsum": (lambda A: np.einsum("ij,jk,kl->", A, A, A) + np.einsum("ii", A) ** 2, (_A,)),
    "convolve": (lambda x: (np.convolve(x, x[:3]) ** 2).sum(), (_X,)),
}


@pytest.mark.parametrize("name", list(_MORE))
def test_generated_code_and_compile_cover_linalg_cumprod_and_einsum(name):
    """svd, slogdet, eigh and eigvalsh (their gates are helpers the source includes), cumprod (a
    reshape to -1 inside its rule) and einsum/convolve (subscripts first): the printed function and
    the compiled one both give value_and_grad's answer, which central differences confirm."""
    f, args = _MORE[name]
    want = cr.value_and_grad(f)(*args)
    np.testing.assert_allclose(want[1], numeric_grad(f, list(args), 0), rtol=1e-5, atol=1e-7)
    ns: dict = {}
    exec(cr.trace(f, *args).to_source("g"), ns)  # noqa: S102 - code chainrule generated
    for got in (ns["g"](*args), cr.compile(f)(*args)):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12)
