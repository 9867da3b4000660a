"""Serving over HTTP: bind the socket first (a busy port is one clear error), run uvicorn on it,
and shut down without losing a request: long-lived streams end before uvicorn waits for open
responses, and the connections the kernel already completed or is completing are accepted before
the listening socket closes, which refuses the rest (converter.server.connections drains them)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from converter.catalog import Catalog
from converter.catalog.dynamic import DynamicCatalog
from converter.config import Settings
from converter.server.listener import accept_waiting, refuse_new_connections

log = logging.getLogger("openapi_mcp")
USER_ERROR = 2  # the command line's exit code for a problem in the config or the spec


def serve_http(settings: Settings, catalog: Catalog | DynamicCatalog,
               reload_settings: Callable[[], Settings] | None = None) -> None:
    """Bind first (so a busy port is one clear error), then run uvicorn on that socket
    (`reload_settings`: reads the settings again for a live reload, converter.catalog.reload)."""
    from converter.server.app import create_app

    workers = settings.server.workers
    if workers > 1 and not hasattr(os, "fork"):  # pragma: no cover - Windows
        from converter.errors import ConfigError

        raise ConfigError("server.workers: more than one needs os.fork (Linux, macOS); run replicas instead",
                          key="server.workers")
    # One process builds its app first, so a problem in it is one line before anything listens.
    app = create_app(settings, catalog=catalog, reload_settings=reload_settings) if workers == 1 else None
    sock = bind_socket(settings.server.host, settings.server.port)
    host, port = sock.getsockname()[:2]
    what = (f"{len(catalog.served_tools)} meta-tools over {len(catalog.operations)} operations (dynamic mode)"
            if isinstance(catalog, DynamicCatalog) else f"{len(catalog.tool_names)} tools")
    each = f" with {workers} worker processes" if workers > 1 else ""
    log.info("serving %s at http://%s:%d%s%s", what, url_host(host), port, settings.server.path, each)

    def run(app: Any = None) -> None:
        app = app or create_app(settings, catalog=catalog, reload_settings=reload_settings)
        config = uvicorn_config(app, settings)
        serving()
        _run_uvicorn(config, sock, app.state.catalog.stop_streams)

    if app is not None:
        run(app)
    else:
        serve_workers(workers, run, listening=sock)


def with_worker_session_key(load: Callable[[], Settings]) -> Callable[[], Settings]:
    """`load`, and with `server.workers` > 1 but no `server.session_keys`, one key made now for every
    load (the start and each reload): the workers of one server share its sessions through sealed
    IDs (converter.server.shared_sessions), and a restart ends them, as with one process."""
    key = secrets.token_urlsafe(32)

    def loaded() -> Settings:
        settings = load()
        server = settings.server
        if server.workers > 1 and server.transport == "http" and not server.session_keys:
            from pydantic import SecretStr

            server = server.model_copy(update={"session_keys": [SecretStr(key)]})
            settings = settings.model_copy(update={"server": server})
        return settings

    return loaded


def serve_workers(count: int, run: Callable[[], None], *, restart_window: float = 10.0,
                  listening: socket.socket | None = None) -> None:
    """Fork `count` processes that each `run()` (uvicorn on the socket they inherit) and watch them.

    SIGTERM / SIGINT go to every worker (each drains as one process does) and the parent returns
    once all have ended; the parent closes its copy of the `listening` socket then, so that the
    socket closes when the workers close theirs (new connects are refused while the workers drain,
    not left waiting until the last one exits). SIGHUP goes to every worker (each reloads). A worker that ends while the
    server is not stopping is forked again, unless workers keep ending (`count` within
    `restart_window` seconds): then the rest are stopped and the server ends with an error.
    """
    import signal
    import time

    from converter.errors import ConverterError

    children: dict[int, int] = {}  # pid -> worker number
    code = 0
    stopping = False
    failures: list[float] = []

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)  # uvicorn and the catalog install their own
                run()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except ConverterError as exc:  # a problem the user can fix: one line, and no restart
                print(f"openapi-mcp: error: {exc}", file=sys.stderr)
                code = USER_ERROR
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = number

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
            if listening is not None:
                listening.close()  # no worker is forked again from here on
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # ended, not yet reaped
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for number in range(1, count + 1):
        start(number)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - nothing left to wait for
            break
        except InterruptedError:  # pragma: no cover - a signal arrived (PEP 475 retries on its own)
            continue
        if pid not in children or stopping:
            children.pop(pid, None)
            continue
        number = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == USER_ERROR:  # every worker would fail alike: stop, with the worker's message
            failed = True
            forward(signal.SIGTERM, None)
            continue
        now = time.monotonic()
        failures[:] = [at for at in failures if now - at < restart_window] + [now]
        if len(failures) >= count:
            log.error("workers keep ending (the last: worker %d, exit %d); stopping the server", number, code)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        log.warning("worker %d ended (exit %d); starting it again", number, code)
        start(number)
    if failed:
        raise SystemExit(USER_ERROR if code == USER_ERROR else 1)


def _run_uvicorn(config: Any, sock: socket.socket, stop_streams: Sequence[Any]) -> None:
    """uvicorn waits for every open response before it shuts down; a `subscriptions/listen` stream
    stays open until told to end, so on SIGTERM it is told first (then in-flight calls finish)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            for stop in stop_streams:
                stop()
            for listening in sockets or ():
                refuse_new_connections(listening)
            await accept_waiting(self.servers)
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
    # server.trusted_proxies: whose X-Forwarded-For / -Proto uvicorn believes (None: its default)
    return uvicorn.Config(app, log_level="warning", lifespan="on", loop=loop, http=protocol, ws="none",
                          timeout_keep_alive=server.keep_alive_timeout,  # type: ignore[arg-type]
                          forwarded_allow_ips=server.trusted_proxies)


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


# Container allocations (net of frees) between young collections. Python's default, 700, is
# reached every ~6 calls under load by the objects of the calls in flight, which then survive into
# the older generations: the collector took 5% of the server's CPU at 32 concurrent calls. At 10,000
# it runs a few times a minute instead (`bench/` figures in the README); what it still collects
# (reference cycles) waits for at most that many containers.
GC_THRESHOLD: Final = (10_000, 10, 10)


def serving() -> None:
    """Startup is over: move what it built out of the collector's way, make young collections rarer
    (GC_THRESHOLD) and turn collection back on (converter.entry paused it while the catalog was built)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    gc.enable()
