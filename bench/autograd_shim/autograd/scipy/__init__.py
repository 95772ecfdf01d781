"""autograd.scipy in the shim: SciPy's own functions (chainrule has no rules for them unless it says so)."""

from . import integrate, linalg, misc, signal, special, stats

__all__ = ["integrate", "linalg", "misc", "signal", "special", "stats"]
