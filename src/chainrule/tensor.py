"""Tensor: an array that remembers the gate that made it, and NumPy dispatch onto the gate table.

Every operation on tensors goes through :func:`apply`, which computes the gate's forward with the
array namespace and, when any input requires a gradient, records the node (gate, inputs, params) on
the result. That record *is* the computational graph; there is no other.

Engine switches (``no_grad``, ``enable_grad``, anomaly mode, tracing, nesting of ``grad``) live in a
``contextvars.ContextVar``: each thread and each asyncio task has its own.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import ContextDecorator
from typing import Any

import numpy as np

from . import backend
from .gates import GATES, Gate, split_call


class Switches:
    """One snapshot of the engine switches. Never changed in place: a change makes a new snapshot in
    the current context, so other threads and tasks are not affected. ``plain`` (recording, no
    expansion, no anomaly checks) is derived, so the operators' hot path reads one attribute."""

    __slots__ = ("grad_enabled", "expand", "anomaly", "record_masks", "nesting", "plain", "_next")

    def __init__(self, grad_enabled: bool = True, expand: bool = False, anomaly: bool = False,
                 record_masks: bool = False, nesting: int = 0) -> None:
        self.grad_enabled = grad_enabled
        self.expand = expand  # stage composite gates (sigmoid, softmax, ...) into their parts
        self.anomaly = anomaly
        # while a function is traced (cr.trace, cr.compile): record masks such as x > 0 as
        # forward-only nodes. Eager code records none, so a mask never keeps a graph alive.
        self.record_masks = record_masks
        self.nesting = nesting  # how many differentiated functions are running (grad inside grad)
        self.plain = grad_enabled and not expand and not anomaly
        self._next: dict[tuple[str, Any], Switches] = {}  # the snapshots one change away (made once)

    def replace(self, **changes: Any) -> Switches:
        values = {k: getattr(self, k) for k in ("grad_enabled", "expand", "anomaly", "record_masks", "nesting")}
        values.update(changes)
        return Switches(**values)

    def changed(self, name: str, value: Any) -> Switches:
        """This snapshot with one switch set (the same object each time: entering ``no_grad`` or one
        more level of ``grad`` costs a dictionary lookup)."""
        key = (name, value)
        nxt = self._next.get(key)
        if nxt is None:
            nxt = self._next[key] = self.replace(**{name: value})
        return nxt


# the default snapshot is never changed in place (a change makes a new one), so sharing it is safe
_switches: contextvars.ContextVar[Switches] = contextvars.ContextVar(
    "chainrule_switches", default=Switches())  # noqa: B039
current = _switches.get  # the hot path's read of the switches


class _State:
    """``state.grad_enabled`` etc.: reads the current context's switches; assignment changes them for
    the current thread or task only."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_switches.get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        _switches.set(_switches.get().changed(name, value))


state = _State()
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


def library_file(fname: str) -> bool:
    """Whether a code file is chainrule's or NumPy's (not the user's: frames there are skipped when
    naming the user's line)."""
    return fname.startswith(_PKG_DIR) or fname.startswith(_NUMPY_DIR)


class _Switch(ContextDecorator):
    """Set one switch for the ``with`` block (or the decorated call), restoring it afterwards."""

    name = ""
    value: Any = None

    def __enter__(self) -> _Switch:
        self._token = _switches.set(_switches.get().changed(self.name, self.value))
        return self

    def __exit__(self, *exc: object) -> None:
        _switches.reset(self._token)


class no_grad(_Switch):
    """Context manager / decorator: operations inside record no graph (parameter updates, evaluation)."""

    name, value = "grad_enabled", False


class enable_grad(_Switch):
    """Context manager / decorator: turn graph recording back on inside a ``no_grad`` block."""

    name, value = "grad_enabled", True


class expanded(_Switch):
    """Context manager: composite gates (sigmoid, tanh, softmax, ...) record their staged parts."""

    name = "expand"

    def __init__(self, on: bool = True) -> None:
        self.value = on


class detect_switch(_Switch):
    """The anomaly-mode switch (``cr.detect_anomaly`` is this, with its error class)."""

    name, value = "anomaly", True


class recording_masks(_Switch):
    """Context manager: record masks (``x > 0``) as forward-only nodes, as a trace does."""

    name, value = "record_masks", True


class nested(_Switch):
    """Context manager: one more level of differentiation is running (``grad`` inside ``grad``)."""

    name = "nesting"

    def __enter__(self) -> nested:
        cur = _switches.get()
        self._token = _switches.set(cur.changed("nesting", cur.nesting + 1))
        return self


def user_frame() -> str:
    """``file:line`` of the innermost caller outside chainrule (where the user wrote the op)."""
    f = _user_code_frame()
    return "<unknown>" if f is None else f"{f.f_code.co_filename}:{f.f_lineno}"


def refuse_none(out: Any, f: Any) -> None:
    """Raise if the function being differentiated or traced returned None (a forgotten ``return``, or
    an in-place method's result such as ``return x.sort()``), instead of differentiating a constant."""
    if out is None:
        raise TypeError(f"{getattr(f, '__name__', 'f')} returned None: it must return the value to differentiate "
                        "(a forgotten `return`? In-place methods such as x.sort() return None: use np.sort(x))")


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    return f"{tuple(shape)}"


def _op_error(gate: Gate, datas: list[Any], err: Exception, params: dict[str, Any]) -> Exception:
    shapes = " and ".join(_describe(d) for d in datas)
    extra = "".join(f", {k}={v!r}" for k, v in params.items() if k not in ("index", "indices"))
    # NumPy's LinAlgError (a singular matrix) keeps its class, so code catching it still does
    kind = ShapeError if isinstance(err, ValueError) and not isinstance(err, np.linalg.LinAlgError) else type(err)
    text = str(err)
    for prefix in {f"{gate.name}: ", f"{gate.np_name}: "}:
        text = text.removeprefix(prefix)  # NumPy's own message may already start with the op's name
    return kind(f"{gate.name}: {text} (input shapes {shapes}{extra}) at {user_frame()}")


class ShapeError(ValueError):
    """Operands whose shapes do not fit the operation (names the op and the shapes)."""


def _as_operand(a: Any) -> Any:
    if isinstance(a, (int, float, np.generic, np.ndarray)):
        return a
    if isinstance(a, complex):
        raise TypeError(f"complex number {a!r}: chainrule differentiates real functions only")
    if isinstance(a, (list, tuple)):
        return backend.xp.asarray(a)
    if isinstance(a, (bool, type(None))) or hasattr(a, "__array__"):
        return a
    raise TypeError(f"chainrule cannot use an operand of type {type(a).__name__!r}")


def _holds_tensor(seq: Any) -> bool:
    stack = [seq]
    while stack:
        s = stack.pop()
        for v in s:
            if isinstance(v, Tensor):
                return True
            if isinstance(v, (list, tuple)):
                stack.append(v)
    return False


_PLAIN = frozenset((int, float, bool, np.ndarray, np.float64, np.float32, np.int64))
#: Tensor and its subclasses (nn.Parameter): tensors of NumPy values, which the operators' fast path takes
_NUMPY_TENSORS: set[type] = set()
_NATIVE = backend.NATIVE
_EMPTY: dict[str, Any] = {}  # shared "no params" (never mutated)
_next_seq = itertools.count().__next__  # creation order: a topological order of the graph


def _result(gate: Gate, out: Any, parents: tuple[Any, ...], needs: tuple[bool, ...], track: bool,
            params: dict[str, Any], datas: Any, anomaly: bool, cls: type | None = None) -> Tensor:
    t = _new_tensor(cls or Tensor)
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
    if anomaly:
        from .autodiff import check_forward_anomaly

        check_forward_anomaly(t, gate, list(datas))
    return t


def apply(gate: Gate, *args: Any, **params: Any) -> Tensor:
    """Run ``gate`` on tensors and/or constants; record the node when a gradient will be needed.

    The operands' array library decides where it runs: NumPy's (``gate.fn``), or that of the other
    library's arrays among them (:func:`chainrule.backend.operands`)."""
    st = current()
    datas = []
    needs = []
    track = False
    foreign = False
    if any(isinstance(a, (list, tuple)) for a in args):  # a list holding tensors is stacked into one
        args = tuple(array(a) if isinstance(a, (list, tuple)) and _holds_tensor(a) else a for a in args)
    for a in args:
        cls = a.__class__
        if cls is Tensor:
            d = a.data
            r = a.requires_grad
            needs.append(r)
            track = track or r
        elif cls in _PLAIN:
            d = a
            needs.append(False)
        elif isinstance(a, Tensor):  # a LibraryTensor: its values belong to another array library
            d = a.data
            r = a.requires_grad
            needs.append(r)
            track = track or r
            foreign = foreign or cls not in _NUMPY_TENSORS
        else:
            d = _as_operand(a)
            needs.append(False)
            foreign = foreign or d.__class__ not in _NATIVE
        datas.append(d)
    track = track and st.grad_enabled and gate.differentiable
    if track and st.expand and gate.expand is not None:
        from . import functions

        return gate.expand(functions, *args, **params)
    fn = gate.fn
    lib = None
    if foreign:
        lib, datas = backend.operands(gate, datas, needs if track else ())
        if lib is not None:
            fn = lib.forward(gate)
    try:
        out = fn(*datas, **params)
    except (ValueError, IndexError, TypeError) as err:
        raise _op_error(gate, datas, err, params) from None
    parents = tuple(a if isinstance(a, Tensor) else d for a, d in zip(args, datas)) if track else ()
    t = _result(gate, out, parents, tuple(needs), track, params or _EMPTY, datas, st.anomaly,
                None if lib is None else LibraryTensor)
    if gate.view and isinstance(args[0], Tensor) and out.__class__ is np.ndarray and out.base is not None \
            and _shares(out, datas[0]):
        _link_view(t, args[0], gate, params or _EMPTY)
    if not track and st.record_masks and st.grad_enabled and any(
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
        # NumPy tensors and plain numbers and arrays here; everything else (a LibraryTensor, whose values
        # belong to another array library, lists, other scalar types) takes apply's path
        cls = a.__class__
        if cls is Tensor:
            ad = a.data
            ra = a.requires_grad
        elif cls in _PLAIN:
            ad = a
            ra = False
        elif cls in _NUMPY_TENSORS:  # nn.Parameter
            ad = a.data
            ra = a.requires_grad
        else:
            return apply(gate, a, b)
        cls = b.__class__
        if cls is Tensor:
            bd = b.data
            rb = b.requires_grad
        elif cls in _PLAIN:
            bd = b
            rb = False
        elif cls in _NUMPY_TENSORS:  # nn.Parameter
            bd = b.data
            rb = b.requires_grad
        else:
            return apply(gate, a, b)
        if ra or rb:
            st = current()
            if st.plain and (differentiable or st.record_masks):
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
    op.gate, op.reflected = gate, reflected  # (LibraryTensor's operators are made from these)
    return op


def _shares(out: np.ndarray, d: Any) -> bool:
    """Whether the view ``out`` shares ``d``'s memory: NumPy points a slice's or a transpose's base at
    the array owning the memory (``d`` or ``d.base``), checked first by identity (the common case, at
    no cost); other bases (as_strided's, a view of a view kept apart) by NumPy's overlap test."""
    b = out.base
    return b is d or (b is getattr(d, "base", None)) or np.may_share_memory(out, d)


def apply1(gate: Gate, a: Any) -> Tensor:
    """:func:`apply` for a unary gate without params."""
    if a.__class__ is not Tensor and a.__class__ not in _NUMPY_TENSORS:  # a number, an array, a LibraryTensor
        return apply(gate, a)
    st = current()
    track = a.requires_grad and st.grad_enabled and gate.differentiable
    if track and st.expand and gate.expand is not None:
        return apply(gate, a)
    try:
        out = gate.fn(a.data)
    except (ValueError, IndexError, TypeError) as err:
        raise _op_error(gate, [a.data], err, _EMPTY) from None
    t = _result(gate, out, (a,), (True,), track, _EMPTY, (a.data,), st.anomaly)
    if not track and st.record_masks and st.grad_enabled and _depends(a):
        _record_forward_only(t, gate, (a,), _EMPTY)
    return t


# ---------------------------------------------------------------------------------------------
# in-place changes: recorded as new nodes, never written into values a graph holds
# ---------------------------------------------------------------------------------------------

class _IdentityMap(dict):  # type: ignore[type-arg]
    """A map keyed by object identity that forgets an entry when its key is collected (a
    WeakKeyDictionary would compare tensors with ``==``, which is elementwise). A dict underneath,
    so the hot path's "is anything in it?" is the dict's own truth test."""

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, id(key))

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, id(key))[1]

    def get(self, key: Any, default: Any = None) -> Any:
        hit = dict.get(self, id(key))
        return default if hit is None else hit[1]

    def __setitem__(self, key: Any, value: Any) -> None:
        k = id(key)
        pop = self.pop
        dict.__setitem__(self, k, (weakref.ref(key, lambda _r: pop(k, None)), value))


#: tensor -> the version it was before ``x[i] = v`` made it a new node (older versions chained)
_PREVIOUS = _IdentityMap()
#: tensor -> creation number at which its values were last written in place (``w -= lr * g``)
_WRITTEN = _IdentityMap()
#: the creation number of the last such write: a node made after it read no value written since, so
#: the backward pass checks only nodes older than it (in a training loop, none: one comparison each)
WRITTEN_LAST = [0]


def mark_written(t: Tensor) -> None:
    """Note that ``t``'s values were changed in place: a backward pass through a node made earlier
    that read them raises instead of using the new values (optimizers call this for their updates).
    The tensors sharing its memory (its base, the other views of it) changed too, and are marked."""
    seq = _next_seq()
    for m in _family(t):
        _WRITTEN[m] = seq
    WRITTEN_LAST[0] = seq


# ---- views: x[0:2], x.T, x.reshape(3) share x's memory in NumPy, so a write through one reaches the
# other. A recorded write copies values (the graph keeps the old ones), so the sharing is redone by
# hand: the new values are scattered into the base (recorded: gradients follow), and every view of
# the base is taken again from its new version (recorded too), as PyTorch rebases views.

def _link_view(view: Tensor, base: Tensor, gate: Gate, params: dict[str, Any]) -> None:
    """Remember that ``view`` is ``gate(base, **params)`` sharing ``base``'s memory."""
    view._view = (base, gate, params)
    refs = getattr(base, "_views", None)
    if refs is None:
        base._views = refs = []
    elif len(refs) >= 8 and not len(refs) & (len(refs) - 1):  # at powers of two: forget the views collected
        refs[:] = [r for r in refs if r() is not None]
    refs.append(weakref.ref(view))


def _live_views(t: Tensor) -> list[Tensor]:
    refs = getattr(t, "_views", None)
    if not refs:
        return []
    return [v for r in refs if (v := r()) is not None and getattr(v, "_view", None) is not None]


def _family(t: Tensor) -> list[Tensor]:
    """``t``, the tensor it is a view of (up to the one owning the memory) and every live view of those."""
    link = getattr(t, "_view", None)
    if link is None and not getattr(t, "_views", None):
        return [t]
    while link is not None:
        t = link[0]
        link = getattr(t, "_view", None)
    out, todo = [], [t]
    while todo:
        m = todo.pop()
        out.append(m)
        todo.extend(_live_views(m))
    return out


def _refuse_write_into_leaf_view(t: Tensor, what: str) -> None:
    """A recorded write through a view of a leaf that requires grad, outside any differentiation
    (``v = w[0:2]; v += 1`` on a parameter): carried into the leaf it would turn the leaf into a node,
    and its gradient would be lost. Raise, as PyTorch does, naming the two ways to write it."""
    link = getattr(t, "_view", None)
    if link is None:
        return
    root = link[0]
    while getattr(root, "_view", None) is not None:
        root = root._view[0]
    st = current()
    if root._gate is None and root.requires_grad and not (st.nesting > 0 or st.record_masks):
        raise RuntimeError(
            f"{what}: this tensor is a view of a leaf that requires grad ({root.name or 'a parameter'}); writing "
            "through it would make the leaf a node and lose its gradient. For an update of the values write it "
            "under cr.no_grad() (w[0:2] -= lr * g), else work on a copy (w.copy()), at " + user_frame())


#: view gates whose results NumPy makes read-only whatever their base
_READ_ONLY_VIEWS = frozenset({"broadcast_to", "diagonal", "sliding_window_view"})


def _refuse_read_only_view(t: Tensor, what: str) -> None:
    """A recorded write into a view NumPy makes read-only (broadcast_to, diagonal, sliding windows)
    raises as NumPy does, instead of writing into a copy that nothing else sees."""
    link = getattr(t, "_view", None)
    # NumPy's views are read-only where the view makes them so (broadcast_to, diagonal, windows), or
    # where their base is (then NumPy's own refusal is raised)
    if link is not None and t.data.__class__ is np.ndarray and not t.data.flags.writeable and (
            link[1].name in _READ_ONLY_VIEWS or (
                getattr(link[0].data, "flags", None) is not None and link[0].data.flags.writeable)):
        raise ValueError(f"{what}: this tensor is a read-only view made by {link[1].name} (NumPy refuses to write "
                         f"into it too); write into a copy (.copy()) or into the array it views, at {user_frame()}")


def _scatter(base: Tensor, view: Tensor, gate: Gate, params: dict[str, Any]) -> Tensor:
    """``base`` with ``view``'s values written where ``gate(base, **params)`` reads them (recorded)."""
    if gate is _GETITEM:
        return apply(_SETITEM, base, view, index=params["index"])
    # where each element of the view lives in the base: the view op applied to the positions
    where = np.asarray(gate.fn(np.arange(base.size).reshape(base.shape), **params))
    if np.unique(where).size != where.size:
        raise ValueError(f"writing through a view made by {gate.name} that shows an element of its base more "
                         f"than once is not supported: write into a copy (.copy()), at {user_frame()}")
    flat = apply(_RESHAPE, base, shape=(-1,))
    return apply(_RESHAPE, apply(_SETITEM, flat, view, index=where), shape=tuple(base.shape))


def _write_through(t: Tensor) -> None:
    """After a recorded write made ``t`` a new node: carry its values into the tensors it is a view of,
    then take every view of those again from their new versions (t among them)."""
    link = getattr(t, "_view", None)
    if link is None and not getattr(t, "_views", None):
        return
    while link is not None:
        base, gate, params = link
        old = _clone(base)
        _become(base, _scatter(old, t, gate, params), old)
        t, link = base, getattr(base, "_view", None)
    todo = [t]
    while todo:
        base = todo.pop()
        for v in _live_views(base):
            _, gate, params = v._view
            old = _clone(v)
            _become(v, apply(gate, base, **params), old)
            todo.append(v)


def _records(st: Switches, target: Tensor, other: Any) -> bool:
    """Whether an in-place change of ``target`` must be recorded as a node: it takes part in a graph
    (an intermediate, a mask, a value that requires grad) while recording, or it is an input being
    differentiated (inside ``cr.grad``, ``cr.trace``, ``cr.compile``). A leaf changed outside any
    differentiation (an optimizer's ``w -= lr * w.grad``) is updated in place instead."""
    if not st.grad_enabled:
        return False
    if target._gate is not None or (isinstance(other, Tensor) and (other.requires_grad or other._gate is not None)):
        return True
    return target.requires_grad and (st.nesting > 0 or st.record_masks)


def parent_at(p: Any, seq: int) -> Any:
    """The version of ``p`` that existed when the node with creation number ``seq`` was made (``p``
    may have been rebased by an item assignment since)."""
    while isinstance(p, Tensor) and getattr(p, "_seq", -1) > seq and p in _PREVIOUS:
        p = _PREVIOUS[p]
    return p


def parents_of(t: Tensor) -> tuple[Any, ...]:
    """``t``'s parents as they were when ``t`` was made."""
    parents = t._parents
    if not _PREVIOUS or parents is None:
        return parents
    return tuple(parent_at(p, t._seq) for p in parents)


def original(t: Tensor) -> Tensor:
    """The first version of a tensor that item assignment rebased (an input that was changed)."""
    while t in _PREVIOUS:
        t = _PREVIOUS[t]
    return t


def topological(roots: list[Tensor]) -> list[Tensor]:
    """The tensors the ``roots`` depend on, each after its inputs (post-order, inputs left to right;
    iterative, so deep graphs need no recursion), with item assignments' versions resolved."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._gate is not None:
            if t._parents is None:
                raise RuntimeError("this tensor's graph was released by backward(); trace it before calling "
                                   "backward(), or call backward(retain_graph=True)")
            for p in reversed(parents_of(t)):
                if isinstance(p, Tensor) and id(p) not in seen:
                    stack.append((p, False))
    return order


def check_written(t: Tensor, parents: tuple[Any, ...]) -> None:
    """Raise if a value that the node ``t`` read was changed in place after ``t`` was made."""
    if t._gate.local_const is not None and all(c is not None for c in t._gate.local_const):
        return  # add, sub, neg: their gradients do not read the values
    for p in parents:
        if isinstance(p, Tensor):
            w = _WRITTEN.get(p)
            if w is not None and w > t._seq:
                name = f" {p.name!r}" if p.name else ""
                raise RuntimeError(
                    f"a value{name} of shape {p.shape} that the {t._gate.name} gate needs for its gradient was "
                    "changed in place after the gate used it (e.g. `w -= lr * w.grad` between the forward pass "
                    "and backward()); compute the forward pass again after the change")


class Tensor:
    """An array with an optional gradient; operations on it build the computational graph.

    ``.data`` is the NumPy array, ``.grad`` the accumulated gradient of a leaf (a NumPy array, or
    None before any backward pass). Leaf gradients *accumulate* across ``backward()`` calls, as in
    PyTorch: reset them with ``x.grad = None`` (or an optimizer's ``zero_grad()``).
    """

    # _view (set on views only): (base tensor, view gate, params); _views (set on bases only): weak
    # references to the tensors that are views of this one. Read with getattr(t, "_view", None).
    __slots__ = ("data", "grad", "requires_grad", "name", "_gate", "_parents", "_needs", "_params", "_src",
                 "_seq", "_args", "_view", "_views", "__weakref__")
    __array_priority__ = 1000.0

    def __new__(cls, data: Any = None, *args: Any, **kwargs: Any) -> Tensor:
        # values of another array library than NumPy make a LibraryTensor (see there)
        return object.__new__(tensor_class(data, cls))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_numpy_class" not in cls.__dict__:  # (a library class names the NumPy class it is made for)
            _NUMPY_TENSORS.add(cls)

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        elif isinstance(data, (list, tuple)) and _holds_tensor(data):
            data = array(data).data
        xp = backend.namespace_of(data)
        if dtype is not None and xp is not backend.xp:
            dtype = _library_dtype(xp, dtype)
        arr = xp.asarray(data, dtype=dtype)
        kind = backend.kind(arr.dtype)
        if kind not in "f":
            if kind in "biu" and dtype is None and requires_grad:
                # gradients need floats: integer input is promoted
                arr = arr.astype(np.float64) if xp is backend.xp else xp.astype(arr, xp.float64)
            elif requires_grad and kind == "c":
                raise TypeError("complex tensors cannot require gradients: chainrule differentiates real "
                                "functions (split a complex value into its real and imaginary parts)")
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
        self._seq = -1

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
    def itemsize(self) -> int:
        return backend.numpy_dtype(self.data.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.itemsize * self.size

    @property
    def strides(self) -> tuple[int, ...]:
        """The strides of a C-contiguous array of this shape (what ``as_strided`` on a tensor walks)."""
        return _c_strides(self.shape, self.itemsize)

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
        if self.requires_grad and current().grad_enabled:
            _refuse_storing_into_numpy()
            raise TypeError(
                f"{what} on a tensor that requires grad (also what math.exp, math.sqrt, ... do) would drop "
                "its gradient: use chainrule's or NumPy's functions (cr.exp, np.sqrt, ...), or .item() "
                "for the plain value"
            )

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.data.__class__ not in _NATIVE and backend.library_of(self.data) is not None:
            return f"tensor({self.data!r}{extra})"  # the library's own summary (a Dask array stays lazy)
        body = np.array2string(np.asarray(self.data), separator=", ", prefix="tensor(")
        if self.data.dtype != np.float64 and self.data.dtype.kind == "f":
            extra = f", dtype={self.data.dtype}" + extra
        return f"tensor({body}{extra})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.requires_grad and current().grad_enabled:
            caller = _numpy_caller()
            if caller is not None:  # a NumPy function that does not dispatch (np.lib.stride_tricks.as_strided)
                raise TypeError(
                    f"np.{caller} converts its input to a plain array (NumPy does not let it dispatch to "
                    "chainrule), so the gradient would be lost: use "
                    f"cr.{caller.rsplit('.', 1)[-1]} (the same arguments) on tensors that require grad")
            _refuse_storing_into_numpy()
            line = _user_line()
            if ".dot(" in line:
                first = ("an ndarray's .dot method was given a tensor (X.dot(W) with X a NumPy array: NumPy does "
                         "not let ndarray methods dispatch to chainrule): write X @ W or np.dot(X, W)")
            elif "contiguousarray" in line or "asfortranarray" in line:
                first = ("np.ascontiguousarray / np.asfortranarray convert their input to a plain array without "
                         "dispatching to chainrule: a tensor needs no contiguous copy, so drop the call (or use "
                         "x.copy() for a copy)")
            else:
                first = ("a NumPy function or ndarray method that does not dispatch to chainrule converted a tensor "
                         "to a plain array (X.dot(W) with X a NumPy array: write X @ W or np.dot(X, W); "
                         "np.ascontiguousarray(t): drop it)")
            raise TypeError(
                f"cannot turn a tensor that requires grad into a plain NumPy array, the gradient would be lost: "
                f"{first}, at {user_frame()}. Use .detach().numpy() for its values. NumPy converts lists of "
                "tensors before chainrule sees them: write cr.array([...]) for np.array([...]), and call "
                "chainrule's function on a list (cr.mean([a, b]) for np.mean([a, b]))"
            )
        arr = np.asarray(self.data)
        return arr.astype(dtype) if dtype is not None else arr

    # Dask's own functions (dask.array.sum, dot, mean, stack...) do not dispatch to chainrule: they wrap a
    # tensor as an array-like with from_array / asarray and compute on its values outside the graph, so
    # the gradient would come back as zeros. Both routes ask the tensor first (asarray calls
    # to_dask_array, from_array tokenizes it), which is where the one clear error is raised.
    def to_dask_array(self) -> Any:
        """``dask.array.asarray(t)``: refused while ``t`` requires grad (the gradient would be lost);
        otherwise the values as a Dask array."""
        self._refuse_dask("dask.array.asarray")
        import dask.array as da

        return da.asarray(self.data)

    def __dask_tokenize__(self) -> Any:
        self._refuse_dask("dask.array.from_array")
        from dask.base import tokenize

        return type(self).__name__, tokenize(self.data)

    def _refuse_dask(self, default: str) -> None:
        if self.requires_grad and current().grad_enabled:
            name, where = _dask_caller()
            name = name or default
            short = name.rsplit(".", 1)[-1]
            instead = f"NumPy's np.{short} (it dispatches to chainrule and keeps the Dask arrays), " if hasattr(
                np, short) else ""
            raise TypeError(
                f"{name} was given a chainrule tensor that requires grad, at {where}: Dask's own functions compute "
                "on the tensor's values outside chainrule, so the gradient would be lost (it would come out as "
                f"zeros). Use {instead}chainrule's functions (cr.sum, cr.dot, cr.stack, ...) or the tensor's "
                "methods (t.sum(), t.mean())")

    # ---- conversions --------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (shares memory with a NumPy tensor; a Dask array is computed, a
        CuPy array copied from the GPU)."""
        return backend.to_numpy(self.data)

    def item(self, *args: Any) -> Any:
        """The single value of a one-element tensor as a Python number."""
        data = self.data if self.data.__class__ in _NATIVE else backend.to_numpy(self.data)
        return data.item(*args)

    def tolist(self) -> Any:
        return backend.to_numpy(self.data).tolist()

    def detach(self) -> Tensor:
        """The same values, cut off from the graph (no gradient flows through the result)."""
        return Tensor(self.data)

    def copy(self) -> Tensor:
        """A copy: a node of its own (changing it never changes this tensor)."""
        out = apply(GATES["identity"], self)
        if out.data is self.data or (isinstance(self.data, np.ndarray) and np.shares_memory(out.data, self.data)):
            out.data = self.data.copy()
        return out

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` on a leaf in place; returns self."""
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be changed on leaf tensors")
        if requires_grad and backend.kind(self.data.dtype) not in "fc":
            self.data = _cast(self.data, np.float64)
        if requires_grad and self._gate is not None:  # a forward-only node becomes a leaf of its own
            self._gate, self._parents, self._needs, self._params = None, (), (), None
        self.requires_grad = requires_grad
        return self

    def astype(self, dtype: Any, copy: bool = True) -> Tensor:
        """A copy converted to ``dtype`` (the gradient flows back, converted to the input's dtype)."""
        if not self.requires_grad:
            return Tensor(_cast(self.data, dtype), requires_grad=False)
        return _astype(self, dtype)

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
    __mod__ = binary_op(GATES["remainder"])
    __rmod__ = binary_op(GATES["remainder"], reflected=True)
    __floordiv__ = binary_op(GATES["floor_divide"])
    __rfloordiv__ = binary_op(GATES["floor_divide"], reflected=True)
    __and__ = binary_op(GATES["logical_and"])
    __rand__ = binary_op(GATES["logical_and"], reflected=True)
    __or__ = binary_op(GATES["logical_or"])
    __ror__ = binary_op(GATES["logical_or"], reflected=True)
    __xor__ = binary_op(GATES["logical_xor"])
    __rxor__ = binary_op(GATES["logical_xor"], reflected=True)

    def __neg__(self) -> Tensor:
        return apply1(_NEG, self)

    def __pos__(self) -> Tensor:
        return self.copy()  # NumPy's +y is a new array: writing into it never changes y

    def __abs__(self) -> Tensor:
        return apply(GATES["abs"], self)

    # In-place operators. While recording (the tensor takes part in a graph, or is an input being
    # differentiated) `x op= y` turns the tensor object into a new node computed from its previous
    # version, as `x[...] = x op y` does: every name bound to it, and the tensors it is a view of or
    # that view it, see the new values (as in NumPy), while no value the graph holds is overwritten
    # and the caller's arrays are never changed. Otherwise (an optimizer's `w -= lr * w.grad`, a
    # plain constant) the values change in place, as in NumPy.
    def _inplace(self, gate: Gate, other: Any) -> Tensor:
        if _records(current(), self, other):
            _refuse_read_only_view(self, f"{gate.name}=")
            _refuse_write_into_leaf_view(self, f"{gate.name}=")
            old = _clone(self)
            new = apply(gate, old, old if other is self else other)
            if new.shape != self.shape:
                raise ShapeError(_non_broadcastable(gate, self.shape, new.shape))
            if new.data.dtype != old.data.dtype:
                new.data = _cast(new.data, old.data.dtype)  # NumPy keeps the target's dtype
            _become(self, new, old)
            _write_through(self)
            return self
        other = other.data if isinstance(other, Tensor) else other
        self._own()
        res = apply(gate, self.data, other).data
        if res.shape != self.data.shape:
            raise ShapeError(_non_broadcastable(gate, self.shape, res.shape))
        if backend.is_lazy(self.data) or not hasattr(self.data, "__setitem__"):
            # a Dask array is never written, and a NumPy scalar (t[0] of a tensor, before t[0] += 1
            # stores it back) cannot be: the tensor takes the new value, in the target's dtype
            self.data = res if backend.is_lazy(self.data) else _cast(res, np.asarray(self.data).dtype)[()]
        else:
            self.data[...] = res
        mark_written(self)
        return self

    def _own(self) -> None:
        """Before an unrecorded in-place write: an input being differentiated (``_seq == -2``, made by
        grad and friends) may hold the caller's array; it takes a copy of its own first, so the
        caller's array never changes (and is an ordinary leaf from then on)."""
        if getattr(self, "_seq", 0) == -2:
            d = self.data
            self.data = d.copy() if hasattr(d, "copy") else backend.namespace_of(d).asarray(d, copy=True)
            self._seq = -1

    def __iadd__(self, other: Any) -> Tensor:
        return self._inplace(_ADD, other)

    def __isub__(self, other: Any) -> Tensor:
        return self._inplace(_SUB, other)

    def __imul__(self, other: Any) -> Tensor:
        return self._inplace(_MUL, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._inplace(_DIV, other)

    def __ipow__(self, other: Any) -> Tensor:
        return self._inplace(_POW, other)

    def __imatmul__(self, other: Any) -> Tensor:
        return self._inplace(_MATMUL, other)

    def __imod__(self, other: Any) -> Tensor:
        return self._inplace(GATES["remainder"], other)

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
        """``x[index] = value``. While recording, x becomes a new node (a copy of the old values with
        the new ones written in); nodes that used x before keep the old version, so their gradients
        stay right. Otherwise the values are written in place, as in NumPy."""
        if isinstance(value, (list, tuple)) and _holds_tensor(value):
            value = array(value)
        if not _records(current(), self, value):
            self._own()
            self.data[_plain_index(index)] = value.data if isinstance(value, Tensor) else value
            mark_written(self)
            return
        _refuse_read_only_view(self, "item assignment")
        _refuse_write_into_leaf_view(self, "item assignment")
        old = _clone(self)
        if _is_mask_for(index, self) and np.ndim(value.data if isinstance(value, Tensor) else value) == 0:
            # x[mask] = c is where(mask, c, x): the mask stays a node, recomputed by compile
            new = apply(GATES["where"], index, value, old)
            if new.data.dtype != old.data.dtype:
                new.data = new.data.astype(old.data.dtype)
        else:
            new = apply(GATES["setitem"], old, value, index=_plain_index(index))
        _become(self, new, old)
        _write_through(self)

    # ---- methods mirroring NumPy's --------------------------------------------------------
    def reshape(self, *shape: Any, **kw: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        from .functions import reshape

        return reshape(self, shape, **kw)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return apply(GATES["transpose"], self, axes=axes or None)

    def ravel(self, order: str = "C") -> Tensor:
        """One dimension: a view of this tensor where NumPy's ravel makes one (a write through it
        reaches this tensor)."""
        from .functions import reshape

        return reshape(self, (-1,), order=order)

    def flatten(self, order: str = "C") -> Tensor:
        """One dimension, always a copy (as NumPy's flatten: a write into it never reaches this tensor)."""
        out = self.ravel(order)
        if getattr(out, "_view", None) is not None:
            out._view = None  # no longer a view: the base's weak list skips it
            out.data = out.data.copy()
        return out

    def squeeze(self, axis: Any = None) -> Tensor:
        from .functions import squeeze

        return squeeze(self, axis)

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        from .functions import swapaxes

        return swapaxes(self, axis1, axis2)

    def dot(self, other: Any) -> Tensor:
        from .functions import dot

        return dot(self, other)

    def clip(self, min: Any = None, max: Any = None, **kw: Any) -> Tensor:  # noqa: A002 - NumPy's names
        from .functions import clip

        return clip(self, min, max, **kw)

    def trace(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
        from .functions import trace

        return trace(self, offset, axis1, axis2)

    def take(self, indices: Any, axis: int | None = None) -> Tensor:
        from .functions import take

        return take(self, indices, axis)

    def conj(self) -> Tensor:
        return self

    conjugate = conj

    @property
    def real(self) -> Tensor:
        return self

    def fill(self, value: Any) -> None:
        """Set every element to ``value`` (recorded like ``x[...] = value``)."""
        self[...] = value

    def sort(self, axis: int = -1) -> None:
        """Sort in place along ``axis`` (recorded like an item assignment: a gather of the order)."""
        from .functions import sort

        self[...] = sort(self, axis=axis)

    # truth tests and positions: plain NumPy answers, they have no gradient
    def all(self, axis: Any = None, **kw: Any) -> Any:
        """Whether every element is true (a plain NumPy answer: truth values have no gradient)."""
        return np.all(self.data, axis=axis, **kw)

    def any(self, axis: Any = None, **kw: Any) -> Any:
        """Whether some element is true (a plain NumPy answer: truth values have no gradient)."""
        return np.any(self.data, axis=axis, **kw)

    def argmax(self, axis: Any = None, **kw: Any) -> Any:
        return np.argmax(self.data, axis=axis, **kw)

    def argmin(self, axis: Any = None, **kw: Any) -> Any:
        return np.argmin(self.data, axis=axis, **kw)

    def argsort(self, axis: int = -1, **kw: Any) -> Any:
        return np.argsort(self.data, axis=axis, **kw)

    def nonzero(self) -> Any:
        return np.nonzero(self.data)

    # ---- NumPy dispatch ------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from .functions import UFUNCS

        fn = UFUNCS.get(ufunc) if method == "__call__" else None
        if fn is None:  # one of SciPy's special functions (scipy.special.erf), found without importing SciPy
            from .special import scipy_ufunc, ufunc_label

            fn = scipy_ufunc(ufunc) if method == "__call__" else None
            name = ufunc_label(ufunc) + ("" if method == "__call__" else f".{method}")
        else:
            name = f"np.{ufunc.__name__}"
        if fn is not None and "out" not in kwargs:
            bad = [k for k, v in kwargs.items() if v is not None and k not in ("casting", "dtype")]
            if bad:
                raise TypeError(f"{name}: argument(s) {', '.join(bad)} are not supported on chainrule tensors")
            return fn(*inputs)
        if _recording(inputs) or _recording(kwargs.get("out") or ()):
            if fn is not None:
                raise TypeError(f"{name}: out= is not supported on tensors that take part in a gradient "
                                "(write y = f(x); an output array cannot carry the graph)")
            hint = " (only plain calls of ufuncs are)" if method != "__call__" else ""
            raise TypeError(f"{name} is not supported by chainrule on tensors that require grad: it has no "
                            f"gradient rule{hint}. Inside cr.no_grad(), or on tensors that need no gradient, "
                            "it runs on the values")
        return getattr(ufunc, method)(*_values(inputs), **_values(kwargs))

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from .functions import ARRAY_FUNCTIONS, VALUE_FUNCTIONS

        fn = ARRAY_FUNCTIONS.get(func)
        if fn is not None:
            return fn(*args, **kwargs)
        if func in VALUE_FUNCTIONS or not (_recording(args) or _recording(kwargs)):
            return func(*_values(args), **_values(kwargs))  # no gradient involved: NumPy on the values
        where = getattr(func, "__module__", "numpy") or "numpy"
        name = where.replace("numpy", "np", 1) + "." + func.__name__
        raise TypeError(
            f"{name} is not supported by chainrule on tensors that require grad: it has no gradient rule "
            "(inside cr.no_grad(), or with .detach(), it runs on the values)")


def _user_code_frame() -> Any:
    """The innermost frame of code outside chainrule and NumPy (the user's line that is running)."""
    f = sys._getframe(1)
    while f is not None and library_file(f.f_code.co_filename):
        f = f.f_back
    return f


def _user_line() -> str:
    import linecache

    f = _user_code_frame()
    return "" if f is None else linecache.getline(f.f_code.co_filename, f.f_lineno)


class StoredIntoArrayError(TypeError):
    """A tensor that requires grad was stored into an item of a NumPy array (``out[i] = t``)."""


def clear_numpy_store_error(e: BaseException) -> None:
    """NumPy replaces the error of ``out[i] = t`` by "setting an array element with a sequence",
    keeping chainrule's :class:`StoredIntoArrayError` as its cause: raise that one instead."""
    if isinstance(e, ValueError) and isinstance(e.__cause__, StoredIntoArrayError):
        raise e.__cause__.with_traceback(None) from None


def _refuse_storing_into_numpy() -> None:
    """Raise if the user's line is storing a tensor into an item of a NumPy array (``out[i] = t``, which
    NumPy does by converting t to a number or an array: the gradient would be lost, and NumPy's own
    message, "setting an array element with a sequence", does not say why)."""
    import dis

    f = _user_code_frame()
    if f is None or f.f_lasti < 0 or dis.opname[f.f_code.co_code[f.f_lasti]] != "STORE_SUBSCR":
        return
    raise StoredIntoArrayError(
        "a tensor that requires grad cannot be stored into a NumPy array (out[i] = t): the array keeps plain "
        "numbers, so the gradient would be lost. Collect the pieces in a list and stack them "
        "(cr.stack(rows), cr.array([...])), or make the array a tensor, whose item assignment is recorded: "
        f"out = cr.tensor(np.zeros(shape)); out[i] = t, at {user_frame()}")


def _numpy_caller() -> str | None:
    """The NumPy function (``lib.stride_tricks.as_strided``) that is converting a tensor, if any."""
    f = sys._getframe(2)
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if module.startswith("numpy"):
            name = f.f_code.co_name
            if not name.startswith("_"):
                public = {"numpy.lib._stride_tricks_impl": "lib.stride_tricks"}.get(module)
                return f"{public}.{name}" if public else name
        elif not module.startswith("chainrule"):
            return None
        f = f.f_back
    return None


def _dask_caller() -> tuple[str | None, str]:
    """The Dask function called from the user's code (``dask.array.sum``) that is converting a tensor,
    and ``file:line`` of that call."""
    f, found = sys._getframe(2), None
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if module.startswith("dask"):
            if not f.f_code.co_name.startswith("_"):
                found = f.f_code.co_name
        elif not module.startswith("chainrule"):
            break
        f = f.f_back
    where = "<unknown>" if f is None else f"{f.f_code.co_filename}:{f.f_lineno}"
    return (None if found is None else f"dask.array.{found}"), where


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def _recording(obj: Any) -> bool:
    """Whether ``obj`` (nested in lists, tuples, dicts) holds a tensor that requires grad while recording."""
    if not current().grad_enabled:
        return False
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if o.requires_grad:
                return True
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return False


def _values(obj: Any) -> Any:
    """``obj`` with every tensor replaced by its values (inside lists, tuples and dicts too)."""
    if isinstance(obj, Tensor):
        return obj.data
    if isinstance(obj, tuple):
        return tuple(_values(o) for o in obj)
    if isinstance(obj, list):
        return [_values(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _values(v) for k, v in obj.items()}
    return obj


def _non_broadcastable(gate: Gate, target: tuple[int, ...], result: tuple[int, ...]) -> str:
    """NumPy's refusal of ``x op= y`` whose result does not fit in x (it would have to grow x)."""
    return (f"{gate.name}=: non-broadcastable output operand with shape {tuple(target)} doesn't match the "
            f"broadcast shape {tuple(result)} (an in-place update cannot change the shape of its target, as "
            f"in NumPy; write x = x {_SYMBOL.get(gate.name, gate.name)} y for a new array) at {user_frame()}")


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "matmul": "@", "remainder": "%"}


def _is_mask_for(index: Any, x: Tensor) -> bool:
    data = index.data if isinstance(index, Tensor) else index
    return isinstance(data, np.ndarray) and data.dtype == bool and data.shape == x.shape


def _clone(t: Tensor) -> Tensor:
    """A new object holding ``t``'s current version (values, node, name)."""
    c = _new_tensor(t.__class__)
    for slot in ("data", "grad", "requires_grad", "name", "_gate", "_parents", "_needs", "_params", "_src",
                 "_seq", "_args"):
        setattr(c, slot, getattr(t, slot, None if slot != "_seq" else -1))
    if t in _PREVIOUS:
        _PREVIOUS[c] = _PREVIOUS[t]
    return c


def _become(t: Tensor, new: Tensor, old: Tensor) -> None:
    """Make the object ``t`` the node ``new`` (whose first input is ``old``, t's previous version)."""
    for slot in ("data", "requires_grad", "_gate", "_parents", "_needs", "_params", "_src", "_args"):
        setattr(t, slot, getattr(new, slot, None))
    t._seq = getattr(new, "_seq", _next_seq())
    t.grad = None
    if t.__class__ is not new.__class__:
        t.__class__ = new.__class__
    _PREVIOUS[t] = old


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
    out.data = _cast(out.data, dtype)
    return out


def _cast(data: Any, dtype: Any) -> Any:
    """``data.astype(dtype)`` for an array of any library (the standard's ``astype`` is a function)."""
    if data.__class__ in _NATIVE or backend.library_of(data) is None:
        return data.astype(dtype)
    xp = backend.library_of(data).xp
    return xp.astype(data, _library_dtype(xp, dtype))


def _library_dtype(xp: Any, dtype: Any) -> Any:
    """A NumPy dtype (``np.float32``, ``"float64"``) as the array module ``xp``'s dtype of that name."""
    if isinstance(dtype, (type, str, np.dtype)):
        return getattr(xp, np.dtype(dtype).name)
    return dtype


_ADD, _SUB, _MUL, _DIV, _POW, _NEG, _MATMUL, _GETITEM, _SETITEM, _RESHAPE = (
    GATES[n] for n in ("add", "sub", "mul", "div", "pow", "neg", "matmul", "getitem", "setitem", "reshape")
)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None) -> Tensor:
    """A new leaf tensor from ``data`` (scalar, list, array); integers are promoted to float64 when
    ``requires_grad`` is set, since only floating-point values have gradients."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


def array(obj: Any, dtype: Any = None) -> Tensor:
    """``np.array`` for tensors: nested lists of tensors and numbers are stacked, so the gradient
    reaches every tensor in them (``cr.array([x, 2 * y])``)."""
    if isinstance(obj, Tensor):
        return obj if dtype is None else obj.astype(dtype)
    if isinstance(obj, (list, tuple)) and _holds_tensor(obj):
        from .functions import stack

        out = stack([array(o) if isinstance(o, (list, tuple)) else o for o in obj])
        return out if dtype is None else out.astype(dtype)
    return Tensor(obj, dtype=dtype)


_new_tensor = object.__new__  # the operators' allocation, without Tensor.__new__'s choice of class


_NUMPY_TENSORS.add(Tensor)


class LibraryTensor(Tensor):
    """A tensor whose values belong to another array library than NumPy (CuPy, Dask, ...). Made by
    ``Tensor(...)`` and by operations on such values; its operators take :func:`apply`'s path, which
    finds the library, so the NumPy tensor's operators check for nothing. A subclass of Tensor
    (``nn.Parameter``) gets its own library class the same way: ``Library<Name>(<Name>, LibraryTensor)``."""

    __slots__ = ()
    _numpy_class = Tensor


_LIBRARY_CLASSES: dict[type, type] = {Tensor: LibraryTensor}


def tensor_class(data: Any, base: type | None = None) -> type:
    """The class of a tensor of ``base`` (Tensor, or a subclass such as ``nn.Parameter``) holding
    ``data``: ``base`` itself for NumPy's values (and numbers, lists), else its library class."""
    if base is None:
        base = data.__class__ if isinstance(data, Tensor) else Tensor
    if isinstance(data, Tensor):
        data = data.data
    base = base.__dict__.get("_numpy_class", base)
    if data.__class__ in _NATIVE or isinstance(data, (list, tuple)) or backend.library_of(data) is None:
        return base
    lib_cls = _LIBRARY_CLASSES.get(base)
    if lib_cls is None:
        lib_cls = _LIBRARY_CLASSES[base] = type(f"Library{base.__name__}", (base, LibraryTensor),
                                                {"__slots__": (), "_numpy_class": base,
                                                 "__module__": base.__module__})
    return lib_cls


def _library_op(gate: Gate, reflected: bool = False) -> Any:
    def op(a: Any, b: Any) -> Tensor:
        return apply(gate, b, a) if reflected else apply(gate, a, b)

    op.__name__ = gate.name
    return op


for _name, _value in list(Tensor.__dict__.items()):
    if hasattr(_value, "reflected"):  # an operator made by binary_op
        setattr(LibraryTensor, _name, _library_op(_value.gate, _value.reflected))

# unused-by-name but part of the split_call import surface for functions.py
__all__ = ["Tensor", "LibraryTensor", "tensor", "array", "apply", "apply1", "binary_op", "no_grad", "enable_grad",
           "expanded", "state", "current", "ShapeError", "split_call"]
