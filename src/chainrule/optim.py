"""Optimizers: turn the gradients in each parameter's ``.grad`` into an update of its values.

At heart every one is the worksheet's ``w -= step_size * grad``, applied in place on the
parameter's array (``p.data``), so the model, the optimizer and anything else holding the
parameter all see the new values. Momentum and Adam only change *which* step is taken. A Dask
array is never written: there the parameter tensor takes the new (lazy) array instead.

>>> import numpy as np, chainrule as cr
>>> w = cr.tensor([1.0, 2.0], requires_grad=True)
>>> opt = cr.optim.SGD([w], lr=0.1)
>>> (w * w).sum().backward(); opt.step(); w.data          # w - 0.1 * 2w
array([0.8, 1.6])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor, mark_written

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


class Optimizer:
    """Base class: holds the parameters and a learning rate ``lr`` (change it between steps freely)."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params: list[Tensor] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got no parameters to optimize (an empty model, or an "
                             "iterator such as model.parameters() that was already used up?)")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"{type(self).__name__}: parameter {i} is not a tensor that requires grad "
                                f"(got {type(p).__name__}); pass model.parameters()")
        _check_positive(type(self).__name__, "lr", lr)
        self.lr = float(lr)
        self.steps = 0

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``backward`` adds to ``.grad``; start each step afresh)."""
        for p in self.params:
            p.grad = None

    def step(self, grads: Sequence[Any] | None = None) -> None:
        """Update every parameter that has a gradient, in place. ``grads``: one gradient per
        parameter, in order, used instead of each ``.grad`` (what a ``cr.compile``d loss returns)."""
        if grads is not None:
            grads = list(grads)
            if len(grads) != len(self.params):
                raise ValueError(f"{type(self).__name__}.step: got {len(grads)} gradients for "
                                 f"{len(self.params)} parameters (pass one per parameter, in order)")
        self.steps += 1
        for i, p in enumerate(self.params):
            g = p.grad if grads is None else grads[i]
            if g is not None:
                new = self._update(i, p.data, g)
                if new is not None and new is not p.data:
                    # ``w -= ...`` on an immutable (Dask) array made a new array: the parameter takes it
                    p.data = new
                # a backward pass through a graph made before this step would read the new values: it
                # raises instead (as after the worksheet's own ``w -= lr * w.grad``)
                mark_written(p)

    def _update(self, i: int, w: np.ndarray, g: Any) -> Any:
        """Update parameter ``i``'s values ``w`` from its gradient ``g`` (each optimizer's rule) and return
        them: ``w`` itself, changed in place, or a new array where ``w`` cannot be written (Dask)."""
        raise NotImplementedError(f"{type(self).__name__} does not define its update rule (_update)")


class SGD(Optimizer):
    """Stochastic gradient descent: ``w -= lr * g``.

    ``weight_decay`` adds ``weight_decay * w`` to the gradient (L2 regularisation); ``momentum``
    keeps a running velocity ``v = momentum * v + g`` and steps along it (``nesterov``: along
    ``g + momentum * v``, looking one step ahead). Same conventions as PyTorch's SGD.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr)
        _check_range("SGD", "momentum", momentum, 0.0, 1.0)
        _check_nonnegative("SGD", "weight_decay", weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)
        self.velocity: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, w: np.ndarray, g: Any) -> Any:
        if self.weight_decay:
            g = g + self.weight_decay * w
        if self.momentum:
            v = self.velocity[i]
            if v is None:
                v = backend.namespace_of(w).zeros_like(w)
            v *= self.momentum  # in place on NumPy; a new array on Dask (kept below)
            v += g
            self.velocity[i] = v
            g = g + self.momentum * v if self.nesterov else v
        w -= self.lr * g  # the worksheet's update
        return w


class Adam(Optimizer):
    """Adam: steps along running means of the gradient and its square, bias-corrected.

    ``m = β₁m + (1−β₁)g``, ``v = β₂v + (1−β₂)g²``, ``w -= lr · m̂ / (√v̂ + eps)`` with
    ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``. ``weight_decay`` is added to the gradient (L2); see
    :class:`AdamW` for the decoupled form.
    """

    decoupled = False

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        name = type(self).__name__
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{name}: betas must be a pair (β₁, β₂), not {betas!r}")
        _check_range(name, "betas[0]", betas[0], 0.0, 1.0)
        _check_range(name, "betas[1]", betas[1], 0.0, 1.0)
        _check_positive(name, "eps", eps)
        _check_nonnegative(name, "weight_decay", weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.m: list[np.ndarray | None] = [None] * len(self.params)
        self.v: list[np.ndarray | None] = [None] * len(self.params)

    def _update(self, i: int, w: np.ndarray, g: Any) -> Any:
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                w -= (self.lr * self.weight_decay) * w
            else:
                g = g + self.weight_decay * w
        xp = backend.namespace_of(w)
        m, v = self.m[i], self.v[i]
        if m is None:
            m, v = xp.zeros_like(w), xp.zeros_like(w)
        m *= b1  # in place on NumPy; new arrays on Dask (kept below)
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        self.m[i], self.v[i] = m, v
        t = self.steps
        step_size = self.lr / (1 - b1**t)
        denom = xp.sqrt(v / (1 - b2**t))
        denom += self.eps
        w -= step_size * (m / denom)  # the worksheet's update, along the adapted direction
        return w


class AdamW(Adam):
    """Adam with decoupled weight decay: ``w -= lr · weight_decay · w`` separately from the Adam step
    (Loshchilov & Hutter), which regularises better than adding L2 to the gradient."""

    decoupled = True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _number(who: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{who}: {what} must be a number, not {value!r}")
    return float(value)


def _check_positive(who: str, what: str, value: Any) -> None:
    if not _number(who, what, value) > 0:
        raise ValueError(f"{who}: {what} must be positive, not {value!r}")


def _check_nonnegative(who: str, what: str, value: Any) -> None:
    if not _number(who, what, value) >= 0:
        raise ValueError(f"{who}: {what} must be zero or positive, not {value!r}")


def _check_range(who: str, what: str, value: Any, lo: float, hi: float) -> None:
    v = _number(who, what, value)
    if not (lo <= v < hi):
        raise ValueError(f"{who}: {what} must be in [{lo}, {hi}), not {value!r}")
