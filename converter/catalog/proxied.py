"""`ProxiedSource`: the tools of an upstream MCP server, as a `converter.catalog.served.Source`.

The connection itself (sessions, reconnects, list changes, resources and prompts) is
`converter.passthrough.source.MCPUpstreamSource`; this adapter gives the catalog the same view
of it as of an OpenAPI source, and records the upstream call in the request's CallRecord.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import mcp.types as types

from converter.catalog.served import NO_CONTEXT, CallContext
from converter.errors import UpstreamError
from converter.invoke.result import error_result
from converter.models import Problem
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.transport import NotificationRelay, ProgressRelay, RequestRelay
from converter.telemetry.record import current_record


class ProxiedSource:
    """One upstream MCP server's tools, served under its prefix."""

    def __init__(self, upstream: MCPUpstreamSource) -> None:
        self.upstream = upstream
        self.label = upstream.describe()
        self.problems: list[Problem] = []

    def __repr__(self) -> str:
        return f"ProxiedSource({self.upstream!r})"

    @property
    def tools(self) -> Mapping[str, types.Tool]:
        return {name: tool for name, (tool, _) in self.upstream.tools.items()}

    async def call_tool(self, name: str, arguments: Mapping[str, Any], headers: Mapping[str, str], *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        record = current_record.get()
        started = time.perf_counter()
        try:
            return await self.upstream.call_tool(name, arguments, progress, headers, ask, notify)
        except UpstreamError as exc:
            return error_result(str(exc))
        finally:
            if record is not None:
                record.upstream_method, record.upstream_url = "tools/call", self.upstream.url
                record.upstream_ms = round((time.perf_counter() - started) * 1000, 3)

    async def probe(self) -> dict[str, str]:
        # Its supervisor pings it already: the state it keeps is the answer.
        return {self.upstream.url: "connected" if self.upstream.is_connected else "disconnected"}

    @property
    def parts(self) -> list[MCPUpstreamSource]:
        return [self.upstream]
