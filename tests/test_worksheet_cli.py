"""``chainrule worksheet``: the seed worksheet (shipped as a TOML file) solved through the general path
into a key, checked against the worksheet's hand-derived numbers, closed forms and central
differences; every code block of the key run under the skeleton's names; the HTML self-contained;
the golden key. Regenerate the golden files with ``CHAINRULE_UPDATE_GOLDEN=1`` and read the diff."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from chainrule import cli

SIG2 = 1 / (1 + math.exp(-2.0))
DSIG2 = SIG2 * (1 - SIG2)
GOLDEN = Path(__file__).parent / "golden"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "chainrule", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)\n```", markdown, flags=re.S)


def define(source: str, name: str):
    ns: dict = {}
    exec(source, ns)  # chainrule's generated answer key, run as a learner would run it
    return ns[name]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CHAINRULE_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden text"


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("ws")
    res = run("worksheet", "--out", "answers/", "--blank", cwd=cwd)
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
    grad = float(re.search(r"q3 at x = 2\s+out = [\d.]+, fx = ([\d.]+)", out).group(1))
    assert grad == pytest.approx(DSIG2, abs=1e-6) and round(grad, 3) == 0.105
    x1 = float(re.search(r"q3 x after 1 step of 0.2\s+([\d.]+)", out).group(1))
    assert x1 == pytest.approx(2 - 0.2 * DSIG2, abs=1e-5) and round(x1, 3) == 1.979
    assert "worksheet.md" in out and "worksheet-blank.md" in out


def test_the_seed_worksheet_is_a_file_solved_by_the_general_path(tmp_path: Path) -> None:
    """`chainrule worksheet` and `chainrule worksheet <the shipped file>` write the same key."""
    from chainrule.worksheet import SEED

    assert SEED.suffix == ".toml" and "[[section.problem]]" in SEED.read_text()
    res = run("worksheet", str(SEED), "--out", "k", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = run("worksheet", "--out", "d", cwd=tmp_path)
    key_file, key_default = ((tmp_path / d / "worksheet.md").read_text() for d in ("k", "d"))
    assert key_file.replace(f"`{SEED}`", "`section2.toml`") == key_default


def test_report_has_every_question(solved) -> None:
    folder, _ = solved
    md = (folder / "worksheet.md").read_text()
    for heading in ("0. Reference Material", "Common Gates", "1. Compute and Conquer", "2. Oh, node way!",
                    "3. Sigmoid Shenanigans", "4. A Backprop a Day Keeps the Derivative Away"):
        assert f"## {heading}" in md
    # Q1: the staged forms, one operation per equation
    assert "t1 = x + y\nout = t1 * z" in md
    assert "t1 = ln(x)\nt2 = sin(y)" in md
    # Q3 split as the worksheet does it, and the sigmoid gate's own rule recognized
    assert "a = -x\nb = exp(a)\nc = 1 + b\nd = c ** -1" in md
    assert "These stages compute the sigmoid gate" in md and "σ(x)·(1 − σ(x)) = 0.104994" in md
    # the common gates, from the gate table's explanations
    for phrase in ("distributes the upstream gradient unchanged", "swaps its inputs", "routes the gradient to "
                   "the larger input", "the gradients from each use add up"):
        assert phrase in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 5 + 16  # the five problems' graphs and one per common gate
    for name in images:
        assert (folder / name).read_bytes()[:5] in (b"<?xml", b"<svg ")


def test_golden_key_and_handout(solved) -> None:
    folder, _ = solved
    check_golden("section2_key.md", (folder / "worksheet.md").read_text())
    check_golden("section2_blank.md", (folder / "worksheet-blank.md").read_text())


def test_every_code_block_returns_the_worksheets_values_under_the_skeletons_names(solved) -> None:
    folder, _ = solved
    answers = json.loads((folder / "answers.json").read_text())["answers"]
    blocks = code_blocks((folder / "worksheet.md").read_text(), "python")
    by_name = {re.findall(r"^def ([a-z]\w*)\(", b, flags=re.M)[-1]: b for b in blocks}
    assert set(by_name) == {"q2a", "q2b", "q2c", "sigmoid", "complex_layer"}
    # each skeleton's signature and return line, word for word as the worksheet prints them
    for pid, name, signature, ret in [("q2a", "q2a", "q2a(x, y, z)", "out, fx, fy, fz"),
                                      ("q2b", "q2b", "q2b(x, y, z)", "out, hx, hy, hz"),
                                      ("q2c", "q2c", "q2c(x, y, z)", "out, gx, gy, gz"),
                                      ("q3", "sigmoid", "sigmoid(x)", "out, fx"),
                                      ("q4", "complex_layer", "complex_layer(x, y)", "out, fx, fy")]:
        src = by_name[name]
        assert f"def {signature}:" in src and src.rstrip().endswith(f"return {ret}")
        entry = answers[pid]
        args = [np.float64(eval_value(entry["inputs"][v])) for v in entry["inputs"]]
        got = define(src, name)(*args)
        assert list(entry["values"]) == ret.split(", ")
        np.testing.assert_allclose(got, list(entry["values"].values()), rtol=1e-12, atol=1e-15)
    # Q3: the provided forward pass, then fx; Q4 calls the worksheet's own sigmoid helper
    assert "    d = c ** -1\n    out = d\n" in by_name["sigmoid"]
    q4 = by_name["complex_layer"]
    assert "def sigmoid(x):\n    return 1 / (1 + np.exp(-x))" in q4
    assert "t3 = sigmoid(t2)" in q4 and "_sigmoid" not in q4


def eval_value(text: str) -> float:
    return {"e": math.e, "pi/2": math.pi / 2}.get(text, None) or float(text)


def test_generated_functions_against_closed_forms(solved) -> None:
    folder, _ = solved
    blocks = code_blocks((folder / "worksheet.md").read_text(), "python")
    by_name = {re.findall(r"^def ([a-z]\w*)\(", b, flags=re.M)[-1]: b for b in blocks}
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
        sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        return np.log(x) * sig(np.sqrt(y)) / sig((x + y) ** 2)

    x, y = np.array([1.5, 0.8, 2.5]), np.array([0.5, 1.2, 0.1])
    out, fx, fy = fn(x, y)
    eps = 1e-6
    np.testing.assert_allclose(out, f(x, y))
    np.testing.assert_allclose(fx, (f(x + eps, y) - f(x - eps, y)) / (2 * eps), rtol=1e-6)
    np.testing.assert_allclose(fy, (f(x, y + eps) - f(x, y - eps)) / (2 * eps), rtol=1e-6)


def test_blank_handout_has_questions_skeletons_and_empty_graphs(solved) -> None:
    folder, _ = solved
    md = (folder / "worksheet-blank.md").read_text()
    assert "Feel free to take notes on the common backprop gates here." in md
    assert "answer key" not in md and "0.104994" not in md and "1.979" not in md
    skeletons = code_blocks(md, "python")
    assert len(skeletons) == 5
    q2a = next(b for b in skeletons if "def q2a" in b)
    assert q2a.rstrip().endswith("return out, fx, fy, fz") and "dt1" not in q2a
    q3 = next(b for b in skeletons if "def sigmoid" in b)
    assert "    a = -x\n    b = np.exp(a)\n    c = 1 + b\n    d = c ** -1\n    out = d\n" in q3  # given
    assert "fx =" not in q3 and q3.rstrip().endswith("return out, fx")
    q4 = next(b for b in skeletons if "def complex_layer" in b)
    assert "def sigmoid(x):\n    return 1 / (1 + np.exp(-x))" in q4 and "t1 =" not in q4
    # the empty graphs: every node, no numbers
    for pid in ("q2a", "q2b", "q2c", "q3", "q4"):
        svg = (folder / f"{pid}-blank.svg").read_text()
        texts = [t for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg) if t.strip()]
        assert re.search(r'id="node-(x|t1|a)"', svg.replace("&#45;", "-"))
        numbers = [t for t in texts if re.fullmatch(r"[-\d.&#;]+", t)]
        constants = re.findall(r'id="const-\d+"', svg.replace("&#45;", "-"))
        assert len(numbers) == len(constants), (pid, numbers)  # only the function's own constants


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    res = run("worksheet", "--out", "ans", "--format", "html", "--pictures", "png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "ans").iterdir()) == ["answers.json", "worksheet.html"]
    page = (tmp_path / "ans" / "worksheet.html").read_text()

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.links: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            for k, v in attrs:
                if k in ("src", "href") or (k == "xlink:href"):
                    self.links.append(v)

    c = Collect()
    c.feed(page)
    assert c.tags.count("h2") == 6 and "pre" in c.tags and "table" in c.tags
    assert c.links and all(link.startswith("data:image/png;base64,") for link in c.links)
    assert c.tags.count("img") == 5 + 16
    assert "def q2a(x, y, z):" in page and "1.979" in page
    svg = run("worksheet", "--out", "svg", "--format", "html", cwd=tmp_path)
    assert svg.returncode == 0, svg.stderr
    page = (tmp_path / "svg" / "worksheet.html").read_text()
    assert page.count("<svg") == 5 + 16 and "<img" not in page and "<?xml" not in page
    assert 'src="' not in page and "http://www.w3.org" in page  # namespaces only, nothing fetched


def test_common_gates_cards_keep_their_pictures_inside(tmp_path: Path) -> None:
    """In a browser at 1000 px (and a phone's 420 px) every Common Gates card holds its picture and
    equations inside its border, and the page has no horizontal scrollbar (a screenshot is kept)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install 'chainrule[e2e]'")
    chromium = os.environ.get("CHAINRULE_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.exists(chromium) or shutil.which(chromium)):
        pytest.skip(f"needs Chromium at {chromium}")
    from chainrule.worksheet import solve_worksheet

    page_path = solve_worksheet(tmp_path, formats=("html",)).report
    shots = Path(__file__).resolve().parent.parent / "test-output" / "worksheet"
    shots.mkdir(parents=True, exist_ok=True)
    measure = """() => {
      const out = [];
      for (const card of document.querySelectorAll('.gate')) {
        const box = card.getBoundingClientRect();
        for (const c of card.querySelectorAll('svg, img, .math, p, h4')) {
          const r = c.getBoundingClientRect();
          if (r.right > box.right + 0.5 || r.left < box.left - 0.5) out.push(card.querySelector('h4').textContent);
        }
      }
      return {outside: out, cards: document.querySelectorAll('.gate').length,
              page: document.documentElement.scrollWidth - document.documentElement.clientWidth};
    }"""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width in (1000, 420):
                tab = browser.new_page(viewport={"width": width, "height": 900})
                tab.goto(page_path.as_uri())
                found = tab.evaluate(measure)
                tab.query_selector(".gallery").screenshot(path=str(shots / f"common-gates-{width}.png"))
                assert found["cards"] == 16 and found["outside"] == [] and found["page"] == 0, (width, found)
        finally:
            browser.close()


def test_json_summary(tmp_path: Path) -> None:
    res = run("worksheet", "--out", "a", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True
    assert doc["answers"]["q2a"]["values"] == {"out": 8.0, "fx": 2.0, "fy": 2.0, "fz": 4.0}
    assert doc["answers"]["q2b"]["values"] == {"out": 88.0, "hx": 48.0, "hy": 16.0, "hz": 132.0}
    assert doc["answers"]["q3"]["values"]["fx"] == pytest.approx(DSIG2)
    assert doc["answers"]["q3"]["descent"]["after"]["x"] == pytest.approx(2 - 0.2 * DSIG2)
    assert doc["answers"]["q1b"]["staged"][-1] == "out = t3 * t4"
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
    dots = sorted(p.name for p in (tmp_path / "w").glob("*.dot"))
    assert dots[-5:] == ["q2a.dot", "q2b.dot", "q2c.dot", "q3.dot", "q4.dot"] and len(dots) == 5 + 16
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


def test_bad_worksheet_file_and_format_are_one_message(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "t"\n[[section]]\ntitle = "s"\n[[section.problem]]\nid = "p"\nfunction = "x +"\n')
    assert cli.main(["worksheet", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: section 's', problem p: the function cannot be read" in err and "Traceback" not in err
    assert cli.main(["worksheet", "--out", str(tmp_path / "o"), "--format", "md,docx"]) == 2
    assert "--format docx: choose among md, html, tex, pdf" in capsys.readouterr().err
    assert cli.main(["worksheet", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err


@pytest.mark.skipif(not any(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium to print the PDF")
def test_pdf_key_and_handout_printed_by_chromium(tmp_path: Path) -> None:
    from chainrule.worksheet import solve_worksheet

    res = solve_worksheet(tmp_path, formats=("html", "pdf"), blank=True, pdf_engine="chromium")
    for name in ("worksheet.pdf", "worksheet-blank.pdf"):
        pdf = (tmp_path / name).read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 20_000
    assert res.report.name == "worksheet.html"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_no_pdf_program_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from chainrule.worksheet import pdf

    monkeypatch.setattr(pdf.shutil, "which", lambda name: None)
    assert cli.main(["worksheet", "--out", str(tmp_path / "o"), "--format", "pdf"]) == 1
    err = capsys.readouterr().err
    assert "a PDF needs Chromium" in err and "--format html,tex" in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine to print the PDF")
def test_pdf_printed_by_latex(tmp_path: Path) -> None:
    from chainrule.worksheet import solve_worksheet

    solve_worksheet(tmp_path, formats=("pdf",), pdf_engine="latex", exact=False)
    assert (tmp_path / "worksheet.pdf").read_bytes().startswith(b"%PDF-")


@pytest.mark.skipif(shutil.which("lualatex") is None, reason="lualatex is not installed")
def test_pdf_engine_by_name(tmp_path: Path) -> None:
    """--pdf-engine lualatex is the README's word: the PDF is LuaTeX's (its producer says so)."""
    assert cli.main(["worksheet", "--out", str(tmp_path), "--format", "pdf", "--pdf-engine", "lualatex"]) == 0
    pdf_bytes = (tmp_path / "worksheet.pdf").read_bytes()
    assert pdf_bytes.startswith(b"%PDF-") and b"LuaTeX" in pdf_bytes


def test_pdf_engines_named_and_missing(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from chainrule.worksheet import pdf

    installed = ("xelatex", "tectonic")
    monkeypatch.setattr(pdf.shutil, "which", lambda name: f"/opt/tex/{name}" if name in installed else None)
    assert pdf.find_pdf_engine("xelatex") == ("latex", "/opt/tex/xelatex")
    assert pdf.find_pdf_engine("latex") == ("latex", "/opt/tex/xelatex")  # the first TeX engine installed
    assert pdf.find_pdf_engine(None) == ("latex", "/opt/tex/xelatex")  # no Chromium here
    with pytest.raises(pdf.PdfError, match="--pdf-engine lualatex needs lualatex"):
        pdf.find_pdf_engine("lualatex")
    with pytest.raises(ValueError, match="one of chromium, latex, pdflatex"):
        pdf.find_pdf_engine("word")
    parser = cli.build_parser()
    worksheet = next(a for a in parser._subparsers._group_actions[0].choices["worksheet"]._actions
                     if a.dest == "pdf_engine")
    assert tuple(worksheet.choices) == pdf.ENGINES  # the command line offers what the module takes
