"""The explorer under load and under malformed input (issue 12, items 3-5): bounded answers, a page
that keeps loading while computations queue, 429 at once past the queue, bounded memory for clients
that never read, 4xx JSON for the three inputs that used to be 500s, security headers on static
files, and a Host check that refuses ``localhost:evil``."""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the explorer needs the web extra: pip install 'chainrule[web]'")
uvicorn = pytest.importorskip("uvicorn", reason="the explorer needs the web extra: pip install 'chainrule[web]'")
pytest.importorskip("httpx", reason="the API tests need httpx (the test extra)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from chainrule.web import bind_socket, create_app  # noqa: E402
from chainrule.web.api import Limits  # noqa: E402

BIG = {"expression": "sigmoid(" * 55 + "x" + ")" * 55, "values": {"x": [0.5] * 1000}, "expand": True}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Limits(), workers=1), base_url="http://127.0.0.1:8000") as c:
        yield c


# ---------------------------------------------------------------------------------------------
# item 3: the answer is bounded
# ---------------------------------------------------------------------------------------------


def test_the_5kb_request_no_longer_answers_40mb(client):
    """Before: 40.6 MB of JSON in 3.5 s. Now node arrays are summarized: size grows with nodes only."""
    assert len(json.dumps(BIG)) < 5600
    r = client.post("/api/trace", json=BIG)
    assert r.status_code == 200
    assert len(r.content) < Limits().max_response_bytes
    d = r.json()
    assert d["values"]["x"] == [0.5] * 1000  # the inputs themselves come back whole
    v = 0.5
    for _ in range(55):  # the output, computed independently
        v = 1 / (1 + math.exp(-v))
    out = next(n for n in d["nodes"] if n["name"] == d["output"])
    assert out["value"]["summary"] is True and out["value"]["shape"] == [1000] and out["value"]["size"] == 1000
    assert out["value"]["head"] == pytest.approx([v] * 3) and out["value"]["tail"] == pytest.approx([v] * 3)
    assert d["value"] == pytest.approx([v] * 1000)  # the output and the input gradients: whole
    short = client.post("/api/trace", json={"expression": "x * y", "values": {"x": [1, 2, 3], "y": 2}}).json()
    assert [n["value"] for n in short["nodes"]] == [[1, 2, 3], 2, [2, 4, 6]]  # short arrays: as they are


def test_an_answer_past_the_limit_is_a_413_json_error():
    with TestClient(create_app(Limits(max_response_bytes=50_000), workers=1), base_url="http://localhost") as c:
        r = c.post("/api/trace", json=BIG)
        assert r.status_code == 413 and r.json()["code"] == "response_too_large"
        assert "the limit is 0.1 MB" in r.json()["error"] or "limit is 0.05 MB" in r.json()["error"]
        assert c.post("/api/trace", json={"expression": "x", "values": {"x": 1}}).status_code == 200


def test_answers_are_sent_in_pieces():
    """A client that does not read holds at most one answer: it goes out in 64 KiB pieces, each sent
    only when the connection can take it (uvicorn waits for the reader between pieces)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    import anyio

    from chainrule.web.app import JSONBytes

    body = b"[" + b"1," * 100_000 + b"1]"
    anyio.run(JSONBytes(body), {"type": "http"}, None, send)
    pieces = [m["body"] for m in sent[1:]]
    assert sent[0]["type"] == "http.response.start" and b"".join(pieces) == body
    assert len(pieces) > 1 and max(len(p) for p in pieces) <= 64 * 1024
    assert [m["more_body"] for m in sent[1:]] == [True] * (len(pieces) - 1) + [False]


# ---------------------------------------------------------------------------------------------
# item 5: malformed input, headers, Host
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route,body,field", [
    ("/api/trace", b'{"expression": "x", "values": {"x": [1, null]}}', "values.x"),
    ("/api/step", b'{"expression": "x", "values": {"x": 1}, "lr": ' + b"9" * 400 + b"}", "lr"),
    ("/api/trace", b'{"expression": "\\ud800", "values": {}}', "expression"),
    ("/api/trace", b'{"expression": "x", "values": {"\\ud800": 1}}', "values.\ufffd"),
    ("/api/trace", b'{"expression": "x", "values": {"x": 1}, "\\udfff": 1}', "\ufffd"),
])
def test_malformed_inputs_get_a_4xx_json_error(client, caplog, route, body, field):
    """Before: a 500 with a traceback in the server's log for each of the first three."""
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    err = json.loads(r.content.decode("utf-8"))  # valid UTF-8 JSON, lone surrogate or not
    assert err["code"] != "internal" and err.get("field") == field and len(err["error"]) > 10
    assert "Traceback" not in caplog.text


def test_static_files_carry_the_security_headers(client):
    for path in ("/", "/static/app.js", "/static/style.css", "/api/info", "/static/nothing.js"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "script-src 'self'" in r.headers["content-security-policy"], path
        assert r.headers["referrer-policy"] == "no-referrer", path


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1:8000", True), ("localhost", True), ("LOCALHOST:80", True), ("[::1]:8000", True),
    ("localhost:evil", False), ("localhost:8000 evil", False), ("localhost:", False), ("[::1]:x", False),
    ("127.0.0.1:8000@evil.example", False), ("evil.example:8000", False), ("", False), ("localhost.evil", False),
])
def test_the_host_check_takes_only_a_name_and_a_numeric_port(client, host, ok):
    r = client.get("/api/info", headers={"host": host})
    assert (r.status_code == 200) is ok, (host, r.status_code)
    if not ok:
        assert r.json()["code"] == "bad_host" and r.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------------------------------------
# item 4: a real server with many slow requests
# ---------------------------------------------------------------------------------------------


class _Server:
    """The explorer in uvicorn, in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Host": f"127.0.0.1:{self.port}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            c.request(method, path, None if body is None else json.dumps(body), headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


def test_page_answers_while_60_requests_wait_and_the_excess_get_429_at_once():
    """Before: with 45 or more requests waiting, GET / took 10 s (the thread pool was exhausted).

    Every computation is held at a gate: 1 runs, 45 wait (more than the 40 threads Starlette's pool
    has, so waiting must not hold a thread), and the other 14 must be answered 429 while the gate is
    still closed. Meanwhile the page, a static file and /api/info answer; then the gate opens and
    the 46 admitted requests complete."""
    app = create_app(Limits(max_queue=45), workers=1)
    gate = threading.Event()
    with _Server(app) as srv:
        pool = app.state.pool
        real_run = pool.run

        def gated(*args: Any) -> Any:
            gate.wait(60)
            return real_run(*args)

        pool.run = gated
        results: list[int] = []
        lock = threading.Lock()

        def one() -> None:
            status, _ = srv.request("POST", "/api/trace", {"expression": "x * y", "values": {"x": 2, "y": 3}})
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one) for _ in range(60)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and results.count(429) < 14:
            time.sleep(0.05)
        try:
            assert results.count(429) == 14 and len(results) == 14  # refused at once, while 46 still wait
            for path in ("/", "/static/app.js", "/api/info"):
                status, body = srv.request("GET", path, timeout=20)
                assert status == 200 and body, path
            assert len(results) == 14  # ... and they were still waiting when the page answered
        finally:
            gate.set()
            for t in threads:
                t.join(timeout=60)
        assert sorted(results) == [200] * 46 + [429] * 14


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_clients_that_never_read_do_not_grow_the_server():
    """Before: ten clients sending the 5.5 KB request and never reading grew the server by hundreds of MB
    (a whole 40 MB answer buffered per connection). Now each holds at most one bounded answer."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "chainrule", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        before = _rss_mb(proc.pid)
        data = json.dumps(BIG).encode()
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"POST /api/trace HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            socks.append(s)
        time.sleep(4)  # 10 computations of ~0.3 s on 2 workers: answered (and stuck) by now
        grown = _rss_mb(proc.pid) - before
        assert grown < 10 * Limits().max_response_bytes / 2**20 + 30, f"the server grew by {grown:.0f} MB"
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=20)
