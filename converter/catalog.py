"""Sources of tools and the catalog that serves them.

An `OpenAPISource` is a set of compiled `ToolPlan`s plus the pooled client of their upstream;
inline Kong-style `tools:` are turned into a synthetic OpenAPI document first, so they are an
OpenAPISource too. The `Catalog` merges sources, keeps the `tools/list` answer prebuilt, and
routes `tools/call`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.auth.principal import ANONYMOUS, Principal, claim_headers
from converter.config import AuthSettings, InlineTool, SelectionSettings, Settings
from converter.errors import ArgumentError, ConfigError, ConverterError, SpecError, UpstreamError
from converter.invoke.result import error_result, map_response
from converter.invoke.upstream import Upstream
from converter.acl import Acl, compile_acl
from converter.models import Problem, Spec
from converter.telemetry.record import current_record
from converter.policy import Policy, build_policy
from converter.spec import load_spec, spec_from_document
from converter.tools import Selection, ToolPlan, build_plans

log = logging.getLogger("openapi_mcp")


class OpenAPISource:
    """Tools compiled from one API description, called through one pooled upstream client."""

    def __init__(self, plans: Sequence[ToolPlan], upstream: Upstream, base_url: str | None,
                 static_headers: Mapping[str, str], problems: Sequence[Problem] = (),
                 security_schemes: Mapping[str, Any] | None = None) -> None:
        self.plans = {plan.name: plan for plan in plans}
        self.security_schemes = security_schemes or {}
        self.upstream = upstream
        self.base_url = base_url
        self.problems = list(problems)
        for plan in plans:
            plan.request.static_headers = dict(static_headers)

    async def call(self, plan: ToolPlan, arguments: Mapping[str, Any],
                   extra_headers: Mapping[str, str] = {}) -> types.CallToolResult:
        """Validate, build, send and map one call; every failure becomes an `isError` result."""
        try:
            plan.validate_arguments(arguments)
            base_url = self.base_url or plan.request.base_url
            if base_url is None:  # refused at startup; kept as a guard
                raise ConfigError(f"tool {plan.name!r} has no upstream URL")
            request = plan.request.build(arguments, base_url, extra_headers)
            response = await self.upstream.send(request)
        except (ArgumentError, UpstreamError) as exc:
            return error_result(str(exc))
        return map_response(response, plan)


class Catalog:
    """All tools of all sources by name, with the `tools/list` result built once."""

    def __init__(self, sources: Sequence[OpenAPISource], *, auth: AuthSettings | None = None,
                 acl: Acl | None = None) -> None:
        self.sources = list(sources)
        self.auth = auth
        self.claim_headers = tuple((m.claim, m.header) for m in auth.claim_to_header) if auth else ()
        self._routes: dict[str, tuple[OpenAPISource, ToolPlan]] = {}
        self.problems: list[Problem] = []
        for source in self.sources:
            self.problems.extend(source.problems)
            for name, plan in source.plans.items():
                if name in self._routes:
                    raise ConfigError(f"tool name {name!r} is defined twice ({self._routes[name][1].operation.pointer} "
                                      f"and {plan.operation.pointer}); rename one with x-mcp-name or `name:`")
                self._routes[name] = (source, plan)
        self.list_result = types.ListToolsResult(tools=[plan.tool for _, plan in self._routes.values()])
        self.policy = build_policy(
            [(name, plan.operation, source.security_schemes) for name, (source, plan) in self._routes.items()],
            overrides=auth.tool_scopes if auth else {},
            required_scopes=auth.required_scopes if auth else (),
            implied=auth.scope_implies if auth else {},
            acl=acl,
        ) if auth else Policy(acl=acl)
        unknown = sorted(set(auth.tool_scopes) - set(self._routes)) if auth else []
        if unknown:
            raise ConfigError(f"auth.tool_scopes: no tool is named {unknown[0]!r}", key="auth.tool_scopes")

    def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        """The tools `principal` may see, or None when that is every tool."""
        if self.policy.is_open:
            return None
        names = self.policy.visible(self._routes, principal)
        if len(names) == len(self._routes):
            return None
        return [self._routes[name][1].tool for name in names]

    @property
    def plans(self) -> list[ToolPlan]:
        return [plan for _, plan in self._routes.values()]

    def plan(self, name: str) -> ToolPlan | None:
        route = self._routes.get(name)
        return None if route is None else route[1]

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                        principal: Principal = ANONYMOUS) -> types.CallToolResult:
        """Call tool `name` for `principal`.

        Raises:
            MCPError: -32602 for an unknown tool, or one the principal may not call (so a hidden
                tool and an unknown tool look alike; the HTTP auth layer answers 403 before this).
        """
        route = self._routes.get(name)
        hidden = route is not None and not self.policy.is_open and (
            bool(self.policy.missing_scopes(name, principal)) or not self.policy.may_call(name, principal))
        if route is None or hidden:
            record = current_record.get()
            if record is not None and hidden:
                record.acl_denied = True
            # A tool the caller may not use answers exactly like one that does not exist.
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name!r}")
        source, plan = route
        try:
            headers = claim_headers(principal, self.claim_headers) if self.claim_headers else {}
            return await source.call(plan, arguments or {}, headers)
        except ConverterError as exc:
            return error_result(str(exc))

    async def __aenter__(self) -> Catalog:
        self._stack = AsyncExitStack()
        for source in self.sources:
            await self._stack.enter_async_context(source.upstream)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def build_catalog(settings: Settings, *, transport: Any = None, require_upstream: bool = True) -> Catalog:
    """Load every source the settings name and compile their tools.

    Raises:
        SpecError: a document cannot be read (or, with `strict`, an operation cannot be converted).
        ConfigError: no usable upstream URL, or two tools with one name.
    """
    upstream = Upstream(timeout=settings.upstream.timeout, max_response_bytes=settings.upstream.max_response_bytes,
                        transport=transport, tracing=settings.telemetry.traces)
    headers = {name: value.get_secret_value() for name, value in settings.upstream.headers.items()}
    sources: list[OpenAPISource] = []
    specs: list[Spec] = []
    # Headers filled from the caller's token: never taken from tool arguments (no spoofing).
    reserved = frozenset(m.header.lower() for m in settings.auth.claim_to_header) if settings.auth else frozenset()
    if settings.spec is not None:
        specs.append(load_spec(settings.spec))
    if settings.tools:
        specs.append(inline_tools_spec(settings.tools, source=settings.config_file or "<config>"))
    for spec in specs:
        fatal = [p for p in spec.problems if p.fatal]
        if settings.strict and fatal:
            raise SpecError(f"{spec.source}: {len(fatal)} operation(s) cannot be converted (--strict): {fatal[0]}",
                            source=spec.source)
        plans, naming = build_plans(spec, include=_selection(settings.include), exclude=_selection(settings.exclude),
                                    reserved_headers=reserved)
        if settings.upstream.url is None:
            _fill_base_urls(spec, plans, required=require_upstream)
        sources.append(OpenAPISource(plans, upstream, settings.upstream.url, headers,
                                     problems=[*spec.problems, *naming], security_schemes=spec.security_schemes))
    acl = compile_acl(settings.acl, source=settings.config_file or "<config>") if settings.acl is not None else None
    return Catalog(sources, auth=settings.auth, acl=acl)


def inline_tools_spec(tools: Sequence[InlineTool], *, source: str) -> Spec:
    """Turn Kong-style `tools:` into a synthetic OpenAPI 3.0 document and load it like any spec."""
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
    operations = tuple(replace(op, pointer=f"{source}: {where[(op.method.lower(), op.path)]}") for op in spec.operations)
    return replace(spec, operations=operations)


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
