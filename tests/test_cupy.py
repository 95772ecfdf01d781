"""CuPy on a GPU (issue 16): the worksheet's functions, the gate table, the MLP training step and
``cr.compile``'s NumPy-plan code run on CuPy arrays unchanged and give NumPy's results as CuPy arrays.

Skipped where CuPy or a CUDA device is missing (the usual test machine); run them on a GPU machine:
``python3 -m pytest -q tests/test_cupy.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_gates import DIFF_ROWS, ROWS, Row, _draw, _loss, _weights
from worksheet_functions import INPUTS, complex_layer, q2a, q2b, q2c

import chainrule as cr

cp = pytest.importorskip("cupy")
pytest.importorskip("array_api_compat")
try:
    _devices = cp.cuda.runtime.getDeviceCount()
except Exception:  # no driver, no device
    _devices = 0
if not _devices:
    pytest.skip("no CUDA device: the CuPy tests need a GPU", allow_module_level=True)


def _gpu(a: Any) -> Any:
    return cp.asarray(a) if isinstance(a, (np.ndarray, np.generic)) else a


def _host(a: Any) -> np.ndarray:
    a = a.data if isinstance(a, cr.Tensor) else a
    assert isinstance(a, cp.ndarray), f"a {type(a).__name__}, not a CuPy array"
    return cp.asnumpy(a)


@pytest.mark.parametrize("f", [q2a, q2b, q2c])
def test_worksheet_question_2_on_the_gpu(f: Any) -> None:
    args = [cp.asarray(v) for v in INPUTS[f.__name__].values()]
    value, grads = cr.value_and_grad(f, argnums=(0, 1, 2))(*args)
    value0, grads0 = cr.value_and_grad(f, argnums=(0, 1, 2))(*INPUTS[f.__name__].values())
    np.testing.assert_allclose(_host(value), value0, rtol=1e-12)
    for g, g0 in zip(grads, grads0):
        np.testing.assert_allclose(_host(g), g0, rtol=1e-12)


def test_complex_layer_eager_and_compiled_on_the_gpu() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0.5, 2.0, 100_000), rng.uniform(0.0, 2.0, 100_000)
    ref = cr.value_and_grad(complex_layer, argnums=(0, 1))(x, y)
    eager = cr.value_and_grad(complex_layer, argnums=(0, 1))(cp.asarray(x), cp.asarray(y))
    fast = cr.compile(complex_layer, argnums=(0, 1))
    compiled = fast(cp.asarray(x), cp.asarray(y))
    assert fast.backend_used == "numpy"  # the NumPy plan's code, with np bound to CuPy
    for got in (eager, compiled):
        for a, b in zip((got[0], *got[1]), (ref[0], *ref[1])):
            np.testing.assert_allclose(_host(a), b, rtol=1e-12)


@pytest.mark.parametrize("r", ROWS, ids=lambda r: r.id)
def test_gate_table_forward_on_the_gpu(r: Row) -> None:
    arrays = _draw(r)
    nums = r.argnums or tuple(i for i, a in enumerate(arrays) if np.asarray(a).dtype.kind == "f")
    out = r.fn(*[cr.tensor(_gpu(a), requires_grad=True) if i in nums else _gpu(a) for i, a in enumerate(arrays)])
    np.testing.assert_allclose(_host(out), r.ref(*arrays), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r", DIFF_ROWS, ids=lambda r: r.id)
def test_gate_table_gradient_on_the_gpu(r: Row) -> None:
    arrays = _draw(r)
    loss = _loss(r, _weights(r, arrays))
    value, grads = cr.value_and_grad(loss, argnums=r.argnums)(*[_gpu(a) for a in arrays])
    value0, grads0 = cr.value_and_grad(loss, argnums=r.argnums)(*arrays)
    np.testing.assert_allclose(_host(value), value0, rtol=1e-10)
    for g, g0 in zip(grads, grads0):
        np.testing.assert_allclose(_host(g), g0, rtol=1e-10, atol=1e-12)


def _mlp(seed: int) -> tuple[Any, Any]:
    model = cr.nn.Sequential(cr.nn.Linear(20, 16, rng=seed, dtype=np.float64), cr.nn.ReLU(),
                             cr.nn.Linear(16, 3, rng=seed + 1, dtype=np.float64))
    return model, cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_mlp_training_steps_on_the_gpu() -> None:
    """The training step as written for NumPy (forward, loss, backward, the optimizer's in-place update)
    on a model moved to the GPU with model.to(cupy): the same losses and weights as on NumPy."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 20)), rng.integers(0, 3, 64)
    host, host_opt = _mlp(1)
    gpu, gpu_opt = _mlp(1)
    gpu.to(cp)
    assert all(isinstance(p.data, cp.ndarray) for p in gpu.parameters())
    for _ in range(3):
        losses = []
        for model, opt, xb, yb in ((host, host_opt, X, y), (gpu, gpu_opt, cp.asarray(X), cp.asarray(y))):
            opt.zero_grad()
            loss = cr.nn.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)
    for p, q in zip(gpu.parameters(), host.parameters()):
        np.testing.assert_allclose(_host(p), q.data, rtol=1e-9, atol=1e-12)
    gpu.to(np)
    assert all(isinstance(p.data, np.ndarray) for p in gpu.parameters())
