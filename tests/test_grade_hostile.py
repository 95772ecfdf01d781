"""``chainrule grade`` against hostile submissions: one that kills or stops its runner, rewrites another
student's file, or forges records for ``--resume`` never stops the batch nor changes another grade
unnoticed. Each runs with and without Landlock (CHAINRULE_NO_LANDLOCK) where both matter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grading_class
import pytest

from chainrule import cli, landlock
from chainrule.grading.batch import read_results

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs os.fork")

KEY = "def q2a(x=1.0, y=3.0, z=2.0):\n    return (x + y) * z\n"
RIGHT = "def q2a(x, y, z):\n    s = x + y\n    return s * z, z, z, s\n"
WRONG_DY = "def q2a(x, y, z):\n    q = x + y\n    dq = z\n    return q * z, dq, 2 * dq, q\n"
FIND_GRADER = """
import os
def _grader():  # the nearest ancestor working in the folder that holds subs/
    pid = os.getppid()
    for _ in range(6):
        cwd = os.readlink(f"/proc/{pid}/cwd")
        if os.path.isdir(os.path.join(cwd, "subs")):
            return pid, cwd
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
"""


def _class(tmp_path: Path, files: dict[str, str]) -> list[str]:
    (tmp_path / "key.py").write_text(KEY)
    (tmp_path / "subs").mkdir()
    for name, text in files.items():
        (tmp_path / "subs" / name).write_text(text)
    return ["grade", "subs", "--against", "key.py:q2a", "--random", "1", "-j", "1", "--timeout", "3", "--out",
            "out", "--no-progress"]


def _rows(tmp_path: Path) -> dict[str, list[str]]:
    import csv

    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        return {r[0]: r[2:5] for r in list(csv.reader(fh))[1:]}


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"])
@pytest.mark.parametrize("confined", [True, False])
def test_a_submission_that_kills_or_stops_its_runner_scores_0_and_the_batch_goes_on(tmp_path, monkeypatch,
                                                                                    capsys, sig, confined):
    if not confined:
        monkeypatch.setenv("CHAINRULE_NO_LANDLOCK", "1")
    elif landlock.abi() < 6:
        pytest.skip("signal scoping needs Landlock ABI 6 (Linux >= 6.12)")
    killer = f"import os, signal\nos.kill(os.getppid(), signal.{sig})\n" + RIGHT
    monkeypatch.chdir(tmp_path)
    assert cli.main(_class(tmp_path, {"a.py": RIGHT, "m_killer.py": killer, "z.py": RIGHT})) == 0
    rows = _rows(tmp_path)
    assert rows["a"] == rows["z"] == ["1", "1", "correct"]
    assert rows["m_killer"][:2] == ["0", "1"] and rows["m_killer"][2] == "failed"
    rec = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}["m_killer"]
    reason = rec["problems"][0]["reason"]
    if confined:  # the kernel refused the signal: the import raised
        assert "PermissionError" in reason
    else:
        assert reason.startswith(("killed the grader's process", "stopped the grader's process")), reason


@pytest.mark.parametrize("confined", [True, False])
def test_a_submission_that_rewrites_another_students_file_does_not_change_its_grade_unnoticed(
        tmp_path, monkeypatch, capsys, confined):
    if not confined:
        monkeypatch.setenv("CHAINRULE_NO_LANDLOCK", "1")
    elif landlock.abi() < 1:
        pytest.skip("needs Landlock (Linux >= 5.13)")
    mallory = FIND_GRADER + """
try:
    _, cwd = _grader()
    open(os.path.join(cwd, "subs", "alice.py"), "w").write("def q2a(x, y, z):\\n    return 0, 0, 0, 0\\n")
except OSError:
    pass
""" + RIGHT
    monkeypatch.chdir(tmp_path)
    assert cli.main(_class(tmp_path, {"aaa_mallory.py": mallory, "alice.py": RIGHT})) == 0
    rows = _rows(tmp_path)
    if confined:
        assert (tmp_path / "subs" / "alice.py").read_text() == RIGHT
        assert rows["alice"] == ["1", "1", "correct"]
    else:  # it could write the file: alice's grade is not given from it, and says why
        assert rows["alice"][2] == "failed"
        rec = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}["alice"]
        assert rec["problems"][0]["reason"].startswith("its files changed after grading began")


def test_resume_refuses_records_not_bound_to_the_files_graded(tmp_path, monkeypatch, capsys):
    """A forged record (copied from a correct one, renamed) and a record for no submission are not used:
    the submission is graded again."""
    monkeypatch.chdir(tmp_path)
    cmd = _class(tmp_path, {"alice.py": RIGHT, "zed.py": WRONG_DY})
    assert cli.main(cmd) == 0
    results = tmp_path / "out" / "results.jsonl"
    good = next(r for r in read_results(results) if r["id"] == "alice")
    forged = [{**good, "id": "zed"}, {**good, "id": "ghost"}]
    with open(results, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in forged))
    capsys.readouterr()
    assert cli.main(cmd + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "did not use the record of zed: its record was not made from these files" in err
    assert "did not use the record of ghost: no such submission" in err
    assert _rows(tmp_path) == {"alice": ["1", "1", "correct"], "zed": ["0.75", "1", "wrong"]}


def test_a_submission_during_which_the_grader_died_twice_is_not_run_again(tmp_path, monkeypatch, capsys):
    """Where Landlock does not stop it, a submission can kill the grader itself: each --resume would
    run it again and die. After two starts without a record it fails with that reason instead."""
    monkeypatch.setenv("CHAINRULE_NO_LANDLOCK", "1")
    killer = FIND_GRADER + "import signal\nos.kill(_grader()[0], signal.SIGKILL)\n" + RIGHT
    monkeypatch.chdir(tmp_path)
    cmd = _class(tmp_path, {"alice.py": RIGHT, "mallory.py": killer})
    import subprocess
    import sys

    src = str(Path(cli.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "chainrule", *cmd, "--resume"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == -9, done.stderr
    assert cli.main(cmd + ["--resume"]) == 0
    rows = _rows(tmp_path)
    assert rows == {"alice": ["1", "1", "correct"], "mallory": ["0", "1", "failed"]}
    rec = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}["mallory"]
    assert rec["problems"][0]["reason"].startswith("the grading process ended twice while this submission ran")


def test_statuses_and_counts_agree_and_two_files_defining_a_function_are_noted(tmp_path, monkeypatch, capsys):
    """A submission that returned wrong values is 'wrong' even when another of its functions did not run;
    the summary line counts as the per-problem table does; dave's a.py and b.py both define q2a: the
    file graded is named, on stderr, in the CSV and on his page."""
    (tmp_path / "key.py").write_text(grading_class.KEY)
    subs = tmp_path / "subs"
    (subs / "dave").mkdir(parents=True)
    (subs / "dave" / "a.py").write_text(RIGHT)
    (subs / "dave" / "b.py").write_text(WRONG_DY)
    (subs / "bob.py").write_text(WRONG_DY)   # q2a wrong, q2b missing
    monkeypatch.chdir(tmp_path)
    assert cli.main(["grade", "subs", "--against", "key.py:q2a,q2b", "--random", "1", "-j", "1", "--out", "out",
                     "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "0 all correct, 1 with wrong values, 2 with a function that did not run" in out
    rows = _rows(tmp_path)
    assert rows["bob"][2] == "wrong" and rows["dave"][2] == "failed"
    note = "q2a is defined in 2 files (a.py, b.py): graded a.py"
    assert f"dave: {note}" in err
    assert note in (tmp_path / "out" / "results.csv").read_text()
    assert note in (tmp_path / "out" / "feedback" / "dave.md").read_text()
