"""Convolution, pooling, normalization and reshaping layers of :mod:`chainrule.nn`, on NCHW images.

Every layer is a composition of the engine's gates, written the way the fast layers of the courses
write them in NumPy, so its backward pass is the engine's own: drawable (``out.graph()``),
printable (``cr.trace``) and checkable (``cr.gradcheck``). A convolution is im2col and one matmul:

    pad → sliding windows (a view) → transpose (a view) → reshape (the one copy: im2col)
        → W (out, C·kh·kw) @ cols (C·kh·kw, N·H'·W') → + bias → reshape, transpose to NCHW

whose backward is two matmuls, views back, and the windows summed into place with one strided add
per kernel offset (the unwindow gate): the 9×-expanded column array is made once forward
(im2col) and once backward (the matmul giving its gradient), as in a hand-written layer. The
columns are laid out channel-major, (C·kh·kw, N·H'·W'), CS231n's layout: the copy that builds them
then reads whole image rows, several times faster than the sample-major layout's 3-element runs.

The functional forms (:func:`conv2d`, :func:`max_pool2d`, :func:`avg_pool2d`, :func:`batch_norm`,
:func:`layer_norm`) take plain arrays or tensors; the modules hold the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import functions as F
from .nn import Module, Parameter, _generator, init_weight
from .tensor import Tensor

__all__ = [
    "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Flatten",
    "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm",
]

Pair = int | tuple[int, int]


def _data(x: Any) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _pair(value: Any, what: str, who: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each at least ``minimum``; a ValueError naming it otherwise."""
    items = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                              for v in items):
        low = "positive" if minimum > 0 else "non-negative"
        raise ValueError(f"{who}: {what} must be a {low} integer or a pair of them (height, width), not {value!r}")
    return int(items[0]), int(items[1])


def _check_images(who: str, x: Any, channels: int | None = None) -> tuple[int, int, int, int]:
    shape = np.shape(_data(x))
    if len(shape) != 4:
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{who}: expected images of shape {want} (NCHW), got shape {shape}"
                         + (" (add the channel axis: x.reshape(N, 1, H, W))" if len(shape) == 3 else ""))
    if channels is not None and shape[1] != channels:
        raise ValueError(f"{who}: expected {channels} input channel{'s' if channels != 1 else ''} (axis 1 of NCHW), "
                         f"got input of shape {shape}")
    return shape  # type: ignore[return-value]


def _out_size(who: str, size: int, k: int, s: int, what: str) -> int:
    if size < k:
        raise ValueError(f"{who}: the kernel ({k}) is larger than the padded input's {what} ({size})")
    return (size - k) // s + 1


def _windows(x: Any, kernel: tuple[int, int], stride: tuple[int, int], who: str, order: tuple[int, ...]) -> Any:
    """The (kh, kw) windows of NCHW ``x`` at ``stride`` as one view, its axes (N, C, H', W', kh, kw)
    permuted by ``order`` (one transpose).

    Windows that tile the image (stride = kernel) are a reshape; others are NumPy's sliding windows,
    sliced with a step for a stride above 1 (whose gradient scatters into the unstrided windows first).
    """
    n, c, h, w = np.shape(_data(x))
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = _out_size(who, h, kh, sh, "height"), _out_size(who, w, kw, sw, "width")
    if (kh, kw) == (sh, sw):
        if (ho * kh, wo * kw) != (h, w):  # the rows and columns no window reaches
            x = x[:, :, :ho * kh, :wo * kw]
        blocks = F.reshape(x, (n, c, ho, kh, wo, kw))
        where = (0, 1, 2, 4, 3, 5)  # the axis of blocks holding each of (N, C, H', W', kh, kw)
        return F.transpose(blocks, tuple(where[a] for a in order))
    win = F.sliding_window_view(x, (kh, kw), axis=(2, 3))
    if (sh, sw) != (1, 1):
        win = win[:, :, ::sh, ::sw]
    return F.transpose(win, order)


def _pad_images(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    ph, pw = padding
    if not (ph or pw):
        return x
    return F.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


# ----------------------------------------------------------------------------------------------
# functional forms
# ----------------------------------------------------------------------------------------------


def conv2d(x: Any, weight: Any, bias: Any = None, stride: Pair = 1, padding: Pair | str = 0) -> Tensor:
    """2-D convolution (cross-correlation, as in every deep-learning library) of NCHW ``x`` with
    ``weight`` of shape (out_channels, in_channels, kh, kw), plus ``bias`` (out_channels,).

    ``padding`` is zeros on every side: an int, a pair (height, width), ``"valid"`` (0) or
    ``"same"`` (stride 1, odd kernels). Output: (N, out_channels, H', W') with
    H' = (H + 2·pad − kh) // stride + 1. Composed as im2col and one matmul (see the module's doc).
    """
    w_shape = np.shape(_data(weight))
    if len(w_shape) != 4:
        raise ValueError(f"conv2d: weight must have shape (out_channels, in_channels, kh, kw), got {w_shape}")
    o, c, kh, kw = w_shape
    n = _check_images("conv2d", x, c)[0]
    sh, sw = _pair(stride, "stride", "conv2d", 1)
    ph, pw = _padding(padding, (kh, kw), (sh, sw), "conv2d")
    if bias is not None and np.shape(_data(bias)) != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},), one per output channel, got {np.shape(_data(bias))}")
    # im2col: rows (c, i, j), columns (n, y, x); the reshape is the one copy of the expanded array
    win = _windows(_pad_images(x, (ph, pw)), (kh, kw), (sh, sw), "conv2d", (1, 4, 5, 0, 2, 3))
    ho, wo = win.shape[4], win.shape[5]
    cols = F.reshape(win, (c * kh * kw, n * ho * wo))
    out = F.matmul(F.reshape(weight, (o, c * kh * kw)), cols)
    if bias is not None:
        out = F.add(out, F.reshape(bias, (o, 1)))
    return F.transpose(F.reshape(out, (o, n, ho, wo)), (1, 0, 2, 3))


def _padding(padding: Pair | str, kernel: tuple[int, int], stride: tuple[int, int], who: str) -> tuple[int, int]:
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            if stride != (1, 1) or kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
                raise ValueError(f"{who}: padding='same' needs stride 1 and an odd kernel size, got stride {stride} "
                                 f"and kernel {kernel}")
            return kernel[0] // 2, kernel[1] // 2
        raise ValueError(f"{who}: padding must be an int, a pair, 'valid' or 'same', not {padding!r}")
    return _pair(padding, "padding", who, 0)


def _pool_args(who: str, x: Any, kernel_size: Pair, stride: Pair | None, padding: Pair
               ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    _check_images(who, x)
    k = _pair(kernel_size, "kernel_size", who, 1)
    s = k if stride is None else _pair(stride, "stride", who, 1)
    p = _pair(padding, "padding", who, 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{who}: padding {p} must be at most half the kernel size {k} (a window would hold only "
                         "padding)")
    return k, s, p


def max_pool2d(x: Any, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Tensor:
    """The largest value of each (kh, kw) window of NCHW ``x`` (stride defaults to the kernel size;
    padding is −inf). The gradient goes to the window's largest element; equal largest elements
    share it (a subgradient, as the max gate does everywhere; PyTorch gives it all to one of them)."""
    k, s, p = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    cols, shape = _pool_columns(_pad_images(x, p, -np.inf), k, s, "max_pool2d")
    return F.reshape(F.max(cols, axis=0), shape)


def avg_pool2d(x: Any, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> Tensor:
    """The mean of each (kh, kw) window of NCHW ``x`` (stride defaults to the kernel size; zero
    padding is counted in the mean, PyTorch's default ``count_include_pad=True``)."""
    k, s, p = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    cols, shape = _pool_columns(_pad_images(x, p), k, s, "avg_pool2d")
    return F.reshape(F.mean(cols, axis=0), shape)


def _pool_columns(x: Any, k: tuple[int, int], s: tuple[int, int], who: str) -> tuple[Tensor, tuple[int, ...]]:
    """The windows as columns of a (kh·kw, N·C·H'·W') array (one copy), and the pooled output's shape.

    Reducing over the first axis of a contiguous array is an elementwise max or sum of its rows; the
    same reduction over a view's two trailing window axes (kh, kw) runs NumPy's inner loop two
    elements at a time, about ten times slower on these sizes.
    """
    win = _windows(x, k, s, who, (4, 5, 0, 1, 2, 3))
    shape = tuple(win.shape[2:])
    return F.reshape(win, (k[0] * k[1], math.prod(shape))), shape


def _normalize(x: Any, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x − mean and 1/√(var + eps) over ``axes`` (kept as axes of length 1), and the mean and the
    (biased) variance. Their product is the normalized x; the caller multiplies the small 1/√ by
    a per-channel weight first where it can, saving a pass over the whole array."""
    mean = F.mean(x, axis=axes, keepdims=True)
    centred = F.subtract(x, mean)
    var = F.mean(F.square(centred), axis=axes, keepdims=True)
    return centred, F.divide(1.0, F.sqrt(F.add(var, eps))), mean, var


def batch_norm(x: Any, running_mean: np.ndarray | None, running_var: np.ndarray | None, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float | None = 0.1, eps: float = 1e-5,
               num_batches_tracked: np.ndarray | None = None) -> Tensor:
    """Batch normalization over axis 1 (channels) of (N, C), (N, C, L) or (N, C, H, W) input.

    Training: normalize with the batch's mean and biased variance, and update the running statistics
    in place, ``running = (1 − momentum)·running + momentum·batch`` with the *unbiased* batch variance
    (PyTorch's convention; ``momentum=None`` keeps a cumulative average, counted in
    ``num_batches_tracked``). Evaluation: normalize with the running statistics. Then scale by
    ``weight`` and shift by ``bias`` (one per channel) when given.
    """
    shape = np.shape(_data(x))
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, ...), got shape {shape}")
    c = shape[1]
    axes = (0,) + tuple(range(2, len(shape)))
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    for what, v in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if v is not None and np.shape(_data(v)) != (c,):
            raise ValueError(f"batch_norm: {what} must have shape ({c},), one per channel of input {shape}")
    if training:
        count = math.prod(shape[a] for a in axes)
        if count < 2:
            raise ValueError(f"batch_norm: training needs more than one value per channel to estimate the variance, "
                             f"got input of shape {shape} (use eval() to normalize with the running statistics)")
        centred, inv_std, mean, var = _normalize(x, axes, eps)
        if running_mean is not None and running_var is not None:
            if num_batches_tracked is not None:
                num_batches_tracked += 1  # a 0-d array, counted in place like the statistics
            if momentum is None and num_batches_tracked is None:
                raise ValueError("batch_norm: momentum=None (a cumulative average) needs num_batches_tracked")
            m = 1.0 / float(num_batches_tracked) if momentum is None else momentum
            batch_var = var.data.reshape(c) * (count / (count - 1))
            running_mean *= 1 - m
            running_mean += m * mean.data.reshape(c)
            running_var *= 1 - m
            running_var += m * batch_var
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: evaluation mode needs the running statistics (or training=True)")
        centred = F.subtract(x, running_mean.reshape(per_channel))
        inv_std = (1.0 / np.sqrt(running_var.reshape(per_channel) + eps)).astype(running_var.dtype)
    # weight · (x − mean) / √(var + eps) + bias, the per-channel factors multiplied together first
    scale = inv_std if weight is None else F.multiply(inv_std, F.reshape(weight, per_channel))
    y = F.multiply(centred, scale)
    return y if bias is None else F.add(y, F.reshape(bias, per_channel))


def layer_norm(x: Any, normalized_shape: int | Sequence[int], weight: Any = None, bias: Any = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize each sample over its last ``len(normalized_shape)`` axes (mean 0, variance 1, the
    same in training and evaluation), then scale by ``weight`` and shift by ``bias`` (of that shape)."""
    norm = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    shape = np.shape(_data(x))
    d = len(norm)
    if d == 0 or tuple(shape[len(shape) - d:]) != norm or len(shape) < d:
        raise ValueError(f"layer_norm: the input's last axes must have shape {norm}, got input of shape {shape}")
    centred, inv_std, _, _ = _normalize(x, tuple(range(len(shape) - d, len(shape))), eps)
    y = F.multiply(centred, inv_std)  # one factor per sample: the weight (per feature) is applied apart
    if weight is not None:
        y = F.multiply(y, weight)
    if bias is not None:
        y = F.add(y, bias)
    return y


# ----------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------


class Conv2d(Module):
    """2-D convolution on NCHW images: ``weight`` (out_channels, in_channels, kh, kw), ``bias``
    (out_channels,), as PyTorch stores them. ``padding`` is an int, a pair, ``"valid"`` or ``"same"``.

    ``init`` as for :class:`chainrule.nn.Linear` with fan-in in_channels·kh·kw: "he" (Kaiming normal,
    std √(2/fan_in), for ReLU networks; default), "xavier", "lecun" or "uniform" (±1/√fan_in for
    weight and bias, PyTorch's default); the bias starts at zero otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair = 1,
                 padding: Pair | str = 0, bias: bool = True, *, init: str = "he", dtype: Any = np.float32,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        for what, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"Conv2d: {what} must be a positive integer, not {n!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = _pair(stride, "stride", "Conv2d", 1)
        self.padding = _padding(padding, self.kernel_size, self.stride, "Conv2d")
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        fan_out = self.out_channels * self.kernel_size[0] * self.kernel_size[1]
        g = _generator(rng)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.init = init
        self.weight = Parameter(init_weight("Conv2d", init, shape, fan_in, fan_out, g), dtype=dtype)
        if bias:
            b = g.uniform(-1, 1, out_channels) / math.sqrt(fan_in) if init == "uniform" else np.zeros(out_channels)
            self.bias: Parameter | None = Parameter(b, dtype=dtype)
        else:
            self.bias = None

    def forward(self, x: Any) -> Tensor:
        _check_images("Conv2d", x, self.in_channels)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        s = "" if self.stride == (1, 1) else f", stride={_show(self.stride)}"
        p = "" if self.padding == (0, 0) else f", padding={_show(self.padding)}"
        return f"{self.in_channels} → {self.out_channels}, kernel_size={_show(self.kernel_size)}{s}{p}" + \
            ("" if self.bias is not None else ", bias=False")


def _show(pair: tuple[int, int]) -> int | tuple[int, int]:
    """A (height, width) pair as one number when both are equal, as PyTorch prints them."""
    return pair[0] if pair[0] == pair[1] else pair


class _Pool2d(Module):
    def __init__(self, kernel_size: Pair, stride: Pair | None = None, padding: Pair = 0) -> None:
        super().__init__()
        who = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", who, 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", who, 1)
        self.padding = _pair(padding, "padding", who, 0)

    def extra_repr(self) -> str:
        text = f"kernel_size={_show(self.kernel_size)}, stride={_show(self.stride)}"
        return text + (f", padding={_show(self.padding)}" if self.padding != (0, 0) else "")


class MaxPool2d(_Pool2d):
    """The largest value of each window (see :func:`max_pool2d`); stride defaults to the kernel size."""

    def forward(self, x: Any) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """The mean of each window (see :func:`avg_pool2d`); stride defaults to the kernel size."""

    def forward(self, x: Any) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class _BatchNorm(Module):
    _dims: tuple[int, ...] = ()
    _shapes = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 *, dtype: Any = np.float32) -> None:
        super().__init__()
        who = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{who}: num_features must be a positive integer, not {num_features!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"{who}: eps must be a positive number, not {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{who}: momentum must be in [0, 1] (or None for a cumulative average), not {momentum!r}")
        self.num_features, self.eps, self.momentum, self.affine = int(num_features), float(eps), momentum, affine
        self.weight: Parameter | None = Parameter(np.ones(num_features), dtype=dtype) if affine else None
        self.bias: Parameter | None = Parameter(np.zeros(num_features), dtype=dtype) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))

    def forward(self, x: Any) -> Tensor:
        shape = np.shape(_data(x))
        if len(shape) not in self._dims or shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input of shape "
                             f"{self._shapes.replace('C', str(self.num_features))}, got shape {shape}")
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                          self.momentum, self.eps, self.num_batches_tracked)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum}" + \
            ("" if self.affine else ", affine=False")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) input per channel (see :func:`batch_norm`): batch
    statistics in training mode (updating the running ones), running statistics after ``eval()``."""

    _dims = (2, 3)
    _shapes = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of NCHW images per channel (see :func:`batch_norm`): batch statistics in
    training mode (updating the running ones), running statistics after ``eval()``."""

    _dims = (4,)
    _shapes = "(N, C, H, W)"


class LayerNorm(Module):
    """Normalize each sample over its last axes, of ``normalized_shape`` (see :func:`layer_norm`);
    ``weight`` (ones) and ``bias`` (zeros) of that shape when ``elementwise_affine``."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 *, dtype: Any = np.float32) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive integer or a tuple of them, "
                             f"not {normalized_shape!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"LayerNorm: eps must be a positive number, not {eps!r}")
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps = float(eps)
        self.weight: Parameter | None = Parameter(np.ones(shape), dtype=dtype) if elementwise_affine else None
        self.bias: Parameter | None = Parameter(np.zeros(shape), dtype=dtype) if elementwise_affine else None

    def forward(self, x: Any) -> Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps:g}" + ("" if self.weight is not None else
                                                              ", elementwise_affine=False")


class Flatten(Module):
    """Join axes ``start_dim``..``end_dim`` into one (by default every axis but the batch axis),
    e.g. (N, C, H, W) → (N, C·H·W) between convolutions and a Linear layer."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: Any) -> Tensor:
        shape = np.shape(_data(x))
        nd = len(shape)
        start, end = self.start_dim % nd if nd else 0, self.end_dim % nd if nd else 0
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or start > end:
            raise ValueError(f"Flatten: cannot join axes {self.start_dim}..{self.end_dim} of input of shape {shape}")
        return F.reshape(x, shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
