"""The seams of the catalog, as Protocols.

- `Source`: where tools come from. An OpenAPI document (or inline `tools:`) with its upstream
  client (`converter.catalog.openapi.OpenAPISource`), or an MCP server fronted as it is
  (`converter.catalog.proxied.ProxiedSource`). The `Catalog` merges sources under their prefixes.
- `ServedCatalog`: what the server reads of what it serves: the `Catalog`, or in dynamic mode
  the `DynamicCatalog` over one. `converter.server` knows nothing else of either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

import mcp.types as types

from converter.auth.principal import Principal
from converter.credentials.upstream import UpstreamCredentials
from converter.models import Problem
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.transport import NotificationRelay, ProgressRelay, RequestRelay
from converter.passthrough.view import Passthrough
from converter.policy import Policy
from converter.policy.limits import RateLimiter

# Told which lists changed ("tools", "prompts", "resources", "templates").
CatalogListener = Callable[[frozenset[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the request carried besides the verified principal, for the layers that need it."""

    address: str | None = None  # the client's address: rate limits count by it when auth is off
    # The caller's bearer token, for RFC 8693 token exchange only (upstream.auth.token_exchange):
    # never logged, never sent anywhere as it is.
    bearer_token: str | None = field(default=None, repr=False)
    # The verified principal, set by the catalog for its sources: its `exp` bounds how long a
    # token exchanged for `bearer_token` is reused.
    principal: Principal | None = None


NO_CONTEXT = CallContext()


class Source(Protocol):
    """One place tools come from."""

    @property
    def label(self) -> str:
        """For messages: "sources[1] (github.yaml)"."""
        ...

    @property
    def problems(self) -> Sequence[Problem]:
        """What could not be converted, and why."""
        ...

    @property
    def tools(self) -> Mapping[str, types.Tool]:
        """The source's tools by served name, as they are now (an MCP server's list changes)."""
        ...

    async def call_tool(self, name: str, arguments: Mapping[str, Any], headers: Mapping[str, str], *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Call tool `name`; every failure of the call itself is an `isError` result.

        `headers` are the caller's claim headers (auth.claim_to_header). `progress`, `ask` and
        `notify` pass an upstream MCP server's progress, requests and log messages on to the
        calling client.
        """
        ...

    async def probe(self) -> dict[str, str]:
        """Each upstream of this source and its state (reachable, unreachable, timeout,
        connected, disconnected), for `/readyz`."""
        ...

    @property
    def parts(self) -> Sequence[Any]:
        """What must be open while serving (async context managers): the pooled upstream client
        (shared by the sources of one `spec:`/`tools:` block) and the upstream credentials, or the
        link to an MCP server. The catalog opens each part once; a reload keeps those whose
        settings did not change (converter.catalog.reuse)."""
        ...


class ServedTool(Protocol):
    """A tool as the server lists it."""

    @property
    def name(self) -> str: ...

    @property
    def tool(self) -> types.Tool: ...


class ServedCatalog(Protocol):
    """What the server serves."""

    listeners: list[CatalogListener]  # told when a list changes
    stop_streams: list[Callable[[], None]]  # called first on shutdown: long-lived streams end

    @property
    def policy(self) -> Policy: ...

    @property
    def limiter(self) -> RateLimiter | None:
        """limits: (the catalog limits tool calls; the server every other request)."""
        ...

    @property
    def problems(self) -> list[Problem]: ...

    @property
    def generation(self) -> int:
        """Changes when what is served is replaced (a live reload): caches of its lists key on it."""
        ...

    @property
    def served_tools(self) -> Sequence[ServedTool]:
        """The tools `tools/list` shows (before access rules): in dynamic mode, the meta-tools."""
        ...

    @property
    def tool_names(self) -> Set[str]:
        """A live view of every served tool name (metrics label only these)."""
        ...

    @property
    def list_result(self) -> types.ListToolsResult:
        """Every served tool, unfiltered."""
        ...

    @property
    def list_can_change(self) -> bool:
        """Whether the tool list can change while serving (an MCP source's list does)."""
        ...

    @property
    def passthrough(self) -> Passthrough | None:
        """The MCP sources' resources and prompts, or None when no MCP server is fronted."""
        ...

    async def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        """The tools `principal` may see, or None when that is every tool."""
        ...

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None, principal: Principal, *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Call tool `name` for `principal`.

        Raises:
            MCPError: -32602 for an unknown tool or one the principal may not call (alike).
        """
        ...

    async def proxied_route(self, name: str, principal: Principal) -> tuple[MCPUpstreamSource | None,
                                                                             dict[str, str]]:
        """The MCP server serving tool `name` to `principal`, for task requests (passthrough.tasks).

        Raises:
            MCPError: -32602 as `call_tool` for an unknown or forbidden tool.
        """
        ...

    async def probe(self) -> dict[str, str]:
        """Every upstream and its state, for `/readyz`."""
        ...

    @property
    def upstream_credentials(self) -> Sequence[UpstreamCredentials]:
        """The upstream API credentials of the OpenAPI sources that have any (for /metrics)."""
        ...

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> None: ...
