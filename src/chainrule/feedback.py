"""What went wrong in a hand-written backward pass, said in the learner's own names.

:func:`chainrule.check.check_backward` and :func:`chainrule.check.check_file` find *that* a returned
gradient is wrong; :func:`diagnose` finds *where* and *why*:

1. **Matching.** Each forward local of the checked function (``q = x + y``) is matched to a node of
   the reference's graph: by value at every input set the check ran (so a ``q`` that equals ``y``
   at x = 1, y = 3 by coincidence is not taken for ``y``), preferring a node of the same name; by
   name alone when no node has its value. A gradient local is matched *by name* to its forward
   local -- ``dq``, ``d_q``, ``grad_q``, ``q_grad``, ``dfdq`` -- or by being returned in the place of
   an input's gradient (the worksheet's ``fx``); never by its value, which a wrong local gradient can
   make equal to anything (``dq == q``).
2. **The first wrong step** is the wrong gradient local closest to the output (in the reference's
   graph): the one whose own upstream gradient was still right.
3. **The mistake.** Its value is compared, at every input set, with what the classic mistakes would
   have given: a fan-out gradient overwritten instead of added, a local gradient of the other input
   (mul gate not swapped), the upstream gradient or the local gradient left out, a lost sign, a
   missing (or extra) constant factor. A mistake is named only when it explains the value at every
   input set. The sentence uses the learner's names, the gate table's own rules printed in those
   names (never a derivative written here), and the learner's own line of code.

Nothing here names a node the learner did not write (no ``t3``): a step the learner did not name is
shown as the expression that computes it from their names.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import backend
from .gates import local_gradient, pullback, unbroadcast

__all__ = ["MISTAKES", "Diagnosis", "Source", "diagnose", "grad_target"]

#: The mistakes :func:`diagnose` recognizes (the ``mistake`` field of a report), and what each means.
MISTAKES: dict[str, str] = {
    "fan_out_overwritten": "a value used several times: its gradients were not all added up",
    "wrong_input": "the local gradient of the gate's other input was used (a mul gate not swapped)",
    "upstream_missing": "the local gradient alone: the upstream gradient was not multiplied in",
    "local_missing": "the upstream gradient passed on without the gate's local gradient",
    "lost_sign": "the gradient has the wrong sign",
    "missing_factor": "a constant factor is missing (2x written as x) or extra",
    "wrong_element": "an element of a vector's gradient holds another element's (w[0] where w[1] belongs)",
    "wrong_value": "a wrong gradient that none of the classic mistakes explains",
    "wrong_forward": "a forward value differs from the function's",
    "wrong_shape": "a returned value has the wrong shape (a gradient has its input's shape)",
}

_FACTORS = (2, 3, 4, 0.5, 1 / 3, 0.25)


@dataclass(frozen=True)
class Source:
    """Where the checked function assigns each of its local variables: ``name -> [(line, text,
    augmented)]`` in the order written (lines of the file; ``text`` is the statement's first line;
    ``augmented`` for ``+=`` and friends). Read with :mod:`ast`, never run. ``terms`` keeps, for each
    assignment of a plain name (``dx = ...``, ``dx += ...``, ``dx -= ...``), ``(line, sign, right-hand
    side)``: what that line adds to the name (sign 0 for a plain ``=``, which replaces it)."""

    assignments: dict[str, list[tuple[int, str, bool]]]
    terms: dict[str, list[tuple[int, int, ast.expr]]] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, text: str, func: str, first_line: int = 1) -> Source | None:
        """The assignments of function ``func`` in source ``text`` (None if it cannot be read)."""
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        fn = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == func), None)
        if fn is None:
            return None
        lines = text.splitlines()
        found: dict[str, list[tuple[int, str, bool]]] = {}
        terms: dict[str, list[tuple[int, int, ast.expr]]] = {}
        for st in ast.walk(fn):
            if isinstance(st, ast.Assign):
                targets, aug = st.targets, False
            elif isinstance(st, (ast.AugAssign, ast.AnnAssign)):
                targets, aug = [st.target], isinstance(st, ast.AugAssign)
            else:
                continue
            names = [t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)]
            line = lines[st.lineno - 1].strip() if 0 < st.lineno <= len(lines) else ""
            at = st.lineno + first_line - 1
            for name in names:
                found.setdefault(name, []).append((at, line, aug))
            sign = {ast.Add: 1, ast.Sub: -1}.get(type(st.op)) if isinstance(st, ast.AugAssign) else 0
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and sign is not None and st.value is not None:
                terms.setdefault(targets[0].id, []).append((at, sign, st.value))
        for entries in [*found.values(), *terms.values()]:
            entries.sort(key=lambda e: e[0])
        return cls(found, terms)

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Source | None:
        """The assignments of a function defined in a file (None where its source is not available)."""
        try:
            lines, start = inspect.getsourcelines(fn)
        except (OSError, TypeError):
            return None
        return cls.parse(textwrap.dedent("".join(lines)), fn.__name__, max(start, 1))

    def last(self, name: str) -> tuple[int, str, bool] | None:
        entries = self.assignments.get(name)
        return entries[-1] if entries else None

    def last_plain(self, name: str) -> tuple[int, str, bool] | None:
        """The last plain ``name = ...`` (the one that replaces what came before it)."""
        entries = [e for e in self.assignments.get(name, []) if not e[2]]
        return entries[-1] if entries else None

    def plain_count(self, name: str) -> int:
        """How many times ``name`` is assigned with a plain ``=``."""
        return sum(1 for _, _, aug in self.assignments.get(name, []) if not aug)


@dataclass
class Diagnosis:
    """The first wrong step (a local of the checked function), what kind of mistake it is (a key
    of :data:`MISTAKES`), a sentence for the learner, and the line it is on."""

    name: str | None = None
    expected: Any = None
    got: Any = None
    note: str = ""
    mistake: str | None = None
    feedback: str | None = None
    line: int | None = None


@dataclass
class Run:
    """One input set the check ran: the inputs, the checked function's final locals (None if that
    call raised) and what it returned (flattened: ``out, g1, g2, ...``)."""

    inputs: list[np.ndarray]
    locals: dict[str, Any] | None
    result: Any = None


def grad_target(name: str, known: set[str], outputs: Sequence[str], params: Sequence[str]) -> str | None:
    """The variable whose gradient a local named ``name`` holds by the usual habits (``dq``, ``d_q``,
    ``grad_q``, ``q_grad``, ``dfdq``, ``df_dq``; ``fx`` for an input x of a function whose output is
    ``f``), or None."""
    options: list[str] = []
    if name.startswith("d_"):
        options.append(name[2:])
    if name.startswith("grad_"):
        options.append(name[5:])
    if name.endswith("_grad"):
        options.append(name[:-5])
    for o in outputs:
        for pre in (f"d{o}d", f"d{o}_d"):
            if name.startswith(pre):
                options.append(name[len(pre):])
        if name.startswith(o) and name[len(o):] in params:  # the worksheet's fx, hx, gx
            options.append(name[len(o):])
    if name.startswith("d"):
        options.append(name[1:])
    for t in options:
        if t and t != name and t in known:
            return t
    return None


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    try:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))
    except (TypeError, ValueError):
        return False


def _numeric(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (np.ndarray, np.generic, int, float)):
        return False
    return np.asarray(v).dtype.kind in "iuf"


class _Match:
    """The checked function's locals and the reference's nodes, matched (see module docstring).

    ``graphs[s]`` is the reference traced at run ``s``, by default with composites staged into
    their parts (a superset of the fused graph's values, so one graph serves students who stage
    sigmoid and those who call it; ``expand=False`` for a student who used a composite's own rule);
    nodes are compared across runs by their position, which tracing the same reference at inputs
    of the same shapes keeps."""

    def __init__(self, reference: Callable[..., Any], params: list[str], runs: list[Run], failing: int,
                 holders: list[list[str]], rtol: float, atol: float, expand: bool = True,
                 returned: dict[str, str] | None = None) -> None:
        from .graph import trace

        self.params = params
        self.rtol, self.atol = rtol, atol
        self._steps: dict[int, list[Any]] = {}
        self.failing = failing
        small = sum(np.size(a) for a in runs[failing].inputs) <= 100_000
        self.usable = [s for s, r in enumerate(runs) if r.locals is not None and (small or s == failing)]
        self.runs = runs
        self.graphs = {s: trace(reference, *runs[s].inputs, expand=expand) for s in self.usable}
        final = runs[failing].locals or {}
        self.order = [k for k in final if _numeric(final[k])]
        g0 = self.graphs[failing]
        self.index = {id(n): k for k, n in enumerate(g0.nodes)}
        # gradient locals -> the variable whose gradient they hold
        self.outputs = [h for h in (holders[0] if holders else []) if h not in params]
        known = set(self.order) | set(params)
        self.grad_of: dict[str, str] = {}
        for name in self.order:
            if name not in params:
                t = grad_target(name, known, [*self.outputs, "out", "f", "L", "loss"], params)
                if t is not None:
                    self.grad_of[name] = t
        # the one local holding a returned gradient, when its name says nothing (`g1 = ...; return
        # out, g1`); never dr in `dz = dr` (r's gradient) or q in `dz = q` (a forward value)
        self.named_grads = named = set(self.grad_of)  # a returned local may also be a forward value
        for p, names in zip(params, holders[1:]):
            free = [h for h in names if h not in params and h not in self.grad_of]
            if len(free) == 1 and len(names) == 1:
                self.grad_of[free[0]] = p
        # forward locals -> node positions (best first); by name alone -> wrong forward values
        self.nodes: dict[str, list[int]] = {p: [self.index[id(n)]] for p, n in zip(params, g0.inputs)}
        self.by_name_only: dict[str, int] = {}
        self._taken = {k for ks in self.nodes.values() for k in ks}
        for name in self.order:
            if name in params or name in named:
                continue
            everywhere, here = self._value_matches(name)
            self._taken.update((everywhere or here)[:1])
            same_name = [k for k, n in enumerate(g0.nodes) if n.name == name and n.kind != "const"]
            if everywhere:
                self.nodes[name] = everywhere
            elif same_name and same_name[0] not in here:
                self.by_name_only[name] = same_name[0]  # a step the function names q, which q misses
            elif here:
                self.nodes[name] = here  # the value where the check failed (the other runs may differ)
        for label, p in (returned or {}).items():
            self.grad_of[label] = p
            self.named_grads.add(label)  # a returned value no local holds: a gradient, never a forward step
            if label not in self.order:
                self.order.append(label)
        self.student: dict[int, str] = {}  # node position -> the learner's name for it (first in code order)
        for name in [*params, *self.order]:
            for k in self.nodes.get(name, [])[:1]:
                self.student.setdefault(k, name)

    def node(self, s: int, k: int) -> Any:
        return self.graphs[s].nodes[k]

    def steps(self, s: int) -> list[Any]:
        """The backward steps of the reference at run ``s`` (computed once)."""
        if s not in self._steps:
            self._steps[s] = self.graphs[s].backward_steps()
        return self._steps[s]

    def value(self, s: int, name: str) -> Any:
        return (self.runs[s].locals or {}).get(name)

    def _value_matches(self, name: str) -> tuple[list[int], list[int]]:
        """The nodes with ``name``'s value at every run, and those with it where the check failed,
        best first: the same name; then a step no earlier local took (locals are written in the
        order the steps run: at x = e, y = π/2, a = ln x and b = sin y are both 1); steps before
        inputs; earlier steps first."""
        g0 = self.graphs[self.failing]
        cand = [k for k, n in enumerate(g0.nodes) if n.kind != "const"
                and _close(self.value(self.failing, name), n.value, self.rtol, self.atol)]
        everywhere = [k for k in cand if all(self.value(s, name) is None
                                             or _close(self.value(s, name), self.node(s, k).value, self.rtol, self.atol)
                                             for s in self.usable)]

        def best(k: int) -> tuple[bool, bool, bool, int]:
            return g0.nodes[k].name != name, k in self._taken, g0.nodes[k].kind == "input", k

        return sorted(everywhere, key=best), sorted(cand, key=best)

    # ---- the learner's names for the reference's nodes --------------------------------------
    def text(self, k: int, depth: int = 0) -> str:
        """A node as the learner would write it: their name, a constant, or the expression that
        computes it from their names (``(x + y)``)."""
        from .graph import const_text, equation_text

        node = self.graphs[self.failing].nodes[k]
        if k in self.student:
            return self.student[k]
        if node.kind == "const":
            return const_text(node.value) or "a constant"
        if node.gate is None or depth > 3:
            return "…"
        shown = [replace(i, name=self.text(self.index[id(i)], depth + 1)) if id(i) in self.index else i
                 for i in node.inputs]
        rhs = equation_text(replace(node, inputs=tuple(shown)))
        return f"({rhs})" if " " in rhs else rhs  # x[0], exp(a) read as they are; x + y is bracketed

    def equation(self, k: int) -> str:
        """``r = q * y`` (or ``q * y`` for a step the learner did not name), in the learner's names."""
        text = self.text(k)
        if k in self.student:
            node = self.graphs[self.failing].nodes[k]
            if node.gate is None:
                return text
            from .graph import equation_text

            shown = [replace(i, name=self.text(self.index[id(i)], 1)) for i in node.inputs]
            return f"{text} = {equation_text(replace(node, inputs=tuple(shown)))}"
        return text[1:-1] if text.startswith("(") and text.endswith(")") else text

    def rule(self, c: int, slot: int) -> str | None:
        """The local gradient of node ``c``'s input ``slot``, the gate's own rule printed in the
        learner's names (``y`` for ``r = q * y``), or None for a gate without an elementwise rule."""
        from .symbolic import const, ops, sym, to_text

        node = self.graphs[self.failing].nodes[c]
        gate = node.gate
        if slot < 0 or gate is None or gate.local is None or gate.local[slot] is None:
            return None  # (slot -1: a chain of steps, which has no one rule)

        def stand_in(i: Any) -> Any:
            if i.kind == "const" and np.ndim(i.value) == 0:
                return const(i.value)
            k = self.index.get(id(i))
            return sym(self.text(k, 1) if k is not None else "…", shape=np.shape(i.value))

        args = [stand_in(i) for i in node.inputs]
        return to_text(gate.local[slot](ops, *args, sym(self.text(c, 1), shape=np.shape(node.value))), "math")

    def grad_name(self, k: int) -> str | None:
        """The learner's gradient local for node ``k`` (``dr`` for their ``r``), if they have one."""
        name = self.student.get(k)
        return next((g for g, t in self.grad_of.items() if t == name), None) if name else None


# ---------------------------------------------------------------------------------------------
# the diagnosis
# ---------------------------------------------------------------------------------------------


@dataclass
class _Path:
    """One way a value's gradient comes back: the share that flows along it, what each mistake
    would have sent instead (``alts``: kind -> array), and where -- ``(consumer, slot, node)``
    positions -- so a sentence can name the gate, its rule and its input."""

    share: Any
    alts: dict[str, Any]
    where: list[tuple[int, int, int]]


_KINDS = ("wrong_input", "upstream_missing", "local_missing")


def _paths(match: _Match, s: int, k: int, through: bool = True) -> list[_Path]:
    """The paths of node ``k``'s gradient at run ``s``. A step the learner did not name and that has
    no local rule of its own (``x[0]`` of a vector x, a reshape) is looked through: a mistake made
    at the gates behind it reaches ``x`` by that step's own pullback."""
    g = match.graphs[s]
    node = g.nodes[k]
    pos = {id(n): j for j, n in enumerate(g.nodes)}
    m = backend.array_ops
    shape = np.shape(node.value)
    out: list[_Path] = []
    for step in match.steps(s):
        c = step.node
        cpos = pos[id(c)]
        slots = [j for j, i in enumerate(c.inputs) if i is node]
        seen = 0
        for part in step.parts:
            if part.input is not node:
                continue
            slot = slots[min(seen, len(slots) - 1)]
            seen += 1
            share = np.asarray(part.grad, dtype=np.float64)
            up = np.asarray(step.upstream, dtype=np.float64)
            alts: dict[str, Any] = {"lost_sign": -share, **{f"factor:{f}": share / f for f in _FACTORS}}
            where = [(cpos, slot, k)]
            end = _chain_end(match, g, c, node) if through and cpos not in match.student else None
            if end is not None:
                # y -> -y -> exp -> 1 + ... -> sigy: steps the learner did not name, ending at one
                # they did; their own local gradient for the whole chain (sigy·(1 − sigy)) is
                # share / dsigy, and the upstream gradient is dsigy
                g_end = np.asarray(end.grad, dtype=np.float64)
                alts["upstream_missing"] = _fit(share / g_end, shape) if g_end.shape == shape else None
                alts["local_missing"] = _fit(g_end, shape)
                alts = {key: v for key, v in alts.items() if v is not None}
                out.append(_Path(share, alts, [(pos[id(end)], -1, k)]))
                continue
            if part.local is not None:
                local = np.asarray(part.local, dtype=np.float64)
                alts["upstream_missing"] = _fit(np.broadcast_to(local, np.broadcast_shapes(local.shape, up.shape)),
                                                shape)
                alts["local_missing"] = _fit(up, shape)
                if c.gate.local is not None and len(c.inputs) == 2 and c.gate.local[1 - slot] is not None:
                    other = local_gradient(c.gate, 1 - slot, m, [i.value for i in c.inputs], c.value)
                    alts["wrong_input"] = _fit(up * np.asarray(other, dtype=np.float64), shape)
            elif through and cpos not in match.student and c.gate.local is None:
                inner = _paths(match, s, cpos, through=False)
                if inner:
                    where = [w for p in inner for w in p.where]
                    vals = [i.value for i in c.inputs]
                    needs = [i is node for i in c.inputs]
                    for kind in _KINDS:
                        if all(kind in p.alts for p in inner):
                            alt_c = np.asarray(c.grad, dtype=np.float64) - sum(p.share for p in inner) \
                                + sum(p.alts[kind] for p in inner)
                            sent = pullback(c.gate, m, alt_c, vals, c.value, needs, c.params)[slot]
                            alts[kind] = np.asarray(sent, dtype=np.float64)
            out.append(_Path(share, alts, where))
    return out


def _chain_end(match: _Match, g: Any, c: Any, node: Any) -> Any:
    """The first step the learner named along a chain of one-input elementwise steps from ``node``
    through ``c`` (constants aside, each used once), or None if the chain branches or never meets one."""
    pos = {id(n): j for j, n in enumerate(g.nodes)}
    users: dict[int, list[Any]] = {}
    for n in g.ops:
        for i in n.inputs:
            users.setdefault(id(i), []).append(n)
    prev, cur = node, c
    for _ in range(12):
        if cur.gate is None or cur.gate.local is None or cur.grad is None:
            return None
        if any(i is not prev and i.kind != "const" for i in cur.inputs) or np.shape(cur.value) != np.shape(node.value):
            return None
        if pos[id(cur)] in match.student:
            return cur
        nxt = users.get(id(cur), [])
        if len(nxt) != 1:
            return None
        prev, cur = cur, nxt[0]
    return None


def _fit(g: Any, shape: tuple[int, ...]) -> Any:
    """A gradient-shaped array for a node of ``shape`` (summed over broadcast axes)."""
    g = np.asarray(g, dtype=np.float64)
    return g if g.shape == shape else np.asarray(unbroadcast(backend.array_ops, g, shape))


def diagnose(reference: Callable[..., Any], params: list[str], runs: list[Run], failing: int,
             holders: list[list[str]], *, source: Source | None = None, output_wrong: bool = False,
             returned: dict[str, str] | None = None, rtol: float = 1e-6, atol: float = 1e-9) -> Diagnosis | None:
    """The first wrong step of a checked function and its mistake (see the module docstring).

    ``runs`` are the input sets the check ran (the function's final locals at each), ``failing`` the
    one where a returned value is wrong, ``holders`` the locals holding each returned value (the
    output first, then one gradient per input of ``params``). ``returned`` names returned gradients
    that no local holds (``return out, 2 * x``): a name in the runs' locals -> its input. None when
    nothing can be said.
    """
    runs = [_with_returned(r, params, returned or {}) for r in runs]
    match = _Match(reference, params, runs, failing, holders, rtol, atol, returned=returned)
    g0 = match.graphs[failing]
    if output_wrong:  # the forward pass went wrong first: every gradient after it is spoilt
        return _forward_step(match, source)
    wrong: list[tuple[str, int, Any, Any]] = []  # (local, node position, expected, got)
    for name in match.order:
        target = match.grad_of.get(name)
        if target is None or target not in match.nodes:
            continue
        got = match.value(failing, name)
        grads = [g0.nodes[k].grad for k in match.nodes[target] if g0.nodes[k].grad is not None]
        if not grads or got is None:
            continue
        candidates = grads + ([sum(grads[1:], grads[0])] if len(grads) > 1 else [])
        if not any(_close(got, g, rtol, atol) for g in candidates):
            wrong.append((name, match.nodes[target][0], grads[0], got))
    if wrong:
        depth = _depth_to_output(g0)
        code = {n: i for i, n in enumerate(match.order)}
        name, k, expected, got = min(wrong, key=lambda w: (depth[w[1]], code.get(w[0], len(code))))
        d = _explain(match, name, k, source)
        if d.mistake == "wrong_value":
            # the learner may have used a composite's own rule (sigmoid's σ·(1 − σ)) where the staged
            # graph has its parts: look again at the graph with composites as one gate
            fused = _Match(reference, params, runs, failing, holders, rtol, atol, expand=False, returned=returned)
            target = fused.grad_of.get(name)
            if target in fused.nodes:
                again = _explain(fused, name, fused.nodes[target][0], source)
                if again.mistake != "wrong_value":
                    d = again
        d.expected, d.got = expected, got
        return d
    return None


def _with_returned(run: Run, params: list[str], returned: dict[str, str]) -> Run:
    """The run with each returned gradient that no local holds added to its locals, by its label."""
    items = list(run.result) if isinstance(run.result, (tuple, list)) else None
    if not returned or run.locals is None or items is None or len(items) != len(params) + 1:
        return run
    extra = {label: items[1 + params.index(p)] for label, p in returned.items()}
    return Run(run.inputs, {**run.locals, **extra}, run.result)


def _depth_to_output(g: Any) -> list[int]:
    """Per node position, the longest path to the output (0 at the output): a gradient is computed
    from those of the nodes nearer the output."""
    pos = {id(n): k for k, n in enumerate(g.nodes)}
    depth = [-1] * len(g.nodes)
    depth[pos[id(g.output)]] = 0
    for n in reversed(g.nodes):
        k = pos[id(n)]
        if depth[k] < 0:
            continue
        for i in n.inputs:
            depth[pos[id(i)]] = max(depth[pos[id(i)]], depth[k] + 1)
    return [d if d >= 0 else len(g.nodes) for d in depth]


def _forward_step(match: _Match, source: Source | None) -> Diagnosis | None:
    """The first forward local (in the learner's order) whose value no step of the function has."""
    g0 = match.graphs[match.failing]
    for name in match.order:
        if name in match.params or name in match.named_grads:
            continue
        got = match.value(match.failing, name)
        if name in match.by_name_only:
            node = g0.nodes[match.by_name_only[name]]
            return _with_line(Diagnosis(name, node.value, got, f"the value of {name}", "wrong_forward",
                                        f"`{name}` has the wrong value: the step named {name} computes "
                                        f"{_short(node.value)}, and `{name}` holds {_short(got)}"), source)
        if name not in match.nodes:
            return _with_line(Diagnosis(name, None, got, "no step of the function computes this value",
                                        "wrong_forward", f"`{name}` = {_short(got)} is not a value of any step "
                                        "of the function: check the forward pass up to this line"), source)
    return None


def _with_line(d: Diagnosis, source: Source | None) -> Diagnosis:
    if source is not None and d.name is not None:
        last = source.last(d.name)
        if last is not None:
            d.line = last[0]
    return d


def _short(v: Any) -> str:
    from .graph import fmt_value

    return fmt_value(v)


def _explain(match: _Match, name: str, k: int, source: Source | None) -> Diagnosis:
    """Which classic mistake explains ``name`` (the learner's gradient of node ``k``) at every input
    set, on the line that went wrong: of several lines adding up ``name``, the first whose term is
    not a gradient that comes back through some of the uses (an overwrite: the line that replaces)."""
    d = _mistake(match, name, k, source)
    if d.mistake != "fan_out_overwritten" and source is not None:
        line = _first_wrong_term(match, name, k, source)
        if line is not None:
            d.line = line
    return d


def _first_wrong_term(match: _Match, name: str, k: int, source: Source) -> int | None:
    """The first line of ``dx = ...; dx += ...; ...`` whose term is not what comes back through one of
    x's uses, nor through several of them together, at every input set the check ran (None when
    there is one line only, or a term cannot be worked out from the final values of its names).

    A term is interpreted (:func:`chainrule.expr.evaluate`, never run) at the function's final
    locals, so each name it reads must be assigned once, before it; the shares it is compared with
    are the reference's upstream × local gradient of each use of x."""
    from .expr import ExprError, evaluate

    entries = source.terms.get(name, [])
    if len(entries) < 2 or len(entries) != len(source.assignments.get(name, [])):
        return None
    first = {n: e[0][0] for n, e in source.assignments.items() if len(e) == 1}
    sets = [s for s in match.usable if match.runs[s].locals is not None]
    shares = {s: [p.share for p in _paths(match, s, k)] for s in sets}
    n = len(shares[match.failing]) if match.failing in shares else 0
    if not 1 < n <= 8:
        return None
    subsets = [c for size in range(1, n + 1) for c in itertools.combinations(range(n), size)]
    for line, sign, rhs in entries:
        names = {t.id for t in ast.walk(rhs) if isinstance(t, ast.Name) and t.id != "np"}
        if not all(first.get(t, line) < line or (t in match.params and t not in source.assignments) for t in names):
            return None  # a name assigned again, or after this line: its final value is not the one used here
        right = set(subsets)
        for s in sets:
            env = {t: v for t, v in (match.runs[s].locals or {}).items() if t in names}
            try:
                with np.errstate(all="ignore"):
                    term = (-1.0 if sign < 0 else 1.0) * np.asarray(evaluate(rhs, env), dtype=np.float64)
            except (ExprError, ValueError, TypeError, ArithmeticError, KeyError, IndexError):
                return None
            right = {c for c in right if _close_broadcast(term, sum(shares[s][j] for j in c), match)}
        if not right:
            return line
    return None


def _close_broadcast(a: Any, b: Any, match: _Match) -> bool:
    """Whether two arrays are equal where they broadcast together (a number added to every element)."""
    try:
        return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=match.rtol,
                                atol=match.atol))
    except (TypeError, ValueError):
        return False


def _mistake(match: _Match, name: str, k: int, source: Source | None) -> Diagnosis:
    """Which classic mistake explains ``name`` (the learner's gradient of node ``k``) at every input set."""
    sets = [s for s in match.usable if _numeric(match.value(s, name))]
    with np.errstate(all="ignore"):  # a rule of the other input may take ln of a negative base: nan, unused
        data = {s: (np.asarray(match.node(s, k).grad, dtype=np.float64),
                    np.asarray(match.value(s, name), dtype=np.float64), _paths(match, s, k)) for s in sets}
    who = match.student.get(k, match.text(k))
    d = _with_line(Diagnosis(name, note=f"the gradient of {who}"), source)
    shown = f"`{name}`" if name.isidentifier() else name

    def holds(predict: Callable[[Any, list[_Path]], Any]) -> bool:
        """Whether ``predict`` (the right gradient and its paths -> what a mistake gives) gives the
        learner's value at every input set, and a wrong one where the check failed."""
        for s in sets:
            expected, got, paths = data[s]
            try:
                with np.errstate(all="ignore"):
                    p = predict(expected, paths)
            except (ValueError, TypeError, IndexError, KeyError):
                return False
            if p is None or not _close(p, got, match.rtol, match.atol):
                return False
            if s == match.failing and _close(p, expected, match.rtol, match.atol):
                return False  # this "mistake" gives the right answer here: it explains nothing
        return True

    paths = data[match.failing][2]
    n = len(paths)

    # a value used several times whose gradient holds only some of its uses
    if n > 1:
        for size in range(1, n):
            for subset in itertools.combinations(range(n), size):
                if holds(lambda e, ps, sub=subset: sum((ps[j].share for j in sub[1:]), ps[sub[0]].share)):
                    d.mistake = "fan_out_overwritten"
                    plain = source.last_plain(name) if source is not None else None
                    if source is not None and source.plain_count(name) > 1 and plain is not None:
                        d.line = plain[0]
                        d.feedback = (f"{who} is used {n} times; its gradients must add up — `{plain[1]}` replaces "
                                      f"the earlier contribution (write {name} += ...)")
                    else:
                        held = "the gradient from one use" if size == 1 else f"those of {size} uses"
                        rest = "other" if n - size == 1 else f"other {n - size}"
                        d.feedback = (f"{who} is used {n} times; its gradients must add up — {shown} holds {held} "
                                      f"only: add the {rest}")
                    return d

    kinds = [*_KINDS, "lost_sign", *[f"factor:{f}" for f in _FACTORS]]
    found: list[tuple[str, list[int]]] = []  # every mistake that explains the value, most telling first
    for kind in kinds:
        choices = [[j] for j in range(n) if kind in paths[j].alts]
        if n > 1 and all(kind in p.alts for p in paths):
            choices.append(list(range(n)))
        for chosen in choices:
            def predict(e: Any, ps: list[_Path], chosen: list[int] = chosen, kind: str = kind) -> Any:
                return e - sum(ps[j].share for j in chosen) + sum(ps[j].alts[kind] for j in chosen)

            if holds(predict):
                found.append((kind, chosen))
    named_kinds = {"missing_factor" if k.startswith("factor:") else k for k, _ in found}
    # at one input set alone, two mistakes that give the same number cannot be told apart: name none
    if found and (len(sets) > 1 or len(named_kinds) == 1):
        kind, chosen = found[0]
        where = [w for j in chosen for w in paths[j].where]
        d.mistake = "missing_factor" if kind.startswith("factor:") else kind
        d.feedback = _sentence(match, kind, shown, where)
        return d
    mixed = _element_mix_up(match, name, data, sets)
    if mixed is not None:
        d.mistake, d.feedback = "wrong_element", mixed
        return d
    d.mistake = "wrong_value"
    alone = _element_path(match, data, sets)
    if alone is not None:  # x[0] and x[1] of a vector: each element of the gradient comes back one way
        paths, n = [paths[alone[1]]], 1
        shown = f"`{name}{_index_text(alone[0])}`"
        who = match.text(paths[0].where[0][2]) if len(paths[0].where) == 1 else who
    if n > 1:
        d.feedback = (f"{shown} is not the gradient of {who}: {who} is used {n} times, so its gradient adds up "
                      "what comes back through each use")
    elif n == 1:
        c, slot, _ = paths[0].where[0] if len(paths[0].where) == 1 else (None, None, None)
        if c is not None:
            rule = match.rule(c, slot)
            up = match.grad_name(c) or "the upstream gradient"
            gate = match.node(match.failing, c).gate
            d.feedback = (f"{shown} is not the gradient of {who}: through `{match.equation(c)}` it is "
                          + (f"{up} × {rule} ({gate.idea})" if rule is not None
                             else f"what the gate sends back from {up} ({gate.explain})"))
        else:
            d.feedback = f"{shown} is not the gradient of {who}"
    else:
        d.feedback = f"{shown} is not the gradient of {who}"
    return d


def _supports(data: dict[int, Any], sets: list[int]) -> list[Any]:
    """Per path of the gradient, the elements it reaches at some input set (x[0]'s path: element 0)."""
    n = len(data[sets[0]][2])
    return [np.any([np.asarray(data[s][2][j].share) != 0 for s in sets], axis=0) for j in range(n)]


def _wrong_elements(match: _Match, data: dict[int, Any]) -> list[tuple[int, ...]]:
    expected, got, _ = data[match.failing]
    if expected.ndim == 0 or got.shape != expected.shape:
        return []
    return [tuple(int(i) for i in e) for e in np.argwhere(~np.isclose(got, expected, rtol=match.rtol,
                                                                      atol=match.atol))]


def _element_path(match: _Match, data: dict[int, Any], sets: list[int]) -> tuple[tuple[int, ...], int] | None:
    """The first wrong element of a vector's gradient and the one path that reaches it, when every
    wrong element is reached by one use only (w[0]·x[0] + w[1]·x[1]: no fan-out to add up)."""
    if match.failing not in data or not sets:
        return None
    wrong = _wrong_elements(match, data)
    supports = _supports(data, sets)
    owners = [[j for j, sup in enumerate(supports) if np.shape(sup) and sup[e]] for e in wrong]
    if not wrong or any(len(o) != 1 for o in owners):
        return None
    return wrong[0], owners[0][0]


def _element_mix_up(match: _Match, name: str, data: dict[int, Any], sets: list[int]) -> str | None:
    """A vector's gradient whose wrong element holds, at every input set, what comes back to another
    element through its own use (``dx[1] = w[0] * ddot``): the sentence naming both local gradients."""
    found = _element_path(match, data, sets)
    if found is None:
        return None
    e, j = found
    supports = _supports(data, sets)
    for q, sup in enumerate(supports):
        others = [tuple(int(i) for i in t) for t in np.argwhere(sup)]
        if q == j or len(others) != 1 or others[0] == e:
            continue
        eq = others[0]
        if all(_close(data[s][1][e], np.asarray(data[s][2][q].share)[eq], match.rtol, match.atol) for s in sets):
            mine, theirs = data[sets[0]][2][j].where, data[sets[0]][2][q].where
            if len(mine) != 1 or len(theirs) != 1:
                return None
            (c, slot, k), (cq, slot_q, kq) = mine[0], theirs[0]
            rule, rule_q = match.rule(c, slot), match.rule(cq, slot_q)
            if rule is None or rule_q is None:
                return None
            return (f"`{name}{_index_text(e)}` uses {rule_q} where {rule} belongs: through `{match.equation(c)}`, "
                    f"the local gradient of {match.text(k)} is {rule}; {rule_q} is that of {match.text(kq)}, "
                    f"through `{match.equation(cq)}`")
    return None


def _index_text(e: tuple[int, ...]) -> str:
    return f"[{', '.join(str(i) for i in e)}]"


def _sentence(match: _Match, kind: str, name: str, where: list[tuple[int, int, int]]) -> str:
    """One sentence for a recognized mistake at the gates ``where`` (consumer, slot, node), in the
    learner's names and the gate table's rules."""
    where = sorted(where)
    eqs = _and([f"`{match.equation(c)}`" for c, _, _ in where])
    whos = _and([match.text(k) if k not in match.student else match.student[k] for _, _, k in where])
    rules = [match.rule(c, slot) for c, slot, _ in where]
    shown_rules = _and([r for r in rules if r is not None])
    ups = _and(list(dict.fromkeys(match.grad_name(c) or "the upstream gradient" for c, _, _ in where)))
    several = len(where) > 1
    if kind == "wrong_input":
        others = _and([match.rule(c, 1 - slot) or "?" for c, slot, _ in where])
        ideas = "; ".join(dict.fromkeys(match.node(match.failing, c).gate.idea for c, _, _ in where))
        return (f"for {eqs}, the local gradient{'s' if several else ''} of {whos} {'are' if several else 'is'} "
                f"{shown_rules}, but {name} uses {others}, the local gradient{'s' if several else ''} of the other "
                f"input{'s' if several else ''} ({ideas})")
    local = shown_rules or "its local gradient"
    if kind == "upstream_missing":
        return (f"{name} leaves out the upstream gradient: through {eqs}, {whos} "
                f"{'get' if several else 'gets'} {ups} × {local}, not {local} alone")
    if kind == "local_missing":
        return f"{name} passes {ups} on through {eqs} without multiplying by {shown_rules or 'the local gradient'}" \
            if not shown_rules else \
            f"{name} passes {ups} on through {eqs} without multiplying by the local gradient {shown_rules}"
    where_text = f": through {eqs}, the local gradient of {whos} is {shown_rules}" if shown_rules else \
        f" (through {eqs})"
    if kind == "lost_sign":
        return f"{name} has lost a minus sign{where_text}"
    return _factor_text(name, float(kind.split(":")[1])) + where_text


def _and(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _factor_text(name: str, f: float) -> str:
    k = f if f >= 1 else 1 / f
    shown = str(int(round(k))) if abs(k - round(k)) < 1e-9 else f"{k:g}"
    return f"{name} is missing a factor of {shown}" if f > 1 else f"{name} has an extra factor of {shown}"
