"""Gates you define: your function and your hand-written backward pass, as one gate of the table.

The course exercise "implement ``affine_backward``, then plug it into a network"::

    @cr.gate(explain="affine layer: x @ w + b")
    def affine(x, w, b):
        return x @ w + b

    @affine.vjp
    def affine_vjp(g, x, w, b, out):
        return g @ w.T, x.T @ g, g.sum(axis=0)

``affine(x, w, b)`` on tensors is recorded as one node named ``affine``, drawn and staged under that
name, with your explanation in the table. The forward runs on the values (nothing inside it is
recorded). The backward calls your ``vjp`` with the upstream gradient ``g``, the inputs and the
output: on arrays for gradients, on tensors when a graph of the backward pass is needed
(``create_graph``, higher derivatives) — written with NumPy's or chainrule's functions it then
differentiates again. ``check=True`` compares your backward (and your ``jvp``, if you give one) with
central differences on the first call and raises :class:`~chainrule.GradcheckError` naming the wrong
input; every call is checked until one passes. Keywords and defaults bind as in Python. Forward mode uses your
``jvp`` if you give one (``@affine.jvp``: ``(tangents, *inputs, out) -> tangent``), else it
transposes your vjp (exact, since a vjp is linear in ``g``). ``Graph.to_source`` writes your two
functions into the generated code and calls them; ``cr.compile`` does not run gates you defined.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from .gates import Gate, register, shape_of
from .tensor import Tensor, apply

__all__ = ["gate", "UserGate", "USER_CALLS"]

#: the functions of gates you defined, by the name generated code calls them (the gate's and its
#: vjp's): generated code includes their source
USER_CALLS: dict[str, Callable[[], str]] = {}


class UserGate:
    """A function of yours that is one gate of the table (made by :func:`gate`)."""

    def __init__(self, fn: Callable[..., Any], name: str | None, explain: str | None, check: bool) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.inputs = [p.name for p in params]
        self._signature = inspect.Signature(params)
        self.check = check
        self._vjp: Callable[..., Any] | None = None
        self._jvp: Callable[..., Any] | None = None
        self._checked = False
        from .gates import GATES

        known = GATES.get(self.name)
        if known is not None and known.kind != "custom":
            # replacing a gate of the table would change what np.square, cr.exp, ... compute everywhere
            raise ValueError(f"{self.name!r} is a gate of chainrule's table ({known.explain}); give yours "
                             f"another name: @cr.gate(name='my_{self.name}') or rename the function")
        placeholders = ", ".join("{" + str(i) + "}" for i in range(len(self.inputs)))
        self.entry = Gate(
            self.name, _forward_of(self), explain or f"{self.name} gate (defined by you)",
            f"{self.name}({placeholders})", kind="custom", vjp=self._pull, jvp=self._push, arity=len(self.inputs),
            numpy=(), code=f"{self.name}({placeholders})")
        register(self.entry)
        USER_CALLS[self.name] = lambda: _plain_source(self.fn)
        functools.update_wrapper(self, fn)

    # ---- decorators for the derivative rules -----------------------------------------------------
    def vjp(self, rule: Callable[..., Any]) -> Callable[..., Any]:
        """Register the backward rule ``rule(g, *inputs, out) -> one gradient per input`` (None for an
        input that gets none)."""
        self._vjp = rule
        self._checked = False
        USER_CALLS[rule.__name__] = lambda: _plain_source(rule)
        return rule

    def jvp(self, rule: Callable[..., Any]) -> Callable[..., Any]:
        """Register a forward-mode rule ``rule(tangents, *inputs, out) -> tangent of out`` (``tangents``
        holds None for inputs without a tangent)."""
        self._jvp = rule
        self._checked = False
        return rule

    # ---- calling -------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        args = self._positional(args, kwargs)
        if self._vjp is None:
            raise TypeError(f"{self.name}: give its backward rule first (@{self.name}.vjp)")
        if self.check and not self._checked:
            self.gradcheck(*args)
            self._checked = True  # only once it passed: a failed check is raised again at the next call
        return apply(self.entry, *args)

    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The inputs in the function's order: keywords and defaults bound as Python binds them."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.name} takes {len(self.inputs)} inputs ({', '.join(self.inputs)}): {e}") from None
        bound.apply_defaults()
        return tuple(bound.arguments[n] for n in self.inputs)

    def gradcheck(self, *args: Any, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7) -> bool:
        """Compare the backward rule with central differences of the forward at ``args`` (float64),
        along a random upstream gradient; raise :class:`~chainrule.GradcheckError` naming the input
        whose gradient is wrong."""
        from .check import GradcheckError

        arrays = [np.array(a.data if isinstance(a, Tensor) else a, dtype=np.float64) for a in args]
        out = np.asarray(self.fn(*arrays), dtype=np.float64)
        g = np.random.default_rng(0).standard_normal(out.shape)
        got = _as_tuple(self._vjp(g, *arrays, out), len(arrays), self.name)
        for k, (a, gk) in enumerate(zip(arrays, got)):
            if gk is None or a.dtype.kind != "f":
                continue
            gk = np.asarray(gk, dtype=np.float64)
            if gk.shape != a.shape:
                raise GradcheckError(f"{self.name}: the backward rule's gradient for input {k} "
                                     f"({self.inputs[k]!r}) has shape {gk.shape}, the input has {a.shape}")
            numeric = np.zeros_like(a)
            for idx in np.ndindex(a.shape):
                old = a[idx]
                a[idx] = old + eps
                up = np.sum(g * np.asarray(self.fn(*arrays)))
                a[idx] = old - eps
                down = np.sum(g * np.asarray(self.fn(*arrays)))
                a[idx] = old
                numeric[idx] = (up - down) / (2 * eps)
            _agree(gk, numeric, rtol, atol,
                   f"{self.name}: the backward rule's gradient for input {k} ({self.inputs[k]!r}) is wrong: at")
        if self._jvp is not None:
            self._check_jvp(arrays, out, eps, rtol, atol)
        return True

    def _check_jvp(self, arrays: list[np.ndarray], out: np.ndarray, eps: float, rtol: float, atol: float) -> None:
        """Compare the forward-mode rule with central differences along random tangents."""
        from .check import GradcheckError

        rng = np.random.default_rng(1)
        tangents = [rng.standard_normal(a.shape) if a.dtype.kind == "f" else None for a in arrays]
        got = np.asarray(self._jvp(tangents, *arrays, out), dtype=np.float64)
        if got.shape != out.shape:
            raise GradcheckError(f"{self.name}: the forward-mode rule's tangent has shape {got.shape}, "
                                 f"the output has {out.shape}")

        def moved(step: float) -> list[np.ndarray]:
            return [a + step * t if t is not None else a for a, t in zip(arrays, tangents)]

        numeric = (np.asarray(self.fn(*moved(eps)), dtype=np.float64)
                   - np.asarray(self.fn(*moved(-eps)), dtype=np.float64)) / (2 * eps)
        _agree(got, numeric, rtol, atol, f"{self.name}: the forward-mode rule (@{self.name}.jvp) is wrong: "
               "at the output's")

    # ---- the rules as the engine calls them ----------------------------------------------------------
    def _pull(self, m: Any, g: Any, *args: Any) -> tuple[Any, ...]:
        *inputs, out, needs = args
        if getattr(m, "namespace_kind", "arrays") == "symbolic":
            from .symbolic import call

            res = call(f"{self.vjp_name}", g, *inputs, out)
            return tuple(res[k] if need else None for k, need in enumerate(needs))
        got = _as_tuple(self._vjp(g, *inputs, out), len(inputs), self.name)
        grads = []
        for k, (x, gk, need) in enumerate(zip(inputs, got, needs)):
            if not need or gk is None:
                grads.append(None)
                continue
            if tuple(shape_of(gk)) != tuple(shape_of(x)):
                raise ValueError(f"{self.name}: the backward rule's gradient for input {k} ({self.inputs[k]!r}) "
                                 f"has shape {tuple(shape_of(gk))}, the input has {tuple(shape_of(x))}")
            grads.append(gk)
        return tuple(grads)

    def _push(self, m: Any, tangents: Any, *args: Any) -> Any:
        *inputs, out = args
        if self._jvp is not None:
            return self._jvp(tangents, *inputs, out)
        from .gates.core import transposed_jvp

        return transposed_jvp(self.entry, m, tangents, inputs, out, {})

    @property
    def vjp_name(self) -> str:
        return self._vjp.__name__ if self._vjp is not None else f"{self.name}_vjp"

def _agree(got: np.ndarray, numeric: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """Raise :class:`~chainrule.GradcheckError` (``what``, then the first element that disagrees) unless
    a rule's values agree with central differences."""
    from .check import GradcheckError

    bad = ~np.isclose(got, numeric, rtol=rtol, atol=atol * max(1.0, float(np.abs(numeric).max(initial=0))))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise GradcheckError(f"{what} {list(idx)} it gives {got[idx]:.10g}, central differences give "
                             f"{numeric[idx]:.10g} ({int(bad.sum())} of {bad.size} elements disagree)")


def _forward_of(user: UserGate) -> Callable[..., Any]:
    def forward(xp: Any, *inputs: Any) -> Any:
        if getattr(xp, "namespace_kind", "arrays") == "symbolic":
            from .symbolic import call

            return call(user.name, *inputs)  # printed as a call of your function
        return np.asarray(user.fn(*inputs))

    forward.__name__ = user.name
    return forward


def _as_tuple(res: Any, n: int, name: str) -> tuple[Any, ...]:
    if n == 1 and not isinstance(res, (tuple, list)):
        return (res,)
    if not isinstance(res, (tuple, list)) or len(res) != n:
        raise ValueError(f"{name}: the backward rule must return {n} gradient{'s' if n != 1 else ''} "
                         "(one per input, None for an input without one)")
    return tuple(res)


def _plain_source(fn: Callable[..., Any]) -> str:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    node = tree.body[0]
    node.decorator_list = []  # type: ignore[attr-defined]
    return ast.unparse(tree)


def gate(fn: Callable[..., Any] | None = None, *, explain: str | None = None, name: str | None = None,
         check: bool = False) -> Any:
    """Decorator: make ``fn`` one gate of the table, with the backward rule you give by ``@fn.vjp``
    (see the module docstring). ``explain`` is the line the explained table shows; ``check=True``
    verifies the backward (and forward-mode) rule against central differences on the first call."""
    if fn is None:
        return lambda f: UserGate(f, name, explain, check)
    return UserGate(fn, name, explain, check)
