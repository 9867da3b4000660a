"""MCP handlers for what MCP sources serve: resources, prompts, completions, tasks, list changes,
and the relays that pass an upstream's progress, log messages and requests on to the calling client."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import mcp.types as types
from mcp.server import NotificationOptions
from mcp.server.connection import allowed_log_levels
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from pydantic import ValidationError

if TYPE_CHECKING:
    from mcp.server import Server, ServerRequestContext


from converter.passthrough.log_levels import LEVELS, LogLevels
from converter.passthrough.subscriptions import ResourceSubscriptions
from converter.passthrough.tasks import CAPABILITY, TaskRelay, ToolRoutes
from converter.passthrough.view import NOTIFY_SECONDS, Passthrough

log = logging.getLogger("openapi_mcp")


# A changed list (converter.passthrough.source's kinds): the notification of 2025-era sessions and the event of
# 2026-07-28 listen streams; resources and templates share both.
_LIST_CHANGED: Final[dict[str, tuple[str, type[ToolsListChanged | PromptsListChanged | ResourcesListChanged]]]] = {
    "tools": ("notifications/tools/list_changed", ToolsListChanged),
    "prompts": ("notifications/prompts/list_changed", PromptsListChanged),
    "resources": ("notifications/resources/list_changed", ResourcesListChanged),
    "templates": ("notifications/resources/list_changed", ResourcesListChanged),
}


class Downstream:
    """Passes list changes on to every connected client, in the way its protocol version has.

    Up to 2025-11-25 a session has a standalone stream: this SDK middleware remembers each
    connection and sends it `notifications/*/list_changed`. From 2026-07-28 a client opens a
    `subscriptions/listen` stream instead; the change is published on the SDK's subscription bus
    and its listen handler delivers it to the streams that asked for that kind. Either way
    every client is told of every change: it then lists again and sees only what the access
    rules show it.
    """

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        # The SDK has no public handle on a session's connection; its standalone stream is the
        # only way to reach the client outside a request.
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None:
            self._connections.add(connection)
        return await call_next(ctx)

    async def notify(self, kinds: frozenset[str]) -> None:
        changes = dict.fromkeys(_LIST_CHANGED[kind] for kind in kinds if kind in _LIST_CHANGED)
        for connection in list(self._connections):
            for method, _ in changes:
                with anyio.move_on_after(NOTIFY_SECONDS):
                    await connection.notify(method, None)
        for _, event in changes:
            await self.bus.publish(event())


def install_downstream(server: Server[Any], listeners: list[Callable[[frozenset[str]], Awaitable[None]]],
                       stop_streams: list[Callable[[], None]]) -> Downstream:
    """Pass every list change the catalog announces on to the connected clients (`listeners`:
    told of each change; `stop_streams`: called first on shutdown), and serve `subscriptions/listen`.
    The tool list can always change (a reload), so `tools.listChanged` is always advertised."""
    downstream = Downstream()
    server.middleware.append(downstream)
    server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, downstream.listen)
    listeners.append(downstream.notify)
    stop_streams.append(downstream.listen.close)
    _advertise(server, NotificationOptions(tools_changed=True), {})
    return downstream


def register_handlers(server: Server[Any], passthrough: Passthrough, routes: ToolRoutes, downstream: Downstream,
                      principal_of: Any, current: Callable[[], Passthrough | None] | None = None,
                      replicated: bool = False, log_levels: LogLevels | None = None) -> None:
    """Add the resources, prompts, completion and task handlers for the features some MCP source
    provides and advertise `listChanged` for the lists that can change (`routes`: where a proxied
    tool is served, checked; `downstream`: from `install_downstream`; `current`: the passthrough
    served now, when a reload may replace `passthrough`: its access rules may have changed, its
    MCP sources stay; `replicated`: sessions are sealed and may move between processes, so resource
    subscriptions and tasks, which live in the process that took them, are neither served nor
    advertised: a client falls back to reading again and to plain calls; `log_levels`: where
    `logging/setLevel` keeps each session's level, this process's memory by default)."""
    if not passthrough.sources:
        return
    log_levels = log_levels or LogLevels()
    view: Callable[[], Passthrough] = (lambda: current() or passthrough) if current is not None \
        else (lambda: passthrough)
    if passthrough.provides("resources") and not replicated:
        subscriptions = ResourceSubscriptions(passthrough, downstream.bus, downstream.listen, principal_of,
                                              current=view)
        server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscriptions.subscribe)
        server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, subscriptions.unsubscribe)
        server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams,
                                   subscriptions.listen)
    options = NotificationOptions(tools_changed=True, prompts_changed=passthrough.provides("prompts"),
                                  resources_changed=passthrough.provides("resources"))
    extra: dict[str, Any] = {}
    if passthrough.provides("tasks") and not replicated:
        tasks = TaskRelay(routes, passthrough.sources, principal_of, request_relay=request_relay,
                          notification_relay=functools.partial(notification_relay, log_levels=log_levels),
                          progress_relay=progress_relay)
        server.middleware.append(tasks.middleware)
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, tasks.get)
        server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, tasks.result)
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, tasks.cancel)
        server.add_request_handler("tasks/list", types.PaginatedRequestParams, tasks.list)
        extra["tasks"] = CAPABILITY  # the SDK derives no tasks capability from handlers
    if passthrough.provides("logging"):  # upstream log messages are passed on during a request
        async def set_level(ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
            await log_levels.choose(ctx, params.level)
            return types.EmptyResult()

        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    _advertise(server, options, extra)

    if passthrough.provides("resources"):
        async def list_resources(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourcesResult:
            return types.ListResourcesResult(resources=await view().list_resources(principal_of(ctx)))

        async def list_templates(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourceTemplatesResult:
            templates = await view().list_templates(principal_of(ctx))
            return types.ListResourceTemplatesResult(resource_templates=templates)

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
            return await view().read_resource(str(params.uri), principal_of(ctx))

        server.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
        server.add_request_handler("resources/templates/list", types.PaginatedRequestParams, list_templates)
        server.add_request_handler("resources/read", types.ReadResourceRequestParams, read_resource)

    if passthrough.provides("prompts"):
        async def list_prompts(ctx: Any, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
            return types.ListPromptsResult(prompts=await view().list_prompts(principal_of(ctx)))

        async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
            return await view().get_prompt(params.name, params.arguments, principal_of(ctx))

        server.add_request_handler("prompts/list", types.PaginatedRequestParams, list_prompts)
        server.add_request_handler("prompts/get", types.GetPromptRequestParams, get_prompt)

    if passthrough.provides("completions"):
        async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
            return await view().complete(params, principal_of(ctx))

        server.add_request_handler("completion/complete", types.CompleteRequestParams, complete)


def _advertise(server: Server[Any], options: NotificationOptions, extra: dict[str, Any]) -> None:
    # The SDK takes the listChanged flags from create_initialization_options' argument only.
    create = getattr(server.create_initialization_options, "_openapi_mcp_create", server.create_initialization_options)
    advertised = functools.partial(_with_options, create, options, extra)
    advertised._openapi_mcp_create = create  # type: ignore[attr-defined]
    server.create_initialization_options = advertised  # type: ignore[method-assign]


def _with_options(create: Any, options: NotificationOptions, extra: dict[str, Any],
                  notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any) -> Any:
    created = create(notification_options or options, *args, **kwargs)
    if extra:
        created.capabilities = created.capabilities.model_copy(update=extra)
    return created


def notification_relay(ctx: ServerRequestContext[Any], log_levels: LogLevels | None = None) -> Any:
    """A callback passing the log messages (`notifications/message`) an upstream sends on a request's
    stream to this request's client: at the levels its `logging/setLevel` (2025 era, kept in
    `log_levels`, read at the call's first log message) or its request's log-level `_meta`
    (2026-07-28) asked for, on this request's own stream."""
    levels = allowed_log_levels(ctx.protocol_version, ctx.meta)
    if not levels:
        return None
    narrowed: frozenset[str] | None = None

    async def relay(method: str, params: dict[str, Any]) -> None:
        nonlocal narrowed
        if method != "notifications/message":
            return
        try:
            note = types.LoggingMessageNotificationParams.model_validate(params, by_name=False)
        except ValidationError:
            return  # a malformed log line is not worth failing the call
        if narrowed is None:
            chosen = await log_levels.chosen(ctx) if log_levels is not None else None
            narrowed = levels if chosen is None else levels & frozenset(LEVELS[LEVELS.index(chosen):])
        if note.level in narrowed:
            await ctx.session.send_notification(types.LoggingMessageNotification(params=note),
                                                related_request_id=ctx.request_id)

    return relay


def progress_relay(ctx: ServerRequestContext[Any]) -> Any:
    """A callback passing an upstream's progress to this request's client, if it asked for progress."""
    meta = (ctx.params or {}).get("_meta")
    token = meta.get("progressToken") if isinstance(meta, Mapping) else None
    if token is None or isinstance(token, bool):
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.report_progress(progress, total, message)

    return relay


# What an upstream may ask of the client during a call: request and result types, and the
# capability the client must have declared.
_CLIENT_REQUESTS: Final[dict[str, tuple[Any, Any, types.ClientCapabilities]]] = {
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageResult,
                               types.ClientCapabilities(sampling=types.SamplingCapability())),
    "elicitation/create": (types.ElicitRequest, types.ElicitResult,
                           types.ClientCapabilities(elicitation=types.ElicitationCapability())),
    "roots/list": (types.ListRootsRequest, types.ListRootsResult,
                   types.ClientCapabilities(roots=types.RootsCapability())),
}


def request_relay(ctx: ServerRequestContext[Any]) -> Any:
    """A callback passing a request an upstream made during this tool call to this call's client.

    Raises (from the callback): MCPError for a method not relayed, a client without that
    capability, or the client's own error; the upstream gets it as its answer.
    """

    async def ask(method: str, params: dict[str, Any]) -> dict[str, Any]:
        known = _CLIENT_REQUESTS.get(method)
        if known is None:
            raise MCPError(types.METHOD_NOT_FOUND, "Method not found")
        request_type, result_type, capability = known
        if method == "sampling/createMessage" and params.get("tools"):
            result_type = types.CreateMessageResultWithTools
        if not ctx.session.check_client_capability(capability):
            raise MCPError(types.METHOD_NOT_FOUND, f"the client does not support {method}")
        try:
            request = request_type.model_validate({"method": method, **({"params": params} if params else {})})
        except ValidationError as exc:
            raise MCPError(types.INVALID_PARAMS, f"invalid {method} request: {exc.errors()[0]['msg']}") from None
        try:
            result = await ctx.session.send_request(request, result_type,
                                                    metadata=ServerMessageMetadata(related_request_id=ctx.request_id))
        except MCPError:
            raise
        except Exception as exc:  # noqa: BLE001 - no back-channel (a 2026-07-28 client), a bad answer, a dropped stream
            raise MCPError(types.INTERNAL_ERROR, f"the client could not be asked ({type(exc).__name__})") from None
        answer: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return answer

    return ask
