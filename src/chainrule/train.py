"""``chainrule train``: train a classifier (a multilayer perceptron, or a small convolutional
network) from the command line.

    chainrule train digits --epochs 30 --plot curves.png --save model.npz
    chainrule train digits --model cnn
    chainrule train --data mine.npz --hidden 64 --optimizer sgd --lr 0.1

The data are scikit-learn's bundled handwritten digits (8×8 images, no download) or the user's
own ``X`` and ``y`` arrays in an ``.npz`` file. The loop is the one a user writes by hand with
:mod:`chainrule.nn`, :mod:`chainrule.optim` and :mod:`chainrule.data` (see ``examples/``); this
module adds a progress bar, loss/accuracy curves and saving. The CLI registers the subcommand
with :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import data as D
from . import nn, optim
from .cli import positive_float, positive_int
from .fileio import OutputPathError, atomic_path, check_writable, memory_budget
from .tensor import no_grad

__all__ = ["add_parser", "run", "main", "build_mlp", "build_cnn", "fit", "History", "TrainError"]

DEFAULTS = dict(epochs=40, batch_size=64, lr=1e-3, hidden=(512, 256), dropout=0.3, optimizer="adam", test_size=0.2,
                seed=0, schedule="constant")
#: what differs for ``--model cnn``: two conv stages, no hidden dense layer, a cosine learning-rate decay
CNN_DEFAULTS = dict(epochs=20, lr=2e-3, channels=(32, 64), hidden=(), schedule="cosine")


class TrainError(Exception):
    """A problem with the user's settings or data, reported as one line (exit status 2)."""


@dataclass
class History:
    """Per-epoch training record: mean training loss and accuracy, test loss and accuracy; the time
    taken so far, wall-clock and this process's CPU time (the steadier figure on a shared machine)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def build_mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu", dropout: float = 0.0,
              rng: np.random.Generator | int | None = None) -> nn.Sequential:
    """Linear → activation (→ dropout) for each hidden size, then a Linear layer to the class scores."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, not {activation!r}")
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    init = "he" if activation == "relu" else "xavier"
    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h, init=init, rng=g), _ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout, rng=g))
        d = h
    layers.append(nn.Linear(d, n_out, init="lecun" if hidden else "xavier", rng=g))
    return nn.Sequential(*layers)


def build_cnn(image_shape: Sequence[int], n_out: int, channels: Sequence[int] = CNN_DEFAULTS["channels"],
              hidden: Sequence[int] = (), activation: str = "relu", dropout: float = 0.0,
              rng: np.random.Generator | int | None = None) -> nn.Sequential:
    """A small convolutional network for (C, H, W) images: per entry of ``channels``, Conv2d 3×3
    (padding 1) → BatchNorm2d → activation → MaxPool2d 2×2 (while the image is at least 2 pixels
    wide), with the first stage's convolution doubled; then Flatten, optional hidden Linear layers,
    dropout and a Linear layer to the class scores."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, not {activation!r}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), not {tuple(image_shape)}")
    if not channels:
        raise ValueError("a CNN needs at least one convolution stage (channels, e.g. (32, 64))")
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    init = "he" if activation == "relu" else "xavier"
    c, h, w = (int(v) for v in image_shape)
    layers: list[nn.Module] = []
    for stage, width in enumerate(channels):
        for _ in range(2 if stage == 0 else 1):  # two convolutions before the first pooling see more context
            # no bias: the batch normalization after it subtracts any constant again
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False, init=init, rng=g), nn.BatchNorm2d(width),
                       _ACTIVATIONS[activation]()]
            c = width
        if h >= 2 and w >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers.append(nn.Flatten())
    d = c * h * w
    for size in hidden:
        if dropout:
            layers.append(nn.Dropout(dropout, rng=g))
        layers += [nn.Linear(d, size, init=init, rng=g), _ACTIVATIONS[activation]()]
        d = size
    if dropout:
        layers.append(nn.Dropout(dropout, rng=g))
    layers.append(nn.Linear(d, n_out, init="lecun", rng=g))
    return nn.Sequential(*layers)


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(X, y)``, in evaluation mode, no graph."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with no_grad():
        for start in range(0, len(X), batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            scores = model(xb)
            total_loss += float(nn.cross_entropy(scores, yb, reduction="sum").item())
            correct += int((np.argmax(scores.data, axis=1) == yb).sum())
    model.train(was_training)
    return total_loss / len(X), correct / len(X)


def fit(model: nn.Module, optimizer: optim.Optimizer, X_train: np.ndarray, y_train: np.ndarray,
        X_test: np.ndarray, y_test: np.ndarray, *, epochs: int, batch_size: int,
        seed: np.random.Generator | int | None = None, schedule: str = "constant",
        on_epoch: Callable[[int, History], None] | None = None) -> History:
    """The training loop: for each shuffled mini-batch, loss → ``backward()`` → ``optimizer.step()``;
    after each epoch the test set is scored and ``on_epoch(epoch, history)`` is called.

    ``schedule="cosine"`` lowers the learning rate along half a cosine, from the optimizer's ``lr``
    in the first epoch towards 0 in the last (``"constant"`` keeps it); the optimizer's ``lr`` is
    restored at the end."""
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(_SCHEDULES)}, not {schedule!r}")
    history = History()
    start, cpu_start = time.perf_counter(), time.process_time()
    batches = D.batches(X_train, y_train, batch_size=batch_size, shuffle=True, seed=seed)
    base_lr = optimizer.lr
    try:
        for epoch in range(epochs):
            if schedule == "cosine":
                optimizer.lr = base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
            model.train()
            loss_sum, correct = 0.0, 0
            for xb, yb in batches:
                scores = model(xb)
                loss = nn.cross_entropy(scores, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.item()) * len(yb)
                correct += int((np.argmax(scores.data, axis=1) == yb).sum())
            loss_value = loss_sum / len(X_train)
            if not math.isfinite(loss_value):
                raise TrainError(f"the training loss became {loss_value} in epoch {epoch + 1}: the learning rate "
                                 f"({optimizer.lr:g}) is probably too large")
            history.train_loss.append(loss_value)
            history.train_acc.append(correct / len(X_train))
            test_loss, test_acc = evaluate(model, X_test, y_test)
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            history.seconds = time.perf_counter() - start
            history.cpu_seconds = time.process_time() - cpu_start
            if on_epoch is not None:
                on_epoch(epoch, history)
    finally:
        optimizer.lr = base_lr  # the schedule changed it for the epochs only
    model.eval()
    return history


_SCHEDULES = ("constant", "cosine")


# ----------------------------------------------------------------------------------------------
# progress display: tqdm, else rich, else one plain line per epoch
# ----------------------------------------------------------------------------------------------


class _Progress:
    """An epoch progress bar showing loss and accuracy (tqdm or rich when installed)."""

    def __init__(self, epochs: int, enabled: bool) -> None:
        self.kind = "off"
        self.epochs = epochs
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True)
            self.kind = "tqdm"
            return
        except ImportError:
            pass
        try:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}",
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("training", total=epochs, info="")
            self.kind = "rich"
        except ImportError:
            self.kind = "plain"

    def update(self, epoch: int, h: History) -> None:
        info = (f"loss {h.train_loss[-1]:.4f}  acc {h.train_acc[-1]:.1%}  "
                f"test loss {h.test_loss[-1]:.4f}  test acc {h.test_acc[-1]:.1%}")
        if self.kind == "tqdm":
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
        elif self.kind == "rich":
            self.bar.update(self.task, advance=1, info=info)
        elif self.kind == "plain":
            print(f"epoch {epoch + 1:>3}/{self.epochs}  {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.kind == "tqdm":
            self.bar.close()
        elif self.kind == "rich":
            self.bar.stop()


def plot_history(history: History, path: str, title: str = "") -> None:
    """Save loss and accuracy curves (train and test, per epoch) to an image file with matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise TrainError("--plot needs matplotlib: pip install 'chainrule[train]' (or pip install matplotlib)") \
            from None
    fig = Figure(figsize=(10, 4), layout="constrained")  # no pyplot: no GUI backend, no global state
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = np.arange(1, len(history.train_loss) + 1)
    ax_loss.plot(epochs, history.train_loss, label="train")
    ax_loss.plot(epochs, history.test_loss, label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss", yscale="log")
    ax_acc.plot(epochs, np.asarray(history.train_acc) * 100, label="train")
    ax_acc.plot(epochs, np.asarray(history.test_acc) * 100, label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    try:
        with atomic_path(path) as tmp:  # a failed write leaves an earlier picture whole
            fig.savefig(tmp, dpi=120, format=os.path.splitext(path)[1].lstrip(".").lower() or None)
    except (ValueError, OSError) as e:
        raise TrainError(f"--plot {path}: cannot write the picture ({e})") from None


# ----------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------


def _fraction(text: str, *, closed_low: bool) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not ((0 <= x if closed_low else 0 < x) and x < 1):
        raise argparse.ArgumentTypeError(f"expected a number {'from 0' if closed_low else 'between 0'} "
                                         f"{'up to (not including)' if closed_low else 'and'} 1, got {text!r}")
    return x


def _fraction_closed(text: str) -> float:
    return _fraction(text, closed_low=True)


def _fraction_open(text: str) -> float:
    return _fraction(text, closed_low=False)


def _nonneg_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not (x >= 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return x


def _sizes(what: str, example: str) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like {example}, got {text!r}") from None
        if any(s < 1 for s in sizes):
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
        return sizes

    return parse


_hidden_sizes = _sizes("hidden layer sizes", "256,128")
_channel_counts = _sizes("channel counts", "32,64")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand on an ``argparse`` subparsers object; its handler is ``run``
    (set as the ``func`` default), which returns the exit status."""
    p = subparsers.add_parser(
        "train",
        help="train a classifier (an MLP or a small CNN; digits, or your own X/y arrays) with chainrule",
        description="Train a multilayer perceptron (--model mlp, the default) or a small convolutional\n"
                    "network (--model cnn) with chainrule's nn/optim/data modules: shuffled mini-batches,\n"
                    "softmax cross-entropy, backprop, an optimizer step. Shows a progress bar with loss\n"
                    "and accuracy and prints the final test accuracy.",
        epilog="examples:\n  chainrule train digits --epochs 30 --plot curves.png --save model.npz\n"
               "  chainrule train digits --model cnn                 # about 99% test accuracy\n"
               "  chainrule train --data mine.npz --hidden 64 --optimizer sgd --lr 0.1\n\n"
               "--data FILE.npz holds X (samples × features, or images: flattened for the MLP) and y\n"
               "(integer class labels 0..k−1), saved with np.savez('mine.npz', X=X, y=y). The CNN\n"
               "needs images: X of shape (samples, H, W) or (samples, C, H, W), or rows of a square\n"
               "number of pixels (read as one-channel square images).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", nargs="?", choices=["digits"],
                   help="built-in data set: scikit-learn's 8×8 handwritten digits (the default without --data)")
    p.add_argument("--data", metavar="FILE.npz", help="train on your own arrays X and y from an .npz file")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp",
                   help="mlp: Linear layers on the flattened pixels (default; about 1 s on the digits); cnn: "
                        "convolution stages (Conv2d 3×3, BatchNorm2d, ReLU, MaxPool2d) then a Linear layer")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"passes over the training data (default {DEFAULTS['epochs']} for the MLP, "
                        f"{CNN_DEFAULTS['epochs']} for the CNN)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                   help="samples per gradient step (default %(default)s)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate, the worksheet's step_size (default 0.001 for adam/adamw, 0.002 with "
                        "--model cnn, 0.05 for sgd)")
    p.add_argument("--schedule", choices=_SCHEDULES, default=None,
                   help="learning rate over the epochs: constant, or cosine (decays to 0; default constant for "
                        "the MLP, cosine for the CNN)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=DEFAULTS["optimizer"],
                   help="update rule (default %(default)s)")
    p.add_argument("--momentum", type=_fraction_closed, default=0.9, help="SGD momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=_nonneg_float, default=0.0,
                   help="L2 penalty (decoupled for adamw; default %(default)s)")
    p.add_argument("--hidden", type=_hidden_sizes, default=None, metavar="SIZES",
                   help="hidden layer sizes, comma-separated (default 512,256 for the MLP, '' for none: softmax "
                        "regression; the CNN has none by default, and these come after its convolutions)")
    p.add_argument("--channels", type=_channel_counts, default=None, metavar="SIZES",
                   help="--model cnn: output channels of each convolution stage, comma-separated (default "
                        f"{','.join(map(str, CNN_DEFAULTS['channels']))})")
    p.add_argument("--activation", choices=sorted(_ACTIVATIONS), default="relu",
                   help="hidden-layer nonlinearity (default %(default)s)")
    p.add_argument("--dropout", type=_fraction_closed, default=DEFAULTS["dropout"],
                   help="dropout probability after each hidden layer (the CNN: before its Linear layers; default "
                        "%(default)s)")
    p.add_argument("--test-size", type=_fraction_open, default=DEFAULTS["test_size"],
                   help="fraction of the samples held out for testing (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="random seed for the split, initial weights and batch order (default %(default)s)")
    p.add_argument("--plot", metavar="FILE", help="save loss/accuracy curves to FILE (.png, .svg, .pdf)")
    p.add_argument("--save", metavar="FILE", help="save the trained parameters to FILE (.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str, tuple[int, int, int] | None]:
    """The samples as rows, the labels, the data set's name and, where the samples are images, their
    (channels, height, width)."""
    if args.data is not None and args.dataset is not None:
        raise TrainError(f"give either the data set name ({args.dataset}) or --data FILE.npz, not both")
    if args.data is not None:
        try:
            X, y = D.load_npz(args.data, flatten=False)
        except D.DataError as e:
            raise TrainError(str(e)) from None
        return X.reshape(len(X), -1), y, os.path.basename(args.data), _image_shape(X.shape[1:])
    try:
        X, y = D.load_digits()
    except ImportError as e:
        raise TrainError(str(e)) from None
    return X, y, "digits", (1, 8, 8)


def _image_shape(sample: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(C, H, W) of one sample: (H, W) images have one channel, and so do rows of a square number of
    pixels; anything else is not an image."""
    if len(sample) == 3:
        return sample  # type: ignore[return-value]
    if len(sample) == 2:
        return (1, *sample)  # type: ignore[return-value]
    side = math.isqrt(sample[0]) if len(sample) == 1 else 0
    return (1, side, side) if side > 1 and side * side == sample[0] else None


def _make_optimizer(args: argparse.Namespace, params: Iterable[nn.Parameter]) -> optim.Optimizer:
    if args.optimizer == "sgd":
        lr = args.lr if args.lr is not None else 0.05
        return optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    lr = args.lr if args.lr is not None else (CNN_DEFAULTS if args.model == "cnn" else DEFAULTS)["lr"]
    if args.optimizer == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=args.weight_decay)
    return optim.Adam(params, lr=lr, weight_decay=args.weight_decay)


_PLOT_FORMATS = {".png", ".svg", ".pdf", ".jpg", ".jpeg"}


def _one_blas_thread() -> Any:
    """Matmuls this small are fastest on one BLAS thread, and a second thread that has to wait for a
    busy core makes every step many times slower; threadpoolctl (installed with scikit-learn)
    limits it for the duration of training, when present."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run(args: argparse.Namespace) -> int:
    """Handle ``chainrule train``: load, split, standardise, train, report; returns the exit status."""
    try:
        return _run(args)
    except TrainError as e:
        print(f"chainrule train: error: {e}", file=sys.stderr)
        return 2


def _check_outputs(args: argparse.Namespace) -> None:
    """``--plot`` and ``--save`` checked before any data is read or any epoch run: a sensible
    extension, an existing folder this process can write into."""
    try:
        if args.plot:
            check_writable(args.plot, "--plot", sorted(_PLOT_FORMATS))
        if args.save:
            if not os.path.splitext(args.save)[1]:
                args.save += ".npz"  # what np.savez has always done with a bare name
            check_writable(args.save, "--save", [".npz"])
    except OutputPathError as e:
        raise TrainError(str(e)) from None


def _check_size(X: np.ndarray, hidden: Sequence[int], n_classes: int, name: str) -> None:
    """Refuse, before allocating it, a network that cannot fit in memory (a label of 1e9 asks for a
    billion output units): parameters, gradients and two optimizer moments, 4 bytes each."""
    sizes = (X.shape[1], *hidden, n_classes)
    n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    need = 16 * n_params + 4 * (len(X) + 1024) * max(sizes)
    _refuse_over_budget(need, f"{name}: an MLP {'-'.join(map(str, sizes))} has {n_params:,} parameters")


def _check_cnn_size(image: tuple[int, int, int], channels: Sequence[int], hidden: Sequence[int], n_classes: int,
                    batch_size: int, name: str) -> None:
    """The CNN's version of :func:`_check_size`: parameters (×4: values, gradients, two moments) and,
    per sample of the largest batch (training, or evaluation's 1024), each convolution's im2col
    columns (9 per input value) and about eight arrays of its output (batch norm, activation, pooling)."""
    c, h, w = image
    n_params, per_sample = 0, 0
    for stage, width in enumerate(channels):
        for _ in range(2 if stage == 0 else 1):
            n_params += (9 * c + 3) * width
            per_sample += (9 * c + 8 * width) * h * w
            c = width
        if h >= 2 and w >= 2:
            h, w = h // 2, w // 2
    sizes = (c * h * w, *hidden, n_classes)
    n_params += sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    need = 16 * n_params + 4 * max(batch_size, 1024) * per_sample
    _refuse_over_budget(need, f"{name}: a CNN with channels {','.join(map(str, channels))} on "
                              f"{'×'.join(map(str, image))} images has {n_params:,} parameters")


def _refuse_over_budget(need: int, what: str) -> None:
    budget = memory_budget()
    if need > budget:
        raise TrainError(f"{what} and needs about {need / 2**30:.1f} GiB to train; the limit is "
                         f"{budget / 2**30:.1f} GiB (half of this machine's memory). Fewer classes (are the labels "
                         "numbered 0..k-1?) or smaller layers?")


def _settle_defaults(args: argparse.Namespace) -> None:
    """Fill in the settings left unset with the chosen model's defaults (the MLP's and the CNN's differ)."""
    cnn = args.model == "cnn"
    defaults = {**DEFAULTS, **CNN_DEFAULTS} if cnn else DEFAULTS
    if args.channels is not None and not cnn:
        raise TrainError("--channels sets the convolution stages of --model cnn; the MLP has none (use --hidden)")
    args.epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    args.hidden = args.hidden if args.hidden is not None else defaults["hidden"]
    args.schedule = args.schedule if args.schedule is not None else defaults["schedule"]
    args.channels = (args.channels or CNN_DEFAULTS["channels"]) if cnn else None


def _run(args: argparse.Namespace) -> int:
    _settle_defaults(args)
    _check_outputs(args)
    X, y, name, image = _load(args)
    if args.model == "cnn" and image is None:
        raise TrainError(f"{name}: --model cnn needs images: X of shape (samples, H, W) or (samples, C, H, W), or "
                         f"rows of a square number of pixels; got samples of {X.shape[1]} features (use --model mlp)")
    n_classes = int(y.max()) + 1
    if args.model == "cnn":  # a network that cannot fit is refused before anything large is allocated
        assert image is not None
        _check_cnn_size(image, args.channels, args.hidden, n_classes, args.batch_size, name)
    else:
        _check_size(X, args.hidden, n_classes, name)
    rng = np.random.default_rng(args.seed)
    try:
        X_train, X_test, y_train, y_test = D.train_test_split(X, y, test_size=args.test_size, seed=rng)
    except ValueError as e:
        raise TrainError(f"{name}: cannot split {len(X)} samples into training and test sets ({e})") from None
    X_train, X_test = D.standardize(X_train, X_test)  # per pixel, on the rows, for both models
    if args.model == "cnn":
        assert image is not None
        X_train, X_test = X_train.reshape(-1, *image), X_test.reshape(-1, *image)
        model = build_cnn(image, n_classes, args.channels, args.hidden, activation=args.activation,
                          dropout=args.dropout, rng=rng)
        extra = f", hidden={tuple(args.hidden)}" if args.hidden else ""
        extra += f", activation={args.activation!r}" if args.activation != "relu" else ""
        extra += f", dropout={args.dropout}" if args.dropout else ""
        arch = f"CNN {'×'.join(map(str, image))} → channels {','.join(map(str, args.channels))}" + \
            "".join(f" → {h}" for h in args.hidden) + f" → {n_classes}"
        rebuild = f"build_cnn({image}, {n_classes}, channels={tuple(args.channels)}{extra})"
        features = f"{'×'.join(map(str, image))} images"
    else:
        model = build_mlp(X.shape[1], args.hidden, n_classes, activation=args.activation, dropout=args.dropout,
                          rng=rng)
        arch = "MLP " + "-".join(str(n) for n in (X.shape[1], *args.hidden, n_classes))
        rebuild = (f"build_mlp({X.shape[1]}, {tuple(args.hidden)}, {n_classes}, {args.activation!r}"
                   f"{f', dropout={args.dropout}' if args.dropout and args.hidden else ''})")
        features = f"{X.shape[1]} features"
    opt = _make_optimizer(args, model.parameters())
    print(f"{name}: {len(X_train)} training and {len(X_test)} test samples, {features}, "
          f"{n_classes} classes; {arch} ({args.activation}, {model.num_parameters():,} parameters), "
          f"{type(opt).__name__} lr={opt.lr:g}{' (cosine decay)' if args.schedule == 'cosine' else ''}, "
          f"batch {args.batch_size}, {args.epochs} epochs")
    progress = _Progress(args.epochs, enabled=not args.no_progress)
    try:
        with _one_blas_thread():
            history = fit(model, opt, X_train, y_train, X_test, y_test, epochs=args.epochs,
                          batch_size=args.batch_size, seed=rng, schedule=args.schedule, on_epoch=progress.update)
    finally:
        progress.close()
    correct = round(history.test_acc[-1] * len(X_test))
    print(f"final test accuracy: {history.test_acc[-1]:.2%} ({correct}/{len(X_test)}), test loss "
          f"{history.test_loss[-1]:.4f}, train accuracy {history.train_acc[-1]:.2%}; "
          f"trained in {history.seconds:.1f} s ({history.cpu_seconds:.1f} s of CPU)")
    if args.save:  # the trained model first: a picture that cannot be written must not cost it
        try:
            model.save(args.save)
        except OSError as e:
            raise TrainError(f"--save {args.save}: cannot write ({e.strerror or e}); the previous file, if "
                             "any, is unchanged") from None
        print(f"parameters saved to {args.save} (load with model.load({args.save!r}) into "
              f"chainrule.train.{rebuild})")
    if args.plot:
        plot_history(history, args.plot, title=f"chainrule train {name}: {arch}")
        print(f"curves saved to {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``train`` on its own (``python -m chainrule.train digits ...``)."""
    parser = argparse.ArgumentParser(prog="chainrule")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
