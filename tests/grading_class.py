"""A test class for ``chainrule grade``: 40 generated submissions of the worksheet's Q2 (q2a, q2b, q2c)
-- right ones written in other ways, each classic backprop mistake, and every way of not returning --
with the score and reason each must get, worked out by hand.

Points: q2a 2, q2b 3, q2c 5 (10 in all); partial credit per returned value (the output and three
gradients: a quarter of the problem's points each). Limits for the class: --timeout 2 --memory 512M.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

KEY = '''\
import numpy as np


def q2a(x=1.0, y=3.0, z=2.0):
    return (x + y) * z


def q2b(x=3.0, y=1.0, z=2.0):
    return (x ** 2 + 2 * y) * z ** 3


def q2c(x=np.e, y=np.pi / 2, z=2.0):
    # the worksheet's combined function, as a TA writes the key: its first value is the output
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    out = c ** 2 + 4 * x
    dc = 2 * c
    return out, dc / x + 4, dc * np.cos(y), np.zeros_like(z)
'''

POINTS = {"q2a": 2.0, "q2b": 3.0, "q2c": 5.0}
ARGS = ["--against", "key.py:q2a,q2b,q2c", "--points", "q2a=2,q2b=3,q2c=5", "--timeout", "2", "--memory", "512M"]

Q2A = '''
def q2a(x, y, z):
    q = x + y
    out = q * z
    dq = z
    dz = q
    dx = dq
    dy = dq
    return out, dx, dy, dz
'''

Q2B = '''
def q2b(x, y, z):
    a = x ** 2
    b = 2 * y
    c = a + b
    d = z ** 3
    out = c * d
    dc = d
    dd = c
    da = dc
    db = dc
    dx = 2 * x * da
    dy = 2 * db
    dz = 3 * z ** 2 * dd
    return out, dx, dy, dz
'''

Q2C = '''
def q2c(x, y, z):
    a = np.log(x)
    b = np.sin(y)
    c = a + b
    d = c ** 2
    e = 4 * x
    out = d + e
    dd = 1.0
    de = 1.0
    dc = 2 * c * dd
    da = dc
    db = dc
    dx = da / x
    dx += 4 * de
    dy = db * np.cos(y)
    dz = np.zeros_like(z)
    return out, dx, dy, dz
'''

RIGHT = "import numpy as np\n" + Q2A + Q2B + Q2C


@dataclass
class Expect:
    """What one submission must get: per problem (score, status, a fragment of its feedback or reason)."""

    source: str | dict[str, str]           # a file's text, or a folder's files
    problems: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    suffix: str = ".py"

    @property
    def score(self) -> float:
        return sum(v[0] for v in self.problems.values())


def _ok(**changes: tuple[float, str, str]) -> dict[str, tuple[float, str, str]]:
    full = {k: (v, "correct", "") for k, v in POINTS.items()}
    full.update(changes)
    return full


def _all(status: str, fragment: str) -> dict[str, tuple[float, str, str]]:
    return {k: (0.0, status, fragment) for k in POINTS}


def _swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _notebook(code: str) -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# my solutions"]},
             {"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [],
              "source": ["%matplotlib inline\n", "!pip list\n", "import numpy as np\n"]},
             {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [], "source": code}]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


OTHER_NAMES = '''
import numpy as np

def q2a(x, y, z):
    s = x + y
    f = s * z
    grad_s = z
    return f, (grad_s, grad_s, s)

def q2b(x, y, z):
    sq = np.square(x)
    twoy = 2 * y
    left = sq + twoy
    cube = np.power(z, 3)
    h = left * cube
    g_left = cube
    g_cube = left
    return h, 2 * x * g_left, 2.0 * g_left, 3 * np.square(z) * g_cube

def q2c(x, y, z):
    u = np.log(x) + np.sin(y)
    g = u * u + 4 * x
    gu = 2 * u
    return g, gu / x + 4, gu * np.cos(y), 0 * z
'''

POSITIONAL = (RIGHT.replace("def q2a(x, y, z):", "def q2a(a1, a2, a3):\n    x, y, z = a1, a2, a3")
              .replace("def q2b(x, y, z):", "def q2b(p, q_, r):\n    x, y, z = p, q_, r"))


def build() -> dict[str, Expect]:
    """The 40 submissions, by id."""
    c: dict[str, Expect] = {}
    # right, written in other ways
    c["r01_plain"] = Expect(RIGHT, _ok())
    c["r02_other_names"] = Expect(OTHER_NAMES, _ok())
    c["r03_folder"] = Expect({"solution.py": "from helpers import square\n" + RIGHT.replace("x ** 2", "square(x)"),
                              "helpers.py": "def square(v):\n    return v * v\n", "README.txt": "my work"}, _ok())
    c["r04_notebook"] = Expect(_notebook(Q2A + Q2B + Q2C), _ok(), suffix=".ipynb")
    c["r05_positional"] = Expect(POSITIONAL, _ok())
    c["r06_lists"] = Expect(_swap(RIGHT, "return out, dx, dy, dz\n", "return [out, dx, dy, dz]\n"), _ok())
    c["r07_slow"] = Expect("import time\ntime.sleep(0.2)\n" + RIGHT, _ok())
    c["r08_junk"] = Expect("import sys\nprint('score: 10/10 ' * 20000)\nsys.stderr.write('x' * 200000)\n"
                           + _swap(RIGHT, "    q = x + y\n", "    q = x + y\n    print('FINAL SCORE 10', q)\n"),
                           _ok())
    c["r09_fake_frame"] = Expect("import os\nos.write(1, b'\\x00' * 64 + b'{\"calls\": []}')\n" + RIGHT, _ok())
    # the classic mistakes
    c["m10_sign"] = Expect(_swap(RIGHT, "dz = q\n", "dz = -q\n"), _ok(q2a=(1.5, "wrong", "dz")))
    c["m11_fanout_overwritten"] = Expect(_swap(RIGHT, "dx += 4 * de", "dx = 4 * de"),
                                         _ok(q2c=(3.75, "wrong", "∂/∂x")))
    c["m12_missing_factor"] = Expect(_swap(RIGHT, "dx = 2 * x * da", "dx = x * da"),
                                     _ok(q2b=(2.25, "wrong", "dx")))
    c["m13_not_swapped"] = Expect(_swap(_swap(RIGHT, "dq = z\n", "dq = q\n"), "dz = q\n", "dz = z\n"),
                                  _ok(q2a=(0.5, "wrong", "")))
    c["m14_upstream_not_multiplied"] = Expect(_swap(RIGHT, "dz = 3 * z ** 2 * dd", "dz = 3 * z ** 2"),
                                              _ok(q2b=(2.25, "wrong", "dz")))
    c["m15_hard_coded"] = Expect(RIGHT.replace(Q2A, "\ndef q2a(x, y, z):\n    return 8.0, 2.0, 2.0, 4.0\n"),
                                 _ok(q2a=(0.0, "wrong", "random inputs")))
    c["m16_local_of_wrong_input"] = Expect(_swap(RIGHT, "dy = db * np.cos(y)", "dy = db * np.cos(x)"),
                                           _ok(q2c=(3.75, "wrong", "dy")))
    c["m17_gz_none"] = Expect(_swap(RIGHT, "dz = np.zeros_like(z)", "dz = None"),
                              _ok(q2c=(3.75, "wrong", "not a number")))
    c["m18_wrong_count"] = Expect(_swap(RIGHT, "return out, dx, dy, dz\n", "return out, dx, dy\n"),
                                  _ok(q2a=(0.0, "wrong", "returned 3 values; expected 4")))
    c["m19_complex"] = Expect(_swap(RIGHT, "out = q * z\n", "out = q * z + 0j\n"),
                              _ok(q2a=(1.5, "wrong", "complex")))
    c["m20_broadcast"] = Expect(_swap(RIGHT, "dx = dq\n", "dx = dq * np.ones(3)\n"),
                                _ok(q2a=(1.5, "wrong", "wrong shape: expected () (a scalar), got (3,)")))
    c["m21_returns_none"] = Expect(RIGHT.replace(Q2A, "\ndef q2a(x, y, z):\n    out = (x + y) * z\n"),
                                   _ok(q2a=(0.0, "wrong", "returned None (no return statement?)")))
    c["m22_gz_is_z"] = Expect(_swap(RIGHT, "dz = np.zeros_like(z)", "dz = z"), _ok(q2c=(3.75, "wrong", "dz")))
    # every way of not returning
    c["f23_loop_at_import"] = Expect("while True:\n    pass\n" + RIGHT, _all("failed", "time"))
    c["f24_loop_in_function"] = Expect(_swap(RIGHT, "    c = a + b\n    d = z ** 3", "    while True:\n        pass\n"
                                             "    c = a + b\n    d = z ** 3"), _ok(q2b=(0.0, "failed", "time")))
    c["f25_sys_exit"] = Expect(_swap(RIGHT, "    q = x + y\n", "    import sys\n    sys.exit(0)\n"),
                               _ok(q2a=(0.0, "failed", "called sys.exit(0) in q2a")))
    c["f26_sys_exit_at_import"] = Expect("import sys\nsys.exit(0)\n" + RIGHT,
                                         _all("failed", "called sys.exit(0) while"))
    c["f27_os_exit"] = Expect(_swap(RIGHT, "    b = np.sin(y)\n", "    import os\n    os._exit(0)\n"),
                              _ok(q2c=(0.0, "failed", "exited with status 0 before returning")))
    c["f28_2gb_in_function"] = Expect(_swap(RIGHT, "    d = z ** 3\n", "    big = np.ones(2 ** 28)\n    d = z ** 3\n"),
                                      _ok(q2b=(0.0, "failed", "out of memory")))
    c["f29_2gb_at_import"] = Expect("import numpy as np\nbig = np.ones(2 ** 28)\n" + RIGHT,
                                    _all("failed", "out of memory"))
    c["f30_segfault"] = Expect(_swap(RIGHT, "    q = x + y\n", "    import ctypes\n    ctypes.string_at(0)\n"),
                               _ok(q2a=(0.0, "failed", "SIGSEGV")))
    c["f31_syntax_error"] = Expect(RIGHT + "\ndef broken(:\n    pass\n", _all("failed", "SyntaxError"))
    c["f32_missing_q2c"] = Expect("import numpy as np\n" + Q2A + Q2B,
                                  _ok(q2c=(0.0, "failed", "has no function 'q2c'")))
    c["f33_misnamed"] = Expect(RIGHT.replace("def q2a(", "def Q2a("),
                               _ok(q2a=(0.0, "failed", "has no function 'q2a'")))
    c["f34_raises"] = Expect(_swap(RIGHT, "dx = 2 * x * da", "dx = 2 * x * da + 1 // 0"),
                             _ok(q2b=(0.0, "failed", "ZeroDivisionError")))
    c["f35_raises_at_random_inputs"] = Expect(
        _swap(RIGHT, "    a = x ** 2\n", "    if float(x) != 3.0:\n        raise ValueError('only x=3')\n"
                                         "    a = x ** 2\n"), _ok(q2b=(0.0, "failed", "only x=3")))
    c["f36_wrong_arity"] = Expect(_swap(RIGHT, "def q2c(x, y, z):", "def q2c(x, y):\n    z = 2.0"),
                                  _ok(q2c=(0.0, "failed", "takes 2 inputs")))
    c["f37_reads_stdin"] = Expect("name = input('your name? ')\n" + RIGHT, _all("failed", "EOFError"))
    c["f38_empty_file"] = Expect("", _all("failed", "has no function"))
    c["f39_recursion"] = Expect("import sys\nsys.setrecursionlimit(300)  # a quick RecursionError under load\n"
                                + _swap(RIGHT, "def q2a(x, y, z):\n", "def q2a(x, y, z):\n    return q2a(x, y, z)\n"),
                                _ok(q2a=(0.0, "failed", "RecursionError")))
    c["f40_kills_itself"] = Expect(_swap(RIGHT, "    b = np.sin(y)\n",
                                         "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n"),
                                   _ok(q2c=(0.0, "failed", "SIGKILL")))
    assert len(c) == 40
    return c


def write(folder: Path) -> tuple[Path, dict[str, Expect]]:
    """Write the class into ``folder``/submissions and the key into ``folder``/key.py."""
    subs = folder / "submissions"
    subs.mkdir(parents=True)
    (folder / "key.py").write_text(KEY)
    cls = build()
    for sid, e in cls.items():
        if isinstance(e.source, dict):
            (subs / sid).mkdir()
            for name, text in e.source.items():
                (subs / sid / name).write_text(textwrap.dedent(text))
        else:
            (subs / (sid + e.suffix)).write_text(e.source)
    return subs, cls
