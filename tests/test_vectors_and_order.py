"""Issue 13, items 5 and 6: the generated function takes its inputs in the order the user gave them
(a declared signature wins), and expressions index vectors (``w[0]``), multiply them (``w @ x``) and
sum them, so CS231n's neuron can be typed, graphed, generated and checked.

Reference numbers are CS231n's (the staged sigmoid example at x = 3, y = -4, and the 2-input neuron
at w = [2, -3, -3], x = [-1, -2]), recomputed here in closed form."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chainrule import cli
from chainrule.expr import ExprError, parse, parse_values
from chainrule.graph import trace

CS231N = ("sigy = 1/(1+exp(-y)); num = x + sigy; sigx = 1/(1+exp(-x)); xpy = x + y; xpysqr = xpy^2; "
          "den = sigx + xpysqr; invden = 1/den; f = num*invden")
NEURON = "sigmoid(w[0]*x[0] + w[1]*x[1] + w[2])"


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def cs231n_closed_form(x: float, y: float) -> tuple[float, float, float]:
    """f = (x + σ(y)) / (σ(x) + (x + y)²) and its partial derivatives, by the quotient rule."""
    num, den = x + sig(y), sig(x) + (x + y) ** 2
    dnum_dx, dnum_dy = 1.0, sig(y) * (1 - sig(y))
    dden_dx, dden_dy = sig(x) * (1 - sig(x)) + 2 * (x + y), 2 * (x + y)
    return (num / den, (dnum_dx * den - num * dden_dx) / den**2, (dnum_dy * den - num * dden_dy) / den**2)


def neuron_closed_form(w: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    f = sig(float(w[0] * x[0] + w[1] * x[1] + w[2]))
    d = f * (1 - f)
    return f, np.array([x[0] * d, x[1] * d, d]), np.array([w[0] * d, w[1] * d])


def grad_json(capsys: Any, *argv: str) -> dict[str, Any]:
    assert cli.main(["grad", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def generated(capsys: Any, name: str, *argv: str) -> Any:
    """The function ``chainrule grad ... --code NAME --quiet`` prints, compiled (chainrule's own output)."""
    assert cli.main(["grad", *argv, "--code", name, "--quiet"]) == 0
    namespace: dict[str, Any] = {}
    exec(compile(capsys.readouterr().out, "<generated>", "exec"), namespace)  # noqa: S102 - our generated code
    return namespace[name]


# ---------------------------------------------------------------------------------------------
# item 5: argument order
# ---------------------------------------------------------------------------------------------


def test_cs231n_staged_example_takes_its_inputs_in_at_order(capsys: Any) -> None:
    f_, dfx, dfy = cs231n_closed_form(3.0, -4.0)
    assert (round(f_, 10), round(dfx, 10), round(dfy, 10)) == (1.5456448841, 2.0595697956, 1.5922327515)
    doc = grad_json(capsys, CS231N, "--at", "x=3", "y=-4", "--code", "cs231n")
    assert doc["signature"] == "cs231n(x, y)"
    assert "def cs231n(x, y):" in doc["code"]
    assert list(doc["inputs"]) == ["x", "y"] and list(doc["gradients"]) == ["x", "y"]
    assert doc["output"]["value"] == pytest.approx(f_, abs=1e-10)
    assert doc["gradients"]["x"] == pytest.approx(dfx, abs=1e-10)
    assert doc["gradients"]["y"] == pytest.approx(dfy, abs=1e-10)
    # a student calls it as the header says, cs231n(3, -4), and gets the right numbers
    fn = generated(capsys, "cs231n", CS231N, "--at", "x=3", "y=-4")
    out, dx, dy = fn(np.float64(3.0), np.float64(-4.0))
    assert (float(out), float(dx), float(dy)) == pytest.approx((f_, dfx, dfy), abs=1e-12)
    # the header states the signature before anything else
    assert cli.main(["grad", CS231N, "--at", "x=3", "y=-4", "--code", "cs231n", "--plain"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("cs231n(x, y): sigy = ") and first.endswith("at x = 3, y = -4")


def test_at_order_reversed_reverses_the_signature(capsys: Any) -> None:
    fn = generated(capsys, "g", CS231N, "--at", "y=-4", "x=3")
    _, dy, dx = fn(np.float64(-4.0), np.float64(3.0))
    _, dfx, dfy = cs231n_closed_form(3.0, -4.0)
    assert (float(dx), float(dy)) == pytest.approx((dfx, dfy), abs=1e-12)


def test_a_declared_signature_wins_over_at_order(capsys: Any) -> None:
    doc = grad_json(capsys, "g(x, y, z) = (x + y) * z", "--at", "z=2", "y=3", "x=1", "--code", "q2a")
    assert doc["signature"] == "g(x, y, z)" and "def q2a(x, y, z):" in doc["code"]
    assert doc["gradients"] == {"x": 2.0, "y": 2.0, "z": 4.0}


def test_step_columns_follow_at_order(capsys: Any) -> None:
    assert cli.main(["step", "x * y", "--at", "y=2", "x=1", "--plain"]) == 0
    header = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("step")][0]
    assert header.split()[:3] == ["step", "y", "x"]


def test_signature_helpers() -> None:
    e = parse("q = x + y; f = q * z")
    assert e.signature(["z", "x", "y"]) == ["z", "x", "y"]
    assert e.signature([]) == ["x", "y", "z"]
    assert e.signature(["y", "w"]) == ["y", "w", "x", "z"]  # w: an unused input, kept where it was given
    assert e.header(["z", "x", "y"], "f2") == "f2(z, x, y): q = x + y; f = q * z"
    declared = parse("g(x, y) = x * y")
    assert declared.signature(["y", "x"]) == ["x", "y"] and declared.header(["y", "x"]) == "g(x, y) = x * y"


# ---------------------------------------------------------------------------------------------
# item 6: indexing and vectors
# ---------------------------------------------------------------------------------------------


def test_neuron_values_and_gradients(capsys: Any) -> None:
    w, x = np.array([2.0, -3.0, -3.0]), np.array([-1.0, -2.0])
    f_, dw, dx = neuron_closed_form(w, x)
    doc = grad_json(capsys, NEURON, "--at", "w=[2,-3,-3]", "x=[-1,-2]", "--code", "neuron")
    assert round(doc["output"]["value"], 4) == 0.7311
    assert doc["output"]["value"] == pytest.approx(f_, abs=1e-12)
    assert np.allclose(doc["gradients"]["w"], dw, atol=1e-12) and np.allclose(doc["gradients"]["x"], dx, atol=1e-12)
    assert np.allclose(doc["gradients"]["w"], [-0.197, -0.393, 0.197], atol=5e-4)
    assert np.allclose(doc["gradients"]["x"], [0.393, -0.590], atol=5e-4)
    # one node per element used: w[0], w[1], w[2], x[0], x[1]
    picks = [s for s in doc["staged"] if s["op"] == "getitem"]
    assert [s["inputs"][0] for s in picks].count("w") == 3 and len(picks) == 5
    assert "def neuron(w, x):" in doc["code"]
    fn = generated(capsys, "neuron", NEURON, "--at", "w=[2,-3,-3]", "x=[-1,-2]")
    out, gw, gx = fn(w, x)
    assert float(out) == pytest.approx(f_) and np.allclose(gw, dw) and np.allclose(gx, dx)


@pytest.mark.parametrize("text", ["sigmoid(w[:2] @ x + w[2])", "sigmoid(sum(w[0:2] * x) + w[-1])",
                                  "d = w[0] x[0] + w[1] x[1]; f = sigmoid(d + w[2])"])
def test_the_neuron_written_other_ways(text: str) -> None:
    e = parse(text)
    vals = parse_values(["w=[2,-3,-3]", "x=[-1,-2]"], e)
    g = trace(e.function(), **vals)
    f_, dw, dx = neuron_closed_form(vals["w"], vals["x"])
    assert float(g.value) == pytest.approx(f_)
    assert np.allclose(g.grads["w"], dw) and np.allclose(g.grads["x"], dx)


def test_matrix_index_and_matmul() -> None:
    e = parse("W[1, 0] * sum(W @ x)")
    W, x = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 6.0])
    g = trace(e.function(), W=W, x=x)
    s = float((W @ x).sum())
    assert float(g.value) == pytest.approx(3 * s)
    dW = 3 * np.outer(np.ones(2), x)
    dW[1, 0] += s
    assert np.allclose(g.grads["W"], dW) and np.allclose(g.grads["x"], 3 * W.sum(axis=0))


@pytest.mark.parametrize("text, at, message, position", [
    ("w[5] * x", ["w=[1,2,3]", "x=1"], "out of bounds", 0),
    ("x * w[0]", ["w=2", "x=1"], "a single number cannot be indexed", 4),
    ("w @ x", ["w=2", "x=1"], "@ multiplies vectors", 2),
])
def test_index_mistakes_point_at_the_operation(text: str, at: list[str], message: str, position: int) -> None:
    e = parse(text)
    with pytest.raises(ExprError) as info:
        trace(e.function(), **parse_values(at, e))
    assert message in info.value.message and info.value.position == position
    assert " at <" not in info.value.message  # no engine-internal location


def test_check_compares_functions_of_vectors(tmp_path: Path, capsys: Any) -> None:
    sol = tmp_path / "neuron.py"
    sol.write_text(
        "import numpy as np\n\n"
        "def neuron(w, x):\n"
        "    dot = w[0]*x[0] + w[1]*x[1] + w[2]\n"
        "    f = 1.0 / (1 + np.exp(-dot))\n"
        "    ddot = (1 - f) * f\n"
        "    dx = np.array([w[0] * ddot, w[1] * ddot])\n"
        "    dw = np.array([x[0] * ddot, x[1] * ddot, 1.0 * ddot])\n"
        "    return f, dw, dx\n\n"
        "def swapped(w, x):\n"
        "    dot = w[0]*x[0] + w[1]*x[1] + w[2]\n"
        "    f = 1.0 / (1 + np.exp(-dot))\n"
        "    ddot = (1 - f) * f\n"
        "    dx = np.array([x[0] * ddot, x[1] * ddot])\n"
        "    dw = np.array([x[0] * ddot, x[1] * ddot, 1.0 * ddot])\n"
        "    return f, dw, dx\n")
    at = ["--against", NEURON, "--at", "w=[2,-3,-3]", "x=[-1,-2]", "--json"]
    assert cli.main(["check", f"{sol}:neuron", *at]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "correct" and len(doc["checked"]) == 4
    assert cli.main(["check", f"{sol}:swapped", *at]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["index"]) for m in doc["wrong"]] == [("dx", [0])]
    assert doc["wrong"][0]["expected"] == pytest.approx(2 * 0.196612, abs=1e-6)


def test_the_markdown_report_states_rules_in_its_own_names(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """Issue 13 item 3: the worksheet's Markdown report has the same tables as the CLI (pictures
    left out here: the renderer is switched off, so the report holds DOT and solves fast)."""
    from chainrule import render

    def no_engine(*args: Any, **kwargs: Any) -> Any:
        raise render.RenderError("no layout program in this test")

    monkeypatch.setattr(render, "find_engine", no_engine)
    monkeypatch.setattr(render, "layout", no_engine)
    assert cli.main(["worksheet", "--out", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    md = (tmp_path / "w" / "worksheet.md").read_text()
    assert "local     ∂t2/∂y = cos(y) = cos(1.5708) = 0   →  ∂out/∂y = 4 × 0 = 0" in md
    assert "local     ∂t4/∂z = 3z² = 3·2² = 12" in md
    # beside it, the gate's idea in words, not its generic letters (∂(xʸ)/∂x = y·xʸ⁻¹)
    assert "      pow gate: the exponent comes down, the power drops by one\n      local     ∂t4/∂z" in md
