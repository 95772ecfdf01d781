"""autograd.scipy.signal in the shim: ``convolve`` is SciPy's; autograd's own ``axes``/``dot_axes``
extension has no SciPy counterpart and is unmappable."""

from typing import Any

from autograd_shim_core import Unmappable

from ._proxy import call, module_getattr

__getattr__ = module_getattr("scipy.signal")


def convolve(A: Any, B: Any, axes: Any = None, dot_axes: Any = ((), ()), mode: str = "full") -> Any:
    if axes is not None or any(len(d) for d in dot_axes):
        raise Unmappable("autograd.scipy.signal.convolve with axes/dot_axes: autograd's own extension")
    import scipy.signal

    return call(scipy.signal.convolve, "scipy.signal.convolve", (A, B), {"mode": mode})
