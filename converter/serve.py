"""Serving over HTTP: bind the socket first (a busy port is one clear error), run uvicorn on it,
and end long-lived streams before uvicorn waits for open responses on shutdown."""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Sequence
from typing import Any

from converter.catalog import Catalog
from converter.catalog.dynamic import DynamicCatalog
from converter.config import Settings

log = logging.getLogger("openapi_mcp")


def serve_http(settings: Settings, catalog: Catalog | DynamicCatalog) -> None:
    """Bind first (so a busy port is one clear error), then run uvicorn on that socket."""
    import uvicorn

    from converter.server.app import create_app

    app = create_app(settings, catalog=catalog)
    sock = bind_socket(settings.server.host, settings.server.port)
    host, port = sock.getsockname()[:2]
    what = (f"{len(catalog.served_tools)} meta-tools over {len(catalog.operations)} operations (dynamic mode)"
            if isinstance(catalog, DynamicCatalog) else f"{len(catalog.tool_names)} tools")
    log.info("serving %s at http://%s:%d%s", what, url_host(host), port, settings.server.path)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **fast_loop())
    serving()
    _run_uvicorn(config, sock, catalog.stop_streams)


def _run_uvicorn(config: Any, sock: socket.socket, stop_streams: Sequence[Any]) -> None:
    """uvicorn waits for every open response before it shuts down; a `subscriptions/listen` stream
    stays open until told to end, so on SIGTERM it is told first (then in-flight calls finish)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            for stop in stop_streams:
                stop()
            await super().shutdown(sockets)

    Server(config).run(sockets=[sock])


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening socket, turning 'address in use' into one clear error."""
    from converter.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def fast_loop() -> dict[str, Any]:
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - optional speedups
        return {}
    return {"loop": "uvloop", "http": "httptools"}


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serving() -> None:
    """Startup is over: move what it built out of the collector's way and turn collection back on
    (converter.entry paused it while the catalog was built)."""
    gc.freeze()
    gc.enable()
