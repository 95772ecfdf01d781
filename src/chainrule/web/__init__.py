"""The explorer: a local web page to type a function, see its graph and step through backprop.

``chainrule serve`` starts it on http://127.0.0.1:8000 (``--host``, ``--port``) and opens nothing by
itself. The page is hand-written HTML/CSS/JS in ``static/``; the JSON API is in ``api.py`` (what is
computed, and the limits), ``app.py`` (HTTP) and ``worker.py`` (the time limit). Needs the ``web``
extra: ``pip install 'chainrule[web]'``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

__all__ = ["add_parser", "serve", "create_app"]

#: Connections the explorer serves at once (uvicorn answers 503 past it).
MAX_CONNECTIONS = 64

_MISSING = "the chainrule explorer needs Starlette and Uvicorn: pip install 'chainrule[web]'"


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The Starlette application (see :func:`chainrule.web.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


def url_for(host: str, port: int) -> str:
    """The address a person types into a browser for a server bound to ``host:port``."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one), or OSError with a clear message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                      + ("; is another server using it? try --port with another number"
                         if e.errno in (98, 48) else "")) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(host: str = "127.0.0.1", port: int = 8000, *, quiet: bool = False) -> None:
    """Run the explorer until interrupted; prints its address and opens no browser."""
    try:
        import uvicorn

        from .app import create_app as _create_app
    except ImportError:
        raise ImportError(_MISSING) from None
    sock = bind_socket(host, port)
    port = sock.getsockname()[1]
    local = host in ("127.0.0.1", "localhost", "::1")
    # on this machine only its own names are answered (no DNS rebinding); elsewhere, any name
    app = _create_app(allowed_hosts=("127.0.0.1", "localhost", "::1") if local else None)
    if not local and not quiet:
        print(f"warning: listening on {host}, so other machines can reach this server", file=sys.stderr)
    print(url_for(host, port), flush=True)
    # at most MAX_CONNECTIONS connections at once (503 past it); each holds at most one answer, of at
    # most Limits.max_response_bytes, so what the server buffers for clients that never read is bounded
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            limit_concurrency=MAX_CONNECTIONS)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _run(args: argparse.Namespace) -> int:
    try:
        serve(args.host, args.port)
    except ImportError as e:
        print(f"chainrule serve: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"chainrule serve: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` subcommand on a ``chainrule`` argparse subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="start the explorer: a local web page to step through backprop",
        description="Start the explorer: type a function, see its staged equations and graph, step "
                    "through the forward and backward pass node by node, read the generated code, "
                    "take gradient-descent steps. Prints the address to open; opens nothing by itself.",
        epilog="examples:\n  chainrule serve                 # http://127.0.0.1:8000\n"
               "  chainrule serve --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    p.set_defaults(func=_run)
    return p
