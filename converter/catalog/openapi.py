"""`OpenAPISource`: the tools of one API description, called through one pooled upstream client.

Inline Kong-style `tools:` are turned into a synthetic OpenAPI document first
(`inline_tools_spec`), so they are an OpenAPISource too, not a second converter.
`openapi_sources` builds the sources of one `spec:`/`tools:` block of the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import mcp.types as types

from converter.catalog.served import NO_CONTEXT, CallContext
from converter.config import InlineTool, SelectionSettings, Settings, UpstreamSettings
from converter.errors import ArgumentError, ConfigError, SpecError, UpstreamError
from converter.invoke.result import error_result, map_response
from converter.invoke.upstream import Upstream
from converter.models import Operation, Problem, Spec
from converter.passthrough.transport import NotificationRelay, ProgressRelay, RequestRelay
from converter.tools import Selection, ToolPlan, build_plans
from converter.tools.cache import CompileCache, default_directory
from converter.tools.shaping import shaping_for

PROBE_TIMEOUT = 2.0  # seconds per upstream, for /readyz


class OpenAPISource:
    """Compiled tools and the pooled client of their upstream (a `converter.catalog.served.Source`)."""

    def __init__(self, plans: Sequence[ToolPlan], upstream: Upstream, *, base_url: str | None,
                 default_base_url: str | None = None, static_headers: Mapping[str, str] | None = None,
                 problems: Sequence[Problem] = (), security_schemes: Mapping[str, Any] | None = None,
                 label: str = "spec") -> None:
        """Args:
            base_url: upstream.url: every call goes there (overrides the spec's servers).
            default_base_url: without upstream.url, for operations without their own server.
            static_headers: upstream.headers, sent with every call; never overridden by arguments.
        """
        self.plans = {plan.name: plan for plan in plans}
        self.label = label
        self.security_schemes = security_schemes or {}
        self.upstream = upstream
        self.base_url = base_url
        self.default_base_url = default_base_url
        self.static_headers = dict(static_headers or {})
        self.problems = list(problems)
        self._tools = {name: plan.tool for name, plan in self.plans.items()}

    def __repr__(self) -> str:
        return f"OpenAPISource(label={self.label!r}, tools={len(self.plans)})"

    @property
    def tools(self) -> Mapping[str, types.Tool]:
        return self._tools

    def base_url_of(self, plan: ToolPlan) -> str | None:
        return self.base_url or plan.request.base_url or self.default_base_url

    def operations(self) -> list[tuple[str, Operation, Mapping[str, Any]]]:
        """(tool name, operation, the spec's security schemes) of each tool: per-tool scopes come from them."""
        return [(name, plan.operation, self.security_schemes) for name, plan in self.plans.items()]

    async def call_tool(self, name: str, arguments: Mapping[str, Any], headers: Mapping[str, str], *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Validate, build, send and map one call; every failure becomes an `isError` result."""
        return await self.call(self.plans[name], arguments, headers)

    async def call(self, plan: ToolPlan, arguments: Mapping[str, Any],
                   extra_headers: Mapping[str, str] | None = None) -> types.CallToolResult:
        chosen = None
        try:
            if plan.shaping is not None:
                arguments, chosen = plan.shaping.take_expression(arguments, plan.name)
            plan.validate_arguments(arguments)
            base_url = self.base_url_of(plan)
            if base_url is None:  # refused at startup; kept as a guard
                raise ConfigError(f"tool {plan.name!r} has no upstream URL")
            # Configured headers go last, so a tool argument never replaces a credential.
            configured = {**self.static_headers, **(extra_headers or {})}
            request = plan.request.build(arguments, base_url, configured)
            response = await self.upstream.send(request)
        except (ArgumentError, UpstreamError, ConfigError) as exc:
            return error_result(str(exc))
        return map_response(response, plan, chosen)

    async def probe(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for url in sorted({u for u in map(self.base_url_of, self.plans.values()) if u}):
            states[url] = "timeout"
            with anyio.move_on_after(PROBE_TIMEOUT):
                states[url] = "reachable" if await self.upstream.reachable(url) else "unreachable"
        return states

    @property
    def connection(self) -> Upstream:
        return self.upstream


def openapi_sources(settings: Settings, spec_path: str | None, tools: Sequence[InlineTool],
                    upstream_settings: UpstreamSettings, include: SelectionSettings, exclude: SelectionSettings,
                    *, prefix: str, label: str, transport: Any, require_upstream: bool,
                    reserved: frozenset[str]) -> list[OpenAPISource]:
    """One source per document (the spec, the inline tools), sharing one pooled upstream client.

    Raises:
        SpecError: with `strict`, an operation cannot be converted.
        ConfigError: a tool has no absolute upstream URL.
    """
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
        default_base = None
        if upstream_settings.url is None:
            default_base = _default_base_url(spec, plans, required=require_upstream)
        bound = [plan.bound(prefix=prefix, shaping=shaping_for(settings.responses, prefix + plan.name,
                                                               plan.input_schema.get("properties", {})))
                 for plan in plans]
        sources.append(OpenAPISource(bound, upstream, base_url=upstream_settings.url, default_base_url=default_base,
                                     static_headers=headers, problems=[*spec.problems, *naming],
                                     security_schemes=spec.security_schemes,
                                     label=f"{label} ({spec.source})" if label else spec.source))
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


def _selection(raw: SelectionSettings) -> Selection:
    return Selection(tags=tuple(raw.tags), operations=tuple(raw.operations), paths=tuple(raw.paths),
                     methods=tuple(raw.methods))


def _default_base_url(spec: Spec, plans: Sequence[ToolPlan], *, required: bool) -> str | None:
    """Without upstream.url, each tool calls its operation's server, else the spec's first absolute one.

    Raises:
        ConfigError: (when `required`) some tool would have no absolute URL at all.
    """
    absolute = next((url for url in spec.servers if url.startswith(("http://", "https://"))), None)
    missing = [plan.name for plan in plans if plan.request.base_url is None] if absolute is None else []
    if missing and required:
        hint = f" (its servers: {', '.join(spec.servers)})" if spec.servers else ""
        raise ConfigError(f"{spec.source}: no absolute upstream URL for {len(missing)} tool(s){hint}; pass --upstream "
                          "URL or set upstream.url in the config", key="upstream.url")
    return absolute
