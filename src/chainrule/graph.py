"""Tracing a function into a :class:`Graph`: every node of the recorded graph with its name, value
and gradient, in evaluation order. Every view (staged text, table, picture, source code) reads this.

Names: inputs take the function's parameter names; intermediates take the names of the function's
own local variables where it assigned them (found by watching its frame with ``sys.settrace``),
otherwise ``t1, t2, ...`` in evaluation order; the result is ``out`` unless the function named it.
Names are deterministic: they never come from ``id()``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend, functions
from .autodiff import as_float_array, run_backward
from .gates import FAN_OUT, Gate, local_gradient, pullback
from .symbolic import const, equation_text, ops, sym, to_text
from .tensor import (
    _PREVIOUS,
    Tensor,
    clear_numpy_store_error,
    enable_grad,
    expanded,
    original,
    parents_of,
    refuse_none,
    state,
    topological,
)


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
    tangent: Any = None  # forward mode (trace(..., mode="forward")): d node / d input along the seed

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
        if abs(v) < 1e15 and v == int(v):  # abs first: int(inf) and int(nan) raise
            return str(int(v))
        return repr(v)
    return None


class Graph:
    """A traced computation: inputs, constants and op nodes in evaluation order, each with its value
    and its gradient (d out / d node, out seeded with ones).

    Views: :meth:`staged` (one equation per line), :meth:`table` (forward then backward pass, with
    each gate's rule), :meth:`to_dot` / :meth:`render` (the picture), :meth:`backward_graph` (what
    the backward pass computed, as a graph of its own). In Jupyter a graph shows as its picture.
    """

    def __init__(self, nodes: list[Node], inputs: list[Node], output: Node, expand: bool = False,
                 outputs: list[Node] | None = None) -> None:
        self.nodes = nodes
        self.inputs = inputs
        self.output = output
        self.outputs = outputs or [output]
        self.expand = expand
        self.mode = "reverse"
        self.wrt: str | None = None  # forward mode: the input whose tangent is seeded with 1
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

    @property
    def has_grads(self) -> bool:
        """Whether the graph carries gradients (a backward graph carries values only)."""
        return self.output.grad is not None

    def __repr__(self) -> str:
        return f"<Graph {len(self.inputs)} inputs, {len(self.ops)} ops, output {self.output.name}>"

    # ---- text views ------------------------------------------------------------------------------
    def staged(self, values: bool = True) -> str:
        """The staged computation: one operation per line (``t1 = x + y      (= 4)``), in evaluation
        order, each read with its gate's display form; ``values`` adds each result's value."""
        lines = [(n.name, equation_text(n), n.value) for n in self.ops]
        if not lines:  # an output that is an input or constant
            return f"{self.output.name} = {fmt_value(self.output.value)}"
        width = max(len(f"{a} = {b}") for a, b, _ in lines)
        out = []
        for name, rhs, value in lines:
            eq = f"{name} = {rhs}"
            out.append(f"{eq:<{width}}    (= {fmt_value(value)})" if values else eq)
        return "\n".join(out)

    def backward_steps(self) -> list[BackwardStep]:
        """The backward pass as data, node by node from the output back: the upstream gradient, and
        per input the gate's local gradient (its rule printed from the gate table) and the gradient
        it sends back. Every number comes from evaluating the gate's own rule on the arrays."""
        if not self.has_grads:
            return []
        return [step for n in reversed(self.ops) if (step := _backward_step(n)) is not None]

    def table(self) -> str:
        """The forward pass in order, then the backward pass in reverse order: for each node its
        upstream gradient, each local gradient with the gate's rule in words and symbols, and the
        gradient that results (``upstream × local``); gradients of a value used twice are added.
        A graph traced with ``mode="forward"`` shows forward mode instead: each node's value and its
        tangent, pushed from the inputs to the output."""
        return _forward_table(self) if self.mode == "forward" else _table(self)

    def forward_steps(self) -> list[ForwardStep]:
        """Forward mode as data, node by node in evaluation order: each op's tangent rule (its gate's
        forward-mode step printed on the node's names, ``ṫ1 = ẋ + ẏ``) and the tangent's value."""
        if self.mode != "forward":
            raise ValueError("this graph was traced without forward mode: trace(..., mode='forward')")
        return [_forward_step(n) for n in self.ops if not _forward_only(n)]

    def backward_graph(self) -> Graph:
        """What the backward pass computed, as a graph of its own: the forward nodes, the seed
        ``d<out>`` and one op per step of the chain rule, ending in ``d<input>`` for every input
        (built with ``create_graph=True``: the gate rules evaluated with chainrule's functions)."""
        prev = state.record_masks
        state.record_masks = True  # the rules' masks (relu's x > 0) are steps of it too
        try:
            return _backward_graph(self)
        finally:
            state.record_masks = prev

    def to_source(self, name: str = "f") -> str:
        """The combined forward+backward function as standalone NumPy source (imports only numpy):
        ``def name(*inputs): ... return out, d<input1>, ...``; every derivative comes from the gate table."""
        from .codegen import graph_source

        return graph_source(self, name)

    # ---- pictures ---------------------------------------------------------------------------------
    def to_dot(self, max_nodes: int | None = None) -> str:
        """The graph as Graphviz DOT: gates as circles, values above edges (green), gradients below
        (red); node ids ``node-<name>``. Deterministic for the same graph."""
        from .render import to_dot

        return to_dot(self, max_nodes=max_nodes)

    def render(self, path: str | Any, engine: str | None = None, max_nodes: int | None = None) -> Any:
        """Draw the graph into ``path``: SVG, PNG or PDF by its extension (``.dot`` writes DOT).
        Uses Graphviz's ``dot`` when installed, else the ``graphviz-pure`` package
        (``pip install chainrule[render]``); ``engine`` picks one. Returns the path written."""
        from .render import render

        return render(self, path, engine=engine, max_nodes=max_nodes)

    def to_tikz(self, engine: str | None = None, blank: bool = False, standalone: bool = False) -> str:
        """The picture as a TikZ picture for LaTeX (values green above the edges, gradients red below),
        laid out like :meth:`render`; ``standalone`` gives a whole document, ``blank`` no numbers."""
        from .tikz import to_tikz

        return to_tikz(self, engine=engine, blank=blank, standalone=standalone)

    def svg(self, engine: str | None = None) -> str:
        """The picture as SVG text."""
        from .render import to_svg

        return to_svg(self, engine=engine)

    def _repr_svg_(self) -> str | None:
        from .render import repr_svg

        return repr_svg(self)

    def _repr_html_(self) -> str:
        from .render import repr_html

        return repr_html(self)


@dataclass(frozen=True)
class LocalGrad:
    """One input's share of a backward step: ``rule`` is the local gradient ∂node/∂input printed from
    the gate's own rule in the graph's names (``3z²`` for ``t4 = z ** 3``; elementwise gates, None for
    others), ``rule_at`` the same rule with the numbers at hand in place of the names (``3·2²``; None
    when an operand is an array), ``local`` its value, ``grad`` what flows back (upstream × local)."""

    input: Node
    rule: str | None
    local: Any
    grad: Any
    rule_at: str | None = None


@dataclass(frozen=True)
class ForwardStep:
    """Forward mode at one op node: its tangent rule as text (None where the gate computes it by
    transposing its backward rule) and the tangent's value."""

    node: Node
    rule: str | None
    tangent: Any


@dataclass(frozen=True)
class BackwardStep:
    """The backward pass at one op node: upstream gradient (∂out/∂node) and each input's share."""

    node: Node
    upstream: Any
    parts: tuple[LocalGrad, ...]


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, complex):
        return repr(x)
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    x = round(x, 12) + 0.0  # display: float noise like cos(π/2) = 6e-17 reads as 0, and no "-0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def fmt_value(v: Any, max_items: int = 6) -> str:
    """A value as a person reads it: scalars as numbers (``4``, ``0.880797``), small arrays inline
    (``[1, 2, 3]``), larger ones by shape with their first and last items."""
    a = np.asarray(v)
    if a.ndim == 0:
        return _num(a.item())
    if a.size <= max_items:
        return _array_text(a, threshold=max_items)
    return f"{a.shape} {_array_text(a, threshold=1)}"


def _array_text(a: np.ndarray, threshold: int) -> str:
    fmt = {"float_kind": _num, "int_kind": _num, "bool": _num, "complex_kind": repr}
    text = np.array2string(a, separator=", ", formatter=fmt, threshold=threshold, edgeitems=2,
                           max_line_width=1_000_000)
    return " ".join(text.split())


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
    """Run ``f`` as a trace: its locals name the nodes, and masks (x > 0) are recorded as nodes."""
    prev_masks = state.record_masks
    state.record_masks = True
    try:
        code = getattr(f, "__code__", None)
        if code is None:
            return f(*args, **kwargs), {}
        namer = _LocalNamer(code)
        prev = sys.gettrace()
        sys.settrace(namer.tracer)
        try:
            out = f(*args, **kwargs)
        except ValueError as e:
            clear_numpy_store_error(e)
            raise
        finally:
            sys.settrace(prev)
        return out, namer.names
    finally:
        state.record_masks = prev_masks


def trace(f: Callable[..., Any] | Tensor, *args: Any, expand: bool = False, mode: str = "reverse",
          wrt: str | None = None, **kwargs: Any) -> Graph:
    """Run ``f`` forward and backward (output seeded with ones) and keep every node.

    Arguments are given positionally or by parameter name (``cr.trace(f, x=1.0, y=3.0, z=2.0)``);
    every numeric argument becomes an input named after its parameter. With ``expand``, composite
    gates (sigmoid, tanh, softmax, ...) are recorded as their staged parts. ``f`` may also be a
    tensor already computed eagerly: its graph is traced as it stands. With ``mode="forward"`` the
    graph also carries forward mode's tangents, seeded with 1 on the input ``wrt`` (default: the first)
    and 0 on the others, and ``table()`` shows forward mode node by node (``ṫ1 = ẋ + ẏ``).
    """
    if mode not in ("reverse", "forward"):
        raise ValueError(f"trace: mode must be 'reverse' or 'forward', not {mode!r}")
    if mode == "forward":
        g = trace(f, *args, expand=expand, **kwargs)
        _add_tangents(g, wrt)
        return g
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
    if _PREVIOUS:  # an input changed by item assignment inside f: its first version is the input
        input_tensors = [original(t) for t in input_tensors]
    if not isinstance(out, Tensor):
        if isinstance(out, (tuple, list, dict)):
            raise TypeError("trace: the function must return one array or tensor, not a "
                            f"{type(out).__name__}")
        refuse_none(out, f)
        out = Tensor(out)
    return _build(out, input_tensors, local_names, expand)


def trace_tensor(out: Tensor, expand: bool = False) -> Graph:
    """The graph behind an eagerly computed tensor; its leaves that require grad are the inputs,
    named after the caller's variables that hold them (``x = cr.tensor(...)`` reads as ``x``), and
    its intermediates after the caller's variables too, where they are bound to one."""
    return _build(out, None, _caller_names(), expand)


def _caller_names() -> dict[int, str]:
    """Tensors bound to local variables of the innermost caller outside chainrule, by id."""
    frame = sys._getframe(1)
    here = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame = frame.f_back
    if frame is None:
        return {}
    return {id(v): k for k, v in frame.f_locals.items()
            if isinstance(v, Tensor) and not k.startswith("_")}


def _is_numeric(val: Any) -> bool:
    """Whether a traced argument becomes an input (a number or array of numbers). Truth values (a
    mask for where or guard) stay as they are: nothing flows back into them."""
    if isinstance(val, (np.ndarray, np.generic)):
        return val.dtype.kind in "iufc"
    if isinstance(val, (Tensor, numbers.Number)) and not isinstance(val, bool):
        return True
    if backend.library_of(val) is not None:  # an array of another library (Dask, CuPy...)
        return backend.kind(val.dtype) in "iuf"
    if isinstance(val, list):
        try:
            return np.asarray(val).dtype.kind in "iuf"
        except (ValueError, TypeError):
            return False
    return False


def _order(root: Tensor | list[Tensor]) -> list[Tensor]:
    """Tensors reachable from ``root`` (or several roots, in turn) in evaluation order."""
    return topological(root if isinstance(root, list) else [root])


def _build(out: Tensor, input_tensors: list[Tensor] | None, local_names: dict[int, str], expand: bool,
           extra_outputs: list[Tensor] | None = None, backward: bool = True) -> Graph:
    roots = [out, *(extra_outputs or [])]
    order = _order(roots)
    if input_tensors is None:
        input_tensors = [t for t in order if t._gate is None and t.requires_grad]
    grads = run_backward(out, targets=input_tensors, accumulate=False, keep_all=True) \
        if out.requires_grad and backward else {}

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
        node = Node(claim(local_names.get(id(t)) or t.name or f"x{i + 1}"), "input", t.data,
                    _grad_or_zero(grads, t) if backward else None, tensor=t)
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
            if t is out:  # a function whose result does not depend on its inputs
                text = claim(t.name or "out")
            elif text is None:
                const_count += 1
                text = claim(t.name or f"c{const_count}")
            node = Node(text, "const", t.data, None, tensor=t)
        else:
            operands = []
            for p in parents_of(t):
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
    if (output.kind == "const" or _forward_only(output)) and backward:  # out depends on no input's gradient
        output.grad = np.ones_like(np.asarray(output.value, dtype=float))
    return Graph(nodes, inputs, output, expand, outputs=[by_id[id(t)] for t in roots])


def _grad_or_zero(grads: dict[int, Any], t: Tensor) -> Any:
    g = grads.get(id(t))
    if t.data.__class__ in backend.NATIVE or backend.library_of(t.data) is None:
        return np.zeros_like(t.data) if g is None else np.asarray(g)
    return backend.namespace_of(t.data).zeros_like(t.data) if g is None else g


# ---------------------------------------------------------------------------------------------
# the backward pass, step by step (every number and every rule from the gate table)
# ---------------------------------------------------------------------------------------------


def _stand_in(node: Node) -> Any:
    """The symbolic stand-in for a node in a printed rule: numbers inline, everything else by name."""
    if node.kind == "const" and np.size(node.value) == 1 and np.ndim(node.value) == 0:
        return const(node.value)
    return sym(node.name, shape=np.shape(node.value))


def _value_stand_in(node: Node, value: Any = None) -> Any:
    """The stand-in that prints a scalar node as its value (``2``, ``(−4)``), for a rule with the
    numbers at hand; None for an array."""
    v = node.value if value is None else value
    if np.ndim(v) != 0:
        return None
    if node.kind == "const":
        return const(v)
    text = fmt_value(v).replace("-", "−")
    return sym(f"({text})" if text.startswith("−") else text, shape=())


def _backward_step(node: Node) -> BackwardStep | None:
    g = node.grad
    gate = node.gate
    if g is None or gate is None or _forward_only(node):
        return None
    g = np.asarray(g)
    m = backend.array_ops
    vals = [i.value for i in node.inputs]
    needs = [i.kind != "const" and not _forward_only(i) for i in node.inputs]
    sent = pullback(gate, m, g, vals, node.value, needs, node.params)
    parts: list[LocalGrad] = []
    stand_ins = [_stand_in(i) for i in node.inputs]
    out_sym = sym(node.name, shape=np.shape(node.value))
    valued = [_value_stand_in(i) for i in node.inputs]
    out_valued = _value_stand_in(node)
    for k, inp in enumerate(node.inputs):
        if not needs[k] or sent[k] is None:
            continue
        if gate.local is not None and gate.local[k] is not None:  # elementwise: show the local rule
            text = to_text(gate.local[k](ops, *stand_ins, out_sym), "math")
            at = None
            if out_valued is not None and all(v is not None for v in valued):
                at = to_text(gate.local[k](ops, *valued, out_valued), "math")
            parts.append(LocalGrad(inp, text, local_gradient(gate, k, m, vals, node.value), np.asarray(sent[k]),
                                   at))
        else:
            parts.append(LocalGrad(inp, None, None, np.asarray(sent[k])))
    return BackwardStep(node, g, tuple(parts))


def _forward_only(node: Node) -> bool:
    """A node computed from the inputs that takes no part in the backward pass (a mask ``z > 0``)."""
    return node.kind == "op" and node.tensor is not None and not node.tensor.requires_grad


def _uses(graph: Graph) -> dict[int, int]:
    """How many times each node is used as an operand (fan-out) on the gradient's path (a mask's
    use of ``z`` in ``z > 0`` sends no gradient to ``z``, so it does not count)."""
    count: dict[int, int] = {}
    for n in graph.ops:
        if _forward_only(n):
            continue
        for i in n.inputs:
            count[id(i)] = count.get(id(i), 0) + 1
    return count


def _table(graph: Graph) -> str:
    lines = ["Forward pass"]
    rows = [(n.name, equation_text(n) if n.kind == "op" else None, fmt_value(n.value))
            for n in graph.nodes if n.kind != "const"]
    w1 = max(len(a) for a, _, _ in rows)
    w2 = max((len(b) for _, b, _ in rows if b is not None), default=0)
    for name, rhs, val in rows:
        if rhs is None:
            lines.append(f"  {name:<{w1}} = {val}    (input)")
        else:
            lines.append(f"  {name:<{w1}} = {rhs:<{w2}}    = {val}")
    if not graph.has_grads:
        lines += ["", "(no gradients: this graph was built without a backward pass)"]
        return "\n".join(lines)
    L = graph.output.name
    d = lambda n: f"∂{L}/∂{n}"  # noqa: E731 - the (total) gradient of the output with respect to n
    uses = _uses(graph)
    received: dict[int, list[Any]] = {}
    lines += ["", f"Backward pass, from the output back: upstream {d('node')} × local ∂node/∂input "
                  f"= the input's share of {d('input')}"]
    for step in graph.backward_steps():
        n = step.node
        lines.append(f"  {n.name} = {equation_text(n)}")
        if n is graph.output:
            lines.append(f"      upstream  {d(n.name)} = {fmt_value(step.upstream)}   (the seed)")
        else:
            lines.append(f"      upstream  {d(n.name)} = {_sum_text(received.get(id(n), []), step.upstream)}"
                         + (f"   ({n.name} is used {uses[id(n)]} times: {FAN_OUT.split(': ')[1]})"
                            if uses.get(id(n), 0) > 1 else ""))
        lines.append(f"      {n.gate.idea if any(p.rule is not None for p in step.parts) else n.gate.explain}")
        left = []
        right = []
        for part in step.parts:
            inp = part.input
            if part.rule is not None:
                local_v = local_text(part)
                left.append(f"local     {local_equation(n, part, L)}")
                if np.ndim(step.upstream) == 0 and np.ndim(part.local) == 0:
                    prod = f"{fmt_value(step.upstream)} × {factor_text(local_v)} = {fmt_value(part.grad)}"
                else:
                    prod = fmt_value(part.grad)
            else:
                left.append(f"back to {inp.name}")
                prod = fmt_value(part.grad)
            fan = uses.get(id(inp), 0) > 1
            right.append(f"adds {prod} to {d(inp.name)}" if fan else f"{d(inp.name)} = {prod}")
            received.setdefault(id(inp), []).append(part.grad)
        wl = max((len(t) for t in left), default=0)
        for a, b in zip(left, right):
            lines.append(f"      {a:<{wl}}   →  {b}")
    lines += ["", f"Gradients of {L}"]
    w = max((len(n.name) for n in graph.inputs), default=0)
    for n in graph.inputs:
        got = received.get(id(n), [])
        note = f"   ({n.name} is used {uses[id(n)]} times: the gradients add up)" if len(got) > 1 else ""
        text = _sum_text(got, n.grad) if got else f"{fmt_value(n.grad)}   (not used)"
        lines.append(f"  ∂{L}/∂{n.name:<{w}} = {text}{note}")
    return "\n".join(lines)


def local_text(part: LocalGrad) -> str:
    """A local gradient's value as text (a mask's True/False read as 1/0)."""
    local = np.asarray(part.local)
    return fmt_value(local.astype(float) if local.dtype == bool else part.local)


def factor_text(text: str) -> str:
    """A factor written right of ``×``: a negative one bracketed (``1 × (-6)``, not ``1 × -6``)."""
    return f"({text})" if text.startswith(("-", "−")) else text


def local_symbol(node: Node, inp: Node, output: str | None = None) -> str:
    """``∂t4/∂z``: the local gradient's symbol. At the output node (named ``output``) ``∂out/∂t1``
    would also be the symbol of the total gradient, so the local one is written on the gate's
    expression instead: ``∂(t1 * z)/∂t1``."""
    if node.name != output:
        return f"∂{node.name}/∂{inp.name}"
    rhs = equation_text(node)
    return f"∂{rhs}/∂{inp.name}" if _one_term(rhs) else f"∂({rhs})/∂{inp.name}"


def _one_term(text: str) -> bool:
    """A name, or one call whose brackets close at the end (``sin(y)``): needs no brackets around it."""
    head, bracket, _ = text.partition("(")
    if not bracket:
        return head.isidentifier()
    if not head.isidentifier() or not text.endswith(")"):
        return False
    depth = 0
    for k, ch in enumerate(text[len(head):]):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return len(head) + k == len(text) - 1
    return False


def local_equation(node: Node, part: LocalGrad, output: str | None = None) -> str:
    """``∂t4/∂z = 3z² = 3·2² = 12``: the local gradient in the graph's names, with the numbers at hand,
    and its value (each form only where it says something the previous one did not); ``output`` is
    the output node's name (its local gradients get a symbol of their own, :func:`local_symbol`)."""
    value = local_text(part)
    forms = [local_symbol(node, part.input, output), part.rule]
    at = part.rule_at
    if at is not None and _plain(at) not in (_plain(part.rule or ""), _plain(value)):
        forms.append(at)
    if _plain(forms[-1]) != _plain(value):
        forms.append(value)
    return " = ".join(f for f in forms if f is not None)


def _plain(text: str) -> str:
    """Text compared for sameness: one minus sign, no brackets around a lone number."""
    t = text.replace("−", "-").replace(" ", "")
    return t[1:-1] if t.startswith("(") and t.endswith(")") and "(" not in t[1:-1] else t


def _sum_text(parts: list[Any], total: Any) -> str:
    if len(parts) > 1 and all(np.ndim(p) == 0 for p in parts):
        return " + ".join(fmt_value(p) for p in parts) + f" = {fmt_value(total)}"
    return fmt_value(total)


# ---------------------------------------------------------------------------------------------
# the backward pass as a graph
# ---------------------------------------------------------------------------------------------


def _backward_graph(graph: Graph) -> Graph:
    out = graph.output.tensor
    if out is None or not out.requires_grad:
        raise ValueError("this graph has no backward pass to show: its output does not depend on any input")
    for n in graph.nodes:
        if n.kind == "op" and (n.tensor is None or n.tensor._parents is None):
            raise RuntimeError("the graph's intermediates were released; trace it again to see its backward pass")
    names = {id(n.tensor): n.name for n in graph.nodes if n.tensor is not None and n.kind != "const"}
    # the seed requires grad so that every step computed from it is recorded (not folded to a constant)
    seed = Tensor(np.ones_like(out.data), requires_grad=True, name=f"d{graph.output.name}")
    names[id(seed)] = seed.name
    inputs = [n.tensor for n in graph.inputs]
    with enable_grad():
        kept = run_backward(out, seed, targets=inputs, accumulate=False, create_graph=True, keep_all=True)
        # the gradient tensors take the names d<node>; an input whose gradient is a value already
        # named (add passes it on unchanged) gets an identity node of its own, `dx = dt1`
        for n in reversed(graph.ops):
            gt = kept.get(id(n.tensor))
            if isinstance(gt, Tensor) and id(gt) not in names:
                names[id(gt)] = f"d{n.name}"
        grad_outs = []
        for n in graph.inputs:
            gt = kept.get(id(n.tensor))
            if gt is None:  # an input the output does not depend on: its gradient is zero
                gt = functions.multiply(n.tensor, 0.0)
            elif not isinstance(gt, Tensor) or id(gt) in names or gt._gate is None:
                gt = functions.positive(gt)
            names[id(gt)] = f"d{n.name}"
            grad_outs.append(gt)
    bg = _build(out, [*inputs, seed], names, graph.expand, extra_outputs=grad_outs, backward=False)
    return bg


# ---------------------------------------------------------------------------------------------
# forward mode, node by node
# ---------------------------------------------------------------------------------------------


def dotted(name: str) -> str:
    """A tangent's name: the node's name with a dot over its first letter (ẋ, ṫ1)."""
    import unicodedata

    return unicodedata.normalize("NFC", name[0] + "\u0307") + name[1:] if name else name


def _add_tangents(graph: Graph, wrt: str | None) -> None:
    from .forward import run_forward

    names = [n.name for n in graph.inputs]
    if not names:
        raise ValueError("trace(mode='forward'): the function has no inputs to differentiate")
    wrt = names[0] if wrt is None else wrt
    if wrt not in names:
        raise ValueError(f"trace(mode='forward'): wrt={wrt!r} is not an input (inputs: {', '.join(names)})")
    seed_node = graph[wrt]
    out = graph.output.tensor
    tangents: dict[int, Any] = {}
    if out is not None and out.requires_grad:
        tangents = run_forward(out, {id(seed_node.tensor): np.ones_like(np.asarray(seed_node.value, dtype=float))})
    for n in graph.nodes:
        t = tangents.get(id(n.tensor)) if n.tensor is not None else None
        n.tangent = np.zeros_like(np.asarray(n.value, dtype=float)) if t is None else \
            np.broadcast_to(np.asarray(t), np.shape(n.value)).copy()
    graph.mode, graph.wrt = "forward", wrt


def _forward_step(node: Node) -> ForwardStep:
    from .gates import pushforward

    stand_ins = [_stand_in(i) for i in node.inputs]
    tangents = [None if i.kind == "const" or _forward_only(i) else sym(dotted(i.name), shape=np.shape(i.value))
                for i in node.inputs]
    try:
        rule = pushforward(node.gate, ops, tangents, stand_ins, sym(node.name, shape=np.shape(node.value)),
                           dict(node.params))
        text = "0" if rule is None else to_text(rule, "math")
    except TypeError:  # a gate whose forward-mode step transposes its backward rule: no printed form
        text = None
    return ForwardStep(node, text, node.tangent)


def _forward_table(graph: Graph) -> str:
    wrt = graph.wrt
    seeds = ", ".join(f"{dotted(n.name)} = {'1' if n.name == wrt else '0'}" for n in graph.inputs)
    # an array input is seeded with ones: each tangent is then a derivative along that direction (every
    # element of the input moved together), not the gradient, and the table says so
    along = np.size(graph[wrt].value) > 1
    carried = (f"each node's derivative along {dotted(wrt)} (all of {wrt}'s elements moved together)" if along
               else f"d(each node)/d{wrt}")
    lines = [f"Forward mode: {carried} carried along with its value ({seeds}); "
             "each tangent = Σ local gradient × the input's tangent"]
    rows = [(n.name, None, fmt_value(n.value), f"{dotted(n.name)} = {fmt_value(n.tangent)}")
            for n in graph.inputs]
    for step in graph.forward_steps():
        n = step.node
        rule = f"{dotted(n.name)} = {step.rule}" if step.rule is not None else \
            f"{dotted(n.name)} = J·(input tangents)"
        value = fmt_value(n.tangent)
        same = step.rule is not None and step.rule.replace("−", "-") == value
        rows.append((n.name, equation_text(n), fmt_value(n.value), rule + ("" if same else f" = {value}")))
    w1 = max(len(a) for a, _, _, _ in rows)
    w2 = max((len(f"{a} = {b}") for a, b, _, _ in rows if b is not None), default=w1)
    w3 = max(len(c) for _, _, c, _ in rows)
    for name, rhs, val, tan in rows:
        left = f"{name} = {rhs}" if rhs is not None else f"{name}"
        lines.append(f"  {left:<{w2}}  = {val:<{w3}}    {tan}" + ("    (the seed)" if name == wrt else ""))
    if along:
        n = np.size(graph[wrt].value)
        lines += ["", f"Result: ∂{graph.output.name}/∂{wrt} · {dotted(wrt)} = {fmt_value(graph.output.tangent)}   "
                  f"(the derivative along {dotted(wrt)}, not the gradient: one forward pass gives one direction, so "
                  f"the gradient with respect to {wrt}'s {n} elements takes {n} passes; reverse mode gives all of "
                  f"it in one backward pass)"]
    else:
        lines += ["", f"Result: ∂{graph.output.name}/∂{wrt} = {fmt_value(graph.output.tangent)}   "
                  "(one forward pass gives the derivative with respect to one input; reverse mode gives all of "
                  "them in one backward pass)"]
    return "\n".join(lines)
