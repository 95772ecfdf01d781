"""``chainrule train`` end to end (digits and the user's own .npz), its errors, and the worked example."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from chainrule import nn, train
from chainrule.cli import main
from chainrule.train import TrainError, _check_cnn_size, build_cnn, build_mlp, fit

ROOT = Path(__file__).resolve().parents[1]


def accuracy_of(text: str) -> float:
    m = re.search(r"final test accuracy: ([\d.]+)%", text)
    assert m, text
    return float(m.group(1)) / 100


def test_digits_with_default_settings_reaches_97_percent(tmp_path, capsys):
    pytest.importorskip("sklearn")
    plot, saved = tmp_path / "curves.png", tmp_path / "model.npz"
    code = main(["train", "digits", "--seed", "0", "--no-progress", "--plot", str(plot), "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert accuracy_of(out) >= 0.97
    assert "MLP 64-512-256-10" in out
    if "curves saved" in out:  # matplotlib installed
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = build_mlp(64, (512, 256), 10, dropout=0.3).load(saved)  # the saved file fits the printed hint
    assert "build_mlp(64, (512, 256), 10, 'relu', dropout=0.3)" in out
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]


def test_progress_bar_shows_loss_and_accuracy(capsys):
    pytest.importorskip("sklearn")
    assert main(["train", "digits", "--epochs", "2", "--hidden", "16", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert "loss" in err and "test acc" in err


def test_plain_progress_without_tqdm_or_rich(monkeypatch, tmp_path, capsys):
    for name in ("tqdm", "rich", "rich.console", "rich.progress"):
        monkeypatch.setitem(sys.modules, name, None)
    X, y = blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "2", "--hidden", "8"]) == 0
    err = capsys.readouterr().err
    assert "epoch   1/2  loss" in err and "epoch   2/2" in err


def blobs(n_per_class=40, classes=3, seed=0):
    """Well-separated Gaussian clusters: any working classifier gets them all right."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, 5)) * 6
    X = np.concatenate([c + rng.standard_normal((n_per_class, 5)) for c in centers])
    y = np.repeat(np.arange(classes), n_per_class)
    return X, y


@pytest.mark.parametrize("extra", [[], ["--optimizer", "sgd", "--activation", "tanh"],
                                   ["--optimizer", "adamw", "--hidden", "", "--dropout", "0"]])
def test_own_data(tmp_path, capsys, extra):
    X, y = blobs()
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=y)
    code = main(["train", "--data", str(path), "--epochs", "20", "--lr", "0.05", "--no-progress", "--hidden", "16",
                 *extra])
    out = capsys.readouterr().out
    assert code == 0 and accuracy_of(out) == 1.0, out
    assert "blobs.npz: 96 training and 24 test samples, 5 features, 3 classes" in out


@pytest.mark.parametrize("arrays,message", [
    (dict(X=np.zeros((10, 3)), y=np.arange(9) % 2), "X has 10 rows but y has 9 labels"),
    (dict(X=np.zeros((10, 3)), y=np.full(10, 0.5)), "non-integer"),
    (dict(X=np.zeros(10), y=np.arange(10) % 2), "one row per sample"),
    (dict(features=np.zeros((10, 3)), labels=np.arange(10) % 2), "needs arrays named X and y"),
])
def test_own_data_errors(tmp_path, capsys, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["train", "--data", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "chainrule train: error:" in err and message in err


def test_usage_errors(tmp_path, capsys):
    X, y = blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "digits", "--data", str(tmp_path / "d.npz")]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0"])
    assert "positive whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--hidden", "64,x"])
    assert "hidden layer sizes" in capsys.readouterr().err


def test_diverging_training_is_explained(tmp_path, capsys):
    X, y = blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code = main(["train", "--data", str(tmp_path / "d.npz"), "--optimizer", "sgd", "--lr", "1e20",
                 "--momentum", "0", "--epochs", "3", "--no-progress"])
    assert code == 2 and "learning rate" in capsys.readouterr().err


def test_missing_scikit_learn_is_explained(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    assert main(["train", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "scikit-learn" in err and "pip install" in err


def test_bad_plot_file_is_explained(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    X, y = blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code = main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--no-progress",
                 "--plot", str(tmp_path / "curves.nosuchformat")])
    assert code == 2 and "--plot" in capsys.readouterr().err


def test_worked_example_runs(capsys):
    pytest.importorskip("sklearn")
    example = runpy.run_path(str(ROOT / "examples" / "train_digits.py"))
    accuracy = example["main"](epochs=8)
    assert accuracy >= 0.95
    assert "final test accuracy" in capsys.readouterr().out
    assert isinstance(example["cr"].nn.Linear(2, 2), nn.Module)


# ---- the convolutional network -------------------------------------------------------------------


@pytest.mark.slow  # about 15 s of CPU: CI runs it (deselect locally with -m "not slow")
def test_digits_cnn_with_default_settings_reaches_98_5_percent(tmp_path, capsys):
    pytest.importorskip("sklearn")
    saved = tmp_path / "cnn.npz"
    code = main(["train", "digits", "--model", "cnn", "--no-progress", "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert accuracy_of(out) >= 0.985, out
    assert "CNN 1×8×8 → channels 32,64 → 10" in out and "(cosine decay)" in out and "20 epochs" in out
    # the printed rebuild call makes a model that loads the file and scores the same
    assert "chainrule.train.build_cnn((1, 8, 8), 10, channels=(32, 64), dropout=0.3)" in out
    model = build_cnn((1, 8, 8), 10, channels=(32, 64), dropout=0.3).load(saved).eval()
    from chainrule import data as D

    X, y = D.load_digits()
    X_train, X_test, _, y_test = D.train_test_split(X, y, test_size=0.2, seed=np.random.default_rng(0))
    _, X_test = D.standardize(X_train, X_test)
    scores = model(X_test.reshape(-1, 1, 8, 8)).data
    assert (scores.argmax(axis=1) == y_test).mean() == pytest.approx(accuracy_of(out), abs=1e-4)


def squares(n_per_class=30, size=6, seed=0):
    """Images whose class is the quadrant holding a bright 2×2 square: a CNN gets them all right."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.1, (4 * n_per_class, size, size))
    y = np.repeat(np.arange(4), n_per_class)
    for i, c in enumerate(y):
        r0, c0 = (c // 2) * (size // 2), (c % 2) * (size // 2)
        r, q = r0 + rng.integers(0, size // 2 - 1), c0 + rng.integers(0, size // 2 - 1)
        X[i, r:r + 2, q:q + 2] += 1.0
    return X, y


@pytest.mark.parametrize("layout", ["images", "channels", "rows"])
def test_cnn_on_own_images(tmp_path, capsys, layout):
    X, y = squares()
    X = {"images": X, "channels": X[:, None], "rows": X.reshape(len(X), -1)}[layout]
    np.savez(tmp_path / "sq.npz", X=X, y=y)
    code = main(["train", "--data", str(tmp_path / "sq.npz"), "--model", "cnn", "--channels", "4", "--epochs", "8",
                 "--lr", "0.02", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1×6×6 images" in out and "CNN 1×6×6 → channels 4 → 4" in out
    assert accuracy_of(out) == 1.0, out


def test_cnn_usage_errors(tmp_path, capsys):
    X, y = blobs()  # 5 features: not an image
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--model", "cnn", "--no-progress"]) == 2
    assert "--model cnn needs images" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--channels", "8", "--no-progress"]) == 2
    assert "--channels sets the convolution stages of --model cnn" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "cnn", "--channels", "8,y"])
    assert "channel counts" in capsys.readouterr().err
    with pytest.raises(TrainError, match=r"a CNN with channels 32,64 on 3×4096×4096 images has .* GiB to train"):
        _check_cnn_size((3, 4096, 4096), (32, 64), (), 10, 64, "big")  # im2col columns of 1024 such images


def test_cnn_too_large_for_memory_is_refused_before_training(tmp_path, capsys, monkeypatch):
    X, y = squares()
    np.savez(tmp_path / "sq.npz", X=X, y=y)
    monkeypatch.setattr(train, "memory_budget", lambda: 2**20)  # a machine with 2 MiB to spare
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained a network that does not fit"))
    assert main(["train", "--data", str(tmp_path / "sq.npz"), "--model", "cnn", "--no-progress"]) == 2
    assert "GiB to train; the limit is 0.0 GiB" in capsys.readouterr().err


def test_cosine_schedule_decays_and_restores_the_learning_rate():
    X, y = blobs()
    model = build_mlp(5, (8,), 3, rng=0)
    opt = __import__("chainrule").optim.SGD(model.parameters(), lr=0.1)
    seen = []
    fit(model, opt, X, y, X, y, epochs=4, batch_size=32, seed=0, schedule="cosine",
        on_epoch=lambda epoch, h: seen.append(opt.lr))
    np.testing.assert_allclose(seen, [0.1 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    assert opt.lr == 0.1
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        fit(model, opt, X, y, X, y, epochs=1, batch_size=32, schedule="step")
