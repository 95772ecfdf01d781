"""pytest plugin for the autograd shim (loaded with ``-p autograd_shim_plugin`` in the child process).

Records each test's outcome with the reason it failed (a missing chainrule rule, a wrong or failed
gradient check, an unmappable feature, an assertion, another error), and marks a test failed when one
of its gradient checks did not pass (the shim's ``check_grads`` records every check instead of stopping
at the first, so the test body itself runs to the end).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import autograd_shim_core as core
import pytest

_SHIM_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config: pytest.Config) -> None:
    import autograd
    import numpy

    import chainrule

    if not os.path.abspath(autograd.__file__).startswith(_SHIM_DIR + os.sep):
        raise pytest.UsageError(f"the autograd shim does not shadow the real autograd ({autograd.__file__})")
    try:
        import scipy

        scipy_version = scipy.__version__
    except ImportError:
        scipy_version = None
    core.RECORDER.add("session", chainrule=chainrule.__file__, autograd=autograd.__file__,
                      numpy=numpy.__version__, scipy=scipy_version, python=sys.version.split()[0],
                      has_jvp=hasattr(chainrule, "jvp"))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        text = str(report.longrepr).strip().splitlines()
        core.RECORDER.add("collect_error", node=report.nodeid, message=" | ".join(text[-3:])[:400])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    core.RECORDER.test = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    rep = outcome.get_result()
    if call.when == "setup" and not rep.passed:
        _record(item, "skipped" if rep.skipped else "failed", _reason(call, rep))
    elif call.when == "call":
        checks = core.RECORDER.checks(item.nodeid)
        bad = [c for c in checks if c["outcome"] not in ("pass", "unmappable")]
        if rep.passed and bad:
            rep.outcome = "failed"
            rep.longrepr = "\n".join(_check_line(c) for c in bad[:20])
        reason = _reason(call, rep) if not rep.passed else {}
        if rep.skipped:
            _record(item, "skipped", reason)
        elif bad:  # a gradient check failed: that is the test's verdict, whatever the body did next
            worst = _worst(bad)
            first = next(c for c in bad if c["outcome"] == worst)
            if worst == "wrong":
                extra = {"type": "WrongGradient", "detail": _check_line(first)}
            elif worst == "missing":
                extra = {"name": first["name"], "detail": first["message"]}
            else:
                extra = {"type": first["type"], "detail": first["message"], "where": first.get("where", "")}
            _record(item, "failed", {"reason": worst, **extra})
        elif checks and all(c["outcome"] == "unmappable" for c in checks):
            _record(item, "unmappable", {"reason": "unmappable", "detail": checks[0]["reason"]})
        elif reason.get("reason") == "unmappable":
            _record(item, "unmappable", reason)
        elif item.nodeid not in core.RECORDER.reached:
            # never called grad, check_grads, ...: it tests autograd's own NumPy wrapper or utilities
            _record(item, "not_chainrule",
                    {"reason": reason.get("reason", "passed"), "detail": reason.get("detail", "")})
        elif rep.passed:
            _record(item, "passed", {})
        else:
            _record(item, "failed", reason)
    core.RECORDER.test = item.nodeid if call.when != "teardown" else None


def _record(item: pytest.Item, status: str, reason: dict[str, Any]) -> None:
    core.RECORDER.add("test", file=item.nodeid.split("::")[0].split("/")[-1], status=status, **reason)


def _worst(bad: list[dict[str, Any]]) -> str:
    kinds = {c["outcome"] for c in bad}
    return next(k for k in ("wrong", "missing", "error") if k in kinds)


def _check_line(c: dict[str, Any]) -> str:
    what = {"wrong": lambda: f"analytic {c['analytic']:.6g} numeric {c['numeric']:.6g} rel {c['rel_error']:.2g}",
            "missing": lambda: c["name"], "error": lambda: f"{c['type']}: {c['message']}"}[c["outcome"]]()
    return f"gradient check {c['mode']} of {c['function']} {c['shapes']}: {c['outcome']}: {what}"


def _reason(call: pytest.CallInfo[Any], rep: pytest.TestReport) -> dict[str, Any]:
    if rep.skipped:
        longrepr = rep.longrepr
        msg = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return {"reason": "skipped", "detail": str(msg)[:300]}
    exc = call.excinfo.value if call.excinfo is not None else None
    if exc is None:
        return {"reason": "error", "type": "?", "detail": str(rep.longrepr)[:300]}
    c = core.classify(exc)
    if c["outcome"] == "unmappable":
        return {"reason": "unmappable", "detail": c["reason"]}
    if c["outcome"] == "missing":
        return {"reason": "missing", "name": c["name"], "detail": c["message"]}
    if isinstance(exc, AssertionError):
        return {"reason": "assertion", "type": "AssertionError", "detail": core.one_line(exc) or "assert"}
    if isinstance(exc, pytest.fail.Exception):
        return {"reason": "assertion", "type": "Failed", "detail": core.one_line(exc)}
    return {"reason": "error", "type": c["type"], "detail": c["message"], "where": c["where"]}
