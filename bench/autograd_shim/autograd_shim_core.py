"""The machinery of the autograd shim: HIPS autograd's differential operators and its gradient check
mapped onto chainrule's public API (``cr.grad``, ``cr.value_and_grad``, ``cr.vjp``), every check recorded.

``bench/autograd_suite.py`` puts this folder first on ``sys.path`` of a child pytest process, so the
package ``autograd`` beside this file shadows the real one and autograd's own tests, unchanged, call
chainrule. Nothing here is autograd's code: the check is written again from autograd's published method
(compare ``vjp(w) . u`` with the central difference of ``f`` along a random direction ``u``).

Outcomes of one gradient check: ``pass``; ``wrong`` (the numbers disagree: a wrong gradient);
``missing`` (chainrule raised its "not supported" / "no gradient rule" TypeError, or a Tensor lacks an
ndarray method); ``unmappable`` (complex numbers, gradients with respect to containers, forward mode
until chainrule has ``cr.jvp``, autograd's custom primitives: counted apart, never as chainrule's
failure); ``error`` (anything else, with its type and message).
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EPS = 1e-6  # central-difference step (x ± EPS·u), float64
RTOL = 1e-5  # a check passes when |analytic − numeric| <= ATOL + RTOL · max(|analytic|, |numeric|)
ATOL = 1e-6
NOTE = "autograd-shim: called on tensors: "  # note added to an error raised inside a wrapped SciPy function
RECORDS_ENV = "AUTOGRAD_SHIM_RECORDS"


class Unmappable(Exception):
    """A part of autograd's API chainrule cannot express: counted apart, never as chainrule's failure.

    Deliberately not a TypeError, so a test's ``pytest.raises(TypeError)`` never swallows it.
    """


def engine() -> Any:
    """chainrule itself (imported on first use, so importing the shim stays cheap)."""
    import chainrule

    return chainrule


def is_tensor(x: Any) -> bool:
    return builtins.isinstance(x, engine().Tensor)


def getval(x: Any) -> Any:
    """The plain value under a chainrule tensor (autograd's ``getval`` of a box)."""
    return x.data if is_tensor(x) else x


# ---------------------------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Every check and test outcome, kept in memory and appended as JSON lines to $AUTOGRAD_SHIM_RECORDS."""

    def __init__(self) -> None:
        self.path = os.environ.get(RECORDS_ENV)
        self.records: list[dict[str, Any]] = []
        self.test: str | None = None
        self.reached: set[str | None] = set()  # tests that called into chainrule through the shim
        self._seeds = itertools.count(20261127)

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec = {"kind": kind, "test": self.test, **fields}
        self.records.append(rec)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, default=_jsonable) + "\n")
        return rec

    def touch(self) -> None:
        """Note that the running test called one of the shim's chainrule entry points."""
        self.reached.add(self.test)

    def checks(self, test: str | None) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == "check" and r["test"] == test]

    def rng(self) -> np.random.Generator:
        """A fresh generator per check call: directions never depend on the test's global random state."""
        return np.random.default_rng(next(self._seeds))


RECORDER = Recorder()


def _jsonable(x: Any) -> Any:
    if builtins.isinstance(x, np.generic):
        return x.item()
    if builtins.isinstance(x, np.ndarray):
        return x.tolist()
    return repr(x)


# ---------------------------------------------------------------------------------------------
# classifying what went wrong
# ---------------------------------------------------------------------------------------------

_MISSING = re.compile(r"not supported|no gradient rule", re.IGNORECASE)
_REFUSED = re.compile(r"into a plain NumPy array|would drop its gradient")
_NO_METHOD = re.compile(r"'Tensor' object has no attribute '(\w+)'")
_NO_OPERATOR = re.compile(r"unsupported operand type\(s\) for ([^:]+): '(?:Tensor|\w+)' and '(?:Tensor|\w+)'")


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shim_note(exc: BaseException) -> str | None:
    """The SciPy function (``scipy.stats.norm.pdf``) inside which ``exc`` was raised on tensors, if any."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(NOTE):
            return note[len(NOTE):]
    return None


def classify(exc: BaseException) -> dict[str, Any]:
    """``{"outcome": ..., ...}`` for an exception raised while chainrule differentiated something."""
    if builtins.isinstance(exc, Unmappable):
        return {"outcome": "unmappable", "reason": one_line(exc)}
    msg = one_line(exc)
    note = shim_note(exc)
    if builtins.isinstance(exc, TypeError) and (_MISSING.search(msg) or (note and _REFUSED.search(msg))):
        return {"outcome": "missing", "name": missing_name(msg, note), "message": msg}
    m = _NO_METHOD.search(msg)
    if builtins.isinstance(exc, AttributeError) and m:
        return {"outcome": "missing", "name": f"Tensor.{m.group(1)}", "message": msg}
    m = _NO_OPERATOR.search(msg)
    if builtins.isinstance(exc, TypeError) and m:
        return {"outcome": "missing", "name": f"Tensor operator {m.group(1)}", "message": msg}
    return {"outcome": "error", "type": type(exc).__name__, "message": msg, "where": culprit(exc)}


def culprit(exc: BaseException) -> str:
    """Who called into chainrule when ``exc`` was raised: a NumPy/SciPy function (``numpy.lib._index_tricks_impl
    .__getitem__``: ``np.r_``), or ``user code`` (a C function such as ``np.array`` called from the test)."""
    import traceback

    pkg = os.path.dirname(os.path.abspath(engine().__file__)) + os.sep
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [os.path.abspath(f.filename).startswith(pkg) for f in frames]
    if True not in inside:
        return "user code"
    i = len(inside) - 1 - inside[::-1].index(True)  # the innermost run of chainrule's frames...
    while i > 0 and inside[i - 1]:
        i -= 1
    if i == 0:
        return "chainrule"
    caller = frames[i - 1]  # ...and who called into it
    path = os.path.abspath(caller.filename)
    for lib in ("numpy", "scipy"):
        marker = f"{os.sep}{lib}{os.sep}"
        if marker in path:
            module = path.split(marker, 1)[1].removesuffix(".py").replace(os.sep, ".")
            return f"{lib}.{module}.{caller.name}"
    return "user code"


def missing_name(msg: str, note: str | None = None) -> str:
    """The NumPy (or SciPy) function a "not supported" message names: ``np.prod``, ``np.add.reduce``,
    ``np.sum(dtype=)``, ``scipy.special.gammaln``."""
    if note:
        return note
    m = re.search(r"\bnp(?:\.\w+)+", msg)
    if m:
        name = m.group(0)
        kw = re.search(r"argument\(s\) ([\w, ]+?) (?:are|is) not supported", msg)
        if kw:
            name += "(" + ", ".join(f"{k.strip()}=" for k in kw.group(1).split(",")) + ")"
        parts = name.split(".")
        if len(parts) == 2 and not hasattr(np, parts[1].split("(")[0]):
            try:
                import scipy.special
            except ImportError:
                return name
            if hasattr(scipy.special, parts[1]):
                name = f"scipy.special.{parts[1]}"  # a SciPy ufunc reaches chainrule as np.<name>
        return name
    m = re.match(r"\s*(.+?) (?:is|are) not supported", msg)
    return (m.group(1) if m else msg)[:80]


# ---------------------------------------------------------------------------------------------
# autograd's differential operators on chainrule
# ---------------------------------------------------------------------------------------------


def argnums(argnum: Any) -> tuple[tuple[int, ...], bool]:
    """autograd's ``argnum`` (an int, or a list/tuple of ints) as (tuple, single)."""
    if builtins.isinstance(argnum, (list, tuple)):
        return tuple(argnum), False
    return (argnum,), True


def unmappable_input(x: Any) -> str | None:
    """Why an argument to differentiate cannot go to chainrule, or None."""
    if builtins.isinstance(x, (tuple, list, dict)):
        return f"gradient with respect to a {type(x).__name__} (containers are autograd's, not chainrule's)"
    try:
        if np.iscomplexobj(getval(x)):
            return "complex input"
    except Exception:  # an object NumPy cannot read: chainrule will say what is wrong with it
        return None
    return None


def refuse_inputs(args: Sequence[Any], nums: Sequence[int], who: str) -> None:
    """Every mapped operator starts here: note that chainrule is reached, refuse what cannot map."""
    RECORDER.touch()
    for i in nums:
        reason = unmappable_input(args[i]) if -len(args) <= i < len(args) else None
        if reason:
            raise Unmappable(f"{who}: {reason} (argument {i})")


def substitute(args: Sequence[Any], nums: Sequence[int], values: Sequence[Any]) -> list[Any]:
    out = list(args)
    for i, v in zip(nums, values):
        out[i] = v
    return out


def _name(wrapper: Callable[..., Any], op: str, fun: Callable[..., Any], argnum: Any) -> None:
    fname = getattr(fun, "__name__", "[unknown name]")
    wrapper.__name__ = f"{op}_of_{fname}_wrt_argnum_{argnum}"
    wrapper.__doc__ = f"    {op} of function {fname} with respect to argument number {argnum} (chainrule's)."


def _functional(op: str) -> Callable[..., Callable[..., Any]]:
    """autograd's ``grad`` / ``value_and_grad`` as chainrule's function of the same name (a list of argnums
    gives a tuple of gradients, as in autograd)."""

    def operator(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
        nums, single = argnums(argnum)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            refuse_inputs(args, nums, op)
            return getattr(engine(), op)(fun, argnums=nums[0] if single else nums)(*args, **kwargs)

        _name(wrapped, op, fun, argnum)
        return wrapped

    operator.__name__ = op
    operator.__doc__ = f"autograd's ``{op}`` as ``cr.{op}``."
    return operator


grad = _functional("grad")
value_and_grad = _functional("value_and_grad")


def elementwise_grad(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
    """autograd's ``elementwise_grad`` (the VJP with ones): ``cr.grad``, which differentiates the sum."""
    g = grad(fun, argnum)
    _name(g, "elementwise_grad", fun, argnum)
    return g


def holomorphic_grad(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
    """Complex inputs are unmappable; for real inputs a holomorphic gradient is the ordinary one."""
    g = grad(fun, argnum)
    _name(g, "holomorphic_grad", fun, argnum)
    return g


def make_vjp(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., tuple[Any, Any]]:
    """autograd's ``make_vjp(fun, argnum)(*args) -> (vjp, ans)`` as ``cr.vjp``."""
    nums, single = argnums(argnum)

    def vjp_maker(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        refuse_inputs(args, nums, "make_vjp")

        def f(*xs: Any) -> Any:
            return fun(*substitute(args, nums, xs), **kwargs)

        ans, pull = engine().vjp(f, *[args[i] for i in nums])

        def vjp(g: Any) -> Any:
            gs = pull(g)
            return gs[0] if single else tuple(gs)

        return vjp, ans

    return vjp_maker


def make_vjp_unary(fun: Callable[..., Any], x: Any) -> tuple[Any, Any]:
    """``autograd.core.make_vjp(fun, x) -> (vjp, ans)`` for a one-argument ``fun``."""
    return make_vjp(fun, 0)(x)


def deriv(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
    """autograd's ``deriv`` (forward mode with tangent 1): ``cr.jvp`` when chainrule has it; otherwise, for a
    scalar input and a one-element output, the same number by reverse mode; else unmappable."""
    nums, single = argnums(argnum)
    if not single:
        raise Unmappable("deriv with several argnums is forward mode over a tuple")
    i = nums[0]

    def derivfun(*args: Any, **kwargs: Any) -> Any:
        refuse_inputs(args, nums, "deriv")
        cr = engine()

        def f(x: Any) -> Any:
            return fun(*substitute(args, nums, [x]), **kwargs)

        x = args[i]
        if hasattr(cr, "jvp"):
            return jvp_call(f, [x], [np.ones_like(np.asarray(getval(x), dtype=np.float64))])[1]
        if np.ndim(getval(x)) != 0:
            raise Unmappable("deriv of a non-scalar input is forward mode (chainrule has no cr.jvp)")
        ans, pull = cr.vjp(f, x)
        if np.size(getval(ans)) != 1:
            raise Unmappable("deriv of a non-scalar output is forward mode (chainrule has no cr.jvp)")
        return pull(np.ones(np.shape(getval(ans))))[0]

    _name(derivfun, "deriv", fun, argnum)
    return derivfun


def jvp_call(f: Callable[..., Any], xs: Sequence[Any], ts: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode through chainrule's ``cr.jvp``, assumed JAX-style: ``cr.jvp(f, primals, tangents)``
    returning ``(out, tangent_out)``. Only reached when chainrule has a ``jvp`` attribute."""
    cr = engine()
    return cr.jvp(f, tuple(xs), tuple(ts))


def make_jvp(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
    """autograd's ``make_jvp(fun, argnum)(*args)(v) -> (ans, jvp)``: ``cr.jvp`` if present, else unmappable."""
    nums, single = argnums(argnum)

    def jvp_maker(*args: Any, **kwargs: Any) -> Callable[[Any], tuple[Any, Any]]:
        if not hasattr(engine(), "jvp"):
            raise Unmappable("make_jvp is forward mode (chainrule has no cr.jvp)")
        refuse_inputs(args, nums, "make_jvp")

        def f(*xs: Any) -> Any:
            return fun(*substitute(args, nums, xs), **kwargs)

        def jvp(v: Any) -> tuple[Any, Any]:
            return jvp_call(f, [args[i] for i in nums], [v] if single else list(v))

        return jvp

    return jvp_maker


def tensor_jacobian_product(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., Any]:
    """``f(*args, vector)``: the VJP with ``vector`` when it is shaped like the output (``cr.vjp``); a
    vector over fewer axes makes a Jacobian, which is unmappable."""
    nums, single = argnums(argnum)

    def vector_dot_fun(*args_and_vector: Any, **kwargs: Any) -> Any:
        args, vector = args_and_vector[:-1], args_and_vector[-1]
        refuse_inputs(args, nums, "tensor_jacobian_product")

        def f(*xs: Any) -> Any:
            return fun(*substitute(args, nums, xs), **kwargs)

        ans, pull = engine().vjp(f, *[args[i] for i in nums])
        if np.shape(getval(vector)) != np.shape(getval(ans)):
            raise Unmappable("tensor_jacobian_product over part of the output's axes is a Jacobian")
        gs = pull(vector)
        return gs[0] if single else tuple(gs)

    return vector_dot_fun


def grad_and_aux(fun: Callable[..., Any], argnum: Any = 0) -> Callable[..., tuple[Any, Any]]:
    """``fun`` returns ``(value, aux)``: the gradient of the value (``cr.grad``) and ``aux``'s plain values."""
    nums, single = argnums(argnum)

    def gafun(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        refuse_inputs(args, nums, "grad_and_aux")
        aux: list[Any] = []

        def main(*a: Any, **k: Any) -> Any:
            value, extra = fun(*a, **k)
            aux.append(extra)
            return value

        g = engine().grad(main, argnums=nums[0] if single else nums)(*args, **kwargs)
        return g, _plain(aux[-1])

    return gafun


def checkpoint(fun: Callable[..., Any]) -> Callable[..., Any]:
    """autograd's ``checkpoint`` only saves memory (recomputes in backward); the gradient is ``fun``'s own."""
    return fun


def unmappable_operator(name: str, why: str) -> Callable[..., Any]:
    """An autograd operator chainrule has no counterpart for: calling its result raises Unmappable."""

    def operator(*_: Any, **__: Any) -> Callable[..., Any]:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            raise Unmappable(f"{name}: {why}")

        return raiser

    operator.__name__ = name
    operator.__doc__ = f"Unmappable onto chainrule: {why}."
    return operator


def _plain(x: Any) -> Any:
    if builtins.isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if builtins.isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return getval(x)


def unary_to_nary(unary_operator: Callable[..., Any]) -> Callable[..., Any]:
    """autograd's decorator: an operator on ``(fun, x)`` becomes ``op(fun, argnum=0, ...)(*args, **kwargs)``."""

    @functools.wraps(unary_operator)
    def nary_operator(fun: Callable[..., Any], argnum: Any = 0, *op_args: Any, **op_kwargs: Any) -> Any:
        nums, single = argnums(argnum)

        @functools.wraps(fun)
        def nary_f(*args: Any, **kwargs: Any) -> Any:
            def unary_f(x: Any) -> Any:
                return fun(*substitute(args, nums, [x] if single else x), **kwargs)

            x = args[nums[0]] if single else tuple(args[i] for i in nums)
            return unary_operator(unary_f, x, *op_args, **op_kwargs)

        return nary_f

    return nary_operator


# ---------------------------------------------------------------------------------------------
# custom primitives (autograd.extend): not mapped onto cr.gate (chainrule's own gates-you-define API) here
# ---------------------------------------------------------------------------------------------


def holds_tensor(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    vals = list(args) + list(kwargs.values())
    for v in vals:
        if builtins.isinstance(v, (list, tuple)):
            vals.extend(v)
        elif is_tensor(v):
            return True
    return False


class Primitive:
    """An autograd primitive: runs on plain values; differentiating it is unmappable (its VJPs are kept
    only so autograd's registration calls succeed)."""

    def __init__(self, fun: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.registered: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if holds_tensor(args, kwargs):
            raise Unmappable(f"custom primitive {getattr(self.fun, '__name__', '?')}: autograd's defvjp is not "
                             "mapped onto cr.gate by this shim")
        return self.fun(*args, **kwargs)

    def defgrad(self, *rules: Any, **kw: Any) -> None:
        self.registered.append(("defgrad", rules, kw))

    def defvjp(self, *rules: Any, **kw: Any) -> None:
        self.registered.append(("defvjp", rules, kw))

    def defvjp_is_zero(self, *rules: Any, **kw: Any) -> None:
        self.registered.append(("defvjp_is_zero", rules, kw))


def primitive(fun: Callable[..., Any]) -> Primitive:
    return Primitive(fun)


def register(kind: str) -> Callable[..., None]:
    """autograd's ``defvjp``/``defjvp``/...: remembered on the primitive (differentiating it stays unmappable)."""

    def define(prim: Any, *rules: Any, **kw: Any) -> None:
        if builtins.isinstance(prim, Primitive):
            prim.registered.append((kind, rules, kw))

    define.__name__ = kind
    return define


def notrace_primitive(fun: Callable[..., Any]) -> Callable[..., Any]:
    """A function without gradient: called on the plain values of any tensors."""

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fun(*[getval(a) for a in args], **{k: getval(v) for k, v in kwargs.items()})

    return wrapped


# ---------------------------------------------------------------------------------------------
# the gradient check
# ---------------------------------------------------------------------------------------------


def plan(modes: Sequence[str], order: int) -> list[tuple[str, ...]]:
    """The checks autograd's ``check_grads`` makes, in its order: each mode at order 1, and for order 2
    each mode applied to the function each mode derived (``rev>rev`` checks the VJP of the VJP)."""
    paths: list[tuple[str, ...]] = []

    def walk(prefix: tuple[str, ...], k: int) -> None:
        for m in modes:
            paths.append(prefix + (m,))
            if k > 1:
                walk(prefix + (m,), k - 1)

    walk((), order)
    return paths


def _as_float(x: Any) -> Any:
    x = getval(x)
    if builtins.isinstance(x, (bool, int, float)):
        return float(x)
    if builtins.isinstance(x, np.generic):
        return np.float64(x)
    return np.array(x, dtype=np.float64)


def _shift(x: Any, d: np.ndarray) -> Any:
    if builtins.isinstance(x, float):
        return float(x + d)
    return np.asarray(x, dtype=np.float64) + d


def outputs(y: Any) -> tuple[list[np.ndarray], bool]:
    """A function's plain output as a list of float arrays, and whether it was a tuple/list of them."""
    if builtins.isinstance(y, dict):
        raise Unmappable("a dict output (containers are autograd's, not chainrule's)")
    multi = builtins.isinstance(y, (tuple, list))
    return [_out_array(v) for v in (y if multi else [y])], multi


def _out_array(v: Any) -> np.ndarray:
    a = np.asarray(getval(v))
    if a.dtype.kind == "c":
        raise Unmappable("complex output")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"the function returned an output of dtype {a.dtype}, not numbers")
    return a.astype(np.float64)


def vjp_of(fn: Callable[..., Any], xs: Sequence[Any], cots: Sequence[Any], multi: bool) -> tuple[Any, ...]:
    """The VJP of ``fn`` at ``xs`` with cotangents ``cots``: ``cr.vjp`` for one output, ``cr.grad`` of
    ``Σ_j <cot_j, out_j>`` for a tuple of outputs. Nested inside an outer chainrule differentiation
    (``xs`` and ``cots`` are tensors there) the result stays connected to the outer graph."""
    cr = engine()
    if not multi:
        _, pull = cr.vjp(fn, *xs)
        return tuple(pull(cots[0]))

    def weighted(*a: Any) -> Any:
        total: Any = 0.0
        for y, c in zip(fn(*a), cots):
            total = total + (y * c).sum()  # the method: any engine's traced value has one
        return total

    g = cr.grad(weighted, argnums=tuple(range(len(xs))))(*xs)
    return tuple(g)


def _derive(fn: Callable[..., Any], ins: list[Any], step: str,
            rng: np.random.Generator) -> tuple[Callable[..., Any], list[Any]]:
    """autograd's order-2 construction: ``g(x, v) = vjp_f(x)(v)`` (rev) or ``jvp_f(x)(v)`` (fwd), with a
    random ``v``; the next check differentiates ``g`` with respect to both ``x`` and ``v``."""
    outs, multi = outputs(fn(*ins))
    n = len(ins)
    if step == "rev":
        extra = [rng.standard_normal(o.shape) for o in outs]

        def g(*a: Any) -> Any:
            res = vjp_of(fn, a[:n], a[n:], multi)
            return res[0] if n == 1 else res
    else:
        extra = [rng.standard_normal(np.shape(x)) for x in ins]

        def g(*a: Any) -> Any:
            return jvp_call(fn, a[:n], a[n:])[1]

    g.__name__ = f"{step}_of_{getattr(fn, '__name__', 'f')}"
    return g, list(ins) + extra


def _vdot(a: Any, b: Any) -> float:
    return float(np.sum(np.asarray(getval(a), dtype=np.float64) * np.asarray(getval(b), dtype=np.float64)))


def check_path(h: Callable[..., Any], xs: list[Any], path: tuple[str, ...],
               rng: np.random.Generator) -> tuple[float, float]:
    """(analytic, numeric) directional derivatives for one check: ``path[:-1]`` builds the derived function,
    ``path[-1]`` is the mode that checks it."""
    fn, ins = h, list(xs)
    for step in path[:-1]:
        fn, ins = _derive(fn, ins, step, rng)
    outs, multi = outputs(fn(*ins))
    w = [rng.standard_normal(o.shape) for o in outs]
    u = [rng.standard_normal(np.shape(x)) for x in ins]
    plus, _ = outputs(fn(*[_shift(x, EPS * d) for x, d in zip(ins, u)]))
    minus, _ = outputs(fn(*[_shift(x, -EPS * d) for x, d in zip(ins, u)]))
    numeric = builtins.sum(_vdot(wj, (p - m) / (2 * EPS)) for wj, p, m in zip(w, plus, minus))
    if path[-1] == "rev":
        g = vjp_of(fn, ins, w, multi)
        analytic = builtins.sum(_vdot(ui, gi) for ui, gi in zip(u, g))
    else:
        tangent = jvp_call(fn, ins, u)[1]
        touts, _ = outputs(tangent)
        analytic = builtins.sum(_vdot(wj, tj) for wj, tj in zip(w, touts))
    return analytic, numeric


def compare(analytic: float, numeric: float, order: int = 1) -> dict[str, Any]:
    if not np.isfinite(numeric):
        why = ("the central difference is not finite at these inputs" if order == 1 else
               "the central difference of chainrule's own lower-order derivative is not finite (that derivative "
               "is NaN or infinite here)")
        return {"outcome": "error", "type": "NumericalDerivative", "message": why}
    scale = max(abs(analytic), abs(numeric)) if np.isfinite(analytic) else abs(numeric)
    diff = abs(analytic - numeric) if np.isfinite(analytic) else float("inf")
    rel = diff / scale if scale else (0.0 if diff == 0 else float("inf"))
    ok = diff <= ATOL + RTOL * scale
    return {"outcome": "pass" if ok else "wrong", "analytic": analytic, "numeric": numeric, "rel_error": rel}


def _shape(x: Any) -> Any:
    if builtins.isinstance(x, (tuple, list, dict)):
        return type(x).__name__
    try:
        return list(np.shape(getval(x)))
    except Exception:
        return type(x).__name__


def _short(kwargs: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return text if len(text) <= 120 else text[:119] + "…"


def check_grads(fun: Callable[..., Any], argnum: Any = 0, modes: Sequence[str] | None = None,
                order: int = 2) -> Callable[..., None]:
    """autograd's ``check_grads(fun, argnum, modes, order)(*args, **kwargs)`` against chainrule.

    Every check of the plan is run and recorded (one failing check does not hide the next); the test is
    marked failed afterwards by the pytest plugin when any real-valued check did not pass.
    """
    modes = list(modes) if modes is not None else ["fwd", "rev"]

    def checker(*args: Any, **kwargs: Any) -> None:
        run_checks(fun, argnum, modes, order, args, kwargs)

    return checker


def run_checks(fun: Callable[..., Any], argnum: Any, modes: Sequence[str], order: int,
               args: Sequence[Any], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    nums, _ = argnums(argnum)
    info = {"function": getattr(fun, "__name__", type(fun).__name__), "argnums": list(nums),
            "shapes": [_shape(args[i]) for i in nums], "kwargs": _short(kwargs)}
    paths = plan(modes, order)
    done: list[dict[str, Any]] = []

    def put(path: tuple[str, ...], **result: Any) -> None:
        done.append(RECORDER.add("check", order=len(path), mode=">".join(path), **info, **result))

    RECORDER.touch()
    reason = next((r for r in (unmappable_input(args[i]) for i in nums) if r), None)
    if reason:
        for p in paths:
            put(p, outcome="unmappable", reason=reason)
        return done
    xs = [_as_float(args[i]) for i in nums]

    def h(*values: Any) -> Any:
        return fun(*substitute(args, nums, values), **kwargs)

    h.__name__ = info["function"]
    has_jvp = hasattr(engine(), "jvp")
    no_jvp = {"outcome": "unmappable", "reason": "forward mode (chainrule has no cr.jvp)"}
    try:
        outputs(h(*xs))
    except Exception as e:  # on plain inputs: complex, or failing (in chainrule when the function calls grad)
        c = {**classify(e), "stage": "evaluating the function at plain NumPy inputs"}
        for p in paths:
            put(p, **(no_jvp if "fwd" in p and not has_jvp else c))
        return done
    for p in paths:
        if "fwd" in p and not has_jvp:
            put(p, **no_jvp)
            continue
        try:
            analytic, numeric = check_path(h, xs, p, RECORDER.rng())
        except Exception as e:
            put(p, **classify(e))
            continue
        put(p, **compare(analytic, numeric, len(p)))
    return done


def combo_check(fun: Callable[..., Any], *check_args: Any, **check_kwargs: Any) -> Callable[..., None]:
    """autograd's ``combo_check``: ``check_grads`` at every combination of the listed args and kwargs."""

    def run(*arg_lists: Any, **kwarg_lists: Any) -> None:
        keyed = [[(k, v) for v in vs] for k, vs in kwarg_lists.items()]
        for args in itertools.product(*arg_lists):
            for kws in itertools.product(*keyed):
                check_grads(fun, *check_args, **check_kwargs)(*args, **dict(kws))

    return run


def scalar_close(a: Any, b: Any, tol: float = 1e-6) -> bool:
    a, b = getval(a), getval(b)
    return bool(abs(a - b) < tol or abs(a - b) / abs(a + b) < tol)


def check_equivalent(x: Any, y: Any) -> None:
    """Same structure, same shapes, same values (rtol 1e-5, atol 1e-6)."""
    x, y = _plain(x), _plain(y)
    if builtins.isinstance(x, (tuple, list)) or builtins.isinstance(y, (tuple, list)):
        assert builtins.isinstance(y, (tuple, list)) and len(x) == len(y), f"Structure mismatch:\nx: {x}\ny: {y}"
        for a, b in zip(x, y):
            check_equivalent(a, b)
        return
    if builtins.isinstance(x, dict) or builtins.isinstance(y, dict):
        assert builtins.isinstance(y, dict) and builtins.isinstance(x, dict) and x.keys() == y.keys(), \
            f"Structure mismatch:\nx: {x}\ny: {y}"
        for k in x:
            check_equivalent(x[k], y[k])
        return
    assert np.shape(x) == np.shape(y), f"Shape mismatch:\nx: {np.shape(x)}\ny: {np.shape(y)}"
    assert np.allclose(x, y, rtol=1e-5, atol=1e-6), f"Value mismatch:\nx: {x}\ny: {y}"
