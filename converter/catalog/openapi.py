"""`OpenAPISource`: the tools of one API description, called through one pooled upstream client.

Inline Kong-style `tools:` are turned into a synthetic OpenAPI document first
(`inline_tools_spec`), so they are an OpenAPISource too, not a second converter.
`openapi_sources` builds the sources of one `spec:`/`tools:` block of the settings.

With `upstream.auth` or `upstream.credentials`, each source's calls carry the upstream API's own
credentials (converter.credentials: a token exchanged for the caller's, the gateway's client
credentials token, the spec's API keys), placed as the operation's `security` says. The caller's
token is never sent as it is, and a call whose credentials cannot be had is not sent at all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import mcp.types as types

from converter.catalog.reuse import Parts
from converter.catalog.served import NO_CONTEXT, CallContext
from converter.config import InlineTool, SelectionSettings, Settings, UpstreamSettings
from converter.config.credentials import CredentialsSettings
from converter.credentials.errors import CredentialError, TokenEndpointError
from converter.credentials.schemes import SchemeCompiler, unmet_requirements
from converter.credentials.upstream import ANONYMOUS_CALLER, Caller, UpstreamCredentials
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
                 label: str = "spec", credentials: UpstreamCredentials | None = None,
                 upstream_key: str = "upstream", files: Sequence[str] = ()) -> None:
        """Args:
            base_url: upstream.url: every call goes there (overrides the spec's servers).
            default_base_url: without upstream.url, for operations without their own server.
            static_headers: upstream.headers, sent with every call; never overridden by arguments.
            credentials: the upstream's own credentials (upstream.auth, upstream.credentials);
                None: calls carry only the static headers.
            upstream_key: where its `upstream:` is in the config ("sources[2].upstream"), for messages.
            files: the URIs of the document and of every document it references (a reload watches them).
        """
        self.plans = {plan.name: plan for plan in plans}
        self.label = label
        self.security_schemes = security_schemes or {}
        self.upstream = upstream
        self.credentials = credentials
        self.upstream_key = upstream_key
        self.files = tuple(files)
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

    def unmet_credentials(self) -> dict[str, list[ToolPlan]]:
        """The tools whose `security` no configured credential meets, grouped by why.

        With credentials configured such calls fail (nothing is sent); without any, they are sent
        with the static headers only, as before the credentials existed.
        """
        compiler = self.credentials.compiler if self.credentials is not None else SchemeCompiler(
            CredentialsSettings(), self.security_schemes, label=self.upstream_key, static_headers=self.static_headers)
        by_operation = {id(plan.operation): plan for plan in self.plans.values()}
        grouped = unmet_requirements([plan.operation for plan in self.plans.values()], compiler)
        return {why: [by_operation[id(op)] for op in ops] for why, ops in grouped.items()}

    def operations(self) -> list[tuple[str, Operation, Mapping[str, Any]]]:
        """(tool name, operation, the spec's security schemes) of each tool: per-tool scopes come from them."""
        return [(name, plan.operation, self.security_schemes) for name, plan in self.plans.items()]

    async def call_tool(self, name: str, arguments: Mapping[str, Any], headers: Mapping[str, str], *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Validate, build, send and map one call; every failure becomes an `isError` result."""
        caller = ANONYMOUS_CALLER
        if self.credentials is not None:
            # The verified token, for a token exchange only: never a header of the upstream call.
            caller = Caller.of(context.principal, context.bearer_token)
        return await self.call(self.plans[name], arguments, headers, caller=caller)

    async def call(self, plan: ToolPlan, arguments: Mapping[str, Any],
                   extra_headers: Mapping[str, str] | None = None, *,
                   caller: Caller = ANONYMOUS_CALLER) -> types.CallToolResult:
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
            if self.credentials is None:
                response = await self.upstream.send(request)
            else:
                # Raises before anything is sent when a credential cannot be had.
                response = await self.credentials.send(self.upstream, request, plan.operation.security, caller,
                                                       tool=plan.name)
        except (CredentialError, TokenEndpointError) as exc:
            return error_result(f"{exc}; nothing was sent to the upstream")
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
    def parts(self) -> list[Any]:
        """The pooled upstream client (shared by the sources of one block) and the credentials."""
        return [self.upstream] if self.credentials is None else [self.upstream, self.credentials]


def openapi_sources(settings: Settings, spec_path: str | None, tools: Sequence[InlineTool],
                    upstream_settings: UpstreamSettings, include: SelectionSettings, exclude: SelectionSettings,
                    *, prefix: str, label: str, transport: Any, require_upstream: bool,
                    reserved: frozenset[str], parts: Parts | None = None) -> list[OpenAPISource]:
    """One source per document (the spec, the inline tools), sharing one pooled upstream client.

    `parts`: the running catalog's upstream clients and credentials, kept where their settings
    are the same (converter.catalog.reuse).

    Raises:
        SpecError: with `strict`, an operation cannot be converted.
        ConfigError: a tool has no absolute upstream URL.
    """
    parts = parts or Parts()
    where_upstream = f"{label}.upstream" if label else "upstream"
    upstream = parts.take(
        "upstream client", (where_upstream, upstream_settings.timeout, upstream_settings.max_response_bytes,
                            settings.telemetry.traces, id(transport)),
        lambda: Upstream(timeout=upstream_settings.timeout, max_response_bytes=upstream_settings.max_response_bytes,
                         transport=transport, tracing=settings.telemetry.traces))
    headers = {name: value.get_secret_value() for name, value in upstream_settings.headers.items()}
    reserved |= {name.lower() for name in headers}  # configured credentials: never replaced by an argument
    chosen, dropped = _selection(include), _selection(exclude)
    compiled: list[tuple[Spec, list[ToolPlan], list[Problem]]] = []
    files: list[str] = []
    if spec_path is not None:
        cache = CompileCache(default_directory() if settings.cache else None)
        compiled.append(cache.compile(spec_path, include=chosen, exclude=dropped, reserved_headers=reserved))
        files = list(dict.fromkeys(cache.files))
    inline: Spec | None = None
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
        wanted = credentials_settings(upstream_settings, inline_beside_spec=spec_path is not None and spec is inline)
        credentials, unused = None, []
        if wanted is not None:  # a credential that does not fit its scheme raises ConfigError here, at startup
            credentials = parts.take(
                "upstream credentials", (where_upstream, spec is inline, wanted, spec.security_schemes,
                                         sorted(headers)),
                functools.partial(UpstreamCredentials, wanted, spec.security_schemes, label=where_upstream,
                                  static_headers=headers.keys()))
            unused = [Problem(f"{where_upstream}.credentials.{name}", "the spec defines no security scheme of that "
                              "name, so it is never sent") for name in credentials.compiler.unused_credentials()]
        sources.append(OpenAPISource(bound, upstream, base_url=upstream_settings.url, default_base_url=default_base,
                                     static_headers=headers, problems=[*spec.problems, *naming, *unused],
                                     security_schemes=spec.security_schemes,
                                     label=f"{label} ({spec.source})" if label else spec.source,
                                     credentials=credentials, upstream_key=where_upstream,
                                     files=() if spec is inline else files))
    return sources


def credentials_settings(upstream: UpstreamSettings, *, inline_beside_spec: bool = False) -> CredentialsSettings | None:
    """The credentials of one source of a block, or None without any (calls carry the static headers only).

    Inline tools have no securitySchemes: beside a spec, the block's `credentials` are the spec's,
    so the tools get `upstream.auth` only.
    """
    if not upstream.has_credentials:
        return None
    if inline_beside_spec:
        return CredentialsSettings(auth=upstream.auth) if upstream.auth is not None else None
    return upstream.credentials_settings()


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
