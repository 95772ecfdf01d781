"""Issue 13 item 2: a combined forward+backward function pasted into the explorer is read by a safe
parser (a Python subset, interpreted with NumPy, never run as Python) and checked like `chainrule check`."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.check import check_program
from chainrule.expr import ExprError, ProgramError, parse, parse_program

Q2A = """\
import numpy as np

# inputs: NumPy arrays `x`, `y`, `z` of identical size
def q2a(x, y, z):
    \"\"\"the worksheet's Q2(a)\"\"\"
    q = x + y
    out = q * z
    dout = np.ones_like(out)
    dq = dout * z
    dz = dout * q
    fx, fy = dq, dq
    return out, fx, fy, dz
"""

# the worksheet's Q4, with its helper function
Q4 = """\
import numpy as np

def sigmoid(x):
    return 1/(1 + np.exp(-x))

def complex_layer(x, y):
    a = np.log(x)
    b = np.sqrt(y)
    c = sigmoid(b)
    d = x + y
    e = d ** 2
    g = sigmoid(e)
    h = a * c
    out = h / g
    dh = 1 / g
    dg = -h / g ** 2
    de = dg * g * (1 - g)
    dd = de * 2 * d
    dc = dh * a
    da = dh * c
    db = dc * c * (1 - c)
    fx = da / x
    fx += dd
    fy = db * 0.5 / b
    fy += dd
    return out, fx, fy
"""


def reference(text: str):
    e = parse(text)
    return lambda order: e.function(params=order)


def test_a_right_solution_is_correct_everywhere() -> None:
    prog = parse_program(Q2A)
    assert prog.name == "q2a" and prog.params == ["x", "y", "z"]
    rep = check_program(prog, reference("(x + y) * z"), {"x": 1.0, "y": 3.0, "z": 2.0})
    assert rep.ok and len(rep.checked) == 4, str(rep)
    call = prog.call([np.array(1.0), np.array(3.0), np.array(2.0)])
    assert [float(v) for v in call.result] == [8.0, 2.0, 2.0, 4.0]
    assert call.holders[1] == ["dq", "fx", "fy"] and call.holders[3] == ["dz"]


def test_helper_functions_and_augmented_assignment() -> None:
    rep = check_program(parse_program(Q4), reference("ln(x) * sigmoid(sqrt(y)) / sigmoid((x + y)^2)"),
                        {"x": [1.5, 2.0], "y": [0.5, 1.0]})
    assert rep.ok, str(rep)
    wrong = Q4.replace("dd = de * 2 * d", "dd = de * d")
    rep = check_program(parse_program(wrong), reference("ln(x) * sigmoid(sqrt(y)) / sigmoid((x + y)^2)"),
                        {"x": [1.5, 2.0], "y": [0.5, 1.0]})
    assert rep.status == "wrong" and rep.first_wrong_step.name == "dd" and rep.mistake == "missing_factor"
    assert rep.line == wrong.splitlines().index("    dd = de * d") + 1


def test_inputs_by_name_or_by_position() -> None:
    prog = parse_program("def f(a, b, c):\n    s = a + b\n    return s * c, c, c, s\n")
    rep = check_program(prog, reference("(x + y) * z"), {"x": 1.0, "y": 3.0, "z": 2.0})
    assert rep.ok, str(rep)  # by position: f's a, b, c are x, y, z
    prog = parse_program("def f(x, y):\n    return x * y, y, x\n")
    with pytest.raises(ValueError, match=r"takes 2 inputs, but the function above has 3"):
        check_program(prog, reference("(x + y) * z"), {"x": 1.0, "y": 3.0, "z": 2.0})


def test_in_place_addition_follows_numpy() -> None:
    """`dx = dq; dx += 1` changes dq too when dq is an array (NumPy's += is in place): as in Python."""
    prog = parse_program("import numpy as np\ndef f(x):\n    dq = np.ones_like(x)\n    dx = dq\n"
                         "    dx += 1\n    return dq, dx\n")
    dq, dx = prog.call([np.array([1.0, 2.0])]).result
    assert dq is dx and np.array_equal(dq, [2.0, 2.0])


def test_vectors_indexing_and_np_array() -> None:
    prog = parse_program("import numpy as np\n\ndef neuron(w, x):\n    dot = w[0]*x[0] + w[1]*x[1] + w[2]\n"
                         "    f = 1.0 / (1 + np.exp(-dot))\n    ddot = (1 - f) * f\n"
                         "    dx = np.array([w[0] * ddot, w[1] * ddot])\n"
                         "    dw = np.array([x[0] * ddot, x[1] * ddot, 1.0 * ddot])\n    return f, dw, dx\n")
    rep = check_program(prog, reference("sigmoid(w[0]*x[0] + w[1]*x[1] + w[2])"),
                        {"w": [2.0, -3.0, -3.0], "x": [-1.0, -2.0]})
    assert rep.ok, str(rep)


REJECTED = [
    ("import os\ndef f(x):\n    return x\n", "only `import numpy as np`", 0),
    ("from numpy import exp\ndef f(x):\n    return x\n", "only `import numpy as np`", 0),
    ("def f(x):\n    for i in x:\n        pass\n    return x\n", "`for` is not supported", 14),
    ("def f(x):\n    if x:\n        pass\n    return x\n", "`if` is not supported", 14),
    ("def f(x):\n    return x.sum()\n", "attributes are not supported", 21),
    ("def f(x):\n    return x.__class__\n", "attributes are not supported", 21),
    ("def f(x):\n    return open(x)\n", "unknown function 'open'", 21),
    ("def f(x):\n    return __import__('os')\n", "unknown function '__import__'", 21),
    ("def f(x):\n    return np.lib.stride_tricks.as_strided(x)\n", "is not available here", 21),
    ("def f(x):\n    return np.save('a', x)\n", "np.save is not available", 21),
    ("def f(x):\n    return 'x'\n", "only numbers", 21),
    ("def f(x):\n    return lambda: x\n", "lambda expressions are not supported", 21),
    ("def f(x):\n    return [i for i in x]\n", "listcomp expressions are not supported", 21),
    ("def f(x):\n    y = x[x > 0]\n    return y\n", "whole number", 20),
    ("def f(x):\n    x.a = 1\n    return x\n", "must be a name", 14),
    ("def f(*x):\n    return x\n", "plain inputs only", 0),
    ("@staticmethod\ndef f(x):\n    return x\n", "plain inputs only", 14),
    ("x = 1\n", "only `import numpy as np` and function definitions", 0),
    ("def f(x):\n    global y\n    return x\n", "global statements", 14),
    ("def f(x):\n    return x +\n", "invalid syntax", 24),
    ("def f(x):\n    return f(x)\n", "unknown function 'f'; define it above", 21),
    ("", "no function", 0),
    ("def f():\n    return 1\n", "takes no inputs", 0),
]


@pytest.mark.parametrize("text, message, position", REJECTED)
def test_rejected_with_a_position(text: str, message: str, position: int) -> None:
    with pytest.raises(ExprError) as info:
        parse_program(text)
    assert message in info.value.message
    assert info.value.position == position, info.value.render()


@pytest.mark.parametrize("body, message, line", [
    ("    y = z + 1\n    return y\n", "name 'z' has no value here", 2),
    ("    y = np.ones((10**9,))\n    return y\n", "at most 100,000", 2),
    ("    y = np.reshape(x, (-1, 1)) + x\n    z = np.reshape(y, (-1, 1)) + np.reshape(y, (1, -1))\n    return z\n",
     "this makes an array of shape (40000, 40000); at most 100,000 elements", 3),
    ("    y = x @ np.ones(3)\n    return y\n", "matmul", 2),
    ("    y = x[500]\n    return y\n", "out of bounds", 2),
    ("    y += 1\n    return y\n", "y has no value yet", 2),
    ("    a, b = x\n    return a\n", "2 names on the left, 1 value", 2),
])
def test_runtime_failures_name_the_line(body: str, message: str, line: int) -> None:
    prog = parse_program("import numpy as np\ndef f(x):\n" + body)
    with pytest.raises(ProgramError) as info:
        prog.call([np.arange(200.0)], max_elements=100_000)
    assert message in info.value.message and info.value.line == line + 1, info.value.message


def test_a_failing_program_is_a_failed_report_with_its_line() -> None:
    prog = parse_program("def f(x, y, z):\n    q = x + y\n    return q * z, dq, dq, q\n")
    rep = check_program(prog, reference("(x + y) * z"), {"x": 1.0, "y": 3.0, "z": 2.0})
    assert rep.status == "failed" and rep.line == 3
    assert rep.failure == "f failed on line 3: name 'dq' has no value here"


def test_huge_integer_powers_are_floats() -> None:
    prog = parse_program("def f(x):\n    return 10 ** 10 ** 10 * x\n")
    assert np.isinf(prog.call([np.array(1.0)]).result)


def test_nothing_is_executed() -> None:
    """A program that would have side effects in Python is refused before anything runs."""
    with pytest.raises(ExprError):
        parse_program("import numpy as np\ndef f(x):\n    np.save('/tmp/x', x)\n    return x\n")
