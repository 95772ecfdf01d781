"""``chainrule train``: train a multilayer perceptron classifier from the command line.

    chainrule train digits --epochs 30 --plot curves.png --save model.npz
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

__all__ = ["add_parser", "run", "main", "build_mlp", "fit", "History", "TrainError"]

DEFAULTS = dict(epochs=40, batch_size=64, lr=1e-3, hidden=(512, 256), dropout=0.3, optimizer="adam", test_size=0.2,
                seed=0)


class TrainError(Exception):
    """A problem with the user's settings or data, reported as one line (exit status 2)."""


@dataclass
class History:
    """Per-epoch training record: mean training loss and accuracy, test loss and accuracy."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
        seed: np.random.Generator | int | None = None,
        on_epoch: Callable[[int, History], None] | None = None) -> History:
    """The training loop: for each shuffled mini-batch, loss → ``backward()`` → ``optimizer.step()``;
    after each epoch the test set is scored and ``on_epoch(epoch, history)`` is called."""
    history = History()
    start = time.perf_counter()
    batches = D.batches(X_train, y_train, batch_size=batch_size, shuffle=True, seed=seed)
    for epoch in range(epochs):
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
        if on_epoch is not None:
            on_epoch(epoch, history)
    model.eval()
    return history


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


def _hidden_sizes(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hidden layer sizes like 256,128, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden layer sizes must be positive, got {text!r}")
    return sizes


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand on an ``argparse`` subparsers object; its handler is ``run``
    (set as the ``func`` default), which returns the exit status."""
    p = subparsers.add_parser(
        "train",
        help="train an MLP classifier (digits, or your own X/y arrays) with chainrule",
        description="Train a multilayer perceptron with chainrule's nn/optim/data modules: shuffled\n"
                    "mini-batches, softmax cross-entropy, backprop, an optimizer step. Shows a progress\n"
                    "bar with loss and accuracy and prints the final test accuracy.",
        epilog="examples:\n  chainrule train digits --epochs 30 --plot curves.png --save model.npz\n"
               "  chainrule train --data mine.npz --hidden 64 --optimizer sgd --lr 0.1\n\n"
               "--data FILE.npz holds X (samples × features, or images: flattened) and y (integer\n"
               "class labels 0..k−1), saved with np.savez('mine.npz', X=X, y=y).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", nargs="?", choices=["digits"],
                   help="built-in data set: scikit-learn's 8×8 handwritten digits (the default without --data)")
    p.add_argument("--data", metavar="FILE.npz", help="train on your own arrays X and y from an .npz file")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"],
                   help="passes over the training data (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                   help="samples per gradient step (default %(default)s)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate, the worksheet's step_size (default 0.001 for adam/adamw, 0.05 for sgd)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=DEFAULTS["optimizer"],
                   help="update rule (default %(default)s)")
    p.add_argument("--momentum", type=_fraction_closed, default=0.9, help="SGD momentum (default %(default)s)")
    p.add_argument("--weight-decay", type=_nonneg_float, default=0.0,
                   help="L2 penalty (decoupled for adamw; default %(default)s)")
    p.add_argument("--hidden", type=_hidden_sizes, default=DEFAULTS["hidden"], metavar="SIZES",
                   help="hidden layer sizes, comma-separated (default 512,256; '' for none: softmax regression)")
    p.add_argument("--activation", choices=sorted(_ACTIVATIONS), default="relu",
                   help="hidden-layer nonlinearity (default %(default)s)")
    p.add_argument("--dropout", type=_fraction_closed, default=DEFAULTS["dropout"],
                   help="dropout probability after each hidden layer (default %(default)s)")
    p.add_argument("--test-size", type=_fraction_open, default=DEFAULTS["test_size"],
                   help="fraction of the samples held out for testing (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="random seed for the split, initial weights and batch order (default %(default)s)")
    p.add_argument("--plot", metavar="FILE", help="save loss/accuracy curves to FILE (.png, .svg, .pdf)")
    p.add_argument("--save", metavar="FILE", help="save the trained parameters to FILE (.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if args.data is not None and args.dataset is not None:
        raise TrainError(f"give either the data set name ({args.dataset}) or --data FILE.npz, not both")
    if args.data is not None:
        try:
            X, y = D.load_npz(args.data)
        except D.DataError as e:
            raise TrainError(str(e)) from None
        return X, y, os.path.basename(args.data)
    try:
        X, y = D.load_digits()
    except ImportError as e:
        raise TrainError(str(e)) from None
    return X, y, "digits"


def _make_optimizer(args: argparse.Namespace, params: Iterable[nn.Parameter]) -> optim.Optimizer:
    if args.optimizer == "sgd":
        lr = args.lr if args.lr is not None else 0.05
        return optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    lr = args.lr if args.lr is not None else DEFAULTS["lr"]
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
    budget = memory_budget()
    if need > budget:
        raise TrainError(f"{name}: an MLP {'-'.join(map(str, sizes))} has {n_params:,} parameters and needs about "
                         f"{need / 2**30:.1f} GiB to train; the limit is {budget / 2**30:.1f} GiB (half of this "
                         "machine's memory). Fewer classes (are the labels numbered 0..k-1?) or smaller layers?")


def _run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    X, y, name = _load(args)
    rng = np.random.default_rng(args.seed)
    try:
        X_train, X_test, y_train, y_test = D.train_test_split(X, y, test_size=args.test_size, seed=rng)
    except ValueError as e:
        raise TrainError(f"{name}: cannot split {len(X)} samples into training and test sets ({e})") from None
    X_train, X_test = D.standardize(X_train, X_test)
    n_classes = int(y.max()) + 1
    _check_size(X, args.hidden, n_classes, name)
    model = build_mlp(X.shape[1], args.hidden, n_classes, activation=args.activation, dropout=args.dropout, rng=rng)
    opt = _make_optimizer(args, model.parameters())
    arch = "-".join(str(n) for n in (X.shape[1], *args.hidden, n_classes))
    print(f"{name}: {len(X_train)} training and {len(X_test)} test samples, {X.shape[1]} features, "
          f"{n_classes} classes; MLP {arch} ({args.activation}, {model.num_parameters():,} parameters), "
          f"{type(opt).__name__} lr={opt.lr:g}, batch {args.batch_size}, {args.epochs} epochs")
    progress = _Progress(args.epochs, enabled=not args.no_progress)
    try:
        with _one_blas_thread():
            history = fit(model, opt, X_train, y_train, X_test, y_test, epochs=args.epochs,
                          batch_size=args.batch_size, seed=rng, on_epoch=progress.update)
    finally:
        progress.close()
    correct = round(history.test_acc[-1] * len(X_test))
    print(f"final test accuracy: {history.test_acc[-1]:.2%} ({correct}/{len(X_test)}), test loss "
          f"{history.test_loss[-1]:.4f}, train accuracy {history.train_acc[-1]:.2%}; "
          f"trained in {history.seconds:.1f} s")
    if args.save:  # the trained model first: a picture that cannot be written must not cost it
        try:
            model.save(args.save)
        except OSError as e:
            raise TrainError(f"--save {args.save}: cannot write ({e.strerror or e}); the previous file, if "
                             "any, is unchanged") from None
        print(f"parameters saved to {args.save} (load with model.load({args.save!r}) into "
              f"chainrule.train.build_mlp({X.shape[1]}, {tuple(args.hidden)}, {n_classes}, {args.activation!r}"
              f"{f', dropout={args.dropout}' if args.dropout and args.hidden else ''}))")
    if args.plot:
        plot_history(history, args.plot, title=f"chainrule train {name}: MLP {arch}")
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
