"""Tracing a function into a :class:`Graph`: every node of the recorded graph with its name, value
and gradient, in evaluation order. Every view (staged text, table, picture, source code) reads this.

Names: inputs take the function's parameter names; intermediates take the names of the function's
own local variables where it assigned them (found by watching its frame with ``sys.settrace``),
otherwise ``t1, t2, ...`` in evaluation order; the result is ``out`` unless the function named it.
Names are deterministic: they never come from ``id()``.
"""

from __future__ import annotations

import inspect
import numbers
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .autodiff import as_float_array, run_backward
from .gates import Gate
from .tensor import Tensor, enable_grad, expanded


@dataclass(eq=False)
class Node:
    """One node of a traced graph: an input, a constant, or one gate applied to earlier nodes."""

    name: str
    kind: str  # "input", "const" or "op"
    value: Any
    grad: Any = None
    gate: Gate | None = None
    inputs: tuple[Node, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    tensor: Tensor | None = None  # the recorded tensor (None for Python-number constants)

    @property
    def op(self) -> str:
        """The gate's name ("mul", "exp", ...), or the kind for inputs and constants."""
        return self.gate.name if self.gate is not None else self.kind

    @property
    def is_scalar(self) -> bool:
        return np.ndim(self.value) == 0 or np.size(self.value) == 1

    def __repr__(self) -> str:
        ins = ", ".join(n.name for n in self.inputs)
        return f"Node({self.name} = {self.op}({ins}))" if self.gate else f"Node({self.name}: {self.kind})"


@dataclass(frozen=True)
class Equation:
    """One staged equation as data: ``name = op(inputs)`` with its value and gradient."""

    name: str
    op: str
    inputs: tuple[str, ...]
    value: Any
    grad: Any
    params: dict[str, Any]


def const_text(value: Any) -> str | None:
    """How a constant reads inline (``2``, ``0.5``, ``-1``), or None if it is too big to inline."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Number) or (np.ndim(value) == 0 and np.size(value) == 1):
        v = complex(value) if np.iscomplexobj(value) else float(np.asarray(value))
        if isinstance(v, complex):
            return repr(v)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return None


class Graph:
    """A traced computation: inputs, constants and op nodes in evaluation order, each with its value
    and its gradient (d out / d node, out seeded with ones)."""

    def __init__(self, nodes: list[Node], inputs: list[Node], output: Node, expand: bool = False) -> None:
        self.nodes = nodes
        self.inputs = inputs
        self.output = output
        self.expand = expand
        self._by_name = {n.name: n for n in nodes if n.kind != "const"}

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def ops(self) -> list[Node]:
        """The op nodes (one staged equation each), in evaluation order."""
        return [n for n in self.nodes if n.kind == "op"]

    @property
    def equations(self) -> list[Equation]:
        """The staged equations as data, for other tools."""
        return [
            Equation(n.name, n.op, tuple(i.name for i in n.inputs), n.value, n.grad, dict(n.params))
            for n in self.ops
        ]

    @property
    def value(self) -> Any:
        """The output's value."""
        return self.output.value

    @property
    def grads(self) -> dict[str, Any]:
        """Gradient of the output with respect to each input, by input name."""
        return {n.name: n.grad for n in self.inputs}

    def __repr__(self) -> str:
        return f"<Graph {len(self.inputs)} inputs, {len(self.ops)} ops, output {self.output.name}>"


# ---------------------------------------------------------------------------------------------
# tracing
# ---------------------------------------------------------------------------------------------


class _LocalNamer:
    """Watches one function's frame and names tensors after the local variables they are bound to."""

    def __init__(self, code: Any) -> None:
        self.code = code
        self.names: dict[int, str] = {}
        self.keep: list[Tensor] = []  # holds named tensors alive so their ids stay unique

    def _scan(self, frame: Any) -> None:
        for var, val in frame.f_locals.items():
            if isinstance(val, Tensor) and id(val) not in self.names and not var.startswith("_"):
                self.names[id(val)] = var
                self.keep.append(val)

    def tracer(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not self.code:
            return None
        self._scan(frame)

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event in ("line", "return"):
                self._scan(frame)
            return local

        return local


def _call_naming_locals(f: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, dict[int, str]]:
    code = getattr(f, "__code__", None)
    if code is None:
        return f(*args, **kwargs), {}
    namer = _LocalNamer(code)
    prev = sys.gettrace()
    sys.settrace(namer.tracer)
    try:
        out = f(*args, **kwargs)
    finally:
        sys.settrace(prev)
    return out, namer.names


def trace(f: Callable[..., Any] | Tensor, *args: Any, expand: bool = False, **kwargs: Any) -> Graph:
    """Run ``f`` forward and backward (output seeded with ones) and keep every node.

    Arguments are given positionally or by parameter name (``cr.trace(f, x=1.0, y=3.0, z=2.0)``);
    every numeric argument becomes an input named after its parameter. With ``expand``, composite
    gates (sigmoid, tanh, softmax, ...) are recorded as their staged parts. ``f`` may also be a
    tensor already computed eagerly: its graph is traced as it stands.
    """
    if isinstance(f, Tensor):
        if args or kwargs:
            raise TypeError("trace(tensor) takes no further arguments")
        return trace_tensor(f)
    if not callable(f):
        raise TypeError(f"trace needs a function (or a tensor), not {type(f).__name__}")
    try:
        bound = inspect.signature(f).bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"trace: the arguments do not fit {getattr(f, '__name__', 'f')}: {e}") from None
    except ValueError:  # builtins without a signature
        bound = None
    leaves: dict[int, str] = {}
    if bound is not None:
        for pname, val in list(bound.arguments.items()):
            if _is_numeric(val):
                leaf = Tensor(as_float_array(val, f"argument {pname!r}"), requires_grad=True, name=pname)
                bound.arguments[pname] = leaf
                leaves[id(leaf)] = pname
        call_args, call_kwargs = list(bound.args), dict(bound.kwargs)
    else:
        call_args = [Tensor(as_float_array(a, f"argument {i}"), requires_grad=True, name=f"x{i + 1}")
                     for i, a in enumerate(args)]
        call_kwargs = {}
    input_tensors = [a for a in [*call_args, *call_kwargs.values()] if isinstance(a, Tensor)]
    with enable_grad(), expanded(expand):
        out, local_names = _call_naming_locals(f, call_args, call_kwargs)
    if not isinstance(out, Tensor):
        if isinstance(out, (tuple, list, dict)):
            raise TypeError("trace: the function must return one array or tensor, not a "
                            f"{type(out).__name__}")
        out = Tensor(out)
    return _build(out, input_tensors, local_names, expand)


def trace_tensor(out: Tensor, expand: bool = False) -> Graph:
    """The graph behind an eagerly computed tensor; its leaves that require grad are the inputs."""
    return _build(out, None, {}, expand)


def _is_numeric(val: Any) -> bool:
    if isinstance(val, (Tensor, numbers.Number, np.ndarray, np.generic)) and not isinstance(val, bool):
        return True
    if isinstance(val, list):
        try:
            return np.asarray(val).dtype.kind in "biuf"
        except (ValueError, TypeError):
            return False
    return False


def _order(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` in evaluation order (post-order, inputs left to right)."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
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
            for p in reversed(t._parents):
                if isinstance(p, Tensor) and id(p) not in seen:
                    stack.append((p, False))
    return order


def _build(out: Tensor, input_tensors: list[Tensor] | None, local_names: dict[int, str], expand: bool) -> Graph:
    order = _order(out)
    if input_tensors is None:
        input_tensors = [t for t in order if t._gate is None and t.requires_grad]
    grads = run_backward(out, targets=input_tensors, accumulate=False, keep_all=True) if out.requires_grad else {}

    taken: set[str] = set()

    def claim(name: str) -> str:
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    nodes: list[Node] = []
    by_id: dict[int, Node] = {}
    inputs: list[Node] = []
    for i, t in enumerate(input_tensors):
        node = Node(claim(t.name or f"x{i + 1}"), "input", t.data, _grad_or_zero(grads, t), tensor=t)
        by_id[id(t)] = node
        inputs.append(node)
        nodes.append(node)
    # local-variable names are claimed in evaluation order; the rest get t1, t2, ...
    counter = 0
    const_count = 0
    pending: list[tuple[Node, Tensor]] = []
    for t in order:
        if id(t) in by_id:
            continue
        if t._gate is None:  # a tensor that needs no gradient: a constant
            text = const_text(t.data) if t.name is None else None
            if text is None:
                const_count += 1
                text = claim(t.name or f"c{const_count}")
            node = Node(text, "const", t.data, None, tensor=t)
        else:
            operands = []
            for p in t._parents:
                if isinstance(p, Tensor):
                    operands.append(by_id[id(p)])
                else:
                    text = const_text(p)
                    if text is None:
                        const_count += 1
                        text = claim(f"c{const_count}")
                    cnode = Node(text, "const", p)
                    nodes.append(cnode)
                    operands.append(cnode)
            node = Node("", "op", t.data, grads.get(id(t)), gate=t._gate, inputs=tuple(operands),
                        params=dict(t._params or {}), tensor=t)
            pending.append((node, t))
        by_id[id(t)] = node
        nodes.append(node)
    for node, t in pending:  # names the user gave: local variables, then tensor.name
        given = local_names.get(id(t)) or t.name
        if given and given not in taken:
            node.name = claim(given)
    for node, t in pending:
        if not node.name:
            if t is out and "out" not in taken:
                node.name = claim("out")
                continue
            while True:
                counter += 1
                if f"t{counter}" not in taken:
                    break
            node.name = claim(f"t{counter}")
    output = by_id[id(out)]
    if output.kind == "const":
        output.grad = np.ones_like(np.asarray(output.value, dtype=float))
    return Graph(nodes, inputs, output, expand)


def _grad_or_zero(grads: dict[int, Any], t: Tensor) -> Any:
    g = grads.get(id(t))
    return np.zeros_like(t.data) if g is None else np.asarray(g)
