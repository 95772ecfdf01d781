"""Nothing lost, nothing swallowed whole (issue 12, items 1 and 8).

Out: a save that fails half way (a file-size limit, an exception in the writer, the process killed)
leaves the previous file loadable; ``train --save``/``--plot`` are checked before training starts.
In: empty, truncated and corrupt ``.npz`` files, a label of 1e9 and a header claiming 1e12 elements
are one-line errors (exit 2) found before anything is allocated; ``Module.load`` refuses NaN/inf
weights and values that overflow float32; a ``--at`` value that would broadcast to billions of
elements is refused before it is computed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import fileio
from chainrule.cli import main

SRC = str(Path(cr.__file__).resolve().parents[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _model(width: int = 300) -> cr.nn.Module:
    return cr.nn.Sequential(cr.nn.Linear(width, width, rng=0))


def _loads(path: Path, width: int = 300) -> bool:
    try:
        _model(width).load(path)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# writing: the previous file survives every failure
# ---------------------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_and_keeps_permissions(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    target.chmod(0o640)
    fileio.atomic_write(target, "new text")
    assert target.read_text() == "new text"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary file left


def test_a_writer_failing_half_way_leaves_the_old_file(tmp_path):
    target = tmp_path / "code.py"
    target.write_text("def f(): return 1\n")
    with pytest.raises(RuntimeError, match="half way"), fileio.atomic_open(target) as fh:
        fh.write(b"def f(): ret")
        raise RuntimeError("half way")
    assert target.read_text() == "def f(): return 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code.py"]


def test_a_link_is_written_through(tmp_path):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "v3.txt"
    real.write_text("old")
    link = tmp_path / "latest.txt"
    link.symlink_to(real)
    fileio.atomic_write(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def _save_over_a_good_file(path: Path, script: str) -> tuple[bytes, subprocess.CompletedProcess[str]]:
    """Save a good model to ``path``, then run ``script`` (which saves over it) in a child process;
    returns the good file's bytes and the child's result."""
    _model().save(path)
    before = path.read_bytes()
    res = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=_env(),
                         timeout=60)
    return before, res


def test_module_save_over_a_good_file_under_a_file_size_limit(tmp_path):
    """Issue 12 item 1: saving again with a file-size limit smaller than the model raised OSError and
    left a truncated, unloadable file; now the OSError leaves the previous file loadable."""
    path = tmp_path / "model.npz"
    script = (
        "import resource, sys, chainrule as cr\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "m = cr.nn.Sequential(cr.nn.Linear(300, 300, rng=1))\n"
        "try:\n"
        "    m.save(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print('OSError', e.errno)\n"
    )
    before, res = _save_over_a_good_file(path, script)
    assert res.stdout.startswith("OSError 27"), res.stdout + res.stderr  # EFBIG: the limit was hit
    assert path.read_bytes() == before and _loads(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_a_save_killed_half_way_leaves_the_old_file(tmp_path):
    """The process is killed (SIGKILL) in the middle of writing the array data."""
    path = tmp_path / "model.npz"
    script = (
        "import os, signal, sys, numpy.lib.format as fmt, chainrule as cr\n"
        "def write_half(fp, array, *a, **k):\n"
        "    fp.write(array.tobytes()[: array.nbytes // 2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "fmt.write_array = write_half\n"
        "cr.nn.Sequential(cr.nn.Linear(300, 300, rng=1)).save(sys.argv[1])\n"
    )
    before, res = _save_over_a_good_file(path, script)
    assert res.returncode == -9
    assert path.read_bytes() == before and _loads(path)


def test_train_save_that_cannot_be_written_keeps_the_previous_file(tmp_path):
    """``train --save prev.npz`` whose write fails (a file-size limit) says so in one line, exit 2,
    and ``prev.npz`` is untouched (it used to be truncated)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    prev = tmp_path / "prev.npz"
    _model(64).save(prev)
    before = prev.read_bytes()
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))\n"
        "from chainrule.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    res = subprocess.run([sys.executable, "-c", script, "train", "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                          "--hidden", "256,64", "--no-progress", "--save", str(prev)],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 2, res.stderr
    assert "--save" in res.stderr and "unchanged" in res.stderr and "Traceback" not in res.stderr
    assert prev.read_bytes() == before


@pytest.mark.parametrize("option,path,message", [
    ("--save", "no/such/folder/model.npz", "does not exist"),
    ("--save", "model.txt", "ending in .npz"),
    ("--plot", "curves.nosuchformat", "ending in"),
    ("--plot", ".", "is a folder"),
])
def test_train_checks_save_and_plot_before_training(tmp_path, monkeypatch, capsys, option, path, message):
    monkeypatch.chdir(tmp_path)
    # --data names a file that does not exist: the output check must come first
    code = main(["train", "--data", "missing.npz", "--no-progress", option, path])
    err = capsys.readouterr().err
    assert code == 2 and option in err and message in err and "missing.npz" not in err


def test_train_refuses_a_folder_it_cannot_write(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["train", "--data", "missing.npz", "--save", str(locked / "m.npz")]) == 2
    assert "permission" in capsys.readouterr().err


def test_graph_picture_is_checked_first_and_written_atomically(tmp_path, capsys):
    assert main(["grad", "x*y", "--at", "x=1", "y=2", "--graph", str(tmp_path / "nope" / "g.dot")]) == 2
    assert "does not exist" in capsys.readouterr().err
    target = tmp_path / "g.dot"
    assert main(["grad", "x*y", "--at", "x=1", "y=2", "--graph", str(target), "-q"]) == 0
    assert target.read_text().startswith("digraph")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.dot"]


def test_worksheet_report_is_written_atomically(tmp_path, monkeypatch):
    """The report goes through atomic_write: a failure while writing it leaves the old report."""
    from chainrule import worksheet

    out = tmp_path / "answers"
    out.mkdir()
    (out / "worksheet.md").write_text("the old report")

    def failing(path, data, encoding="utf-8"):
        with fileio.atomic_open(path) as fh:
            fh.write(data.encode()[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(worksheet, "atomic_write", failing)
    with pytest.raises(OSError, match="No space"):
        worksheet.solve_worksheet(out, formats=("md",), pictures="svg")
    assert (out / "worksheet.md").read_text() == "the old report"


# ---------------------------------------------------------------------------------------------
# reading: bad files are one-line errors, sizes checked before allocating
# ---------------------------------------------------------------------------------------------


def _good_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    np.savez(path, X=X, y=(X[:, 0] > 0).astype(np.int64))


def _forged_npz(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose X header claims ``shape`` (float64) but holds 80 bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    y = io.BytesIO()
    np.lib.format.write_array(y, np.array([0, 1]))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", header.getvalue() + bytes(80))
        z.writestr("y.npy", y.getvalue())


def _train_error(capsys, path: Path) -> str:
    code = main(["train", "--data", str(path), "--no-progress", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("chainrule train: error: ") and "Traceback" not in err
    return err


def test_empty_truncated_and_corrupt_npz_are_one_line_errors(tmp_path, capsys):
    good = tmp_path / "good.npz"
    _good_npz(good)
    data = good.read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    assert "empty" in _train_error(capsys, tmp_path / "empty.npz")
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _train_error(capsys, tmp_path / "truncated.npz")
    corrupt = bytearray(data)
    start = data.index(b"\x93NUMPY") + 200  # inside X's numbers: the CRC no longer matches
    corrupt[start:start + 16] = b"\xff" * 16
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    assert "corrupt" in _train_error(capsys, tmp_path / "corrupt.npz")


def test_a_header_claiming_a_trillion_elements_is_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "forged.npz"
    _forged_npz(path, (1_000_000, 1_000_000))
    err = _train_error(capsys, path)
    assert "claims shape (1000000, 1000000)" in err and "holds only" in err
    with pytest.raises(fileio.NpzError, match="claims shape"):
        fileio.read_npz(path)


def test_arrays_larger_than_the_budget_are_refused_from_their_headers(tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, X=np.zeros((1000, 100)), y=np.zeros(1000))
    with pytest.raises(fileio.NpzError, match="need 781.3 KiB|need 0.8 MiB|the limit is"):
        fileio.read_npz(path, max_bytes=100_000)
    assert fileio.read_npz(path, max_bytes=1_000_000)["X"].shape == (1000, 100)


def test_a_label_of_a_billion_is_refused_before_building_the_network(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.zeros(20, dtype=np.int64)
    y[0] = 1_000_000_000
    np.savez(tmp_path / "huge.npz", X=X, y=y)
    err = _train_error(capsys, tmp_path / "huge.npz")
    assert "largest label is 1e+09" in err and "np.unique" in err
    y = np.zeros(20)
    y[:10] = 1e30  # a float label beyond int64 must not wrap around to a negative one
    np.savez(tmp_path / "huge_float.npz", X=X, y=y)
    assert "largest label is 1e+30" in _train_error(capsys, tmp_path / "huge_float.npz")


def test_a_network_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] > 0).astype(np.int64))
    code = main(["train", "--data", str(tmp_path / "d.npz"), "--hidden", "2000000,2000000", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "GiB to train" in err and "Traceback" not in err


def test_module_load_refuses_nan_inf_and_float32_overflow(tmp_path):
    m = _model(4)
    good = {k: v.copy() for k, v in m.state_dict().items()}
    for bad_value, message in [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                               (1e39, "too large for float32")]:
        state = {k: v.astype(np.float64) for k, v in good.items()}
        state["0.weight"][1, 2] = bad_value
        path = tmp_path / "bad.npz"
        np.savez(path, **state)
        with pytest.raises(ValueError, match=message) as info:
            m.load(path)
        assert "0.weight" in str(info.value) and "[1, 2]" in str(info.value)
        for k, v in m.state_dict().items():  # refused as a whole: nothing was half loaded
            np.testing.assert_array_equal(v, good[k])
        m.load(path, allow_nonfinite=True)  # asked for: loaded
        assert not np.isfinite(m[0].weight.data[1, 2])
        m.load_state_dict(good)


def test_module_load_of_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    _model(4).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        _model(4).load(path)


def test_cli_value_that_broadcasts_to_billions_of_elements_is_refused(capsys):
    """``--at x="sum([1,1,...] + [[1],[1],...])"`` (99 KB of text) used to allocate 2.5 GB."""
    value = "sum([" + ",".join(["1"] * 24900) + "]+[" + ",".join(["[1]"] * 12400) + "])"
    code = main(["grad", "x*2", "--at", f"x={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "308,760,000 elements" in err and "100,000" in err
    assert main(["grad", "x*2", "--at", "x=sum([1,2,3] + [[1],[2]])"]) == 0  # small broadcasts still work
    assert "42" in capsys.readouterr().out  # 2 * sum of [[2, 3, 4], [3, 4, 5]]
