"""cr.special beyond the gate rows of test_gates.py: SciPy's calling convention through NumPy dispatch, the
composites logsumexp (b=, return_sign=) and multigammaln against SciPy with first and second derivatives
checked by central differences, constant orders refused with a clear error, printed and generated code,
and SciPy never imported by ``import chainrule`` (nor needed until a special function runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.special as sp

import chainrule as cr
from chainrule import backend
from chainrule.gates.special import SCIPY_NAMES, constant_inputs, sympy_twins


def _check_two_orders(f: Callable[..., Any], *args: np.ndarray) -> None:
    """First derivatives of sum(w·f) and the derivative of <∇, v> (a Hessian-vector product), each
    against central differences."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(f(*args).shape)

    def loss(*a: Any) -> Any:
        return (f(*a) * w).sum()

    assert cr.gradcheck(loss, *args, rtol=1e-5, atol=1e-7)
    vs = [rng.standard_normal(np.shape(a)) for a in args]
    nums = tuple(range(len(args)))

    def along_v(*a: Any) -> Any:
        grads = cr.grad(loss, argnums=nums)(*a)
        return sum((g * v).sum() for g, v in zip(grads, vs))

    assert cr.gradcheck(along_v, *args, rtol=1e-4, atol=1e-6)


# ---- logsumexp and multigammaln --------------------------------------------------------------------------

_A = np.random.default_rng(0).standard_normal((3, 4))
_B = np.exp(np.random.default_rng(1).standard_normal((3, 4)))


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_with_weights_matches_scipy(axis: Any, keepdims: bool) -> None:
    got = cr.special.logsumexp(_A, axis=axis, b=_B, keepdims=keepdims)
    np.testing.assert_allclose(got.data, sp.logsumexp(_A, axis=axis, b=_B, keepdims=keepdims), rtol=1e-13)
    _check_two_orders(lambda a, b: cr.special.logsumexp(a, axis=axis, b=b, keepdims=keepdims), _A, _B)


def test_logsumexp_without_weights_is_the_gate() -> None:
    out = cr.special.logsumexp(cr.tensor(_A, requires_grad=True), axis=1)
    assert out._gate.name == "logsumexp"
    np.testing.assert_allclose(out.data, sp.logsumexp(_A, axis=1), rtol=1e-13)


def test_logsumexp_return_sign_and_negative_weights() -> None:
    b = _B * np.array([1.0, -1.0, 1.0, -2.0])
    out, sign = cr.special.logsumexp(_A, axis=1, b=b, return_sign=True)
    ref, ref_sign = sp.logsumexp(_A, axis=1, b=b, return_sign=True)
    np.testing.assert_allclose(out.data, ref, rtol=1e-13)
    np.testing.assert_array_equal(sign, ref_sign)
    assert isinstance(sign, np.ndarray) and not isinstance(sign, cr.Tensor)
    _check_two_orders(lambda a: cr.special.logsumexp(a, axis=1, b=b, return_sign=True)[0], _A)
    with np.errstate(invalid="ignore"):  # a negative sum without return_sign: NaN, as in SciPy
        assert np.isnan(cr.special.logsumexp(np.array([0.0, 0.0]), b=np.array([1.0, -2.0])).item())


def test_logsumexp_stable_and_zero_weights() -> None:
    a = np.array([1000.0, 999.0, 5000.0])
    b = np.array([1.0, 2.0, 0.0])  # the largest a has weight 0: the shift must not use it
    np.testing.assert_allclose(cr.special.logsumexp(a, b=b).item(), sp.logsumexp(a, b=b), rtol=1e-15)
    g = cr.grad(lambda a: cr.special.logsumexp(a, b=b))(a)
    np.testing.assert_allclose(g, [1 / (1 + 2 / np.e), 2 / np.e / (1 + 2 / np.e), 0.0], rtol=1e-12)
    with pytest.raises(FloatingPointError, match="zero weight b overflows"):  # e^4000: not a number to report
        cr.grad(lambda b: cr.special.logsumexp(a, b=b))(b)
    a2 = np.array([1.0, 2.0, 3.0])  # a zero weight whose gradient is finite: e^(a − out)
    np.testing.assert_allclose(cr.grad(lambda b: cr.special.logsumexp(a2, b=b))(b),
                               np.exp(a2 - sp.logsumexp(a2, b=b)), rtol=1e-12)


def test_logsumexp_broadcast_weights() -> None:
    b = np.array([0.5, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(cr.special.logsumexp(_A, axis=1, b=b).data, sp.logsumexp(_A, axis=1, b=b), rtol=1e-13)
    _check_two_orders(lambda a, b: cr.special.logsumexp(a, axis=1, b=b), _A, b)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_multigammaln_matches_scipy(d: int) -> None:
    a = np.random.default_rng(d).uniform(4.0, 5.0, (2, 3))
    np.testing.assert_allclose(cr.special.multigammaln(a, d).data, sp.multigammaln(a, d), rtol=1e-13)
    np.testing.assert_allclose(cr.special.multigammaln(4.5, d).item(), sp.multigammaln(4.5, d), rtol=1e-13)
    _check_two_orders(lambda a: cr.special.multigammaln(a, d), a)


def test_multigammaln_refuses_what_scipy_refuses() -> None:
    with pytest.raises(ValueError, match="condition a"):
        cr.special.multigammaln(np.array([0.9, 3.0]), 3)
    with pytest.raises(ValueError, match="positive integer"):
        cr.special.multigammaln(3.0, 1.5)


# ---- SciPy's calling convention, through dispatch and through cr.special ------------------------------------


def test_scipy_ufuncs_on_tensors_are_the_gates() -> None:
    x = np.array([0.3, 1.2, 2.5])
    for fn, gate in [(sp.erf, "erf"), (sp.psi, "digamma"), (sp.digamma, "digamma"), (sp.gammaln, "gammaln"),
                     (sp.expit, "expit"), (sp.i0, "i0")]:
        out = fn(cr.tensor(x, requires_grad=True))
        assert isinstance(out, cr.Tensor) and out._gate.name == gate
        np.testing.assert_allclose(out.data, fn(x), rtol=1e-15)
    # orders first, as SciPy takes them, broadcast against x
    n = np.array([[0], [1], [2]])
    out = sp.jn(n, cr.tensor(x, requires_grad=True))
    assert out.shape == (3, 3) and out._gate.name == "jn"
    np.testing.assert_allclose(out.data, sp.jn(n, x), rtol=1e-15)
    np.testing.assert_allclose(cr.grad(lambda x: sp.jn(2, x).sum())(x), (sp.jn(1, x) - sp.jn(3, x)) / 2, rtol=1e-12)
    np.testing.assert_allclose(cr.grad(lambda x: cr.special.polygamma(1, x).sum())(x), sp.polygamma(2, x), rtol=1e-12)
    np.testing.assert_allclose(cr.grad(lambda x: sp.betainc(2.0, 3.0, x / 3).sum())(x),
                               x / 3 * (1 - x / 3) ** 2 / sp.beta(2.0, 3.0) / 3, rtol=1e-12)


def test_second_derivatives_come_from_the_table() -> None:
    x = np.array([0.7, 1.9])
    d2 = cr.grad(lambda x: cr.grad(lambda x: cr.special.gammaln(x).sum())(x).sum())(x)
    np.testing.assert_allclose(d2, sp.polygamma(1, x), rtol=1e-12)
    d3 = cr.grad(lambda x: cr.grad(lambda x: cr.grad(lambda x: sp.gammaln(x).sum())(x).sum())(x).sum())(x)
    np.testing.assert_allclose(d3, sp.polygamma(2, x), rtol=1e-12)
    d2 = cr.grad(lambda x: cr.grad(lambda x: sp.erf(x).sum())(x).sum())(x)
    np.testing.assert_allclose(d2, -4 * x / np.sqrt(np.pi) * np.exp(-x**2), rtol=1e-12)


@pytest.mark.parametrize("call, what", [
    (lambda t: sp.jn(t, 1.5), "jn has no gradient rule with respect to the order n (argument 0)"),
    (lambda t: cr.special.polygamma(t, 1.5), "polygamma has no gradient rule with respect to the order n"),
    (lambda t: sp.iv(t, 1.5), "iv has no gradient rule with respect to the order v"),
    (lambda t: sp.betainc(t, 2.0, 0.5), "betainc has no gradient rule with respect to a (argument 0)"),
    (lambda t: sp.betainc(2.0, t, 0.5), "betainc has no gradient rule with respect to b (argument 1)"),
    (lambda t: sp.gammainc(t, 0.5), "gammainc has no gradient rule with respect to a"),
    (lambda t: sp.gammaincc(t, 0.5), "gammaincc has no gradient rule with respect to a"),
    (lambda t: cr.special.stdtr(t, 0.5), "stdtr has no gradient rule with respect to the degrees of freedom"),
])
def test_constant_arguments_refuse_a_gradient_at_the_call(call: Callable[..., Any], what: str) -> None:
    t = cr.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match=re.escape(what)):
        call(t)
    with cr.no_grad():  # no gradient asked: the values
        assert isinstance(call(t), cr.Tensor)
    assert np.all(np.isfinite(call(cr.tensor([1.0, 2.0])).data))  # a tensor that needs no gradient: fine


def test_constant_argument_refused_in_backward_too() -> None:
    """A gate applied directly (not through cr.special) still never drops the order's gradient silently."""
    from chainrule.tensor import apply

    n = cr.tensor(2.0, requires_grad=True)
    out = apply(cr.GATES["jn"], n, np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="no gradient rule with respect to the order n"):
        out.sum().backward()


def test_gammasgn_is_a_constant() -> None:
    x = cr.tensor([-1.5, 0.5, 2.0], requires_grad=True)
    out = sp.gammasgn(x)
    assert not out.requires_grad
    np.testing.assert_array_equal(out.data, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(cr.grad(lambda x: (x * sp.gammasgn(x)).sum())(np.array([-0.5, 1.0])), [-1.0, 1.0])


def test_unknown_scipy_ufunc_is_named_as_scipys() -> None:
    with pytest.raises(TypeError, match=r"scipy\.special\.kv is not supported .* no gradient rule"):
        sp.kv(1.0, cr.tensor([1.0, 2.0], requires_grad=True))
    np.testing.assert_allclose(sp.kv(1.0, cr.tensor([1.0, 2.0])), sp.kv(1.0, [1.0, 2.0]))  # no gradient: values


def test_scipy_ufuncs_are_found_by_identity() -> None:
    from chainrule.special import scipy_ufunc

    def erf(x: Any) -> Any:  # a ufunc that only looks like SciPy's
        return x

    assert scipy_ufunc(sp.erf) is cr.special.erf and scipy_ufunc(sp.jv) is cr.special.jn
    assert scipy_ufunc(sp.psi) is cr.special.digamma
    assert scipy_ufunc(np.exp) is None and scipy_ufunc(np.frompyfunc(erf, 1, 1)) is None


def test_keyword_arguments_as_in_scipy() -> None:
    x = np.array([0.5, 1.5])
    np.testing.assert_allclose(cr.special.erf(x, out=None).data, sp.erf(x))
    with pytest.raises(TypeError, match=r"scipy\.special\.erf: argument where=.* not supported"):
        cr.special.erf(x, where=x > 1)
    with pytest.raises(TypeError, match=r"scipy\.special\.jv: takes 2 array arguments, got 1"):
        cr.special.jn(x)


# ---- printing, generated code, compile ------------------------------------------------------------------


def _f(x: Any) -> Any:
    return (sp.erf(x) * sp.jn(2, x) + cr.special.gammainc(2.0, x) + sp.log_ndtr(-x)).sum()


def test_staged_text_generated_code_and_compile_agree() -> None:
    x = np.array([0.5, 1.0, 2.5])
    value, grad = cr.value_and_grad(_f)(x)
    g = cr.trace(_f, x=x)
    staged = g.staged()
    assert "erf(x)" in staged and "jn(2, x)" in staged and "gammainc(2, x)" in staged
    assert "2/√π·exp(−x²)" in g.table()  # the learner's line
    src = g.to_source("f")
    assert src.startswith("import numpy as np\nimport scipy.special\n") and "scipy.special.jv(2, x)" in src
    namespace: dict[str, Any] = {}
    exec(compile(src, "<generated>", "exec"), namespace)  # noqa: S102 - our own generated code
    out, dx = namespace["f"](x)
    np.testing.assert_allclose(out, value, rtol=1e-13)
    np.testing.assert_allclose(dx, grad, rtol=1e-12)
    fast_value, fast_grad = cr.compile(_f)(x)
    np.testing.assert_allclose(fast_value, value, rtol=1e-13)
    np.testing.assert_allclose(fast_grad, grad, rtol=1e-12)


def test_import_chainrule_does_not_import_scipy() -> None:
    code = ("import sys, numpy as np, chainrule as cr; cr.special; cr.signal; "
            "x = cr.tensor([1.0, 2.0], requires_grad=True); (np.exp(x) * 2).sum().backward(); "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_scipy_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy.special` now fails as if not installed
    monkeypatch.setitem(sys.modules, "scipy.special", None)
    with pytest.raises(ImportError, match="compute with SciPy, which is not installed: pip install scipy"):
        cr.special.erf(np.array([0.5]))
    with pytest.raises(ImportError, match="pip install scipy"):
        cr.grad(lambda x: cr.special.gammaln(x).sum())(np.array([1.5]))


# ---- an independent check of every rule: sympy's own derivative of the gate's exact form ------------------

_POINTS = {"polygamma": ("2", "7/5"), "jn": ("2", "7/5"), "yn": ("2", "7/5"), "iv": ("3/2", "7/5"),
           "ive": ("2", "-7/5"), "beta": ("7/5", "5/2"), "betaln": ("7/5", "5/2"), "betainc": ("5/2", "3/2", "2/5"),
           "gammainc": ("5/2", "7/5"), "gammaincc": ("5/2", "7/5"), "stdtr": ("5/2", "-7/5"),
           "erfinv": ("3/5",), "erfcinv": ("3/5",), "logit": ("3/10",), "gammasgn": ("-3/2",),
           "gammaln": ("-13/5",), "log_ndtr": ("-3",)}


@pytest.mark.parametrize("name", sorted(SCIPY_NAMES))
def test_value_and_rules_agree_with_sympys_exact_form(name: str) -> None:
    """SciPy's value equals the sympy twin's, and each differentiable input's local rule equals sympy's
    derivative of the twin (independent of the rule and of finite differences)."""
    sympy = pytest.importorskip("sympy")
    gate = cr.GATES[name]
    twin = sympy_twins(sympy)[name]
    point = [sympy.Rational(p) for p in _POINTS.get(name, ("7/5",))]
    values = [np.float64(float(p)) for p in point]
    out = gate.fn(*values)
    assert float(sympy.N(twin(*point), 30)) == pytest.approx(float(out), rel=1e-12, abs=1e-300)
    if not gate.differentiable:
        return
    symbols = sympy.symbols(f"a0:{len(point)}", real=True)
    for i, rule in enumerate(gate.local):
        if i in constant_inputs(gate):
            continue
        exact = sympy.diff(twin(*symbols), symbols[i]).subs(dict(zip(symbols, point)))
        local = rule(backend.array_ops, *values, out)
        assert float(sympy.N(exact, 30)) == pytest.approx(float(local), rel=1e-10), (name, i)


def test_incomplete_functions_at_the_edge_of_their_domain() -> None:
    """x⁰ is 1: gammainc(1, x) = 1 − e⁻ˣ has slope 1 at 0, betainc(1, 3, x) = 1 − (1 − x)³ slope 3 (no 0·ln 0)."""
    assert cr.grad(lambda x: sp.gammainc(1, x))(0.0) == pytest.approx(1.0, rel=1e-14)
    assert cr.grad(lambda x: sp.gammaincc(1.0, x))(0.0) == pytest.approx(-1.0, rel=1e-14)
    assert cr.grad(lambda x: sp.betainc(1.0, 3.0, x))(0.0) == pytest.approx(3.0, rel=1e-14)
    assert cr.grad(lambda x: sp.betainc(2.0, 1.0, x))(1.0) == pytest.approx(2.0, rel=1e-14)
    assert cr.grad(cr.grad(lambda x: sp.gammainc(1, x)))(0.0) == pytest.approx(-1.0, rel=1e-14)
