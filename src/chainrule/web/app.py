"""The explorer's HTTP layer (Starlette): JSON API routes, the static page, and the request-size limit.

Every computing route reads a bounded JSON body, hands it to a worker process (see ``worker.py``)
and answers its JSON; every failure, whatever its cause, is a JSON ``{"error": ..., "code": ...}``
with a 4xx status (5xx only for a bug), so the page can show it and the server stays up.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from .api import ApiError, Limits, examples, info

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the chainrule explorer needs Starlette and Uvicorn: pip install 'chainrule[web]'"
    ) from _e

from .worker import WorkerPool

STATIC_DIR = resources.files("chainrule.web") / "static"

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def error_response(err: ApiError) -> JSONResponse:
    """The JSON answer for one :class:`ApiError`."""
    return JSONResponse(err.body(), status_code=err.status, headers=_SECURITY_HEADERS)


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


def _hostname(host_header: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def create_app(limits: Limits | None = None, workers: int = 2,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> Starlette:
    """The explorer application: the page at ``/``, the JSON API under ``/api/``.

    ``allowed_hosts``: the names the browser may use for this server (the Host header); the default,
    this machine's own names, keeps other web sites from reaching it by DNS rebinding. None allows any.
    """
    limits = limits or Limits()
    pool = WorkerPool(workers)
    allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def check_host(request: Request, call_next: Any) -> Response:
        if allowed is not None and _hostname(request.headers.get("host", "")).lower() not in allowed:
            return error_response(ApiError(400, "bad_host", "this server answers only to "
                                           + ", ".join(sorted(allowed))))
        return await call_next(request)

    def json_route(kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                payload = await read_json(request, limits)
                body = await run_in_threadpool(pool.run, kind, payload, limits)
            except ApiError as e:
                return error_response(e)
            return JSONResponse(body, headers=_SECURITY_HEADERS)

        endpoint.__name__ = f"api_{kind}"
        return endpoint

    async def api_info(request: Request) -> Response:
        return JSONResponse(info(limits), headers=_SECURITY_HEADERS)

    async def api_examples(request: Request) -> Response:
        return JSONResponse(examples(), headers=_SECURITY_HEADERS)

    async def index(request: Request) -> Response:
        return FileResponse(str(STATIC_DIR / "index.html"), headers=_SECURITY_HEADERS)

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
        await run_in_threadpool(pool.start)
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
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=check_host)],
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.limits = limits
    app.state.pool = pool
    return app
