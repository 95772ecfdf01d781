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


# ---------------------------------------------------------------------------------------------
# the shim's autograd.scipy: formulas that must give SciPy's values (else the checks test another function)
# ---------------------------------------------------------------------------------------------

SCIPY_VALUES = '''
import itertools
import numpy as np
import scipy.signal as ss
import scipy.special as sp
import scipy.stats as st

import autograd.scipy.signal as asig
import autograd.scipy.special as aspecial
import autograd.scipy.stats as ast
import chainrule as cr

def val(v):
    return np.asarray(v.data if isinstance(v, cr.Tensor) else v)

r = np.random.default_rng(0)
x, loc, scale = r.standard_normal((4, 3)), r.standard_normal((1, 3)), r.standard_normal((4, 1)) ** 2 + 1.1
df, pos, u = r.standard_normal(3) ** 2 + 2.1, r.standard_normal((4, 3)) ** 2 + 1.1, r.uniform(0, 1, (4, 3))
k = np.round(r.standard_normal((4, 3)) ** 2)
cases = [(f"norm.{m}", getattr(ast.norm, m), getattr(st.norm, m), (x, loc, scale))
         for m in ("pdf", "cdf", "sf", "logpdf", "logcdf", "logsf")]
cases += [(f"t.{m}", getattr(ast.t, m), getattr(st.t, m), (x, df, loc, scale))
          for m in ("pdf", "cdf", "logpdf", "logcdf")]
cases += [(f"chi2.{m}", getattr(ast.chi2, m), getattr(st.chi2, m), (pos, d)) for m in ("pdf", "cdf", "logpdf")
          for d in (1, 2, 3)]
cases += [(f"gamma.{m}", getattr(ast.gamma, m), getattr(st.gamma, m), (pos, df)) for m in ("pdf", "cdf", "logpdf")]
cases += [(f"beta.{m}", getattr(ast.beta, m), getattr(st.beta, m), (u, pos, df)) for m in ("pdf", "cdf", "logpdf")]
cases += [(f"poisson.{m}", getattr(ast.poisson, m), getattr(st.poisson, m), (kk, pos)) for m in ("pmf", "logpmf", "cdf")
          for kk in (k, k + 0.5, -k - 1)]
alpha = r.random(4) ** 2 + 1.2
xd = st.dirichlet.rvs(alpha, size=1, random_state=1)[0]
cases += [(f"dirichlet.{m}", getattr(ast.dirichlet, m), getattr(st.dirichlet, m), (xd, alpha))
          for m in ("pdf", "logpdf")]
m = r.standard_normal((4, 4))
cov, mean = m.T @ m + np.eye(4), r.standard_normal(4)
sing = np.diag([1.0, 2.0, 0.0, 0.0])
mean_s = mean * np.array([1.0, 1.0, 0.0, 0.0])  # on the singular covariance's support
for pts in (r.standard_normal(4), r.standard_normal((5, 4))):
    pts_s = pts * np.array([1.0, 1.0, 0.0, 0.0])
    for f in ("pdf", "logpdf"):
        for args in ((pts, mean, cov, False), (pts, mean, cov, True), (pts_s, mean_s, sing, True)):
            cases.append((f"mvn.{f}", getattr(ast.multivariate_normal, f), getattr(st.multivariate_normal, f), args))
cases.append(("mvn.entropy", ast.multivariate_normal.entropy, st.multivariate_normal.entropy, (mean, cov)))
a, b = r.standard_normal((3, 4)), np.exp(r.standard_normal((3, 4)))
cases += [("logsumexp", aspecial.logsumexp, sp.logsumexp, (a, ax, b, kd))
          for ax in (None, 0, 1) for kd in (False, True)]
cases += [("multigammaln", aspecial.multigammaln, sp.multigammaln, (pos + 3, d)) for d in (1, 2, 3)]
cases += [("polygamma", aspecial.polygamma, sp.polygamma, (n, pos)) for n in (0, 1, 2)]
for s1, s2 in [((5,), (3,)), ((4, 3), (2, 2)), ((2, 3), (4, 5))]:
    p, q = r.standard_normal(s1), r.standard_normal(s2)
    cases += [("convolve", asig.convolve, ss.convolve, (p, q, None, ((), ()), md)) for md in ("full", "valid", "same")]
bad = []
with np.errstate(divide="ignore", invalid="ignore"):
    for name, mine, ref, args in cases:
        if name == "convolve":
            want = ref(args[0], args[1], args[4])
            got = mine(args[0], args[1], mode=args[4])
        elif name.startswith("mvn") and name != "mvn.entropy":
            want, got = ref(*args[:3], allow_singular=args[3]), mine(*args[:3], allow_singular=args[3])
        elif name == "logsumexp":
            want = ref(args[0], axis=args[1], b=args[2], keepdims=args[3])
            got = mine(args[0], axis=args[1], b=args[2], keepdims=args[3])
        else:
            want, got = ref(*args), mine(*args)
        if np.shape(val(got)) != np.shape(want) or not np.allclose(val(got), want, rtol=1e-10, atol=1e-300,
                                                                   equal_nan=True):
            bad.append(name)
# autograd's convolve generalization, against sums of SciPy's 1-D/2-D convolutions (autograd's own check)
A, B, C = r.standard_normal((3, 5)), r.standard_normal((3, 4)), r.standard_normal((3, 4, 2))
for md in ("valid", "full", "same"):
    if not np.allclose(val(asig.convolve(A, B, axes=([1], [0]), mode=md))[1, 2], ss.convolve(A[1], B[:, 2], md)):
        bad.append(f"convolve axes {md}")
    got = val(asig.convolve(A, C, axes=([1], [2]), dot_axes=([0], [0]), mode=md))[2]
    if not np.allclose(got, sum(ss.convolve(A[i], C[i, 2], md) for i in range(3))):
        bad.append(f"convolve dot_axes {md}")
print(len(cases), "BAD", bad)
'''


def test_shim_scipy_formulas_give_scipys_values(tmp_path: Any) -> None:
    """Every stats formula, special composite and convolution the shim maps autograd.scipy onto equals SciPy's
    own result (in and out of the support), so the suite's checks differentiate the function the test meant."""
    pytest.importorskip("scipy")
    script = tmp_path / "values.py"
    script.write_text(SCIPY_VALUES)
    shim = os.path.join(ROOT, "bench", "autograd_shim")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([shim, os.path.join(ROOT, "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, verdict = proc.stdout.split("BAD")
    assert int(count) >= 70 and verdict.strip() == "[]", proc.stdout
