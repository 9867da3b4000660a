"""`create_app(settings)`: the MCP server (official SDK, low-level `Server`) over streamable HTTP.

The same `Server` also runs over stdio (`run_stdio`). Tool calls go to the `Catalog`; no
exception from a call ever reaches the SDK (it would become a JSON-RPC error with code 0).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from converter.auth.layer import AuthLayer, TokenVerifier, principal_of
from converter.catalog import Catalog, build_catalog
from converter.config import AuthSettings, Settings
from converter.invoke.result import error_result
from converter.passthrough import progress_relay, register_handlers, request_relay
from converter.server.dashboard import dashboard_routes
from converter.server.health import healthz, metrics_endpoint, readyz
from converter.server.list_cache import EMPTY_LIST, ENVELOPE_ONLY, ListCache
from converter.server.sessions import with_session_limits
from converter.telemetry import McpTelemetry, TelemetryLayer
from converter.telemetry.setup import Telemetry, build_telemetry
from converter.version import __version__

log = logging.getLogger("openapi_mcp")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_server(catalog: Catalog, *, name: str = "openapi-mcp", telemetry: Telemetry | None = None,
                 page_size: int | None = None) -> Server[Any]:
    """The low-level MCP server whose handlers read the catalog."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        if ENVELOPE_ONLY.get():
            return EMPTY_LIST
        visible = catalog.visible_tools(principal_of(ctx))
        return catalog.list_result if visible is None else types.ListToolsResult(tools=visible)

    proxied = getattr(catalog, "has_proxied_tools", False)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            return await catalog.call_tool(params.name, params.arguments, principal_of(ctx),
                                           progress=progress_relay(ctx) if proxied else None,
                                           ask=request_relay(ctx) if proxied else None)
        except MCPError:
            raise
        except Exception:  # a bug of ours must not take the session down or leak a traceback
            log.exception("tool %r failed unexpectedly", params.name)
            return error_result(f"Internal error while calling tool {params.name!r}; the server log has details")

    server: Server[Any] = Server(name, version=__version__, on_list_tools=list_tools, on_call_tool=call_tool)
    if telemetry is not None:
        server.middleware.append(McpTelemetry(telemetry.fanout, log_payloads=telemetry.log_payloads))
    server.middleware.append(ListCache(catalog, page_size=page_size))
    register_handlers(server, catalog, principal_of)
    return server


def create_app(settings: Settings, *, catalog: Catalog | None = None, upstream_transport: Any = None,
               auth_transport: Any = None) -> Starlette:
    """Build the ASGI app: MCP at `settings.server.path`, plus `/healthz`.

    Args:
        settings: validated settings.
        catalog: an already built catalog (the CLI builds it first to report problems).
        upstream_transport: an httpx transport for the upstream (tests: `httpx.ASGITransport`).
        auth_transport: an httpx transport for the authorization server (tests).
    """
    catalog = catalog or build_catalog(settings, transport=upstream_transport)
    verifier = build_verifier(settings.auth, transport=auth_transport) if settings.auth else None
    cache = getattr(verifier, "cache", None)
    telemetry = build_telemetry(settings.telemetry, _tool_names(catalog),
                                cache_stats=(lambda: (cache.hits, cache.misses)) if cache is not None else None)
    server = build_server(catalog, telemetry=telemetry, page_size=settings.server.page_size)
    host = settings.server.host
    security = None
    if host in _LOOPBACK:
        # DNS-rebinding protection for a loopback listener (the SDK does the same by default).
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    json_response = settings.server.json_response
    if getattr(catalog, "mcp_sources", None) and "json_response" not in settings.server.model_fields_set:
        json_response = False  # SSE answers, so an upstream's progress reaches the client during a call
    mcp_app = server.streamable_http_app(
        streamable_http_path=settings.server.path,
        json_response=json_response,
        stateless_http=settings.server.stateless,
        transport_security=security,
        host=host,
        max_sessions=settings.server.max_sessions,
        session_idle_timeout=settings.server.session_idle_timeout,
    )
    mcp_asgi = with_session_limits(mcp_app, server.session_manager, settings.server, telemetry.metrics)

    if settings.auth is None and host not in _LOOPBACK:
        log.warning("no auth: configured and listening on %s: anyone who can reach it can call every tool", host)
    if settings.auth is not None and settings.auth.insecure_relaxed_audience_validation:
        log.warning("auth.insecure_relaxed_audience_validation is on: tokens issued for other resources are accepted")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with catalog, server.session_manager.run():
                yield
        finally:
            if verifier is not None:
                await verifier.aclose()
            telemetry.close()

    routes = [Route("/healthz", healthz(catalog)), Route("/readyz", readyz(catalog))]
    if telemetry.metrics is not None:
        routes.append(Route(settings.telemetry.metrics_path, metrics_endpoint(telemetry.metrics)))
    if settings.telemetry.dashboard:
        routes += dashboard_routes(settings.telemetry.dashboard_path, telemetry.recent, verifier=verifier,
                                   policy=catalog.policy, auth=settings.auth, loopback=host in _LOOPBACK)
    app = Starlette(routes=[*routes, Mount("/", app=mcp_asgi)], lifespan=lifespan)
    app.state.catalog = catalog
    app.state.verifier = verifier
    app.state.telemetry = telemetry
    if settings.auth is not None and verifier is not None:
        app.add_middleware(AuthLayer, settings=settings.auth, verifier=verifier, policy=catalog.policy,
                           mcp_path=settings.server.path)
    # Outermost, so a request refused by the auth layer is recorded too.
    app.add_middleware(TelemetryLayer, sink=telemetry.fanout, mcp_path=settings.server.path,
                       metrics=telemetry.metrics)
    return app


def _tool_names(catalog: Any) -> Any:
    """Every tool name, live when the catalog has one (an MCP source's list changes while serving)."""
    names = getattr(catalog, "tool_names", None)
    return names if names is not None else [p.name for p in catalog.plans]


def build_verifier(auth: AuthSettings, *, transport: Any = None) -> TokenVerifier:
    """Introspection when an endpoint is configured, else local JWT validation with the JWKS."""
    if auth.introspection_endpoint is not None:
        from converter.auth.introspection import IntrospectionVerifier

        return IntrospectionVerifier(auth, transport=transport)
    from converter.auth.jwt import JWTVerifier  # joserfc + cryptography: imported only when configured

    return JWTVerifier(auth, transport=transport)


async def run_stdio(settings: Settings, *, catalog: Catalog | None = None) -> None:
    """Serve MCP over stdin/stdout (for clients that launch the server themselves)."""
    from mcp.server.stdio import stdio_server

    catalog = catalog or build_catalog(settings)
    telemetry = build_telemetry(settings.telemetry, _tool_names(catalog), transport="stdio")
    server = build_server(catalog, telemetry=telemetry, page_size=settings.server.page_size)
    try:
        async with catalog, stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        telemetry.close()
