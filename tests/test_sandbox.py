"""The sandboxed runner (chainrule.sandbox): whatever the checked code does -- exit, print, hang,
crash, allocate, spawn -- the run ends with either its results or a failure and a one-line reason,
and the checking process is untouched."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chainrule import landlock, sandbox
from chainrule.check import Opaque

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs os.fork")

XYZ = {"x": np.array(1.0), "y": np.array(3.0), "z": np.array(2.0)}


@pytest.fixture(scope="module")
def runner() -> Iterator[sandbox.Runner]:
    with sandbox.Runner(sandbox.Limits(seconds=5, memory_bytes=256 << 20)) as r:
        yield r


def run(runner: sandbox.Runner, tmp_path: Path, source: str, func: str = "f", sets: list | None = None,
        **limits: float) -> sandbox.RunResult:
    path = tmp_path / "sub.py"
    path.write_text(textwrap.dedent(source))
    lim = sandbox.Limits(**{"seconds": 5, "memory_bytes": 256 << 20, **limits})
    return runner.run(sandbox.Job(str(path), func, sets if sets is not None else [XYZ], ["x", "y", "z"]), lim)


def test_results_locals_and_prints_come_back_separately(runner, tmp_path):
    res = run(runner, tmp_path, """
        import numpy as np
        print("hello from the top")
        def f(x, y, z):
            print("inside", x)
            q = x + y
            out = q * z
            dq = z
            return out, (dq, dq, q)
    """, sets=[XYZ, {"x": np.array([1.0, 2.0]), "y": np.array([3.0, 4.0]), "z": np.array(2.0)}])
    assert res.ok and res.order == ["x", "y", "z"] and len(res.calls) == 2
    out, dx, dy, dz = res.calls[0].result  # (out, (g...)) flattened
    assert (float(out), float(dx), float(dz)) == (8.0, 2.0, 4.0) and np.shape(out) == ()
    np.testing.assert_array_equal(res.calls[1].result[0], [8.0, 12.0])
    assert list(res.calls[0].locals) == ["x", "y", "z", "q", "out", "dq"]
    assert res.calls[0].holders[0] == ["out"] and res.calls[0].holders[3] == ["q"]
    assert res.stdout == "hello from the top\ninside 1.0\ninside [1. 2.]\n" and res.stderr == ""


def test_dtypes_are_kept_and_non_numbers_described(runner, tmp_path):
    res = run(runner, tmp_path, """
        def f(x, y, z):
            return x + 5j, "two", None, [1, 2]
    """)
    r = res.calls[0].result
    assert r[0].dtype == np.complex128 and r[0] == 1 + 5j
    assert r[1] == Opaque("str", "'two'") and r[2] == Opaque("NoneType", "None")
    assert r[3].tolist() == [1, 2]


@pytest.mark.parametrize("source,kind,reason", [
    ("import sys\ndef f(x, y, z):\n    sys.exit(0)\n", "exit", "called sys.exit(0) in f"),
    ("import sys\ndef f(x, y, z):\n    sys.exit(3)\n", "exit", "called sys.exit(3) in f"),
    ("import sys\nsys.exit(0)\n", "exit", "called sys.exit(0) while sub.py was being imported"),
    ("import os\ndef f(x, y, z):\n    print('bye')\n    os._exit(0)\n", "exit",
     "exited with status 0 before returning"),
    ("import os\ndef f(x, y, z):\n    os._exit(3)\n", "exit", "exited with status 3 before returning"),
    ("import ctypes\ndef f(x, y, z):\n    ctypes.string_at(0)\n", "signal", "killed by SIGSEGV"),
    ("import os, signal\ndef f(x, y, z):\n    os.kill(os.getpid(), signal.SIGABRT)\n", "signal", "killed by SIGABRT"),
    ("def f(x, y, z):\n    while True:\n        pass\n", "timeout", "timed out after 1 s"),
    ("while True:\n    pass\n", "timeout", "timed out after 1 s"),
    ("import numpy as np\ndef f(x, y, z):\n    return np.ones(2**31)\n", "memory",
     "ran out of memory (the limit is 256 MiB)"),
    ("def f(x, y, z):\n    return (x +\n", "syntax", "SyntaxError: '(' was never closed (sub.py, line 2)"),
    ("import numpy as np\nk = 1\nz = undefined_name\n", "import",
     "importing sub.py raised NameError: name 'undefined_name' is not defined (sub.py, line 3)"),
    ("def g(x, y, z):\n    return x\n", "missing_function", "sub.py has no function 'f' (it has g)"),
    ("f = 3\n", "missing_function", "sub.py:f is not a function (it is int)"),
    ("def f(a, b):\n    return a\n", "arity", "f(a, b) takes 2 inputs but the reference has variables x, y, z"),
])
def test_every_way_of_not_returning_is_a_failure_with_one_line(runner, tmp_path, source, kind, reason):
    res = run(runner, tmp_path, source, seconds=1)
    assert not res.ok and res.kind == kind, (res.kind, res.reason)
    assert reason in res.reason and "\n" not in res.reason
    if "print('bye')" in source:
        assert res.stdout == "bye\n"  # printed before exiting: still shown


def test_cpu_time_limit(runner, tmp_path):
    res = run(runner, tmp_path, "def f(x, y, z):\n    while True:\n        pass\n", seconds=20, cpu_seconds=1)
    assert res.kind == "cpu" and "CPU time limit of 1 s" in res.reason


def test_an_exception_is_reported_per_call_with_its_line(runner, tmp_path):
    res = run(runner, tmp_path, """
        def f(x, y, z):
            if float(x) > 1.5:
                raise ZeroDivisionError("oops")
            return x, x, x, x
    """, sets=[XYZ, {**XYZ, "x": np.array(2.0)}])
    assert res.ok and res.calls[0].error is None
    assert res.calls[1].error == "f raised ZeroDivisionError: oops (sub.py, line 4)"


def test_output_is_bounded_and_counted(runner, tmp_path):
    res = run(runner, tmp_path, """
        import sys
        def f(x, y, z):
            print("a" * 1_000_000)
            sys.stderr.write("b" * 300_000)
            return x, x, x, x
    """, output_bytes=1000)
    assert res.ok
    assert res.stdout == "a" * 1000 and res.stdout_dropped == 1_000_001 - 1000
    assert res.stderr == "b" * 1000 and res.stderr_dropped == 299_000


def test_printing_a_fake_result_changes_nothing(runner, tmp_path):
    """stdout is captured text only: writing bytes that look like the result frame forges nothing."""
    res = run(runner, tmp_path, """
        import os, struct
        from chainrule.sandbox import pack
        fake = pack({"order": ["x", "y", "z"], "calls": []})
        def f(x, y, z):
            os.write(1, struct.pack("<Q", len(fake)) + fake)
            os._exit(0)
    """)
    assert not res.ok and res.kind == "exit"


def test_scratch_folder_scrubbed_environment_and_no_stdin(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_TEST_SECRET", "s3cret")
    res = run(runner, tmp_path, """
        import os, sys
        def f(x, y, z):
            open("left_behind.txt", "w").write("hi")
            print(os.getcwd() != os.path.dirname(os.path.abspath(__file__)), sorted(os.environ), repr(sys.stdin.read()))
            return x, x, x, x
    """)
    assert res.ok
    assert res.stdout.strip() == "True ['HOME', 'LANG', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', 'TMPDIR'] ''"
    assert not (tmp_path / "left_behind.txt").exists()
    assert not (tmp_path / "__pycache__").exists()  # nothing written beside the checked file


def test_processes_it_starts_are_killed_with_it(runner, tmp_path):
    res = run(runner, tmp_path, """
        import subprocess
        def f(x, y, z):
            p = subprocess.Popen(["sleep", "60"])
            print(p.pid, flush=True)
            return x, x, x, x
    """)
    assert res.ok
    pid = int(res.stdout.split()[0])
    for _ in range(250):  # killed with the group when the run ended; the kernel may take a moment
        if not _alive(pid):
            break
        time.sleep(0.02)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def reference_key_q2a(x, y, z):  # the "answer key" held by the checking process
    return (x + y) * z


def test_the_reference_never_reaches_the_child(runner, tmp_path):
    """The runner process was started by exec, not forked from the checker: objects of the checking
    process (here this test module and its reference_key_q2a) do not exist in the child."""
    assert reference_key_q2a(1, 3, 2) == 8
    res = run(runner, tmp_path, """
        import gc, sys
        def f(x, y, z):
            found = [o for o in gc.get_objects() if getattr(o, "__name__", "") == "reference_key_q2a"]
            mods = [m for m in sys.modules if "test_sandbox" in m]
            print(len(found), mods)
            return x, x, x, x
    """)
    assert res.ok and res.stdout.strip() == "0 []"


def test_runner_survives_many_runs_and_a_dead_runner_is_replaced(tmp_path):
    path = tmp_path / "ok.py"
    path.write_text("def f(x, y, z):\n    return x, y, z, x\n")
    job = sandbox.Job(str(path), "f", [XYZ], ["x", "y", "z"])
    with sandbox.Runner() as r:
        assert all(r.run(job).ok for _ in range(20))
        r._proc.kill()  # the runner process dies: the next run starts a new one
        r._proc.wait()
        assert r.run(job).ok


def test_inputs_are_bound_by_parameter_name(runner, tmp_path):
    res = run(runner, tmp_path, "def f(z, x, y):\n    return x, z, x, y\n")
    assert res.ok and res.order == ["z", "x", "y"]
    out, gz, gx, gy = res.calls[0].result
    assert (float(out), float(gz), float(gx), float(gy)) == (1.0, 2.0, 1.0, 3.0)


def test_wire_format_refuses_malformed_messages():
    good = sandbox.pack({"a": np.arange(3.0), "b": [1, "x", None]})
    back = sandbox.unpack(good)
    np.testing.assert_array_equal(back["a"], [0.0, 1.0, 2.0]) and back["b"] == [1, "x", None]
    with pytest.raises(ValueError):
        sandbox.unpack(good[:-3])  # truncated
    forged = good.replace(b'"<f8"', b'"|O8"')  # an object array would need pickle: refused
    with pytest.raises(ValueError, match="refusing dtype"):
        sandbox.unpack(forged)


def test_sizes_parse():
    assert sandbox.parse_bytes("512M") == 512 << 20 and sandbox.parse_bytes("2G") == 2 << 30
    assert sandbox.parse_bytes("1.5GiB") == 3 << 29 and sandbox.parse_bytes("100") == 100
    with pytest.raises(ValueError):
        sandbox.parse_bytes("lots")


def test_ctrl_c_on_check_stops_the_checked_code_too(tmp_path):
    """Interrupting `chainrule check` (SIGINT) ends the command with 130 and kills the running child,
    which sits in its own process group where the terminal's Ctrl-C does not reach it."""
    import signal
    import subprocess
    import sys

    (tmp_path / "sleepy.py").write_text(
        "import os, time\n"
        "def q2a(x, y, z):\n"
        f"    open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n")
    src = str(Path(sandbox.__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-m", "chainrule", "check", "sleepy.py:q2a", "--against", "x*y*z",
                             "--at", "x=1", "y=2", "z=3", "--timeout", "300"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
                                 "CHAINRULE_NO_LANDLOCK": "1"})  # so the child may write its pid there
    try:
        for _ in range(1500):
            if (tmp_path / "pid").exists() and (tmp_path / "pid").read_text():
                break
            time.sleep(0.02)
        pid = int((tmp_path / "pid").read_text())
        assert _alive(pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "interrupted" in err
        for _ in range(250):
            if not _alive(pid):
                break
            time.sleep(0.02)
        assert not _alive(pid)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_several_functions_of_one_file_import_it_once_and_fail_alone(runner, tmp_path):
    """run_all: the file's top level runs once for all its functions; a function that kills the child
    (a crash, an endless loop, os._exit) fails alone with its reason, and the functions after it run
    in a fresh child; each function has its own time limit."""
    path = tmp_path / "multi.py"
    path.write_text(textwrap.dedent("""
        import ctypes, os, time
        print("imported")
        def ok(x, y, z):
            return x * y * z
        def crash(x, y, z):
            ctypes.string_at(0)
        def slow(x, y, z):
            time.sleep(0.6)
            return x + y + z
        def loop(x, y, z):
            while True:
                pass
        def leave(x, y, z):
            os._exit(0)
        def raises(x, y, z):
            return 1 / 0
    """))
    names = ["ok", "crash", "slow", "slow", "loop", "ok", "leave", "raises", "missing"]
    jobs = [sandbox.Job(str(path), f, [XYZ], ["x", "y", "z"]) for f in names]
    res = runner.run_all(jobs, sandbox.Limits(seconds=1, memory_bytes=256 << 20))
    assert [r.ok for r in res] == [True, False, True, True, False, True, False, True, False]
    assert float(res[0].calls[0].result) == 6.0 and float(res[5].calls[0].result) == 6.0
    assert "SIGSEGV" in res[1].reason and res[4].kind in ("timeout", "cpu")
    assert float(res[2].calls[0].result) == float(res[3].calls[0].result) == 6.0  # 0.6 s each, within 1 s each
    assert "status 0 before returning" in res[6].reason and "ZeroDivisionError" in res[7].calls[0].error
    assert res[8].kind == "missing_function"
    assert res[0].stdout.count("imported") == 4  # the first child, and one fresh child after each that died


def test_a_file_that_does_not_import_fails_every_function_once(runner, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import time\nprint('start')\ntime.sleep(30)\ndef f(x, y, z):\n    return x\n")
    t = time.monotonic()
    res = runner.run_all([sandbox.Job(str(path), f, [XYZ], ["x", "y", "z"]) for f in ("f", "g", "f")],
                         sandbox.Limits(seconds=1, memory_bytes=256 << 20))
    assert time.monotonic() - t < 10  # one timeout for the file, not one per function
    assert all(r.kind == "timeout" for r in res) and res[0].stdout == "start\n"
    with pytest.raises(ValueError, match="same path"):
        runner.run_all([sandbox.Job(str(path), "f", [XYZ], ["x"]), sandbox.Job(str(tmp_path / "o.py"), "f", [XYZ],
                                                                               ["x"])])


def test_closing_a_runner_during_a_run_ends_that_run(tmp_path):
    """What ``chainrule grade`` does on Ctrl-C: close() from another thread kills the running child and
    the run raises SandboxError instead of starting a new runner to try again."""
    import threading

    path = tmp_path / "sleepy.py"
    path.write_text("import time\ndef f(x, y, z):\n    time.sleep(60)\n")
    r = sandbox.Runner(sandbox.Limits(seconds=120))
    errors = []

    def go() -> None:
        try:
            r.run(sandbox.Job(str(path), "f", [XYZ], ["x", "y", "z"]))
        except sandbox.SandboxError as e:
            errors.append(str(e))

    t = threading.Thread(target=go)
    t.start()
    time.sleep(1.5)
    r.close()
    t.join(timeout=30)
    assert not t.is_alive() and errors == ["the runner was closed while the code ran"]
    assert r._proc is None
    r.close()


@pytest.mark.parametrize("sig,how", [("SIGKILL", "killed"), ("SIGSTOP", "stopped")])
def test_code_that_kills_or_stops_its_runner_fails_alone(tmp_path, monkeypatch, sig, how):
    """Without Landlock's signal scope the child can signal the runner: the run is charged to the code
    (not a SandboxError that stops a whole batch), within the watchdog, and the next run gets a new runner."""
    monkeypatch.setenv("CHAINRULE_NO_LANDLOCK", "1")
    evil = tmp_path / "evil.py"
    evil.write_text(f"import os, signal\nos.kill(os.getppid(), signal.{sig})\ndef f(x, y, z):\n    return x, x, x, x\n")
    good = tmp_path / "good.py"
    good.write_text("def f(x, y, z):\n    return x, y, z, x\n")
    with sandbox.Runner(sandbox.Limits(seconds=2)) as r:
        res = r.run(sandbox.Job(str(evil), "f", [XYZ], ["x", "y", "z"]))
        assert not res.ok and res.kind == "runner"
        assert res.reason.startswith(f"{how} the grader's process")
        assert r.run(sandbox.Job(str(good), "f", [XYZ], ["x", "y", "z"])).ok


landlock_abi = landlock.abi()


@pytest.mark.skipif(landlock_abi < 1, reason="needs Landlock (Linux >= 5.13)")
def test_landlock_confines_writes_and_reads_to_the_submission(runner, tmp_path):
    """The child writes only in its scratch folder, reads its own folder but not the key's, and (ABI >= 6)
    cannot signal the runner."""
    key = tmp_path / "key.py"
    key.write_text("SECRET = 1\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "helper.py").write_text("H = 2\n")
    (sub / "other.py").write_text("untouched\n")
    path = sub / "s.py"
    path.write_text(textwrap.dedent(f"""
        import os, signal
        def attempt(fn):
            try:
                fn()
                return "allowed"
            except OSError:
                return "refused"
        def f(x, y, z):
            print("read own", attempt(lambda: open({str(sub / 'helper.py')!r}).read()))
            print("read key", attempt(lambda: open({str(key)!r}).read()))
            print("write other", attempt(lambda: open({str(sub / 'other.py')!r}, "w").write("x")))
            print("create", attempt(lambda: open({str(tmp_path / 'new.txt')!r}, "w").write("x")))
            print("scratch", attempt(lambda: open("mine.txt", "w").write("x")))
            print("signal", attempt(lambda: os.kill(os.getppid(), 0)))
            return x, x, x, x
    """))
    res = runner.run(sandbox.Job(str(path), "f", [XYZ], ["x", "y", "z"]))
    assert res.ok, res.reason
    lines = dict(line.rsplit(" ", 1) for line in res.stdout.splitlines())
    assert lines == {"read own": "allowed", "read key": "refused", "write other": "refused", "create": "refused",
                     "scratch": "allowed", "signal": "refused" if landlock_abi >= 6 else "allowed"}
    assert (sub / "other.py").read_text() == "untouched\n" and not (tmp_path / "new.txt").exists()
