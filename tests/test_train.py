"""``chainrule train`` end to end (digits and the user's own .npz), its errors, and the worked example."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from chainrule import nn
from chainrule.cli import main
from chainrule.train import build_mlp

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
