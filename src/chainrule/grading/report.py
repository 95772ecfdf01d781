"""What a grading run writes from its records: ``results.csv`` (one row per submission), a feedback
page per student (Markdown and HTML), the class summary (score histogram as an SVG picture, the most
common mistakes, what did not run) and Gradescope's ``results.json``. Every file is written atomically
(:mod:`chainrule.fileio`), from the records alone, so a resumed run writes the same files as one
that was never interrupted."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .grade import Plan

__all__ = ["status_counts", "write_reports", "results_csv", "feedback_blocks", "histogram_svg", "gradescope_json",
           "summary_blocks"]

CSV_COLUMNS = ("id", "name", "score", "max", "status", "feedback")
Block = tuple[Any, ...]  # ("h1"|"h2"|"p"|"pre", text) or ("table", header, rows) or ("raw_html", md, html)


def _num(x: float) -> str:
    return f"{x:.4g}" if x != int(x) else str(int(x))


def results_csv(records: Sequence[dict[str, Any]]) -> str:
    """One row per submission: id, name, score, max, status, one-line feedback."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        w.writerow([r["id"], r.get("name", ""), _num(r["score"]), _num(r["max"]), r["status"], r["feedback"]])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# pages: a list of blocks, rendered as Markdown or HTML
# ---------------------------------------------------------------------------------------------


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}")
        elif kind == "h2":
            out.append(f"## {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "pre":
            fence = "````" if "```" in b[1] else "```"
            out.append(f"{fence}\n{b[1].rstrip()}\n{fence}")
        elif kind == "table":
            header, rows = b[1], b[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "raw_html":
            out.append(b[1])
    return "\n\n".join(out) + "\n"


def to_html(title: str, blocks: Sequence[Block]) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1].rstrip())}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "raw_html":
            body.append(b[2])
    style = ("body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}"
             "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6rem;"
             "overflow-x:auto;white-space:pre-wrap}h2{margin-top:1.6rem;border-bottom:1px solid #ddd}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inputs_text(inputs: dict[str, Any] | None) -> str:
    if not inputs:
        return ""
    return ", ".join(f"{k}={_short(v)}" for k, v in inputs.items())


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v[:6]) + (", ..." if len(v) > 6 else "") + "]"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def feedback_blocks(rec: dict[str, Any], plan: Plan) -> list[Block]:
    """A student's page: their score, then per problem its points, the verdict per returned value,
    the first wrong step with the inputs where it went wrong, and what their code printed."""
    who = rec["id"] + (f" ({rec['name']})" if rec.get("name") else "")
    blocks: list[Block] = [("h1", f"Feedback for {who}: {_num(rec['score'])} / {_num(rec['max'])}")]
    points = f"the given inputs and {plan.random} random point{'s' if plan.random != 1 else ''}" if plan.random \
        else "the given inputs"
    blocks.append(("p", f"Each function was run in a sandbox and checked at {points}: the output and every "
                        "gradient must have the right shape and values (real numbers) at each of them."))
    for note in rec.get("notes", []):
        blocks.append(("p", f"Note: {note}."))
    problems = {p.name: p for p in plan.problems}
    for pr in rec["problems"]:
        head = f"{pr['problem']}: {_num(pr['score'])} / {_num(pr['points'])}, {_STATUS[pr['status']]}"
        blocks.append(("h2", head))
        p = problems.get(pr["problem"])
        if p is not None:
            given = ", ".join(f"{k}={_short(_listed(v))}" for k, v in p.values.items())
            blocks.append(("p", f"Your function {pr['function']}"
                                f"{' in ' + pr['file'] if pr.get('file') else ''}, checked at {given} and at random "
                                "inputs."))
        if pr["values"]:
            blocks.append(("table", ["returned value", "yours", "verdict"],
                           [[v["name"], v.get("yours") or "", "right" if v["right"] else "wrong"]
                            for v in pr["values"]]))
        if pr["status"] == "failed":
            blocks.append(("p", f"It did not run to the end: {pr['reason']}"))
        elif pr["status"] == "wrong":
            blocks.append(("p", pr["feedback"]))
        if pr.get("report") and pr["status"] != "correct":
            where = _inputs_text(pr.get("inputs"))
            if pr.get("wrong_at") and where:
                blocks.append(("p", f"Where it first went wrong: {pr['wrong_at']} ({where})."))
            blocks.append(("pre", pr["report"]))
    for out in rec.get("output", []):
        for stream in ("stdout", "stderr"):
            text = out.get(stream, "")
            if text.strip():
                more = out.get("dropped", {}).get(stream, 0)
                blocks.append(("h2", f"What {out['file']} printed ({stream})"))
                blocks.append(("pre", text + (f"\n[... {more} more bytes not kept]" if more else "")))
    return blocks


def status_counts(records: Sequence[dict[str, Any]]) -> str:
    """``3 all correct, 7 with wrong values, 24 with a function that did not run``: submissions, counted
    by what their problems did (one with a wrong problem and one that did not run is in both counts,
    as in the per-problem table)."""
    n = len(records)
    correct = sum(r["status"] == "correct" for r in records)
    wrong = sum(any(p["status"] == "wrong" for p in r["problems"]) for r in records)
    failed = sum(any(p["status"] == "failed" for p in r["problems"]) for r in records)
    both = " (some in both)" if wrong + failed > n - correct else ""
    return f"{correct} all correct, {wrong} with wrong values, {failed} with a function that did not run{both}"


def _listed(v: Any) -> Any:
    import numpy as np

    return np.asarray(v).tolist()


_STATUS = {"correct": "correct", "wrong": "wrong", "failed": "did not run"}


# ---------------------------------------------------------------------------------------------
# the class summary
# ---------------------------------------------------------------------------------------------


def histogram_svg(scores: Sequence[float], max_score: float, width: int = 640, height: int = 300) -> str:
    """A bar chart of the scores (SVG text, no plotting library): one bar per possible score when
    there are few, else ten equal bins from 0 to the maximum."""
    top = max_score if max_score > 0 else max([*scores, 1.0])
    distinct = sorted(set(scores))
    if len(distinct) <= 12 and all(float(s).is_integer() for s in distinct) and top <= 12:
        edges = [float(k) for k in range(int(top) + 1)]
        labels = [_num(e) for e in edges]
        counts = [sum(1 for s in scores if s == e) for e in edges]
    else:
        nb = 10
        edges = [top * k / nb for k in range(nb + 1)]
        counts = [0] * nb
        for s in scores:
            counts[min(nb - 1, max(0, int(s / top * nb)) if top else 0)] += 1
        labels = [f"{_num(edges[k])}–{_num(edges[k + 1])}" for k in range(nb)]
    left, right, upper, lower = 48, 16, 28, 56
    plot_w, plot_h = width - left - right, height - upper - lower
    peak = max([*counts, 1])
    step = plot_w / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">Scores ({len(scores)} submissions, '
             f'out of {_num(max_score)})</text>']
    unit = next(u for u in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if peak / u <= 5)
    peak = math.ceil(peak / unit) * unit
    ticks = list(range(0, peak + 1, unit))
    for t in ticks:
        y = upper + plot_h - plot_h * t / peak
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t}</text>')
    for k, (c, lab) in enumerate(zip(counts, labels)):
        h = plot_h * c / peak
        x = left + k * step + step * 0.1
        y = upper + plot_h - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" fill="#4878a8">'
                     f'<title>{html.escape(lab)}: {c}</title></rect>')
        if c:
            parts.append(f'<text x="{x + step * 0.4:.1f}" y="{y - 4:.1f}" text-anchor="middle">{c}</text>')
        parts.append(f'<text x="{x + step * 0.4:.1f}" y="{upper + plot_h + 16}" text-anchor="middle">'
                     f'{html.escape(lab)}</text>')
    parts.append(f'<line x1="{left}" y1="{upper + plot_h}" x2="{width - right}" y2="{upper + plot_h}" stroke="#333"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 12}" text-anchor="middle">score</text>')
    parts.append(f'<text x="14" y="{upper + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {upper + plot_h / 2})">submissions</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def summary_blocks(records: Sequence[dict[str, Any]], plan: Plan, svg: str, top: int = 10) -> list[Block]:
    """The class at a glance: scores, the histogram, per problem how many got it right, the most
    common mistakes (what the class got wrong) and the submissions that did not run."""
    scores = [r["score"] for r in records]
    blocks: list[Block] = [("h1", f"Class summary: {len(records)} submissions")]
    if not records:
        blocks.append(("p", "No submission was graded."))
        return blocks
    blocks.append(("p", f"Mean {_num(round(statistics.fmean(scores), 3))} / {_num(plan.max_score)}, median "
                        f"{_num(statistics.median(scores))}; {status_counts(records)}."))
    blocks.append(("raw_html", "![score histogram](histogram.svg)", svg))
    rows = []
    for p in plan.problems:
        prs = [pr for r in records for pr in r["problems"] if pr["problem"] == p.name]
        c = Counter(pr["status"] for pr in prs)
        mean = statistics.fmean(pr["score"] for pr in prs) if prs else 0.0
        rows.append([p.name, _num(p.points), _num(round(mean, 3)), c["correct"], c["wrong"], c["failed"]])
    blocks.append(("h2", "Per problem"))
    blocks.append(("table", ["problem", "points", "mean", "correct", "wrong", "did not run"], rows))
    mistakes = Counter()
    examples: dict[str, list[str]] = {}
    for r in records:
        for pr in r["problems"]:
            key = pr.get("mistake") if pr["status"] == "wrong" else None
            if pr["status"] == "wrong" and pr.get("first_wrong_step"):
                step = pr["first_wrong_step"].split(":", 1)[0]
                key = f"{key}; first wrong step {step}"
            if key:
                mistakes[key] += 1
                examples.setdefault(key, []).append(r["id"])
    blocks.append(("h2", "What the class got wrong"))
    if mistakes:
        blocks.append(("p", "The most common first wrong steps, by problem (the step is named as the student "
                            "named it; the wrong values are those that were wrong at some test point)."))
        blocks.append(("table", ["mistake", "submissions", "for example"],
                       [[k, n, ", ".join(examples[k][:3])] for k, n in mistakes.most_common(top)]))
    else:
        blocks.append(("p", "No submission returned wrong values."))
    failures = Counter()
    fail_examples: dict[str, list[str]] = {}
    for r in records:
        why: dict[tuple[str, str], list[str]] = {}  # one reason for several problems (the file did not import)
        for pr in r["problems"]:
            if pr["status"] == "failed":
                why.setdefault((str(pr["kind"]), str(pr["reason"])), []).append(pr["problem"])
        for (kind, _), names in why.items():
            key = f"{', '.join(names)}: {_KINDS.get(kind, kind)}"
            failures[key] += 1
            fail_examples.setdefault(key, []).append(r["id"])
    blocks.append(("h2", "What did not run"))
    if failures:
        blocks.append(("table", ["problem: why", "submissions", "for example"],
                       [[k, n, ", ".join(fail_examples[k][:3])] for k, n in failures.most_common()]))
    else:
        blocks.append(("p", "Every function returned at every test point."))
    return blocks


_KINDS = {"timeout": "ran out of time", "cpu": "ran out of CPU time", "memory": "ran out of memory",
          "signal": "crashed", "exit": "exited", "syntax": "syntax error", "import": "the file raised on import",
          "missing_function": "no such function", "arity": "takes other inputs", "needs_values": "takes other inputs",
          "raised": "raised an exception", "result_too_large": "returned too much", "internal": "could not be run"}


# ---------------------------------------------------------------------------------------------
# Gradescope
# ---------------------------------------------------------------------------------------------


def gradescope_json(rec: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """One submission in Gradescope's autograder format (``/autograder/results/results.json``): a test
    per problem with its score, maximum, passed/failed status and the report as its output."""
    tests = []
    for k, pr in enumerate(rec["problems"], start=1):
        lines = [f"{_STATUS[pr['status']]}: {pr['feedback']}"]
        if pr["values"]:
            lines.append(", ".join(f"{v['name']} {'right' if v['right'] else 'wrong'}" for v in pr["values"]))
        if pr.get("report") and pr["status"] != "correct":
            lines += ["", pr["report"]]
        tests.append({"name": f"{pr['problem']} ({pr['function']})", "number": str(k), "score": pr["score"],
                      "max_score": pr["points"], "status": "passed" if pr["status"] == "correct" else "failed",
                      "output": "\n".join(lines), "output_format": "text", "visibility": "visible"})
    printed = []
    for out in rec.get("output", []):
        for stream in ("stdout", "stderr"):
            if out.get(stream, "").strip():
                printed.append(f"--- what {out['file']} printed ({stream}) ---\n{out[stream].rstrip()}")
    summary = f"{_num(rec['score'])} / {_num(rec['max'])}: {rec['feedback']}"
    return {"score": rec["score"], "execution_time": math.ceil(rec.get("seconds", 0.0)),
            "output": "\n\n".join([summary, *printed]), "output_format": "text", "stdout_visibility": "hidden",
            "tests": tests}


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_reports(out: Path, records: Sequence[dict[str, Any]], plan: Plan) -> list[Path]:
    """results.csv, feedback/<id>.md and .html, summary.md, summary.html and histogram.svg in ``out``."""
    written = [atomic_write(out / "results.csv", results_csv(records))]
    pages = out / "feedback"
    pages.mkdir(exist_ok=True)
    for r in records:
        blocks = feedback_blocks(r, plan)
        atomic_write(pages / f"{r['id']}.md", to_markdown(blocks))
        atomic_write(pages / f"{r['id']}.html", to_html(f"Feedback for {r['id']}", blocks))
    svg = histogram_svg([r["score"] for r in records], plan.max_score)
    written.append(atomic_write(out / "histogram.svg", svg))
    blocks = summary_blocks(records, plan, svg)
    written.append(atomic_write(out / "summary.md", to_markdown(blocks)))
    written.append(atomic_write(out / "summary.html", to_html("Class summary", blocks)))
    return written


def write_gradescope(path: Path, rec: dict[str, Any], plan: Plan) -> Path:
    return atomic_write(path, json.dumps(gradescope_json(rec, plan), indent=2, ensure_ascii=False) + "\n")
