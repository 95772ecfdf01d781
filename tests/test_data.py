"""cr.data: mini-batches, the train/test split, standardisation, one-hot, and checked data loading."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import data


def test_batches_cover_every_row_once_per_pass():
    X = np.arange(23 * 2).reshape(23, 2)
    y = np.arange(23)
    b = data.batches(X, y, batch_size=5, seed=0)
    assert len(b) == 5
    for _ in range(2):
        rows = []
        sizes = []
        for xb, yb in b:
            np.testing.assert_array_equal(xb[:, 0] // 2, yb)  # X and y rows stay paired
            rows.extend(yb.tolist())
            sizes.append(len(yb))
        assert sorted(rows) == list(range(23)) and sizes == [5, 5, 5, 5, 3]
    first = [yb.tolist() for _, yb in b]
    second = [yb.tolist() for _, yb in b]
    assert first != second  # a new order on every pass


def test_batches_are_reproducible_and_optional():
    X = np.arange(10.0)[:, None]
    y = np.arange(10)
    a = [yb.tolist() for _, yb in data.batches(X, y, batch_size=4, seed=3)]
    b = [yb.tolist() for _, yb in data.batches(X, y, batch_size=4, seed=3)]
    assert a == b
    ordered = [yb.tolist() for _, yb in data.batches(X, y, batch_size=4, shuffle=False)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = list(data.batches(X, y, batch_size=4, shuffle=False, drop_last=True))
    assert len(dropped) == 2 and len(data.batches(X, y, batch_size=4, drop_last=True)) == 2
    only_x = list(data.batches(X, batch_size=6, shuffle=False))
    assert [xb.shape for xb in only_x] == [(6, 1), (4, 1)]


def test_batches_errors():
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        data.batches(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(np.zeros((3, 2)), batch_size=0)


def test_train_test_split_partitions_and_stratifies():
    X = np.arange(100)[:, None] * 10
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    Xtr, Xte, ytr, yte = data.train_test_split(X, y, test_size=0.2, seed=1)
    assert len(Xte) == 20 and len(Xtr) == 80
    np.testing.assert_array_equal(y[Xtr[:, 0] // 10], ytr)  # rows stay paired with their labels
    np.testing.assert_array_equal(y[Xte[:, 0] // 10], yte)
    assert sorted(np.concatenate([Xtr[:, 0], Xte[:, 0]]).tolist()) == X[:, 0].tolist()  # a partition
    assert np.bincount(yte).tolist() == [12, 6, 2]  # each class keeps its 20% share
    again = data.train_test_split(X, y, test_size=0.2, seed=1)
    np.testing.assert_array_equal(again[1], Xte)
    Xtr2, Xte2, _, _ = data.train_test_split(X, y, test_size=7, stratify=False, seed=0)
    assert len(Xte2) == 7 and len(Xtr2) == 93


@pytest.mark.parametrize("kwargs,match", [
    (dict(test_size=1.5), "between 0 and 1"),
    (dict(test_size=100), "leaves no training"),
    (dict(test_size=0), "positive integer"),
])
def test_train_test_split_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.train_test_split(np.zeros((100, 2)), np.zeros(100, dtype=int), **kwargs)
    with pytest.raises(ValueError, match="one row per sample"):
        data.train_test_split(np.zeros((5, 2)), np.zeros(4))


def test_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 3.0, (200, 3)).astype(np.float32)
    train[:, 2] = 7.0  # a constant column (a blank pixel): shifted, never divided by zero
    test = rng.normal(5.0, 3.0, (50, 3)).astype(np.float32)
    s_train, s_test = data.standardize(train, test)
    np.testing.assert_allclose(s_train[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(s_train[:, :2].std(axis=0), 1, rtol=1e-4)
    np.testing.assert_array_equal(s_train[:, 2], 0)
    assert s_train.dtype == np.float32 and np.all(np.isfinite(s_test))
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(s_test[:, :2], (test[:, :2] - mean[:2]) / std[:2], rtol=1e-5)
    with pytest.raises(RuntimeError, match="fit"):
        data.Standardizer().transform(train)
    with pytest.raises(ValueError, match="do not match"):
        data.Standardizer().fit(train).transform(np.zeros((2, 4)))


def test_one_hot():
    np.testing.assert_array_equal(data.one_hot([2, 0, 1]), np.eye(3)[[2, 0, 1]])
    assert data.one_hot(np.array([1]), num_classes=4).shape == (1, 4)
    with pytest.raises(ValueError, match="0..1"):
        data.one_hot([0, 2], num_classes=2)


def test_load_npz_good_file_flattens_images(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((6, 2, 3)), y=np.array([0.0, 1, 2, 0, 1, 2]))
    X, y = data.load_npz(path)
    assert X.shape == (6, 6) and X.dtype == np.float32 and y.dtype == np.int64


@pytest.mark.parametrize("arrays,match", [
    (dict(X=np.zeros((4, 2))), "needs arrays named X and y.*it has X"),
    (dict(X=np.zeros(4), y=np.array([0, 1, 0, 1])), r"one row per sample.*shape \(4,\)"),
    (dict(X=np.zeros((4, 2)), y=np.zeros((4, 1), dtype=int)), "y must be 1-D"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0])), "4 rows but y has 3 labels"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1.5, 0, 1])), "non-integer"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, -1, 0, 1])), "negative label -1"),
    (dict(X=np.zeros((4, 2)), y=np.array([1, 1, 1, 1])), "only one class"),
    (dict(X=np.array([[0.0, np.nan]] * 4), y=np.array([0, 1, 0, 1])), "NaN"),
    (dict(X=np.array([["a", "b"]] * 4), y=np.array([0, 1, 0, 1])), "must hold numbers"),
    (dict(X=np.zeros((4, 2)), y=np.array(["a", "b", "a", "b"])), "integer class labels"),
])
def test_load_npz_errors_say_what_is_wrong(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=match):
        data.load_npz(path)


def test_load_npz_file_problems(tmp_path):
    with pytest.raises(data.DataError, match="no such file"):
        data.load_npz(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(data.DataError, match="not a NumPy .npz file"):
        data.load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(data.DataError, match="single array"):
        data.load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", X=np.array([None, 1], dtype=object), y=np.array([0, 1]))
    with pytest.raises(data.DataError, match="numeric arrays"):
        data.load_npz(tmp_path / "obj.npz")


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = cr.data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and set(np.unique(y)) == set(range(10))
