"""Serving over HTTP: bind the socket first (a busy port is one clear error), run uvicorn on it,
and end long-lived streams before uvicorn waits for open responses on shutdown."""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from converter.catalog import Catalog
from converter.catalog.dynamic import DynamicCatalog
from converter.config import Settings

log = logging.getLogger("openapi_mcp")


def serve_http(settings: Settings, catalog: Catalog | DynamicCatalog,
               reload_settings: Callable[[], Settings] | None = None) -> None:
    """Bind first (so a busy port is one clear error), then run uvicorn on that socket
    (`reload_settings`: reads the settings again for a live reload, converter.catalog.reload)."""
    from converter.server.app import create_app

    app = create_app(settings, catalog=catalog, reload_settings=reload_settings)
    sock = bind_socket(settings.server.host, settings.server.port)
    host, port = sock.getsockname()[:2]
    what = (f"{len(catalog.served_tools)} meta-tools over {len(catalog.operations)} operations (dynamic mode)"
            if isinstance(catalog, DynamicCatalog) else f"{len(catalog.tool_names)} tools")
    log.info("serving %s at http://%s:%d%s", what, url_host(host), port, settings.server.path)
    config = uvicorn_config(app, settings)
    serving()
    _run_uvicorn(config, sock, app.state.catalog.stop_streams)


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


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """uvicorn's config with every `server:` connection limit applied (converter.server.connections)."""
    import uvicorn

    from converter.server.connections import ConnectionLimits, guarded_protocol

    server = settings.server
    limits = ConnectionLimits(
        max_connections=fit_open_files(server.max_connections, explicit="max_connections" in server.model_fields_set),
        max_connections_per_client=server.max_connections_per_client, header_timeout=server.header_timeout,
        body_timeout=server.body_timeout, send_timeout=server.send_timeout, max_header_bytes=server.max_header_bytes)
    telemetry = getattr(getattr(app, "state", None), "telemetry", None)
    protocol = guarded_protocol(limits, getattr(telemetry, "metrics", None))
    loop = fast_loop().get("loop", "auto")
    # ws="none": this server speaks no WebSocket, so an Upgrade request is plain HTTP to it.
    return uvicorn.Config(app, log_level="warning", lifespan="on", loop=loop, http=protocol, ws="none",
                          timeout_keep_alive=server.keep_alive_timeout)  # type: ignore[arg-type]


def fit_open_files(wanted: int, *, explicit: bool = False) -> int:
    """`wanted` connections, or half the open-file limit when that is lower (the rest: upstream
    connections, logs, the cache), so accepting clients never exhausts the process's descriptors."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft // 2:
        return wanted
    fitted = max(1, soft // 2)
    log.log(logging.WARNING if explicit else logging.INFO,
            "server.max_connections %d is more than half the open-file limit (%d): using %d", wanted, soft, fitted)
    return fitted


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
