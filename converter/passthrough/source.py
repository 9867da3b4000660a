"""Passthrough: an existing MCP server (streamable HTTP) as a source of tools, resources and prompts.

One client connection per upstream, opened in the catalog's lifespan and kept up by a
supervisor task: it reconnects with exponential backoff, and pings the upstream every
`HEARTBEAT_SECONDS` (at once after a request failed at the transport) so that a dead or
restarted upstream is noticed. The lists are fetched on connect and again when the upstream
says one changed (`notifications/*/list_changed`); the catalog hears of every change. A
request while the upstream is down fails at once with an `UpstreamError`; every request is
bounded by the configured timeout, so nothing hangs.

Only the configured upstream headers go up: this module never sees the downstream client's
credentials (the auth layer strips them before the MCP layer runs), so it cannot forward them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final, TypeVar

import anyio
import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from converter.config import McpUpstreamSettings
from converter.errors import UpstreamError
from converter.passthrough.transport import SESSION_GONE, DirectCalls, SessionTransport
from converter.passthrough.transport import ProgressRelay as ProgressRelay
from converter.passthrough.transport import RequestRelay as RequestRelay
from converter.version import __version__

log = logging.getLogger("openapi_mcp")

HEARTBEAT_SECONDS: Final = 15.0
FIRST_CONNECT_SECONDS: Final = 10.0  # how long startup waits for the first connection
BACKOFF_START: Final = 0.5
BACKOFF_MAX: Final = 30.0
MAX_PAGES: Final = 100  # a list that never ends cannot hang a refresh
KINDS: Final = ("tools", "resources", "templates", "prompts")
_T = TypeVar("_T")
_CHANGED: Final[dict[type[Any], str]] = {
    types.ToolListChangedNotification: "tools",
    types.PromptListChangedNotification: "prompts",
    types.ResourceListChangedNotification: "resources",
}
RETRY_WAIT_SECONDS: Final = 5.0  # how long a request refused with a stale session waits for the new one
# JSON-RPC errors that come from the transport, not from the upstream's answer: worth a ping.
_TRANSPORT_CODES: Final = frozenset({types.CONNECTION_CLOSED, types.INVALID_REQUEST, types.INTERNAL_ERROR})
# The SDK's words for an HTTP 404/400 to a request on a session the upstream no longer knows.
_SESSION_GONE: Final = frozenset({SESSION_GONE, "Server returned an error response"})

ChangeListener = Callable[["MCPUpstreamSource", frozenset[str]], Awaitable[None]]


class MCPUpstreamSource:
    """The tools, resources, templates and prompts of one upstream MCP server.

    `tools` and `prompts` map the name served here (`prefix` + upstream name) to the item
    (already renamed) and its upstream name. Resource URIs are never renamed.
    """

    def __init__(self, settings: McpUpstreamSettings, *, prefix: str = "", label: str = "mcp_upstream") -> None:
        self.url = settings.url
        self.timeout = settings.timeout
        self.relay = frozenset(settings.relay)
        self.prefix = prefix
        self.label = label
        self._headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        self.tools: dict[str, tuple[types.Tool, str]] = {}
        self.prompts: dict[str, tuple[types.Prompt, str]] = {}
        self.resources: list[types.Resource] = []
        self.templates: list[types.ResourceTemplate] = []
        self.capabilities: types.ServerCapabilities | None = None  # None until first connected
        self.listeners: list[ChangeListener] = []
        self.update_listeners: list[Callable[[str], Awaitable[None]]] = []  # notifications/resources/updated
        self._subscribed: set[str] = set()  # resource URIs subscribed upstream (again after a reconnect)
        self._client: Client | None = None
        self._direct: tuple[DirectCalls, str, str] | None = None  # with the session id and version
        self._dirty: set[str] = set()
        self._suspect = False
        self._linked = False
        self._reachable = True  # until a first connection fails
        self.connect_log_level = logging.INFO

    def __repr__(self) -> str:
        return f"MCPUpstreamSource(label={self.label!r}, url={self.url!r}, prefix={self.prefix!r})"

    @property
    def is_connected(self) -> bool:
        return self._client is not None

    def describe(self) -> str:
        return f"mcp_upstream {self.url}" if self.label == "mcp_upstream" else f"{self.label} (mcp_upstream {self.url})"

    # -- lifespan ---------------------------------------------------------------------------

    async def __aenter__(self) -> MCPUpstreamSource:
        self._wake = anyio.Event()
        self._first = anyio.Event()
        self._link_changed = anyio.Event()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._supervise)
        # Wait for the first connection; briefly if it failed last time (`preflight`, then serving).
        with anyio.move_on_after(FIRST_CONNECT_SECONDS if self._reachable else 2.0):
            await self._first.wait()
        self._reachable = self._client is not None
        if self._client is None:
            log.warning("%s: not connected yet; serving without it and retrying in the background", self.describe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        self._client = None

    async def _supervise(self) -> None:
        delay = BACKOFF_START
        while True:
            self._linked = False
            try:
                await self._connection()
            except Exception as exc:  # noqa: BLE001 - any failure of the link means: reconnect
                log.warning("%s: %s (%s); reconnecting in %.1f s", self.describe(),
                            "connection lost" if self._linked else "cannot connect", _reason(exc),
                            BACKOFF_START if self._linked else delay)
            finally:
                self._direct = None
                self._set_client(None)
                self._first.set()
            if self._linked:
                delay = BACKOFF_START
            await anyio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connection(self) -> None:
        """Connect, fetch every list, then watch the link until it fails (never returns normally)."""
        timeout = httpx2.Timeout(10.0, read=None)  # requests are bounded per call; the GET stream idles
        transport = SessionTransport()
        direct = DirectCalls(self.url, self._headers, self.timeout)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(direct.aclose)
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=self._headers, timeout=timeout, transport=transport))
            client = await stack.enter_async_context(Client(
                streamable_http_client(self.url, http_client=http), mode="legacy", cache=None,
                read_timeout_seconds=self.timeout, message_handler=self._on_message,
                client_info=types.Implementation(name="openapi-mcp", version=__version__),
                **_declared(self.relay)))
            await self._watch(client, transport, direct)

    async def _watch(self, client: Client, transport: SessionTransport, direct: DirectCalls) -> None:
        """Fetch every list, then keep them fresh and the link checked until it fails."""
        self.capabilities = client.server_capabilities
        self._dirty, self._suspect = set(), False
        await self._refresh(client, set(KINDS))
        self._direct = (direct, transport.session_id, client.protocol_version) if transport.session_id else None
        self._set_client(client)
        self._linked = True
        self._first.set()
        for uri in sorted(self._subscribed):  # a new upstream session knows none of them
            try:
                with anyio.fail_after(self.timeout):
                    await client.session.send_request(_subscribe_request(uri), types.EmptyResult)
            except (MCPError, TimeoutError) as exc:
                log.warning("%s: cannot subscribe to %s again after reconnecting: %s", self.describe(), uri, exc)
        log.log(self.connect_log_level, "%s: connected (%d tools, %d resources, %d templates, %d prompts)",
                self.describe(), len(self.tools), len(self.resources), len(self.templates), len(self.prompts))
        while True:
            with anyio.move_on_after(HEARTBEAT_SECONDS):
                await self._wake.wait()
            self._wake = anyio.Event()
            kinds, self._dirty = self._dirty, set()
            if kinds:
                await self._refresh(client, kinds)
            if self._suspect or not kinds:
                self._suspect = False
                with anyio.fail_after(self.timeout):
                    await client.session.send_request(types.PingRequest(), types.EmptyResult)

    def _set_client(self, client: Client | None) -> None:
        if client is not self._client:
            self._client = client
            self._link_changed.set()
            self._link_changed = anyio.Event()

    async def _on_message(self, message: Any) -> None:
        """Upstream notifications and transport faults (called on the client's receive path)."""
        if isinstance(message, types.ResourceUpdatedNotification):
            # Passed on from the source's own task: this is the client's receive path.
            self._group.start_soon(self._tell_updated, str(message.params.uri))
            return
        if isinstance(message, Exception):
            self._suspect = True
        elif type(message) in _CHANGED:
            kind = _CHANGED[type(message)]
            self._dirty.update(("resources", "templates") if kind == "resources" else (kind,))
        else:
            return
        self._wake.set()

    async def _tell_updated(self, uri: str) -> None:
        for listener in list(self.update_listeners):
            try:
                await listener(uri)
            except Exception:  # a listener's bug must not take the link down
                log.exception("%s: a resource-update listener failed", self.describe())

    @property
    def can_subscribe(self) -> bool:
        """Whether the upstream said it takes `resources/subscribe` (False until connected)."""
        resources = self.capabilities.resources if self.capabilities is not None else None
        return bool(resources is not None and resources.subscribe)

    async def subscribe(self, uri: str) -> None:
        """Subscribe to `uri` upstream (and again after every reconnection).

        Raises: as `read_resource`.
        """
        await self._request("resources/subscribe",
                            lambda c: c.session.send_request(_subscribe_request(uri), types.EmptyResult))
        self._subscribed.add(uri)

    async def unsubscribe(self, uri: str) -> None:
        self._subscribed.discard(uri)
        request = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
        await self._request("resources/unsubscribe", lambda c: c.session.send_request(request, types.EmptyResult))

    def _flag(self) -> None:
        """A request failed at the transport: check the link now rather than at the next heartbeat."""
        self._suspect = True
        self._wake.set()

    # -- lists --------------------------------------------------------------------------------

    async def _refresh(self, client: Client, kinds: set[str]) -> None:
        """Fetch the lists named in `kinds` and tell the listeners which ones changed."""
        caps = client.server_capabilities
        changed: set[str] = set()
        if "tools" in kinds:
            listed = await self._pages(client.list_tools, "tools") if caps.tools is not None else []
            tools = {self.prefix + t.name: (_served_tool(t, self.prefix), t.name) for t in listed if _relayable(t)}
            if tools != self.tools:
                self.tools = tools
                changed.add("tools")
        if "prompts" in kinds:
            listed = await self._pages(client.list_prompts, "prompts") if caps.prompts is not None else []
            prompts = {self.prefix + p.name: (p.model_copy(update={"name": self.prefix + p.name}), p.name)
                       for p in listed}
            if prompts != self.prompts:
                self.prompts = prompts
                changed.add("prompts")
        if "resources" in kinds:
            resources = await self._pages(client.list_resources, "resources") if caps.resources is not None else []
            if resources != self.resources:
                self.resources = resources
                changed.add("resources")
        if "templates" in kinds:
            templates = (await self._pages(client.list_resource_templates, "resource_templates")
                         if caps.resources is not None else [])
            if templates != self.templates:
                self.templates = templates
                changed.add("templates")
        if changed:
            for listener in list(self.listeners):
                try:
                    await listener(self, frozenset(changed))
                except Exception:  # a listener's bug must not take the link down
                    log.exception("%s: a list-change listener failed", self.describe())

    async def _pages(self, fetch: Callable[..., Awaitable[Any]], field: str) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            with anyio.fail_after(self.timeout):
                page = await fetch(cursor=cursor, cache_mode="bypass")
            items.extend(getattr(page, field))
            cursor = page.next_cursor
            if cursor is None:
                break
        return items

    # -- requests -----------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                        progress: ProgressRelay | None = None,
                        headers: Mapping[str, str] | None = None,
                        ask: RequestRelay | None = None) -> types.CallToolResult:
        """Call the upstream tool `name` (served name); `headers`: the caller's claim headers.

        Raises:
            UpstreamError: the upstream is not connected, the link failed, or it timed out; or
                claim headers are due and the upstream session cannot carry them (no session id).
            MCPError: the upstream answered with a JSON-RPC error (relayed as it is).
        """
        upstream_name = self.tools[name][1] if name in self.tools else name[len(self.prefix):]

        async def send(client: Client) -> types.CallToolResult:
            direct = self._direct
            if direct is not None and self._client is client:  # the fast way, on the SDK's session
                calls, session_id, version = direct
                return await calls.call_tool(session_id, version, upstream_name, arguments or {}, progress, headers,
                                             ask if self.relay else None)
            if headers:  # fail closed: the SDK client's requests cannot carry per-caller headers
                raise UpstreamError(f"{self.describe()}: the caller's claim headers (auth.claim_to_header) cannot be "
                                    "sent on this upstream session (it has no session id); refusing the call",
                                    method="tools/call", url=self.url)
            return await client.call_tool(upstream_name, dict(arguments or {}), progress_callback=progress)

        return await self._request("tools/call", send)

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        return await self._request("resources/read", lambda c: c.read_resource(uri, cache_mode="bypass"))

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None) -> types.GetPromptResult:
        upstream_name = self.prompts[name][1] if name in self.prompts else name[len(self.prefix):]
        return await self._request("prompts/get", lambda c: c.get_prompt(upstream_name, dict(arguments or {})))

    async def complete(self, ref: types.PromptReference | types.ResourceTemplateReference,
                       argument: types.CompletionArgument,
                       context: types.CompletionContext | None) -> types.CompleteResult:
        if isinstance(ref, types.PromptReference) and ref.name in self.prompts:
            ref = ref.model_copy(update={"name": self.prompts[ref.name][1]})
        return await self._request("completion/complete", lambda c: c.complete(
            ref, {"name": argument.name, "value": argument.value},
            context.arguments if context is not None else None))

    async def _request(self, method: str, send: Callable[[Client], Awaitable[_T]], *, retry: bool = True) -> _T:
        client = self._client
        if client is None:
            raise UpstreamError(f"{self.describe()} is not connected (reconnecting); try again shortly",
                                method=method, url=self.url)
        try:
            with anyio.fail_after(self.timeout + 1):  # the session's own timeout should fire first
                return await send(client)
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise UpstreamError(f"{self.describe()} did not answer {method} within {self.timeout:g} s",
                                    method=method, url=self.url) from exc
            if exc.code not in _TRANSPORT_CODES or not _from_transport(exc):
                raise
            self._flag()
            if retry and exc.error.message in _SESSION_GONE:
                # The upstream restarted and refused our old session before doing anything: once
                # reconnected, sending the request again cannot do it twice.
                with anyio.move_on_after(min(self.timeout, RETRY_WAIT_SECONDS)):
                    while self._client is None or self._client is client:
                        await self._link_changed.wait()
                if self._client is not None and self._client is not client:
                    return await self._request(method, send, retry=False)
            raise UpstreamError(f"{self.describe()}: {method} failed: {exc.error.message}; reconnecting",
                                method=method, url=self.url) from exc
        except TimeoutError as exc:
            self._flag()
            raise UpstreamError(f"{self.describe()} did not answer {method} within {self.timeout:g} s",
                                method=method, url=self.url) from exc
        except (RuntimeError, httpx2.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._flag()
            raise UpstreamError(f"{self.describe()}: {method} failed ({_reason(exc)}); reconnecting",
                                method=method, url=self.url) from exc


def _relayable(tool: types.Tool) -> bool:
    """Tools that only run as tasks cannot be called through this server (it does not relay tasks)."""
    execution = tool.execution
    return execution is None or execution.task_support != "required"


def _served_tool(tool: types.Tool, prefix: str) -> types.Tool:
    # `execution` is dropped: this server does not offer task-augmented calls.
    update: dict[str, Any] = {"execution": None}
    if prefix:
        update["name"] = prefix + tool.name
    return tool.model_copy(update=update)


def _from_transport(exc: MCPError) -> bool:
    """The SDK's own stand-ins for a failed exchange (as opposed to an error the upstream sent)."""
    message = exc.error.message
    return message in ("Connection closed", "Session terminated", "Server returned an error response") \
        or message.startswith(("SSE stream", "Bad Request: No valid session"))


def _reason(exc: BaseException) -> str:
    """One short line for a log: the innermost cause of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _subscribe_request(uri: str) -> types.SubscribeRequest:
    return types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))


def _declared(relay: frozenset[str]) -> dict[str, Any]:
    """Client callbacks that make the SDK declare the relayed capabilities to the upstream.

    Requests that arrive during a direct `tools/call` are passed to the caller (DirectCalls);
    these callbacks only see the rest (outside a call, or on the SDK's own path), which have no
    caller to go to.
    """

    async def unrouted(context: Any, params: Any = None) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST,
                               message="openapi-mcp passes this request on only during a tools/call")

    names = {"sampling": "sampling_callback", "elicitation": "elicitation_callback", "roots": "list_roots_callback"}
    return {names[kind]: unrouted for kind in relay}
