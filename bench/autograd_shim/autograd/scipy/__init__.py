"""autograd.scipy in the shim: ``special``, ``misc``, ``signal`` and ``stats`` map autograd's wrappers onto
chainrule (see each module); ``linalg`` and ``integrate`` are SciPy's own functions, counted as missing
rules when they meet a tensor."""

from . import integrate, linalg, misc, signal, special, stats

__all__ = ["integrate", "linalg", "misc", "signal", "special", "stats"]
