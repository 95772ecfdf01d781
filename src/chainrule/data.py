"""Data helpers for training: shuffled mini-batches, a train/test split, standardisation, and
loading the digits data set or a user's own ``.npz`` arrays (checked, with clear errors).

>>> import numpy as np, chainrule as cr
>>> X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
>>> [xb.shape for xb, yb in cr.data.batches(X, y, batch_size=4, shuffle=False)]
[(4, 2), (4, 2), (2, 2)]
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .fileio import NpzError, read_npz

__all__ = [
    "Batches", "batches", "train_test_split", "Standardizer", "standardize", "one_hot", "load_digits",
    "load_npz", "check_classification_data", "DataError",
]


class DataError(ValueError):
    """Arrays that cannot be used as a data set (wrong shapes, labels, values); says which and why."""


#: Most classes a classification data set may have (labels 0..MAX_CLASSES-1): one output unit each.
MAX_CLASSES = 100_000


def _generator(seed: np.random.Generator | int | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive integer, not {n!r}")
    return int(n)


class Batches:
    """Mini-batches of ``(X, y)`` rows, reshuffled on every pass (see :func:`batches`); ``len()`` is
    the number of batches per pass."""

    def __init__(self, X: Any, y: Any = None, batch_size: int = 64, shuffle: bool = True,
                 seed: np.random.Generator | int | None = None, drop_last: bool = False) -> None:
        self.X = np.asarray(X)
        self.y = None if y is None else np.asarray(y)
        if self.X.ndim == 0:
            raise ValueError("batches: X must have at least one dimension (one row per sample)")
        if self.y is not None and (self.y.ndim == 0 or len(self.y) != len(self.X)):
            raise ValueError(f"batches: X has {len(self.X)} rows but y has "
                             f"{'no rows' if self.y.ndim == 0 else f'{len(self.y)} rows'}; they must match")
        self.batch_size = _count(batch_size, "batches: batch_size")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self._rng = _generator(seed) if shuffle else None

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.X)
        order = self._rng.permutation(n) if self._rng is not None else None
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                sl: Any = slice(start, start + self.batch_size)
            else:
                sl = order[start:start + self.batch_size]
            if self.y is None:
                yield self.X[sl]
            else:
                yield self.X[sl], self.y[sl]


def batches(X: Any, y: Any = None, batch_size: int = 64, shuffle: bool = True,
            seed: np.random.Generator | int | None = None, drop_last: bool = False) -> Batches:
    """Iterate over ``(X_batch, y_batch)`` of ``batch_size`` rows (just ``X_batch`` when ``y`` is None).

    With ``shuffle`` the rows come in a random order, a new one on every pass over the returned
    object; ``seed`` (an int or a ``numpy.random.Generator``) makes the orders reproducible. The
    last batch may be smaller unless ``drop_last``.
    """
    return Batches(X, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


def train_test_split(X: Any, y: Any, test_size: float | int = 0.2, seed: np.random.Generator | int | None = None,
                     stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split rows at random into ``X_train, X_test, y_train, y_test``.

    ``test_size`` is a fraction (0 < f < 1) or a number of rows. With ``stratify`` (the default)
    each class keeps its share in both parts, so a small test set is still representative.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"train_test_split: X and y need one row per sample; got {X.shape[:1] or 'no rows'} "
                         f"and {y.shape[:1] or 'no rows'}")
    n = len(X)
    if isinstance(test_size, (float, np.floating)) and not isinstance(test_size, bool):
        if not 0 < test_size < 1:
            raise ValueError(f"train_test_split: a fractional test_size must be between 0 and 1, not {test_size}")
        frac = float(test_size)
    else:
        k = _count(test_size, "train_test_split: test_size")
        if k >= n:
            raise ValueError(f"train_test_split: test_size {k} leaves no training rows out of {n}")
        frac = k / n
    rng = _generator(seed)
    if stratify:
        test_parts = []
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            test_parts.append(rows[: int(round(frac * len(rows)))])
        test = np.sort(np.concatenate(test_parts)) if test_parts else np.array([], dtype=np.intp)
    else:
        test = np.sort(rng.permutation(n)[: int(round(frac * n))])
    if len(test) == 0 or len(test) == n:
        raise ValueError(f"train_test_split: test_size {test_size} of {n} rows leaves "
                         f"{'no test' if len(test) == 0 else 'no training'} rows")
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    train = rng.permutation(np.flatnonzero(mask))
    test = rng.permutation(test)
    return X[train], X[test], y[train], y[test]


class Standardizer:
    """Rescale features to mean 0 and standard deviation 1, with statistics from the training data.

    Features that are constant in the training data (e.g. always-blank pixels) are only shifted.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, X: Any) -> Standardizer:
        """Learn each column's mean and standard deviation from ``X``; returns self."""
        X = np.asarray(X)
        if X.ndim < 1 or len(X) == 0:
            raise ValueError("Standardizer.fit: X needs at least one row")
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.std = np.where(std > 0, std, 1.0).astype(self.mean.dtype)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(X − mean) / std`` with the fitted statistics (dtype kept for float input)."""
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer.transform: call fit(X_train) first")
        X = np.asarray(X)
        if X.shape[1:] != self.mean.shape:
            raise ValueError(f"Standardizer.transform: rows of shape {X.shape[1:]} do not match the fitted "
                             f"shape {self.mean.shape}")
        out = (X - self.mean) / self.std
        return out.astype(X.dtype) if X.dtype.kind == "f" else out

    def fit_transform(self, X: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same data."""
        return self.fit(X).transform(X)


def standardize(X_train: Any, *others: Any) -> tuple[np.ndarray, ...]:
    """Standardise ``X_train`` and any further arrays with the *training* statistics (so nothing is
    learned from the test set); returns the arrays in the same order."""
    s = Standardizer().fit(X_train)
    return (s.transform(X_train),) + tuple(s.transform(o) for o in others)


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Rows of zeros with a one at each label's position (for losses such as mse_loss)."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"one_hot: labels must be integers, got dtype {y.dtype}")
    k = int(y.max()) + 1 if num_classes is None and y.size else (num_classes or 0)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"one_hot: labels must lie in 0..{k - 1}, got {y.min()}..{y.max()}")
    out = np.zeros(y.shape + (k,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


def check_classification_data(X: Any, y: Any, where: str = "data", flatten: bool = True
                              ) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as float32 rows (images are flattened unless ``flatten=False``) and ``y`` as int64 class
    labels 0..k−1, or a :class:`DataError` saying what is wrong with them."""
    X, y = np.asarray(X), np.asarray(y)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{where}: X must hold numbers, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"{where}: X must have one row per sample, shape (samples, features); got shape {X.shape}")
    if y.ndim != 1:
        raise DataError(f"{where}: y must be 1-D, one class label per sample; got shape {y.shape}")
    if len(X) != len(y):
        raise DataError(f"{where}: X has {len(X)} rows but y has {len(y)} labels; they must match")
    if len(X) < 2:
        raise DataError(f"{where}: need at least 2 samples, got {len(X)}")
    X = (X.reshape(len(X), -1) if flatten else X).astype(np.float32)
    if not np.all(np.isfinite(X)):
        raise DataError(f"{where}: X contains NaN or infinite values")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where}: y must be integer class labels 0, 1, 2, ...; got non-integer values")
    elif y.dtype.kind not in "biu":
        raise DataError(f"{where}: y must be integer class labels 0, 1, 2, ...; got dtype {y.dtype}")
    low, top = y.min(), y.max()  # in y's own dtype: a cast first could wrap a huge label around
    if low < 0:
        raise DataError(f"{where}: y must be class labels 0, 1, 2, ...; got a negative label {low}")
    if top >= MAX_CLASSES:
        raise DataError(f"{where}: y's largest label is {top:g}, so a classifier would need {float(top) + 1:,.0f} "
                        f"outputs; labels must be 0..k-1 with k at most {MAX_CLASSES:,} (renumber them with "
                        "np.unique(y, return_inverse=True))")
    y = y.astype(np.int64)
    if len(np.unique(y)) < 2:
        raise DataError(f"{where}: y has only one class ({y[0]}); a classifier needs at least two")
    return X, y


def load_npz(path: str | os.PathLike[str], flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a classification data set saved with ``np.savez(path, X=..., y=...)``, checked: an
    empty, truncated or corrupt file, or one whose arrays would not fit in memory (sizes read from
    the arrays' headers before anything is allocated), is a :class:`DataError` saying so. Each
    sample of ``X`` becomes one row unless ``flatten=False`` (images kept as images)."""
    name = os.fspath(path)
    try:
        arrays = read_npz(name, names=("X", "y"))
    except NpzError as e:
        raise DataError(str(e)) from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        try:
            with zipfile.ZipFile(name) as z:
                have = [f.removesuffix(".npy") for f in z.namelist()]
        except (zipfile.BadZipFile, OSError):
            have = []
        raise DataError(f"{name}: needs arrays named X and y (np.savez(file, X=X, y=y)); it has "
                        f"{', '.join(have) or 'no arrays'}")
    return check_classification_data(arrays["X"], arrays["y"], where=name, flatten=flatten)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 handwritten 8×8 digits that scikit-learn ships (no download): ``X`` (1797, 64) float32
    pixel intensities 0..16 and ``y`` (1797,) int64 labels 0..9."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("the digits data set comes with scikit-learn, which is not installed: "
                          "pip install 'chainrule[train]' (or pip install scikit-learn)") from None
    d = sk_load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)
