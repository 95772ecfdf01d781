"""The explorer's HTTP layer (Starlette): JSON API routes, the static page, and the limits on load.

Every computing route reads a bounded JSON body, waits (without holding a thread) for one of the
worker processes (see ``worker.py``) and passes on its answer, already encoded and size-checked by
the worker, so the event loop never encodes a large answer. At most ``workers`` computations run at
once and ``max_queue`` more wait; past that a request is answered 429 at once, so waiting requests
never starve the page or ``/api/info``. Every failure, whatever its cause, is a JSON
``{"error": ..., "code": ...}`` with a 4xx status (5xx only for a bug). Every response, static files
included, carries the same security headers, and only this machine's own host names are answered.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from .api import ApiError, Limits, encode_json, examples, info

try:
    import anyio
    from starlette.applications import Starlette
    from starlette.datastructures import Headers, MutableHeaders
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the chainrule explorer needs Starlette and Uvicorn: pip install 'chainrule[web]'"
    ) from _e

from .worker import WorkerPool

STATIC_DIR = resources.files("chainrule.web") / "static"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}

_CHUNK = 64 * 1024


class JSONBytes(Response):
    """A JSON answer that is already encoded, sent in 64 KiB pieces: the server waits for a slow
    reader between pieces (uvicorn's flow control) instead of copying the whole answer into the
    connection's buffer, so a client that never reads holds at most one answer."""

    media_type = "application/json"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body = bytes(self.body)
        for start in range(0, max(len(body), 1), _CHUNK):
            await send({"type": "http.response.body", "body": body[start:start + _CHUNK],
                        "more_body": start + _CHUNK < len(body)})


def json_response(obj: Any, status: int = 200) -> JSONBytes:
    """``obj`` as a JSON answer (lone surrogates from the request cannot break its encoding)."""
    return JSONBytes(encode_json(obj), status_code=status)


def error_response(err: ApiError) -> JSONBytes:
    """The JSON answer for one :class:`ApiError`."""
    return json_response(err.body(), err.status)


async def read_json(request: Request, limits: Limits) -> Any:
    """The request body as JSON, refusing (413) a body over ``limits.max_body_bytes`` before reading it
    all, (415) a body that is not declared JSON, and (400) one that does not parse."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "not_json", "send the request body as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "the Content-Length header is not a number") from None
        if n > limits.max_body_bytes:
            raise _too_large(n, limits)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise _too_large(len(body), limits)
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {e}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_large(n: int, limits: Limits) -> ApiError:
    return ApiError(413, "request_too_large",
                    f"the request body is {n} bytes; the limit is {limits.max_body_bytes} bytes")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

# a Host header: a name or an address, optionally ":port" (digits only); IPv6 in brackets
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")


def _hostname(host_header: str) -> str | None:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``; anything that is not a
    host and an optional numeric port (``localhost:evil``, ``a b``) -> None."""
    m = _HOST.fullmatch(host_header.strip())
    if m is None:
        return None
    return (m.group("v6") or m.group("name")).lower()


class Guard:
    """ASGI middleware: answer only the allowed host names (no DNS rebinding), and put the security
    headers on every response -- the page, the API and the static files alike."""

    def __init__(self, app: ASGIApp, allowed: set[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed is not None and _hostname(Headers(scope=scope).get("host", "")) not in self.allowed:
            err = ApiError(400, "bad_host", "this server answers only to " + ", ".join(sorted(self.allowed)))
            await error_response(err)(scope, receive, _with_security_headers(send))
            return
        await self.app(scope, receive, _with_security_headers(send))


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for k, v in SECURITY_HEADERS.items():
                if k not in headers:
                    headers[k] = v
        await send(message)

    return wrapped


class ComputeQueue:
    """Admission to the worker processes: at most ``workers`` computations run (each holds one thread
    while its worker computes), at most ``max_queue`` more wait -- asynchronously, holding no thread --
    and any request beyond that is refused with 429 at once."""

    def __init__(self, pool: WorkerPool, limits: Limits) -> None:
        self.pool = pool
        self.limits = limits
        self.admitted = 0  # running + waiting; touched only on the event loop
        self._limiter: Any = None

    async def run(self, kind: str, payload: Any) -> tuple[int, bytes]:
        if self.admitted >= self.pool.size + self.limits.max_queue:
            raise ApiError(429, "busy", f"the server is busy ({self.pool.size} computations running and "
                           f"{self.limits.max_queue} waiting); try again in a moment")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.pool.size)
        self.admitted += 1
        try:
            return await anyio.to_thread.run_sync(self.pool.run, kind, payload, self.limits, limiter=self._limiter)
        finally:
            self.admitted -= 1


def create_app(limits: Limits | None = None, workers: int = 2,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> Starlette:
    """The explorer application: the page at ``/``, the JSON API under ``/api/``.

    ``allowed_hosts``: the names the browser may use for this server (the Host header); the default,
    this machine's own names, keeps other web sites from reaching it by DNS rebinding. None allows any.
    """
    limits = limits or Limits()
    pool = WorkerPool(workers)
    queue = ComputeQueue(pool, limits)
    allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
    page = (STATIC_DIR / "index.html").read_bytes()  # served from memory: no thread, no file system

    def json_route(kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                payload = await read_json(request, limits)
                status, body = await queue.run(kind, payload)
            except ApiError as e:
                return error_response(e)
            return JSONBytes(body, status_code=status)

        endpoint.__name__ = f"api_{kind}"
        return endpoint

    async def api_info(request: Request) -> Response:
        return json_response(info(limits))

    async def api_examples(request: Request) -> Response:
        return json_response(examples())

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            message = {404: f"no API route {request.url.path}",
                       405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                          str(exc.detail))
            return error_response(ApiError(exc.status_code, code, message))
        return Response(str(exc.detail), status_code=exc.status_code, media_type="text/plain")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(500, "internal", f"internal error: {type(exc).__name__}: {exc}"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(pool.start)
        try:
            yield
        finally:
            pool.stop()

    routes = [
        Route("/", index),
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/examples", api_examples, methods=["GET"]),
        Route("/api/parse", json_route("parse"), methods=["POST"]),
        Route("/api/trace", json_route("trace"), methods=["POST"]),
        Route("/api/step", json_route("step"), methods=["POST"]),
        Route("/api/check", json_route("check"), methods=["POST"]),
        Route("/api/value", json_route("value"), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, allowed=allowed)],
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.limits = limits
    app.state.pool = pool
    app.state.queue = queue
    return app
