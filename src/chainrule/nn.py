"""Neural-network building blocks on top of chainrule's public engine: modules, layers and losses.

A :class:`Module` holds :class:`Parameter` tensors (leaves that require gradients) and child
modules; calling it runs ``forward``, which records the graph with ordinary chainrule ops, so
``loss.backward()`` fills every parameter's ``.grad``. An optimizer (:mod:`chainrule.optim`) then
applies the worksheet's update ``w -= step_size * w.grad`` in place.

>>> import chainrule as cr
>>> model = cr.nn.Sequential(cr.nn.Linear(64, 32), cr.nn.ReLU(), cr.nn.Linear(32, 10))
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']

Nothing here reaches into the engine's internals: layers are compositions of ``cr.*`` functions.
Convolution, pooling and normalization layers (``Conv2d``, ``MaxPool2d``, ``BatchNorm2d``, ...) are
in :mod:`chainrule.layers` and reachable from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import backend
from . import functions as F
from .fileio import NpzError, atomic_open, read_npz
from .tensor import Tensor, tensor_class

# convolution, pooling and normalization layers live in chainrule.layers and are loaded on first use
_LAYERS = ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Flatten",
           "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm")

__all__ = [
    "Module", "Parameter", "Linear", "Sequential", "ReLU", "Sigmoid", "Tanh", "Dropout",
    "cross_entropy", "mse_loss", "svm_loss", "manual_seed", "init_weight", *_LAYERS,
]


def __getattr__(name: str) -> Any:
    # chainrule.layers builds on Module and Parameter below, so it is imported after this module, lazily
    if name in _LAYERS:
        from . import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'chainrule.nn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAYERS))

_rng = np.random.default_rng()


def manual_seed(seed: int | None) -> None:
    """Seed the generator that layers use when they are given no ``rng`` (initial weights, dropout)."""
    global _rng
    _rng = np.random.default_rng(seed)


def _check_finite(name: str, value: np.ndarray, cast: np.ndarray, dtype: Any) -> None:
    """A ValueError when ``value`` holds NaN/inf, or becomes inf when cast to the parameter's ``dtype``."""
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        bad = ~np.isfinite(value)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"load_state_dict: {name} holds {int(bad.sum())} NaN or infinite value"
                         f"{'s' if bad.sum() > 1 else ''} (first at {list(first)}: {value[first]}); refusing to "
                         "load them (pass allow_nonfinite=True to load anyway)")
    if not np.all(np.isfinite(cast)):
        bad = ~np.isfinite(cast)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"load_state_dict: {name} holds {int(bad.sum())} value{'s' if bad.sum() > 1 else ''} too "
                         f"large for {np.dtype(dtype).name} (first at {list(first)}: {value[first]:g}; the largest "
                         f"is {np.finfo(dtype).max:g}); refusing to load them as inf")


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class Parameter(Tensor):
    """A tensor a module learns: a leaf with ``requires_grad=True`` (integer data becomes float64)."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None, name: str | None = None) -> None:
        super().__init__(data, requires_grad=True, dtype=dtype, name=name)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("tensor"):]


class Module:
    """Base class of layers and models: subclasses set parameters and sub-modules as attributes in
    ``__init__`` and compute the output in ``forward``; ``model(x)`` calls ``forward(x)``.

    Parameters are found by walking the attributes in the order they were set (nested modules,
    and lists or tuples of modules, included), which names them like ``"0.weight"``. State that is
    not learned (BatchNorm's running statistics) is registered with :meth:`register_buffer`.
    """

    training: bool

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation; subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ---- walking the tree ----------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct sub-modules with their attribute names (list items as ``name.i``)."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def children(self) -> Iterator[Module]:
        """The direct sub-modules."""
        for _, child in self.named_children():
            yield child

    def modules(self) -> Iterator[Module]:
        """This module and every module below it."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name (``"0.weight"``), each one once, in definition order."""
        seen: set[int] = set()
        out: list[tuple[str, Parameter]] = []

        def add(name: str, p: Parameter) -> None:
            if id(p) not in seen:  # a parameter shared by two layers is updated once
                seen.add(id(p))
                out.append((name, p))

        def walk(pre: str, module: Module) -> None:
            for name, value in vars(module).items():
                full = f"{pre}{name}"
                if isinstance(value, Parameter):
                    add(full, value)
                elif isinstance(value, Module):
                    walk(full + ".", value)
                elif isinstance(value, (list, tuple)):
                    for i, item in enumerate(value):
                        if isinstance(item, Module):
                            walk(f"{full}.{i}.", item)
                        elif isinstance(item, Parameter):
                            add(f"{full}.{i}", item)

        walk(f"{prefix}." if prefix else "", self)
        return iter(out)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``) and every module below it, with dotted names (``"0"``, ``"1.conv"``)."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def register_buffer(self, name: str, value: Any) -> None:
        """Keep an array that is part of the module's state but not learned (BatchNorm's running
        statistics): saved and loaded with the parameters, updated in place, never given to an optimizer."""
        setattr(self, name, np.asarray(value))
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every buffer with its dotted name (``"1.running_mean"``), in definition order."""
        for path, module in self.named_modules():
            for name in module.__dict__.get("_buffer_names", ()):
                yield (f"{path}.{name}" if path else name), getattr(module, name)

    def parameters(self) -> Iterator[Parameter]:
        """Every parameter (what an optimizer updates)."""
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self) -> int:
        """How many numbers the model learns."""
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        """Forget the gradients of every parameter (they accumulate across backward passes)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Training mode for this module and all below it (dropout active, batch normalization with the
        batch's statistics, updating the running ones); returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off, batch normalization with the running statistics); returns self."""
        return self.train(False)

    def to(self, array_module: Any) -> Module:
        """Move every parameter's values to the array library ``array_module`` (``model.to(cupy)``, and
        back with ``model.to(numpy)``), in place: the parameters stay the same objects, so an optimizer
        made before keeps working (make it after, or its running state stays where it was made)."""
        for p in self.parameters():
            data = backend.to_numpy(p.data) if array_module is np else array_module.asarray(p.data)
            p.data, p.grad = data, None
            p.__class__ = tensor_class(data, type(p))
        return self

    # ---- saving and loading ------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's and buffer's values by name, e.g. ``{"0.weight": array, ...}``."""
        return {name: np.array(value, copy=True) for name, value in self._state_arrays().items()}

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """The arrays that make up the state, by name: the parameters' data, then the buffers."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update(self.named_buffers())
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, allow_nonfinite: bool = False) -> Module:
        """Copy values from ``state`` into the parameters and buffers (in place, so optimizers keep working).

        With ``strict`` the names must match exactly; shapes must always match. Values that are NaN
        or infinite, or that do not fit the parameter's dtype (a float64 1e39 into a float32 weight
        would become inf), are refused with a ValueError naming the parameter, since a model
        loaded with them answers NaN silently; ``allow_nonfinite=True`` loads them anyway.
        """
        params = self._state_arrays()
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected {', '.join(unexpected)}")
            raise KeyError(f"load_state_dict: the saved parameters do not fit {type(self).__name__}: "
                           + "; ".join(parts))
        checked: dict[str, np.ndarray] = {}
        for name, p in params.items():  # every value checked before any parameter changes
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape} in the saved state, "
                                 f"but the model's {name} has shape {p.shape}")
            if value.dtype.kind not in "biuf":
                raise ValueError(f"load_state_dict: {name} holds {value.dtype} values, not real numbers")
            with np.errstate(over="ignore", invalid="ignore"):
                cast = value.astype(p.dtype)
            if not allow_nonfinite:
                _check_finite(name, value, cast, p.dtype)
            checked[name] = cast
        for name, cast in checked.items():
            params[name][...] = cast
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters and buffers to a NumPy ``.npz`` file (names as keys; ``.npz`` is added to a name
        without it). The file is replaced atomically: a failed save leaves the previous file whole."""
        target = os.fspath(path)
        if not target.endswith(".npz"):
            target += ".npz"
        state = self.state_dict()
        with atomic_open(target) as fh:
            np.savez(fh, **state)

    def load(self, path: str | os.PathLike[str], strict: bool = True, allow_nonfinite: bool = False) -> Module:
        """Read parameters written by :meth:`save` into this model (same architecture); returns self.
        A missing, truncated or corrupt file is a ValueError saying so (see :meth:`load_state_dict`
        for the values refused)."""
        try:
            state = read_npz(path)
        except NpzError as e:
            raise ValueError(f"load: {e}") from None
        return self.load_state_dict(state, strict=strict, allow_nonfinite=allow_nonfinite)

    # ---- display -----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's settings, shown inside its repr."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------

_INITS = ("he", "xavier", "lecun", "uniform")


def init_weight(who: str, init: str, shape: tuple[int, ...], fan_in: int, fan_out: int,
                rng: np.random.Generator) -> np.ndarray:
    """Initial weights of ``shape``: "he" (normal, std √(2/fan_in): Kaiming, for ReLU networks),
    "lecun" (normal, std √(1/fan_in)), "xavier" (uniform ±√(6/(fan_in+fan_out)), for tanh/sigmoid) or
    "uniform" (±1/√fan_in, PyTorch's default). ``fan_in`` counts the inputs of one output unit."""
    if init == "he":
        return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    if init == "lecun":
        return rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)
    if init == "xavier":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    if init == "uniform":
        return rng.uniform(-1, 1, shape) / math.sqrt(fan_in)
    raise ValueError(f"{who}: init must be one of {', '.join(_INITS)}, not {init!r}")


class Linear(Module):
    """Affine layer ``y = x @ weight + bias`` with ``weight`` of shape (in_features, out_features).

    The weight is stored input-major, as the worksheet writes ``x·W``, so no transpose is needed.
    ``init`` picks the initial weights: "he" (normal, std √(2/in), for ReLU networks; default),
    "xavier" (uniform ±√(6/(in+out)), for tanh/sigmoid), "lecun" (normal, std √(1/in)) or
    "uniform" (±1/√in for weights and bias, PyTorch's default). Biases start at zero otherwise.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, init: str = "he",
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        for what, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"Linear: {what} must be a positive integer, not {n!r}")
        self.in_features, self.out_features, self.init = int(in_features), int(out_features), init
        g = _generator(rng)
        w = init_weight("Linear", init, (self.in_features, self.out_features), self.in_features, self.out_features, g)
        self.weight = Parameter(w, dtype=dtype)
        if bias:
            b = g.uniform(-1, 1, out_features) / math.sqrt(in_features) if init == "uniform" else \
                np.zeros(out_features)
            self.bias: Parameter | None = Parameter(b, dtype=dtype)
        else:
            self.bias = None

    def forward(self, x: Any) -> Tensor:
        out = F.matmul(x, self.weight)
        return out if self.bias is None else F.add(out, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}" + ("" if self.bias is not None else ", bias=False")


class Sequential(Module):
    """Layers applied one after the other; parameters are named by position (``"0.weight"``)."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module "
                                "(write cr.nn.ReLU(), not cr.relu)")
            setattr(self, str(i), layer)
        self._count = len(layers)

    @property
    def layers(self) -> list[Module]:
        """The layers, in order."""
        return [getattr(self, str(i)) for i in range(self._count)]

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: Any) -> Any:
        for i in range(self._count):
            x = getattr(self, str(i))(x)
        return x


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x: Any) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    """The logistic function 1/(1+e⁻ˣ), elementwise (stable for large |x|)."""

    def forward(self, x: Any) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """tanh x, elementwise."""

    def forward(self, x: Any) -> Tensor:
        return F.tanh(x)


class Dropout(Module):
    """In training mode, zero each input with probability ``p`` and scale the rest by 1/(1−p), so the
    expected value is unchanged; in evaluation mode (``model.eval()``) pass the input through."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), not {p!r}")
        self.p = float(p)
        self._gen = None if rng is None else _generator(rng)

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0:
            return x
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        g = self._gen if self._gen is not None else _rng
        keep = g.random(data.shape) >= self.p
        mask = keep.astype(data.dtype if data.dtype.kind == "f" else np.float64) / (1 - self.p)
        return F.multiply(x, mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------


def cross_entropy(logits: Any, labels: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy against integer class labels, −log softmax(logits)[label], averaged over
    the rows (``reduction="sum"`` or ``"none"`` otherwise). Stable for large logits: one fused gate
    whose gradient is softmax − one-hot (see :func:`chainrule.cross_entropy`)."""
    return F.cross_entropy(logits, labels, reduction=reduction)


def mse_loss(prediction: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error, mean((prediction − target)²) (``reduction="sum"`` or ``"none"`` otherwise)."""
    p_shape = np.shape(prediction.data if isinstance(prediction, Tensor) else prediction)
    t_shape = np.shape(target.data if isinstance(target, Tensor) else target)
    if p_shape != t_shape:
        raise ValueError(f"mse_loss: prediction has shape {p_shape} but target has shape {t_shape}; "
                         "they must match (reshape one of them)")
    sq = F.square(F.subtract(prediction, target))
    return _reduce(sq, reduction, "mse_loss")


def svm_loss(scores: Any, labels: Any, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Multiclass hinge (SVM) loss: Σ_{j≠y} max(0, s_j − s_y + margin) per row, averaged over rows.

    Built from the engine's gates: the correct class's own term is exactly ``margin`` (s_y − s_y +
    margin), so it is subtracted again rather than masked out.
    """
    x = scores.data if isinstance(scores, Tensor) else np.asarray(scores)
    y = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    F.check_class_labels("svm_loss", x, y)
    if not margin > 0:
        raise ValueError(f"svm_loss: margin must be positive, not {margin!r}")
    correct = F.reshape(scores[np.arange(y.shape[0]), y] if isinstance(scores, Tensor)
                        else x[np.arange(y.shape[0]), y], (-1, 1))
    per_row = F.sum(F.relu(F.add(F.subtract(scores, correct), margin)), axis=1)
    return _reduce(F.subtract(per_row, margin), reduction, "svm_loss")


def _reduce(t: Tensor, reduction: str, who: str) -> Tensor:
    if reduction == "mean":
        return F.mean(t)
    if reduction == "sum":
        return F.sum(t)
    if reduction == "none":
        return t
    raise ValueError(f"{who}: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")

