"""HIPS autograd's own test suite, unchanged, run against chainrule through a shim (issue 10's measure).

    python bench/autograd_suite.py --tests /path/to/autograd/tests [--json out.json] [-k EXPR]

``--tests`` is autograd's ``tests`` folder, a checkout holding one, or a git repository (a bare mirror
too) from whose HEAD the folder is extracted into a temporary directory; autograd's code is never copied
into this repository. A child pytest process runs those tests with ``bench/autograd_shim`` first on
``sys.path``: its ``autograd`` package shadows the real one, ``autograd.numpy`` is plain NumPy (chainrule
sees the calls through its dispatch), ``grad``/``value_and_grad``/``make_vjp``/... are chainrule's, and
``check_grads`` is written again against chainrule with every check recorded. Then this prints, per test
file, the tests passed/failed/unmappable and the gradient checks at order 1 and 2 (pass, wrong, missing
rule, unmappable, error), the missing functions ranked by the checks they block, every wrong gradient,
and the errors grouped by message. ``--json`` writes all of it, every record included.
"""

from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(HERE, "autograd_shim")
RECORDS_ENV = "AUTOGRAD_SHIM_RECORDS"  # read by autograd_shim_core in the child
OUTCOMES = ("pass", "wrong", "missing", "unmappable", "error")
STATUSES = ("passed", "failed", "unmappable", "skipped", "not_chainrule")
NOT_IN_ISSUE = ("test_scipy.py",)  # autograd.scipy: reported apart too (beyond issue 10's NumPy list)


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autograd_suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", required=True,
                        help="autograd's tests folder, a checkout holding one, or a git mirror of autograd")
    parser.add_argument("--json", metavar="OUT", help="write the summary and every record as JSON")
    parser.add_argument("-k", metavar="EXPR", help="only tests matching this pytest -k expression")
    parser.add_argument("--top", type=int, default=60, help="how many missing functions to list (default 60)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before the child is stopped")
    parser.add_argument("--show-pytest", action="store_true", help="print the child pytest's own output")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="autograd-suite-") as work:
            tests, source = locate_tests(args.tests, work)
            run = run_child(tests, work, args.k, args.timeout)
            if args.show_pytest:
                print(run["log"])
            summary = summarize(run["records"])
    except UsageError as e:
        print(f"autograd_suite: error: {e}", file=sys.stderr)
        return 2
    summary["meta"].update(source=source, seconds=run["seconds"], pytest_exit=run["returncode"],
                           timed_out=run["timed_out"], k=args.k)
    if not summary["meta"].get("chainrule"):
        tail = "\n".join(run["log"].splitlines()[-15:])
        print(f"autograd_suite: error: the child pytest did not start the shim (exit {run['returncode']}):\n{tail}",
              file=sys.stderr)
        return 3
    print(render(summary, args.top))
    if args.json:
        from chainrule.fileio import atomic_write

        atomic_write(args.json, json.dumps(summary, indent=1, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if run["returncode"] in (0, 1) else 3  # 1: some autograd tests failed, as expected


# ---------------------------------------------------------------------------------------------
# finding autograd's tests and running them
# ---------------------------------------------------------------------------------------------


def _has_tests(folder: str) -> bool:
    """A folder of autograd's tests: test_*.py files, at least half of which import autograd."""
    files = glob.glob(os.path.join(folder, "test_*.py")) if os.path.isdir(folder) else []
    uses = 0
    for name in files:
        with open(name, encoding="utf-8", errors="replace") as fh:
            uses += bool(re.search(r"^\s*(from|import) autograd\b", fh.read(), re.MULTILINE))
    return bool(files) and 2 * uses >= len(files)


def locate_tests(path: str, work: str) -> tuple[str, str]:
    """autograd's tests folder for ``path``, and a description of where it came from."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory (give autograd's tests folder or a git mirror of it)")
    if _has_tests(path):
        return os.path.abspath(path), os.path.abspath(path)
    if _has_tests(os.path.join(path, "tests")):
        return os.path.abspath(os.path.join(path, "tests")), os.path.abspath(path)
    head = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        raise UsageError(f"{path}: neither autograd's tests folder (test_*.py files importing autograd) nor a git "
                         "repository holding one")
    archive = subprocess.run(["git", "-C", path, "archive", "--format=tar", "HEAD", "tests"], capture_output=True)
    if archive.returncode != 0:
        raise UsageError(f"{path}: a git repository without a tests folder at HEAD")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(work, filter="data")
    tests = os.path.join(work, "tests")
    if not _has_tests(tests):
        raise UsageError(f"{path}: the tests folder at HEAD holds no autograd tests (test_*.py importing autograd)")
    return tests, f"{os.path.abspath(path)} @ {head.stdout.strip()[:12]}"


def run_child(tests: str, work: str, k: str | None, timeout: float) -> dict[str, Any]:
    """pytest on ``tests`` in a child process with the shim first on its path; returns its records."""
    ini = os.path.join(work, "pytest.ini")
    with open(ini, "w", encoding="utf-8") as fh:
        fh.write("[pytest]\n")  # none of the surrounding project's pytest settings apply
    records = os.path.join(work, "records.jsonl")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SHIM, env.get("PYTHONPATH", "")) if p)
    env[RECORDS_ENV] = records
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave autograd's folder as it was
    cmd = [sys.executable, "-m", "pytest", tests, "-c", ini, "--rootdir", tests, "-p", "autograd_shim_plugin",
           "-p", "no:cacheprovider", "-q", "--tb=no", "-o", "console_output_style=classic"]
    if k:
        cmd += ["-k", k]
    start = time.perf_counter()
    timed_out = False
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        log, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        log = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        code, timed_out = None, True
    seconds = time.perf_counter() - start
    recs = []
    if os.path.exists(records):
        with open(records, encoding="utf-8") as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
    return {"records": recs, "log": log, "returncode": code, "seconds": round(seconds, 1), "timed_out": timed_out}


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def _file_of(test: str | None) -> str:
    return (test or "?").split("::")[0].split("/")[-1]


def _count_checks(checks: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Outcome counts per order ("1", "2", and "3" where autograd's tests ask for third order)."""
    out = {str(o): dict.fromkeys(OUTCOMES, 0) for o in (1, 2)}
    for c in checks:
        out.setdefault(str(c["order"]), dict.fromkeys(OUTCOMES, 0))[c["outcome"]] += 1
    return out


def _rates(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    res = {}
    for order, c in counts.items():
        mappable = c["pass"] + c["wrong"] + c["missing"] + c["error"]
        res[order] = {"mappable": mappable, "unmappable": c["unmappable"],
                      **{f"{k}_pct": round(100 * c[k] / mappable, 1) if mappable else None
                         for k in ("pass", "wrong", "missing", "error")}}
    return res


def _normalize(msg: str) -> str:
    """A message with its numbers, shapes and file positions blanked, so alike errors group together."""
    msg = re.sub(r"\S+\.py:\d+", "<file:line>", msg)
    msg = re.sub(r"\(\s*[\d, ]*\)", "(…)", msg)
    return re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b", "N", msg)[:200]


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    session = next((r for r in records if r["kind"] == "session"), {})
    checks = [r for r in records if r["kind"] == "check"]
    tests = [r for r in records if r["kind"] == "test"]
    collect_errors = [r for r in records if r["kind"] == "collect_error"]
    files: dict[str, dict[str, Any]] = {}
    for name in sorted({_file_of(t["test"]) for t in tests} | {_file_of(c["test"]) for c in checks}
                       | {_file_of(e["node"]) for e in collect_errors}):
        ft = [t for t in tests if _file_of(t["test"]) == name]
        files[name] = {"tests": {s: sum(t["status"] == s for t in ft) for s in STATUSES},
                       "collect_errors": sum(_file_of(e["node"]) == name for e in collect_errors),
                       "checks": _count_checks([c for c in checks if _file_of(c["test"]) == name])}
    total_checks = _count_checks(checks)
    numpy_checks = _count_checks([c for c in checks if _file_of(c["test"]) not in NOT_IN_ISSUE])
    totals = {"tests": {s: sum(t["status"] == s for t in tests) for s in STATUSES},
              "collect_errors": len(collect_errors), "checks": total_checks, "rates": _rates(total_checks),
              "checks_without_scipy": numpy_checks, "rates_without_scipy": _rates(numpy_checks)}

    missing: dict[str, dict[str, Any]] = {}
    for c in checks:
        if c["outcome"] == "missing":
            m = missing.setdefault(c["name"], {"name": c["name"], "checks": 0, "order1": 0, "order2": 0,
                                               "tests": set(), "example": c["message"]})
            m["checks"] += 1
            m[f"order{c['order']}"] = m.get(f"order{c['order']}", 0) + 1
            m["tests"].add(c["test"])
    for t in tests:
        if t.get("reason") == "missing":
            m = missing.setdefault(t["name"], {"name": t["name"], "checks": 0, "order1": 0, "order2": 0,
                                               "tests": set(), "example": t["detail"]})
            m["tests"].add(t["test"])
    missing_list = sorted(({**m, "tests": len(m["tests"])} for m in missing.values()),
                          key=lambda m: (-m["checks"], -m["tests"], m["name"]))

    wrong = [{k: c.get(k) for k in ("test", "function", "shapes", "kwargs", "order", "mode", "analytic",
                                     "numeric", "rel_error")} for c in checks if c["outcome"] == "wrong"]

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for c in checks:
        if c["outcome"] == "error":
            key = (c["type"], _normalize(c["message"]), c.get("where", ""))
            g = groups.setdefault(key, {"type": c["type"], "message": c["message"], "where": c.get("where", ""),
                                        "checks": 0, "tests": set()})
            g["checks"] += 1
            g["tests"].add(c["test"])
    error_groups = sorted(({**g, "tests": sorted(g["tests"])} for g in groups.values()),
                          key=lambda g: -g["checks"])

    failed_tests: dict[tuple[str, str], dict[str, Any]] = {}
    for t in tests:
        if t["status"] == "failed":
            r = t.get("reason", "error")
            label = t.get("name") if r == "missing" else f"{t.get('type', '')}: {_normalize(t.get('detail', ''))}" + (
                f" [called from {t['where']}]" if t.get("where") else "")
            g = failed_tests.setdefault((r, label or ""), {"reason": r, "what": label, "example": t.get("detail"),
                                                           "tests": []})
            g["tests"].append(t["test"])
    failure_groups = sorted(failed_tests.values(), key=lambda g: (g["reason"], -len(g["tests"])))

    unmappable: collections.Counter[str] = collections.Counter(
        re.sub(r"^\w+: |\(argument \d+\)", "", c["reason"]).strip() for c in checks if c["outcome"] == "unmappable")
    return {"meta": {k: v for k, v in session.items() if k not in ("kind", "test")},
            "files": files, "totals": totals, "missing": missing_list, "wrong": wrong,
            "error_groups": error_groups, "test_failures": failure_groups,
            "unmappable_reasons": unmappable.most_common(), "collect_errors": collect_errors,
            "tests": tests, "checks": checks}


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "-"


def render(s: dict[str, Any], top: int) -> str:
    meta, files, totals = s["meta"], s["files"], s["totals"]
    lines = [f"HIPS autograd's test suite against chainrule  ({meta.get('source')})",
             f"chainrule: {meta.get('chainrule')}   numpy {meta.get('numpy')}  scipy {meta.get('scipy')}  "
             f"cr.jvp: {'yes' if meta.get('has_jvp') else 'no'}   {meta.get('seconds')} s"
             + ("   TIMED OUT: partial results" if meta.get("timed_out") else "")]
    if meta.get("pytest_exit") not in (0, 1):
        lines.append(f"WARNING: the child pytest stopped early (exit {meta.get('pytest_exit')}): the figures below "
                     "are partial; rerun with --show-pytest to see why")
    if meta.get("k"):
        lines.append(f"only tests matching -k {meta['k']!r}")
    head = (f"{'file':<24}{'tests: pass':>11}{'fail':>6}{'unmap':>6}{'skip':>6}{'no-cr':>6} |"
            f"{'order 1: pass':>14}{'wrong':>6}{'miss':>6}{'unmap':>6}{'err':>5} |"
            f"{'order 2: pass':>14}{'wrong':>6}{'miss':>6}{'unmap':>6}{'err':>5}")
    lines += ["", head, "-" * len(head)]

    def row(name: str, f: dict[str, Any]) -> str:
        t, c1, c2 = f["tests"], f["checks"]["1"], f["checks"]["2"]
        ce = f" +{f['collect_errors']} collection error(s)" if f["collect_errors"] else ""
        return (f"{name:<24}{t['passed']:>11}{t['failed']:>6}{t['unmappable']:>6}{t['skipped']:>6}"
                f"{t['not_chainrule']:>6} |"
                + "".join(f"{c[o]:>{14 if o == 'pass' else 5 if o == 'error' else 6}}" for o in OUTCOMES
                          for c in [c1])
                + " |" + "".join(f"{c2[o]:>{14 if o == 'pass' else 5 if o == 'error' else 6}}" for o in OUTCOMES)
                + ce)

    for name, f in files.items():
        lines.append(row(name, f))
    lines += ["-" * len(head), row("TOTAL", totals)]
    if "3" in totals["checks"]:
        lines.append("(order-3 checks, which a few of autograd's tests ask for, are in the totals below)")
    t = totals["tests"]
    ran = t["passed"] + t["failed"]
    lines += ["", f"tests that reach chainrule: {t['passed']} of {ran} pass ({_pct(t['passed'], ran)}), "
              f"{t['failed']} fail; apart: {t['unmappable']} unmappable, {t['skipped']} skipped, "
              f"{t['not_chainrule']} never call chainrule (autograd's own wrappers and utilities: "
              f"{sum(x.get('reason') == 'passed' for x in s['tests'] if x['status'] == 'not_chainrule')} "
              f"pass on plain NumPy); {sum(t.values())} tests in all"
              + (f"; {totals['collect_errors']} collection error(s)" if totals["collect_errors"] else "")]
    for label, key in (("all files", "checks"), ("without test_scipy.py", "checks_without_scipy")):
        for order in sorted(totals[key]):
            c = totals[key][order]
            m = c["pass"] + c["wrong"] + c["missing"] + c["error"]
            lines.append(f"real-valued gradient checks, order {order}, {label}: {c['pass']} of {m} pass "
                         f"({_pct(c['pass'], m)}), {c['wrong']} wrong, {c['missing']} missing rule "
                         f"({_pct(c['missing'], m)}), {c['error']} error; {c['unmappable']} unmappable apart")

    lines += ["", f"WRONG GRADIENTS: {len(s['wrong'])}"]
    for w in s["wrong"]:
        lines.append(f"  {w['test']}: {w['function']} {w['shapes']} {w['kwargs']} order {w['order']} "
                     f"({w['mode']}): analytic {w['analytic']:.8g} numeric {w['numeric']:.8g} "
                     f"relative error {w['rel_error']:.3g}")

    lines += ["", f"missing rules, ranked by the gradient checks they block (top {top} of {len(s['missing'])}):",
              f"  {'#':>3} {'function':<40}{'checks':>7}{'order1':>7}{'order2':>7}{'order3':>7}{'tests':>6}"]
    for i, m in enumerate(s["missing"][:top], 1):
        lines.append(f"  {i:>3} {m['name']:<40}{m['checks']:>7}{m['order1']:>7}{m['order2']:>7}"
                     f"{m.get('order3', 0):>7}{m['tests']:>6}")

    lines += ["", f"gradient-check errors, grouped by message ({len(s['error_groups'])} groups):"]
    for g in s["error_groups"]:
        where = f" [called from {g['where']}]" if g["where"] else ""
        lines.append(f"  {g['checks']:>4} checks, {len(g['tests'])} tests: {g['type']}: {g['message'][:160]}{where}")
        lines.append(f"       e.g. {g['tests'][0]}")

    by_reason = collections.Counter()
    for g in s["test_failures"]:
        by_reason[g["reason"]] += len(g["tests"])
    lines += ["", "failed tests by reason: " + ", ".join(f"{n} {r}" for r, n in by_reason.most_common())
              + " (missing: the first rule the test stopped at; assertion/error: outside a gradient check, read each)"]
    for g in s["test_failures"]:
        if g["reason"] != "missing":
            lines.append(f"  {len(g['tests']):>4} {g['reason']}: {(g['what'] or '')[:220]}")
            lines.append(f"       e.g. {g['tests'][0]}")
    firsts = sorted((g for g in s["test_failures"] if g["reason"] == "missing"), key=lambda g: -len(g["tests"]))
    lines.append("  tests stopped by a missing rule, by the first one they met: "
                 + ", ".join(f"{g['what']} {len(g['tests'])}" for g in firsts))

    lines += ["", "unmappable checks by reason:"]
    lines += [f"  {n:>5} {r}" for r, n in s["unmappable_reasons"]]
    if s["collect_errors"]:
        lines += ["", "collection errors:"] + [f"  {e['node']}: {e['message']}" for e in s["collect_errors"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
