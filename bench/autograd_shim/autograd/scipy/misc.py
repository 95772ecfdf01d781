"""autograd.scipy.misc in the shim: its ``logsumexp`` is autograd.scipy.special's (chainrule's)."""

from .special import __getattr__  # noqa: F401
