"""A second worksheet, ``examples/cs231n_backprop.toml`` (the CS231n notes' sigmoid neuron and staged
example), solved from the command line into a key, a blank handout and three variants; every key's
answers and code checked against ``cr.value_and_grad`` of the functions written here, and the
original against the numbers printed in the notes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr

EXAMPLE = Path(__file__).parent.parent / "examples" / "cs231n_backprop.toml"


def neuron(w0, x0, w1, x1, w2):
    return cr.sigmoid(w0 * x0 + w1 * x1 + w2)


def staged(x, y):
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return (x + sig(y)) / (sig(x) + (x + y) ** 2)


FUNCTIONS = {"neuron": neuron, "staged": staged}


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cs231n") / "key"
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    res = subprocess.run([sys.executable, "-m", "chainrule", "worksheet", str(EXAMPLE), "--out", str(out), "--blank",
                          "--variants", "3", "--seed", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    return out


def keys(folder: Path) -> list[Path]:
    return [folder, *(folder / f"variant-{k}" for k in (1, 2, 3))]


def test_key_blank_and_three_variants(solved: Path) -> None:
    for folder in keys(solved):
        for name in ("worksheet.md", "worksheet-blank.md", "answers.json", "neuron.svg", "staged-blank.svg"):
            assert (folder / name).exists(), folder / name
    inputs = [json.dumps(json.loads((f / "answers.json").read_text())["answers"]["neuron"]["inputs"])
              for f in keys(solved)]
    assert len(set(inputs)) == 4  # every variant has inputs of its own
    variant = json.loads((solved / "variant-2" / "answers.json").read_text())
    assert variant["variant"] == 2 and "variant 2 (seed 1)" in variant["source"]


def test_the_notes_numbers(solved: Path) -> None:
    answers = json.loads((solved / "answers.json").read_text())["answers"]
    s = answers["staged"]["values"]
    assert s["f"] == pytest.approx(1.5456448841, abs=1e-10)
    assert s["dx"] == pytest.approx(2.0595697956, abs=1e-10)
    assert s["dy"] == pytest.approx(1.5922327515, abs=1e-10)
    n = answers["neuron"]["values"]  # 0.73 forward; dx = [0.39, -0.59], dw = [-0.20, -0.39, 0.20]
    assert [round(n[k], 2) for k in ("out", "dx0", "dx1", "dw0", "dw1", "dw2")] == [0.73, 0.39, -0.59, -0.2,
                                                                                     -0.39, 0.2]
    assert answers["staged"]["staged"][:4] == ["t1 = -y", "t2 = exp(t1)", "t3 = 1 + t2", "sigy = 1 / t3"]


@pytest.mark.parametrize("which", ["original", "variant-1", "variant-2", "variant-3"])
def test_each_key_against_value_and_grad(solved: Path, which: str) -> None:
    folder = solved if which == "original" else solved / which
    answers = json.loads((folder / "answers.json").read_text())["answers"]
    md = (folder / "worksheet.md").read_text()
    blocks = re.findall(r"```python\n(.*?)\n```", md, flags=re.S)
    for pid, fn in FUNCTIONS.items():
        entry = answers[pid]
        args = [float(v) for v in entry["inputs"].values()]
        out, grads = cr.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
        want = [float(np.asarray(getattr(out, "data", out))), *map(float, grads)]
        np.testing.assert_allclose(list(entry["values"].values()), want, rtol=1e-12, atol=1e-15)
        # and the key's own code, run under the skeleton's names
        name = entry["code"]["name"]
        src = next(b for b in blocks if f"def {name}(" in b)
        ns: dict = {}
        exec(src, ns)  # chainrule's generated key
        np.testing.assert_allclose(ns[name](*map(np.float64, args)), want, rtol=1e-12, atol=1e-15)
        assert entry["code"]["checked"] is True
    # the descent on the weights only: w ← w − 0.5·∂f/∂w
    n = answers["neuron"]
    after = n["descent"]["after"]
    for w in ("w0", "w1", "w2"):
        assert after[w] == pytest.approx(float(n["inputs"][w]) - 0.5 * n["values"][f"d{w}"], rel=1e-12)
    for x in ("x0", "x1"):
        assert after[x] == float(n["inputs"][x])


def test_the_handout_asks_without_answering(solved: Path) -> None:
    blank = (solved / "worksheet-blank.md").read_text()
    assert "def neuron(w0, x0, w1, x1, w2):" in blank and "return out, dw0, dx0, dw1, dx1, dw2" in blank
    assert "def sigmoid(x):\n    return 1 / (1 + np.exp(-x))" in blank  # the provided helper
    assert "def f_staged(x, y):" in blank and "return f, dx, dy" in blank
    assert "0.731059" not in blank and "1.54564" not in blank and "dt1" not in blank
    assert "Write down the local gradient of each gate you meet below." in blank
