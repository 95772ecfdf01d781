"""What a back end is: an emitter turning a :class:`~.ir.Code` into Python source, and how one is chosen.

Every module of this package named ``emit_*`` defines ``EMITTER``. :func:`emit` tries them in
order of ``priority`` and takes the first that applies to the program and the requested back end,
so adding a back end is writing one module. The planned NumPy emitter applies to everything.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .ir import Code

BACKENDS = ("auto", "numpy", "numba", "numexpr")


@dataclass(frozen=True)
class Options:
    """What the caller asked for: ``backend`` (one of :data:`BACKENDS`) and the size of the
    largest array argument (small programs run as plain operator code)."""

    backend: str
    size: int


@dataclass
class Emitted:
    """An emitter's result: ``source`` defines ``_compiled``; ``globals`` are the names it reads
    besides ``np``, the gates' helpers and the program's constants (buffers, kernels); ``backend``
    is what ``Compiled.backend_used`` reports; ``kernels`` the fused loops' source, for display."""

    source: str
    globals: dict[str, Any] = field(default_factory=dict)
    backend: str = "numpy"
    kernels: str = ""


@dataclass(frozen=True)
class Emitter:
    """A back end: ``emit(code, options)`` returns its source, or None where it does not apply."""

    name: str
    priority: int
    emit: Callable[[Code, Options], Emitted | None]


_EMITTERS: list[Emitter] = []


def emitters() -> list[Emitter]:
    """Every ``emit_*`` module's emitter, by priority (imported once; none imports its library yet)."""
    if not _EMITTERS:
        found = []
        for info in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
            if info.name.startswith("emit_"):
                found.append(importlib.import_module(f"{__package__}.{info.name}").EMITTER)
        _EMITTERS.extend(sorted(found, key=lambda e: e.priority))
    return _EMITTERS


def emit(code: Code, options: Options) -> Emitted:
    """The first emitter (by priority) that applies."""
    for e in emitters():
        out = e.emit(code, options)
        if out is not None:
            return out
    raise RuntimeError("compile: no back end applies (the NumPy emitter always should)")
