"""SciPy behind autograd.scipy's names: each function is SciPy's own, wrapped only so an error raised
inside it on chainrule tensors names the SciPy function (the suite then counts it as that function's
missing rule, not as an anonymous conversion error)."""

import importlib
from collections.abc import Callable
from typing import Any

from autograd_shim_core import NOTE, holds_tensor


class Proxy:
    """A SciPy callable (a function, a ufunc, a distribution) whose attributes are wrapped the same way."""

    def __init__(self, obj: Any, qualname: str) -> None:
        self._obj = obj
        self._qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return call(self._obj, self._qualname, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        return wrap(getattr(self._obj, name), f"{self._qualname}.{name}")

    def __repr__(self) -> str:
        return f"<{self._qualname} (SciPy, via the autograd shim)>"


def call(fn: Callable[..., Any], qualname: str, args: Any, kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        if holds_tensor(args, kwargs) and not any(n.startswith(NOTE) for n in getattr(e, "__notes__", ())):
            e.add_note(NOTE + qualname)
        raise


def wrap(obj: Any, qualname: str) -> Any:
    if callable(obj) and not isinstance(obj, type):
        return Proxy(obj, qualname)
    return obj


def module_getattr(module: str, attr: str | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``scipy.<module>[.<attr>].<name>``, SciPy imported on first use."""
    prefix = f"{module}.{attr}" if attr else module

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(module)
        if attr:
            target = getattr(target, attr)
        try:
            return wrap(getattr(target, name), f"{prefix}.{name}")
        except AttributeError:
            raise AttributeError(f"{prefix} has no attribute {name!r} (autograd shim)") from None

    return __getattr__
