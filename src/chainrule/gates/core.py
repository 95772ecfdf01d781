"""The gate entry and what every view needs from it: calling convention, shape rule, printing, pullback.

A :class:`Gate` holds every fact about one primitive operation, so no other module knows a gate by
name:

* ``forward`` -- how to compute it with the array namespace ``xp``: a NumPy function name (dotted
  names such as ``"linalg.inv"`` allowed) or ``(xp, *inputs, **params) -> array``; ``std`` -- the
  same for the Array API standard's namespace where it differs from NumPy's (``"pow"``, ``"concat"``,
  ``var``'s ``correction`` for ``ddof``), used on the arrays of any other library (CuPy, Dask...);
  what the standard lacks (scatter-add, ``pad``, ``einsum``...) is supplied by
  :mod:`chainrule.adapters`, per library, in one place;
* its derivative, written once against an *ops namespace* ``m``:

  - elementwise gates give ``local``: one function per input, ``(m, *inputs, out) -> ∂out/∂input``;
  - all other gates give ``vjp``: ``(m, g, *inputs, out, needs, **params) -> grads``, the
    vector-Jacobian product for the upstream gradient ``g`` (``needs[i]`` says whether input ``i``
    wants a gradient, so expensive unused branches are skipped);

  ``m`` is the bound array namespace (fast backward on raw arrays), chainrule's own differentiable
  functions (``create_graph=True``: higher derivatives) or the symbolic stand-ins that print rules.
  :func:`pullback` is the one place where the chain rule step (upstream × local, summed over
  broadcast axes) is written; the backward pass, the explained table and the code generator call it.
* ``params`` -- the keyword parameters and their defaults, in NumPy's positional order after the
  inputs (``axis``, ``keepdims`` ...); ``arity`` -- how many array inputs (``None``: a sequence, as
  ``np.concatenate`` takes); together they let one function turn a NumPy-style call into inputs and
  params (:func:`split_call`) for the public functions, NumPy dispatch and the symbolic ops alike;
* ``shape`` -- the output shape from the input shapes and params (defaults by ``kind``);
* ``explain`` -- one line for learners; ``idea`` -- the same in words alone, naming no input by a
  letter of its own (``pow gate: the exponent comes down ...``), for views that print the rule itself
  in the learner's names beside it (the explained table, the explorer); defaults to ``explain``;
  ``fmt`` -- how one staged equation reads (``{0} + {1}``);
  ``code`` -- how it reads as NumPy code (default ``np.<name>(inputs, params)``); params not named
  in a template are appended as ``key=value`` when they differ from their default;
* ``helper`` -- the forward is a small function that generated code includes verbatim (scatter-add,
  item assignment), called as ``_name(np, *inputs, **params)``;
* ``expand`` (composites only) -- the same function staged into simpler gates.

Adding an op means adding one entry (in the family module it belongs to) and a row in
``tests/test_gates.py``; :func:`register` makes a gate known everywhere, also after import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FAN_OUT = "a value used more than once: the gradients from each use add up"

ELEMENTWISE, REDUCTION, SHAPE, LINALG, NONDIFF = "elementwise", "reduction", "shape", "linalg", "nondiff"


class Gate:
    """One primitive operation: forward, derivative rule, shape, printing (see module docstring)."""

    __slots__ = (
        "name", "forward", "explain", "idea", "fmt", "local", "vjp", "expand", "kind", "differentiable", "fn",
        "np_name", "local_const", "params", "arity", "shape_rule", "code", "helper", "view", "numpy",
        "method", "call", "order", "boolean", "jvp", "linear", "local_widens", "std",
    )

    def __init__(
        self,
        name: str,
        forward: str | Callable[..., Any],
        explain: str,
        fmt: str,
        *,
        kind: str,
        idea: str | None = None,
        local: tuple[Callable[..., Any] | None, ...] | None = None,
        vjp: Callable[..., tuple[Any, ...]] | None = None,
        expand: Callable[..., Any] | None = None,
        differentiable: bool = True,
        params: dict[str, Any] | None = None,
        arity: int | None | str = "auto",
        shape: Callable[..., tuple[int, ...]] | None = None,
        code: str | Callable[[list[str], dict[str, Any]], str] | None = None,
        helper: bool = False,
        view: bool = False,
        numpy: Sequence[str] | None = None,
        method: str | None = None,
        call: Callable[[tuple[Any, ...], dict[str, Any]], tuple[list[Any], dict[str, Any]]] | None = None,
        order: Sequence[str] | None = None,
        boolean: bool = False,
        jvp: Callable[..., Any] | None = None,
        linear: str | None = None,
        std: str | Callable[..., Any] | None = None,
    ) -> None:
        self.name = name
        self.forward = forward
        self.np_name = forward if isinstance(forward, str) else None
        self.explain = explain
        #: ``explain`` in words alone: shown beside the rule printed in the learner's own names
        self.idea = idea or explain
        self.fmt = fmt
        self.kind = kind
        self.local = local
        self.vjp = vjp
        self.expand = expand
        self.differentiable = differentiable
        self.params: dict[str, Any] = dict(params or {})
        if arity == "auto":
            arity = len(local) if local else 1
        self.arity: int | None = arity  # type: ignore[assignment]
        self.shape_rule = shape
        self.code = code
        self.helper = helper
        #: the result may share memory with the first input (reshape, transpose, basic indexing)
        self.view = view
        #: the NumPy functions (by dotted name) that dispatch to this gate on tensors
        self.numpy: tuple[str, ...] = tuple(numpy) if numpy is not None else (
            (self.np_name,) if self.np_name is not None else ())
        #: the ndarray method name that is this gate on Tensor (``x.sum()``), if any
        self.method = method
        #: a calling convention of its own (einsum's subscripts first), else :func:`split_call`'s
        self.call = call
        #: NumPy's positional order after the inputs, where it holds more than ``params`` (np.var's
        #: ``axis, dtype, out, ddof``): the others may only be given their neutral value
        self.order: tuple[str, ...] = tuple(order) if order is not None else tuple(self.params)
        #: the result is a truth value (a mask): generated code keeps gradients built from it floats
        self.boolean = boolean
        #: the forward-mode rule ``(m, tangents, *inputs, out, **params) -> tangent of out`` (tangents
        #: holds None for inputs that carry none); elementwise gates need none (local · tangent), nor
        #: do ``linear`` ones: "linear" (the gate applied to the tangents, ``sum(ẋ)``) or "multilinear"
        #: (one term per input, the others kept: ``ẋ @ y + x @ ẏ``)
        self.jvp = jvp
        self.linear = linear
        #: the forward in the Array API standard's terms where NumPy's differs (see module docstring)
        self.std = std
        self.fn: Callable[..., Any] = _unbound
        self.local_const = tuple(_constant_of(rule, len(local)) for rule in local) if local else None
        #: per input: whether the local rule's constants (½ on ties, where's 1.0) turn float32 into
        #: float64, so the backward pass converts that gradient back (checked once, here)
        self.local_widens = tuple(_widens(rule, len(local)) for rule in local) if local else None

    def __repr__(self) -> str:
        return f"<gate {self.name}>"

    # ---- facts every view reads -------------------------------------------------------------------
    def out_shape(self, shapes: Sequence[tuple[int, ...]], params: dict[str, Any]) -> tuple[int, ...]:
        """The output shape for inputs of ``shapes`` (pure Python: never allocates the arrays)."""
        if self.shape_rule is not None:
            return tuple(self.shape_rule(*shapes, **{**self.params, **params}))
        if self.kind in (ELEMENTWISE, NONDIFF):
            return tuple(np.broadcast_shapes(*shapes))
        if self.kind == REDUCTION and "axis" in self.params:
            p = {**self.params, **params}
            return keepdims_shape(shapes[0], p["axis"]) if p.get("keepdims") else reduced_shape(shapes[0], p["axis"])
        # fallback: the forward on zero-strided stand-ins (no input memory; views cost nothing)
        dummies = [np.broadcast_to(np.zeros((), dtype=np.float64), s) for s in shapes]
        with np.errstate(all="ignore"):
            return tuple(np.shape(self.fn(*dummies, **params)))

    def shown_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params worth printing: those that differ from the gate's defaults."""
        out = {}
        for k, v in params.items():
            if k in self.params and _same(v, self.params[k]):
                continue
            out[k] = v
        return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def _constant_of(rule: Callable[..., Any] | None, arity: int) -> int | None:
    """The value of a local-gradient rule that is a plain integer constant (add's 1, neg's -1), so the
    backward pass can pass the gradient on without calling the rule; None for every other rule."""
    if rule is None:
        return None
    probe = object()
    try:
        value = rule(None, *([probe] * (arity + 1)))  # the inputs and out; a rule that reads them fails
    except Exception:
        return None
    return value if type(value) is int else None


def _widens(rule: Callable[..., Any] | None, arity: int) -> bool:
    """Whether a local rule gives float64 for float32 inputs (probed once with NumPy as ``m``)."""
    if rule is None:
        return False
    probe = np.array([0.5, 2.0], dtype=np.float32)
    try:
        with np.errstate(all="ignore"):
            value = rule(np, *([probe] * (arity + 1)))
    except Exception:
        return True  # a rule that needs more than NumPy: convert to be safe
    return getattr(value, "dtype", np.dtype(np.float32)) != np.float32


def _unbound(*_args: Any, **_kw: Any) -> Any:  # replaced by bind() at import
    raise RuntimeError("gate table not bound to an array namespace")


# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------

GATES: dict[str, Gate] = {}
_bound: list[tuple[Any, Any]] = []   # (xp, namespace) pairs the table is bound to
_listeners: list[Callable[[Gate], None]] = []


def register(gate: Gate) -> Gate:
    """Add ``gate`` to the table (replacing one of the same name) and bind it: the backward pass,
    NumPy dispatch, the symbolic views, generated code and ``cr.compile`` all see it at once."""
    GATES[gate.name] = gate
    for xp, namespace in _bound:
        _bind_one(gate, xp, namespace)
    for listener in _listeners:
        listener(gate)
    return gate


def on_register(listener: Callable[[Gate], None]) -> None:
    """Call ``listener(gate)`` for every gate registered from now on (modules that index the table)."""
    _listeners.append(listener)


def resolve(xp: Any, dotted: str) -> Any:
    """``xp.linalg.inv`` from ``"linalg.inv"``."""
    obj = xp
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def bind(xp: Any, namespace: Any) -> None:
    """Bind every gate's forward to the array module ``xp``; fill ``namespace`` with them by name."""
    _bound[:] = [(x, n) for x, n in _bound if n is not namespace] + [(xp, namespace)]
    for gate in GATES.values():
        _bind_one(gate, xp, namespace)


def _bind_one(gate: Gate, xp: Any, namespace: Any) -> None:
    if gate.np_name is not None:
        try:
            gate.fn = resolve(xp, gate.np_name)
        except AttributeError:
            gate.fn = _missing(gate, xp)
    else:
        gate.fn = _bind_forward(gate.forward, xp)
    # rules call m.<name> with NumPy's convention; where the gate's own differs (a sequence of
    # inputs, einsum's subscripts first), the namespace entry translates
    setattr(namespace, gate.name, gate.fn if gate.arity is not None and gate.call is None else numpy_call(gate))
    for name in ("ones_like", "zeros_like", "zeros", "ones", "eye"):  # constants rules may build
        if not hasattr(namespace, name) and hasattr(xp, name):
            setattr(namespace, name, getattr(xp, name))


def numpy_call(gate: Gate, forward: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """The gate's forward (``gate.fn``, or ``forward``) called with NumPy's convention, as rules call it."""
    def fn(*args: Any, **kwargs: Any) -> Any:
        inputs, params = split_call(gate, args, kwargs)
        return (forward or gate.fn)(*inputs, **params)

    fn.__name__ = gate.name
    return fn


def _missing(gate: Gate, xp: Any) -> Callable[..., Any]:
    def fn(*_a: Any, **_k: Any) -> Any:
        raise TypeError(f"{gate.name}: the array library {getattr(xp, '__name__', xp)!r} has no "
                        f"{gate.np_name}")

    return fn


def bind_library(gate: Gate, lib: Any) -> Callable[..., Any]:
    """The gate's forward on the arrays of ``lib`` (a :class:`chainrule.backend.Library`): what the
    library's adapter supplies where the standard has nothing, else the standard's function
    (``std``, or the NumPy name where the standard uses the same), else an error naming the gate and
    the library."""
    served = lib.adapter.serve(gate)
    if served is not None:
        return served
    fallback = lib.adapter.fallback(gate)
    std = gate.std if gate.std is not None else gate.forward
    if not isinstance(std, str):
        return _bind_standard(gate, std, lib, fallback)
    try:
        return resolve(lib.xp, std)
    except AttributeError:
        return fallback or _unsupported(gate, lib, f"the Array API standard has no {std}, and its adapter "
                                                   "supplies none")


def _bind_standard(gate: Gate, forward: Callable[..., Any], lib: Any, fallback: Callable[..., Any] | None
                   ) -> Callable[..., Any]:
    xp = lib.xp
    spaces = (xp, getattr(xp, "linalg", None))

    def fn(*args: Any, **params: Any) -> Any:
        try:
            return forward(xp, *args, **params)
        except AttributeError as e:
            obj = getattr(e, "obj", None)
            if obj is not None and any(obj is s for s in spaces):
                if fallback is not None:  # (the adapter's last resort for gates beyond the standard)
                    return fallback(*args, **params)
                from ..backend import UnsupportedError

                raise UnsupportedError(f"{gate.name}: {lib.name} cannot serve this gate (its Array API "
                                       f"namespace has no {e.name})") from None
            raise

    fn.__name__ = getattr(forward, "__name__", "forward").lstrip("_")
    return fn


def _unsupported(gate: Gate, lib: Any, why: str) -> Callable[..., Any]:
    def fn(*_a: Any, **_k: Any) -> Any:
        from ..backend import UnsupportedError

        raise UnsupportedError(f"{gate.name}: {lib.name} cannot serve this gate ({why})")

    fn.__name__ = gate.name
    return fn


def mask(m: Any, b: Any) -> Any:
    """A truth value (``x > 0``) as a number in a rule's arithmetic. NumPy and the libraries that mirror
    it promote bools by themselves; the Array API standard does not, so where the ops namespace ``m``
    has a ``mask`` (a library's adapter says so) it converts; elsewhere ``b`` is used as it is."""
    f = getattr(m, "mask", None)
    return b if f is None else f(b)


def constant(m: Any, value: Any) -> Any:
    """A NumPy constant a rule builds (``np.eye(n)``, a mask of positions) in the ops namespace ``m``:
    moved into the library of the arrays where ``m`` works on another library's arrays, else as it is
    (NumPy arrays, graphs and printed rules take NumPy constants)."""
    f = getattr(m, "asarray", None)
    return value if f is None else f(value)


def index_into(x: Any, index: Any) -> Any:
    """``x[index]`` for an array of any library, a tensor or a symbol: NumPy's indexing (index arrays of
    NumPy, several integer arrays, masks), which the standard does not cover, through the array
    library's adapter."""
    from ..backend import NATIVE, library_of

    if x.__class__ in NATIVE:
        return x[index]
    lib = library_of(x)
    return x[index] if lib is None else lib.adapter.getitem(x, index)


def _bind_forward(forward: Callable[..., Any], xp: Any) -> Callable[..., Any]:
    def fn(*args: Any, **params: Any) -> Any:
        return forward(xp, *args, **params)

    fn.__name__ = getattr(forward, "__name__", "forward").lstrip("_")
    return fn


# ----------------------------------------------------------------------------------------------
# calling convention: NumPy-style call -> (inputs, params)
# ----------------------------------------------------------------------------------------------

#: NumPy arguments that may be passed but only with their neutral value
_NEUTRAL = {"out": None, "dtype": None, "where": True, "casting": "same_kind", "order": "K", "subok": True,
            "initial": None, "copy": None}


def split_call(gate: Gate, args: Sequence[Any], kwargs: dict[str, Any], who: str | None = None
               ) -> tuple[list[Any], dict[str, Any]]:
    """Inputs and params of a NumPy-style call ``f(*args, **kwargs)`` of ``gate``; one clear error
    naming the function and the argument for anything it does not take."""
    who = who or f"np.{gate.np_name or gate.name}"
    if gate.call is not None:
        return gate.call(tuple(args), dict(kwargs))
    args = list(args)
    if gate.arity is None:
        if not args:
            raise TypeError(f"{who}: needs a sequence of arrays")
        first = args.pop(0)
        if not isinstance(first, (list, tuple)):
            first = list(first)
        inputs = list(first)
    else:
        if len(args) < gate.arity:
            raise TypeError(f"{who}: takes {gate.arity} array argument{'s' if gate.arity != 1 else ''}, "
                            f"got {len(args)}")
        inputs, args = args[:gate.arity], args[gate.arity:]
    names = list(gate.order)
    if len(args) > len(names):
        raise TypeError(f"{who}: too many positional arguments ({len(args)} after the "
                        f"input{'s' if gate.arity != 1 else ''}; it takes {', '.join(names) or 'none'})")
    params: dict[str, Any] = {}
    for k, v in zip(names, args):
        if k in gate.params:
            params[k] = v
        elif not (v is None or (k in _NEUTRAL and _same(v, _NEUTRAL[k]))):
            raise TypeError(f"{who}: argument {k}={v!r} is not supported on chainrule tensors")
    for k, v in kwargs.items():
        if k in gate.params:
            if k in params:
                raise TypeError(f"{who}: got two values for argument {k!r}")
            params[k] = v
        elif k in _NEUTRAL and (v is None or _same(v, _NEUTRAL[k])):
            continue
        else:
            raise TypeError(f"{who}: argument {k}={v!r} is not supported on chainrule tensors")
    if "axis" in params and isinstance(params["axis"], list):
        params["axis"] = tuple(params["axis"])
    return inputs, params


# ----------------------------------------------------------------------------------------------
# shape helpers (pure Python on shape tuples; shared by rules and the engine)
# ----------------------------------------------------------------------------------------------


def normalize_axis(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """Axis argument as a sorted tuple of non-negative axes (None: all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(int(a) % ndim if ndim else 0)
    return tuple(sorted(out))


def keepdims_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The shape a reduction over ``axis`` has with ``keepdims=True``."""
    axes = normalize_axis(axis, len(shape))
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def reduced_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The shape a reduction over ``axis`` has with ``keepdims=False``."""
    axes = normalize_axis(axis, len(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def shape_of(x: Any) -> tuple[int, ...]:
    """The shape of an array, a stand-in or a plain number (``()``)."""
    s = getattr(x, "shape", None)
    return tuple(s) if s is not None else ()


def unbroadcast(m: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, so it has ``shape``."""
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead < 0:
        return m.broadcast_to(g, shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and gshape[i + lead] != 1
    )
    if axes:
        g = m.sum(g, axis=axes, keepdims=True)
    return m.reshape(g, shape) if g.shape != shape else g


def number(v: Any) -> Any:
    """The value of an operand that is a plain number (Python, NumPy 0-d, or a symbolic number), else
    None: rules use it to pick the simpler form where an operand is a known constant (``x ** 3``)."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, np.generic) and v.dtype.kind in "iuf":
        return v.item()
    if getattr(v, "op", None) == "num" and not isinstance(v.value, bool):  # a symbolic number
        return v.value
    return None


# ----------------------------------------------------------------------------------------------
# the chain-rule step, written once
# ----------------------------------------------------------------------------------------------


def pullback(gate: Gate, m: Any, g: Any, args: Sequence[Any], out: Any, needs: Sequence[bool],
             params: dict[str, Any], reduce: Callable[[Any, Any, tuple[int, ...]], Any] | None = None,
             ) -> Sequence[Any]:
    """The gradients a gate sends to its inputs for the upstream gradient ``g`` (None where not needed).

    Elementwise gates: upstream × local, summed over broadcast axes (:func:`unbroadcast` where the
    shapes differ, or ``reduce(m, g, input_shape)`` for every input when given: the code generator
    passes one that knows its folded seed); other gates: their ``vjp``.
    ``m`` is any ops namespace (arrays, differentiable functions, symbolic stand-ins).
    """
    local = gate.local
    try:
        if local is None:
            grads = gate.vjp(m, g, *args, out, needs, **params)
            if reduce is None:  # a rule's constants (a count, ½ on ties) never widen float32 to float64
                grads = [_same_dtype(gi, a) for gi, a in zip(grads, args)]
            return grads
        grads: list[Any] = []
        consts = gate.local_const
        i = 0
        for need in needs:  # (an input that needs a gradient is an array, a tensor or a stand-in)
            if need:
                c = consts[i]
                if c is None:
                    gi = g * local[i](m, *args, out)
                elif c == 1:
                    gi = g
                elif c == -1:
                    gi = -g
                else:
                    gi = g * c
                a = args[i]
                shape = a.shape
                if reduce is not None:
                    gi = reduce(m, gi, tuple(shape))
                else:
                    if gi.shape != shape:
                        gi = unbroadcast(m, gi, tuple(shape))
                    if c is None and gate.local_widens[i]:
                        gi = _same_dtype(gi, a)
                grads.append(gi)
            else:
                grads.append(None)
            i += 1
        return grads
    except ZeroDivisionError:
        # a rule did arithmetic on Python-number constants (1 / 0 for x / 0): redo it as NumPy does,
        # giving inf or nan, never an exception from the backward pass
        with np.errstate(divide="ignore", invalid="ignore"):
            floats = [np.float64(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args]
            return pullback(gate, m, g, floats, out, needs, params, reduce)


def _same_dtype(gi: Any, a: Any) -> Any:
    """``gi`` in the floating-point dtype of the input ``a`` it is the gradient of (a rule's ½ or
    count would otherwise widen float32 to float64 for the rest of the backward pass)."""
    if gi is None:
        return gi
    want, got = getattr(a, "dtype", None), getattr(gi, "dtype", None)
    if want is None or got is None or want == got or _kind(want) != "f" or _kind(got) not in "fc":
        return gi
    return gi.astype(want) if hasattr(gi, "astype") else gi


def _kind(dtype: Any) -> str:
    """NumPy's dtype kind letter, also for libraries whose dtypes have none (the Array API's)."""
    kind = getattr(dtype, "kind", None)
    if kind is not None:
        return kind
    name = str(dtype)
    return "c" if "complex" in name else "f" if "float" in name else "?"


def pushforward(gate: Gate, m: Any, tangents: Sequence[Any], args: Sequence[Any], out: Any,
                params: dict[str, Any]) -> Any:
    """The tangent of a gate's output from its inputs' tangents (None for inputs that carry none):
    forward mode's step, as :func:`pullback` is reverse mode's. Elementwise gates: Σ local · tangent;
    linear gates: the gate applied to the tangents; multilinear ones: one term per input; others their
    ``jvp`` rule; a gate without one (a factorization, a gate you defined) by transposing its
    vector-Jacobian product: J·t is the gradient of ⟨vjp(u), t⟩ with respect to u."""
    if all(t is None for t in tangents):
        return None
    if gate.jvp is not None:
        return gate.jvp(m, tangents, *args, out, **params)
    if gate.local is not None:
        total = None
        for i, t in enumerate(tangents):
            if t is None:
                continue
            c = gate.local_const[i]
            if c is None:
                term = local_gradient(gate, i, m, args, out) * t
            else:
                term = t if c == 1 else -t if c == -1 else t * c
            total = term if total is None else total + term
        if total is not None and tuple(shape_of(total)) != tuple(shape_of(out)):
            total = m.broadcast_to(total, tuple(shape_of(out)))
        return total
    if gate.linear == "linear":
        filled = [m.zeros_like(a) if t is None else t for a, t in zip(args, tangents)]
        return apply_in(m, gate, *filled, **params)
    if gate.linear == "multilinear":
        total = None
        for i, t in enumerate(tangents):
            if t is not None:
                term = apply_in(m, gate, *args[:i], t, *args[i + 1:], **params)
                total = term if total is None else total + term
        return total
    return transposed_jvp(gate, m, tangents, args, out, params)


def apply_in(m: Any, gate: Gate, *inputs: Any, **params: Any) -> Any:
    """The gate applied in the ops namespace ``m``, with the gate's own convention (inputs, params)."""
    own = getattr(m, "apply_gate", None)
    if own is not None:
        return own(gate, *inputs, **params)
    return gate.fn(*inputs, **params)  # the array namespace


def transposed_jvp(gate: Gate, m: Any, tangents: Sequence[Any], args: Sequence[Any], out: Any,
                   params: dict[str, Any]) -> Any:
    """J·t for a gate with only a vector-Jacobian rule: vjp is linear in the upstream gradient u, so
    ⟨vjp(u), t⟩ = ⟨u, J·t⟩, and its gradient with respect to u is J·t (exact, two backward rules)."""
    from .. import functions
    from ..autodiff import run_backward
    from ..backend import namespace_of
    from ..tensor import Tensor, enable_grad

    kind = getattr(m, "namespace_kind", "arrays")
    if kind == "symbolic":
        raise TypeError(f"{gate.name}: its forward-mode rule is not written out (it is computed by transposing "
                        "its vector-Jacobian product), so it has no printed form")
    graph = kind == "graph"
    shape = tuple(shape_of(out))
    data = out.data if isinstance(out, Tensor) else out
    xp = namespace_of(data)
    with enable_grad():
        u = Tensor(xp.zeros(shape, dtype=getattr(data, "dtype", np.float64)), requires_grad=True)
        parents = [a if isinstance(a, Tensor) or not graph else a for a in args]
        needs = [t is not None for t in tangents]
        grads = pullback(gate, functions, u, parents, out if graph else Tensor(data), needs, params)
        total = None
        for gi, t in zip(grads, tangents):
            if t is None or gi is None:
                continue
            term = functions.sum(gi * t)
            total = term if total is None else total + term
        if total is None or not total.requires_grad:
            return m.zeros_like(out) if graph else xp.zeros(shape)
        got = run_backward(total, targets=[u], accumulate=False, create_graph=graph)
    jt = got.get(id(u))
    if jt is None:
        return m.zeros_like(out) if graph else xp.zeros(shape)
    return jt if graph else xp.asarray(jt)


def local_gradient(gate: Gate, i: int, m: Any, args: Sequence[Any], out: Any) -> Any:
    """∂out/∂input_i of an elementwise gate (its own rule), for views that show it."""
    try:
        return gate.local[i](m, *args, out)
    except ZeroDivisionError:
        with np.errstate(divide="ignore", invalid="ignore"):
            args = [np.float64(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args]
            return gate.local[i](m, *args, out)


def count(shape: tuple[int, ...], axis: Any) -> int:
    """How many elements a reduction over ``axis`` combines."""
    return math.prod(shape[a] for a in normalize_axis(axis, len(shape)))
