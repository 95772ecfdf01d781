"""``chainrule worksheet``: the whole seed worksheet solved into a report, checked end to end against
the worksheet's hand-derived numbers, closed forms and central differences."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from chainrule import cli

SIG2 = 1 / (1 + math.exp(-2.0))
DSIG2 = SIG2 * (1 - SIG2)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "chainrule", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)\n```", markdown, flags=re.S)


def define(source: str, name: str):
    ns: dict = {}
    exec(source, ns)  # chainrule's generated answer key, run as a learner would run it
    return ns[name]


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("ws")
    res = run("worksheet", "--out", "answers/", cwd=cwd)
    return cwd / "answers", res


def test_summary_prints_the_answers(solved) -> None:
    folder, res = solved
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "out = 8, fx = 2, fy = 2, fz = 4" in out
    assert "out = 88, hx = 48, hy = 16, hz = 132" in out
    m = re.search(r"out = ([\d.]+), gx = ([\d.]+), gy = ([-\d.e]+), gz = 0", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(4 + 4 * math.e, abs=1e-4)
    assert float(m.group(2)) == pytest.approx(4 / math.e + 4, abs=1e-4)
    assert float(m.group(3)) == pytest.approx(0, abs=1e-6)
    grad = float(re.search(r"Q3 ∂σ/∂x at x = 2\s+([\d.]+)", out).group(1))
    assert grad == pytest.approx(DSIG2, abs=1e-6) and round(grad, 3) == 0.105
    x1 = float(re.search(r"Q3 x after one step of 0.2\s+([\d.]+)", out).group(1))
    assert x1 == pytest.approx(2 - 0.2 * DSIG2, abs=1e-5) and round(x1, 3) == 1.979
    assert "worksheet.md" in out


def test_report_has_every_question(solved) -> None:
    folder, _ = solved
    md = (folder / "worksheet.md").read_text()
    for heading in ("1. Compute and Conquer", "2. Oh, node way!", "3. Sigmoid Shenanigans",
                    "4. A Backprop a Day Keeps the Derivative Away"):
        assert f"## {heading}" in md
    # Q1: the staged forms, one operation per equation
    assert "t1 = x + y\nout = t1 * z" in md
    assert "t1 = ln(x)\nt2 = sin(y)" in md
    # Q3 split as the worksheet does it
    assert "a = -x" in md and "b = exp(a)" in md and "c = 1 + b" in md
    # pictures beside the report (or, without a renderer, DOT in it)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    if images:
        assert len(images) == 5
        for name in images:
            assert (folder / name).read_bytes()[:5] in (b"<?xml", b"<svg ")
    else:
        assert md.count("```dot") == 5


def test_generated_functions_are_right(solved) -> None:
    folder, _ = solved
    blocks = code_blocks((folder / "worksheet.md").read_text(), "python")
    by_name = {re.findall(r"^def ([a-z]\w*)\(", b, flags=re.M)[-1]: b for b in blocks}
    assert set(by_name) == {"q2a", "q2b", "q2c", "sigmoid", "complex_layer"}
    x, y, z = np.array([1.0, 3.0, 0.7]), np.array([3.0, 1.0, 1.9]), np.array([2.0, 2.0, 0.4])
    out, fx, fy, fz = define(by_name["q2a"], "q2a")(x, y, z)
    np.testing.assert_allclose([out, fx, fy, fz], [(x + y) * z, z, z, x + y])
    out, hx, hy, hz = define(by_name["q2b"], "q2b")(x, y, z)
    np.testing.assert_allclose([out, hx, hy, hz],
                               [(x ** 2 + 2 * y) * z ** 3, 2 * x * z ** 3, 2 * z ** 3, 3 * (x ** 2 + 2 * y) * z ** 2])
    out, gx, gy, gz = define(by_name["q2c"], "q2c")(x, y, z)
    s = np.log(x) + np.sin(y)
    np.testing.assert_allclose([out, gx, gy, gz], [s ** 2 + 4 * x, 2 * s / x + 4, 2 * s * np.cos(y), 0 * z])
    out, fx = define(by_name["sigmoid"], "sigmoid")(np.array([2.0, -1.0]))
    sig = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    np.testing.assert_allclose([out, fx], [sig, sig * (1 - sig)])
    assert fx[0] == pytest.approx(DSIG2)


def test_complex_layer_against_central_differences(solved) -> None:
    folder, _ = solved
    blocks = code_blocks((folder / "worksheet.md").read_text(), "python")
    fn = define(next(b for b in blocks if "def complex_layer" in b), "complex_layer")

    def f(x, y):
        sig = lambda v: 1 / (1 + np.exp(-v))
        return np.log(x) * sig(np.sqrt(y)) / sig((x + y) ** 2)

    x, y = np.array([1.5, 0.8, 2.5]), np.array([0.5, 1.2, 0.1])
    out, fx, fy = fn(x, y)
    eps = 1e-6
    np.testing.assert_allclose(out, f(x, y))
    np.testing.assert_allclose(fx, (f(x + eps, y) - f(x - eps, y)) / (2 * eps), rtol=1e-6)
    np.testing.assert_allclose(fy, (f(x, y + eps) - f(x, y - eps)) / (2 * eps), rtol=1e-6)


def test_html_report_and_png_pictures(tmp_path: Path) -> None:
    res = run("worksheet", "--out", "ans", "--format", "html", "--pictures", "png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "ans" / "worksheet.html").read_text()

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.imgs: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "img":
                self.imgs.append(dict(attrs)["src"])

    c = Collect()
    c.feed(page)
    assert c.tags.count("h2") == 4 and "pre" in c.tags and "table" in c.tags
    if "could not be drawn" not in page:
        assert c.imgs == ["q2a.png", "q2b.png", "q2c.png", "q3.png", "q4.png"]
        for name in c.imgs:
            assert (tmp_path / "ans" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "def q2a(x, y, z):" in page and "1.979" in page


def test_json_summary(tmp_path: Path) -> None:
    res = run("worksheet", "--out", "a", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True
    assert doc["answers"]["q2a"] == {"out": 8.0, "fx": 2.0, "fy": 2.0, "fz": 4.0}
    assert doc["answers"]["q2b"] == {"out": 88.0, "hx": 48.0, "hy": 16.0, "hz": 132.0}
    assert doc["answers"]["q3"]["gradient"] == pytest.approx(DSIG2)
    assert doc["answers"]["q3"]["expanded_gradient"] == pytest.approx(DSIG2)
    assert doc["answers"]["q3"]["x_after_step"] == pytest.approx(2 - 0.2 * DSIG2)
    assert doc["report"].endswith("worksheet.md")


def test_without_graphviz_the_report_holds_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from chainrule import render

    def no_engine(*args, **kwargs):
        raise render.RenderError("drawing a graph needs a Graphviz layout program")

    monkeypatch.setattr(render, "find_engine", no_engine)
    monkeypatch.setattr(render, "layout", no_engine)
    assert cli.main(["worksheet", "--out", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "pictures could not be rendered" in out and "DOT" in out
    md = (tmp_path / "w" / "worksheet.md").read_text()
    assert md.count("```dot") == 5 and "could not be drawn" in md
    assert sorted(p.name for p in (tmp_path / "w").glob("*.dot")) == ["q2a.dot", "q2b.dot", "q2c.dot", "q3.dot",
                                                                      "q4.dot"]
    assert not list((tmp_path / "w").glob("*.svg"))
    assert "out = 8, fx = 2, fy = 2, fz = 4" in out  # the answers are all still there


def test_out_that_is_a_file_is_one_clear_message(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("not a folder")
    for target in (str(tmp_path / "afile"), str(tmp_path / "afile" / "sub")):
        assert cli.main(["worksheet", "--out", target]) == 2
        err = capsys.readouterr().err
        assert f"--out {target}: " in err and "exists and is not a directory" in err
        assert "FileExistsError" not in err and "Errno" not in err
    assert (tmp_path / "afile").read_text() == "not a folder"  # nothing written over it
