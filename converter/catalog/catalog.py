"""Sources of tools and the catalog that serves them.

An `OpenAPISource` is a set of compiled `ToolPlan`s plus the pooled client of their upstream;
inline Kong-style `tools:` are turned into a synthetic OpenAPI document first, so they are an
OpenAPISource too. An `MCPUpstreamSource` (converter.passthrough.source) fronts an existing MCP server. The
`Catalog` merges sources under their prefixes, keeps the `tools/list` answer prebuilt, routes
`tools/call`, and (through `Passthrough`) serves the MCP sources' resources and prompts.
Collisions are reported at startup; the MCP sources' lists are only known once connected, so
`check_collisions` runs again after the first connection (`preflight`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, KeysView, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.auth.principal import ANONYMOUS, Principal, claim_headers
from converter.config import AuthSettings, InlineTool, ResponseSettings, SelectionSettings, Settings, UpstreamSettings
from converter.errors import ArgumentError, ConfigError, ConverterError, SpecError, UpstreamError
from converter.invoke.result import error_result, map_response
from converter.invoke.upstream import Upstream
from converter.models import Problem, Spec
from converter.passthrough.source import MCPUpstreamSource, ProgressRelay, RequestRelay
from converter.passthrough.view import Passthrough
from converter.policy import Policy, build_policy
from converter.policy.acl import Acl, compile_acl
from converter.telemetry.record import current_record
from converter.tools import Selection, ToolPlan, build_plans
from converter.tools.cache import CompileCache, default_directory
from converter.tools.shaping import shaping_for

log = logging.getLogger("openapi_mcp")


class OpenAPISource:
    """Tools compiled from one API description, called through one pooled upstream client."""

    def __init__(self, plans: Sequence[ToolPlan], upstream: Upstream, base_url: str | None,
                 static_headers: Mapping[str, str], problems: Sequence[Problem] = (),
                 security_schemes: Mapping[str, Any] | None = None, *, label: str = "spec") -> None:
        self.plans = {plan.name: plan for plan in plans}
        self.label = label
        self.security_schemes = security_schemes or {}
        self.upstream = upstream
        self.base_url = base_url
        self.problems = list(problems)
        for plan in plans:
            plan.request.static_headers = dict(static_headers)

    async def call(self, plan: ToolPlan, arguments: Mapping[str, Any],
                   extra_headers: Mapping[str, str] = {}) -> types.CallToolResult:
        """Validate, build, send and map one call; every failure becomes an `isError` result."""
        chosen = None
        try:
            if plan.shaping is not None:
                arguments, chosen = plan.shaping.take_expression(arguments, plan.name)
            plan.validate_arguments(arguments)
            base_url = self.base_url or plan.request.base_url
            if base_url is None:  # refused at startup; kept as a guard
                raise ConfigError(f"tool {plan.name!r} has no upstream URL")
            request = plan.request.build(arguments, base_url, extra_headers)
            response = await self.upstream.send(request)
        except (ArgumentError, UpstreamError) as exc:
            return error_result(str(exc))
        return map_response(response, plan, chosen)


Source = OpenAPISource | MCPUpstreamSource
CatalogListener = Callable[[frozenset[str]], Awaitable[None]]


class Catalog:
    """All tools of all sources by name, with the `tools/list` result built once per change."""

    def __init__(self, sources: Sequence[Source], *, auth: AuthSettings | None = None,
                 acl: Acl | None = None) -> None:
        self.all_sources = list(sources)
        self.sources = [s for s in sources if isinstance(s, OpenAPISource)]
        self.mcp_sources = [s for s in sources if isinstance(s, MCPUpstreamSource)]
        self.auth = auth
        self.claim_headers = tuple((m.claim, m.header) for m in auth.claim_to_header) if auth else ()
        self._routes: dict[str, tuple[OpenAPISource, ToolPlan]] = {}
        self.problems: list[Problem] = []
        for source in self.sources:
            self.problems.extend(source.problems)
            for name, plan in source.plans.items():
                if name in self._routes:
                    other = self._routes[name][0]
                    hint = ", or give a source a `prefix:`" if "sources[" in other.label + source.label else ""
                    raise ConfigError(f"tool name {name!r} is defined twice ({self._routes[name][1].operation.pointer} "
                                      f"and {plan.operation.pointer}); rename one with x-mcp-name or `name:`{hint}",
                                      key="sources" if hint else None)
                self._routes[name] = (source, plan)
        self.policy = build_policy(
            [(name, plan.operation, source.security_schemes) for name, (source, plan) in self._routes.items()],
            overrides=auth.tool_scopes if auth else {},
            required_scopes=auth.required_scopes if auth else (),
            implied=auth.scope_implies if auth else {},
            acl=acl,
        ) if auth else Policy(acl=acl)
        unknown = sorted(name for name in (auth.tool_scopes if auth else {}) if name not in self._routes
                         and not any(name.startswith(s.prefix) for s in self.mcp_sources))
        if unknown:
            raise ConfigError(f"auth.tool_scopes: no tool is named {unknown[0]!r}", key="auth.tool_scopes")
        if auth and self.mcp_sources:  # scopes for proxied tools can only come from the config
            extra = {name: (frozenset(scopes),) for name, scopes in auth.tool_scopes.items()
                     if name not in self._routes and scopes}
            self.policy = replace(self.policy, tool_scopes={**self.policy.tool_scopes, **extra})
        self.passthrough = Passthrough(self.mcp_sources, self.policy)
        self.listeners: list[CatalogListener] = []
        # Called when the server starts shutting down, before it waits for open responses:
        # long-lived streams (subscriptions/listen) end gracefully so that the wait can end.
        self.stop_streams: list[Callable[[], None]] = []
        self.revision = 0
        self._proxied: dict[str, MCPUpstreamSource] = {}
        self._tools: dict[str, types.Tool] = {}
        self._list_result = types.ListToolsResult(tools=[])
        self._merge(strict=True)
        for mcp_source in self.mcp_sources:
            mcp_source.listeners.append(self._source_changed)

    def _merge(self, *, strict: bool) -> None:
        """Rebuild the merged tool list (sources in config order); a repeated name is an error
        at startup (`strict`) and, when a list changes later, is served by the first source only."""
        tools: dict[str, types.Tool] = {}
        owners: dict[str, str] = {}
        proxied: dict[str, MCPUpstreamSource] = {}
        clashes: list[str] = []
        for source in self.all_sources:
            if isinstance(source, OpenAPISource):
                items = [(name, plan.tool) for name, plan in source.plans.items()]
                label = source.label
            else:
                items = [(name, tool) for name, (tool, _) in source.tools.items()]
                label = source.describe()
            for name, tool in items:
                if name in tools:
                    if owners[name] == label:  # OpenAPI duplicates were refused above
                        continue
                    message = (f"tool name {name!r} is served by two sources: {owners[name]} and {label}; "
                               "give one of them a `prefix:` (or rename the tool)")
                    if strict:
                        raise ConfigError(message, key="sources")
                    clashes.append(message)
                    continue
                tools[name], owners[name] = tool, label
                if isinstance(source, MCPUpstreamSource):
                    proxied[name] = source
        if clashes:
            more = f" (and {len(clashes) - 1} more such names)" if len(clashes) > 1 else ""
            log.error("%s%s; only the first source's tool is served", clashes[0], more)
        self._tools.clear()  # updated in place: `tool_names` is a live view of it
        self._tools.update(tools)
        self._proxied = proxied
        self._list_result = types.ListToolsResult(tools=list(tools.values()))
        self.passthrough.merge(strict=strict)

    def check_collisions(self) -> None:
        """Raises: ConfigError naming both sources of a tool or prompt name served twice."""
        self._merge(strict=True)

    async def _source_changed(self, source: MCPUpstreamSource, kinds: frozenset[str]) -> None:
        self._merge(strict=False)
        self.revision += 1
        for listener in list(self.listeners):
            await listener(kinds)

    @property
    def list_result(self) -> types.ListToolsResult:
        """Every tool of every source (no filtering)."""
        return self._list_result

    @property
    def has_proxied_tools(self) -> bool:
        """Whether the tool list can change while serving (MCP sources)."""
        return bool(self.mcp_sources)

    @property
    def tool_names(self) -> KeysView[str]:
        """A live view of every tool name (metrics label only these, never what a client sends)."""
        return self._tools.keys()

    def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        """The tools `principal` may see, or None when that is every tool."""
        if self.policy.is_open:
            return None
        tools = self._tools
        names = self.policy.visible(tools, principal)
        if len(names) == len(tools):
            return None
        return [tools[name] for name in names]

    @property
    def plans(self) -> list[ToolPlan]:
        """The OpenAPI sources' compiled tools (proxied tools have no plan)."""
        return [plan for _, plan in self._routes.values()]

    def plan(self, name: str) -> ToolPlan | None:
        route = self._routes.get(name)
        return None if route is None else route[1]

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                        principal: Principal = ANONYMOUS, *,
                        progress: ProgressRelay | None = None,
                        ask: RequestRelay | None = None) -> types.CallToolResult:
        """Call tool `name` for `principal`; `progress` relays an upstream MCP server's progress,
        `ask` its requests of the client (sampling, elicitation, roots) to the caller.

        Raises:
            MCPError: -32602 for an unknown tool, or one the principal may not call (so a hidden
                tool and an unknown tool look alike; the HTTP auth layer answers 403 before this);
                or the error an upstream MCP server answered with.
        """
        route = self._routes.get(name)
        proxied = self._proxied.get(name) if route is None else None
        known = route is not None or proxied is not None
        hidden = known and not self.policy.is_open and (
            bool(self.policy.missing_scopes(name, principal)) or not self.policy.may_call(name, principal))
        if not known or hidden:
            record = current_record.get()
            if record is not None and hidden:
                record.acl_denied = True
            # A tool the caller may not use answers exactly like one that does not exist.
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name!r}")
        try:
            headers = claim_headers(principal, self.claim_headers) if self.claim_headers else {}
        except ConverterError as exc:
            return error_result(str(exc))
        if proxied is not None:
            return await self._call_proxied(proxied, name, arguments, progress, headers, ask)
        assert route is not None
        source, plan = route
        try:
            return await source.call(plan, arguments or {}, headers)
        except ConverterError as exc:
            return error_result(str(exc))

    async def _call_proxied(self, source: MCPUpstreamSource, name: str, arguments: Mapping[str, Any] | None,
                            progress: ProgressRelay | None, headers: Mapping[str, str],
                            ask: RequestRelay | None = None) -> types.CallToolResult:
        record = current_record.get()
        started = time.perf_counter()
        try:
            return await source.call_tool(name, arguments, progress, headers, ask)
        except UpstreamError as exc:
            return error_result(str(exc))
        finally:
            if record is not None:
                record.upstream_method, record.upstream_url = "tools/call", source.url
                record.upstream_ms = round((time.perf_counter() - started) * 1000, 3)

    async def preflight(self) -> None:
        """Connect to every MCP source once, list what it serves, and check for collisions.

        Raises:
            ConfigError: a tool or prompt name is served by two sources.
        """
        async with AsyncExitStack() as stack:
            for source in self.mcp_sources:
                # Quietly: the start logs the connection once, when serving; collisions are checked below.
                source.connect_log_level = logging.DEBUG
                source.listeners.remove(self._source_changed)
                stack.callback(setattr, source, "connect_log_level", logging.INFO)
                stack.callback(source.listeners.append, self._source_changed)
                await stack.enter_async_context(source)
        self.check_collisions()

    async def __aenter__(self) -> Catalog:
        self._stack = AsyncExitStack()
        entered: set[int] = set()
        for source in self.all_sources:
            context: Any = source.upstream if isinstance(source, OpenAPISource) else source
            if id(context) not in entered:  # the top-level spec and tools share one upstream client
                entered.add(id(context))
                await self._stack.enter_async_context(context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def build_catalog(settings: Settings, *, transport: Any = None, require_upstream: bool = True) -> Catalog:
    """Load every source the settings name and compile their tools.

    The top-level `spec:`/`tools:` (with `upstream:`) come first, then the top-level
    `mcp_upstream:`, then each entry of `sources:` in order.

    Raises:
        SpecError: a document cannot be read (or, with `strict`, an operation cannot be converted).
        ConfigError: no usable upstream URL, or two tools with one name.
    """
    sources: list[Source] = []
    # Headers filled from the caller's token: never taken from tool arguments (no spoofing).
    reserved = frozenset(m.header.lower() for m in settings.auth.claim_to_header) if settings.auth else frozenset()
    if settings.spec is not None or settings.tools:
        sources += _openapi_sources(settings, settings.spec, settings.tools, settings.upstream, settings.include,
                                    settings.exclude, prefix="", label="", transport=transport,
                                    require_upstream=require_upstream, reserved=reserved)
    if settings.mcp_upstream is not None:
        sources.append(MCPUpstreamSource(settings.mcp_upstream, label="mcp_upstream"))
    for i, entry in enumerate(settings.sources):
        if entry.mcp_upstream is not None:
            sources.append(MCPUpstreamSource(entry.mcp_upstream, prefix=entry.prefix, label=f"sources[{i}]"))
        else:
            sources += _openapi_sources(settings, entry.spec, entry.tools, entry.upstream, entry.include,
                                        entry.exclude, prefix=entry.prefix, label=f"sources[{i}]",
                                        transport=transport, require_upstream=require_upstream, reserved=reserved)
    acl = compile_acl(settings.acl, source=settings.config_file or "<config>") if settings.acl is not None else None
    return Catalog(sources, auth=settings.auth, acl=acl)


def _openapi_sources(settings: Settings, spec_path: str | None, tools: Sequence[InlineTool],
                     upstream_settings: UpstreamSettings, include: SelectionSettings, exclude: SelectionSettings,
                     *, prefix: str, label: str, transport: Any, require_upstream: bool,
                     reserved: frozenset[str]) -> list[OpenAPISource]:
    """One source per document (the spec, the inline tools), sharing one pooled upstream client."""
    upstream = Upstream(timeout=upstream_settings.timeout, max_response_bytes=upstream_settings.max_response_bytes,
                        transport=transport, tracing=settings.telemetry.traces)
    headers = {name: value.get_secret_value() for name, value in upstream_settings.headers.items()}
    reserved |= {name.lower() for name in headers}  # configured credentials: never replaced by an argument
    chosen, dropped = _selection(include), _selection(exclude)
    compiled: list[tuple[Spec, list[ToolPlan], list[Problem]]] = []
    if spec_path is not None:
        cache = CompileCache(default_directory() if settings.cache else None)
        compiled.append(cache.compile(spec_path, include=chosen, exclude=dropped, reserved_headers=reserved))
    if tools:
        where = settings.config_file or "<config>"
        inline = inline_tools_spec(tools, source=f"{where}: {label}" if label else where)
        compiled.append((inline, *build_plans(inline, include=chosen, exclude=dropped, reserved_headers=reserved)))
    sources = []
    for spec, plans, naming in compiled:
        fatal = [p for p in spec.problems if p.fatal]
        if settings.strict and fatal:
            raise SpecError(f"{spec.source}: {len(fatal)} operation(s) cannot be converted (--strict): {fatal[0]}",
                            source=spec.source)
        if upstream_settings.url is None:
            _fill_base_urls(spec, plans, required=require_upstream)
        for plan in plans if prefix else ():
            plan.name = prefix + plan.name
            plan.tool = plan.tool.model_copy(update={"name": plan.name})
        if not settings.responses.is_off:
            _shape(plans, settings.responses)
        sources.append(
            OpenAPISource(
                plans,
                upstream,
                upstream_settings.url,
                headers,
                problems=[*spec.problems, *naming],
                security_schemes=spec.security_schemes,
                label=f"{label} ({spec.source})" if label else spec.source,
            )
        )
    return sources


def inline_tools_spec(tools: Sequence[InlineTool], *, source: str) -> Spec:
    """Turn Kong-style `tools:` into a synthetic OpenAPI 3.0 document and load it like any spec."""
    from converter.spec import spec_from_document

    paths: dict[str, dict[str, Any]] = {}
    where: dict[tuple[str, str], str] = {}
    for i, tool in enumerate(tools):
        method = tool.method.lower()
        item = paths.setdefault(tool.path, {})
        if method in item:
            raise ConfigError(f"{source}: tools[{i}]: {tool.method.upper()} {tool.path} is already defined by "
                              f"{where[(method, tool.path)]}", key=f"tools[{i}]", source=source)
        where[(method, tool.path)] = f"tools[{i}]"
        operation: dict[str, Any] = {"parameters": tool.parameters,
                                     "responses": tool.responses or {"200": {"description": "OK"}}}
        if tool.name:
            operation["operationId"] = tool.name
        if tool.description:
            operation["summary"] = tool.description
        if tool.request_body:
            operation["requestBody"] = tool.request_body
        if tool.tags:
            operation["tags"] = tool.tags
        item[method] = operation
    document = {"openapi": "3.0.3", "info": {"title": "inline tools", "version": "1"}, "paths": paths}
    spec = spec_from_document(document, "inline:tools", source=source)
    operations = tuple(
        replace(op, pointer=f"{source}: {where[(op.method.lower(), op.path)]}") for op in spec.operations
    )
    return replace(spec, operations=operations)


def _shape(plans: Sequence[ToolPlan], responses: ResponseSettings) -> None:
    """Attach each tool's response shaping (config `responses:`) and declare what it changes."""
    for plan in plans:
        shaping = shaping_for(responses, plan.name, plan.input_schema.get("properties", {}))
        if shaping is not None:
            plan.shaping = shaping
            plan.tool = plan.tool.model_copy(update={"input_schema": shaping.input_schema(plan.tool.input_schema),
                                                     "output_schema": shaping.output_schema(plan.tool.output_schema)})


def _selection(raw: SelectionSettings) -> Selection:
    return Selection(tags=tuple(raw.tags), operations=tuple(raw.operations), paths=tuple(raw.paths),
                     methods=tuple(raw.methods))


def _fill_base_urls(spec: Spec, plans: Sequence[ToolPlan], *, required: bool) -> None:
    """Without upstream.url, each tool calls its operation's server, else the spec's first one."""
    absolute = [url for url in spec.servers if url.startswith(("http://", "https://"))]
    for plan in plans:
        if plan.request.base_url is None and absolute:
            plan.request.base_url = absolute[0]
    missing = [plan.name for plan in plans if plan.request.base_url is None]
    if missing and required:
        hint = f" (its servers: {', '.join(spec.servers)})" if spec.servers else ""
        raise ConfigError(f"{spec.source}: no absolute upstream URL for {len(missing)} tool(s){hint}; pass --upstream "
                          "URL or set upstream.url in the config", key="upstream.url")
