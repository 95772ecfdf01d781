"""``chainrule check`` cannot be fooled (issue 12, item 2): exiting, printing, hanging or crashing
is exit 3 with a one-line reason, never "correct"; complex or broadcast answers are wrong and say
why; ``--json`` stays JSON whatever the code prints; a long loop is not traced line by line."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs os.fork")

AGAINST = ["--against", "(x + y) * z", "--at", "x=1", "y=3", "z=2"]

RIGHT = """
def q2a(x, y, z):
    q = x + y
    out = q * z
    dq = z
    return out, dq, dq, q
"""


def check(tmp_path: Path, monkeypatch, capsys, body: str, *extra: str) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sol.py").write_text(textwrap.dedent(body))
    code = main(["check", "sol.py:q2a", *AGAINST, *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("body,reason", [
    ("import sys\ndef q2a(x, y, z):\n    sys.exit(0)\n", "called sys.exit(0) in q2a"),
    ("import sys\ndef q2a(x, y, z):\n    sys.exit(3)\n", "called sys.exit(3) in q2a"),
    ("import os\ndef q2a(x, y, z):\n    os._exit(0)\n", "exited with status 0 before returning a result"),
    ("import sys\nsys.exit(0)\n" + RIGHT, "called sys.exit(0) while sol.py was being imported"),
    ("import ctypes\ndef q2a(x, y, z):\n    ctypes.string_at(0)\n", "killed by SIGSEGV"),
    ("def q2a(x, y, z):\n    while True:\n        pass\n", "timed out after 1 s"),
    ("def q2a(x, y, z):\n    raise ZeroDivisionError('oops')\n", "q2a raised ZeroDivisionError: oops (sol.py, line 2)"),
])
def test_code_that_does_not_return_is_exit_3_with_its_reason(tmp_path, monkeypatch, capsys, body, reason):
    """Before: sys.exit(0) and os._exit(0) ended `chainrule check` with exit 0 ("correct") and no output."""
    code, out, err = check(tmp_path, monkeypatch, capsys, body, "--timeout", "1")
    assert code == 3
    assert reason in out and err == f"chainrule check: sol.py:q2a failed: {err.split('failed: ', 1)[1]}"
    assert reason in err and err.count("\n") == 1


def test_a_checked_function_that_kills_its_runner_did_not_run(tmp_path, monkeypatch, capsys):
    """Before: exit 1 (documented as "wrong") with "is the machine out of memory?", and no JSON."""
    import subprocess

    (tmp_path / "sol.py").write_text("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + RIGHT)
    src = str(Path(cr.__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", "chainrule", "check", "sol.py:q2a", *AGAINST, "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": src, "CHAINRULE_NO_LANDLOCK": "1"})  # the signal gets there
    code, doc = done.returncode, json.loads(done.stdout)
    assert code == 3 and doc["status"] == "failed" and doc["exit_code"] == 3
    assert doc["reason"].startswith("killed the grader's process")


def test_a_usage_error_with_json_is_one_json_object(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["check", "nosuch.py:q2a", "--against", "(x + y) * z", "--at", "x=1", "y=3", "z=2", "--json"])
    out = capsys.readouterr().out
    assert code == 2 and json.loads(out) == {"ok": False, "status": "usage_error", "exit_code": 2,
                                             "error": "nosuch.py: no such file"}


def test_right_answer_is_still_exit_0_and_prints_are_shown_apart(tmp_path, monkeypatch, capsys):
    code, out, err = check(tmp_path, monkeypatch, capsys, "print('hi from import')\n" + RIGHT)
    assert code == 0, out + err
    verdict, printed = out.split("what sol.py printed (stdout)")
    assert "q2a: correct" in verdict and "hi from import" not in verdict
    assert "│ hi from import" in printed


@pytest.mark.parametrize("change,why", [
    ("return out + 5j, dq, dq, q", "out: expected 8, got (8+5j) — complex values (dtype complex128); the answer is "
     "real, and 5j is not 0"),
    ("return out, np.full(3, dq), dq, q", "gradient of x: wrong shape: expected () (a scalar), got (3,)"),
    ("return out, dq, dq, 'q'", "not a number or array (str)"),
    ("return out, dq > 0, dq, q", "True/False values, not numbers"),
])
def test_complex_broadcast_and_non_numbers_are_wrong(tmp_path, monkeypatch, capsys, change, why):
    """Before: a complex output was cast to float and a (3,) gradient broadcast: both "correct"."""
    body = "import numpy as np\n" + RIGHT.replace("return out, dq, dq, q", change)
    code, out, _ = check(tmp_path, monkeypatch, capsys, body)
    assert code == 1 and why in out, out


def test_a_wrong_shape_is_said_first_and_a_complex_answer_shows_both_numbers(tmp_path, monkeypatch, capsys):
    """Before: a (3,) gradient for scalar x got "gradient of x is not the gradient of x: through `x + y`
    ..." as its feedback; a complex answer gave "expected": "nan", "got": "nan" in --json."""
    body = "import numpy as np\n" + RIGHT.replace("return out, dq, dq, q", "return out, np.full(3, dq), dq, q")
    code, out, _ = check(tmp_path, monkeypatch, capsys, body, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["mistake"] == "wrong_shape"
    assert doc["feedback"] == "gradient of x has the wrong shape: expected () (a scalar), got (3,)"
    assert doc["first_wrong_step"] is None
    body = RIGHT.replace("return out, dq, dq, q", "return out + 0j, dq, dq, q")
    code, out, _ = check(tmp_path, monkeypatch, capsys, body, "--json")
    (wrong,) = json.loads(out)["wrong"]
    assert code == 1 and (wrong["expected"], wrong["got"]) == (8.0, "(8+0j)")


def test_none_returned_is_said(tmp_path, monkeypatch, capsys):
    code, out, _ = check(tmp_path, monkeypatch, capsys, "def q2a(x, y, z):\n    q = x + y\n")
    assert code == 1 and "q2a returned None (no return statement?); expected 4 values" in out


def test_library_check_backward_is_strict_too():
    def complex_out(x, y, z):
        return (x + y) * z + 0j, z, z, x + y

    def broadcast(x, y, z):
        return (x + y) * z, np.full(3, z), z, x + y

    for fn in (complex_out, broadcast):
        rep = cr.check_backward(fn, lambda x, y, z: (x + y) * z, 1.0, 3.0, 2.0)
        assert not rep and rep.status == "wrong"
    assert "complex values" in str(cr.check_backward(complex_out, lambda x, y, z: (x + y) * z, 1.0, 3.0, 2.0))


def test_json_stays_json_whatever_the_code_prints(tmp_path, monkeypatch, capsys):
    """Before: a print at import or inside the function went into the --json document."""
    body = "import sys\nprint('{not json')\n" + RIGHT.replace("    q = x + y", "    print('inside'); q = x + y")
    body += "\nsys.stderr.write('a warning\\n')\n"
    code, out, err = check(tmp_path, monkeypatch, capsys, body, "--json")
    doc = json.loads(out)
    assert code == 0 and err == ""
    assert doc["ok"] is True and doc["status"] == "correct" and doc["exit_code"] == 0
    assert doc["stdout"] == "{not json\n" + "inside\n" * 4 and doc["stderr"] == "a warning\n"
    code, out, _ = check(tmp_path, monkeypatch, capsys, "import os\nprint('x')\ndef q2a(x, y, z):\n    os._exit(0)\n",
                         "--json")
    doc = json.loads(out)
    assert code == 3 and doc["status"] == "failed" and "exited with status 0" in doc["reason"]


def test_wrong_answer_json_names_the_value(tmp_path, monkeypatch, capsys):
    code, out, _ = check(tmp_path, monkeypatch, capsys, RIGHT.replace("dq = z", "dq = -z"), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["status"] == "wrong"
    assert [w["name"] for w in doc["wrong"]] == ["dq", "dq"] or doc["wrong"][0]["expected"] == 2.0
    assert doc["first_wrong_step"]["name"] == "dq"


def test_a_long_loop_is_not_traced_line_by_line(tmp_path, monkeypatch, capsys):
    """Before: every line of the checked function was traced (2 million iterations: 6.4 s, here 16 s).
    Now only its return is: the frame never gets line events, and its locals still come back."""
    body = RIGHT.replace("    q = x + y", "    import sys\n    lines = sys._getframe().f_trace_lines\n"
                         "    s = 0\n    for i in range(200_000):\n        s += 1\n    q = x + y")
    body = body.replace("return out, dq, dq, q", "return out, dq, dq, q + (1 if lines else 0)")
    code, out, _ = check(tmp_path, monkeypatch, capsys, body)
    assert code == 0, out  # with per-line tracing dz would be off by one
    code, out, _ = check(tmp_path, monkeypatch, capsys, body.replace("dq = z", "dq = -z"))
    assert code == 1 and "first wrong step: dq" in out  # the locals were captured at its return


def test_values_for_an_unknown_parameter_are_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sol.py").write_text("def q2c(x, y, z):\n    return x, x, y, z\n")
    assert main(["check", "sol.py:q2c", "--against", "x * y", "--at", "x=1", "y=2"]) == 2
    assert "needs a value for z" in capsys.readouterr().err


def test_limits_are_options(tmp_path, monkeypatch, capsys):
    body = "import numpy as np\n" + RIGHT.replace("    q = x + y", "    big = np.ones(20_000_000)\n    q = x + y")
    code, out, _ = check(tmp_path, monkeypatch, capsys, body, "--memory", "100M")
    assert code == 3 and "ran out of memory (the limit is 100 MiB)" in out
    code, out, _ = check(tmp_path, monkeypatch, capsys, body, "--memory", "1G")
    assert code == 0, out
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["check", "sol.py:q2a", *AGAINST, "--timeout", "-1"])


def test_check_as_a_subprocess_end_to_end(tmp_path):
    """The console command itself: sys.exit(0) in the checked code is exit 3, not 0."""
    import subprocess

    (tmp_path / "sol.py").write_text("import sys\ndef q2a(x, y, z):\n    sys.exit(0)\n")
    src = str(Path(cr.__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-m", "chainrule", "check", "sol.py:q2a", *AGAINST], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert res.returncode == 3 and "called sys.exit(0) in q2a" in res.stderr
