"""The numexpr back end (``backend="numexpr"``): chains of elementwise arithmetic on large arrays fused
into single numexpr passes; NumPy keeps the transcendental calls it evaluates faster (exp, log,
sqrt with SIMD). The fused program then runs as planned or tiled NumPy code. Without numexpr
installed this back end does not apply and the NumPy plan is used.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .backends import Emitted, Emitter, Options
from .emit_numpy import BINARY_OPERATORS, PLAN_MIN_SIZE, emit_whole
from .emit_tiled import emit_tiled, tile_shape
from .ir import Code, Ins, lit, use_counts

#: arrays at least this large use numexpr's fused loops
NUMEXPR_MIN_SIZE = 32768
_BINARY = {k: v for k, v in BINARY_OPERATORS.items() if k != "matmul"}
_UNARY = {"negative": "-({})", "square": "({0})*({0})", "reciprocal": "1/({})", "absolute": "abs({})",
          "sin": "sin({})", "cos": "cos({})", "tan": "tan({})", "tanh": "tanh({})", "positive": "({})"}
_LOCK = threading.Lock()


class NumexprKernel:
    """A precompiled numexpr expression, called like a ufunc (``out=`` optional)."""

    __slots__ = ("ex", "text")

    def __init__(self, ex: Any, text: str) -> None:
        self.ex = ex
        self.text = text

    def __call__(self, *args: Any, out: Any = None) -> Any:
        with _LOCK:
            return self.ex(*args, out=out, order="K", casting="safe", ex_uses_vml=False)

    def __repr__(self) -> str:
        return f"numexpr[{self.text}]"


def fuse(code: Code, globals_: dict[str, Any]) -> Code:
    """Merge single-use elementwise arithmetic into its consumer: one numexpr pass per chain
    (instructions of kind ``"numexpr"`` naming a kernel put into ``globals_``)."""
    import numexpr

    env = code.env
    returned = {r for r in code.results if isinstance(r, str)}
    counts = use_counts(code.ins)
    pending: dict[str, tuple[str, list[str], list[Ins]]] = {}   # value -> (text, inputs, instructions)
    fused: list[Ins] = []
    names: dict[str, str] = {}
    group: list[Ins] = []

    def leaf(a: Any, leaves: list[str]) -> str:
        if not isinstance(a, str):
            return f"({lit(a)})"
        if a in pending:
            text, sub, merged = pending.pop(a)
            leaves.extend(s for s in sub if s not in leaves)
            group.extend(merged)
            return f"({text})"
        if a not in leaves:
            leaves.append(a)
        return names.setdefault(a, f"v{len(names)}")

    def kernel(target: str, text: str, leaves: list[str], merged: list[Ins]) -> Ins:
        if len(merged) == 1:  # nothing fused: NumPy's own ufunc is faster than a kernel call
            return merged[0]
        sig = [(names[a], env[a].dtype.type) for a in leaves]
        fn = NumexprKernel(numexpr.NumExpr(text, signature=sig), text)
        gname = f"_ne{sum(1 for g in globals_ if g.startswith('_ne'))}"
        globals_[gname] = fn
        return Ins(target, "numexpr", gname, list(leaves))

    for i in code.ins:
        v = env.get(i.target)
        ok = (i.kind == "ufunc" and isinstance(v, np.ndarray) and v.size >= NUMEXPR_MIN_SIZE
              and v.dtype == np.float64 and (i.fn in _BINARY or i.fn in _UNARY)
              and all(not isinstance(a, str) or (isinstance(env.get(a), np.ndarray)
                      and env[a].shape == v.shape and env[a].dtype == np.float64)
                      for a in i.args))
        if not ok:
            for a in i.args:
                if isinstance(a, str) and a in pending:
                    fused.append(kernel(a, *pending.pop(a)))
            fused.append(i)
            continue
        leaves: list[str] = []
        group = []
        texts = [leaf(a, leaves) for a in i.args]
        group.append(i)
        if i.fn in _BINARY:
            text = f"{texts[0]} {_BINARY[i.fn]} {texts[1]}"
        else:
            text = _UNARY[i.fn].format(texts[0])
        if counts.get(i.target, 0) == 1 and i.target not in returned:
            pending[i.target] = (text, leaves, group)
        elif leaves:
            fused.append(kernel(i.target, text, leaves, group))
        else:
            fused.append(i)
    for name, (text, leaves, merged) in list(pending.items()):
        fused.append(kernel(name, text, leaves, merged))
    return code.evolve(fused)


def available() -> bool:
    try:
        import numexpr  # noqa: F401
    except ImportError:
        return False
    return True


def _emit(code: Code, options: Options) -> Emitted | None:
    if options.backend != "numexpr" or not available():
        return None
    g: dict[str, Any] = {}
    if options.size >= NUMEXPR_MIN_SIZE:
        code = fuse(code, g)
    shape = tile_shape(code) if options.size >= PLAN_MIN_SIZE else None
    src = emit_tiled(code, shape, g) if shape is not None else emit_whole(code, options.size >= PLAN_MIN_SIZE, g)
    return Emitted(src, g, "numexpr")


EMITTER = Emitter("numexpr", 20, _emit)
