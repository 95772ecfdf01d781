"""``cr.signal``: convolution of N-D arrays as ``scipy.signal.convolve`` computes it, differentiable.

A composite of gates, so its staged form shows the im2col idiom: the first input is padded
(``np.pad``), cut into every window the size of the kernel (``sliding_window_view``) and each window
is contracted with the flipped kernel (``tensordot``). Its gradient therefore comes from those gates:
the windows' gradients are added back where they overlap, and the padding's gradient is dropped.
``np.convolve`` on tensors (1-D, NumPy's convention) is :func:`np_convolve`, also ``cr.convolve``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import backend
from . import functions as F
from .backend import UnsupportedError
from .tensor import Tensor

__all__ = ["convolve", "np_convolve"]

_MODES = ("full", "valid", "same")


def convolve(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> Tensor:
    """``scipy.signal.convolve(in1, in2, mode)``: the N-D convolution Σⱼ in1[j]·in2[k − j].

    ``mode``: "full" (every overlap, size n1 + n2 − 1 per axis), "valid" (full overlaps only, size
    |n1 − n2| + 1; one input must be at least as large as the other along every axis) or "same"
    (in1's size, centred on the full result). ``method`` is accepted as SciPy's and changes nothing
    (the result is the same sum). Both inputs need the same number of dimensions.
    """
    if mode not in _MODES:
        raise ValueError(f"convolve: acceptable mode flags are 'valid', 'same', or 'full', not {mode!r}")
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"convolve: acceptable method flags are 'auto', 'direct', or 'fft', not {method!r}")
    s1, s2 = F._shape(in1), F._shape(in2)
    if len(s1) != len(s2):
        raise ValueError(f"convolve: in1 and in2 should have the same dimensionality, got shapes {s1} and {s2}")
    if not s1:
        return F.multiply(in1, in2)
    if 0 in s1 or 0 in s2:
        raise ValueError(f"convolve: the inputs cannot be empty, got shapes {s1} and {s2}")
    if mode == "valid":
        if all(a >= b for a, b in zip(s1, s2)):
            pass
        elif all(b >= a for a, b in zip(s1, s2)):
            in1, in2, s1, s2 = in2, in1, s2, s1  # convolution commutes: slide the smaller one
        else:
            raise ValueError(f"convolve: for 'valid' mode, one must be at least as large as the other in every "
                             f"dimension, got shapes {s1} and {s2}")
        pads = [(0, 0)] * len(s1)
    elif mode == "full":
        pads = [(n - 1, n - 1) for n in s2]
    else:  # same: the full result from index (n2 − 1)//2 on, as many as in1 has
        pads = [(n - 1 - (n - 1) // 2, (n - 1) // 2) for n in s2]
    padded = F.pad(in1, pads) if any(p != (0, 0) for p in pads) else in1
    windows = F.sliding_window_view(padded, s2)          # (*out, *s2): every window the size of in2
    try:
        return F.tensordot(windows, F.flip(in2), axes=len(s2))  # each window · the flipped kernel
    except UnsupportedError as e:
        if not str(e).startswith("einsum:"):
            raise
        lib = backend.library_name(getattr(in1, "data", in1))
        raise UnsupportedError(f"convolve (np.convolve, cr.signal.convolve): {lib} cannot serve it: its windows are "
                               f"contracted with the kernel by einsum, which {lib} lacks ({e})") from None


def np_convolve(a: Any, v: Any, mode: str = "full") -> Tensor:
    """``np.convolve(a, v, mode)``: the 1-D discrete convolution ("full", "valid" or "same": the longer
    input's length), NumPy's convention: the inputs are swapped when ``v`` is longer than ``a``."""
    a = F._atleast(1, a) if np.ndim(F._values(a)) == 0 else a
    v = F._atleast(1, v) if np.ndim(F._values(v)) == 0 else v
    for name, x in (("a", a), ("v", v)):
        if len(F._shape(x)) != 1:
            raise ValueError(f"np.convolve: {name} must be 1-D, got shape {F._shape(x)}")
        if F._shape(x)[0] == 0:
            raise ValueError(f"np.convolve: {name} cannot be empty")
    if mode not in _MODES:
        raise ValueError(f"np.convolve: mode must be 'full', 'valid' or 'same', not {mode!r}")
    if F._shape(v)[0] > F._shape(a)[0]:
        a, v = v, a
    return convolve(a, v, mode)
