"""What the explorer's JSON API computes, independent of any web framework.

:func:`handle` takes a request (``"parse"``, ``"trace"`` or ``"step"`` and its decoded JSON body),
checks it against :class:`Limits`, and answers a JSON-ready dict, or raises :class:`ApiError` (a
4xx status, a message, and where the problem is: a field and a character position). Expressions go
through :mod:`chainrule.expr` (the CLI's parser; nothing is evaluated as Python) and
:func:`chainrule.trace`; every number shown comes from the traced graph and the gate table's own
rules, never from a derivative written here.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..expr import ExprError, Expression, parse, parse_program, parse_value
from ..gates import FAN_OUT
from ..graph import Graph, Node, equation_text, factor_text, fmt_value, local_equation, local_symbol, trace
from ..render import GRAD_COLOR, VALUE_COLOR

__all__ = ["ApiError", "Limits", "handle", "info", "examples", "worksheet_examples", "EXTRA_EXAMPLES", "encode_json"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each is answered with a clear 4xx error when exceeded."""

    max_body_bytes: int = 64 * 1024  # the JSON request body
    max_expression_chars: int = 500  # the expression text
    max_value_chars: int = 2000  # one value typed as text ("pi/2", "[1, 2, 3]")
    max_variables: int = 20
    max_nodes: int = 300  # nodes of the traced graph (inputs, constants and operations)
    max_array_size: int = 1000  # elements of one input array
    max_seconds: float = 10.0  # wall time of one computation (parse, trace, picture, code)
    max_shown_elements: int = 16  # an array longer than this is summarized (shape, first and last 3) per node
    max_response_bytes: int = 2_000_000  # one answer, encoded; past it a 413 error instead
    max_queue: int = 16  # computations waiting for a busy worker; past it a 429 error at once
    max_code_chars: int = 10_000  # a pasted forward+backward function ("check my backward")
    max_program_elements: int = 100_000  # elements of any array such a function makes while it is checked


class ApiError(Exception):
    """A request the API cannot answer: an HTTP status, a short code, a message for people, and
    optionally the request ``field`` at fault and a character ``position`` in it."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 position: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.position = position
        self.detail = detail

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": message, "code": ..., "field"?, "position"?, "detail"?}``."""
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.field is not None:
            out["field"] = self.field
        if self.position is not None:
            out["position"] = self.position
        if self.detail is not None:
            out["detail"] = self.detail
        return out


# ---------------------------------------------------------------------------------------------
# examples: the worksheet's functions (from chainrule.worksheet, the one place they are written
# down), then a few that show the fused/expanded switch, hand staging, fan-out and arrays
# ---------------------------------------------------------------------------------------------

EXTRA_EXAMPLES: list[dict[str, Any]] = [
    {"title": "Q3  sigmoid, expanded into its 4 stages", "expression": "sigmoid(x)", "values": {"x": 2},
     "expand": True, "lr": 0.2},
    {"title": "Q3  sigmoid, fused (one gate)", "expression": "sigmoid(x)", "values": {"x": 2}, "lr": 0.2},
    {"title": "Q2a staged by hand: q = x + y; f = q z", "expression": "q = x + y; f = q * z",
     "values": {"x": 1, "y": 3, "z": 2}},
    {"title": "fan-out: x used twice, x·x + x", "expression": "x * x + x", "values": {"x": 3}},
    {"title": "arrays: mean squared error of w·x against y", "expression": "mean((w*x - y)^2)",
     "values": {"w": 0.5, "x": "[1, 2, 3]", "y": "[2, 4, 6]"}, "lr": 0.05},
    {"title": "CS231n  staged: (x + σ(y)) / (σ(x) + (x + y)²)",
     "expression": "sigy = 1/(1 + exp(-y)); num = x + sigy; sigx = 1/(1 + exp(-x)); xpy = x + y; "
                   "xpysqr = xpy^2; den = sigx + xpysqr; invden = 1/den; f = num * invden",
     "values": {"x": 3, "y": -4}, "practice": True},
    {"title": "CS231n  a neuron: σ(w₀x₀ + w₁x₁ + w₂)", "expression": "sigmoid(w[0]*x[0] + w[1]*x[1] + w[2])",
     "values": {"w": "[2, -3, -3]", "x": "[-1, -2]"}, "practice": True},
]


def worksheet_examples() -> list[dict[str, Any]]:
    """The seed worksheet's functions at its inputs (Q3 with its step size), read from its file."""
    from ..worksheet import examples

    return examples()


def examples() -> list[dict[str, Any]]:
    """The examples menu: title, expression, variables (in order), values, expand, lr."""
    out = []
    worksheet = worksheet_examples()
    for ex in [*worksheet, *EXTRA_EXAMPLES]:
        practice = ex.get("practice", any(ex is w for w in worksheet))  # the worksheet asks to find the answers
        out.append({"title": ex["title"], "expression": ex["expression"],
                    "variables": parse(ex["expression"]).signature(list(ex["values"])), "values": dict(ex["values"]),
                    "expand": ex.get("expand", False), "lr": ex.get("lr", 0.1),
                    "practice": practice})
    return out


def info(limits: Limits) -> dict[str, Any]:
    """What a client may want to know first: the version, the limits, the functions an expression may call."""
    from .. import __version__
    from ..expr import CONSTANTS, FUNCTIONS

    return {"version": __version__, "limits": asdict(limits),
            "functions": {name: f.doc for name, f in FUNCTIONS.items()}, "constants": sorted(CONSTANTS)}


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------

_FIELDS = {
    "parse": {"expression"},
    "trace": {"expression", "values", "expand"},
    "step": {"expression", "values", "expand", "lr"},
    "check": {"expression", "values", "code"},
    "value": {"text"},
}


def handle(kind: str, payload: Any, limits: Limits) -> dict[str, Any]:
    """Answer one API request (``kind`` is ``"parse"``, ``"trace"`` or ``"step"``)."""
    with np.errstate(all="ignore"):  # inf and nan are shown as values, not warned about
        return _handle(kind, payload, limits)


def _handle(kind: str, payload: Any, limits: Limits) -> dict[str, Any]:
    deadline = time.monotonic() + limits.max_seconds
    if kind not in _FIELDS:
        raise ApiError(404, "not_found", f"no API request {kind!r}")
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", f"the request body must be a JSON object, not {_json_kind(payload)}")
    unknown = sorted(set(payload) - _FIELDS[kind])
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field {unknown[0]!r} (this request takes "
                       f"{', '.join(sorted(_FIELDS[kind]))})", field=unknown[0])
    if kind == "value":
        return _typed_value(payload.get("text"), limits)
    expression = _expression(payload, limits)
    if kind == "parse":
        return {"expression": expression.text, "variables": list(expression.variables),
                "output": expression.output, "normalized": expression.normalized, "declared": expression.name}
    values = _values(payload.get("values", {}), expression, limits)
    if kind == "check":
        return _check(expression, values, payload.get("code"), limits)
    expand = payload.get("expand", False)
    if not isinstance(expand, bool):
        raise ApiError(400, "bad_request", f"'expand' must be true or false, not {_json_kind(expand)}",
                       field="expand")
    if kind == "trace":
        graph = _trace(expression, values, expand, limits)
        return _describe(expression, graph, values, limits, deadline)
    lr = _learning_rate(payload.get("lr", 0.1), limits)
    graph = _trace(expression, values, expand, limits)
    grads = graph.grads
    after = {name: np.asarray(v, dtype=np.float64) - lr * np.asarray(grads[name], dtype=np.float64)
             for name, v in values.items()}
    for name, v in after.items():
        if not np.all(np.isfinite(v)):
            raise ApiError(422, "diverged", f"the step sends {name} to {fmt_value(v)}: try a smaller learning rate",
                           field="lr")
    _check_deadline(deadline, limits)
    new_graph = _trace(expression, after, expand, limits)
    out = _describe(expression, new_graph, after, limits, deadline)
    out["step"] = {"lr": lr, "before": {k: _json(v) for k, v in values.items()},
                   "grads": {k: _json(grads[k]) for k in values}, "after": {k: _json(v) for k, v in after.items()},
                   "output_before": _json(graph.value)}
    return out


def _typed_value(text: Any, limits: Limits) -> dict[str, Any]:
    """A value typed on the page (an answer in practice mode: ``0.25``, ``1/e``, ``[1, 2]``), read by
    the command line's value parser."""
    if not isinstance(text, str):
        raise ApiError(400, "bad_request", f"'text' must be text, not {_json_kind(text)}", field="text")
    if len(text) > limits.max_value_chars:
        raise ApiError(413, "value_too_long", f"the value is {len(text)} characters long; the limit is "
                       f"{limits.max_value_chars}", field="text")
    if not text.strip():
        raise ApiError(422, "missing_value", "type a number, like 0.25, 1/4 or e^2", field="text")
    try:
        v = parse_value(text, limits.max_array_size)
    except ExprError as e:
        raise ApiError(422, "invalid_value", e.message, field="text", position=e.position, detail=e.render()) \
            from None
    return {"text": text, "value": _json(v)}


def _check(expression: Expression, values: dict[str, np.ndarray], code: Any, limits: Limits) -> dict[str, Any]:
    """A pasted combined forward+backward function, interpreted (never run as Python) and checked
    against the expression like ``chainrule check``: the report, with the lines to mark."""
    from ..check import check_program

    if not isinstance(code, str):
        raise ApiError(400, "bad_request", f"'code' must be text, not {_json_kind(code)}", field="code")
    if len(code) > limits.max_code_chars:
        raise ApiError(413, "code_too_long", f"the function is {len(code)} characters long; the limit is "
                       f"{limits.max_code_chars}", field="code", position=limits.max_code_chars)
    if not code.strip():
        raise ApiError(422, "empty_code", "paste a function: def f(x, y, z): ... return out, dx, dy, dz",
                       field="code", position=0)
    try:
        program = parse_program(code)
    except ExprError as e:
        raise ApiError(422, "invalid_code", e.message, field="code", position=e.position, detail=e.render()) \
            from None
    try:
        report = check_program(program, lambda order: expression.function(params=order), values,
                               max_elements=limits.max_program_elements)
    except ValueError as e:
        raise ApiError(422, "code_inputs", str(e), field="code") from None
    out = report.to_json()
    out["params"] = list(program.params)
    # the lines to mark: the first wrong step's, else those that assign a wrong returned value
    lines = [report.line] if report.line is not None else []
    assigned = program.assignments()
    for m in report.wrong:
        if not lines and m.name in assigned:
            lines.append(assigned[m.name][-1][0])
    out["lines"] = lines
    return out


def _json_kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", int: "a number",
            float: "a number"}.get(type(v), type(v).__name__)


def _expression(payload: dict[str, Any], limits: Limits) -> Expression:
    if "expression" not in payload:
        raise ApiError(400, "missing_field", "the request needs an 'expression' (text like \"(x + y) * z\")",
                       field="expression")
    text = payload["expression"]
    if not isinstance(text, str):
        raise ApiError(400, "bad_request", f"'expression' must be text, not {_json_kind(text)}",
                       field="expression")
    if len(text) > limits.max_expression_chars:
        raise ApiError(413, "expression_too_long", f"the expression is {len(text)} characters long; the limit is "
                       f"{limits.max_expression_chars}", field="expression", position=limits.max_expression_chars)
    if not text.strip():
        raise ApiError(422, "empty_expression", "type an expression, like (x + y) * z", field="expression",
                       position=0)
    try:
        expression = parse(text)
    except ExprError as e:
        raise _expr_error(e, "expression") from None
    if len(expression.variables) > limits.max_variables:
        raise ApiError(413, "too_many_variables", f"the expression has {len(expression.variables)} variables; "
                       f"the limit is {limits.max_variables}", field="expression")
    return expression


def _expr_error(e: ExprError, field: str) -> ApiError:
    if field == "expression":
        return ApiError(422, "invalid_expression", e.message, field=field, position=e.position, detail=e.render())
    name = field.removeprefix("values.")  # the position is in the value's own text
    return ApiError(422, "invalid_value", f"the value of {name}: {e.message}", field=field, position=e.position,
                    detail=e.render())


def _values(raw: Any, expression: Expression, limits: Limits) -> dict[str, np.ndarray]:
    """One float64 array (0-d or 1-d) per variable, in the expression's order."""
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_request", f"'values' must be an object like {{\"x\": 1}}, not {_json_kind(raw)}",
                       field="values")
    names = expression.variables
    for key in raw:
        if key not in names:
            have = ", ".join(names) if names else "none"
            raise ApiError(422, "unknown_variable", f"a value was given for '{key}', which the expression does "
                           f"not use (its variables: {have})", field=f"values.{key}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in raw:
            raise ApiError(422, "missing_value", f"no value for '{name}'", field=f"values.{name}",
                           position=expression.positions.get(name))
        out[name] = _value(name, raw[name], limits)
    # the function takes its inputs in the order the page's boxes give them (a declared g(x, y) wins)
    return {k: out[k] for k in expression.signature(list(raw))}


def _value(name: str, v: Any, limits: Limits) -> np.ndarray:
    field = f"values.{name}"
    if isinstance(v, str):
        if len(v) > limits.max_value_chars:
            raise ApiError(413, "value_too_long", f"the value of {name} is {len(v)} characters long; the limit "
                           f"is {limits.max_value_chars}", field=field)
        if not v.strip():
            raise ApiError(422, "missing_value", f"no value for '{name}'", field=field)
        try:
            arr = np.asarray(parse_value(v, limits.max_array_size), dtype=np.float64)
        except ExprError as e:
            raise _expr_error(e, field) from None
    elif isinstance(v, list):
        if len(v) > limits.max_array_size:
            raise _array_too_large(name, len(v), limits)
        if not v:
            raise ApiError(422, "invalid_value", f"the list for {name} is empty", field=field)
        bad = [x for x in v if isinstance(x, bool) or not isinstance(x, (int, float))]
        if bad:  # (null is a bad element too: look for one, not for a non-None one)
            raise ApiError(422, "invalid_value", f"{name} must be a number or a flat list of numbers; the list "
                           f"holds {_json_kind(bad[0])}", field=field)
        try:
            arr = np.asarray([float(x) for x in v], dtype=np.float64)
        except OverflowError:
            raise ApiError(422, "invalid_value", f"a number in {name} is too large for a float", field=field) \
                from None
    elif isinstance(v, numbers.Real) and not isinstance(v, bool):
        try:
            arr = np.asarray(float(v), dtype=np.float64)
        except OverflowError:
            raise ApiError(422, "invalid_value", f"{name} is too large for a float", field=field) from None
    else:
        raise ApiError(422, "invalid_value", f"{name} must be a number, a list of numbers or text like \"pi/2\", "
                       f"not {_json_kind(v)}", field=field)
    if arr.ndim > 1:
        raise ApiError(422, "invalid_value", f"{name} must be a number or a flat list of numbers (got an array of "
                       f"shape {arr.shape}); the explorer works on scalars and vectors", field=field)
    if arr.size > limits.max_array_size:
        raise _array_too_large(name, arr.size, limits)
    if not np.all(np.isfinite(arr)):
        raise ApiError(422, "invalid_value", f"{name} must be finite (no inf or nan)", field=field)
    return arr


def _array_too_large(name: str, n: int, limits: Limits) -> ApiError:
    return ApiError(413, "array_too_large", f"{name} has {n} elements; the limit is {limits.max_array_size}",
                    field=f"values.{name}")


def _learning_rate(v: Any, limits: Limits) -> float:
    if isinstance(v, str):
        if len(v) > limits.max_value_chars or not v.strip():
            raise ApiError(422, "invalid_lr", "the learning rate must be a number, like 0.1", field="lr")
        try:
            lr = parse_value(v)
        except ExprError as e:
            raise ApiError(422, "invalid_lr", f"learning rate: {e.message}", field="lr", position=e.position) \
                from None
        if np.ndim(lr) != 0:
            raise ApiError(422, "invalid_lr", "the learning rate must be one number, not a list", field="lr")
        v = float(lr)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ApiError(422, "invalid_lr", f"the learning rate must be a number, not {_json_kind(v)}", field="lr")
    try:
        lr = float(v)  # a 400-digit integer does not fit a float
    except OverflowError:
        raise ApiError(422, "invalid_lr", "the learning rate is too large for a float", field="lr") from None
    if not math.isfinite(lr):
        raise ApiError(422, "invalid_lr", "the learning rate must be finite", field="lr")
    return lr


def _check_deadline(deadline: float, limits: Limits) -> None:
    if time.monotonic() > deadline:
        raise ApiError(422, "timeout", f"the computation took longer than the limit of {limits.max_seconds:g} s")


# ---------------------------------------------------------------------------------------------
# tracing and describing the graph
# ---------------------------------------------------------------------------------------------


def _trace(expression: Expression, values: dict[str, np.ndarray], expand: bool, limits: Limits) -> Graph:
    fn = expression.function(params=list(values), max_elements=limits.max_program_elements)
    try:
        graph = trace(fn, expand=expand, **values)
    except ExprError as e:  # raised while evaluating: the operation at fault is at e.position
        raise ApiError(422, "evaluation_error", f"cannot evaluate the expression at these values: {e.message}",
                       field="expression", position=e.position, detail=e.render()) from None
    except (ValueError, TypeError, ArithmeticError, IndexError) as e:
        raise ApiError(422, "evaluation_error", f"cannot evaluate the expression at these values: {e}",
                       field="values") from None
    if len(graph.nodes) > limits.max_nodes:
        raise ApiError(413, "too_many_nodes", f"the graph has {len(graph.nodes)} nodes; the limit is "
                       f"{limits.max_nodes}", field="expression")
    return graph


def _json(v: Any, shown: int | None = None) -> Any:
    """A value as JSON: a number, or nested lists; inf and nan as the strings "Infinity", "NaN".

    With ``shown``, an array of more elements is summarized as ``{"summary": true, "shape", "size",
    "head", "tail"}`` (its first and last three elements, as the page shows long arrays anyway), so
    the answer's size grows with the number of nodes, not with nodes × elements."""
    if v is None:
        return None
    arr = np.asarray(v)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if arr.ndim == 0:
        x = arr.item()
        if isinstance(x, float) and not math.isfinite(x):
            return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
        return x
    if shown is not None and arr.size > shown:
        flat = arr.ravel()
        return {"summary": True, "shape": list(arr.shape), "size": int(arr.size),
                "head": [_json(x) for x in flat[:3]], "tail": [_json(x) for x in flat[-3:]]}
    return [_json(x) for x in arr]


def encode_json(obj: Any) -> bytes:
    """``obj`` as UTF-8 JSON bytes. A lone surrogate from a request (``"\\ud800"``, echoed in an error
    message) cannot be encoded as UTF-8; it becomes U+FFFD instead of failing the answer."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(_no_surrogates(obj), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(obj: Any) -> Any:
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_surrogates(v) for v in obj]
    return obj


def _node_id(node: Node) -> str:
    """The element id of a node in the picture (``Graph.to_dot`` names them ``node-<name>``)."""
    return f"node-{node.name}"


def _with_values(node: Node) -> str:
    """A node's equation with its operands' values in place of their names (``1 + 3``)."""
    shown = [replace(i, name=fmt_value(i.value)) for i in node.inputs]
    return equation_text(replace(node, inputs=tuple(shown)), bracket_negatives=True)


def _forward_steps(graph: Graph, shown: int) -> list[dict[str, Any]]:
    """Node by node in evaluation order: its equation, the equation with values, and the result; the
    note says the gate's idea in words and its local gradients in the graph's own names
    (``∂t2/∂y = cos(y)``), never the gate table's generic letters."""
    locals_: dict[int, list[str]] = {}
    for step in graph.backward_steps():
        locals_[id(step.node)] = [local_equation(step.node, part, graph.output.name)
                                  for part in step.parts if part.rule is not None]
    steps = []
    for node in graph.nodes:
        if node.kind == "input":
            steps.append({"node": node.name, "text": node.name, "detail": "an input",
                          "value": _json(node.value, shown), "explain": ""})
        elif node.kind == "op":
            assert node.gate is not None
            with_values = _with_values(node)
            steps.append({"node": node.name, "text": f"{node.name} = {equation_text(node)}",
                          "detail": f"= {with_values}", "value": _json(node.value, shown),
                          "explain": "; ".join([node.gate.idea, *locals_.get(id(node), [])]),
                          "hint": f"{node.gate.name} gate: {node.name} = {equation_text(node)} = {with_values}"})
    return steps


def _backward_steps(graph: Graph, shown: int) -> list[dict[str, Any]]:
    """Node by node from the output back, as :meth:`Graph.backward_steps` computed it: for each use
    of the node, the upstream gradient of the op that used it, the gate's local gradient (its rule
    and value) and the gradient it sends back; the node's gradient (from the graph) is their sum."""
    terms: dict[int, list[dict[str, Any]]] = {}
    out = graph.output.name
    for step in graph.backward_steps():
        c = step.node
        assert c.gate is not None
        equation = f"{c.name} = {equation_text(c)}"
        seen: dict[int, int] = {}
        for part in step.parts:
            # x * x: one term per operand slot; the j-th part for x is x's j-th slot
            slots = [k for k, i in enumerate(c.inputs) if i is part.input]
            j = seen[id(part.input)] = seen.get(id(part.input), -1) + 1
            up = fmt_value(step.upstream) if np.size(step.upstream) <= shown else f"∂{out}/∂{c.name}"
            if part.rule is not None:
                local = local_equation(c, part, out)
                at = part.rule_at if part.rule_at is not None else part.rule
                hint = (f"{c.gate.name} gate: the gradient of {part.input.name} through {c.name} is upstream × local "
                        f"= ∂{out}/∂{c.name} × {local_symbol(c, part.input, out)} = {up} × {factor_text(part.rule)}"
                        + (f" = {up} × {factor_text(at)}" if at != part.rule else ""))
            else:
                local = None
                hint = f"{c.gate.explain}; the upstream gradient ∂{out}/∂{c.name} is {up}"
            terms.setdefault(id(part.input), []).append({
                "via": c.name, "operand": slots[j] if len(slots) > 1 else None, "equation": equation,
                "upstream": _json(step.upstream, shown), "rule": part.rule, "rule_at": part.rule_at,
                "local": None if part.rule is None else _json(part.local, shown), "local_equation": local,
                "product": _json(part.grad, shown), "explain": c.gate.idea if part.rule is not None else c.gate.explain,
                "hint": hint,
            })
    steps = []
    for node in reversed(graph.nodes):
        if node.kind == "const" or node.grad is None:
            continue
        if node is graph.output:
            steps.append({"node": node.name, "grad": _json(node.grad, shown), "seed": True, "terms": [],
                          "explain": f"the backward pass starts at the output: ∂{node.name}/∂{node.name} = 1",
                          "hint": f"how much does {node.name} change when {node.name} changes by a little?"})
            continue
        mine = terms.get(id(node), [])  # in the order the backward pass reached them
        explain = FAN_OUT if len(mine) > 1 else ("not used by the output: its gradient is 0" if not mine else "")
        hint = " · ".join(t["hint"] for t in mine) if mine else explain
        if len(mine) > 1:
            hint = f"{node.name} is used {len(mine)} times: add up what comes back through each use. {hint}"
        steps.append({"node": node.name, "grad": _json(node.grad, shown), "seed": False, "terms": mine,
                      "explain": explain, "hint": hint})
    return steps


def _describe(expression: Expression, graph: Graph, values: dict[str, np.ndarray], limits: Limits,
              deadline: float) -> dict[str, Any]:
    shown = limits.max_shown_elements
    nodes = []
    for n in graph.nodes:
        nodes.append({"name": n.name, "id": _node_id(n), "kind": n.kind, "op": n.op,
                      "inputs": [i.name for i in n.inputs], "value": _json(n.value, shown),
                      "grad": _json(n.grad, shown), "shape": list(np.shape(n.value)),
                      "equation": equation_text(n) if n.gate is not None else n.name})
    edges = [{"source": i.name, "target": n.name, "index": k} for n in graph.nodes for k, i in enumerate(n.inputs)]
    out: dict[str, Any] = {
        "expression": expression.text, "normalized": expression.normalized,
        "variables": list(expression.variables), "inputs": list(values), "declared": expression.name,
        "signature": expression.signature_text(list(values)),
        "colors": {"value": VALUE_COLOR, "grad": GRAD_COLOR},  # the picture's label colours, to hide them
        "expand": graph.expand,
        "values": {k: _json(v) for k, v in values.items()},
        "output": graph.output.name, "value": _json(graph.value),
        "grads": {k: _json(v) for k, v in graph.grads.items()},
        "equations": [{"name": n.name, "op": n.op, "text": f"{n.name} = {equation_text(n)}",
                       "value": _json(n.value, shown), "grad": _json(n.grad, shown)} for n in graph.ops],
        "nodes": nodes, "edges": edges,
        "forward": _forward_steps(graph, shown), "backward": _backward_steps(graph, shown),
    }
    _check_deadline(deadline, limits)
    out.update(_views(expression, graph))
    _check_deadline(deadline, limits)
    return out


def _views(expression: Expression, graph: Graph) -> dict[str, Any]:
    """The picture (the same SVG as ``Graph.render``) and the generated combined function. Either may
    fail on its own (no Graphviz installed, say) without taking the rest of the answer with it."""
    out: dict[str, Any] = {"svg": None, "svg_error": None, "source": None, "source_error": None}
    try:
        out["svg"] = graph.svg()
    except Exception as e:  # noqa: BLE001 - reported on the page instead of the picture
        out["svg_error"] = f"no picture: {e}"
    try:
        out["source"] = graph.to_source(expression.name or "f")
    except Exception as e:  # noqa: BLE001 - reported on the page instead of the code
        out["source_error"] = f"could not generate the function: {type(e).__name__}: {e}"
    return out
