"""The `Catalog`: every source's tools by name, the access policy over them, and the routing of calls.

Sources (`converter.catalog.served.Source`) are merged in config order under their prefixes; a
name served twice is an error at startup. An MCP source's list is only known once connected, so
collisions are checked again after the first connection (`preflight`) and, when a list changes
while serving, the first source keeps the name (logged once). Through `Passthrough` the catalog
also serves the MCP sources' resources and prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, KeysView, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.auth.principal import ANONYMOUS, Principal, claim_headers
from converter.catalog.openapi import OpenAPISource, openapi_sources
from converter.catalog.proxied import ProxiedSource
from converter.catalog.reuse import Parts
from converter.catalog.served import NO_CONTEXT, CallContext, CatalogListener, Source
from converter.config import AuthSettings, McpUpstreamSettings, Settings
from converter.credentials.upstream import UpstreamCredentials
from converter.errors import ConfigError, ConverterError
from converter.invoke.result import error_result
from converter.models import Problem
from converter.passthrough.source import MCPUpstreamSource, NotificationRelay
from converter.passthrough.transport import ProgressRelay, RequestRelay
from converter.passthrough.view import Passthrough
from converter.policy import Policy, build_policy
from converter.policy.acl import Acl, compile_acl
from converter.policy.limits import RateLimiter, identity_of

if TYPE_CHECKING:
    from converter.policy.pdp import Pdp
from converter.telemetry.record import current_record
from converter.tools import ToolPlan

log = logging.getLogger("openapi_mcp")


class Catalog:
    """All tools of all sources by name (a `converter.catalog.served.ServedCatalog`)."""

    generation = 0  # never replaced itself (converter.catalog.live.LiveCatalog is)

    def __init__(self, sources: Sequence[Source], *, auth: AuthSettings | None = None,
                 acl: Acl | None = None, pdp: Pdp | None = None, limiter: RateLimiter | None = None) -> None:
        self.all_sources = list(sources)
        self.sources = [s for s in sources if isinstance(s, OpenAPISource)]
        self.mcp_sources = [s.upstream for s in sources if isinstance(s, ProxiedSource)]
        self.auth = auth
        self.claim_headers = tuple((m.claim, m.header) for m in auth.claim_to_header) if auth else ()
        self._plans: dict[str, tuple[OpenAPISource, ToolPlan]] = {}
        self.problems: list[Problem] = []
        for source in self.sources:
            self.problems.extend(source.problems)
            for name, plan in source.plans.items():
                if name in self._plans:
                    other = self._plans[name][0]
                    hint = ", or give a source a `prefix:`" if "sources[" in other.label + source.label else ""
                    raise ConfigError(f"tool name {name!r} is defined twice ({self._plans[name][1].operation.pointer} "
                                      f"and {plan.operation.pointer}); rename one with x-mcp-name or `name:`{hint}",
                                      key="sources" if hint else None)
                self._plans[name] = (source, plan)
        self.policy = _policy([op for source in self.sources for op in source.operations()], auth, acl, pdp,
                              proxied_prefixes=[s.prefix for s in self.mcp_sources])
        self.limiter = limiter
        self._passthrough = Passthrough(self.mcp_sources, self.policy) if self.mcp_sources else None
        self.listeners: list[CatalogListener] = []
        # Called when the server starts shutting down, before it waits for open responses:
        # long-lived streams (subscriptions/listen) end gracefully so that the wait can end.
        self.stop_streams: list[Callable[[], None]] = []
        self.revision = 0
        self.parts = Parts()  # what build_catalog made or kept: a reload's build starts from it
        self._routes: dict[str, Source] = {}
        self._tools: dict[str, types.Tool] = {}
        self._list_result = types.ListToolsResult(tools=[])
        self._merge(strict=True)
        for upstream in self.mcp_sources:
            upstream.listeners.append(self._source_changed)

    def _merge(self, *, strict: bool) -> None:
        """Rebuild the merged tool list (sources in config order); a repeated name is an error
        at startup (`strict`) and, when a list changes later, is served by the first source only."""
        tools: dict[str, types.Tool] = {}
        routes: dict[str, Source] = {}
        clashes: list[str] = []
        for source in self.all_sources:
            for name, tool in source.tools.items():
                owner = routes.get(name)
                if owner is source:
                    continue
                if owner is not None:
                    message = (f"tool name {name!r} is served by two sources: {owner.label} and {source.label}; "
                               "give one of them a `prefix:` (or rename the tool)")
                    if strict:
                        raise ConfigError(message, key="sources")
                    clashes.append(message)
                    continue
                tools[name], routes[name] = tool, source
        if clashes:
            more = f" (and {len(clashes) - 1} more such names)" if len(clashes) > 1 else ""
            log.error("%s%s; only the first source's tool is served", clashes[0], more)
        self._tools.clear()  # updated in place: `tool_names` is a live view of it
        self._tools.update(tools)
        self._routes = routes
        self._list_result = types.ListToolsResult(tools=list(tools.values()))
        if self._passthrough is not None:
            self._passthrough.merge(strict=strict)

    def check_collisions(self) -> None:
        """Raises: ConfigError naming both sources of a tool or prompt name served twice."""
        self._merge(strict=True)

    async def _source_changed(self, source: MCPUpstreamSource, kinds: frozenset[str]) -> None:
        self._merge(strict=False)
        self.revision += 1
        for listener in list(self.listeners):
            await listener(kinds)

    # -- what is served (ServedCatalog) ------------------------------------------------------

    @property
    def served_tools(self) -> list[ToolPlan]:
        """The OpenAPI sources' compiled tools (proxied tools are listed from `list_result`)."""
        return self.plans

    @property
    def list_result(self) -> types.ListToolsResult:
        """Every tool of every source (no filtering)."""
        return self._list_result

    @property
    def list_can_change(self) -> bool:
        """Whether the tool list can change while serving (MCP sources)."""
        return bool(self.mcp_sources)

    @property
    def passthrough(self) -> Passthrough | None:
        return self._passthrough

    @property
    def tool_names(self) -> KeysView[str]:
        """A live view of every tool name (metrics label only these, never what a client sends)."""
        return self._tools.keys()

    async def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        """The tools `principal` may see, or None when that is every tool."""
        if self.policy.is_open:
            return None
        tools = self._tools
        names = await self.policy.visible(principal, "tools", tools)
        if len(names) == len(tools):
            return None
        return [tools[name] for name in names]

    @property
    def plans(self) -> list[ToolPlan]:
        """The OpenAPI sources' compiled tools (proxied tools have no plan)."""
        return [plan for _, plan in self._plans.values()]

    def plan(self, name: str) -> ToolPlan | None:
        route = self._plans.get(name)
        return None if route is None else route[1]

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                        principal: Principal = ANONYMOUS, *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Call tool `name` for `principal`; `progress` relays an upstream MCP server's progress,
        `ask` its requests of the client (sampling, elicitation, roots), `notify` its log messages
        to the caller.

        Raises:
            MCPError: -32602 for an unknown tool, or one the principal may not call (so a hidden
                tool and an unknown tool look alike; the HTTP auth layer answers 403 before this
                when only scopes are missing); or the error an upstream MCP server answered with.
        """
        source = await self._callable(name, principal, arguments)
        if self.limiter is not None:
            verdict = await self.limiter.check(caller_identity(principal, context.address), name)
            if not verdict.allowed:
                record = current_record.get()
                if record is not None and verdict.rule is not None:
                    record.limited = verdict.rule.label
                return error_result(verdict.message(name))
        try:
            headers = claim_headers(principal, self.claim_headers) if self.claim_headers else {}
            return await source.call_tool(name, arguments or {}, headers, progress=progress, ask=ask,
                                          notify=notify, context=replace(context, principal=principal))
        except ConverterError as exc:
            return error_result(str(exc))

    async def _callable(self, name: str, principal: Principal, arguments: Mapping[str, Any] | None = None) -> Source:
        """The source serving tool `name`, if `principal` may call it.

        Raises:
            MCPError: -32602 "Unknown tool" for an unknown tool or one the principal may not call.
        """
        source = self._routes.get(name)
        if source is None or not (await self.policy.decide(principal, "tools", "call", name, arguments)).allowed:
            record = current_record.get()
            if record is not None and source is not None:
                record.acl_denied = True
            # A tool the caller may not use answers exactly like one that does not exist.
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name!r}")
        return source

    async def proxied_route(self, name: str, principal: Principal) -> tuple[MCPUpstreamSource | None, dict[str, str]]:
        """The MCP server serving tool `name` to `principal` (None for an OpenAPI tool), and the
        caller's claim headers, for requests on a proxied tool other than a plain call (tasks).

        Raises:
            MCPError: -32602, exactly as `call_tool` for an unknown or forbidden tool.
            ConverterError: a claim cannot be sent as a header.
        """
        source = await self._callable(name, principal)
        upstream = source.upstream if isinstance(source, ProxiedSource) else None
        return upstream, claim_headers(principal, self.claim_headers) if self.claim_headers else {}

    @property
    def upstream_credentials(self) -> list[UpstreamCredentials]:
        """The upstream API credentials of the OpenAPI sources that have any (for /metrics)."""
        return [source.credentials for source in self.sources if source.credentials is not None]

    async def probe(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for source in self.all_sources:
            states.update(await source.probe())
        pdp = self.policy.pdp
        if pdp is not None:  # what the last exchange showed: decisions fail closed while it is down
            states[pdp.settings.url] = "reachable" if pdp.stats.healthy else "unreachable"
        shared = self.limiter.backend.shared_state if self.limiter is not None else None
        if shared is not None:  # Redis: limits fall back to local counters while it is down
            states["redis"] = shared
        return states

    async def preflight(self) -> None:
        """Connect to every MCP source once, list what it serves, and check for collisions.

        Raises:
            ConfigError: a tool or prompt name is served by two sources.
        """
        async with AsyncExitStack() as stack:
            for upstream in self.mcp_sources:
                # Quietly: the start logs the connection once, when serving; collisions are checked below.
                upstream.connect_log_level = logging.DEBUG
                upstream.listeners.remove(self._source_changed)
                stack.callback(setattr, upstream, "connect_log_level", logging.INFO)
                stack.callback(upstream.listeners.append, self._source_changed)
                await stack.enter_async_context(upstream)
        self.check_collisions()

    def resources(self) -> list[Any]:
        """Every long-lived part to open while serving, each once (the top-level spec and tools
        share one upstream client): async context managers, or objects with `aclose()` only."""
        found: dict[int, Any] = {}
        for source in self.all_sources:
            for part in source.parts:
                found.setdefault(id(part), part)
        for closing in (self.policy.pdp, self.limiter):
            if closing is not None:
                found.setdefault(id(closing), closing)
        return list(found.values())

    def detach(self) -> None:
        """Stop hearing of the MCP sources' list changes (a reload's next catalog listens instead)."""
        for upstream in self.mcp_sources:
            if self._source_changed in upstream.listeners:
                upstream.listeners.remove(self._source_changed)

    async def __aenter__(self) -> Catalog:
        self._stack = AsyncExitStack()
        for part in self.resources():
            await open_part(self._stack, part)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def _policy(operations: Sequence[tuple[str, Any, Mapping[str, Any]]], auth: AuthSettings | None, acl: Acl | None,
            pdp: Pdp | None, *, proxied_prefixes: Sequence[str]) -> Policy:
    """Per-tool scopes from the operations' `security` (and `auth.tool_scopes`), plus the rules.

    Raises:
        ConfigError: `auth.tool_scopes` names a tool no source serves.
    """
    if auth is None:
        return Policy(acl=acl, pdp=pdp)
    names = {name for name, _, _ in operations}
    policy = build_policy(operations, overrides=auth.tool_scopes, required_scopes=auth.required_scopes,
                          implied=auth.scope_implies, acl=acl, pdp=pdp)
    unknown = sorted(name for name in auth.tool_scopes if name not in names
                     and not any(name.startswith(prefix) for prefix in proxied_prefixes))
    if unknown:
        raise ConfigError(f"auth.tool_scopes: no tool is named {unknown[0]!r}", key="auth.tool_scopes")
    if proxied_prefixes:  # scopes for proxied tools can only come from the config
        extra = {name: (frozenset(scopes),) for name, scopes in auth.tool_scopes.items()
                 if name not in names and scopes}
        policy = replace(policy, tool_scopes={**policy.tool_scopes, **extra})
    return policy


async def open_part(stack: AsyncExitStack, part: Any) -> None:
    """Open `part` on `stack`: enter an async context manager, or arrange `aclose()` of the rest."""
    if hasattr(part, "__aenter__"):
        await stack.enter_async_context(part)
    else:
        stack.push_async_callback(part.aclose)


def build_catalog(settings: Settings, *, transport: Any = None, require_upstream: bool = True,
                  pdp_transport: Any = None, parts: Parts | None = None) -> Catalog:
    """Load every source the settings name and compile their tools.

    The top-level `spec:`/`tools:` (with `upstream:`) come first, then the top-level
    `mcp_upstream:`, then each entry of `sources:` in order. `parts`: a running catalog's
    (a reload): its upstream clients, credentials, MCP sessions, decision service client and
    rate limiter are kept where their settings did not change; the new catalog's own are in
    its `.parts`.

    Raises:
        SpecError: a document cannot be read (or, with `strict`, an operation cannot be converted).
        ConfigError: no usable upstream URL, or two tools with one name.
    """
    made = Parts(parts)
    sources: list[Source] = []

    def mcp_source(upstream: McpUpstreamSettings, prefix: str, label: str) -> ProxiedSource:
        kept = made.take("MCP server", (prefix, upstream),
                         lambda: MCPUpstreamSource(upstream, prefix=prefix, label=label))
        return ProxiedSource(kept)

    # Headers filled from the caller's token: never taken from tool arguments (no spoofing).
    reserved = frozenset(m.header.lower() for m in settings.auth.claim_to_header) if settings.auth else frozenset()
    if settings.spec is not None or settings.tools:
        sources += openapi_sources(settings, settings.spec, settings.tools, settings.upstream, settings.include,
                                   settings.exclude, prefix="", label="", transport=transport,
                                   require_upstream=require_upstream, reserved=reserved, parts=made)
    if settings.mcp_upstream is not None:
        sources.append(mcp_source(settings.mcp_upstream, "", "mcp_upstream"))
    for i, entry in enumerate(settings.sources):
        if entry.mcp_upstream is not None:
            sources.append(mcp_source(entry.mcp_upstream, entry.prefix, f"sources[{i}]"))
        else:
            sources += openapi_sources(settings, entry.spec, entry.tools, entry.upstream, entry.include,
                                       entry.exclude, prefix=entry.prefix, label=f"sources[{i}]",
                                       transport=transport, require_upstream=require_upstream, reserved=reserved,
                                       parts=made)
    acl = compile_acl(settings.acl, source=settings.config_file or "<config>") if settings.acl is not None else None
    pdp = None
    if settings.pdp is not None:
        pdp_settings = settings.pdp

        def make_pdp() -> Pdp:
            from converter.policy.pdp import Pdp  # httpx: imported only when configured

            return Pdp(pdp_settings, transport=pdp_transport)

        pdp = made.take("decision service client", (pdp_settings, id(pdp_transport)), make_pdp)
    limiter = made.take("rate limiter", (settings.limits, settings.redis), lambda: build_limiter(settings)) \
        if settings.limits else None
    catalog = Catalog(sources, auth=settings.auth, acl=acl, pdp=pdp, limiter=limiter)
    made.done()
    catalog.parts = made
    return catalog


def build_limiter(settings: Settings) -> RateLimiter | None:
    """The `limits:` rules over counters in Redis when `redis:` is set, else in this process."""
    if not settings.limits:
        return None
    if settings.redis is None:
        return RateLimiter(settings.limits)
    from converter.policy.limits.redis_backend import RedisBackend  # needs the `redis` extra

    backend = RedisBackend.from_url(settings.redis.url.get_secret_value(), key_prefix=settings.redis.key_prefix,
                                    timeout=settings.redis.timeout)
    return RateLimiter(settings.limits, backend=backend)


def caller_identity(principal: Principal, address: str | None) -> str:
    """Whom rate limits count: the token's identity, else (auth off) the client's address."""
    return identity_of(subject=principal.subject, client_id=principal.client_id, issuer=principal.issuer,
                       address=address, is_authenticated=principal.is_authenticated)
