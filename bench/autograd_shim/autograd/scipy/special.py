"""autograd.scipy.special in the shim: SciPy's ufuncs, which reach chainrule's special-function gates by
themselves on tensors (NumPy dispatch), and chainrule's ``cr.special`` for the functions SciPy writes in
Python (``logsumexp``, ``polygamma``, ``multigammaln``: they convert their inputs to arrays, so no dispatch
reaches chainrule). autograd's own wrappers of these compute the same functions. Anything else is
SciPy's own, counted as a missing rule when it meets a tensor."""

from typing import Any

from ._proxy import module_getattr

_scipy = module_getattr("scipy.special")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    import numpy as np
    import scipy.special

    import chainrule

    if not isinstance(getattr(scipy.special, name, None), np.ufunc) and hasattr(chainrule.special, name):
        return getattr(chainrule.special, name)
    return _scipy(name)
