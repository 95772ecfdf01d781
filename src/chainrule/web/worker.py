"""Worker processes that run the explorer's API jobs under a hard time limit.

A Python thread cannot be stopped, and a runaway computation in the server process would freeze
every other request; so each job (parse, trace, picture, code) runs in a child process
(``python -m chainrule.web.worker``), one JSON line in and one line out: the HTTP status, a space and
the answer's JSON, encoded (and checked against the size limit) by the worker, so the server passes
the bytes on without decoding or encoding anything. When a job runs past its time, that child is
killed and replaced, and the request is answered with a clear error: the server itself never waits
on, or dies with, a bad request.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import IO, Any

from .api import ApiError, Limits, encode_json, handle

# how long a new child may take to import NumPy and chainrule before its first answer
_STARTUP_SECONDS = 60.0


def _answer(line: str) -> tuple[int, bytes]:
    """One job, from its JSON line to ``(status, JSON bytes)`` (never raises)."""
    try:
        job = json.loads(line)
        if job["kind"] == "ping":  # start-up: answer once everything is imported
            return 200, b"{}"
        limits = Limits(**job["limits"])
        body = encode_json(handle(job["kind"], job["payload"], limits))
        if len(body) > limits.max_response_bytes:
            raise ApiError(413, "response_too_large",
                           f"the answer would be {len(body) / 1e6:.1f} MB; the limit is "
                           f"{limits.max_response_bytes / 1e6:.1f} MB: fewer nodes (fused, not expanded?) or "
                           "shorter arrays")
        return 200, body
    except ApiError as e:
        return e.status, encode_json(e.body())
    except MemoryError:
        return 413, encode_json({"error": "the computation needs more memory than this server allows",
                                 "code": "too_much_memory"})
    except Exception as e:  # noqa: BLE001 - the child must answer, whatever happened
        return 500, encode_json({"error": f"internal error: {type(e).__name__}: {e}", "code": "internal"})


def main() -> None:
    """The child's loop: read one job per line on stdin, write one reply per line on stdout."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed by accident may corrupt the replies
    for line in sys.stdin:
        status, body = _answer(line)
        out.write(b"%d %s\n" % (status, body))  # JSON never holds a raw newline
        out.flush()


def _pump(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # the child has gone


class Worker:
    """One child process, started on demand; :meth:`run` kills and forgets it after a timeout."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._warm = False

    def start(self) -> None:
        """Start the child now (it takes a moment to import NumPy), if it is not running."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = dict(os.environ)
        # the child imports this same chainrule, installed or not
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "chainrule.web.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, env=env,
        )
        self._lines = queue.Queue()
        self._warm = False
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True,
                         name="chainrule-web-worker-reader").start()

    def warm(self) -> None:
        """Start the child and wait until it answers (so no request pays for its start-up)."""
        if not self._warm:
            self.run("ping", {}, Limits())

    def stop(self) -> None:
        """Kill the child (if any)."""
        proc, self._proc = self._proc, None
        self._warm = False
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not take
            pass
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def run(self, kind: str, payload: Any, limits: Limits) -> tuple[int, bytes]:
        """Run one job; returns ``(status, JSON bytes)`` or raises :class:`ApiError` (timeouts included)."""
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        line = json.dumps({"kind": kind, "payload": payload, "limits": asdict(limits)})  # ASCII: escapes all
        try:
            proc.stdin.write(line.encode("ascii") + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise ApiError(500, "worker_died", "the computation's worker process had stopped; "
                           "the server starts a new one, try again") from None
        # the child's start-up (importing NumPy) does not count against the request's time
        wait = limits.max_seconds + (0.0 if self._warm else _STARTUP_SECONDS)
        try:
            reply_line = self._lines.get(timeout=wait)
        except queue.Empty:
            self.stop()
            raise ApiError(422, "timeout",
                           f"the computation took longer than the limit of {limits.max_seconds:g} s "
                           "and was stopped; try a smaller expression or smaller arrays") from None
        if reply_line is None:
            self.stop()
            raise ApiError(500, "worker_died", "the computation crashed its worker process; "
                           "the server has started a new one")
        self._warm = True
        status, _, body = reply_line.rstrip(b"\n").partition(b" ")
        return int(status), body


class WorkerPool:
    """A fixed number of workers; a request waits (bounded) for a free one."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._all = [Worker() for _ in range(size)]
        self._idle: queue.Queue[Worker] = queue.Queue()
        for w in self._all:
            self._idle.put(w)

    def start(self) -> None:
        """Start every worker and wait until each answers (so the first request does not wait for
        NumPy to import, and its time limit counts only its own work)."""
        for w in self._all:
            w.start()
        for w in self._all:
            w.warm()

    def stop(self) -> None:
        """Kill every worker process."""
        for w in self._all:
            w.stop()

    def run(self, kind: str, payload: Any, limits: Limits) -> tuple[int, bytes]:
        """Run one job on a free worker: ``(status, JSON bytes)`` (blocking; call it from a thread, not
        the event loop, and at most ``size`` at a time: see the explorer's queue in ``app.py``)."""
        try:
            worker = self._idle.get(timeout=limits.max_seconds)
        except queue.Empty:
            raise ApiError(429, "busy", "the server is busy with other computations; try again in a moment") \
                from None
        try:
            return worker.run(kind, payload, limits)
        finally:
            self._idle.put(worker)


if __name__ == "__main__":
    main()
