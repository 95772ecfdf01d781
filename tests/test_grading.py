"""chainrule.grading piece by piece: problems from references, submissions in the common export layouts,
scoring (partial credit, all or nothing), Gradescope's results.json, the summary's picture, and the
command line's refusals (a second run into the same folder, a resume against another key)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import grading_class
import numpy as np
import pytest

from chainrule import cli, sandbox
from chainrule.grading import Plan, discover, grade_submission, problems_from
from chainrule.grading.problems import ProblemError, assign_points
from chainrule.grading.report import histogram_svg
from chainrule.grading.submissions import Submission, choose_files

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs os.fork")


@pytest.fixture(scope="module")
def runner():
    with sandbox.Runner(sandbox.Limits(seconds=5, memory_bytes=256 << 20)) as r:
        yield r


# ---------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------


def test_expression_references_name_the_function_or_take_it_from_the_declaration():
    (p,) = problems_from(["q2a(x, y, z) = (x + y) z"], ["x=1", "y=3", "z=2"])
    assert (p.name, p.function, p.variables) == ("q2a", "q2a", ("x", "y", "z"))
    assert {k: float(v) for k, v in p.values.items()} == {"x": 1.0, "y": 3.0, "z": 2.0}
    (p,) = problems_from(["(ln(x) + sin(y))^2 + 4x"], ["x=e", "y=pi/2", "z=2"], function="q2c")
    assert p.function == "q2c" and p.variables == ("x", "y") and set(p.values) == {"x", "y", "z"}
    np.testing.assert_allclose(float(p.values["x"]), np.e)
    with pytest.raises(ProblemError, match="--function NAME"):
        problems_from(["(x + y) * z"], ["x=1", "y=3", "z=2"])
    with pytest.raises(ProblemError, match="no value for z"):
        problems_from(["q(x, y, z) = x y z"], ["x=1", "y=3"])
    with pytest.raises(ProblemError, match="no such file" if _worksheet_format() else "worksheet file format"):
        problems_from(["sheet.toml"], [])


def _worksheet_format() -> bool:
    try:
        import chainrule.worksheet.spec  # noqa: F401
    except ImportError:
        return False
    return True


def test_key_functions_give_their_defaults_as_the_given_point(tmp_path):
    key = tmp_path / "key.py"
    key.write_text(grading_class.KEY)
    probs = problems_from([f"{key}:q2a,q2b,q2c"], ["z=3"])
    assert [p.name for p in probs] == ["q2a", "q2b", "q2c"]
    assert [float(p.values["x"]) for p in probs] == [1.0, 3.0, pytest.approx(np.e)]
    assert all(float(p.values["z"]) == 3.0 for p in probs)  # --at applies to every problem with that input
    # the key written as a combined function (q2c returns out, gx, gy, gz): its output is the first value
    out = probs[2].reference_function(["z", "y", "x"])(2.0, np.pi / 2, np.e)
    assert float(np.asarray(getattr(out, "data", out))) == pytest.approx(4 + 4 * np.e)  # (ln e + sin(pi/2))^2 + 4e
    with pytest.raises(ProblemError, match="has no function 'q9'"):
        problems_from([f"{key}:q9"], [])
    with pytest.raises(ProblemError, match="not an input of any problem"):
        problems_from([f"{key}:q2a,q2b"], ["w=1"])
    with pytest.raises(ProblemError, match="name the key's functions"):
        problems_from([str(key)], [])
    pts = assign_points(probs, "q2a=2,q2c=5")
    assert [p.points for p in pts] == [2.0, 1.0, 5.0] and sum(p.points for p in assign_points(probs, "3")) == 9
    with pytest.raises(ProblemError, match="no problem named 'q3'"):
        assign_points(probs, "q3=1")


# ---------------------------------------------------------------------------------------------
# submissions
# ---------------------------------------------------------------------------------------------


def test_gradescope_export_names_the_students(tmp_path):
    root = tmp_path / "export"
    for sid, code in (("submission_101", grading_class.RIGHT), ("submission_102", "x = 1\n")):
        (root / sid / "src").mkdir(parents=True)
        (root / sid / "src" / "hw.py").write_text(code)
    (root / "submission_103").mkdir()
    (root / "submission_metadata.yml").write_text(
        "---\nsubmission_101:\n  :submitters:\n  - :name: Ada Lovelace\n    :sid: '1815'\n    :email: ada@x\n"
        "  :created_at: 2026-01-01\nsubmission_102:\n  :submitters:\n  - :name: Alan Turing\n    :sid: '1912'\n"
        "  - :name: Grace Hopper\n    :sid: '1906'\nsubmission_103:\n  :submitters:\n  - :name: Nobody\n")
    subs, skipped = discover(root, tmp_path / "staging")
    assert [(s.id, s.name) for s in subs] == [("submission_101", "Ada Lovelace"),
                                              ("submission_102", "Alan Turing, Grace Hopper")]
    assert subs[0].files[0].endswith("src/hw.py") and skipped == ["submission_103/ (Nobody): no Python file or "
                                                                  "notebook in it"]


def test_canvas_files_are_grouped_per_student_under_their_own_names(tmp_path):
    root = tmp_path / "canvas"
    root.mkdir()
    (root / "lovelaceada_1815_4001_hw.py").write_text("from helper import q2a\n")
    (root / "lovelaceada_1815_4002_helper-1.py").write_text("def q2a(x, y, z):\n    return x\n")
    (root / "turingalan_LATE_1912_4003_hw.py").write_text("def q2a(x, y, z):\n    return x\n")
    (root / "notes.txt").write_text("")
    subs, skipped = discover(root, tmp_path / "staging")
    assert [(s.id, s.late, sorted(Path(f).name for f in s.files)) for s in subs] == [
        ("lovelaceada", False, ["helper.py", "hw.py"]), ("turingalan", True, ["hw.py"])]
    assert len(skipped) == 1 and skipped[0].startswith("notes.txt")
    assert Path(choose_files(subs[0], ["q2a"])["q2a"]).name == "helper.py"


def test_one_entry_per_student_with_folders_and_notebooks(tmp_path):
    root = tmp_path / "subs"
    (root / "bob" / "work").mkdir(parents=True)
    (root / "alice.py").write_text("def q2a(x, y, z):\n    return x\n")
    (root / "bob" / "work" / "q2a.py").write_text("def q2a(x, y, z):\n    return x\n")
    (root / "bob" / "other.py").write_text("def q2b(x, y, z):\n    return x\n")
    (root / "carol.ipynb").write_text(grading_class._notebook("def q2a(x, y, z):\n    return x\n"))
    (root / "dan.zip").write_bytes(b"PK")
    (root / "erin").mkdir()
    subs, skipped = discover(root, tmp_path / "staging")
    assert [s.id for s in subs] == ["alice", "bob", "carol"]
    assert skipped == ["dan.zip: not a Python file, notebook or folder (unpack archives first)",
                       "erin/: no Python file or notebook in it"]
    chosen = choose_files(subs[1], ["q2a", "q2b", "q2c"])
    assert Path(chosen["q2a"]).name == "q2a.py" and Path(chosen["q2b"]).name == "other.py" and chosen["q2c"] is None
    staged = Path(subs[2].files[0]).read_text()
    assert "# %matplotlib inline" in staged and "# !pip list" in staged and "def q2a" in staged


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


def test_partial_credit_per_value_or_all_or_nothing(tmp_path, runner):
    path = tmp_path / "s.py"
    path.write_text(grading_class.RIGHT.replace("dz = q\n", "dz = -q\n"))
    sub = Submission("s", str(path), (str(path),))
    probs = assign_points(problems_from(["q2a(x, y, z) = (x + y) z"], ["x=1", "y=3", "z=2"]), "2")
    rec = grade_submission(sub, Plan(tuple(probs), runner.limits, random=2), runner)
    (pr,) = rec["problems"]
    assert (rec["score"], rec["max"], rec["status"]) == (1.5, 2.0, "wrong")
    assert [v["right"] for v in pr["values"]] == [True, True, True, False]
    assert pr["first_wrong_step"].startswith("dz: expected 4, got -4") and pr["wrong_at"] == "the given inputs"
    rec = grade_submission(sub, Plan(tuple(probs), runner.limits, random=2, partial=False), runner)
    assert rec["score"] == 0.0


def test_a_function_in_no_file_of_a_folder_is_not_run(tmp_path, runner):
    (tmp_path / "a.py").write_text("X = 1\n")
    (tmp_path / "b.py").write_text("Y = 2\n")
    sub = Submission("s", str(tmp_path), (str(tmp_path / "a.py"), str(tmp_path / "b.py")))
    probs = problems_from(["q2a(x, y, z) = (x + y) z"], ["x=1", "y=3", "z=2"])
    rec = grade_submission(sub, Plan(tuple(probs), runner.limits), runner)
    assert rec["problems"][0]["reason"] == "no file defines q2a (files: a.py, b.py)" and rec["score"] == 0


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def test_gradescope_results_json(tmp_path, monkeypatch, capsys):
    """Inside Gradescope's run_autograder: the submission folder is one student's; results.json has a
    test per problem (score, max_score, status, output) and the total, as Gradescope's spec asks."""
    sub = tmp_path / "submission"
    sub.mkdir()
    (sub / "hw.py").write_text(grading_class.RIGHT.replace("dy = 2 * db", "dy = db"))
    (tmp_path / "key.py").write_text(grading_class.KEY)
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    code = cli.main(["grade", "submission", "--against", "key.py:q2a,q2b", "--points", "q2a=2,q2b=3",
                     "--gradescope", "results/results.json", "--no-progress"])
    assert code == 0
    doc = json.loads((tmp_path / "results" / "results.json").read_text())
    assert doc["score"] == pytest.approx(2 + 3 * 3 / 4) and doc["stdout_visibility"] == "hidden"
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in doc["tests"]] == [
        ("q2a (q2a)", 2.0, 2.0, "passed"), ("q2b (q2b)", 2.25, 3.0, "failed")]
    assert "dy: expected 16, got 8" in doc["tests"][1]["output"]
    assert not (tmp_path / "grades").exists()  # nothing else is written inside Gradescope's container


def test_a_second_run_into_the_same_folder_must_say_resume_or_restart(tmp_path, monkeypatch, capsys):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.py").write_text(grading_class.RIGHT)
    (tmp_path / "key.py").write_text(grading_class.KEY)
    monkeypatch.chdir(tmp_path)
    base = ["grade", "subs", "--against", "key.py:q2a", "--no-progress", "-j", "1"]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "add --resume" in err and "grading 1 submission" not in err  # refused before it says it grades
    assert cli.main(base + ["--resume", "--points", "3"]) == 2
    assert "differ from those of the grades" in capsys.readouterr().err
    assert cli.main(base + ["--resume"]) == 0 and "(1 already graded)" in capsys.readouterr().out
    assert cli.main(base + ["--restart"]) == 0
    assert len(list((tmp_path / "grades").glob("results.*.jsonl"))) == 1  # the old results, kept aside


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["grade", "--help"])
    text = capsys.readouterr().out
    assert "--against key.py:q2a --at x=1 y=3 z=2 --random 5" in text and "--dask local" in text
    assert "--gradescope /autograder/results/results.json" in text


def test_histogram_is_an_svg_with_a_bar_per_score():
    svg = histogram_svg([0, 10, 10, 7.5, 9.25, 9.25, 5], 10)
    root = ET.fromstring(svg)
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.find("{http://www.w3.org/2000/svg}title")
            is not None]
    counts = [int(b.find("{http://www.w3.org/2000/svg}title").text.rsplit(": ", 1)[1]) for b in bars]
    assert len(bars) == 10 and sum(counts) == 7 and counts[-1] == 4  # 9.25, 9.25, 10, 10 in the top bin
    root = ET.fromstring(histogram_svg([0, 1, 1, 2, 3], 3))
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert titles == ["0: 1", "1: 2", "2: 1", "3: 1"]


SHEET_ANSWERS = grading_class.RIGHT + '''

def sigmoid(x):
    a = -x
    b = np.exp(a)
    c = 1 + b
    d = c ** -1
    out = d
    dd = 1.0
    dc = -1 * c ** -2 * dd
    db = dc
    da = b * db
    fx = -1 * da
    return out, fx


def complex_layer(x, y):
    s1 = 1 / (1 + np.exp(-np.sqrt(y)))
    s2 = 1 / (1 + np.exp(-(x + y) ** 2))
    out = np.log(x) * s1 / s2
    ds1 = np.log(x) / s2
    ds2 = -np.log(x) * s1 / s2 ** 2
    dt = ds2 * s2 * (1 - s2) * 2 * (x + y)
    fx = s1 / (s2 * x) + dt
    fy = ds1 * s1 * (1 - s1) / (2 * np.sqrt(y)) + dt
    return out, fx, fy
'''


def test_a_worksheet_file_grades_every_problem_that_asks_for_code(tmp_path, runner):
    """Against the seed worksheet as a file (chainrule's worksheet format): its five code problems at
    once, each as its skeleton names the function, at the worksheet's inputs."""
    pytest.importorskip("chainrule.worksheet.spec", reason="the worksheet file format is not in this installation")
    from importlib import resources

    sheet = resources.files("chainrule.worksheet") / "section2.toml"
    probs = problems_from([str(sheet)], [])
    assert [(p.name, p.function) for p in probs] == [("q2a", "q2a"), ("q2b", "q2b"), ("q2c", "q2c"),
                                                     ("q3", "sigmoid"), ("q4", "complex_layer")]
    assert float(probs[2].values["x"]) == pytest.approx(np.e) and float(probs[4].values["y"]) == 0.5
    path = tmp_path / "s.py"
    path.write_text(SHEET_ANSWERS)
    rec = grade_submission(Submission("s", str(path), (str(path),)), Plan(tuple(probs), runner.limits), runner)
    assert [(pr["problem"], pr["status"]) for pr in rec["problems"]] == [(p.name, "correct") for p in probs]
    path.write_text(SHEET_ANSWERS.replace("fx = -1 * da", "fx = da"))
    rec = grade_submission(Submission("s", str(path), (str(path),)), Plan(tuple(probs), runner.limits), runner)
    assert rec["score"] == 4.5 and rec["problems"][3]["wrong"] == ["fx: expected 0.1049935854, got -0.1049935854"]


def test_a_value_for_no_input_of_a_key_function_is_refused(tmp_path):
    key = tmp_path / "key.py"
    key.write_text(grading_class.KEY)
    with pytest.raises(ProblemError, match="--at w: not an input of any problem"):
        problems_from([f"{key}:q2a"], ["w=1"])
