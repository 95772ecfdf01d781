"""``chainrule grade`` on a class of 40 generated submissions (tests/grading_class.py): every one gets the
score and reason worked out by hand, with ``-j 2`` and with ``--dask local``; a batch killed halfway
and resumed writes the same results.csv as one never interrupted; Ctrl-C stops the running children."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grading_class
import pytest

from chainrule import cli
from chainrule.grading.batch import read_results

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs os.fork")

SRC = str(Path(cli.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    subs, expect = grading_class.write(folder)
    return folder, subs, expect


def _grade(folder: Path, out: str, *extra: str) -> int:
    old = os.getcwd()
    os.chdir(folder)
    try:
        return cli.main(["grade", "submissions", *grading_class.ARGS, "--out", out, "--no-progress", *extra])
    finally:
        os.chdir(old)


def _check_class(grades: Path, expect: dict[str, grading_class.Expect]) -> None:
    records = {json.loads(line)["id"]: json.loads(line) for line in (grades / "results.jsonl").read_text().splitlines()}
    assert sorted(records) == sorted(expect)
    for sid, e in expect.items():
        rec = records[sid]
        got = {pr["problem"]: pr for pr in rec["problems"]}
        for name, (score, status, fragment) in e.problems.items():
            pr = got[name]
            hay = " ".join([pr["feedback"], pr["report"], str(pr["reason"]),
                            " ".join(v["name"] for v in pr["values"] if not v["right"])])
            assert (pr["score"], pr["status"]) == (pytest.approx(score), status), (sid, name, pr["feedback"])
            assert fragment in hay, (sid, name, fragment, hay)
        assert rec["score"] == pytest.approx(e.score), sid
        want = "correct" if e.score == 10 else ("failed" if any(s == "failed" for _, s, _ in e.problems.values())
                                                 else "wrong")
        assert rec["status"] == want, sid
    rows = list(csv.DictReader((grades / "results.csv").open()))
    assert [r["id"] for r in rows] == sorted(expect)
    for r in rows:
        assert float(r["score"]) == pytest.approx(expect[r["id"]].score) and r["max"] == "10"
        assert "\n" not in r["feedback"]
    junk = records["r08_junk"]["output"][0]
    assert len(junk["stdout"]) <= 64 * 1024 and junk["dropped"]["stdout"] > 0  # bounded, and said so
    page = (grades / "feedback" / "m12_missing_factor.md").read_text()
    assert "q2b: 2.25 / 3, wrong" in page and "dx: expected 48, got 24" in page
    summary = (grades / "summary.md").read_text()
    assert ("| q2b: ∂/∂x wrong (a constant factor is missing (2x written as x) or extra); first wrong step dx | 1 |"
            in summary)  # the mistake named (issue 13's feedback), one row per kind
    assert "q2a, q2b, q2c: ran out of time" in summary


def test_class_with_two_workers(klass):
    folder, _, expect = klass
    assert _grade(folder, "grades-j2", "-j", "2") == 0
    _check_class(folder / "grades-j2", expect)


@pytest.mark.slow  # a LocalCluster of two worker processes starts in several seconds
def test_class_with_dask_local(klass):
    pytest.importorskip("distributed")
    folder, _, expect = klass
    assert _grade(folder, "grades-dask", "-j", "2", "--dask", "local") == 0
    _check_class(folder / "grades-dask", expect)


def test_killed_halfway_and_resumed_writes_the_same_csv(klass):
    """The class's submissions that return or fail fast (the endless loops are left out to keep the
    test short), killed (SIGKILL) once half are graded, then resumed: the same rows as the
    uninterrupted -j 2 run of the whole class."""
    folder, subs, expect = klass
    part = folder / "part"
    part.mkdir()
    ids = [sid for sid in expect if not sid.startswith(("f23", "f24", "r07"))]
    for sid in ids:
        src = next(subs.glob(sid + "*"))
        (part / src.name).symlink_to(src)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "chainrule", "grade", "part", *grading_class.ARGS, "--out", "grades-resume",
           "-j", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = folder / "grades-resume" / "results.jsonl"
    try:
        for _ in range(6000):
            if lines.exists() and len(read_results(lines)) >= len(ids) // 2:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    half = len(read_results(lines))  # finished records (a "started" line precedes each)
    assert 0 < half < len(ids), half
    assert not (folder / "grades-resume" / "results.csv").exists()
    again = subprocess.run(cmd + ["--resume"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"({half} already graded)" in again.stdout
    whole = folder / "grades-j2" / "results.csv"
    if not whole.exists():
        assert _grade(folder, "grades-j2", "-j", "2") == 0
    header, *rows = whole.read_text().splitlines(keepends=True)
    wanted = header + "".join(r for r in rows if r.split(",", 1)[0] in ids)
    assert (folder / "grades-resume" / "results.csv").read_text() == wanted
    assert len(read_results(lines)) == len(ids)


def test_ctrl_c_keeps_what_is_done_and_kills_the_running_children(tmp_path):
    (tmp_path / "key.py").write_text("def q2a(x=1.0, y=3.0, z=2.0):\n    return (x + y) * z\n")
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "a_right.py").write_text("import numpy as np\n" + grading_class.Q2A)
    for k in range(2):
        (subs / f"b_sleepy{k}.py").write_text(
            "import os, time\n"
            "def q2a(x, y, z):\n"
            f"    open({str(tmp_path / f'pid{k}')!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "CHAINRULE_NO_LANDLOCK": "1"}  # so the children may write their pids there
    proc = subprocess.Popen([sys.executable, "-m", "chainrule", "grade", "subs", "--against", "key.py:q2a",
                             "--timeout", "300", "-j", "3", "--out", "grades", "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = [tmp_path / f"pid{k}" for k in range(2)]
        done = tmp_path / "grades" / "results.jsonl"
        for _ in range(3000):
            # a "started" line is written before each submission runs: wait for a_right's record itself
            if all(p.exists() and p.read_text() for p in pids) and done.exists() and any(
                    '"a_right"' in line and '"started"' not in line for line in done.read_text().splitlines()):
                break
            time.sleep(0.01)
        children = [int(p.read_text()) for p in pids]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted: 1 of 3 graded" in err and "--resume" in err
    for pid in children:
        for _ in range(500):
            if not _alive(pid):
                break
            time.sleep(0.01)
        assert not _alive(pid)
    rows = list(csv.DictReader((tmp_path / "grades" / "results.csv").open()))
    assert [(r["id"], r["score"], r["status"]) for r in rows] == [("a_right", "1", "correct")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True
