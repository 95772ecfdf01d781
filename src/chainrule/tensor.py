"""Tensor: an array that remembers the gate that made it, and NumPy dispatch onto the gate table.

Every operation on tensors goes through :func:`apply`, which computes the gate's forward with the
array namespace and, when any input requires a gradient, records the node (gate, inputs, params) on
the result. That record *is* the computational graph; there is no other.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from contextlib import ContextDecorator
from typing import Any

import numpy as np

from . import backend
from .gates import GATES, Gate


class _State:
    """Global switches read on every op. ``plain`` (recording, no expansion, no anomaly checks) is
    kept up to date on every change so the operators' hot path reads one attribute."""

    def __init__(self) -> None:
        self.grad_enabled = True
        self.expand = False  # stage composite gates (sigmoid, softmax, ...) into their parts
        self.anomaly = False
        # while a function is traced (cr.trace, cr.compile): record masks such as x > 0 as
        # forward-only nodes. Eager code records none, so a mask never keeps a graph alive.
        self.record_masks = False

    def __setattr__(self, name: str, value: bool) -> None:
        object.__setattr__(self, name, value)
        d = self.__dict__
        object.__setattr__(self, "plain", d.get("grad_enabled", True) and not d.get("expand", False)
                           and not d.get("anomaly", False))


state = _State()
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


class no_grad(ContextDecorator):
    """Context manager / decorator: operations inside record no graph (parameter updates, evaluation)."""

    def __enter__(self) -> no_grad:
        self._prev = state.grad_enabled
        state.grad_enabled = False
        return self

    def __exit__(self, *exc: object) -> None:
        state.grad_enabled = self._prev


class enable_grad(ContextDecorator):
    """Context manager / decorator: turn graph recording back on inside a ``no_grad`` block."""

    def __enter__(self) -> enable_grad:
        self._prev = state.grad_enabled
        state.grad_enabled = True
        return self

    def __exit__(self, *exc: object) -> None:
        state.grad_enabled = self._prev


class expanded(ContextDecorator):
    """Context manager: composite gates (sigmoid, tanh, softmax, ...) record their staged parts."""

    def __init__(self, on: bool = True) -> None:
        self.on = on

    def __enter__(self) -> expanded:
        self._prev = state.expand
        state.expand = self.on
        return self

    def __exit__(self, *exc: object) -> None:
        state.expand = self._prev


def user_frame() -> str:
    """``file:line`` of the innermost caller outside chainrule (where the user wrote the op)."""
    f = sys._getframe(1)
    while f is not None:
        fname = f.f_code.co_filename
        if not fname.startswith(_PKG_DIR) and "numpy" not in fname:
            return f"{fname}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    return f"{tuple(shape)}"


def _op_error(gate: Gate, datas: list[Any], err: Exception, params: dict[str, Any]) -> Exception:
    shapes = " and ".join(_describe(d) for d in datas)
    extra = "".join(f", {k}={v!r}" for k, v in params.items() if k != "index")
    kind = ShapeError if isinstance(err, ValueError) else type(err)
    text = str(err)
    for prefix in {f"{gate.name}: ", f"{gate.np_name}: "}:
        text = text.removeprefix(prefix)  # NumPy's own message may already start with the op's name
    return kind(f"{gate.name}: {text} (input shapes {shapes}{extra}) at {user_frame()}")


class ShapeError(ValueError):
    """Operands whose shapes do not fit the operation (names the op and the shapes)."""


def _as_operand(a: Any) -> Any:
    if isinstance(a, (int, float, complex, np.generic, np.ndarray)):
        return a
    if isinstance(a, (list, tuple)):
        return backend.xp.asarray(a)
    if isinstance(a, (bool, type(None))) or hasattr(a, "__array__"):
        return a
    raise TypeError(f"chainrule cannot use an operand of type {type(a).__name__!r}")


_PLAIN = frozenset((int, float, np.ndarray, np.float64, np.float32))
_EMPTY: dict[str, Any] = {}  # shared "no params" (never mutated)
_next_seq = itertools.count().__next__  # creation order: a topological order of the graph


def _result(gate: Gate, out: Any, parents: tuple[Any, ...], needs: tuple[bool, ...], track: bool,
            params: dict[str, Any], datas: Any) -> Tensor:
    t = _new_tensor(Tensor)
    t.data = out
    t.grad = None
    t.name = None
    t._src = None
    if track:
        t.requires_grad = True
        t._gate = gate
        t._parents = parents
        t._needs = needs
        t._params = params
        t._seq = _next_seq()
        t._args = datas if isinstance(datas, tuple) else tuple(datas)
    else:
        t.requires_grad = False
        t._gate = None
        t._parents = ()
        t._needs = ()
        t._params = None
    if state.anomaly:
        from .autodiff import check_forward_anomaly

        check_forward_anomaly(t, gate, list(datas))
    return t


def apply(gate: Gate, *args: Any, **params: Any) -> Tensor:
    """Run ``gate`` on tensors and/or constants; record the node when a gradient will be needed."""
    datas = []
    needs = []
    track = False
    for a in args:
        if isinstance(a, Tensor):
            datas.append(a.data)
            r = a.requires_grad
            needs.append(r)
            track = track or r
        else:
            datas.append(_as_operand(a))
            needs.append(False)
    track = track and state.grad_enabled and gate.differentiable
    if track and state.expand and gate.expand is not None:
        from . import functions

        return gate.expand(functions, *args, **params)
    try:
        out = gate.fn(*datas, **params)
    except (ValueError, IndexError, TypeError) as err:
        raise _op_error(gate, datas, err, params) from None
    parents = tuple(a if isinstance(a, Tensor) else d for a, d in zip(args, datas)) if track else ()
    t = _result(gate, out, parents, tuple(needs), track, params or _EMPTY, datas)
    if not track and state.record_masks and state.grad_enabled and any(
            isinstance(a, Tensor) and _depends(a) for a in args):
        _record_forward_only(t, gate, tuple(a if isinstance(a, Tensor) else d for a, d in zip(args, datas)),
                             params or _EMPTY)
    return t


def _depends(a: Tensor) -> bool:
    """Whether a tensor's values come from the inputs being differentiated: it requires grad, or it is
    a forward-only node (a mask ``x > 0``, or arithmetic on one), computed from such a tensor."""
    return a.requires_grad or a._gate is not None


def _record_forward_only(t: Tensor, gate: Gate, parents: tuple[Any, ...], params: dict[str, Any]) -> None:
    """Record a forward-only node on ``t``: a non-differentiable gate (``x > 0``) applied to tensors
    that depend on the inputs, or any gate applied to such a mask. The node never takes part in the
    backward pass (``requires_grad`` stays False and no consumer needs its gradient, so
    ``run_backward`` never visits it), but a trace sees it, so ``cr.compile`` recomputes the mask
    from the inputs on every call instead of freezing the traced values."""
    t._gate = gate
    t._parents = parents
    t._needs = (False,) * len(parents)
    t._params = params
    t._seq = _next_seq()
    t._args = None


def binary_op(gate: Gate, reflected: bool = False) -> Any:
    """A two-argument function (or, assigned in the class, an operator method) running ``gate``.

    This is :func:`apply` specialised for binary gates without params: the hot path of every
    operator, so the common case (recording, nothing special switched on) is written out inline.
    """

    def op(a: Any, b: Any) -> Tensor:
        if reflected:
            a, b = b, a
        if isinstance(a, Tensor):
            ad = a.data
            ra = a.requires_grad
        else:
            a = ad = a if a.__class__ in _PLAIN else _as_operand(a)
            ra = False
        if isinstance(b, Tensor):
            bd = b.data
            rb = b.requires_grad
        else:
            b = bd = b if b.__class__ in _PLAIN else _as_operand(b)
            rb = False
        if (ra or rb) and state.plain and (differentiable or state.record_masks):
            try:
                out = gate.fn(ad, bd)
            except (ValueError, IndexError, TypeError) as err:
                raise _op_error(gate, [ad, bd], err, _EMPTY) from None
            t = _new_tensor(Tensor)
            t.data = out
            t.grad = t.name = t._src = None
            t._gate = gate
            t._parents = (a, b)
            t._params = _EMPTY
            t._seq = _next_seq()
            if differentiable:
                t.requires_grad = True
                t._needs = (ra, rb)
                t._args = (ad, bd)
            else:  # a comparison on a tensor that requires grad: a forward-only node (a mask)
                t.requires_grad = False
                t._needs = (False, False)
                t._args = None
            return t
        return apply(gate, a, b)

    differentiable = gate.differentiable
    op.__name__ = gate.name
    return op


def apply1(gate: Gate, a: Any) -> Tensor:
    """:func:`apply` for a unary gate without params."""
    if not isinstance(a, Tensor):
        return apply(gate, a)
    track = a.requires_grad and state.grad_enabled and gate.differentiable
    if track and state.expand and gate.expand is not None:
        return apply(gate, a)
    try:
        out = gate.fn(a.data)
    except (ValueError, IndexError, TypeError) as err:
        raise _op_error(gate, [a.data], err, _EMPTY) from None
    t = _result(gate, out, (a,), (True,), track, _EMPTY, (a.data,))
    if not track and state.record_masks and state.grad_enabled and _depends(a):
        _record_forward_only(t, gate, (a,), _EMPTY)
    return t


class Tensor:
    """An array with an optional gradient; operations on it build the computational graph.

    ``.data`` is the NumPy array, ``.grad`` the accumulated gradient of a leaf (a NumPy array, or
    None before any backward pass). Leaf gradients *accumulate* across ``backward()`` calls, as in
    PyTorch: reset them with ``x.grad = None`` (or an optimizer's ``zero_grad()``).
    """

    __slots__ = ("data", "grad", "requires_grad", "name", "_gate", "_parents", "_needs", "_params", "_src",
                 "_seq", "_args", "__weakref__")
    __array_priority__ = 1000.0

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        arr = backend.xp.asarray(data, dtype=dtype)
        if arr.dtype.kind not in "fc":
            if arr.dtype.kind in "biu" and dtype is None and requires_grad:
                arr = arr.astype(np.float64)  # gradients need floats: integer input is promoted
            elif requires_grad:
                raise TypeError(f"only floating-point tensors can require gradients, not dtype {arr.dtype}")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._gate = None
        self._parents = ()
        self._needs = ()
        self._params = None
        self._src = None

    # ---- array-like attributes -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user made, and (as in PyTorch) for every tensor that does not require
        grad: a mask ``x > 0`` keeps a forward-only record for tracing but is a leaf to gradients."""
        return self._gate is None or not self.requires_grad

    @property
    def T(self) -> Tensor:
        return apply(GATES["transpose"], self, axes=None)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        self._refuse_python_number("float()")
        return float(self.data)

    def __int__(self) -> int:
        self._refuse_python_number("int()")
        return int(self.data)

    def __index__(self) -> int:
        self._refuse_python_number("using it as an index")
        return self.data.__index__()

    def _refuse_python_number(self, what: str) -> None:
        # math.exp(t), float(t), ... would compute on a plain number and silently drop the gradient
        if self.requires_grad and state.grad_enabled:
            raise TypeError(
                f"{what} on a tensor that requires grad (also what math.exp, math.sqrt, ... do) would drop "
                "its gradient: use chainrule's or NumPy's functions (cr.exp, np.sqrt, ...), or .item() "
                "for the plain value"
            )

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        body = np.array2string(np.asarray(self.data), separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.data.dtype != np.float64 and self.data.dtype.kind == "f":
            extra = f", dtype={self.data.dtype}" + extra
        return f"tensor({body}{extra})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.requires_grad and state.grad_enabled:
            raise TypeError(
                "cannot turn a tensor that requires grad into a plain NumPy array: the gradient would be "
                "lost. Use .detach().numpy() for its values, or chainrule functions (cr.stack, ...)"
            )
        arr = np.asarray(self.data)
        return arr.astype(dtype) if dtype is not None else arr

    # ---- conversions --------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (shares memory with the tensor)."""
        return np.asarray(self.data)

    def item(self) -> Any:
        """The single value of a one-element tensor as a Python number."""
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same values, cut off from the graph (no gradient flows through the result)."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` on a leaf in place; returns self."""
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        if requires_grad and self.data.dtype.kind not in "fc":
            self.data = self.data.astype(np.float64)
        if requires_grad and self._gate is not None:  # a forward-only node becomes a leaf of its own
            self._gate, self._parents, self._needs, self._params = None, (), (), None
        self.requires_grad = requires_grad
        return self

    def astype(self, dtype: Any) -> Tensor:
        """A copy converted to ``dtype`` (the gradient flows back, converted to the input's dtype)."""
        return Tensor(self.data.astype(dtype), requires_grad=False) if not self.requires_grad else \
            _astype(self, dtype)

    # ---- autodiff --------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False, create_graph: bool = False) -> None:
        """Backpropagate from this tensor into the ``.grad`` of every leaf that requires it.

        A non-scalar tensor is seeded with ones (the gradient of its sum), the worksheet's
        elementwise convention; pass ``grad`` to seed with another upstream gradient. The graph's
        saved intermediates are released afterwards unless ``retain_graph`` (or ``create_graph``,
        which makes the gradients tensors with graphs of their own, for higher derivatives).
        """
        from .autodiff import backward

        backward(self, grad, retain_graph=retain_graph, create_graph=create_graph)

    def graph(self, **kwargs: Any) -> Any:
        """The computational graph that produced this tensor, as a :class:`chainrule.Graph`."""
        from .graph import trace_tensor

        return trace_tensor(self, **kwargs)

    # ---- operators ---------------------------------------------------------------------------
    __add__ = binary_op(GATES["add"])
    __radd__ = binary_op(GATES["add"], reflected=True)
    __sub__ = binary_op(GATES["sub"])
    __rsub__ = binary_op(GATES["sub"], reflected=True)
    __mul__ = binary_op(GATES["mul"])
    __rmul__ = binary_op(GATES["mul"], reflected=True)
    __truediv__ = binary_op(GATES["div"])
    __rtruediv__ = binary_op(GATES["div"], reflected=True)
    __pow__ = binary_op(GATES["pow"])
    __rpow__ = binary_op(GATES["pow"], reflected=True)
    __matmul__ = binary_op(GATES["matmul"])
    __rmatmul__ = binary_op(GATES["matmul"], reflected=True)
    def __neg__(self) -> Tensor:
        return apply1(_NEG, self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return apply(GATES["abs"], self)

    # in-place operators: on a leaf they update the values in place and record nothing (the
    # worksheet's `w -= step_size * grad`); on an intermediate (a forward-only mask too, so a trace
    # stays true) they build a new node instead.
    def _inplace(self, gate: Gate, other: Any) -> Tensor:
        if self._gate is not None:
            return apply(gate, self, other)
        other = other.data if isinstance(other, Tensor) else other
        res = gate.fn(self.data, other)
        if res.shape != self.data.shape:
            raise ShapeError(f"{gate.name}=: in-place update of shape {self.shape} with shape {res.shape}")
        self.data[...] = res
        return self

    def __iadd__(self, other: Any) -> Tensor:
        return self._inplace(_ADD, other)

    def __isub__(self, other: Any) -> Tensor:
        return self._inplace(_SUB, other)

    def __imul__(self, other: Any) -> Tensor:
        return self._inplace(_MUL, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._inplace(_DIV, other)

    # comparisons give gradient-free boolean tensors, as in NumPy; on a tensor that requires grad the
    # result is a forward-only node (a mask the trace sees, that the backward pass never visits)
    __gt__ = binary_op(GATES["greater"])  # type: ignore[assignment]
    __ge__ = binary_op(GATES["greater_equal"])  # type: ignore[assignment]
    __lt__ = binary_op(GATES["less"])  # type: ignore[assignment]
    __le__ = binary_op(GATES["less_equal"])  # type: ignore[assignment]
    __eq__ = binary_op(GATES["equal"])  # type: ignore[assignment]
    __ne__ = binary_op(GATES["not_equal"])  # type: ignore[assignment]

    def __invert__(self) -> Tensor:
        return apply(GATES["logical_not"], self)

    def __getitem__(self, index: Any) -> Tensor:
        return apply(GATES["getitem"], self, index=_plain_index(index))

    def __setitem__(self, index: Any, value: Any) -> None:
        if self.requires_grad or (isinstance(value, Tensor) and value.requires_grad):
            raise TypeError(
                "item assignment on a tensor that takes part in a gradient is not supported: "
                "build the new value with cr.where(...) or cr.concatenate(...) instead"
            )
        self.data[_plain_index(index)] = value.data if isinstance(value, Tensor) else value

    # ---- methods mirroring NumPy's --------------------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return apply(GATES["sum"], self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return apply(GATES["mean"], self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return apply(GATES["max"], self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return apply(GATES["min"], self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(GATES["reshape"], self, shape=shape)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return apply(GATES["transpose"], self, axes=axes or None)

    def flatten(self) -> Tensor:
        return self.reshape(-1)

    def exp(self) -> Tensor:
        return apply(GATES["exp"], self)

    def log(self) -> Tensor:
        return apply(GATES["log"], self)

    def sqrt(self) -> Tensor:
        return apply(GATES["sqrt"], self)

    def sigmoid(self) -> Tensor:
        return apply(GATES["sigmoid"], self)

    def tanh(self) -> Tensor:
        return apply(GATES["tanh"], self)

    def relu(self) -> Tensor:
        return apply(GATES["relu"], self)

    def all(self, axis: Any = None) -> Any:
        """Whether every element is true (a plain NumPy answer: truth values have no gradient)."""
        return np.all(self.data, axis=axis)

    def any(self, axis: Any = None) -> Any:
        """Whether some element is true (a plain NumPy answer: truth values have no gradient)."""
        return np.any(self.data, axis=axis)

    def dot(self, other: Any) -> Tensor:
        from .functions import dot

        return dot(self, other)

    # ---- NumPy dispatch ------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from .functions import UFUNCS

        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        if method != "__call__":
            raise TypeError(f"{name} is not supported on chainrule tensors (only plain calls of ufuncs are)")
        fn = UFUNCS.get(ufunc)
        if fn is None:
            raise TypeError(f"{name} is not supported by chainrule: it has no gradient rule "
                            f"(supported ufuncs: {', '.join(sorted(u.__name__ for u in UFUNCS))})")
        bad = [k for k, v in kwargs.items() if v is not None and k != "casting"]
        if bad:
            raise TypeError(f"{name}: argument(s) {', '.join(bad)} are not supported on chainrule tensors")
        return fn(*inputs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from .functions import ARRAY_FUNCTIONS

        fn = ARRAY_FUNCTIONS.get(func)
        if fn is None:
            where = getattr(func, "__module__", "numpy") or "numpy"
            name = where.replace("numpy", "np", 1) + "." + func.__name__
            raise TypeError(
                f"{name} is not supported by chainrule on tensors: it has no gradient rule "
                "(use .detach().numpy() if you only need values)"
            )
        return fn(*args, **kwargs)


def _plain_index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _astype(t: Tensor, dtype: Any) -> Tensor:
    # converting precision: data converted, gradient converted back by the identity rule's chain
    out = apply(GATES["identity"], t)
    out.data = out.data.astype(dtype)
    return out


_ADD, _SUB, _MUL, _DIV, _POW, _NEG, _MATMUL = (
    GATES[n] for n in ("add", "sub", "mul", "div", "pow", "neg", "matmul")
)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None) -> Tensor:
    """A new leaf tensor from ``data`` (scalar, list, array); integers are promoted to float64 when
    ``requires_grad`` is set, since only floating-point values have gradients."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


_new_tensor = Tensor.__new__
