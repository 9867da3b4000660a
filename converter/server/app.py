"""`create_app(settings)`: the MCP server (official SDK, low-level `Server`) over streamable HTTP.

The same `Server` also runs over stdio (`run_stdio`). Tool calls go to the `Catalog`; no
exception from a call ever reaches the SDK (it would become a JSON-RPC error with code 0).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from converter.asgi import BrowserCORS, PathShortcut
from converter.auth.layer import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    TOKEN_KEY,
    AuthLayer,
    TokenVerifier,
    principal_of,
)
from converter.auth.metadata import metadata_routes
from converter.catalog import Catalog, DynamicCatalog, build_served_catalog
from converter.catalog.live import LiveCatalog
from converter.catalog.reload import Reloader
from converter.catalog.served import NO_CONTEXT, CallContext, ServedCatalog
from converter.catalog.watch import watch
from converter.config import AuthSettings, RedisSettings, ServerSettings, Settings
from converter.config.checks import resource_warnings
from converter.credentials.stats import combined_stats
from converter.invoke.result import error_result
from converter.passthrough import (
    LogLevels,
    SharedLogLevels,
    install_downstream,
    notification_relay,
    progress_relay,
    register_handlers,
    request_relay,
)
from converter.server.call_results import CallResults
from converter.server.dashboard import dashboard_routes, data_path_of
from converter.server.header_schemas import HeaderSchemas
from converter.server.health import healthz, metrics_endpoint, readyz
from converter.server.limits import RequestLimits
from converter.server.list_cache import EMPTY_LIST, ENVELOPE_ONLY, ListCache
from converter.server.sessions import with_session_limits
from converter.server.shared_sessions import SharedSessionManager, build_session_manager
from converter.telemetry import McpTelemetry, TelemetryLayer
from converter.telemetry.setup import Telemetry, build_telemetry
from converter.telemetry.sinks import Metrics
from converter.version import __version__

log = logging.getLogger("openapi_mcp")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def call_context(ctx: ServerRequestContext[Any]) -> CallContext:
    """The client's address and (auth on) its bearer token, from the HTTP request a handler serves."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    if not isinstance(scope, dict):
        return NO_CONTEXT  # stdio: no address, no token
    client = scope.get("client")
    token = scope.get(TOKEN_KEY)
    return CallContext(address=client[0] if client else None, bearer_token=token if isinstance(token, str) else None)


def build_server(catalog: ServedCatalog, *, name: str = "openapi-mcp", telemetry: Telemetry | None = None,
                 page_size: int | None = None, replicated: bool = False, traces: bool = True,
                 direct: bool = True, log_levels: LogLevels | None = None) -> Server[Any]:
    """The low-level MCP server whose handlers read the catalog (every list change the catalog
    announces reaches the clients: converter.passthrough.install_downstream). `replicated`:
    sessions are sealed (replicas, workers), so what lives in one process only is not offered.
    `traces`: keep the SDK's OpenTelemetry span per request (`telemetry.traces`); without a tracer
    to take them, those spans cost 5% of a call's CPU for nothing. `direct`: `tools/call` results
    are put in wire form once (converter.server.call_results; `server.direct_calls`). `log_levels`:
    where `logging/setLevel` keeps each session's level (converter.passthrough.log_levels)."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        if ENVELOPE_ONLY.get():
            return EMPTY_LIST
        visible = await catalog.visible_tools(principal_of(ctx))
        return catalog.list_result if visible is None else types.ListToolsResult(tools=visible)

    proxied = catalog.passthrough is not None
    log_levels = log_levels or LogLevels()

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            return await catalog.call_tool(params.name, params.arguments, principal_of(ctx),
                                           progress=progress_relay(ctx) if proxied else None,
                                           ask=request_relay(ctx) if proxied else None,
                                           notify=notification_relay(ctx, log_levels) if proxied else None,
                                           context=call_context(ctx))
        except MCPError:
            raise
        except Exception:  # a bug of ours must not take the session down or leak a traceback
            log.exception("tool %r failed unexpectedly", params.name)
            return error_result(f"Internal error while calling tool {params.name!r}; the server log has details")

    server: Server[Any] = Server(name, version=__version__, on_list_tools=list_tools, on_call_tool=call_tool)
    HeaderSchemas.install(server, catalog)  # 2026-07-28 calls' Mcp-Param-* checks, without a tools/list each
    if not traces:
        server.middleware = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    if telemetry is not None:
        server.middleware.append(McpTelemetry(telemetry.fanout, log_payloads=telemetry.log_payloads))
    server.middleware.append(ListCache(catalog, page_size=page_size))
    downstream = install_downstream(server, catalog.listeners, catalog.stop_streams)
    if catalog.passthrough is not None:
        register_handlers(server, catalog.passthrough, catalog, downstream, principal_of,
                          current=lambda: catalog.passthrough, replicated=replicated, log_levels=log_levels)
    _empty_lists(server)
    if direct:
        server.middleware.append(CallResults(call_tool, server))  # innermost: it answers without call_next
    return server


def _empty_lists(server: Server[Any]) -> None:
    """Resources and prompts nobody serves are empty lists, not `-32601`: clients (the Python SDK,
    FastMCP, Inspector 0.15) list them all after connecting and fail on "Method not found"."""

    async def no_resources(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])

    async def no_templates(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[])

    async def no_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {str(params.uri)!r}")

    async def no_prompts(ctx: Any, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[])

    async def no_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name!r}")

    empty: list[tuple[str, Any, Any]] = [
        ("resources/list", types.PaginatedRequestParams, no_resources),
        ("resources/templates/list", types.PaginatedRequestParams, no_templates),
        ("resources/read", types.ReadResourceRequestParams, no_resource),
        ("prompts/list", types.PaginatedRequestParams, no_prompts),
        ("prompts/get", types.GetPromptRequestParams, no_prompt),
    ]
    for method, params_type, handler in empty:
        if server.get_request_handler(method) is None:
            server.add_request_handler(method, params_type, handler)


def create_app(settings: Settings, *, catalog: Catalog | DynamicCatalog | LiveCatalog | None = None,
               upstream_transport: Any = None, auth_transport: Any = None,
               reload_settings: Callable[[], Settings] | None = None) -> Starlette:
    """Build the ASGI app: MCP at `settings.server.path`, plus `/healthz`.

    Args:
        settings: validated settings.
        catalog: an already built catalog (the CLI builds it first to report problems).
        upstream_transport: an httpx transport for the upstream (tests: `httpx.ASGITransport`).
        auth_transport: an httpx transport for the authorization server (tests).
        reload_settings: reads the settings again, for live reloads (SIGHUP, `reload.watch`);
            None: the catalog is never replaced (`app.state.reloader` is None).
    """
    if not isinstance(catalog, LiveCatalog):
        catalog = LiveCatalog(catalog or build_served_catalog(settings, transport=upstream_transport))
    live = catalog
    verifier = build_verifier(settings.auth, transport=auth_transport, redis=settings.redis) if settings.auth else None
    cache = verifier.cache if verifier is not None else None
    telemetry = build_telemetry(settings.telemetry, live.tool_names,
                                cache_stats=(lambda: (cache.hits, cache.misses)) if cache is not None else None,
                                credential_stats=lambda: combined_stats(live.upstream_credentials)
                                if live.upstream_credentials else None)
    metrics = telemetry.metrics
    reloader = None
    if reload_settings is not None:
        reloader = Reloader(live, settings, reload_settings, transport=upstream_transport,
                            on_result=(lambda result: metrics.reloads.labels(result).inc()) if metrics else None)
    shared = settings.redis is not None and bool(settings.server.session_keys) and not settings.server.stateless
    log_levels = None
    if shared and settings.redis is not None and live.passthrough is not None:
        redis = settings.redis  # a session's logging/setLevel, for its calls that land on another replica
        log_levels = SharedLogLevels.from_url(redis.url.get_secret_value(), key_prefix=redis.key_prefix,
                                              timeout=redis.timeout, lifetime=settings.server.session_lifetime)
    server = build_server(live, telemetry=telemetry, page_size=settings.server.page_size,
                          replicated=bool(settings.server.session_keys), traces=settings.telemetry.traces,
                          direct=settings.server.direct_calls, log_levels=log_levels)
    host = settings.server.host
    security = transport_security(settings.server)
    json_response = settings.server.json_response
    if live.passthrough is not None and "json_response" not in settings.server.model_fields_set:
        json_response = False  # SSE answers, so an upstream's progress reaches the client during a call
    ended = cancels = answers = None
    if shared and settings.redis is not None:
        from converter.server.answer_relay import AnswerRelay
        from converter.server.cancel_relay import CancelRelay
        from converter.server.ended_sessions import RedisEndedSessions

        redis_url, redis = settings.redis.url.get_secret_value(), settings.redis
        ended = RedisEndedSessions.from_url(redis_url, key_prefix=redis.key_prefix, timeout=redis.timeout)
        # notifications/cancelled that lands on another replica than the call it names
        cancels = CancelRelay.from_url(redis_url, key_prefix=redis.key_prefix, timeout=redis.timeout)
        # the client's answer to a request a call here sent it (sampling, elicitation, roots), landed elsewhere
        answers = AnswerRelay.from_url(redis_url, key_prefix=redis.key_prefix, timeout=redis.timeout)
    relays = [relay for relay in (cancels, answers) if relay is not None]
    manager = build_session_manager(server, settings.server, json_response=json_response, security=security,
                                    ended=ended, relays=relays)
    if isinstance(manager, SharedSessionManager) and telemetry.metrics is not None:
        manager.on_rebuilt = telemetry.metrics.sessions_rebuilt.inc
    announcements = None
    if settings.redis is not None:  # list changes reach the clients whose streams another replica holds
        from converter.server.announcements import Announcements

        announcements = Announcements.from_url(live, settings.redis.url.get_secret_value(),
                                               key_prefix=settings.redis.key_prefix, timeout=settings.redis.timeout)
        live.listeners.append(announcements.publish)
    endpoint = StreamableHTTPASGIApp(manager)
    mcp_app = Starlette(routes=[Route(settings.server.path, endpoint=endpoint)])  # the path's near misses
    mcp_asgi = with_session_limits(PathShortcut(mcp_app, path=settings.server.path, target=endpoint), manager,
                                   settings.server, telemetry.metrics)

    if settings.auth is None and host not in _LOOPBACK:
        log.warning("no auth: configured and listening on %s: anyone who can reach it can call every tool", host)
    if settings.auth is not None and settings.auth.insecure_relaxed_audience_validation:
        log.warning("auth.insecure_relaxed_audience_validation is on: tokens issued for other resources are accepted")
    if settings.auth is not None and not live.policy.all_scopes() and not settings.auth.scopes_supported:
        log.warning("auth: no scopes at all (auth.required_scopes, auth.tool_scopes, OpenAPI security): every valid "
                    "token may call every tool, and clients are told no scope to ask for, so they ask the "
                    "authorization server for its defaults; set auth.required_scopes (e.g. [mcp:tools])")
    for warning in resource_warnings(settings):
        log.warning("%s", warning)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with live, manager.run(), anyio.create_task_group() as tasks:
                if reloader is not None:
                    tasks.start_soon(watch, reloader)
                if announcements is not None:
                    tasks.start_soon(announcements.run)
                for relay in relays:
                    tasks.start_soon(relay.run)
                yield
                tasks.cancel_scope.cancel()
        finally:
            if verifier is not None:
                await verifier.aclose()
            if ended is not None:
                await ended.aclose()
            if announcements is not None:
                await announcements.aclose()
            for relay in relays:
                await relay.aclose()
            if log_levels is not None:
                await log_levels.aclose()
            telemetry.close()

    shared_verdicts = getattr(verifier, "shared", None)

    def shared_states() -> dict[str, str]:
        states = {"redis-verdicts": shared_verdicts.state} if shared_verdicts is not None else {}
        if ended is not None:
            states["redis-sessions"] = ended.state
        if announcements is not None:
            states["redis-announcements"] = announcements.state
        for relay in relays:
            states[relay.readiness] = relay.state
        if log_levels is not None:
            states[log_levels.readiness] = log_levels.state
        return states

    state = reloader.state.as_json if reloader is not None else None
    routes = [Route("/healthz", healthz(live)),
              Route("/readyz", readyz(live, shared=shared_states, reload_state=state))]
    if settings.auth is not None:
        auth = settings.auth

        def current_auth() -> AuthSettings:  # the policy's keys of auth: follow a reload
            return reloader.settings.auth or auth if reloader is not None else auth

        routes += metadata_routes(current_auth, scopes=lambda: live.policy.all_scopes(),  # noqa: PLW0108 - the policy of now
                                  mcp_path=settings.server.path)
    if telemetry.metrics is not None:
        routes.append(Route(settings.telemetry.metrics_path, metrics_endpoint(telemetry.metrics)))
    guarded: list[str] = []
    if settings.telemetry.dashboard:
        routes += dashboard_routes(settings.telemetry.dashboard_path, telemetry.recent, policy=lambda: live.policy,
                                   admin_scopes=settings.telemetry.dashboard_scopes,
                                   loopback=host in _LOOPBACK or bool(settings.server.allowed_hosts),
                                   allowed_hosts=settings.server.allowed_hosts)
        guarded.append(data_path_of(settings.telemetry.dashboard_path))
    app = Starlette(routes=[*routes, Mount("/", app=mcp_asgi)], lifespan=lifespan)
    app.state.catalog = live
    app.state.session_manager = manager
    app.state.cancel_relay = cancels
    app.state.answer_relay = answers
    app.state.reloader = reloader
    app.state.verifier = verifier
    app.state.telemetry = telemetry
    # Innermost: the MCP path past the router and the mount (the only route for it).
    app.add_middleware(PathShortcut, path=settings.server.path, target=mcp_asgi)
    # Inside the auth layer: it counts per verified caller. Always there: a reload may add `limits:`.
    app.add_middleware(RequestLimits, limiter=lambda: live.limiter, mcp_path=settings.server.path)
    if telemetry.metrics is not None:
        _watch_pdp(live, telemetry.metrics)
        for relay in relays:
            telemetry.metrics.watch_counts(relay.metric, relay.metric_help, "result", relay.counts)
    if settings.auth is not None and verifier is not None:
        app.add_middleware(AuthLayer, settings=settings.auth, verifier=verifier, policy=lambda: live.policy,
                           mcp_path=settings.server.path, guarded_paths=guarded)
        # Browser clients call with a bearer token (no cookies), from any origin.
        app.add_middleware(BrowserCORS, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=list(CORS_ALLOW_HEADERS), expose_headers=list(CORS_EXPOSE_HEADERS),
                           max_age=600)
    # Outermost, so a request refused by the auth layer is recorded too.
    app.add_middleware(TelemetryLayer, sink=telemetry.fanout, mcp_path=settings.server.path,
                       metrics=telemetry.metrics)
    return app


def _watch_pdp(live: LiveCatalog, metrics: Metrics) -> None:
    """The decision service's metrics, for the catalog served now (a reload may replace its client)."""
    observe = metrics.watch_pdp(lambda: live.policy.pdp.stats.decisions if live.policy.pdp is not None else {})

    def hook(catalog: Any) -> None:
        pdp = catalog.policy.pdp
        if pdp is not None:
            pdp.on_round_trip = lambda trip: observe(trip.kind, trip.seconds)

    hook(live.current)
    live.on_swap.append(hook)


def transport_security(server: ServerSettings) -> TransportSecuritySettings | None:
    """The DNS-rebinding check: on a loopback listener (as the SDK does), and wherever
    `server.allowed_hosts` is set (behind a proxy that passes its own Host), with those added."""
    if server.host not in _LOOPBACK and not server.allowed_hosts:
        return None
    hosts: list[str] = []
    origins: list[str] = []
    if server.host in _LOOPBACK:
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
        origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=[*hosts, *server.allowed_hosts],
                                     allowed_origins=[*origins, *server.allowed_origins])


def build_verifier(auth: AuthSettings, *, transport: Any = None, redis: RedisSettings | None = None) -> TokenVerifier:
    """Introspection when an endpoint is configured (its verdicts shared in Redis when `redis:` is set),
    else local JWT validation with the JWKS (nothing to share: no call to the AS per token)."""
    if auth.introspection_endpoint is not None:
        from converter.auth.introspection import IntrospectionVerifier

        shared = None
        if redis is not None:
            from converter.auth.shared_cache import SharedVerdicts

            shared = SharedVerdicts.from_url(redis.url.get_secret_value(), key_prefix=redis.key_prefix,
                                             timeout=redis.timeout)
        return IntrospectionVerifier(auth, transport=transport, shared=shared)
    from converter.auth.jwt import JWTVerifier  # joserfc + cryptography: imported only when configured

    return JWTVerifier(auth, transport=transport)


async def run_stdio(settings: Settings, *, catalog: Catalog | DynamicCatalog | None = None,
                    reload_settings: Callable[[], Settings] | None = None) -> None:
    """Serve MCP over stdin/stdout (for clients that launch the server themselves); with
    `reload_settings`, reloaded live as over HTTP (SIGHUP, `reload.watch`)."""
    from mcp.server.stdio import stdio_server

    live = LiveCatalog(catalog or build_served_catalog(settings))
    telemetry = build_telemetry(settings.telemetry, live.tool_names, transport="stdio")
    server = build_server(live, telemetry=telemetry, page_size=settings.server.page_size,
                          traces=settings.telemetry.traces, direct=settings.server.direct_calls)
    reloader = Reloader(live, settings, reload_settings) if reload_settings is not None else None
    try:
        async with live, stdio_server() as (read_stream, write_stream), anyio.create_task_group() as tasks:
            if reloader is not None:
                tasks.start_soon(watch, reloader)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            tasks.cancel_scope.cancel()
    finally:
        telemetry.close()
