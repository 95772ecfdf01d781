"""autograd.scipy.signal in the shim: ``convolve(A, B, axes=None, dot_axes=((), ()), mode)``.

Without ``axes``/``dot_axes`` it is SciPy's N-D convolution: chainrule's ``cr.signal.convolve``. autograd's
generalization (convolve along chosen pairs of axes, contract ``dot_axes``, keep the others as outer
axes, ordered ``[A's other axes, B's other axes, convolved axes]``) is written below with NumPy calls
(transpose, pad, ``sliding_window_view``, flip, einsum), which dispatch to chainrule on tensors.
Anything else in the module is SciPy's own.
"""

from typing import Any

import numpy as np

from ._proxy import module_getattr

__getattr__ = module_getattr("scipy.signal")

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def convolve(A: Any, B: Any, axes: Any = None, dot_axes: Any = ((), ()), mode: str = "full") -> Any:
    if mode not in ("valid", "full", "same"):
        raise ValueError(f"Mode {mode} undefined, it can be one of 'valid', 'full', and 'same'")
    dot_axes = dot_axes if dot_axes is not None else ((), ())
    if axes is None and not any(len(d) for d in dot_axes):
        import chainrule

        return chainrule.signal.convolve(A, B, mode)
    nA, nB = np.ndim(A), np.ndim(B)
    if axes is None:
        axes = (list(range(nA)), list(range(nA)))
    conv_a, conv_b = [a % nA for a in axes[0]], [b % nB for b in axes[1]]
    dot_a, dot_b = [a % nA for a in dot_axes[0]], [b % nB for b in dot_axes[1]]
    if len(conv_a) != len(conv_b) or len(dot_a) != len(dot_b):
        raise ValueError("convolve: axes and dot_axes must pair the same number of axes of A and B")
    rest_a = [i for i in range(nA) if i not in conv_a and i not in dot_a]
    rest_b = [i for i in range(nB) if i not in conv_b and i not in dot_b]
    # A as (its other axes, dot, conv); B likewise
    A = np.transpose(A, rest_a + dot_a + conv_a)
    B = np.transpose(B, rest_b + dot_b + conv_b)
    size_a, size_b = np.shape(A)[len(rest_a) + len(dot_a):], np.shape(B)[len(rest_b) + len(dot_b):]
    swapped = False
    if mode == "valid":
        if not all(a >= b for a, b in zip(size_a, size_b)):
            if not all(b >= a for a, b in zip(size_a, size_b)):
                raise ValueError("One array must be larger than the other along all convolved dimensions")
            swapped = True  # slide the smaller one (A) over B
    X, K, rest_x, rest_k = (B, A, rest_b, rest_a) if swapped else (A, B, rest_a, rest_b)
    n_rest_x, n_dot, size_k = len(rest_x), len(dot_a), np.shape(K)[len(rest_k) + len(dot_a):]
    conv_x = list(range(n_rest_x + n_dot, np.ndim(X)))
    conv_k = list(range(len(rest_k) + n_dot, np.ndim(K)))
    if mode != "valid":
        pads = [(0, 0)] * (n_rest_x + n_dot)
        pads += [(n - 1, n - 1) if mode == "full" else (n - 1 - (n - 1) // 2, (n - 1) // 2) for n in size_k]
        X = np.pad(X, pads, mode="constant")
    windows = np.lib.stride_tricks.sliding_window_view(X, tuple(size_k), axis=tuple(conv_x))
    kernel = np.flip(K, axis=tuple(conv_k))
    letters = iter(_LETTERS)
    i_x = "".join(next(letters) for _ in range(n_rest_x))
    d = "".join(next(letters) for _ in range(n_dot))
    o = "".join(next(letters) for _ in conv_x)
    w = "".join(next(letters) for _ in conv_k)
    i_k = "".join(next(letters) for _ in range(len(rest_k)))
    out = (i_k + i_x if swapped else i_x + i_k) + o  # A's other axes, B's other axes, the convolved axes
    return np.einsum(f"{i_x}{d}{o}{w},{i_k}{d}{w}->{out}", windows, kernel)
