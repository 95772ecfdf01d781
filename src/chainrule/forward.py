"""Forward mode and what is built from it: ``jvp``, ``jacobian``, ``hessian``, ``hvp``.

Forward mode pushes tangents (directional derivatives) from the inputs to the output, node by node in
creation order, with each gate's own forward-mode step (:func:`chainrule.gates.pushforward`):
``ṫ = local · ẋ`` for elementwise gates, the gate applied to the tangents for linear ones, a rule of the
entry otherwise. It runs over the same recorded graph reverse mode uses, so nothing on the operators'
hot path changes. With ``create`` the tangents are computed with chainrule's own functions and carry
graphs of their own: forward mode differentiates again (``cr.grad`` of a ``cr.jvp``), and reverse mode
inside forward mode (``cr.jvp`` of ``cr.grad``, the Hessian-vector product) works because the inner
gradient is a graph like any other.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backend, functions
from .autodiff import _argnums, _call, _make_leaves, _refuse_complex_output, as_float_array, grad, run_backward
from .gates import pushforward
from .tensor import _PREVIOUS, Tensor, enable_grad, nested, original, parents_of, refuse_none, topological

__all__ = ["jvp", "jacobian", "hessian", "hvp", "run_forward"]


def _topological(out: Tensor) -> list[Tensor]:
    return topological([out])


def run_forward(out: Tensor, seeds: dict[int, Any], create: bool = False,
                order: list[Tensor] | None = None) -> dict[int, Any]:
    """Tangents of every node ``out`` depends on, from the tangents ``seeds`` of some leaves (by
    ``id``); a node none of whose inputs carries a tangent gets none. ``create``: compute with
    chainrule's functions (tangents are tensors with graphs)."""
    m = functions if create else backend.ops_for(out.data)
    tangent: dict[int, Any] = dict(seeds)
    with enable_grad() if create else contextlib.nullcontext():
        for t in order if order is not None else _topological(out):
            if id(t) in tangent or t._gate is None or not t.requires_grad:
                continue
            parents = parents_of(t)
            ts = [tangent.get(id(p)) if isinstance(p, Tensor) else None for p in parents]
            if all(v is None for v in ts):
                continue
            if create:
                args, value = parents, t
            else:
                args, value = t._args, t.data
            tt = pushforward(t._gate, m, ts, args, value, t._params)
            if tt is not None:
                tangent[id(t)] = tt
    return tangent


def _as_tuple(x: Any, what: str) -> tuple[Any, ...]:
    if isinstance(x, (tuple, list)):
        return tuple(x)
    raise TypeError(f"jvp: {what} must be a tuple (one entry per argument of f), not {type(x).__name__}")


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """``f(*primals)`` and its directional derivative along ``tangents`` (forward mode, as JAX's jvp):
    returns ``(out, tangent_out)`` with ``tangent_out = J · tangents``, shaped like ``out`` (tuples of
    them when ``f`` returns a tuple)."""
    primals, tangents = _as_tuple(primals, "primals"), _as_tuple(tangents, "tangents")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    backend.common_library([getattr(v, "data", v) for v in (*primals, *tangents)], "jvp")
    args_l, leaves, create = _make_leaves(f, primals, tuple(range(len(primals))))
    seeds: dict[int, Any] = {}
    for i, (leaf, t) in enumerate(zip(leaves, tangents)):
        if isinstance(t, Tensor):
            tdata = t.data
        else:
            tdata = as_float_array(t, f"tangent {i}")
        if tuple(tdata.shape) != tuple(leaf.shape):
            raise ValueError(f"jvp: tangent {i} has shape {tuple(tdata.shape)}, but argument {i} has shape "
                             f"{leaf.shape}")
        seeds[id(leaf)] = (t if isinstance(t, Tensor) else Tensor(tdata)) if create else tdata
    outs, single = _call_outputs(f, args_l)
    if _PREVIOUS:  # an input changed by item assignment inside f: its first version is the input
        seeds = {id(original(leaf)): seeds[id(leaf)] for leaf in leaves}
    values, tangents_out = [], []
    for out in outs:
        tangent = run_forward(out, seeds, create).get(id(out)) if out.requires_grad else None
        xp = backend.namespace_of(out.data)
        if tangent is None:
            zero = xp.zeros_like(out.data)
            tangent = Tensor(zero) if create else zero
        elif not create:
            tangent = xp.asarray(tangent)
            if tangent.shape != out.shape:
                tangent = xp.asarray(xp.broadcast_to(tangent, out.shape), copy=True)
        values.append(out if create else out.data)
        tangents_out.append(tangent)
    if single:
        return values[0], tangents_out[0]
    return tuple(values), tuple(tangents_out)


def _call_outputs(f: Callable[..., Any], args: list[Any]) -> tuple[list[Tensor], bool]:
    """Run ``f`` recording (one level of nesting); its result as tensors: one, or a tuple of them."""
    with nested():
        with enable_grad():
            res = f(*args)
    items, single = ([res], True) if not isinstance(res, (tuple, list)) else (list(res), False)
    outs = []
    for r in items:
        if isinstance(r, dict):
            raise TypeError(f"{getattr(f, '__name__', 'f')} returned a dict: jvp needs arrays or tuples of arrays")
        refuse_none(r, f)
        t = r if isinstance(r, Tensor) else Tensor(r)
        _refuse_complex_output(t, f)
        outs.append(t)
    return outs, single


def _choose(mode: str | None, in_size: int, out_size: int) -> str:
    if mode is None:
        return "fwd" if in_size < out_size else "rev"
    if mode not in ("fwd", "rev"):
        raise ValueError(f"jacobian: mode must be 'fwd', 'rev' or None, not {mode!r}")
    return mode


def jacobian(f: Callable[..., Any], argnums: int | Sequence[int] = 0, mode: str | None = None
             ) -> Callable[..., Any]:
    """The Jacobian of ``f`` with respect to ``argnums``, shaped ``out.shape + input.shape`` (as JAX's).

    ``mode="rev"`` runs one backward pass per output element, ``"fwd"`` one forward sweep per input
    element, both over one recorded graph; ``None`` picks the one with fewer passes. A tuple
    ``argnums`` gives a tuple of Jacobians."""
    nums, single = _argnums(argnums)

    @functools.wraps(f)  # named as f (errors that name f's arguments read them through __wrapped__)
    def jac(*args: Any) -> Any:
        args_l, leaves, create = _make_leaves(f, args, nums)
        if create:  # inside an outer differentiation: per-element jvps keep every link to it
            blocks = _jac_nested(f, args, nums, mode)
            return blocks[0] if single else tuple(blocks)
        out = _call(f, args_l, {})
        _refuse_complex_output(out, f)
        if _PREVIOUS:
            leaves = [original(leaf) for leaf in leaves]
        how = _choose(mode, sum(leaf.size for leaf in leaves), out.size)
        if not out.requires_grad:
            blocks = [_zeros(leaf.data, out.shape + leaf.shape) for leaf in leaves]
        elif how == "rev":
            blocks = _jac_rev(out, leaves)
        else:
            blocks = _jac_fwd(out, leaves)
        return blocks[0] if single else tuple(blocks)

    return jac


# The Jacobian is assembled in the inputs' library (its zeros, basis vectors and stack): on Dask it stays
# one lazy graph, nothing is computed inside chainrule.


def _zeros(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of ``shape`` in ``like``'s library, of its floating dtype (float64 for integer data)."""
    xp = backend.namespace_of(like)
    dtype = like.dtype if backend.kind(like.dtype) == "f" else xp.float64
    return xp.zeros(shape, dtype=dtype)


def _basis(shape: tuple[int, ...], k: int, like: Any) -> Any:
    """The ``k``-th basis array of ``shape`` (a one at flat position ``k``) in ``like``'s library."""
    dtype = backend.numpy_dtype(like.dtype)
    e = np.zeros(int(np.prod(shape)), dtype=dtype if dtype.kind == "f" else np.float64)
    e[k] = 1.0
    e = e.reshape(shape)
    lib = None if like.__class__ in backend.NATIVE else backend.library_of(like)
    return e if lib is None or backend.override is not None else lib.constant(e)


def _stack(like: Any, items: list[Any], axis: int, shape: tuple[int, ...]) -> Any:
    """``items`` stacked along ``axis`` and reshaped to ``shape``, in ``like``'s library."""
    xp = backend.namespace_of(like)
    return xp.reshape(xp.stack(items, axis=axis), shape) if items else _zeros(like, shape)


def _jac_rev(out: Tensor, leaves: list[Tensor]) -> list[Any]:
    rows: list[list[Any]] = [[] for _ in leaves]
    for k in range(out.size):
        got = run_backward(out, _basis(out.shape, k, out.data), targets=leaves, accumulate=False,
                           retain_graph=True)
        for j, leaf in enumerate(leaves):
            g = got.get(id(leaf))
            xp = backend.namespace_of(leaf.data)
            rows[j].append(_zeros(leaf.data, leaf.shape) if g is None else xp.broadcast_to(g, leaf.shape))
    return [_stack(leaf.data, r, 0, out.shape + leaf.shape) for r, leaf in zip(rows, leaves)]


def _jac_fwd(out: Tensor, leaves: list[Tensor]) -> list[Any]:
    order = _topological(out)
    xp = backend.namespace_of(out.data)
    blocks = []
    for leaf in leaves:
        cols = []
        for k in range(leaf.size):
            t = run_forward(out, {id(leaf): _basis(leaf.shape, k, leaf.data)}, order=order).get(id(out))
            cols.append(_zeros(out.data, out.shape) if t is None else xp.broadcast_to(xp.asarray(t), out.shape))
        blocks.append(_stack(out.data, cols, -1, out.shape + leaf.shape))
    return blocks


def _jac_nested(f: Callable[..., Any], args: tuple[Any, ...], nums: tuple[int, ...], mode: str | None) -> list[Any]:
    datas = [a.data if isinstance(a, Tensor) else a for a in args]
    blocks = []
    for i in nums:
        shape = tuple(np.shape(datas[i]))
        cols = []

        def along_i(a: Any, i: int = i) -> Any:  # f of argument i alone: the others (labels too) as given
            return f(*args[:i], a, *args[i + 1:])

        like = as_float_array(datas[i], "jacobian")   # once: a float copy of an integer input per column was quadratic
        for k in range(int(np.prod(shape))):
            cols.append(jvp(along_i, (args[i],), (_basis(shape, k, like),))[1])
        out_shape = tuple(cols[0].shape) if cols else ()
        blocks.append(functions.reshape(functions.stack(cols, axis=-1), out_shape + shape))
    return blocks


def hessian(f: Callable[..., Any], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The Hessian of ``f``, forward-over-reverse (the Jacobian, by forward mode, of the reverse-mode
    Jacobian): shaped ``out.shape + input.shape + input.shape`` as JAX's (``input.shape * 2`` for a
    scalar ``f``; never the Hessian of the sum of a non-scalar output); a tuple ``argnums`` gives a
    tuple of tuples."""
    nums, single = _argnums(argnums)
    first = jacobian(f, argnums, mode="rev")
    if single:
        return jacobian(first, argnums, mode="fwd")

    def hess(*args: Any) -> Any:
        return tuple(tuple(jacobian(lambda *a, j=j: first(*a)[j], argnums=k, mode="fwd")(*args) for k in nums)
                     for j in range(len(nums)))

    return hess


def hvp(f: Callable[..., Any], primals: Any, tangents: Any) -> Any:
    """The Hessian of a scalar ``f`` times ``tangents`` at ``primals`` (forward over reverse: one
    backward and one forward pass, never the whole Hessian). ``primals``/``tangents`` are one array
    (for ``f`` of one argument) or tuples of them."""
    def scalar_f(*args: Any) -> Any:
        out = f(*args)
        shape = np.shape(out.data if isinstance(out, Tensor) else out)
        if int(np.prod(shape)) != 1:
            raise ValueError(f"hvp needs f to return one number; it returned shape {shape} "
                             "(for every output use cr.hessian, shaped out.shape + in.shape + in.shape)")
        return out

    if isinstance(primals, tuple):
        nums = tuple(range(len(primals)))
        return jvp(grad(scalar_f, argnums=nums), primals, tangents)[1]
    return jvp(grad(scalar_f), (primals,), (tangents,))[1]
