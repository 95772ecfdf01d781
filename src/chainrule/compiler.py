"""``chainrule.compiler``: the names ``cr.compile`` had here before it became the package
:mod:`chainrule.compile` (kept so existing imports keep working)."""

from __future__ import annotations

from .compile import (
    BACKENDS,
    FUSED_MIN_SIZE,
    NUMEXPR_MIN_SIZE,
    PARALLEL_MIN_SIZE,
    PLAN_MIN_SIZE,
    TILE,
    Code,
    Compiled,
    Ins,
    compile,
    compile_source,
    lower,
)

__all__ = ["compile", "Compiled", "lower", "compile_source", "Code", "Ins", "BACKENDS", "TILE", "PLAN_MIN_SIZE",
           "NUMEXPR_MIN_SIZE", "FUSED_MIN_SIZE", "PARALLEL_MIN_SIZE"]
