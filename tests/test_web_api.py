"""The explorer's JSON API, in-process (Starlette's TestClient; the computations run in the real
worker processes): the worksheet's numbers, the step-by-step passes, and a clear 4xx JSON error for
every kind of bad request, after which the server still answers."""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the explorer needs the web extra: pip install 'chainrule[web]'")
pytest.importorskip("httpx", reason="the API tests need httpx (the test extra)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # newer Starlette prefers httpx2 and says so on import
    from starlette.testclient import TestClient

from chainrule.web import bind_socket, create_app, url_for  # noqa: E402
from chainrule.web.api import EXTRA_EXAMPLES, Limits  # noqa: E402

LIMITS = Limits(max_expression_chars=200, max_nodes=60, max_array_size=50, max_variables=5,
                max_value_chars=100, max_body_bytes=8192, max_code_chars=2000)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(LIMITS, workers=1), base_url="http://127.0.0.1:8000") as c:
        yield c


def trace(client: TestClient, expression: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = client.post("/api/trace", json={"expression": expression, "values": values, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def close(a: Any, b: Any) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9, atol=1e-12))


# ---------------------------------------------------------------------------------------------
# the worksheet's numbers (hand-derived on the worksheet, or closed forms)
# ---------------------------------------------------------------------------------------------


def test_q2a_values_gradients_and_steps(client: TestClient) -> None:
    d = trace(client, "(x + y) * z", {"x": 1, "y": 3, "z": 2})
    assert d["variables"] == ["x", "y", "z"]
    assert d["value"] == 8 and d["output"] == "out"
    assert d["grads"] == {"x": 2, "y": 2, "z": 4}
    assert [e["text"] for e in d["equations"]] == ["t1 = x + y", "out = t1 * z"]
    assert [s["node"] for s in d["forward"]] == ["x", "y", "z", "t1", "out"]
    assert d["forward"][3]["detail"] == "= 1 + 3" and d["forward"][3]["value"] == 4
    steps = {s["node"]: s for s in d["backward"]}
    assert [s["node"] for s in d["backward"]] == ["out", "t1", "z", "y", "x"]
    assert steps["out"]["seed"] and steps["out"]["grad"] == 1
    (t,) = steps["t1"]["terms"]  # ∂out/∂t1 = upstream 1 × local z = 2
    assert (t["via"], t["upstream"], t["rule"], t["local"], t["product"]) == ("out", 1, "z", 2, 2)
    (t,) = steps["z"]["terms"]
    assert (t["rule"], t["local"], t["product"]) == ("t1", 4, 4)
    (t,) = steps["x"]["terms"]  # the add gate passes its upstream gradient 2 on unchanged
    assert (t["via"], t["upstream"], t["local"], t["product"]) == ("t1", 2, 1, 2)
    # every step's terms multiply out and add up to the gradient the graph holds
    for s in d["backward"]:
        if s["terms"]:
            assert close(sum(t["upstream"] * t["local"] for t in s["terms"]), s["grad"])
    # the generated function and the picture, with one element id per node
    assert "def f(x, y, z):" in d["source"] and "return out, dx, dy, dz" in d["source"]
    assert d["svg"] is not None or d["svg_error"]
    if d["svg"] is not None:
        for node in ("x", "y", "z", "t1", "out"):
            assert f'id="node&#45;{node}"' in d["svg"] or f'id="node-{node}"' in d["svg"]
    assert {(e["source"], e["target"]) for e in d["edges"]} == {("x", "t1"), ("y", "t1"), ("t1", "out"),
                                                                 ("z", "out")}


def test_q2b(client: TestClient) -> None:
    d = trace(client, "(x^2 + 2y) z^3", {"x": 3, "y": 1, "z": 2})
    x, y, z = 3.0, 1.0, 2.0
    assert close(d["value"], (x**2 + 2 * y) * z**3)  # 88
    assert close([d["grads"][k] for k in "xyz"], [2 * x * z**3, 2 * z**3, 3 * z**2 * (x**2 + 2 * y)])  # 48, 16, 132


def test_q2c_with_constants_and_an_unused_input(client: TestClient) -> None:
    d = trace(client, "g(x, y, z) = (ln(x) + sin(y))^2 + 4x", {"x": "e", "y": "pi/2", "z": 2})
    assert d["values"]["x"] == pytest.approx(math.e) and d["values"]["y"] == pytest.approx(math.pi / 2)
    assert close(d["value"], 4 + 4 * math.e)
    assert close(d["grads"]["x"], 4 / math.e + 4)
    assert abs(d["grads"]["y"]) < 1e-12  # cos(pi/2)
    assert d["grads"]["z"] == 0
    assert "def g(x, y, z):" in d["source"]


@pytest.mark.parametrize("expand, stages", [(True, 4), (False, 1)])
def test_q3_sigmoid_fused_and_expanded_and_one_step(client: TestClient, expand: bool, stages: int) -> None:
    r = client.post("/api/step", json={"expression": "sigmoid(x)", "values": {"x": 2}, "expand": expand, "lr": 0.2})
    assert r.status_code == 200, r.text
    d = r.json()
    s = 1 / (1 + math.exp(-2))
    assert len(d["step"]["before"]) == 1 and d["step"]["before"]["x"] == 2
    assert d["step"]["grads"]["x"] == pytest.approx(s * (1 - s))  # ≈ 0.105, the worksheet's "around 0.1"
    assert d["step"]["after"]["x"] == pytest.approx(2 - 0.2 * s * (1 - s))  # ≈ 1.979
    assert d["step"]["output_before"] == pytest.approx(s)
    assert d["values"]["x"] == pytest.approx(1.979001, abs=1e-6)
    x1 = d["values"]["x"]
    assert d["value"] == pytest.approx(1 / (1 + math.exp(-x1)))  # recomputed at the new point
    assert len(d["equations"]) == stages
    assert d["expand"] is expand


def test_q2a_gradient_step(client: TestClient) -> None:
    r = client.post("/api/step", json={"expression": "(x + y) * z", "values": {"x": 1, "y": 3, "z": 2}, "lr": "0.1"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert close([d["step"]["after"][k] for k in "xyz"], [0.8, 2.8, 1.6])
    assert close(d["value"], (0.8 + 2.8) * 1.6)
    assert close([d["grads"][k] for k in "xyz"], [1.6, 1.6, 3.6])


def test_q4_complex_layer_against_central_differences(client: TestClient) -> None:
    def f(x: float, y: float) -> float:
        sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        return math.log(x) * sig(math.sqrt(y)) / sig((x + y) ** 2)

    d = trace(client, "ln(x) * sigmoid(sqrt(y)) / sigmoid((x + y)^2)", {"x": 1.5, "y": 0.5})
    h = 1e-6
    assert d["value"] == pytest.approx(f(1.5, 0.5))
    assert d["grads"]["x"] == pytest.approx((f(1.5 + h, 0.5) - f(1.5 - h, 0.5)) / (2 * h), rel=1e-6)
    assert d["grads"]["y"] == pytest.approx((f(1.5, 0.5 + h) - f(1.5, 0.5 - h)) / (2 * h), rel=1e-6)


def test_fan_out_terms_add_up(client: TestClient) -> None:
    d = trace(client, "x * x + x", {"x": 3})
    (step,) = [s for s in d["backward"] if s["node"] == "x"]
    assert step["grad"] == 7  # 2x + 1
    assert len(step["terms"]) == 3  # both slots of the product, and the sum
    assert sorted(t["product"] for t in step["terms"]) == [1, 3, 3]
    assert "add up" in step["explain"]
    assert sorted(t["operand"] for t in step["terms"] if t["via"] == "t1") == [0, 1]  # both slots of x * x


def test_staged_statements_keep_their_names(client: TestClient) -> None:
    d = trace(client, "q = x + y; f = q * z", {"x": 1, "y": 3, "z": 2})
    assert [e["text"] for e in d["equations"]] == ["q = x + y", "f = q * z"]
    assert d["output"] == "f" and d["grads"] == {"x": 2, "y": 2, "z": 4}


def test_arrays(client: TestClient) -> None:
    x, y, w = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), 0.5
    d = trace(client, "mean((w*x - y)^2)", {"w": w, "x": [1, 2, 3], "y": "[2, 4, 6]"})
    assert close(d["value"], np.mean((w * x - y) ** 2))
    assert close(d["grads"]["w"], np.mean(2 * (w * x - y) * x))
    assert close(d["grads"]["x"], 2 * (w * x - y) * w / 3)
    assert close(d["grads"]["y"], -2 * (w * x - y) / 3)


def test_parse_lists_variables_in_order(client: TestClient) -> None:
    r = client.post("/api/parse", json={"expression": "(x^2 + 2y) z^3"})
    assert r.status_code == 200
    assert r.json()["variables"] == ["x", "y", "z"]
    assert r.json()["normalized"] == "(x ** 2 + 2 * y) * z ** 3"


def test_every_example_computes(client: TestClient) -> None:
    r = client.get("/api/examples")
    assert r.status_code == 200
    examples = r.json()
    titles = [ex["title"] for ex in examples]
    # the worksheet's functions first, at the worksheet's inputs
    assert [t.split()[0] for t in titles[:5]] == ["Q2a", "Q2b", "Q2c", "Q3", "Q4"]
    assert len(examples) == 5 + len(EXTRA_EXAMPLES)
    q2b = examples[1]
    assert q2b["values"] == {"x": "3", "y": "1", "z": "2"} and q2b["variables"] == ["x", "y", "z"]
    assert examples[3]["lr"] == 0.2  # Q3's step size
    for ex in examples:
        d = trace(client, ex["expression"], ex["values"], expand=ex["expand"])
        assert d["inputs"] == ex["variables"]  # the boxes' order: the generated function's signature
        assert d["source"] or d["source_error"], ex["title"]


def test_tables_in_the_learners_terms_and_hints(client: TestClient) -> None:
    """Issue 13: each backward term states the local gradient in the graph's names and with the
    numbers (from the gate's rule), and carries a hint for practice mode; forward steps too."""
    d = trace(client, "(x^2 + 2y) z^3", {"x": 3, "y": 1, "z": 2})
    steps = {s["node"]: s for s in d["backward"]}
    (t,) = steps["z"]["terms"]
    assert t["local_equation"] == "∂t4/∂z = 3z² = 3·2² = 12" and t["rule_at"] == "3·2²"
    assert t["explain"] == "pow gate: the exponent comes down, the power drops by one"
    assert t["hint"] == ("pow gate: the gradient of z through t4 is upstream × local = ∂out/∂t4 × ∂t4/∂z = "
                         "11 × 3z² = 11 × 3·2²")
    assert d["forward"][3]["hint"] == "pow gate: t1 = x ** 2 = 3 ** 2"
    assert d["colors"]["value"] and d["colors"]["grad"]


def test_forward_notes_in_the_graphs_own_names(client: TestClient) -> None:
    """The forward step's note states the gate's idea in words and its local gradients on the node's
    own names, as the backward panel does; none of the gate table's generic letters."""
    d = trace(client, "(ln(x) + sin(y))^2 + 4x", {"x": "e", "y": "pi/2"})
    notes = {s["node"]: s["explain"] for s in d["forward"]}
    assert notes["t2"] == "sin gate: the local gradient is the cosine of the input; ∂t2/∂y = cos(y) = cos(1.5708) = 0"
    assert notes["t1"].endswith("; ∂t1/∂x = 1/x = 1/2.71828 = 0.367879")
    d = trace(client, "sigy = 1/(1 + exp(-y)); f = x * sigy", {"x": 3, "y": -4})
    notes = {s["node"]: s["explain"] for s in d["forward"]}
    assert notes["sigy"] == ("div gate: numerator and denominator each have their own rule; "
                             "∂sigy/∂t3 = −1/t3² = −1/55.5982² = -0.000323504")
    d = trace(client, "(x^2 + 2y) z^3", {"x": 3, "y": 1, "z": 2})
    notes = {s["node"]: s["explain"] for s in d["forward"]}
    assert notes["t4"] == "pow gate: the exponent comes down, the power drops by one; ∂t4/∂z = 3z² = 3·2² = 12"
    assert notes["out"].endswith("∂(t3 * t4)/∂t3 = t4 = 8; ∂(t3 * t4)/∂t4 = t3 = 11")
    for note in notes.values():  # the gate table's letters (xʸ, ∂(x/y)) appear nowhere
        assert not re.search(r"ʸ|ˣ|∂\([xy]", note), note


def test_numbers_put_in_bracket_negatives(client: TestClient) -> None:
    """An equation with the numbers in place of the names reads as Python would compute it:
    ``(-1) ** 2`` (``-1 ** 2`` is -1), ``(-3) * (-2)``; a call's own brackets need no more."""
    d = trace(client, "xpy = x + y; xpysqr = xpy^2; t = (2*xpy) * (x*xpy); f = t + exp(xpy) + xpysqr",
              {"x": 3, "y": -4})
    detail = {s["node"]: s["detail"] for s in d["forward"]}
    assert detail["xpy"] == "= 3 + (-4)"
    assert detail["xpysqr"] == "= (-1) ** 2"
    assert "= 2 * (-1)" in detail.values() and "= 3 * (-1)" in detail.values()
    assert "= (-2) * (-3)" in detail.values()
    assert "= exp(-1)" in detail.values()
    for text in detail.values():  # every number put in evaluates, as Python reads it, to the node's value
        assert not re.search(r"(^|[*+/] )-\d", text[2:]), text
    hints = [t["hint"] for s in d["backward"] for t in s["terms"]]
    assert any(h.endswith("= 1 × (−3)") for h in hints), hints


def test_check_my_backward(client: TestClient) -> None:
    code = ("import numpy as np\n\ndef q2a(x, y, z):\n    q = x + y\n    out = q * z\n    dq = z\n"
            "    dz = z\n    return out, dq, dq, dz\n")
    body = {"expression": "(x + y) * z", "values": {"x": 1, "y": 3, "z": 2}, "code": code}
    r = client.post("/api/check", json=body)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["status"] == "wrong" and rep["mistake"] == "wrong_input" and rep["lines"] == [7]
    assert rep["first_wrong_step"]["name"] == "dz" and rep["params"] == ["x", "y", "z"]
    assert rep["feedback"].startswith("for `out = q * z`, the local gradient of z is q, but `dz` uses z")
    r = client.post("/api/check", json={**body, "code": code.replace("dz = z", "dz = q")})
    assert r.json()["status"] == "correct" and len(r.json()["checked"]) == 4
    r = client.post("/api/check", json={**body, "code": code.replace("dz = z", "dz = zz")})
    assert r.json()["status"] == "failed" and r.json()["lines"] == [7]
    assert "line 7: name 'zz' has no value here" in r.json()["failure"]


@pytest.mark.parametrize("code, status, error, position", [
    ("def q2a(x, y, z):\n    import os\n    return x, x, y, z\n", 422, "invalid_code", 22),
    ("def q2a(x, y):\n    return x, x, y\n", 422, "code_inputs", None),
    ("   ", 422, "empty_code", 0),
    ("#" * 2001, 413, "code_too_long", 2000),
    (3, 400, "bad_request", None),
])
def test_check_refuses_code_it_cannot_read(client: TestClient, code: Any, status: int, error: str,
                                           position: int | None) -> None:
    r = client.post("/api/check", json={"expression": "(x + y) * z", "values": {"x": 1, "y": 3, "z": 2},
                                        "code": code})
    assert r.status_code == status and r.json()["code"] == error and r.json()["field"] == "code"
    assert r.json().get("position") == position


def test_typed_values_for_practice(client: TestClient) -> None:
    assert client.post("/api/value", json={"text": "1/e"}).json()["value"] == pytest.approx(math.exp(-1))
    assert client.post("/api/value", json={"text": "[1, 2/4]"}).json()["value"] == [1, 0.5]
    r = client.post("/api/value", json={"text": "2 +"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_value" and r.json()["field"] == "text"
    r = client.post("/api/value", json={"text": "x"})
    assert r.status_code == 422 and "cannot use the name" in r.json()["error"]


def test_info_and_the_page(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["limits"]["max_nodes"] == LIMITS.max_nodes and "sigmoid" in info["functions"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="expression"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# ---------------------------------------------------------------------------------------------
# bad requests: each one a 4xx JSON answer with a message (and where), never a crash
# ---------------------------------------------------------------------------------------------

GOOD = {"expression": "(x + y) * z", "values": {"x": 1, "y": 3, "z": 2}}
LONG_LIST = list(range(LIMITS.max_array_size + 1))
# 7 staged statements of 9 products each: 65 nodes in 159 characters, nested no deeper than 9
MANY_OPS = "; ".join(f"{name}={prev}" + "*y" * 9 for name, prev in zip("abcdfgh", "xabcdfg"))

BAD_BODIES = [
    # (what, route, body, status, code, field)
    ("not an object", "trace", [1, 2], 400, "bad_request", None),
    ("unknown field", "trace", {**GOOD, "expresion": "x"}, 400, "unknown_field", "expresion"),
    ("no expression", "trace", {"values": {}}, 400, "missing_field", "expression"),
    ("expression not text", "trace", {"expression": 3, "values": {}}, 400, "bad_request", "expression"),
    ("expression too long", "trace", {"expression": "x+" * 150 + "x", "values": {"x": 1}}, 413,
     "expression_too_long", "expression"),
    ("empty expression", "trace", {"expression": "  ", "values": {}}, 422, "empty_expression", "expression"),
    ("syntax error", "trace", {"expression": "(x + y", "values": {}}, 422, "invalid_expression", "expression"),
    ("python import", "parse", {"expression": "__import__('os').system('true')"}, 422, "invalid_expression",
     "expression"),
    ("attribute access", "parse", {"expression": "x.__class__"}, 422, "invalid_expression", "expression"),
    ("lambda", "parse", {"expression": "lambda: 1"}, 422, "invalid_expression", "expression"),
    ("string", "parse", {"expression": "'abc'"}, 422, "invalid_expression", "expression"),
    ("unknown function", "parse", {"expression": "open(x)"}, 422, "invalid_expression", "expression"),
    ("variable index", "parse", {"expression": "x[y]"}, 422, "invalid_expression", "expression"),
    ("too many variables", "parse", {"expression": "a+b+c+d+f+g"}, 413, "too_many_variables", "expression"),
    ("too many nodes", "trace", {"expression": MANY_OPS, "values": {"x": 1, "y": 2}}, 413, "too_many_nodes",
     "expression"),
    ("values not an object", "trace", {**GOOD, "values": [1, 3, 2]}, 400, "bad_request", "values"),
    ("missing value", "trace", {**GOOD, "values": {"x": 1, "y": 3}}, 422, "missing_value", "values.z"),
    ("value for no variable", "trace", {**GOOD, "values": {**GOOD["values"], "w": 1}}, 422, "unknown_variable",
     "values.w"),
    ("value is a boolean", "trace", {**GOOD, "values": {"x": True, "y": 3, "z": 2}}, 422, "invalid_value",
     "values.x"),
    ("value is null", "trace", {**GOOD, "values": {"x": None, "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("value is an object", "trace", {**GOOD, "values": {"x": {}, "y": 3, "z": 2}}, 422, "invalid_value",
     "values.x"),
    ("nested list", "trace", {**GOOD, "values": {"x": [[1, 2]], "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("list of text", "trace", {**GOOD, "values": {"x": ["1"], "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("empty list", "trace", {**GOOD, "values": {"x": [], "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("bad value text", "trace", {**GOOD, "values": {"x": "pi/", "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("value uses a name", "trace", {**GOOD, "values": {"x": "y", "y": 3, "z": 2}}, 422, "invalid_value",
     "values.x"),
    ("value text too long", "trace", {**GOOD, "values": {"x": "1+" * 60 + "1", "y": 3, "z": 2}}, 413,
     "value_too_long", "values.x"),
    ("2-d value text", "trace", {**GOOD, "values": {"x": "[[1, 2], [3, 4]]", "y": 3, "z": 2}}, 422,
     "invalid_value", "values.x"),
    ("infinite value", "trace", b'{"expression": "x", "values": {"x": 1e999}}', 422, "invalid_value", "values.x"),
    ("huge integer", "trace", {**GOOD, "values": {"x": 10**400, "y": 3, "z": 2}}, 422, "invalid_value", "values.x"),
    ("array too large", "trace", {**GOOD, "values": {"x": LONG_LIST, "y": 3, "z": 2}}, 413, "array_too_large",
     "values.x"),
    ("shapes that do not fit", "trace", {**GOOD, "values": {"x": [1, 2], "y": [1, 2, 3], "z": 2}}, 422,
     "evaluation_error", "expression"),
    ("expand not a boolean", "trace", {**GOOD, "expand": "yes"}, 400, "bad_request", "expand"),
    ("learning rate text", "step", {**GOOD, "lr": "fast"}, 422, "invalid_lr", "lr"),
    ("learning rate list", "step", {**GOOD, "lr": [0.1]}, 422, "invalid_lr", "lr"),
    ("learning rate boolean", "step", {**GOOD, "lr": True}, 422, "invalid_lr", "lr"),
    ("learning rate infinite", "step", b'{"expression": "x", "values": {"x": 1}, "lr": -1e999}', 422, "invalid_lr",
     "lr"),
    ("learning rate on trace", "trace", {**GOOD, "lr": 0.1}, 400, "unknown_field", "lr"),
    ("step that diverges", "step", {"expression": "exp(x)", "values": {"x": 1}, "lr": 1e308}, 422, "diverged",
     "lr"),
]


def post(client: TestClient, route: str, body: Any) -> Any:
    """POST a body: JSON-encoded, or raw JSON bytes (for numbers Python cannot encode, like 1e999)."""
    if isinstance(body, bytes):
        return client.post(f"/api/{route}", content=body, headers={"content-type": "application/json"})
    return client.post(f"/api/{route}", json=body)


@pytest.mark.parametrize("what, route, body, status, code, field", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_request_gets_a_clear_4xx(client: TestClient, what: str, route: str, body: Any, status: int,
                                      code: str, field: str | None) -> None:
    r = post(client, route, body)
    assert r.status_code == status, r.text[:300]
    err = r.json()
    assert err["code"] == code
    assert isinstance(err["error"], str) and len(err["error"]) > 10
    assert err.get("field") == field


def test_expression_errors_point_at_the_character(client: TestClient) -> None:
    r = client.post("/api/parse", json={"expression": "(x + y) * z + import"})
    err = r.json()
    assert r.status_code == 422 and err["position"] == 14  # the 'import' keyword
    assert "^" in err["detail"]
    r = client.post("/api/trace", json={"expression": "ln(x) + foo(y)", "values": {"x": 1, "y": 1}})
    assert r.json()["position"] == 8 and "foo" in r.json()["error"]


@pytest.mark.parametrize("content, ctype, status, code", [
    (b'{"expression": "x"', "application/json", 400, "bad_json"),
    (b'{"expression": "x", "values": {"x": NaN}}', "application/json", 400, "bad_json"),
    (b"\xff\xfe", "application/json", 400, "bad_json"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 413, "request_too_large"),
    (b"[" * 4000 + b"]" * 4000, "application/json", 400, None),
    (b'{"expression": "x"}', "text/plain", 415, "not_json"),
    (b"x" * (LIMITS.max_body_bytes + 1), "application/json", 413, "request_too_large"),
], ids=["truncated", "NaN literal", "not utf-8", "too large", "deeply nested", "not json type", "huge body"])
def test_bad_bodies(client: TestClient, content: bytes, ctype: str, status: int, code: str | None) -> None:
    r = client.post("/api/trace", content=content, headers={"content-type": ctype})
    assert r.status_code == status, r.text[:300]
    if code is not None:
        assert r.json()["code"] == code
    assert r.json()["error"]


def test_body_too_large_without_content_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # sent chunked: the size is only known while reading
        for _ in range(10):
            yield b" " * 1024

    r = client.post("/api/trace", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "request_too_large"


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get("/api/trace")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_other_host_names_are_refused(client: TestClient) -> None:
    # a page elsewhere that rebinds its own name to 127.0.0.1 still sends its own name as Host
    r = client.post("/api/trace", json=GOOD, headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and r.json()["code"] == "bad_host"
    assert client.get("/", headers={"host": "[::1]:8000"}).status_code == 200


def test_server_still_answers_after_bad_requests(client: TestClient) -> None:
    for body in BAD_BODIES:
        post(client, body[1], body[2])
    assert trace(client, **{"expression": GOOD["expression"], "values": GOOD["values"]})["value"] == 8


def test_time_limit_stops_the_computation() -> None:
    # a limit no computation can meet: the worker is killed and the request answered 422
    with TestClient(create_app(Limits(max_seconds=1e-9), workers=1), base_url="http://localhost") as c:
        for _ in range(2):
            r = c.post("/api/trace", json=GOOD)
            assert r.status_code == 422 and r.json()["code"] == "timeout"
            assert "limit of 1e-09 s" in r.json()["error"]
        assert c.get("/api/info").status_code == 200  # the server itself is fine


def test_a_dead_worker_is_replaced(client: TestClient) -> None:
    pool = client.app.state.pool  # type: ignore[attr-defined]
    for w in pool._all:
        w._proc.kill()
        w._proc.wait(timeout=10)
    assert trace(client, GOOD["expression"], GOOD["values"])["value"] == 8


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def test_serve_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    from chainrule.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--host" in out and "127.0.0.1" in out and "--port" in out and "8000" in out


def test_address_and_port_in_use() -> None:
    assert url_for("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert url_for("::1", 8000) == "http://[::1]:8000"
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="try --port"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()


def test_serve_without_the_web_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from chainrule.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if uvicorn were not installed
    assert main(["serve", "--port", "0"]) == 1
    assert "pip install 'chainrule[web]'" in capsys.readouterr().err

