"""The autograd-suite shim (bench/autograd_suite.py): its gradient check finds wrong gradients at first and
second order, names missing rules, and counts unmappable features apart.

The check itself is validated against an independent engine (HIPS autograd, pip-installed) and against
deliberately broken rules, so a "pass" from the shim means what it says.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import chainrule as cr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "bench", "autograd_suite.py")
CORE = os.path.join(ROOT, "bench", "autograd_shim", "autograd_shim_core.py")


@pytest.fixture
def core() -> Any:
    """The shim's machinery, loaded from its file (the shim's `autograd` package is never imported here:
    it would shadow the real autograd for the rest of the session)."""
    spec = importlib.util.spec_from_file_location("autograd_shim_core_under_test", CORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcomes(records: list[dict[str, Any]]) -> dict[str, str]:
    return {r["mode"]: r["outcome"] for r in records}


# ---------------------------------------------------------------------------------------------
# the check, with HIPS autograd as the engine: an independent reference for the method itself
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def autograd_engine() -> Any:
    """HIPS autograd behind chainrule's functional API (vjp, grad, Tensor), for the shim to drive."""
    autograd = pytest.importorskip("autograd")
    from autograd.tracer import Box

    def vjp(f: Any, *xs: Any) -> Any:
        pull, ans = autograd.make_vjp(f, argnum=tuple(range(len(xs))))(*xs)
        return ans, pull

    def grad(f: Any, argnums: Any = 0) -> Any:
        return autograd.grad(f, list(argnums) if isinstance(argnums, tuple) else argnums)

    return SimpleNamespace(Tensor=Box, vjp=vjp, grad=grad)


def test_check_passes_correct_gradients_of_an_independent_engine(core: Any, autograd_engine: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import autograd.numpy as anp

    monkeypatch.setattr(core, "engine", lambda: autograd_engine)
    x, y = np.array([0.3, -1.2, 2.0]), np.array([[0.5], [1.5]])
    one = core.run_checks(lambda a: anp.sum(anp.sin(a) * a ** 2), 0, ["rev"], 2, (x,), {})
    two = core.run_checks(lambda a, b: a * anp.tanh(b), (0, 1), ["rev"], 2, (x, y), {})
    pair = core.run_checks(lambda a: (anp.exp(a), anp.sum(a) ** 2), 0, ["rev"], 2, (x,), {})  # tuple output
    assert _outcomes(one) == _outcomes(two) == _outcomes(pair) == {"rev": "pass", "rev>rev": "pass"}


def test_check_finds_a_wrong_first_order_rule(core: Any, autograd_engine: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from autograd.extend import defvjp, primitive

    @primitive
    def twice(x: Any) -> Any:
        return x * 2.0

    defvjp(twice, lambda ans, x: lambda g: g * 2.001)  # 0.05 % off
    monkeypatch.setattr(core, "engine", lambda: autograd_engine)
    rec = core.run_checks(twice, 0, ["rev"], 1, (1.3,), {})
    assert [r["outcome"] for r in rec] == ["wrong"]
    assert rec[0]["rel_error"] == pytest.approx(0.0005, rel=1e-2)


def test_check_finds_a_wrong_second_order_rule(core: Any, autograd_engine: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from autograd.extend import defvjp, primitive

    @primitive
    def ident(x: Any) -> Any:
        return x

    defvjp(ident, lambda ans, x: lambda g: g * 1.001)  # only the derivative of the backward pass is off

    @primitive
    def twice(x: Any) -> Any:
        return x * 2.0

    defvjp(twice, lambda ans, x: lambda g: ident(g) * 2)
    monkeypatch.setattr(core, "engine", lambda: autograd_engine)
    assert _outcomes(core.run_checks(twice, 0, ["rev"], 2, (1.3,), {})) == {"rev": "pass", "rev>rev": "wrong"}


# ---------------------------------------------------------------------------------------------
# the check on chainrule
# ---------------------------------------------------------------------------------------------


def test_check_on_chainrule_at_both_orders(core: Any) -> None:
    x = np.array([[0.2, -0.7], [1.1, 0.4]])
    rec = core.run_checks(lambda a, b: np.sum(np.exp(a) * b), (0, 1), ["rev"], 2, (x, x.T.copy()), {})
    assert _outcomes(rec) == {"rev": "pass", "rev>rev": "pass"}
    assert rec[0]["shapes"] == [[2, 2], [2, 2]]


def test_a_broken_chainrule_vjp_is_reported_wrong(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def off_vjp(f: Any, *xs: Any) -> Any:
        out, pull = cr.vjp(f, *xs)
        return out, lambda g: tuple(1.001 * gi for gi in pull(g))

    monkeypatch.setattr(core, "engine", lambda: SimpleNamespace(Tensor=cr.Tensor, vjp=off_vjp, grad=cr.grad))
    rec = core.run_checks(lambda a: np.sum(a * a), 0, ["rev"], 1, (np.array([1.0, 2.0]),), {})
    assert [r["outcome"] for r in rec] == ["wrong"]


def test_complex_and_container_inputs_are_unmappable_not_failures(core: Any) -> None:
    rec = core.run_checks(lambda z: z * 2, 0, ["rev"], 2, (1.0 + 2.0j,), {})
    assert {r["outcome"] for r in rec} == {"unmappable"} and "complex" in rec[0]["reason"]
    rec = core.run_checks(lambda t: t[0] * t[1], 0, ["rev"], 1, ((1.0, 2.0),), {})
    assert rec[0]["outcome"] == "unmappable" and "tuple" in rec[0]["reason"]
    rec = core.run_checks(lambda x: np.fft.fft(x), 0, ["rev"], 1, (np.ones(4),), {})
    assert rec[0]["outcome"] == "unmappable" and "complex output" in rec[0]["reason"]
    with pytest.raises(core.Unmappable):
        core.grad(lambda d: d["a"])({"a": 1.0})


def test_forward_mode_is_unmappable_until_chainrule_has_jvp(core: Any) -> None:
    rec = core.run_checks(lambda a: np.sin(a), 0, ["fwd", "rev"], 2, (np.array([0.3, 0.4]),), {})
    modes = _outcomes(rec)
    assert list(modes) == ["fwd", "fwd>fwd", "fwd>rev", "rev", "rev>fwd", "rev>rev"]  # autograd's order
    assert modes["rev"] == modes["rev>rev"] == "pass"
    fwd = {m: o for m, o in modes.items() if "fwd" in m}
    if hasattr(cr, "jvp"):
        assert set(fwd.values()) == {"pass"}
    else:
        assert set(fwd.values()) == {"unmappable"}


@pytest.mark.parametrize(("exc", "outcome", "name"), [
    (TypeError("np.prod is not supported by chainrule on tensors: it has no gradient rule (use .detach())"),
     "missing", "np.prod"),
    (TypeError("np.linalg.norm is not supported by chainrule on tensors: it has no gradient rule"),
     "missing", "np.linalg.norm"),
    (TypeError("np.log1p is not supported by chainrule: it has no gradient rule (supported ufuncs: add)"),
     "missing", "np.log1p"),
    (TypeError("np.add.reduce is not supported on chainrule tensors (only plain calls of ufuncs are)"),
     "missing", "np.add.reduce"),
    (TypeError("np.sum: argument(s) dtype, out are not supported on chainrule tensors"), "missing",
     "np.sum(dtype=, out=)"),
    (AttributeError("'Tensor' object has no attribute 'var'"), "missing", "Tensor.var"),
    (TypeError("unsupported operand type(s) for %: 'Tensor' and 'float'"), "missing", "Tensor operator %"),
    (ValueError("matmul: shapes do not match"), "error", None),
])
def test_classify_names_the_missing_function(core: Any, exc: Exception, outcome: str, name: str | None) -> None:
    got = core.classify(exc)
    assert got["outcome"] == outcome
    assert got.get("name") == name


def test_a_scipy_ufunc_is_named_by_its_scipy_name(core: Any) -> None:
    pytest.importorskip("scipy")
    got = core.classify(TypeError("np.gammaln is not supported by chainrule: it has no gradient rule"))
    assert got["name"] == "scipy.special.gammaln"


# ---------------------------------------------------------------------------------------------
# the command, end to end, on a small autograd-style test folder
# ---------------------------------------------------------------------------------------------

TINY = '''
import numpy as onp
import pytest

import autograd.numpy as np
import autograd.numpy.random as npr
from autograd import grad
from autograd.test_util import check_grads


def shim_probe(a):
    return 2 * a


probe = onp.frompyfunc(shim_probe, 1, 1)  # a ufunc chainrule can never have a rule for


def test_the_shim_shadows_autograd():
    import autograd
    assert "autograd_shim" in autograd.__file__ and np.exp is onp.exp and npr is onp.random


def test_sin():
    check_grads(lambda x: np.sin(x) * x)(np.linspace(-1.0, 1.0, 4))


def test_grad_value():
    assert abs(grad(lambda x: x ** 3)(2.0) - 12.0) < 1e-12


def test_complex():
    check_grads(lambda z: z * 2.0)(1.0 + 2.0j)


def test_missing():
    check_grads(lambda x: np.asarray(probe(x), dtype=float), modes=["rev"])(np.ones(3))
'''


def test_suite_command_end_to_end(tmp_path: Any) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_tiny.py").write_text(textwrap.dedent(TINY))
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, SUITE, "--tests", str(tests), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    status = {t["test"].split("::")[1]: t["status"] for t in summary["tests"]}
    assert status == {"test_the_shim_shadows_autograd": "not_chainrule", "test_sin": "passed",
                      "test_grad_value": "passed", "test_complex": "unmappable", "test_missing": "failed"}
    fwd = hasattr(cr, "jvp")  # test_sin's forward-mode check runs once chainrule has cr.jvp
    assert summary["totals"]["checks"]["1"] == {"pass": 1 + fwd, "wrong": 0, "missing": 1, "unmappable": 3 - fwd,
                                                "error": 0}
    assert [m["name"] for m in summary["missing"]] == ["np.shim_probe"]
    assert "test_tiny.py" in proc.stdout and "WRONG GRADIENTS: 0" in proc.stdout
    assert not list(tests.glob("__pycache__"))  # autograd's folder is left as it was


@pytest.mark.parametrize("where", ["missing", "not-tests"])
def test_suite_command_refuses_a_path_without_autograd_tests_in_one_line(tmp_path: Any, where: str) -> None:
    path = tmp_path / "nothing" if where == "missing" else tmp_path
    proc = subprocess.run([sys.executable, SUITE, "--tests", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr
