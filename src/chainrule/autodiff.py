"""The backward pass (reverse-mode chain rule over the recorded graph) and the functional API.

The walk is iterative (no recursion limit on deep graphs). Gate rules are evaluated either on raw
arrays (``backend.array_ops``: fast, records nothing) or, with ``create_graph=True``, with
chainrule's own functions, so the gradients are tensors whose graph can be differentiated again.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from heapq import heappop, heappush
from typing import Any

import numpy as np

from . import backend, functions
from .gates import GATES, Gate, pullback
from .tensor import (
    _PREVIOUS,
    _WRITTEN,
    WRITTEN_LAST,
    Tensor,
    _new_tensor,
    apply,
    check_written,
    clear_numpy_store_error,
    current,
    detect_switch,
    enable_grad,
    library_file,
    nested,
    original,
    parent_at,
    refuse_none,
    tensor_class,
    user_frame,
)

__all__ = ["backward", "grad", "value_and_grad", "vjp", "detect_anomaly", "AnomalyError", "ArgumentChangedError"]

#: argument types that need no check for mixed array libraries
_ARGS_FAST = frozenset((np.ndarray, float, int, bool, np.float64, np.float32))


class AnomalyError(FloatingPointError):
    """Raised in :class:`detect_anomaly` mode at the first op that produced NaN or infinity."""


class GraphFreedError(RuntimeError):
    """A second backward pass through a graph whose intermediates were already released."""


def run_backward(
    root: Tensor,
    seed: Any = None,
    *,
    targets: Sequence[Tensor] | None = None,
    accumulate: bool = True,
    retain_graph: bool = False,
    create_graph: bool = False,
    keep_all: bool = False,
) -> dict[int, Any]:
    """The chain rule from ``root`` backwards; returns gradients by ``id`` of tensor.

    ``accumulate``: add the gradients into the ``.grad`` of leaves. ``targets``: also return
    their gradients, treating them as leaves. ``keep_all``: return every node's gradient
    (for :func:`chainrule.trace`). Intermediate buffers are dropped as soon as they are used
    unless ``retain_graph``.
    """
    if backend.kind(root.data.dtype) == "c":
        raise TypeError("backward() of a complex value: chainrule differentiates real functions; the function "
                        "produced complex numbers (take .real of a real-valued expression, or avoid complex math)")
    if not root.requires_grad:
        raise RuntimeError(
            "backward() called on a tensor that does not require grad: none of the inputs it was computed "
            "from has requires_grad=True (create them with cr.tensor(..., requires_grad=True))"
        )
    graph = create_graph
    retain = retain_graph or create_graph or keep_all
    m = functions if graph else backend.ops_for(root.data)
    xp = backend.namespace_of(root.data)
    if seed is None:
        seed = xp.ones_like(root.data)
        if graph:
            seed = Tensor(seed)
    else:
        seed_data = seed.data if isinstance(seed, Tensor) else _as_like(seed, root.data)
        if seed_data.shape != root.shape:
            raise ValueError(f"backward: gradient of shape {seed_data.shape} given for a tensor of shape {root.shape}")
        seed = (seed if isinstance(seed, Tensor) else Tensor(seed_data)) if graph else seed_data
    stop = {id(t) for t in targets} if targets is not None else None
    # Nodes are processed in decreasing creation order (a topological order: every consumer of a
    # node was created after it), from a heap of the nodes that have received a gradient so far.
    # No separate graph walk is needed, and the loop is iterative however deep the graph is.
    grads: dict[int, Any] = {id(root): seed}
    kept: dict[int, Any] = {}
    terminals: list[Tensor] = []
    heap: list[tuple[int, Tensor]] = []
    if root._gate is None or (stop is not None and id(root) in stop):
        terminals.append(root)
    else:
        heap.append((-root._seq, root))
    anomaly = current().anomaly
    rebased = bool(_PREVIOUS)   # an item assignment made a tensor a new node: old users keep the old version
    # values were changed in place: nodes made before the last change may not use them
    last_write = WRITTEN_LAST[0] if _WRITTEN else -1
    pop, get = grads.pop, grads.get
    # fast mode runs the rules on raw arrays (nothing to record); graph mode records their ops
    with enable_grad() if graph else contextlib.nullcontext():
        while heap:
            t = heappop(heap)[1]
            g = pop(id(t))
            if keep_all:
                kept[id(t)] = g
            parents = t._parents
            if parents is None:
                raise GraphFreedError(
                    "this graph's intermediates were released by an earlier backward pass; call "
                    "backward(retain_graph=True) the first time to backpropagate through it again"
                )
            if rebased:
                parents = tuple(parent_at(p, t._seq) for p in parents)
            if t._seq < last_write:
                check_written(t, parents)
            gate = t._gate
            if graph:
                args, out = parents, t
            else:
                args, out = t._args, t.data
            input_grads = pullback(gate, m, g, args, out, t._needs, t._params)
            for p, gi in zip(parents, input_grads):
                if gi is not None:
                    if anomaly:
                        _check_backward_anomaly(t, gi)
                    pid = id(p)
                    prev = get(pid)
                    if prev is not None:
                        grads[pid] = prev + gi  # fan-out: gradients from every use add up
                        continue
                    grads[pid] = gi
                    if p._gate is None or (stop is not None and pid in stop):
                        terminals.append(p)
                    else:
                        heappush(heap, (-p._seq, p))
            if not retain:
                t._parents = t._args = None  # release the saved inputs: this node's work is done
    delivered: set[int] = {id(seed)}
    for t in terminals:
        g = grads.get(id(t))
        if g is None:
            continue
        kept[id(t)] = g
        if accumulate and t._gate is None:
            _deliver(t, g, graph, delivered)
    return kept


def _deliver(leaf: Tensor, g: Any, graph: bool, delivered: set[int]) -> None:
    """Accumulate ``g`` into a leaf's ``.grad`` without ever aliasing another leaf's gradient."""
    _refuse_complex(g, leaf.data)
    if not graph:
        if leaf.data.__class__ is not np.ndarray and backend.library_of(leaf.data) is not None:
            g = _library_grad(g, leaf.data, delivered)
        elif id(g) in delivered or not isinstance(g, np.ndarray) or g.base is not None:
            # a copy, so .grad never aliases another leaf's gradient, the caller's seed, or a
            # read-only broadcast view (sum's gradient): optimizers update .grad in place
            g = backend.xp.array(g, dtype=leaf.data.dtype)
        elif g.dtype != leaf.data.dtype:
            g = g.astype(leaf.data.dtype)
        delivered.add(id(g))
    leaf.grad = g if leaf.grad is None else leaf.grad + g


def _library_grad(g: Any, like: Any, delivered: set[int]) -> Any:
    """A gradient for a leaf of another library than NumPy: of the leaf's dtype, broadcast to its shape,
    and a copy where it could alias another array (a Dask array is never written, so never copied)."""
    lib = backend.library_of(like)
    xp = lib.xp
    if g.dtype != like.dtype:
        g = xp.astype(g, like.dtype)
    if tuple(g.shape) != tuple(like.shape):
        g = xp.broadcast_to(g, tuple(like.shape))
    if not lib.lazy and (id(g) in delivered or g is like):
        g = xp.asarray(g, copy=True)
    elif lib.lazy and g.chunks != like.chunks:
        g = g.rechunk(like.chunks)  # chunked like the input (a scatter-add chunks its own way)
    return g


def _as_like(value: Any, like: Any) -> Any:
    """``value`` (a seed, an upstream gradient) as an array of ``like``'s library and dtype."""
    if like.__class__ in backend.NATIVE or backend.library_of(like) is None:
        return backend.xp.asarray(value, dtype=like.dtype)
    lib = backend.library_of(like)
    if isinstance(value, np.ndarray):
        value = lib.constant(value)
    return lib.xp.asarray(value, dtype=like.dtype)


def backward(root: Tensor, grad: Any = None, retain_graph: bool = False, create_graph: bool = False) -> None:
    """``root.backward(...)``: accumulate d(root)/d(leaf) into every leaf's ``.grad``."""
    run_backward(root, grad, retain_graph=retain_graph, create_graph=create_graph)


def _refuse_complex(g: Any, leaf_data: Any) -> None:
    data = g.data if isinstance(g, Tensor) else g
    if getattr(data, "dtype", None) is not None and backend.kind(data.dtype) == "c" and \
            backend.kind(leaf_data.dtype) != "c":
        raise TypeError("the gradient of a real input came out complex: the function went through complex "
                        "numbers, which chainrule does not differentiate (it differentiates real functions)")


# ---------------------------------------------------------------------------------------------
# functional API
# ---------------------------------------------------------------------------------------------


def as_float_array(value: Any, what: str) -> Any:
    """An input as a floating-point array (ints and bools promoted to float64); clear error otherwise."""
    if isinstance(value, Tensor):
        value = value.data
    xp = backend.namespace_of(value)
    try:
        arr = xp.asarray(value)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{what}: cannot be used as an array ({e})") from None
    kind = backend.kind(arr.dtype)
    if kind in "biu":
        return arr.astype(np.float64) if xp is backend.xp else xp.astype(arr, xp.float64)
    if kind == "c":
        raise TypeError(f"{what}: complex input: chainrule differentiates real functions (pass the real and "
                        "imaginary parts as separate real arguments)")
    if kind != "f":
        raise TypeError(f"{what}: unsupported input of type {type(value).__name__} (dtype {arr.dtype}); "
                        "pass numbers, lists of numbers or NumPy arrays")
    return arr


def _argnums(argnums: int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, bool) or not isinstance(argnums, (int, tuple, list)):
        raise TypeError(f"argnums must be an int or a tuple of ints, not {argnums!r}")
    if isinstance(argnums, int):
        return (argnums,), True
    nums = tuple(argnums)
    if not nums or not all(isinstance(a, int) and not isinstance(a, bool) for a in nums):
        raise TypeError(f"argnums must be an int or a non-empty tuple of ints, not {argnums!r}")
    if len(set(nums)) != len(nums):
        raise ValueError(f"argnums {nums} names an argument twice")
    return nums, False


def _arg_name(f: Callable[..., Any], i: int) -> str:
    while hasattr(f, "__wrapped__"):  # a transform of f (cr.jacobian(f), ...): f's own argument names
        f = f.__wrapped__
    try:
        names = f.__code__.co_varnames[: f.__code__.co_argcount]
        return f"argument {i} ({names[i]!r})" if i < len(names) else f"argument {i}"
    except AttributeError:
        return f"argument {i}"


class ArgumentChangedError(ValueError):
    """``f`` changed an array argument that is not differentiated in place (chainrule hands it over
    read-only, so the caller's array is never changed)."""


def _call(f: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Tensor:
    """Run ``f`` recording a graph, counted as one level of nesting for any grad it calls.

    The NumPy arrays among the arguments (those not differentiated: training data, labels) are
    passed as read-only views, which costs nothing and keeps the caller's arrays unchanged; an
    in-place change of one raises :class:`ArgumentChangedError` naming it."""
    args = [_read_only(a) for a in args]
    kwargs = {k: _read_only(v) for k, v in kwargs.items()} if kwargs else kwargs
    with nested():
        try:
            if current().grad_enabled:
                return _check_output(f(*args, **kwargs), f)
            with enable_grad():
                return _check_output(f(*args, **kwargs), f)
        except ValueError as e:
            clear_numpy_store_error(e)
            changed = _changed_argument(e, f, args, kwargs)
            if changed is None:
                raise
            raise changed from None


def _read_only(a: Any, depth: int = 0) -> Any:
    """``a`` with its NumPy arrays as read-only views, also inside lists, tuples and dicts (which are
    copied, so f's changes to the containers themselves stay inside f too)."""
    cls = a.__class__
    if cls is np.ndarray:
        if a.flags.writeable:
            a = a.view()
            a.flags.writeable = False
        return a
    if depth < 4 and cls in (list, tuple):
        items = [_read_only(v, depth + 1) for v in a]
        return a if cls is tuple and all(x is y for x, y in zip(items, a)) else cls(items)
    if depth < 4 and cls is dict:
        return {k: _read_only(v, depth + 1) for k, v in a.items()}
    return a


def _arrays_in(obj: Any, name: str, depth: int = 0) -> list[tuple[str, np.ndarray]]:
    """The NumPy arrays in ``obj`` (itself, or inside lists, tuples and dicts), each with its path."""
    if obj.__class__ is np.ndarray:
        return [(name, obj)]
    if depth < 4 and obj.__class__ in (list, tuple):
        return [p for k, v in enumerate(obj) for p in _arrays_in(v, f"{name}[{k}]", depth + 1)]
    if depth < 4 and obj.__class__ is dict:
        return [p for k, v in obj.items() for p in _arrays_in(v, f"{name}[{k!r}]", depth + 1)]
    return []


def _changed_argument(e: ValueError, f: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
                      ) -> ArgumentChangedError | None:
    """If ``e`` is NumPy's refusal to write into one of the read-only argument views: the error naming
    the argument (found among the variables of the user's line that share its memory) and the line."""
    text = str(e)
    if isinstance(e, ArgumentChangedError) or "read-only" not in text or (
            "destination" not in text and "output array" not in text):
        return None
    guarded = dict(p for i, a in enumerate(args) for p in _arrays_in(a, _arg_name(f, i)))
    guarded.update(p for k, v in kwargs.items() for p in _arrays_in(v, f"argument {k!r}"))
    tb, frame = e.__traceback__, None
    while tb is not None:  # the innermost frame of the user's code (not chainrule's, not NumPy's)
        name = tb.tb_frame.f_code.co_filename
        if not library_file(name):
            frame = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    if frame is None:
        return None
    local = [a for v in frame[0].f_locals.values() for _, a in _arrays_in(v, "")]
    hit = [n for n, a in guarded.items() if any(np.may_share_memory(v, a) for v in local)]
    if not hit:
        return None
    fname = getattr(f, "__name__", "f")
    return ArgumentChangedError(
        f"{fname} changed its {' or '.join(hit)} in place at {frame[0].f_code.co_filename}:{frame[1]} "
        f"(NumPy: {e}); chainrule never changes the caller's arrays: copy it first (y = y.copy()), or write "
        "y = y + 1 instead of y += 1")


def _make_leaves(
    f: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...]
) -> tuple[list[Any], list[Tensor], bool]:
    n = len(args)
    for i in nums:
        if not -n <= i < n:
            raise ValueError(f"argnums names argument {i}, but the function was called with {n} positional "
                             f"argument{'s' if n != 1 else ''}")
    for a in args:
        if a.__class__ not in _ARGS_FAST:
            # the arrays of one call come from one library (NumPy constants inside f are moved into it)
            backend.common_library([a.data if isinstance(a, Tensor) else a for a in args],
                                   getattr(f, "__name__", "f"))
            break
    args_l = list(args)
    leaves = []
    # inside an outer differentiation (its function is running, or an argument carries its graph)
    # the gradients must be tensors that stay connected to the outer graph
    st = current()
    inner = st.grad_enabled and (st.nesting > 0 or any(
        isinstance(a, Tensor) and a.requires_grad for a in args))
    for i in nums:
        a = args_l[i]
        if isinstance(a, Tensor) and a.requires_grad and st.grad_enabled:
            # differentiating inside an outer differentiation: keep the link to the outer graph
            inner = True
            with enable_grad():
                leaf = apply(GATES["identity"], a)
        else:
            if a.__class__ is np.ndarray and a.dtype.kind == "f":
                leaf = _new_tensor(Tensor)
                leaf.data = a  # the common case, without the conversions below
            else:
                data = as_float_array(a, _arg_name(f, i % n))
                leaf = _new_tensor(tensor_class(data))
                leaf.data = data
            leaf.grad = None
            leaf.requires_grad = True
            leaf.name = None
            leaf._gate = None
            leaf._parents = ()
            leaf._needs = ()
            leaf._params = None
            leaf._src = None
            # -2: an input being differentiated whose values may be the caller's array; a change under
            # cr.no_grad() inside f copies them first (Tensor._own), so it never reaches the caller
            leaf._seq = -2
        args_l[i] = leaf
        leaves.append(leaf)
    return args_l, leaves, inner


def _check_output(out: Any, f: Callable[..., Any]) -> Any:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list, dict)):
        raise TypeError(f"{getattr(f, '__name__', 'f')} must return one array or tensor to differentiate, "
                        f"not a {type(out).__name__}")
    refuse_none(out, f)
    return Tensor(out)


def _refuse_complex_output(out: Tensor, f: Callable[..., Any]) -> None:
    if backend.kind(out.data.dtype) == "c":
        raise TypeError(f"{getattr(f, '__name__', 'f')} returned complex values: chainrule differentiates real "
                        "functions (return a real value, e.g. the real part or the squared magnitude)")


def value_and_grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., tuple[Any, Any]]:
    """``f``'s value and its gradient with respect to the arguments in ``argnums``.

    Returns a function with ``f``'s arguments giving ``(out, grads)``: one gradient when ``argnums``
    is an int, a tuple when it is a tuple. Inputs may be numbers, lists or arrays (integers are
    promoted to float64); gradients are NumPy arrays shaped like them. A non-scalar ``out`` is
    differentiated through its sum (the gradient of every element at once, the worksheet's
    convention for elementwise functions).
    """
    nums, single = _argnums(argnums)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        args_l, leaves, nested = _make_leaves(f, args, nums)
        out = _call(f, args_l, kwargs)
        if _PREVIOUS:  # an input changed by item assignment inside f: its first version is the input
            leaves = [original(leaf) for leaf in leaves]
        if out.data.__class__ not in backend.NATIVE or out.data.dtype.kind == "c":  # (other libraries' dtypes)
            _refuse_complex_output(out, f)
        if out.requires_grad:
            got = run_backward(out, targets=leaves, accumulate=False, create_graph=nested)
        else:
            got = {}
        grads = []
        seen: set[int] = set()
        for leaf in leaves:
            g = got.get(id(leaf))
            if g is None:
                g = backend.namespace_of(leaf.data).zeros_like(leaf.data)
                g = Tensor(g) if nested else g
            elif not nested:
                if leaf.data.__class__ is not np.ndarray and backend.library_of(leaf.data) is not None:
                    g = _library_grad(g, leaf.data, seen)
                else:
                    g = backend.xp.asarray(g)
                    if g.dtype.kind == "c":
                        _refuse_complex(g, leaf.data)
                    # (getattr: the override module of set_array_namespace may have arrays without .base)
                    if id(g) in seen or g is leaf.data or getattr(g, "base", None) is not None or \
                            g.dtype != leaf.data.dtype:
                        g = g.astype(leaf.data.dtype)  # a copy: gradients never alias each other or a view
                seen.add(id(g))
            grads.append(g)
        value = out if nested else out.data
        return value, (grads[0] if single else tuple(grads))

    return wrapper


def grad(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of ``f`` with respect to ``argnums`` (see :func:`value_and_grad`).

    Composes: ``cr.grad(cr.grad(f))`` is the second derivative, since inside an outer ``grad`` the
    inner backward pass builds a graph of its own.
    """
    vg = value_and_grad(f, argnums)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return vg(*args, **kwargs)[1]

    return wrapper


def vjp(f: Callable[..., Any], *args: Any) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
    """Run ``f(*args)`` once; return ``(out, vjp_fn)`` where ``vjp_fn(g)`` gives the gradients of
    ``sum(g * out)`` with respect to every argument (a tuple, one per argument). ``vjp_fn`` may be
    called many times with different upstream gradients ``g``."""
    args_l, leaves, nested = _make_leaves(f, args, tuple(range(len(args))))
    out = _call(f, args_l, {})
    if _PREVIOUS:
        leaves = [original(leaf) for leaf in leaves]
    _refuse_complex_output(out, f)

    def vjp_fn(g: Any) -> tuple[Any, ...]:
        gdata = g.data if isinstance(g, Tensor) else _as_like(g, out.data)
        if gdata.shape != out.shape:
            raise ValueError(f"vjp: upstream gradient has shape {gdata.shape}, the output has shape {out.shape}")
        got = run_backward(out, g if nested else gdata, targets=leaves, accumulate=False,
                           retain_graph=True, create_graph=nested) if out.requires_grad else {}
        res = []
        for leaf in leaves:
            gl = got.get(id(leaf))
            if gl is None:
                gl = backend.namespace_of(leaf.data).zeros_like(leaf.data)
            elif not nested and backend.is_lazy(leaf.data):
                gl = _library_grad(gl, leaf.data, set())  # chunked like the input
            res.append(gl)
        return tuple(res)

    return (out if nested else out.data), vjp_fn


# ---------------------------------------------------------------------------------------------
# anomaly mode
# ---------------------------------------------------------------------------------------------


class detect_anomaly(detect_switch):
    """Context manager: raise :class:`AnomalyError` at the first op whose forward or backward
    produces NaN or infinity from finite inputs, naming the op and the line that created it.
    Like every engine switch it holds for the current thread (or asyncio task) only."""


def _finite(x: Any) -> bool:
    data = x.data if isinstance(x, Tensor) else x
    xp = backend.namespace_of(data)
    try:
        return bool(xp.all(xp.isfinite(data)))
    except TypeError:
        return True


def check_forward_anomaly(t: Tensor, gate: Gate, inputs: list[Any]) -> None:
    """Called for each op in anomaly mode: remember where it was created; raise on new NaN/inf."""
    t._src = user_frame()
    if not _finite(t.data) and all(_finite(d) for d in inputs):
        raise AnomalyError(f"{gate.name} produced NaN or infinity in the forward pass at {t._src} "
                           f"(input shapes {', '.join(str(np.shape(d)) for d in inputs)})")


def _check_backward_anomaly(t: Tensor, g: Any) -> None:
    if not _finite(g):
        where = t._src or "(created outside detect_anomaly)"
        raise AnomalyError(f"the backward rule of {t._gate.name} produced NaN or infinity; "
                           f"the {t._gate.name} was created at {where}")
