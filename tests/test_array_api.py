"""The gate table on other array libraries than NumPy (issue 16).

Every row of ``tests/test_gates.py`` runs again on ``array-api-strict`` arrays (the standard and
nothing else: no NumPy-only function may sneak in outside :mod:`chainrule.adapters`) and on small
chunked Dask arrays. The forward value, the gradient (reverse mode), and on ``array-api-strict`` J·t
(forward mode) and H·v (second order, a graph of the backward pass) equal what chainrule computes on
the same values as NumPy arrays, and they come back as the inputs' library's arrays. On Dask nothing
is computed inside chainrule: the calls run with a scheduler that fails the test if anything is
computed, and the results are computed afterwards. Rows of a gate a library cannot serve are listed
in ``UNSERVED`` and must raise the one clear error naming the gate and the library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from test_gates import DIFF_ROWS, ROWS, Row, _draw, _loss, _weights

import chainrule as cr
from chainrule.backend import MixedLibrariesError, UnsupportedError

strict = pytest.importorskip("array_api_strict")
pytest.importorskip("array_api_compat")


def _forbid(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("chainrule computed a Dask array: its results must stay lazy until the caller computes")


@dataclass
class Library:
    name: str
    convert: Callable[[Any], Any]
    array_type: type
    lazy: bool = False

    def values(self, *vs: Any) -> list[np.ndarray]:
        vs = tuple(v.data if isinstance(v, cr.Tensor) else v for v in vs)
        if self.lazy:  # one compute for all (their graphs share the forward pass)
            import dask

            vs = dask.compute(*vs, scheduler="sync", optimize_graph=False)
        return [np.asarray(v) for v in vs]


def _strict() -> Library:
    return Library("array_api_strict", lambda a: strict.asarray(np.asarray(a)), type(strict.asarray(0.0)))


def _dask() -> Library:
    da = pytest.importorskip("dask.array")

    def convert(a: Any) -> Any:  # chunks of about half of each axis: every gate crosses chunk borders
        a = np.asarray(a)
        return da.from_array(a, chunks=tuple(max(1, (s + 1) // 2) for s in a.shape))

    return Library("dask.array", convert, da.Array, lazy=True)


LIBRARIES = {"strict": _strict, "dask": _dask}
#: gates a library cannot serve: array-api-strict has only the standard, which has no einsum and none of
#: SciPy's special functions (the gates of chainrule.gates.special, where that module exists)
UNSERVED = {"array_api_strict": {"einsum"} | {n for n, g in cr.GATES.items()
                                              if getattr(g.forward, "__module__", "") == "chainrule.gates.special"},
            "dask.array": set()}


@pytest.fixture(params=list(LIBRARIES), scope="module")
def lib(request: pytest.FixtureRequest) -> Library:
    return LIBRARIES[request.param]()


@pytest.fixture
def lazy_only(lib: Library) -> Any:
    """On Dask, any compute inside the test's chainrule calls fails the test."""
    if not lib.lazy:
        yield
        return
    import dask

    with dask.config.set(scheduler=_forbid):
        yield


def _convert(lib: Library, arrays: list[Any]) -> list[Any]:
    return [lib.convert(a) if isinstance(a, (np.ndarray, np.generic)) else a for a in arrays]


def _unserved(lib: Library, r: Row) -> Any:
    if r.gate not in UNSERVED[lib.name]:
        return None
    return pytest.raises(UnsupportedError, match=rf"{r.gate}: {re.escape(lib.name)} cannot serve this gate")


def _check(lib: Library, got: list[Any], expected: list[Any], what: str, rtol: float = 1e-10) -> None:
    """Each result is an array of the library and equals the expected NumPy result."""
    for g in got:
        assert isinstance(g, lib.array_type), f"{what}: a {type(g).__name__}, not the inputs' library's array"
    for k, (g, e) in enumerate(zip(lib.values(*got), expected)):
        np.testing.assert_allclose(g, np.asarray(e), rtol=rtol, atol=1e-12, err_msg=f"{what} (result {k})")


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_forward_on_other_libraries(lib: Library, r: Row, lazy_only: None) -> None:
    arrays = _draw(r)
    values = _convert(lib, arrays)
    nums = r.argnums or tuple(i for i, a in enumerate(arrays) if np.asarray(a).dtype.kind == "f")
    tensors = [cr.tensor(a, requires_grad=True) if i in nums else a for i, a in enumerate(values)]
    refuse = _unserved(lib, r)
    if refuse is not None:
        with refuse:
            r.fn(*tensors)
        return
    out = r.fn(*tensors)
    assert isinstance(out, cr.Tensor)
    _check(lib, [out.data], [r.ref(*arrays)], r.id, rtol=1e-12)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_gradient_on_other_libraries(lib: Library, r: Row, lazy_only: None) -> None:
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    refuse = _unserved(lib, r)
    if refuse is not None:
        with refuse:
            cr.value_and_grad(loss, argnums=r.argnums)(*_convert(lib, arrays))
        return
    value, grads = cr.value_and_grad(loss, argnums=r.argnums)(*_convert(lib, arrays))
    value0, grads0 = cr.value_and_grad(loss, argnums=r.argnums)(*arrays)
    _check(lib, [value, *grads], [value0, *grads0], f"value and gradients of {r.id}")


def _sample(rows: list[Row]) -> list[Row]:
    """One row per gate: forward mode and second order on Dask, whose graphs cost more to build."""
    seen: set[str] = set()
    return [r for r in rows if not (r.gate in seen or seen.add(r.gate))]


def _higher_order_cases() -> list[Any]:
    cases = [pytest.param("strict", r, id=f"strict-{r.id}") for r in DIFF_ROWS]
    return cases + [pytest.param("dask", r, id=f"dask-{r.id}") for r in _sample(DIFF_ROWS)]


@pytest.mark.parametrize("which, r", _higher_order_cases())
def test_forward_mode_and_second_order_on_other_libraries(which: str, r: Row) -> None:
    """J·t from cr.jvp and H·v from nested cr.grad (the backward pass recorded as a graph on the
    library's arrays) equal NumPy's."""
    lib = LIBRARIES[which]()
    arrays = _draw(r)
    values = _convert(lib, arrays)
    nums = r.argnums
    t = {k: np.random.default_rng(23 + k).standard_normal(np.shape(arrays[k])) for k in nums}

    def along(base: list[Any]) -> Callable[..., Any]:
        def fn(*xs: Any) -> Any:
            full = list(base)
            for k, x in zip(nums, xs):
                full[k] = x
            return r.fn(*full)

        return fn

    loss = _loss(r, _weights(r, arrays))

    def hvp(args: list[Any], v: dict[int, Any]) -> Any:
        first = cr.grad(loss, argnums=nums)
        return cr.grad(lambda *a: sum((g * v[k]).sum() for k, g in zip(nums, first(*a))), argnums=nums)(*args)

    refuse = _unserved(lib, r)
    if refuse is not None:
        with refuse:
            cr.jvp(along(values), tuple(values[k] for k in nums), tuple(lib.convert(t[k]) for k in nums))
        return
    _, tout = cr.jvp(along(values), tuple(values[k] for k in nums), tuple(lib.convert(t[k]) for k in nums))
    _, tout0 = cr.jvp(along(arrays), tuple(np.asarray(arrays[k], dtype=float) for k in nums),
                      tuple(t[k] for k in nums))
    _check(lib, [tout], [tout0], f"J·t of {r.id}", rtol=1e-9)
    _check(lib, list(hvp(values, {k: lib.convert(t[k]) for k in nums})), list(hvp(arrays, t)), f"H·v of {r.id}",
           rtol=1e-9)


def _mixes(v: Any) -> Any:
    return np.sin(v) * v.sum() + v**2


@pytest.mark.parametrize("mode", ["rev", "fwd", None])
def test_jacobian_and_hessian_stay_in_the_library(lib: Library, mode: str | None, lazy_only: None) -> None:
    """cr.jacobian (both modes) and cr.hessian answer with the inputs' library's arrays (on Dask: lazy,
    nothing computed inside chainrule) equal to NumPy's; the basis vectors are built in that library."""
    x = np.array([0.5, 1.0, 1.5, 2.0])
    for f in (_mixes, lambda v: v**2, lambda v: np.ones(4)):  # (the last: no dependence, all zeros)
        J = cr.jacobian(f, mode=mode)(lib.convert(x))
        _check(lib, [J], [cr.jacobian(f, mode=mode)(x)], f"jacobian mode={mode}")
    H = cr.hessian(lambda v: (np.sin(v) * v).sum())(lib.convert(x))
    H0 = cr.hessian(lambda v: (np.sin(v) * v).sum())(x)
    np.testing.assert_allclose(H0, np.diag(2 * np.cos(x) - x * np.sin(x)), rtol=1e-12, atol=1e-15)
    _check(lib, [H], [H0], "hessian")


def test_convolve_on_array_api_strict_names_convolve() -> None:
    """np.convolve contracts its windows by einsum, which the standard lacks: the error names convolve."""
    with pytest.raises(UnsupportedError, match=r"^convolve \(np\.convolve, cr\.signal\.convolve\): array_api_strict "
                                               r"cannot serve it: .*einsum"):
        cr.grad(lambda a: np.convolve(a, np.array([1.0, 2.0])).sum())(strict.asarray([1.0, 2.0, 3.0]))


# ---- the namespace follows the inputs; one library per call --------------------------------------


def complex_layer(x: Any, y: Any) -> Any:
    return np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2)


def test_tensor_trace_and_vjp_keep_the_library(lib: Library, lazy_only: None) -> None:
    x, y = np.array([0.5, 1.5, 2.0]), np.array([0.25, 1.0, 3.0])
    t = cr.tensor(lib.convert(x), requires_grad=True)
    assert isinstance(t.data, lib.array_type) and isinstance(t, cr.tensor(x).__class__)
    out, pull = cr.vjp(complex_layer, lib.convert(x), lib.convert(y))
    out0, pull0 = cr.vjp(complex_layer, x, y)
    _check(lib, [out, *pull(lib.convert(np.ones(3)))], [out0, *pull0(np.ones(3))], "vjp")
    g = cr.trace(complex_layer, lib.convert(x), lib.convert(y))
    assert isinstance(g.output.value, lib.array_type)
    assert isinstance(g["x"].grad, lib.array_type)
    np.testing.assert_allclose(lib.values(g["x"].grad)[0], cr.grad(complex_layer)(x, y), rtol=1e-12)


def test_mixing_two_libraries_in_one_call_is_an_error(lib: Library) -> None:
    x = np.array([0.5, 1.5])
    with pytest.raises(MixedLibrariesError, match=rf"complex_layer: arrays of two array libraries, numpy and "
                                                  rf"{re.escape(lib.name)}"):
        cr.value_and_grad(complex_layer, argnums=(0, 1))(x, lib.convert(x))
    other = next(LIBRARIES[n]() for n in LIBRARIES if LIBRARIES[n]().name != lib.name)
    with pytest.raises(MixedLibrariesError, match="arrays of two array libraries"):
        cr.grad(complex_layer)(lib.convert(x), other.convert(x))
    a, b = cr.tensor(lib.convert(x), requires_grad=True), cr.tensor(other.convert(x), requires_grad=True)
    with pytest.raises(MixedLibrariesError, match="mul: operands from two array libraries"):
        a * b
    with pytest.raises(MixedLibrariesError, match="a NumPy array that requires grad meets"):
        a * cr.tensor(x, requires_grad=True)


def test_numpy_constants_inside_the_function_are_moved_into_the_library(lib: Library, lazy_only: None) -> None:
    """Index arrays, np.eye and NumPy weights written in the function work on the library's arrays."""
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    rows, labels = np.arange(3), np.array([1, 0, 1])

    def f(x: Any) -> Any:
        s = x @ w + np.eye(2)[0]
        return (s[rows, labels] ** 2).sum() + cr.cross_entropy(s, labels)

    x = np.array([[0.5, 1.0], [-1.0, 2.0], [0.25, 0.75]])
    value, g = cr.value_and_grad(f)(lib.convert(x))
    value0, g0 = cr.value_and_grad(f)(x)
    _check(lib, [value, g], [value0, g0], "value and gradient")


DASK_OWN = {"sum": lambda da, a: da.sum(a**2), "dot": lambda da, a: da.dot(a, a),
            "mean": lambda da, a: da.mean(da.sin(a)), "stack": lambda da, a: da.stack([a, a]).sum(),
            "map_blocks": lambda da, a: da.map_blocks(np.sin, a).sum(), "asarray": lambda da, a: da.asarray(a).sum()}


@pytest.mark.parametrize("name", list(DASK_OWN))
def test_dask_own_functions_on_tensors_raise_instead_of_a_zero_gradient(name: str) -> None:
    """dask.array.sum(t) and the like compute on the tensor's values outside chainrule: the call raises,
    naming the Dask function and the line (never a gradient of zeros)."""
    da = pytest.importorskip("dask.array")
    import dask

    x = da.from_array(np.array([0.5, 1.0, 2.0]), chunks=2)
    with dask.config.set(scheduler=_forbid), pytest.raises(
            TypeError, match=rf"dask\.array\.{name} was given a chainrule tensor that requires grad, at .*"
                             r"test_array_api\.py:\d+: .*gradient would be lost"):
        cr.value_and_grad(lambda a: DASK_OWN[name](da, a))(x)
    t = cr.tensor(x, requires_grad=True)
    with pytest.raises(TypeError, match=rf"dask\.array\.{name} was given a chainrule tensor"):
        DASK_OWN[name](da, t)
    # the same function written with NumPy's names dispatches to chainrule: the right gradient, still lazy
    with dask.config.set(scheduler=_forbid):
        v, g = cr.value_and_grad(lambda a: np.mean(np.sin(a)))(x)
    np.testing.assert_allclose(g.compute(scheduler="sync"), np.cos([0.5, 1.0, 2.0]) / 3, rtol=1e-12)


LAZY_INDEX = {"rows": lambda a, i: (a[i] ** 2).sum(), "rows-sliced": lambda a, i: (a[i, :] ** 3).sum(),
              "columns": lambda a, i: (a[:, i % 2] * np.arange(1.0, 5.0)).sum(),
              "ellipsis": lambda a, i: np.sin(a[..., i % 2]).sum(),
              "every-axis": lambda a, i: (a[i, i % 2] ** 2).sum()}


@pytest.mark.parametrize("name", list(LAZY_INDEX))
def test_gradient_of_indexing_with_dask_index_arrays_equals_numpy(name: str) -> None:
    """Indexing a 2-D Dask array with a Dask integer array (labels of a lazy loss), repeated entries
    included: lazy, chunked like the input, and equal to NumPy's gradient."""
    da = pytest.importorskip("dask.array")
    import dask

    xn, idx = np.arange(6.0).reshape(3, 2), np.array([0, 0, 2, 0])
    x = da.from_array(xn, chunks=(2, 1))
    with dask.config.set(scheduler=_forbid):
        v, g = cr.value_and_grad(lambda a: LAZY_INDEX[name](a, da.from_array(idx, chunks=3)))(x)
    v0, g0 = cr.value_and_grad(lambda a: LAZY_INDEX[name](a, idx))(xn)
    if name == "rows":
        np.testing.assert_array_equal(g0, [[0, 6], [0, 0], [8, 10]])  # 2·x, the first row read three times
    assert g.chunks == x.chunks
    np.testing.assert_allclose(v.compute(scheduler="sync"), v0, rtol=1e-12)
    np.testing.assert_allclose(g.compute(scheduler="sync"), g0, rtol=1e-12)


def test_a_dask_boolean_mask_says_it_is_not_supported_and_what_to_write() -> None:
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.arange(6.0).reshape(3, 2), chunks=(2, 1))
    said = r"Dask boolean mask \(a\[a > 0\]\) is not supported.*cr\.where\(a > 0, a, 0\)"
    with pytest.raises(IndexError, match=said):
        cr.grad(lambda a: (a[a > 2.0] ** 2).sum())(x)
    g = cr.grad(lambda a: (cr.where(a > 2.0, a, 0) ** 2).sum())(x)  # what it says to write instead
    np.testing.assert_array_equal(g.compute(scheduler="sync"), [[0, 0], [0, 6], [8, 10]])


def test_the_scatter_add_gradient_on_dask_is_chunked_like_the_input() -> None:
    """The gradient of indexing with repeated NumPy indices is chunked like the input, and the scatter-add
    itself never makes the whole array in one task: its chunks follow Dask's chunk-size setting."""
    da = pytest.importorskip("dask.array")
    import dask

    xn = np.random.default_rng(5).standard_normal(4000)
    idx = np.random.default_rng(6).integers(0, 4000, 3000)
    x = da.from_array(xn, chunks=500)
    f = lambda a: (a[idx] ** 2).sum()  # noqa: E731
    with dask.config.set(scheduler=_forbid):
        g = cr.grad(f)(x)
        _, pull = cr.vjp(lambda a: a[idx], x)
        (gv,) = pull(da.ones(3000, chunks=700))
    assert g.chunks == x.chunks and gv.chunks == x.chunks
    np.testing.assert_allclose(g.compute(scheduler="sync"), cr.grad(f)(xn), rtol=1e-12)
    np.testing.assert_allclose(gv.compute(scheduler="sync"), np.bincount(idx, minlength=4000))
    X = da.from_array(xn.reshape(40, 100), chunks=(10, 50))
    f2 = lambda a: (a[idx % 40] ** 2).sum()  # noqa: E731
    with dask.config.set(scheduler=_forbid):
        g2 = cr.grad(f2)(X)
    assert g2.chunks == X.chunks
    np.testing.assert_allclose(g2.compute(scheduler="sync"), cr.grad(f2)(xn.reshape(40, 100)), rtol=1e-12)
    adapter = cr.backend.library_of(x).adapter
    with dask.config.set({"array.chunk-size": "4KiB"}):  # 512 float64 (8 rows of 100 for the 2-D array)
        s1 = adapter.gate_scatter(da.ones(3000, chunks=700), index=idx, shape=(4000,))
        s2 = adapter.gate_scatter(da.ones((3000, 100), chunks=700), index=idx % 40, shape=(40, 100))
    assert max(s1.chunks[0]) <= 512 and max(s2.chunks[0]) * 100 <= 512 and s2.chunks[1] == (100,)
    np.testing.assert_allclose(s1.compute(scheduler="sync"), np.bincount(idx, minlength=4000))
    np.testing.assert_allclose(s2.compute(scheduler="sync")[:, 0], np.bincount(idx % 40, minlength=40))


def test_set_array_namespace_still_overrides() -> None:
    """The old switch: one NumPy-compatible module for all array math, whatever the inputs."""
    from chainrule import backend

    calls: list[str] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            fn = getattr(np, name)
            if callable(fn) and name == "exp":
                def wrapped(*a: Any, **k: Any) -> Any:
                    calls.append(name)
                    return fn(*a, **k)

                return wrapped
            return fn

    try:
        backend.set_array_namespace(Spy())
        assert cr.grad(lambda x: cr.exp(x).sum())(np.array([0.0, 1.0])).tolist() == [1.0, np.e]
    finally:
        backend.set_array_namespace(np)
    assert "exp" in calls


def test_set_array_namespace_to_dask_computes_numpy_inputs_with_dask() -> None:
    """The override as a whole library: NumPy inputs are computed with dask.array (lazily), and the value
    and gradients equal NumPy's."""
    da = pytest.importorskip("dask.array")
    import dask

    from chainrule import backend

    x, y = np.array([1.5, 2.0, 0.7]), np.array([0.5, 1.0, 1.3])
    v0, (gx0, gy0) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    try:
        backend.set_array_namespace(da)
        with dask.config.set(scheduler=_forbid):
            v, (gx, gy) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    finally:
        backend.set_array_namespace(np)
    assert all(isinstance(a, da.Array) for a in (v, gx, gy))
    for got, want in zip(dask.compute(v, gx, gy, scheduler="sync"), (v0, gx0, gy0)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---- Dask on a cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_client() -> Any:
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _chunked(n: int = 20_000, chunks: int = 2_500) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(16)
    x, y = rng.uniform(0.5, 2.0, n), rng.uniform(0.0, 2.0, n)
    return x, y, da.from_array(x, chunks=chunks), da.from_array(y, chunks=chunks)


def test_complex_layer_on_a_local_cluster_is_lazy_and_equals_numpy(cluster_client: Any) -> None:
    """value_and_grad builds one Dask graph (nothing computed), chunked like the inputs; computed on a
    LocalCluster of 2 worker processes it equals NumPy's."""
    import dask

    x, y, dx, dy = _chunked()
    with dask.config.set(scheduler=_forbid):
        out, (fx, fy) = cr.value_and_grad(complex_layer, argnums=(0, 1))(dx, dy)
    assert all(isinstance(a, type(dx)) and a.chunks == dx.chunks for a in (out, fx, fy))
    got = dask.compute(out, fx, fy)  # on the cluster: the client is the default scheduler
    out0, (fx0, fy0) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    for a, b in zip(got, (out0, fx0, fy0)):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_compile_runs_its_kernel_per_chunk_on_a_cluster(cluster_client: Any) -> None:
    """cr.compile on Dask arrays: the compiled kernel is one task per chunk (value and both gradients),
    lazy until computed, and equal to the eager engine's results."""
    import dask

    x, y, dx, dy = _chunked()
    fast = cr.compile(complex_layer, argnums=(0, 1))
    with dask.config.set(scheduler=_forbid):
        out, (fx, fy) = fast(dx, dy)
    assert out.chunks == fx.chunks == dx.chunks
    tasks = dict(out.__dask_graph__())
    assert sum(1 for k in tasks if k[0].startswith("run_block-")) == dx.npartitions  # one kernel task per chunk
    got = dask.compute(out, fx, fy)
    out0, (fx0, fy0) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    for a, b in zip(got, (out0, fx0, fy0)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_compile_of_a_reduction_on_dask_is_the_eager_graph() -> None:
    """A program that is not elementwise (a sum) cannot run chunk by chunk: it runs as the eager
    engine's Dask graph, still lazy, still equal."""
    import dask

    x, _, dx, _ = _chunked(4_000, 1_000)
    with dask.config.set(scheduler=_forbid):
        out, g = cr.compile(lambda x: (np.sin(x) * x).sum())(dx)
    np.testing.assert_allclose(out.compute(scheduler="sync"), (np.sin(x) * x).sum(), rtol=1e-12)
    np.testing.assert_allclose(g.compute(scheduler="sync"), np.cos(x) * x + np.sin(x), rtol=1e-12)


def test_compile_out_is_for_numpy_arrays_only() -> None:
    """out= writes into NumPy arrays; Dask arrays are lazy, so it is refused with one line."""
    x, y, dx, dy = _chunked(4_000, 1_000)
    fast = cr.compile(complex_layer, argnums=(0, 1))
    with pytest.raises(TypeError, match="out= takes NumPy arrays; these arguments are dask.array arrays"):
        fast(dx, dy, out=(np.empty(4_000), (np.empty(4_000), np.empty(4_000))))


# ---- models and compiled code on other libraries ------------------------------------------------------


def _mlp() -> Any:
    return cr.nn.Sequential(cr.nn.Linear(6, 5, rng=1, dtype=np.float64), cr.nn.ReLU(),
                            cr.nn.Linear(5, 3, rng=2, dtype=np.float64))


def test_a_model_moved_to_a_library_trains_like_on_numpy(lib: Library, lazy_only: None) -> None:
    """model.to(module) moves the parameters (still nn.Parameters); the loss, its backward pass and the
    parameters' gradients equal NumPy's; model.to(np) brings them back."""
    import importlib

    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    moved, ref = _mlp(), _mlp()
    moved.to(importlib.import_module(lib.name))
    assert all(isinstance(p, cr.nn.Parameter) and isinstance(p.data, lib.array_type) for p in moved.parameters())
    loss = cr.nn.cross_entropy(moved(lib.convert(X)), lib.convert(y))
    loss.backward()
    loss0 = cr.nn.cross_entropy(ref(X), y)
    loss0.backward()
    _check(lib, [loss.data, *[p.grad for p in moved.parameters()]], [loss0.data, *[p.grad for p in ref.parameters()]],
           "loss and parameter gradients")
    import dask

    with dask.config.set(scheduler="sync"):  # (back to NumPy computes: that is what it is asked to do)
        moved.to(np)
    assert all(type(p) is cr.nn.Parameter and isinstance(p.data, np.ndarray) for p in moved.parameters())


OPTIMIZERS = {"sgd": lambda ps: cr.optim.SGD(ps, lr=0.1),
              "sgd-momentum": lambda ps: cr.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
              "adam": lambda ps: cr.optim.Adam(ps, lr=0.05, weight_decay=0.01),
              "adamw": lambda ps: cr.optim.AdamW(ps, lr=0.05)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_update_parameters_of_a_library_like_on_numpy(lib: Library, name: str, lazy_only: None) -> None:
    """Three training steps of an MLP moved to the library change its parameters exactly as on NumPy (a
    Dask array is never written in place: the parameter takes the new lazy array)."""
    import importlib

    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    moved, ref = _mlp(), _mlp()
    moved.to(importlib.import_module(lib.name))
    opt, opt0 = OPTIMIZERS[name](moved.parameters()), OPTIMIZERS[name](ref.parameters())
    for _ in range(3):
        for model, o, Xs, ys in ((moved, opt, lib.convert(X), lib.convert(y)), (ref, opt0, X, y)):
            o.zero_grad()
            cr.nn.cross_entropy(model(Xs), ys).backward()
            o.step()
    params, params0 = list(moved.parameters()), list(ref.parameters())
    assert not np.allclose(params0[0].data, next(_mlp().parameters()).data)  # NumPy's model did move
    _check(lib, [p.data for p in params], [p.data for p in params0], f"{name}: parameters after 3 steps")


def test_sgd_on_one_dask_parameter_takes_the_step() -> None:
    da = pytest.importorskip("dask.array")
    import dask

    p = cr.nn.Parameter(da.from_array(np.array([1.0, 2.0]), chunks=1))
    opt = cr.optim.SGD([p], lr=0.5)
    with dask.config.set(scheduler=_forbid):
        (p**2).sum().backward()
        opt.step()
    assert isinstance(p.data, da.Array)
    np.testing.assert_array_equal(p.data.compute(scheduler="sync"), [0.0, 0.0])


def test_compile_on_a_numpy_like_library_runs_the_numpy_plan_there() -> None:
    """The path CuPy takes (tests/test_cupy.py runs it on a GPU): the NumPy plan's code with ``np``
    standing for the library's module, traced and checked on host copies, run on the library's arrays.
    Dask's module mirrors NumPy's too, so it stands in for CuPy here (cr.compile itself gives Dask
    arrays the kernel per chunk instead)."""
    from chainrule import backend, compile_libraries

    x, y, dx, dy = _chunked(5_000, 1_000)
    fast = cr.compile(complex_layer, argnums=(0, 1))
    out, (fx, fy) = compile_libraries.call_numpy_like(fast, (dx, dy), backend.library_of(dx))
    assert fast.backend_used == "numpy" and "np.log(x)" in fast.source
    assert all(isinstance(a, type(dx)) for a in (out, fx, fy))
    out0, (fx0, fy0) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    for a, b in zip((out, fx, fy), (out0, fx0, fy0)):
        np.testing.assert_allclose(a.compute(scheduler="sync"), b, rtol=1e-12)


def test_compile_on_array_api_strict_runs_the_eager_engine() -> None:
    """A library with nothing beyond the standard has no NumPy plan to run: compile answers with the
    eager engine on its arrays (the same values, the same library)."""
    x, y = np.array([0.5, 1.5, 2.0]), np.array([0.25, 1.0, 3.0])
    out, (fx, fy) = cr.compile(complex_layer, argnums=(0, 1))(strict.asarray(x), strict.asarray(y))
    out0, (fx0, fy0) = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    _check(_strict(), [out, fx, fy], [out0, fx0, fy0], "compiled on array-api-strict")


def test_an_elementwise_gate_beyond_the_standard_runs_chunk_by_chunk_on_dask() -> None:
    """A gate whose forward only NumPy has (SciPy's special functions are such): on Dask, NumPy's
    forward runs on each chunk, lazily; array-api-strict, with nothing beyond the standard, refuses it
    by name. Its rule is written with other gates, so the gradient follows on both."""
    import dask

    from chainrule.gates import ELEMENTWISE, GATES, Gate, register
    from chainrule.tensor import apply

    def _gd(xp: Any, x: Any) -> Any:  # the Gudermannian, 2·atan(tanh(x/2)): a name only NumPy here knows
        if xp is not np:
            return xp.gudermannian(x)
        return 2 * np.arctan(np.tanh(x / 2))

    register(Gate("gudermannian", _gd, "gd gate: local gradient 1/cosh x", "gd({0})", kind=ELEMENTWISE,
                  local=(lambda m, x, out: 1 / m.cosh(x),)))
    try:
        x = np.linspace(-1.0, 2.5, 9)

        def f(t: Any) -> Any:
            return apply(GATES["gudermannian"], t).sum()

        dx = _dask().convert(x)
        with dask.config.set(scheduler=_forbid):
            value, g = cr.value_and_grad(f)(dx)
        np.testing.assert_allclose(value.compute(scheduler="sync"), (2 * np.arctan(np.tanh(x / 2))).sum())
        np.testing.assert_allclose(g.compute(scheduler="sync"), 1 / np.cosh(x), rtol=1e-12)
        with pytest.raises(UnsupportedError, match="gudermannian: array_api_strict cannot serve this gate"):
            cr.value_and_grad(f)(strict.asarray(x))
    finally:
        del GATES["gudermannian"]
