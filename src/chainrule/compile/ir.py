"""The instruction form every stage of ``cr.compile`` reads: three-address instructions, the program
that holds them (:class:`Code`), use counts, and the interpreter that runs them plainly.

Lowering (:mod:`.lower`) produces a :class:`Code`; every algebra pass (:mod:`.passes`) is a function
``Code -> Code``; every emitter turns the final :class:`Code` into Python source. Values are named
by strings; an argument is a value's name, a number, or a tuple of those (a gate taking a sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..codegen import _freeze
from ..gates import GATES, resolve

#: instruction kinds that compute a value from their arguments alone (value-numbered, dead if unused)
PURE_KINDS = ("ufunc", "call", "getitem", "helper")


@dataclass
class Ins:
    """One three-address instruction: ``target = fn(args, **params)``.

    ``kind`` is ``"ufunc"`` (a NumPy ufunc named ``fn``), ``"call"`` (a NumPy function, dotted names
    allowed), ``"getitem"`` (``args[0][params["index"]]``), ``"helper"`` (a gate's own forward,
    ``fn`` naming the gate), ``"alias"`` (``target`` is ``args[0]``) or ``"numexpr"`` (a fused
    numexpr kernel held by the emitter under the name ``fn``)."""

    target: str
    kind: str
    fn: str
    args: list[Any]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Code:
    """A program in instruction form: what lowering produces and each pass returns.

    ``canon`` maps a name to the value it stands for (a rewrite that finds ``t = a`` records it
    there instead of emitting a copy); ``env`` holds each value as traced at specialization (its
    shape and dtype are what the planner and emitters read); ``consts`` the named constants."""

    ins: list[Ins]
    params: list[str]
    returns: list[str]
    canon: dict[str, Any]
    env: dict[str, Any]
    consts: dict[str, Any]

    def c(self, a: Any) -> Any:
        """The value ``a`` stands for after aliases are resolved."""
        return canon(self.canon, a)

    @property
    def results(self) -> list[Any]:
        """What the program returns, aliases resolved."""
        return [self.c(r) for r in self.returns]

    def evolve(self, ins: list[Ins], **changes: Any) -> Code:
        """A new program with these instructions (and any other field replaced)."""
        return replace(self, ins=ins, **changes)

    def fork(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Copies of ``canon`` and ``env`` for a pass to extend without touching this program."""
        return dict(self.canon), dict(self.env)

    def meta(self, a: Any) -> tuple[tuple[int, ...], np.dtype] | None:
        """(shape, dtype) of a value that is an array, else None."""
        v = self.env.get(a) if isinstance(a, str) else None
        return (v.shape, v.dtype) if isinstance(v, np.ndarray) else None


class ConstRef(str):
    """A param that names a constant of the program (an index array): printed as its name."""

    def __repr__(self) -> str:
        return str(self)


def canon(aliases: dict[str, Any], a: Any) -> Any:
    """The value a name stands for after aliases are resolved (inside tuples too)."""
    if isinstance(a, tuple):
        return tuple(canon(aliases, x) for x in a)
    while isinstance(a, str) and a in aliases:
        a = aliases[a]
    return a


def uses(i: Ins) -> list[str]:
    """The value names an instruction reads (tuple arguments flattened), in order, with repeats."""
    found = []
    for a in i.args:
        if isinstance(a, str):
            found.append(a)
        elif isinstance(a, tuple):
            found.extend(x for x in a if isinstance(x, str))
    return found


def use_counts(ins: list[Ins]) -> dict[str, int]:
    """How many times each value is read by the instructions."""
    counts: dict[str, int] = {}
    for i in ins:
        for a in uses(i):
            counts[a] = counts.get(a, 0) + 1
    return counts


def is_number(a: Any) -> bool:
    """A plain number argument (bools are masks, not numbers)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _freeze_arg(a: Any) -> Any:
    if isinstance(a, tuple):
        return ("tuple", *(_freeze_arg(x) for x in a))
    return (type(a).__name__, a) if isinstance(a, (bool, int, float, complex)) else a


def pure_key(kind: str, fn: str, args: list[Any], params: dict[str, Any]) -> Any:
    """A key equal for two instructions that compute the same value (every ufunc, NumPy call,
    index and scatter here is pure), so each is computed once (the softmax's max in the forward
    and in the cross-entropy rule); None for what is not value-numbered."""
    if kind not in PURE_KINDS:
        return None
    return (kind, fn, tuple(_freeze_arg(a) for a in args), _freeze(params))


def holds_array(v: Any) -> bool:
    """Whether a param value is (or holds) an array, so it becomes a named constant."""
    if isinstance(v, np.ndarray):
        return True
    return isinstance(v, tuple) and any(holds_array(x) for x in v)


def resolve_params(params: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """Params with each :class:`ConstRef` replaced by the constant it names."""
    return {k: env[v] if isinstance(v, ConstRef) else v for k, v in params.items()}


def standin(a: np.ndarray) -> np.ndarray:
    """An array of ``a``'s shape and dtype that takes no memory (every element the one value 1, read
    only): what :func:`execute` computes with when only shapes and dtypes are wanted."""
    return np.broadcast_to(np.ones((), dtype=a.dtype), a.shape)


#: calls whose result has the broadcast shape of their array arguments and the dtype NumPy gives
#: those arguments' 0-d samples (so a stand-in needs no computing)
_BROADCASTING_CALLS = frozenset({"where", "full_like"})


def execute(ins: list[Ins], consts: dict[str, Any], inputs: dict[str, Any],
            shapes_only: bool = False) -> dict[str, Any]:
    """Run the instructions plainly and return every value by name (at specialization: the shapes
    and dtypes of every value; also how constant instructions are folded).

    ``shapes_only``: the inputs are :func:`standin` arrays, and so is every value computed from them:
    elementwise instructions get their shape by broadcasting and their dtype from NumPy on 0-d
    samples, without computing; the rest are computed on the stand-ins and their results replaced
    by stand-ins. Values that depend on no input (constants) are computed as they are. At N = 1e7
    this is a few milliseconds instead of seconds and gigabytes; where a value's shape depends on
    the values (a mask's picks) the caller's validation finds the code wrong."""
    env: dict[str, Any] = dict(inputs)
    env.update(consts)
    fake = set(inputs) if shapes_only else set()

    def val(a: Any) -> Any:
        if isinstance(a, tuple):
            return tuple(val(x) for x in a)
        return env[a] if isinstance(a, str) else a

    def sample(a: Any) -> Any:
        return np.ones((), dtype=a.dtype) if isinstance(a, np.ndarray) else a

    for i in ins:
        args = [val(a) for a in i.args]
        names = set(uses(i))
        if names & fake and (i.kind == "ufunc" or (i.kind == "call" and i.fn in _BROADCASTING_CALLS and not i.params)):
            shape = np.broadcast_shapes(*[np.shape(a) for a in args if isinstance(a, (np.ndarray, np.generic))])
            small = getattr(np, i.fn)(*[sample(a) for a in args])   # NumPy scalars, as 0-d results are

            def grown(r: Any, shape: tuple[int, ...] = shape) -> Any:
                return np.broadcast_to(np.asarray(r), shape) if shape else r
            env[i.target] = tuple(map(grown, small)) if isinstance(small, tuple) else grown(small)
            fake.add(i.target)
            continue
        if i.kind == "alias":
            v = args[0]
        elif i.kind == "ufunc":
            v = getattr(np, i.fn)(*args)
        elif i.kind == "getitem":
            v = args[0][env[i.params["index"]]]
        elif i.kind == "helper":
            v = GATES[i.fn].forward(np, *args, **resolve_params(i.params, env))
        elif i.fn == "full_like":
            v = np.full_like(args[0], args[1])
        else:
            v = resolve(np, i.fn)(*args, **resolve_params(i.params, env))
        if names & fake:   # computed from stand-ins: its values mean nothing, its shape and dtype do
            fake.add(i.target)
            if isinstance(v, np.ndarray):
                v = standin(v)
        env[i.target] = v
    return env


def lit(v: Any) -> str:
    """A number as Python source (infinities and NaN as NumPy names)."""
    if isinstance(v, float) and not np.isfinite(v):
        return "np.inf" if v > 0 else ("-np.inf" if v < 0 else "np.nan")
    return repr(v)


def paren(t: str) -> str:
    """Source text wrapped in parentheses unless it is a name or a plain number."""
    return t if t.isidentifier() or t.replace(".", "", 1).isdigit() else f"({t})"
