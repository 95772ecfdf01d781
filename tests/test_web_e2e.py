"""The explorer in a real browser: Playwright driving Debian's Chromium against `chainrule serve`.

Types the worksheet's Q2a, walks the backward pass node by node, checks the gradients the page
shows against the worksheet's hand-derived answers (2, 2, 4), takes a gradient-descent step and
checks the updated inputs. Screenshots go to test-output/web/ (look at them). Skips, saying why,
when Playwright, the web extra or Chromium is missing; `.ci/run` installs all three.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the explorer needs the web extra: pip install 'chainrule[web]'")
pytest.importorskip("uvicorn", reason="the explorer needs the web extra: pip install 'chainrule[web]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="browser tests need Playwright: pip install 'chainrule[e2e]'")

CHROMIUM = os.environ.get("CHAINRULE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "web"

if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium; "
                "never `playwright install`)", allow_module_level=True)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`chainrule serve --port 0` in a subprocess; yields the address it prints."""
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "chainrule", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    url = lines[0].strip() if lines else ""
    if not re.fullmatch(r"http://127\.0\.0\.1:\d+", url):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"`chainrule serve` printed {url!r}, not its address; stderr:\n{err}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except sync_api.Error as e:
            pytest.skip(f"Chromium at {CHROMIUM} would not start: {e}")
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(chromium: Any, server: str) -> Iterator[Any]:
    """A fresh page on the explorer (named like pytest-playwright's fixture, which this replaces)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def type_expression(page: Any, text: str) -> None:
    box = page.locator("#expression")
    box.fill("")
    box.type(text, delay=15)  # as a person types: the value boxes follow


def grad_cell(page: Any, name: str) -> Any:
    return page.locator(f'#equations tr[data-node="{name}"] td.grad')


def test_q2a_backward_pass_and_gradient_step(page: Any) -> None:
    expect = sync_api.expect
    type_expression(page, "(x + y) * z")
    # one value box per variable appears while typing
    for name in ("x", "y", "z"):
        expect(page.locator(f"#value-{name}")).to_be_visible()
    for name, value in (("x", "1"), ("y", "3"), ("z", "2")):
        page.locator(f"#value-{name}").fill(value)
    page.locator("#compute").click()
    expect(page.locator("#graph svg")).to_be_visible()
    expect(page.locator("#source")).to_contain_text("return out, dx, dy, dz")
    expect(page.locator("#equations tbody tr")).to_have_count(5)  # x, y, z, t1, out
    shot(page, "q2a-computed")

    # the forward pass, one node at a time: x, y, z, then t1 = x + y = 1 + 3 = 4
    for _ in range(4):
        page.locator("#forward").click()
    expect(page.locator("#step-info")).to_contain_text("t1 = x + y = 1 + 3 = 4")
    expect(page.locator('#equations tr[data-node="t1"] td.value')).to_have_text("4")
    expect(page.locator('#equations tr[data-node="out"] td.value')).to_have_text("")  # not computed yet
    shot(page, "q2a-forward-t1")

    # the backward pass, one node at a time: out, then t1, z, y, x
    backward = page.locator("#backward")
    seen = []
    for _ in range(5):
        backward.click()
        current = page.locator("#equations tr.current td.name").inner_text()
        seen.append(current)
        # the picture highlights the same node
        expect(page.locator(f'#graph [id="node-{current}"]')).to_have_class(re.compile(r"\bcr-current\b"))
        if current == "t1":
            info = page.locator("#step-info")
            expect(info).to_contain_text("upstream ∂out/∂out = 1")
            expect(info).to_contain_text("local ∂(t1 * z)/∂t1 = z = 2")
            shot(page, "q2a-backward-t1")
    assert seen == ["out", "t1", "z", "y", "x"]
    expect(backward).to_be_disabled()
    # the worksheet's answers: ∂f/∂x = 2, ∂f/∂y = 2, ∂f/∂z = 4 (and the forward values, 4 and 8)
    expect(grad_cell(page, "x")).to_have_text("2")
    expect(grad_cell(page, "y")).to_have_text("2")
    expect(grad_cell(page, "z")).to_have_text("4")
    expect(page.locator('#equations tr[data-node="t1"] td.value')).to_have_text("4")
    expect(page.locator('#equations tr[data-node="out"] td.value')).to_have_text("8")
    shot(page, "q2a-backward-done")

    # one gradient-descent step, lr = 0.1: x = 1 - 0.1*2, y = 3 - 0.1*2, z = 2 - 0.1*4
    page.locator("#lr").fill("0.1")
    page.locator("#gd-step").click()
    expect(page.locator("#gd-log li")).to_have_count(1)
    expect(page.locator("#value-x")).to_have_value("0.8")
    expect(page.locator("#value-y")).to_have_value("2.8")
    expect(page.locator("#value-z")).to_have_value("1.6")
    # and the table shows the new point at once (no "Show all" needed): the inputs, t1 = 0.8 + 2.8 = 3.6,
    # out = 3.6 * 1.6 = 5.76, gradients 1.6, 1.6, 3.6
    for name, value in (("x", "0.8"), ("y", "2.8"), ("z", "1.6"), ("t1", "3.6"), ("out", "5.76")):
        expect(page.locator(f'#equations tr[data-node="{name}"] td.value')).to_have_text(value)
    for name, value in (("x", "1.6"), ("y", "1.6"), ("z", "3.6"), ("t1", "1.6"), ("out", "1")):
        expect(grad_cell(page, name)).to_have_text(value)
    shot(page, "q2a-after-step")


def test_error_is_inline_and_page_keeps_working(page: Any) -> None:
    expect = sync_api.expect
    type_expression(page, "(x + y) * z")
    expect(page.locator("#graph svg")).to_be_visible()
    type_expression(page, "(x + y) * z + import")
    error = page.locator("#expr-error")
    expect(error).to_be_visible()
    expect(page.locator("#expr-caret")).to_contain_text("^")
    expect(page.locator("#expr-message")).to_contain_text("column 15")
    shot(page, "error-inline")
    # fixing the expression brings everything back
    type_expression(page, "sigmoid(x)")
    expect(error).to_be_hidden()
    expect(page.locator("#equations tbody tr")).to_have_count(2)


def test_examples_menu_and_expanded_switch(page: Any) -> None:
    expect = sync_api.expect
    options = page.locator("#examples option")
    expect(options).not_to_have_count(1)
    page.locator("#examples").select_option(label="Q3  sigmoid, expanded into its 4 stages")
    expect(page.locator("#mode-expanded")).to_be_checked()
    expect(page.locator("#equations tbody tr")).to_have_count(5)  # x and the 4 stages
    page.locator("#show-all").click()
    # worksheet Q3: the gradient at x = 2 is about 0.105
    expect(grad_cell(page, "x")).to_have_text("0.104994")
    page.locator("#gd-step").click()  # lr 0.2 from the example: x = 2 - 0.2 * 0.104994 = 1.979
    expect(page.locator("#value-x")).to_have_value(re.compile(r"^1\.97900"))
    expect(page.locator('#equations tr[data-node="x"] td.value')).to_have_text(re.compile(r"^1\.979"))
    expect(page.locator('#equations tr[data-node="out"] td.value')).not_to_have_text("")  # σ(1.979)
    shot(page, "q3-expanded")
    page.locator("#mode-fused").check()
    expect(page.locator("#equations tbody tr")).to_have_count(2)  # x and one sigmoid gate


# ---------------------------------------------------------------------------------------------
# issue 13: practice mode and "check my backward pass"
# ---------------------------------------------------------------------------------------------


def open_example(page: Any, prefix: str) -> None:
    options = page.locator("#examples option")
    sync_api.expect(options).not_to_have_count(1)
    label = next(t for t in options.all_inner_texts() if t.startswith(prefix))
    page.locator("#examples").select_option(label=label)


def label_visible(page: Any, element_id: str, color: str) -> list[bool]:
    """Whether each number of one colour on a picture's edge is shown (practice hides them until
    stepped); the numbers are on the edge's own element or on its label's (label-...)."""
    return page.evaluate(
        """([id, color]) => [id, id.replace('edge-', 'label-')].map((i) => document.getElementById(i))
             .filter(Boolean).flatMap((e) => [...e.querySelectorAll('text')])
             .filter((t) => (t.getAttribute('fill') || '').toLowerCase() === color)
             .map((t) => getComputedStyle(t).visibility !== 'hidden')""", [element_id, color])


def answer(page: Any, text: str) -> None:
    box = page.locator("#answer")
    box.fill(text)
    box.press("Enter")


def test_practice_mode_wrong_answer_hint_right_answer_and_score(page: Any) -> None:
    from chainrule.render import GRAD_COLOR, VALUE_COLOR

    expect = sync_api.expect
    open_example(page, "Q2a")  # a worksheet example opens in practice mode
    expect(page.locator("#practice")).to_be_checked()
    expect(page.locator("#answer")).to_be_focused()
    expect(page.locator(".question .ask")).to_have_text("t1 = x + y = ?")
    # nothing is given away: the picture shows the inputs' values only, no gradient, no result
    assert label_visible(page, "edge-x-t1-0", VALUE_COLOR.lower()) == [True]
    assert label_visible(page, "edge-t1-out-0", VALUE_COLOR.lower()) == [False]
    assert label_visible(page, "edge-out-result", VALUE_COLOR.lower()) == [False]
    assert label_visible(page, "edge-x-t1-0", GRAD_COLOR.lower()) == [False]
    expect(page.locator('#equations tr[data-node="t1"] td.value')).to_have_text("")
    expect(page.locator("#source")).to_be_hidden()  # the generated function is part (iii)'s answer
    assert page.locator("#graph [title], #graph [*|title]").count() == 0  # no tooltips with the answers

    # a wrong answer: the page says so and gives the hint from the gate and the numbers at hand
    answer(page, "5")
    expect(page.locator("#feedback.wrong")).to_contain_text("Not 5")
    expect(page.locator("#feedback .hint-text")).to_have_text("hint: add gate: t1 = x + y = 1 + 3")
    expect(page.locator("#score")).to_have_text("score 0 / 0")
    shot(page, "practice-wrong-hint")
    # the right answer, typed as an expression the value parser reads (Enter submits)
    answer(page, "2*2")
    expect(page.locator("#feedback.right")).to_contain_text("Right: t1 = 4 (after 1 wrong try)")
    expect(page.locator('#equations tr[data-node="t1"] td.value')).to_have_text("4")
    assert label_visible(page, "edge-t1-out-0", VALUE_COLOR.lower()) == [True]
    expect(page.locator("#score")).to_have_text("score 0 / 1")
    answer(page, "8")
    expect(page.locator("#score")).to_have_text("score 1 / 2")
    # the backward pass: the seed, then ∂out/∂t1 = z = 2 (a wrong try shows the mul gate's hint)
    expect(page.locator(".question .ask")).to_have_text("∂out/∂out = ?")
    answer(page, "1")
    expect(page.locator(".question .ask")).to_have_text("∂out/∂t1 = ?")
    answer(page, "4")
    expect(page.locator("#feedback .hint-text")).to_have_text(
        "hint: mul gate: the gradient of t1 through out is upstream × local "
        "= ∂out/∂out × ∂(t1 * z)/∂t1 = 1 × z = 1 × 2")
    assert label_visible(page, "edge-t1-out-0", GRAD_COLOR.lower()) == [False]
    answer(page, "2")
    expect(page.locator("#feedback.right")).to_contain_text("Right: ∂out/∂t1 = 2")
    expect(page.locator("#step-info")).to_contain_text("local ∂(t1 * z)/∂t1 = z = 2")
    assert label_visible(page, "edge-t1-out-0", GRAD_COLOR.lower()) == [True]
    expect(page.locator("#score")).to_have_text("score 2 / 4")  # out and the seed at the first try
    shot(page, "practice-right-score")
    # the reveal button, and the keyboard: → with an empty answer box reveals the next one
    page.locator("#answer-reveal").click()
    expect(page.locator("#feedback.revealed")).to_contain_text("∂out/∂z = 4")
    expect(page.locator("#score")).to_have_text("score 2 / 5 · 1 revealed")
    page.locator("#answer").press("ArrowRight")
    expect(page.locator("#score")).to_have_text("score 2 / 6 · 2 revealed")
    answer(page, "2")  # ∂out/∂x
    expect(page.locator("#step-info")).to_contain_text("done")
    expect(page.locator("#score")).to_have_text("score 3 / 7 · 2 revealed")
    expect(page.locator("#source")).to_be_visible()  # done: the generated function is shown
    for name, grad in (("x", "2"), ("y", "2"), ("z", "4")):
        expect(grad_cell(page, name)).to_have_text(grad)
    shot(page, "practice-done")
    # ← steps back from the page itself (focus out of any box)
    page.locator("h1").click()
    page.keyboard.press("ArrowLeft")
    expect(grad_cell(page, "x")).to_have_text("")


def test_practice_on_vectors_and_show_all(page: Any) -> None:
    expect = sync_api.expect
    open_example(page, "CS231n  a neuron")
    expect(page.locator("#fname")).to_have_text("f(w, x) =")
    expect(page.locator(".question .ask")).to_have_text("t1 = w[0] = ?")
    answer(page, "2")
    expect(page.locator("#feedback.right")).to_be_visible()
    page.locator("#show-all").click()
    expect(page.locator("#step-info")).to_contain_text("done")
    expect(grad_cell(page, "w")).to_have_text("[-0.196612, -0.393224, 0.196612]")
    expect(grad_cell(page, "x")).to_have_text("[0.393224, -0.589836]")
    expect(page.locator('#equations tr[data-node="out"] td.value')).to_have_text("0.731059")
    expect(page.locator("#source")).to_contain_text("def f(w, x):")
    shot(page, "practice-neuron-show-all")


Q2A_WRONG = """import numpy as np


def f(x, y, z):
    q = x + y
    out = q * z
    dout = np.ones_like(out)
    dq = dout * z
    dz = dout * z
    dx = dq
    dy = dq
    return out, dx, dy, dz
"""


def test_check_my_backward_marks_the_first_wrong_line(page: Any) -> None:
    expect = sync_api.expect
    open_example(page, "Q2a")
    expect(page.locator("#answer")).to_be_visible()
    page.locator("#practice").uncheck()  # the check box works in either mode
    page.locator("#check-template").click()
    expect(page.locator("#code")).to_have_value(re.compile(r"def f\(x, y, z\):.*return out, dx, dy, dz", re.S))
    page.locator("#code").fill(Q2A_WRONG)
    page.locator("#check-run").click()
    expect(page.locator("#check-verdict")).to_have_text("f: wrong")
    feedback = page.locator("#check-feedback")
    expect(feedback).to_contain_text("for out = q * z, the local gradient of z is q, but dz uses z")
    expect(feedback.locator("code")).to_have_text(["out = q * z", "dz"])  # the student's code, as code
    bad = page.locator("#check-listing li.bad")
    expect(bad).to_have_count(1)
    expect(bad).to_have_attribute("data-line", "9")
    expect(bad).to_have_text("    dz = dout * z")
    expect(page.locator(".check-result pre.report")).to_contain_text("dz: expected 4, got 2")
    page.locator("#check-result").scroll_into_view_if_needed()
    shot(page, "check-wrong-line")
    # a syntax error is pointed at, and the right function passes
    page.locator("#code").fill("def f(x, y, z):\n    q = x +\n    return q")
    page.locator("#check-run").click()
    expect(page.locator("#check-result .error")).to_contain_text("invalid syntax")
    expect(page.locator("#check-listing li.bad")).to_have_attribute("data-line", "2")
    page.locator("#code").fill(Q2A_WRONG.replace("dz = dout * z", "dz = dout * q"))
    page.locator("#check-run").click()
    expect(page.locator("#check-verdict")).to_have_text(
        "f: correct: the output and every gradient, at these values and 3 random ones")
    expect(page.locator("#check-listing li.bad")).to_have_count(0)
    shot(page, "check-correct")


def test_practice_step_buttons_count_as_revealed_and_each_node_is_asked_once(page: Any) -> None:
    """The step buttons in practice mode do what → does (a question they pass counts as revealed),
    and stepping back and forward again never asks (or counts) a node twice."""
    expect = sync_api.expect
    open_example(page, "Q2b")  # h = (x² + 2y) z³ at x=3, y=1, z=2: t1=9, t2=2, t3=11, t4=8, out=88
    for k, value in enumerate(("9", "2", "11", "8"), 1):
        answer(page, value)
        expect(page.locator("#score")).to_have_text(f"score {k} / {k}")  # read by the server: wait for it
    expect(page.locator("#backward")).to_be_disabled()  # the forward pass is not finished
    page.locator("#forward").click()
    expect(page.locator("#feedback.revealed")).to_contain_text("out = 88")
    expect(page.locator("#score")).to_have_text("score 4 / 5 · 1 revealed")
    expect(page.locator("#forward")).to_be_disabled()
    page.locator("#backward").click()
    page.locator("#backward").click()
    expect(page.locator("#feedback.revealed")).to_contain_text("∂out/∂t4 = 11")
    expect(page.locator("#score")).to_have_text("score 4 / 7 · 3 revealed")
    # back two steps and forward again: the nodes already found are shown, not asked or counted
    page.locator("h1").click()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(grad_cell(page, "t4")).to_have_text("")
    expect(page.locator("#answer")).to_have_count(0)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#score")).to_have_text("score 4 / 7 · 3 revealed")
    expect(page.locator("#answer")).to_have_count(0)
    page.locator("#backward").click()  # the button walks forward over found nodes too
    expect(grad_cell(page, "t4")).to_have_text("11")
    expect(page.locator("#score")).to_have_text("score 4 / 7 · 3 revealed")
    expect(page.locator(".question .ask")).to_have_text("∂out/∂t3 = ?")  # the next question, once
    answer(page, "8")
    expect(page.locator("#score")).to_have_text("score 5 / 8 · 3 revealed")
    # to the end: as many questions as nodes to find (5 forward, 8 backward), however it was stepped
    for _ in range(5):  # t2, t1, z, y, x
        page.locator("#answer-reveal").click()
    expect(page.locator("#step-info")).to_contain_text("done")
    expect(page.locator("#score")).to_have_text("score 5 / 13 · 8 revealed")


@pytest.mark.parametrize("width", [420, 1280])
def test_page_is_never_wider_than_the_window(chromium: Any, server: str, width: int) -> None:
    """At a phone's width or a laptop's, no part of the page (the examples menu's long titles, the
    graph, the tables) makes the document scroll sideways; every example is tried."""
    context = chromium.new_context(viewport={"width": width, "height": 900})
    try:
        pg = context.new_page()
        pg.goto(server)
        options = pg.locator("#examples option")
        sync_api.expect(options).not_to_have_count(1)
        labels = options.all_inner_texts()[1:]  # after "choose one…"
        wide = "() => [document.documentElement.scrollWidth, window.innerWidth]"
        scroll, inner = pg.evaluate(wide)
        assert scroll <= inner, f"at {width} px the empty page is {scroll} px wide"
        for label in labels:
            pg.evaluate("() => { window.previous = state.data; }")
            pg.locator("#examples").select_option(label=label)
            pg.wait_for_function("() => state.data && state.data !== window.previous")  # this example's answer shown
            scroll, inner = pg.evaluate(wide)
            assert scroll <= inner, f"at {width} px, with {label!r}, the page is {scroll} px wide"
            if label.startswith("CS231n  staged"):
                shot(pg, f"width-{width}-cs231n")
    finally:
        context.close()
