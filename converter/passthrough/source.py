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
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCNotification

from converter.config import McpUpstreamSettings
from converter.errors import UpstreamError
from converter.passthrough.link import Link, declared_callbacks, is_link_failure, short_reason
from converter.passthrough.transport import DirectCalls, LinkError, SessionGoneError, SessionTransport, tapped
from converter.passthrough.transport import NotificationRelay as NotificationRelay
from converter.passthrough.transport import ProgressRelay as ProgressRelay
from converter.passthrough.transport import RequestRelay as RequestRelay
from converter.version import __version__

log = logging.getLogger("openapi_mcp")

RELATED_TASK: Final = "io.modelcontextprotocol/related-task"  # `_meta` key tying a message to its task

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
ChangeListener = Callable[["MCPUpstreamSource", frozenset[str]], Awaitable[None]]
TaskStatusListener = Callable[["MCPUpstreamSource", dict[str, Any]], Awaitable[None]]


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
        self.task_listeners: list[TaskStatusListener] = []  # notifications/tasks/status (2025-11-25)
        self._subscribed: set[str] = set()  # resource URIs subscribed upstream (again after a reconnect)
        self._client: Client | None = None
        self._link: Link | None = None  # set with _client: the direct calls on its session
        self.task_support: dict[str, str] = {}  # served tool name -> the upstream's execution.taskSupport
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
        self._client = self._link = None

    async def _supervise(self) -> None:
        delay = BACKOFF_START
        while True:
            self._linked = False
            try:
                await self._connection()
            except Exception as exc:  # any failure of the link means: reconnect
                what = "connection lost" if self._linked else "cannot connect"
                wait = BACKOFF_START if self._linked else delay
                if is_link_failure(exc):
                    log.warning("%s: %s (%s); reconnecting in %.1f s", self.describe(), what, short_reason(exc), wait)
                else:  # not the network: a bug of ours, which reconnecting will not fix; show where it is
                    log.error("%s: %s through an unexpected error (%s); reconnecting in %.1f s", self.describe(),
                              what, short_reason(exc), wait, exc_info=exc)
            finally:
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
                tapped(streamable_http_client(self.url, http_client=http), self._look), mode="legacy", cache=None,
                read_timeout_seconds=self.timeout, message_handler=self._on_message,
                client_info=types.Implementation(name="openapi-mcp", version=__version__),
                **declared_callbacks(self.relay)))
            await self._watch(client, transport, direct)

    async def _watch(self, client: Client, transport: SessionTransport, direct: DirectCalls) -> None:
        """Fetch every list, then keep them fresh and the link checked until it fails."""
        self.capabilities = client.server_capabilities
        self._dirty, self._suspect = set(), False
        await self._refresh(client, set(KINDS))
        self._set_client(client, Link(direct, transport.session_id, client.protocol_version))
        self._linked = True
        self._first.set()
        for uri in sorted(self._subscribed):  # a new upstream session knows none of them
            try:
                with anyio.fail_after(self.timeout):
                    await direct.request(transport.session_id, client.protocol_version, "resources/subscribe",
                                         {"uri": uri})
            except (MCPError, LinkError, TimeoutError) as exc:
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

    def _set_client(self, client: Client | None, link: Link | None = None) -> None:
        if client is not self._client:
            self._client, self._link = client, link
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

    def _look(self, item: Any) -> None:
        """A message the SDK client read, before it drops what its protocol version does not define."""
        message = item.message if isinstance(item, SessionMessage) else None
        if isinstance(message, JSONRPCNotification) and message.method == "notifications/tasks/status" \
                and isinstance(message.params, dict) and self.task_listeners:
            self._group.start_soon(self._tell_task_status, dict(message.params))

    async def _tell_task_status(self, params: dict[str, Any]) -> None:
        for listener in list(self.task_listeners):
            try:
                await listener(self, params)
            except Exception:  # a listener's bug must not take the link down
                log.exception("%s: a task-status listener failed", self.describe())

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
        await self._request("resources/subscribe", lambda link: link.request("resources/subscribe", {"uri": uri}))
        self._subscribed.add(uri)

    async def unsubscribe(self, uri: str) -> None:
        self._subscribed.discard(uri)
        await self._request("resources/unsubscribe", lambda link: link.request("resources/unsubscribe", {"uri": uri}))

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
            tools = {self.prefix + t.name: (_served_tool(t, self.prefix), t.name) for t in listed}
            self.task_support = {self.prefix + t.name: t.execution.task_support for t in listed
                                 if t.execution is not None and t.execution.task_support is not None}
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
                        ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None) -> types.CallToolResult:
        """Call the upstream tool `name` (served name); `headers`: the caller's claim headers.

        A tool the upstream runs only as a task (`execution.taskSupport: required`) is run as one
        and its result awaited here (`tasks/result` blocks until the task ends), so clients that
        do not use tasks can call it too; the wait is bounded by the configured timeout.

        Raises:
            UpstreamError: the upstream is not connected, the link failed, or it timed out.
            MCPError: the upstream answered with a JSON-RPC error (relayed as it is).
        """
        upstream_name = self.upstream_name(name)
        relay = ask if self.relay else None
        if self.task_support.get(name) == "required":
            async def bridged(link: Link) -> dict[str, Any]:
                created = await link.request("tools/call", {"name": upstream_name, "arguments": dict(arguments or {}),
                                                            "task": {}}, progress=progress, headers=headers)
                task_id = types.CreateTaskResult.model_validate(created, by_name=False).task.task_id
                return await link.request("tasks/result", {"taskId": task_id}, headers=headers, ask=relay,
                                          notify=notify)

            result = await self._request("tools/call", bridged)
            return types.CallToolResult.model_validate(_without_task_meta(result), by_name=False)
        return await self._request("tools/call", lambda link: link.calls.call_tool(
            link.session_id, link.version, upstream_name, arguments or {}, progress, headers, relay, notify))

    def upstream_name(self, name: str) -> str:
        """The upstream's name of the tool served as `name`."""
        return self.tools[name][1] if name in self.tools else name[len(self.prefix):]

    async def send(self, method: str, params: dict[str, Any], *, headers: Mapping[str, str] | None = None,
                   progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                   notify: NotificationRelay | None = None) -> dict[str, Any]:
        """Any request on the upstream session (`tasks/*`, a task-augmented `tools/call`): the raw result.

        Raises: as `call_tool`.
        """
        return await self._request(method, lambda link: link.request(
            method, params, headers=headers, progress=progress, ask=ask if self.relay else None, notify=notify))

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        result = await self._request("resources/read", lambda link: link.request("resources/read", {"uri": uri}))
        return types.ReadResourceResult.model_validate(result, by_name=False)

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None) -> types.GetPromptResult:
        upstream_name = self.prompts[name][1] if name in self.prompts else name[len(self.prefix):]
        params = {"name": upstream_name, "arguments": dict(arguments or {})}
        result = await self._request("prompts/get", lambda link: link.request("prompts/get", params))
        return types.GetPromptResult.model_validate(result, by_name=False)

    async def complete(self, ref: types.PromptReference | types.ResourceTemplateReference,
                       argument: types.CompletionArgument,
                       context: types.CompletionContext | None) -> types.CompleteResult:
        if isinstance(ref, types.PromptReference) and ref.name in self.prompts:
            ref = ref.model_copy(update={"name": self.prompts[ref.name][1]})
        params: dict[str, Any] = {"ref": ref.model_dump(by_alias=True, mode="json", exclude_none=True),
                                  "argument": {"name": argument.name, "value": argument.value}}
        if context is not None:
            params["context"] = context.model_dump(by_alias=True, mode="json", exclude_none=True)
        result = await self._request("completion/complete", lambda link: link.request("completion/complete", params))
        return types.CompleteResult.model_validate(result, by_name=False)

    async def _request(self, method: str, send: Callable[[Link], Awaitable[_T]], *, retry: bool = True) -> _T:
        link = self._link
        if link is None:
            raise UpstreamError(f"{self.describe()} is not connected (reconnecting); try again shortly",
                                method=method, url=self.url)
        try:
            with anyio.fail_after(self.timeout + 1):  # the HTTP client's own timeout should fire first
                return await send(link)
        except SessionGoneError as exc:
            self._flag()
            if retry:
                # The upstream restarted and refused our old session before doing anything: once
                # reconnected, sending the request again cannot do it twice.
                with anyio.move_on_after(min(self.timeout, RETRY_WAIT_SECONDS)):
                    while self._link is None or self._link is link:
                        await self._link_changed.wait()
                if self._link is not None and self._link is not link:
                    return await self._request(method, send, retry=False)
            raise UpstreamError(f"{self.describe()}: {method} failed: the upstream no longer knows the session "
                                "(it restarted); reconnecting", method=method, url=self.url) from exc
        except LinkError as exc:
            self._flag()
            raise UpstreamError(f"{self.describe()}: {method} failed ({short_reason(exc)}); reconnecting",
                                method=method, url=self.url) from exc
        except TimeoutError as exc:
            self._flag()
            raise UpstreamError(f"{self.describe()} did not answer {method} within {self.timeout:g} s",
                                method=method, url=self.url) from exc


def _served_tool(tool: types.Tool, prefix: str) -> types.Tool:
    # A tool the upstream runs only as a task is served as `optional`: this server runs a plain call
    # as a task upstream and waits for its result (MCPUpstreamSource.call_tool).
    update: dict[str, Any] = {}
    if tool.execution is not None and tool.execution.task_support == "required":
        update["execution"] = tool.execution.model_copy(update={"task_support": "optional"})
    if prefix:
        update["name"] = prefix + tool.name
    return tool.model_copy(update=update) if update else tool


def _without_task_meta(result: dict[str, Any]) -> dict[str, Any]:
    """A `tasks/result` answer as the plain call's result: without the related-task `_meta` key."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and RELATED_TASK in meta:
        rest = {k: v for k, v in meta.items() if k != RELATED_TASK}
        return {**{k: v for k, v in result.items() if k != "_meta"}, **({"_meta": rest} if rest else {})}
    return result


