"""The stages of cr.compile one by one: each algebra pass on a small program written as instructions
(what it rewrites, that the values stay the same, that the program it was given is left alone),
and the memory planner (no value is overwritten while something still reads it, buffers reused)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule.compile import passes
from chainrule.compile.ir import Code, Ins, execute, uses
from chainrule.compile.planner import Step, output_slots, plan_memory


def U(target, fn, *args):
    return Ins(target, "ufunc", fn, list(args))


def make(ins, returns, **inputs):
    """A Code for these instructions, traced on ``inputs`` (every value's shape and dtype known)."""
    env = execute(ins, {}, inputs)
    return Code(list(ins), list(inputs), list(returns), {}, env, {})


def values(code, inputs):
    env = execute(code.ins, code.consts, inputs)
    return [env[r] if isinstance(r, str) else r for r in code.results]


def ops(code):
    return [i.fn for i in code.ins]


def check_same(before, after, inputs, rtol=1e-13):
    """The same values to rounding (a rewrite such as a / (1/x) -> a * x rounds differently)."""
    for a, b in zip(values(before, inputs), values(after, inputs)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)


RNG = np.random.default_rng(7)
X = {"x": RNG.uniform(0.5, 2, 50), "a": RNG.uniform(-2, 2, 50), "b": RNG.uniform(-2, 2, 50)}


def test_defer_reciprocals_never_computes_an_unneeded_reciprocal():
    code = make([U("r", "reciprocal", "x"), U("t", "divide", "a", "r"), U("u", "multiply", "b", "r"),
                  U("s", "square", "r"), U("w", "multiply", "a", "s"), U("out", "add", "t", "u"),
                  U("out2", "add", "out", "w")], ["out2"], **X)
    new = passes.defer_reciprocals(code)
    assert "reciprocal" not in ops(new)               # a / (1/x) = a * x, b * (1/x) = b / x, (1/x)² = 1/x²
    assert ops(new).count("divide") == 2 and ops(new).count("multiply") == 1
    check_same(code, new, X)


def test_propagate_signs_carries_negations_into_products_and_sums():
    code = make([U("na", "negative", "a"), U("nb", "negative", "b"), U("p", "multiply", "na", "nb"),
                  U("nx", "negative", "x"), U("q", "multiply", 2.0, "nx"), U("d", "subtract", "a", "q"),
                  U("out", "add", "p", "d")], ["out"], **X)
    new = passes.propagate_signs(code)
    assert "negative" not in ops(new) and len(new.ins) == 4   # -a * -b = a * b; 2 * -x = -2 * x
    check_same(code, new, X)
    twice = make([U("na", "negative", "a"), U("p", "multiply", "na", "b"), U("q", "multiply", "na", "x"),
                  U("out", "multiply", "p", "q")], ["out"], **X)
    assert ops(passes.propagate_signs(twice)).count("negative") == 1   # used twice: computed once, kept


def test_fold_reciprocals_turns_a_single_use_reciprocal_into_a_division():
    code = make([U("r", "reciprocal", "x"), U("out", "multiply", "r", "a")], ["out"], **X)
    new = passes.fold_reciprocals(code)
    assert ops(new) == ["divide"] and new.ins[0].args == ["a", "x"]
    check_same(code, new, X)
    kept = make([U("r", "reciprocal", "x"), U("out", "multiply", "r", "a")], ["out", "r"], **X)
    assert passes.fold_reciprocals(kept).ins == kept.ins   # returned: it must exist as it is


def test_value_number_computes_each_pure_call_once_and_cancels_factors():
    code = make([U("e1", "exp", "x"), U("e2", "exp", "x"), U("p", "multiply", "a", "x"),
                  U("q", "divide", "p", "x"), U("out", "add", "e1", "e2"), U("out2", "add", "out", "q")],
                 ["out2"], **X)
    new = passes.dead_code(passes.value_number(code))
    assert ops(new).count("exp") == 1 and "divide" not in ops(new)   # (a * x) / x = a
    check_same(code, new, X, rtol=1e-14)


def test_share_divisions_divides_once():
    code = make([U("t", "divide", "a", "x"), U("u", "divide", "b", "x"), U("out", "add", "t", "u")], ["out"], **X)
    new = passes.share_divisions(code)
    assert ops(new).count("reciprocal") == 1 and ops(new).count("divide") == 0 and ops(new).count("multiply") == 2
    check_same(code, new, X, rtol=1e-14)


def test_fold_reshapes_sums_without_keepdims():
    m = {"m": RNG.normal(size=(4, 3))}
    code = make([Ins("s", "call", "sum", ["m"], {"axis": 0, "keepdims": True}),
                 Ins("out", "call", "reshape", ["s"], {"shape": (3,)})], ["out"], **m)
    new = passes.dead_code(passes.fold_reshapes(code))
    assert [(i.fn, i.params.get("keepdims")) for i in new.ins] == [("sum", False)]
    check_same(code, new, m)


def test_fold_constants_computes_argument_free_values_once():
    code = make([Ins("c", "call", "full", [(2, 3), 0.5], {}), U("k", "exp", "c"),
                 U("out", "multiply", "k", 3.0)], ["out"], x=np.ones(4))
    new = passes.fold_constants(code)
    assert new.ins == []                                # nothing left to run per call
    (name,) = new.results
    np.testing.assert_allclose(new.consts[name], 3 * np.exp(np.full((2, 3), 0.5)))
    argument_shaped = make([Ins("z", "call", "zeros_like", ["x"], {})], ["z"], x=np.ones(4))
    assert passes.fold_constants(argument_shaped).ins == argument_shaped.ins   # read per block


def test_dead_code_drops_unused_values():
    code = make([U("e", "exp", "x"), U("l", "log", "x"), U("out", "add", "e", 1.0)], ["out"], **X)
    assert ops(passes.dead_code(code)) == ["exp", "add"]


@pytest.mark.parametrize("p", passes.PIPELINE, ids=lambda p: p.__name__)
def test_every_pass_leaves_its_input_alone_and_keeps_the_values(p):
    code = make([U("r", "reciprocal", "x"), U("na", "negative", "a"), U("t", "divide", "na", "r"),
                  U("u", "divide", "b", "x"), U("e", "exp", "x"), U("e2", "exp", "x"),
                  U("s", "add", "t", "u"), U("out", "multiply", "s", "e"), U("out2", "add", "out", "e2")],
                 ["out2", "u"], **X)
    snapshot = ([Ins(i.target, i.kind, i.fn, list(i.args), dict(i.params)) for i in code.ins],
                dict(code.canon), dict(code.env), dict(code.consts))
    new = p(code)
    assert (code.ins, code.canon, code.env, code.consts) == snapshot
    assert p.__doc__ and len(p.__doc__) > 40
    check_same(code, new, X, rtol=1e-14)


def test_the_pipeline_keeps_nan_and_inf_where_the_program_has_them():
    x = {"x": np.array([0.0, -1.0, np.inf, -np.inf, np.nan, 1.0]), "a": np.ones(6), "b": np.ones(6)}
    with np.errstate(all="ignore"):
        code = make([U("r", "reciprocal", "x"), U("l", "log", "x"), U("t", "divide", "a", "r"),
                      U("u", "divide", "l", "x"), U("out", "add", "t", "u")], ["out"], **x)
        np.testing.assert_array_equal(values(passes.optimize(code), x)[0], values(code, x)[0])


# ---- the memory planner --------------------------------------------------------------------------


def simulate(steps, plan, returns, key=lambda v: "f8"):
    """Run the plan: every read finds its value still in its storage; outputs hold their values."""
    holds: dict[str, str] = {}
    for s in steps:
        for a in s.reads:
            if a in plan.dest:
                assert holds.get(plan.dest[a]) == a, f"{a} was overwritten before it was read"
        for w in s.writes:
            holds[plan.dest[w]] = w
    for r, k in plan.slots.items():
        assert holds[f"o{k}"] == r
    for v, d in plan.dest.items():
        if d.startswith("o"):
            continue
        assert plan.buffers[int(d.lstrip("bs_"))] == key(v)


def test_planner_reuses_dead_buffers_and_overwrites_in_place():
    steps = [Step(["a"], ["x"]), Step(["b"], ["a"]), Step(["c"], ["b"]), Step(["d"], ["c", "x"])]
    plan = plan_memory(steps, lambda v: "f8", returns=["d"])
    assert len(plan.buffers) == 1 and len(set(plan.dest.values())) == 1    # a chain: one buffer, in place
    simulate(steps, plan, ["d"])
    slots, copies = output_slots(["d"], ["a", "b", "c", "d"])
    plan = plan_memory(steps, lambda v: "f8", returns=["d"], slots=slots)
    assert plan.dest["d"] == "o0" and copies == []
    simulate(steps, plan, ["d"])


def test_planner_keeps_live_values_apart_and_respects_keys():
    steps = [Step(["a"], ["x"]), Step(["m"], ["x"]), Step(["b"], ["a"]), Step(["c"], ["a", "b", "m"])]
    key = {"a": "f8", "b": "f8", "m": "bool", "c": "f8"}.get
    plan = plan_memory(steps, key, returns=["c"])
    assert plan.dest["a"] != plan.dest["b"]              # a is read again after b is written
    assert plan.buffers[int(plan.dest["m"][1:])] == "bool" and plan.dest["m"] not in (plan.dest["a"], plan.dest["b"])
    simulate(steps, plan, ["c"], key)
    no_in_place = [Step(["a"], ["x"]), Step(["b"], ["a"], in_place=False)]
    plan = plan_memory(no_in_place, lambda v: "f8", returns=["b"])
    assert plan.dest["a"] != plan.dest["b"]              # a matmul never writes into its operand


def test_planner_gives_one_steps_writes_distinct_storage():
    steps = [Step(["a", "b"], ["x"]), Step(["c", "d"], ["a", "b"]), Step(["e"], ["c", "d"])]
    plan = plan_memory(steps, lambda v: "f8", returns=["e"])
    assert plan.dest["c"] != plan.dest["d"] and {plan.dest["c"], plan.dest["d"]} == {plan.dest["a"], plan.dest["b"]}
    simulate(steps, plan, ["e"])


def test_planner_views_keep_their_base_alive():
    # v is a view of a: while v is read, a's buffer must not be reused
    steps = [Step(["a"], ["x"]), Step([], ["a"]), Step(["b"], ["x"]), Step(["c"], ["v", "b"])]
    plan = plan_memory(steps, lambda v: "f8", returns=["c"], roots={"v": "a"})
    assert plan.dest["b"] != plan.dest["a"]
    plan = plan_memory(steps, lambda v: "f8", returns=["c"])
    assert plan.dest["b"] == plan.dest["a"]              # without the view, a is dead after step 1


def test_output_slots_copy_inputs_numbers_and_repeats():
    slots, copies = output_slots(["y", "x", "y", 2.0, "z"], ["y", "z"], prefilled=["z"])
    assert slots == {"y": 0} and copies == [(1, "x"), (2, "y"), (3, 2.0)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.lists(st.integers(0, 40), min_size=1, max_size=3),
                          st.booleans(), st.booleans()), min_size=1, max_size=12),
       st.integers(0, 3))
def test_planner_never_overwrites_a_value_still_read(spec, nret):
    """Random step graphs: the plan, run, always finds each value where it was put."""
    known = ["x"]
    steps = []
    keys: dict[str, str] = {}
    for n, (nw, reads, in_place, kind) in enumerate(spec):
        rs = [known[r % len(known)] for r in reads]
        ws = [f"v{n}_{j}" for j in range(nw)]
        for w in ws:
            keys[w] = "bool" if kind and len(keys) % 2 else "f8"
        steps.append(Step(ws, rs, in_place))
        known += ws
    produced = [w for s in steps for w in s.writes]
    returns = produced[-nret:] if nret else []
    slots, _ = output_slots(returns, produced)
    plan = plan_memory(steps, keys.get, returns=returns, slots=slots)
    simulate(steps, plan, returns, keys.get)


# ---- back ends ----------------------------------------------------------------------------------


def test_every_emit_module_is_a_back_end_tried_in_priority_order():
    import importlib
    import pkgutil

    from chainrule.compile import backends

    package = importlib.import_module("chainrule.compile")   # cr.compile, the attribute, is the function

    modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("emit_"))
    found = backends.emitters()
    assert sorted(f"emit_{e.name}" for e in found) == modules
    assert [e.name for e in found] == ["numba", "numexpr", "tiled", "numpy"]
    assert [e.priority for e in found] == sorted(e.priority for e in found)


def test_the_numpy_emitter_applies_to_every_program():
    from chainrule.compile.backends import Options, emit

    m = {"m": RNG.normal(size=(4, 3))}
    code = make([Ins("s", "call", "sum", ["m"], {"axis": 0}), U("out", "exp", "s")], ["out"], **m)
    for backend in ("auto", "numpy", "numba", "numexpr"):
        out = emit(code, Options(backend, 12))
        assert out.backend in ("numpy", "numexpr") and "def _compiled(m):" in out.source


# ---- shapes without computing: what lowering runs the instructions on ------------------------------


def _models():
    import chainrule as cr

    rng = np.random.default_rng(3)
    x, y = rng.uniform(0.5, 2.0, 300), rng.uniform(0.5, 2.0, 300)
    X, W, b = rng.normal(size=(16, 5)), rng.normal(size=(5, 4)), rng.normal(size=4)
    labels = rng.integers(0, 4, size=16)
    img, kern = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3))
    return [
        (lambda x, y: np.log(x) * cr.sigmoid(np.sqrt(y)) / cr.sigmoid((x + y) ** 2), (x, y), (0, 1)),
        (lambda x, y: (np.maximum(x - 1, 0) * y).sum() + np.where(x > y, x, y**2).mean(), (x, y), (0, 1)),
        (lambda x: (x.reshape(20, 15).T @ x.reshape(20, 15)[:, :1]).sum(), (x,), 0),
        (lambda W, b, X, labels: cr.nn.cross_entropy(np.tanh(X @ W + b), labels), (W, b, X, labels), (0, 1)),
        (lambda X, W: (X[::2, 1:] @ W[1:]).max(axis=1).sum() + (X[:, :1] * X).std(), (X, W), (0, 1)),
        (lambda img, kern: cr.nn.conv2d(img, kern, padding=1).mean(), (img, kern), (0, 1)),
        (lambda X: cr.nn.layer_norm(X, 5).sum() + np.exp(-X * X).cumsum(axis=0)[-1].sum(), (X,), 0),
    ]


@pytest.mark.parametrize("k", range(7))
def test_lowering_learns_every_shape_and_dtype_without_computing_on_the_inputs(k):
    """What lowering learns from stand-ins of the inputs (arrays of ones that take no memory) is what
    running the program on the inputs gives: every value's type, shape and dtype; and no value that
    depends on an input was computed at the inputs' size."""
    import chainrule as cr
    from chainrule.compile.ir import standin
    from chainrule.compile.lower import Lowerer

    f, args, argnums = _models()[k]
    fast = cr.compile(f, argnums=argnums, backend="numpy")
    fast(*args)
    program = fast._last.program
    lowerer = Lowerer(program)
    ins = lowerer.run()
    consts = {**program.constants, **lowerer.consts}
    inputs = {p: a for p, a in zip(program.params, args) if a.dtype.kind == "f"}
    with np.errstate(all="ignore"):
        real = execute(ins, consts, inputs)
        meta = execute(ins, consts, {n: standin(a) for n, a in inputs.items()}, shapes_only=True)
    assert real.keys() == meta.keys()
    from_inputs = set(inputs)
    for i in ins:
        if from_inputs.intersection(uses(i)):
            from_inputs.add(i.target)
    for name, v in real.items():
        m = meta[name]
        assert type(m) is type(v) and np.shape(m) == np.shape(v), name
        if isinstance(v, (np.ndarray, np.generic)):
            assert m.dtype == v.dtype, name
        if name in from_inputs and isinstance(m, np.ndarray):
            assert not m.flags.owndata and not any(m.strides), f"{name} was computed"
