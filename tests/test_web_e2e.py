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
            expect(info).to_contain_text("local ∂out/∂t1 = z = 2")
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
