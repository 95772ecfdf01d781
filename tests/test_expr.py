"""The expression parser: golden parses, values against closed forms, every rejected form, and fuzzing."""

from __future__ import annotations

import builtins
import contextlib
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.expr import (
    CONSTANTS,
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    ExprError,
    Expression,
    parse,
    parse_value,
    parse_values,
)

# ---------------------------------------------------------------------------------------------
# golden parses: how the text is read, its variables and its output
# ---------------------------------------------------------------------------------------------

GOLDEN = [
    ("(x + y) * z", "(x + y) * z", ["x", "y", "z"], "out"),
    ("(x^2 + 2y) z^3", "(x ** 2 + 2 * y) * z ** 3", ["x", "y", "z"], "out"),
    ("(ln(x) + sin(y))^2 + 4x", "(ln(x) + sin(y)) ** 2 + 4 * x", ["x", "y"], "out"),
    ("sigmoid(x)", "sigmoid(x)", ["x"], "out"),
    ("q = x + y; f = q * z", "q = x + y; f = q * z", ["x", "y", "z"], "f"),
    ("a = -x\nb = exp(a)\nc = 1 + b\nd = c^-1", "a = -x; b = exp(a); c = 1 + b; d = c ** (-1)", ["x"], "d"),
    ("2 pi x", "2 * pi * x", ["x"], "out"),
    ("2pi", "2 * pi", [], "out"),
    ("x y z", "x * y * z", ["x", "y", "z"], "out"),
    ("(x+1)(x-1)", "(x + 1) * (x - 1)", ["x"], "out"),
    ("2(x+1)", "2 * (x + 1)", ["x"], "out"),
    ("-x^2", "-x ** 2", ["x"], "out"),
    ("x^y^2", "x ** y ** 2", ["x", "y"], "out"),
    ("x**2", "x ** 2", ["x"], "out"),
    ("x² + 3x y", "x ** 2 + 3 * x * y", ["x", "y"], "out"),
    ("2e3 * x", "2000.0 * x", ["x"], "out"),
    ("2e x", "2 * e * x", ["x"], "out"),
    ("max(x, y, 0)", "max(x, y, 0)", ["x", "y"], "out"),
    ("sqrt(abs(w)) + tanh(b) - relu(w)", "sqrt(abs(w)) + tanh(b) - relu(w)", ["w", "b"], "out"),
    ("g(x, y, z) = (ln(x) + sin(y))^2 + 4x", "g(x, y, z) = (ln(x) + sin(y)) ** 2 + 4 * x", ["x", "y", "z"], "out"),
    ("f(b, a) = a - b", "f(b, a) = a - b", ["b", "a"], "out"),
    ("  ;x + 1;;\n", "x + 1", ["x"], "out"),
    ("t = (x\n + y)\nt * 2", "t = x + y; t * 2", ["x", "y"], "out"),
    ("x × y − z ÷ w", "x * y - z / w", ["x", "y", "z", "w"], "out"),
    ("2π r", "2 * pi * r", ["r"], "out"),
]


@pytest.mark.parametrize("text, normalized, variables, output", GOLDEN)
def test_golden_parse(text: str, normalized: str, variables: list[str], output: str) -> None:
    e = parse(text)
    assert e.normalized == normalized
    assert e.variables == variables
    assert e.output == output


CLOSED_FORMS = [
    ("(x + y) * z", lambda x, y, z: (x + y) * z),
    ("(x^2 + 2y) z^3", lambda x, y, z: (x ** 2 + 2 * y) * z ** 3),
    ("(ln(x) + sin(y))^2 + 4x", lambda x, y: (np.log(x) + np.sin(y)) ** 2 + 4 * x),
    ("sigmoid(x)", lambda x: 1 / (1 + np.exp(-x))),
    ("a = -x; b = exp(a); c = 1 + b; d = c^-1", lambda x: 1 / (1 + np.exp(-x))),
    ("ln(x) sigmoid(sqrt(y)) / sigmoid((x + y)^2)",
     lambda x, y: np.log(x) * (1 / (1 + np.exp(-np.sqrt(y)))) / (1 / (1 + np.exp(-(x + y) ** 2)))),
    ("-x^2 + 2^-1 x", lambda x: -(x ** 2) + 0.5 * x),
    ("x^y^2", lambda x, y: x ** (y ** 2)),
    ("max(x, y, 1) - min(x, y)", lambda x, y: np.maximum(np.maximum(x, y), 1) - np.minimum(x, y)),
    ("cos(x) tan(y) - log(x) + exp(y) / 2 + abs(x - 3) + tanh(y) + relu(x - 1)",
     lambda x, y: np.cos(x) * np.tan(y) - np.log(x) + np.exp(y) / 2 + abs(x - 3) + np.tanh(y) + max(x - 1, 0)),
    ("2 pi x + e", lambda x: 2 * math.pi * x + math.e),
]


@pytest.mark.parametrize("text, closed", CLOSED_FORMS)
def test_values_match_closed_forms(text: str, closed, rng) -> None:
    e = parse(text)
    for _ in range(3):
        point = {v: float(rng.uniform(0.3, 1.7)) for v in e.variables}
        got = e.function()(**point)
        assert np.allclose(np.asarray(getattr(got, "data", got)), closed(**point), rtol=1e-12)
        # positional, in the order of `variables`, gives the same
        got2 = e.function()(*point.values())
        assert np.allclose(np.asarray(getattr(got2, "data", got2)), closed(**point), rtol=1e-12)


def test_gradients_match_central_differences() -> None:
    e = parse("ln(x) sigmoid(sqrt(y)) / sigmoid((x + y)^2)")
    assert cr.gradcheck(e.function(), np.array([1.5, 2.0]), np.array([0.5, 1.0]))


def test_trace_names_follow_the_users_staging() -> None:
    e = parse("q = x + y; f = q * z")
    g = cr.trace(e.function(), x=1.0, y=3.0, z=2.0)
    assert [(n.name, n.op, [i.name for i in n.inputs]) for n in g.ops] == [
        ("q", "add", ["x", "y"]), ("f", "mul", ["q", "z"])]
    assert g.output.name == "f"
    assert float(g.output.value) == 8.0
    assert {k: float(v) for k, v in g.grads.items()} == {"x": 2.0, "y": 2.0, "z": 4.0}


def test_worksheet_q3_staging_keeps_its_names() -> None:
    g = cr.trace(parse("a = -x; b = exp(a); c = 1 + b; d = c^-1").function(), x=2.0)
    assert [n.name for n in g.ops] == ["a", "b", "c", "d"]
    s = 1 / (1 + math.exp(-2.0))
    assert float(g.inputs[0].grad) == pytest.approx(s * (1 - s), rel=1e-12)


def test_constants_fold_and_appear_as_constants() -> None:
    g = cr.trace(parse("y - pi/2").function(), y=1.0)
    assert len(g.ops) == 1 and g.ops[0].op == "sub"
    assert [n.kind for n in g.ops[0].inputs] == ["input", "const"]
    assert float(g.output.value) == pytest.approx(1.0 - math.pi / 2)


def test_alias_and_bare_variable_get_nodes_of_their_own() -> None:
    g = cr.trace(parse("b = x; c = b * 2").function(), x=1.0)
    assert [n.name for n in g.ops] == ["b", "c"]
    g = cr.trace(parse("x").function(), x=3.0)
    assert g.output.name == "out" and float(g.inputs[0].grad) == 1.0


def test_declared_inputs_keep_unused_ones_with_zero_gradient() -> None:
    e = parse("g(x, y, z) = (ln(x) + sin(y))^2 + 4x")
    assert e.name == "g" and e.variables == ["x", "y", "z"]
    g = cr.trace(e.function(), x=math.e, y=math.pi / 2, z=2.0)
    assert float(g.grads["z"]) == 0.0
    assert float(g.grads["x"]) == pytest.approx(2 * 2 / math.e + 4)


def test_function_params_reorder_and_add_unused_inputs() -> None:
    e = parse("x - y")
    f = e.function(["y", "w", "x"])
    assert float(np.asarray(f(1.0, 5.0, 3.0))) == 2.0
    with pytest.raises(ExprError, match="missing x"):
        e.function(["y"])


def test_function_signature_and_arity() -> None:
    f = parse("x * y").function()
    import inspect

    assert list(inspect.signature(f).parameters) == ["x", "y"]
    with pytest.raises(TypeError):
        f(1.0)


def test_tables_of_names_are_consistent() -> None:
    expected = {"ln", "log", "exp", "sin", "cos", "tan", "sqrt", "abs", "sigmoid", "tanh", "relu", "max", "min"}
    assert expected <= set(FUNCTIONS)
    assert set(CONSTANTS) == {"pi", "e"}


# ---------------------------------------------------------------------------------------------
# --at values
# ---------------------------------------------------------------------------------------------


def test_parse_value_forms() -> None:
    assert parse_value("1") == 1.0
    assert parse_value("-2.5e-1") == -0.25
    assert parse_value("pi/2") == pytest.approx(math.pi / 2)
    assert parse_value("e") == pytest.approx(math.e)
    assert parse_value("sqrt(2)") == pytest.approx(math.sqrt(2))
    assert parse_value("2pi") == pytest.approx(2 * math.pi)
    np.testing.assert_array_equal(parse_value("[1, 2, 3]"), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(parse_value("[[1, 2], [pi, -e]]"), [[1, 2], [math.pi, -math.e]])
    assert parse_value("10^400") == math.inf


def test_parse_values_in_variable_order() -> None:
    e = parse("(x + y) * z")
    v = parse_values(["z=2", "x=1", "y = pi/2"], e)
    assert list(v) == ["x", "y", "z"]
    assert v["y"] == pytest.approx(math.pi / 2)
    v = parse_values(["x=[1,2,3]"], ["x"])
    assert v["x"].shape == (3,)
    assert parse_values(["x=1", "w=2"], ["x"], allow_extra=True) == {"x": 1.0, "w": 2.0}


VALUE_ERRORS = [
    (["x=1"], "variable 'y' has no value"),
    (["x=1", "y=2", "w=3"], "'w' is not a variable"),
    (["x=1", "yy=2"], "did you mean y?"),
    (["x=1", "x=2", "y=1"], "given twice"),
    (["x", "y=1"], "expected name=value"),
    (["x=", "y=1"], "no value after 'x='"),
    (["x=foo", "y=1"], "cannot use the name 'foo'"),
    (["x=[1,[2]]", "y=1"], "rectangular"),
    (["x=[1,2", "y=1"], "never closed"),
    (["x=__import__('os')", "y=1"], "double underscores"),
    (["x=(1).real", "y=1"], "attribute access"),
    (["x='1'", "y=1"], "strings are not allowed"),
    (["pi=3", "x=1", "y=1"], "built-in name"),
    (["1x=3", "y=1"], "not a variable name"),
    (["x=1; 2", "y=1"], "one number"),
    (["x=[]", "y=1"], "empty list"),
    (["x=lambda: 1", "y=1"], "lambdas are not allowed"),
]


@pytest.mark.parametrize("items, message", VALUE_ERRORS)
def test_bad_values(items: list[str], message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_values(items, parse("x * y"))
    assert message in info.value.message
    assert "^" in info.value.render()


def test_missing_value_points_into_the_expression() -> None:
    with pytest.raises(ExprError) as info:
        parse_values(["x=1"], parse("x + 2*y"))
    assert info.value.text == "x + 2*y" and info.value.position == 6


# ---------------------------------------------------------------------------------------------
# rejected forms: one message, a position, a caret under it
# ---------------------------------------------------------------------------------------------

REJECTED = [
    ("x.y", "attribute access", 1),
    ("x.__class__", "attribute access", 1),
    ("(x + 1).real", "attribute access", 7),
    ("x[y]", "whole number", 2),
    ("x[0.5]", "whole number", 2),
    ("x[]", "invalid syntax", 2),
    ("2[0]", "a number cannot be indexed", 1),
    ("x[0:y]", "whole number", 4),
    ("'abc'", "strings are not allowed", 0),
    ('x + "y"', "strings are not allowed", 4),
    ("lambda x: x", "lambdas are not allowed", 0),
    ("__import__('os')", "double underscores", 0),
    ("x + __builtins__", "double underscores", 4),
    ("foo(x)", "unknown function 'foo'", 0),
    ("exec(x)", "unknown function 'exec'", 0),
    ("z(x + y)", "unknown function 'z'", 0),
    ("import os", "Python keyword", 0),
    ("x if y else z", "Python keyword", 2),
    ("[x, y]", "lists are only allowed", 0),
    ("(x, y)", "tuples", 0),
    ("{x}", "braces", 0),
    ("x == y", "comparisons", 2),
    ("x < y", "comparisons", 2),
    ("x @@ y", "invalid syntax", 3),
    ("x // y", "'//'", 2),
    ("x % y", "'%'", 2),
    ("x += 1", "'+='", 2),
    ("a = b = x", "chained", 4),
    ("x = x + 1", "is an input", 0),
    ("q = x; q = y", "already assigned", 7),
    ("f = q * z; q = x + y", "is an input", 11),
    ("x; y", "only the last statement", 0),
    ("sin x", "is a function", 0),
    ("sin(x, y)", "takes 1 argument", 0),
    ("sin()", "takes 1 argument", 0),
    ("sin(x=1)", "no keyword", 6),
    ("max(*x)", "unpacking", 4),
    ("e = x + 1", "built-in name", 0),
    ("sin = x", "built-in name", 0),
    ("1/2x", "ambiguous", 3),
    ("1/(x+1)(x-1)", "ambiguous", 7),
    ("x +", "invalid syntax", 3),
    ("* x", "unpacking", 0),
    ("/ x", "invalid syntax", 0),
    ("2 3", "invalid syntax", 2),
    ("(x + y", "never closed", 0),
    ("x + y)", "unmatched ')'", 5),
    ("(x]", "does not match", 2),
    ("1.2.3", "two decimal points", 3),
    ("x $ y", "'$'", 2),
    ("x # comment", "comments", 2),
    ("x ! y", "'!'", 2),
    ("x ? y", "'?'", 2),
    ("x & y", "'&'", 2),
    ("x \\ y", "backslash", 2),
    ("x + ü", "unexpected character", 4),
    ("", "empty expression", 0),
    (" ; ", "empty expression", 0),
    ("g(x) = x + y", "not an input of g(x)", 11),
    ("g(x, x) = x", "declared twice", 5),
    ("sin(x) = x", "built-in name", 0),
    ("g(x) =", "nothing after", 5),
    ("g(x, y) = x + (y", "never closed", 14),
    ("g(x, y) = x + foo(y)", "unknown function", 14),
    ("x" + "+x" * MAX_LENGTH, "too long", MAX_LENGTH),
    ("(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1), "too deeply nested", MAX_DEPTH),
    ("-" * 500 + "x", "too deeply nested", 0),
    ("x^" * 300 + "x", "too deeply nested", 0),
    ("1" * 500, "number too long", 0),
]


@pytest.mark.parametrize("text, message, position", REJECTED)
def test_rejected(text: str, message: str, position: int | None) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    err = info.value
    assert message in err.message
    assert err.position == position
    assert isinstance(err, ValueError)
    if position is not None and text.strip():
        lines = err.render().splitlines()
        assert lines[0].startswith(err.message)
        assert lines[-1].strip() == "^"
        # the caret sits under the reported character
        shown, caret = lines[-2], lines[-1]
        col = caret.index("^")
        if len(text) <= 100 and "\n" not in text:
            assert shown[col] == text[position] if position < len(text) else col == len(shown)


def test_render_multiline_names_the_line() -> None:
    with pytest.raises(ExprError) as info:
        parse("q = x + y\nf = q * foo(z)")
    text = info.value.render()
    assert "(line 2)" in text
    assert text.splitlines()[1].strip() == "f = q * foo(z)"
    assert text.splitlines()[2].index("^") == text.splitlines()[1].index("foo")


def test_evaluation_errors_point_at_the_operator() -> None:
    e = parse("x + y")
    with pytest.raises(ExprError) as info:
        e.function()(x=np.ones(2), y=np.ones(3))
    assert info.value.position == 2
    assert "broadcast" in info.value.message


def test_not_text() -> None:
    with pytest.raises(ExprError):
        parse(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# fuzzing: random text never crashes and never executes anything
# ---------------------------------------------------------------------------------------------

_ALPHABET = "xyzab_ 0123456789.+-*/^()[],;=\n'\"\\:#@!%&|~<>{}`$?eπ²×λ" + "".join(FUNCTIONS)[:20]
_TOKENS = ["x", "y", "z", "2", "3.5", "1e3", "pi", "e", "+", "-", "*", "/", "^", "**", "(", ")", "[", "]",
           ",", ";", "=", " ", "\n", "sin", "ln", "sigmoid", "max", "min", "sqrt", "exp", "q", ".", "__",
           "lambda", "import", "'", "eval", "open", "os", "[0]", ".real", "__class__", "x²"]


class _Executed(Exception):
    pass


@contextlib.contextmanager
def _nothing_executes():
    """Any eval, exec, import of a new module or file open while parsing or evaluating fails the test."""
    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "__import__", "open", "input",
                                                         "breakpoint")}

    def forbid(name: str):
        def f(*a, **k):
            raise _Executed(name)

        return f

    real_import = saved["__import__"]

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        # a module already loaded runs no new code; loading a new one is executing something
        if level == 0 and name not in sys.modules:
            raise _Executed(f"import {name}")
        return real_import(name, globals, locals, fromlist, level)

    try:
        for name in saved:
            setattr(builtins, name, forbid(name))
        builtins.__import__ = guarded_import
        yield
    finally:
        for name, fn in saved.items():
            setattr(builtins, name, fn)


def _parse_and_run(text: str) -> None:
    with _nothing_executes(), np.errstate(all="ignore"):
        try:
            e = parse(text)
        except ExprError as err:
            assert err.message and isinstance(err.render(), str)
            return
        assert isinstance(e, Expression)
        try:
            e.function()(*[0.7] * len(e.variables))
        except ExprError as err:
            assert err.message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_fuzz_random_characters(text: str) -> None:
    _parse_and_run(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=25))
def test_fuzz_random_tokens(tokens: list[str]) -> None:
    _parse_and_run("".join(tokens))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_any_unicode(text: str) -> None:
    _parse_and_run(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["x=", "1", "[", "]", ",", "pi", "/", "2", "e", "sqrt(", ")", "-", " ", "y"]),
                max_size=15))
def test_fuzz_values(tokens: list[str]) -> None:
    with _nothing_executes(), np.errstate(all="ignore"):
        try:
            parse_values(["".join(tokens)], ["x"])
        except ExprError as err:
            assert err.message


# random expression trees: printed with random spacing, implicit products and ^ or **, parsed,
# evaluated, and compared with the same tree computed directly with NumPy
_LEAVES = st.sampled_from(["x", "y", "2", "0.5", "3", "pi"])


def _tree() -> st.SearchStrategy:
    return st.recursive(
        _LEAVES,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "/"]), sub, sub),
            st.tuples(st.just("^"), sub, st.sampled_from(["2", "3"])),
            st.tuples(st.just("neg"), sub),
            st.tuples(st.sampled_from(["sin", "cos", "exp", "sigmoid", "tanh", "sqrt", "abs"]), sub),
        ),
        max_leaves=8,
    )


def _show(t, implicit: bool, power: str) -> str:
    if isinstance(t, str):
        return t
    if t[0] == "neg":
        return f"(-{_show(t[1], implicit, power)})"
    if len(t) == 2:
        return f"{t[0]}({_show(t[1], implicit, power)})"
    op, a, b = t
    if op == "^":
        return f"({_show(a, implicit, power)}){power}{b}"
    if op == "*" and implicit:  # bracketed whole: "a / (b)(c)" would be ambiguous, and is refused
        return f"(({_show(a, implicit, power)}) ({_show(b, implicit, power)}))"
    return f"({_show(a, implicit, power)} {op} {_show(b, implicit, power)})"


def _direct(t, env):
    if isinstance(t, str):
        return env[t] if t in env else (math.pi if t == "pi" else float(t))
    if t[0] == "neg":
        return -_direct(t[1], env)
    if len(t) == 2:
        x = _direct(t[1], env)
        return {"sin": np.sin, "cos": np.cos, "exp": np.exp, "tanh": np.tanh, "sqrt": np.sqrt, "abs": np.abs,
                "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[t[0]](x)
    op, a, b = t
    x, y = _direct(a, env), _direct(b, env)
    return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}[op](x, y)


@settings(max_examples=200, deadline=None)
@given(_tree(), st.booleans(), st.sampled_from(["^", "**"]))
def test_fuzz_trees_match_numpy(tree, implicit: bool, power: str) -> None:
    text = _show(tree, implicit, power)
    e = parse(text)
    env = {"x": np.float64(0.7), "y": np.float64(1.3)}
    with np.errstate(all="ignore"):
        want = _direct(tree, env)
        got = e.function()(**{v: env[v] for v in e.variables})
    np.testing.assert_allclose(np.asarray(getattr(got, "data", got), dtype=float), want, rtol=1e-9, equal_nan=True)
