"""Pictures: DOT text (deterministic, parseable, stable node ids), SVG/PNG/PDF through Graphviz's
``dot`` and through the pure-pip ``graphviz-pure`` fallback (forced by hiding ``dot``), the error
when neither is installed, Jupyter's reprs, and the size limits of drawing."""

from __future__ import annotations

import html
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from worksheet_functions import q2a, q2b, q2c

import chainrule as cr
from chainrule import render as R
from chainrule.graph import fmt_value

HAVE_DOT = R._which("dot") is not None
HAVE_PURE = R._which("graphviz-pure") is not None
ENGINES = [
    pytest.param("dot", marks=pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed")),
    pytest.param("graphviz-pure", marks=pytest.mark.skipif(not HAVE_PURE, reason="graphviz-pure is not installed")),
]


Q2 = [(q2a, dict(x=1.0, y=3.0, z=2.0)), (q2b, dict(x=3.0, y=1.0, z=2.0)),
      (q2c, dict(x=math.e, y=math.pi / 2, z=2.0))]


def _svg_text(svg: str) -> str:
    """All the text drawn in an SVG, unescaped."""
    return html.unescape(" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)))


# ---- DOT -----------------------------------------------------------------------------------------


def test_dot_is_deterministic_and_has_stable_ids() -> None:
    dots = [cr.trace(q2c, **Q2[2][1]).to_dot() for _ in range(2)]
    assert dots[0] == dots[1]
    g = cr.trace(q2c, **Q2[2][1])
    for n in g.nodes:
        if n.kind != "const":
            assert f'id="node-{n.name}"' in dots[0]
    assert 'id="edge-x-t1-0"' in dots[0] and 'id="node-out-result"' in dots[0]
    # each edge runs through a label of its own: the value in green above its rule, the gradient in red below
    assert (f'<tr><td><font color="{R.VALUE_COLOR}" point-size="10">2.71828</font></td></tr><hr/>'
            f'<tr><td><font color="{R.GRAD_COLOR}" point-size="10">1.47152</font></td></tr>') in dots[0]
    assert 'id="label-x-t1-0"' in dots[0] and 'id="edge-x-t1-0-tail", dir=none' in dots[0]
    assert "Σ 5.47152" in dots[0]  # x is used twice: its total gradient at the node


@pytest.mark.parametrize("engine", ENGINES)
def test_dot_parses(engine: str) -> None:
    prog, _ = R.find_engine(engine)
    for f, inputs in Q2:
        res = subprocess.run([prog, "-Tcanon"], input=cr.trace(f, **inputs).to_dot().encode(),
                             capture_output=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr.decode()
        assert b"digraph chainrule" in res.stdout


def test_gate_symbols() -> None:
    g = cr.trace(lambda x, y: cr.sigmoid(x * y) - np.exp(x) / y, x=1.0, y=2.0)
    assert [R.gate_symbol(n) for n in g.ops] == ["×", "σ", "exp", "÷", "−"]


# ---- drawing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_svg_shows_every_value_and_gradient(engine: str, tmp_path: Path) -> None:
    for f, inputs in Q2:
        g = cr.trace(f, **inputs)
        path = g.render(tmp_path / f"{f.__name__}.svg", engine=engine)
        svg = html.unescape(path.read_text(encoding="utf-8"))  # dot writes "-" in ids as &#45;
        assert svg.lstrip().startswith("<?xml") or svg.lstrip().startswith("<svg")
        text = _svg_text(svg)
        for n in g.nodes:
            assert fmt_value(n.value) in text, (n.name, fmt_value(n.value))
            if n.kind != "const":
                assert fmt_value(n.grad) in text, (n.name, fmt_value(n.grad))
                assert re.search(rf'id="node-{re.escape(n.name)}"', svg)


@pytest.mark.parametrize("engine", ENGINES)
def test_png_and_pdf_files_are_valid(engine: str, tmp_path: Path) -> None:
    g = cr.trace(q2b, x=3.0, y=1.0, z=2.0)
    png = g.render(tmp_path / "g.png", engine=engine).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    pdf = g.render(tmp_path / "g.pdf", engine=engine).read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    if engine == "graphviz-pure":  # our own PDF around its JPEG: the cross-reference table is exact
        start = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
        assert pdf[start:start + 4] == b"xref"
        offsets = [int(line.split()[0]) for line in pdf[start:].split(b"\n")[3:8]]
        for k, off in enumerate(offsets, start=1):
            assert pdf[off:].startswith(f"{k} 0 obj".encode())
    dot = g.render(tmp_path / "g.dot").read_text(encoding="utf-8")
    assert dot == g.to_dot()


def test_fallback_to_graphviz_pure_when_dot_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not HAVE_PURE:
        pytest.skip("graphviz-pure is not installed")
    real = R._which
    monkeypatch.setattr(R, "_which", lambda name: None if name == "dot" else real(name))
    assert R.find_engine()[1] == "graphviz-pure"
    g = cr.trace(q2a, x=1.0, y=3.0, z=2.0)
    assert html.unescape(g.render(tmp_path / "g.svg").read_text(encoding="utf-8")).count('id="node-') == 6
    assert g.render(tmp_path / "g.pdf").read_bytes().startswith(b"%PDF-")
    with pytest.raises(cr.RenderError, match="dot program is not installed"):
        g.render(tmp_path / "g2.svg", engine="dot")


def test_no_renderer_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(R, "_which", lambda name: None)
    g = cr.trace(q2a, x=1.0, y=3.0, z=2.0)
    with pytest.raises(cr.RenderError) as err:
        g.render(tmp_path / "g.png")
    assert "pip install 'chainrule[render]'" in str(err.value) and "apt-get install graphviz" in str(err.value)
    assert not (tmp_path / "g.png").exists()
    assert g.to_dot().startswith("digraph")  # DOT needs no program
    assert g._repr_svg_() is None
    page = g._repr_html_()
    assert "t1 = x + y" in page and "chainrule[render]" in page


def test_bad_extension() -> None:
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf, \.dot or \.tex"):
        cr.trace(q2a, x=1.0, y=3.0, z=2.0).render("graph.jpg")


@pytest.mark.skipif(not (HAVE_DOT or HAVE_PURE), reason="no Graphviz layout program")
def test_jupyter_reprs() -> None:
    g = cr.trace(q2a, x=1.0, y=3.0, z=2.0)
    svg = g._repr_svg_()
    assert svg is not None and "<svg" in svg and 'id="node-t1"' in html.unescape(svg)
    page = g._repr_html_()
    assert page.startswith('<div class="chainrule-graph"><svg') and "<?xml" not in page


@pytest.mark.skipif(not (HAVE_DOT or HAVE_PURE), reason="no Graphviz layout program")
def test_views_of_eager_array_and_backward_graphs(tmp_path: Path) -> None:
    x = cr.tensor([1.0, 2.0], requires_grad=True, name="x")
    out = cr.sum((x + 3) * np.exp(x))
    text = _svg_text(out.graph().svg())
    assert "[1, 2]" in text and fmt_value(out.graph().grads["x"]) in text
    W = cr.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, name="W")
    text = _svg_text(cr.trace(cr.sum(cr.tanh(W @ np.ones(3)))).svg())
    assert "[[0, 1, 2], [3, 4, 5]]" in text
    bg = cr.trace(q2a, x=1.0, y=3.0, z=2.0).backward_graph()
    svg = html.unescape(bg.render(tmp_path / "backward.svg").read_text(encoding="utf-8"))
    for name in ("dt1", "dx", "dy", "dz", "dout"):
        assert f'id="node-{name}"' in svg
    assert R.GRAD_COLOR not in bg.to_dot()  # values only: the backward graph's own gradients are not taken


# ---- size ------------------------------------------------------------------------------------------


def _layers(n: int):
    def f(x, y):
        h = x
        for _ in range(n):
            h = np.sin(h) * y + h  # y is used by every layer
        return h

    return f


def test_too_large_a_graph_is_refused_with_a_message(tmp_path: Path) -> None:
    g = cr.trace(_layers(R.MAX_NODES // 3 + 10), x=0.5, y=0.3)
    assert len(g.nodes) > R.MAX_NODES
    with pytest.raises(cr.GraphTooLargeError, match="g.staged\\(\\) or g.table\\(\\)"):
        g.render(tmp_path / "big.svg")
    with pytest.raises(cr.GraphTooLargeError):
        g.to_dot()
    assert g.to_dot(max_nodes=len(g.nodes)).startswith("digraph")
    assert g._repr_svg_() is None and "g.staged()" in g._repr_html_()


@pytest.mark.skipif(not (HAVE_DOT or HAVE_PURE), reason="no Graphviz layout program")
def test_a_few_thousand_nodes_render(tmp_path: Path) -> None:
    g = cr.trace(_layers(1000), x=0.5, y=0.3)
    assert len(g.nodes) > 3000
    dot = g.to_dot()
    assert "shape=plain," not in dot and R.VALUE_COLOR not in dot  # past LABEL_LIMIT the edges carry no labels
    assert 'class="copy-of-y"' in dot  # y, used by every layer, is drawn beside each far use
    svg = g.render(tmp_path / "big.svg").read_text(encoding="utf-8")
    assert svg.count('class="node"') >= len(g.nodes)


def test_far_uses_stay_single_in_small_graphs() -> None:
    g = cr.trace(_layers(3), x=0.5, y=0.3)
    assert "copy-of" not in g.to_dot()  # the worksheet's fan-out stays one node with many edges
