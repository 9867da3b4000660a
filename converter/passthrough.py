"""Resources, resource templates, prompts and completions of the MCP sources, behind the access rules.

`Passthrough` merges what the upstream MCP servers list (prompt names carry their source's
prefix; resource URIs are never renamed) and answers the MCP requests for them: lists are
filtered by the `acl:` rules (features `resources` and `prompts`), and reading, getting or
completing something hidden answers exactly like something that does not exist (`-32602`,
SEP-2164's code for an unknown resource). `register_handlers` adds the handlers to the SDK
server for the features some source provides; `Downstream` remembers the connected clients so
that an upstream `list_changed` can be passed on to them.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import mcp.types as types
from mcp.server import NotificationOptions
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

from converter.auth.principal import Principal
from converter.errors import ConfigError, UpstreamError
from converter.policy import Policy
from converter.proxy import MCPUpstreamSource
from converter.telemetry.record import current_record

if TYPE_CHECKING:
    from mcp.server import Server, ServerRequestContext

    from converter.catalog import Catalog

log = logging.getLogger("openapi_mcp")

NOTIFY_SECONDS: Final = 2.0  # per downstream connection; a stuck client must not stall the others
_EXPANSIONS: Final = {"": "[^/?#]*", "+": ".*", "#": "(#.*)?", "?": r"(\?.*)?", "&": "(&.*)?", ".": r"(\..*)?",
                      "/": "(/.*)?", ";": "(;.*)?"}
_EXPRESSION = re.compile(r"\{([+#./;?&]?)[^}]*\}")


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can expand to (loosely: any value per variable)."""
    parts, pos = [], 0
    for match in _EXPRESSION.finditer(template):
        parts += [re.escape(template[pos:match.start()]), _EXPANSIONS[match.group(1)]]
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


class Passthrough:
    """The merged resources, templates and prompts of the MCP sources, and the requests on them."""

    def __init__(self, sources: Sequence[MCPUpstreamSource], policy: Policy) -> None:
        self.sources = list(sources)
        self.policy = policy
        self.prompts: dict[str, MCPUpstreamSource] = {}
        self.resources: list[tuple[types.Resource, MCPUpstreamSource]] = []
        self.templates: list[tuple[types.ResourceTemplate, MCPUpstreamSource, re.Pattern[str]]] = []
        self._uris: dict[str, MCPUpstreamSource] = {}

    def provides(self, feature: str) -> bool:
        """Whether some source serves `feature` (resources, prompts, completions); unknown counts as yes."""
        return any(s.capabilities is None or getattr(s.capabilities, feature) is not None for s in self.sources)

    def merge(self, *, strict: bool) -> None:
        """Rebuild the merged view from the sources' current lists (first source wins a repeated name)."""
        prompts: dict[str, MCPUpstreamSource] = {}
        uris: dict[str, MCPUpstreamSource] = {}
        resources, templates, clashes = [], [], []
        for source in self.sources:
            for name in source.prompts:
                if name in prompts:
                    message = (f"prompt name {name!r} is served by two sources: {prompts[name].describe()} and "
                               f"{source.describe()}; give one of them a `prefix:`")
                    if strict:
                        raise ConfigError(message, key="sources")
                    clashes.append(message)
                    continue
                prompts[name] = source
            for resource in source.resources:
                if resource.uri not in uris:
                    uris[resource.uri] = source
                    resources.append((resource, source))
            templates += [(t, source, template_regex(t.uri_template)) for t in source.templates]
        if clashes:
            more = f" (and {len(clashes) - 1} more such names)" if len(clashes) > 1 else ""
            log.error("%s%s; only the first source's prompt is served", clashes[0], more)
        self.prompts, self._uris, self.resources, self.templates = prompts, uris, resources, templates

    def _allows(self, feature: str, operation: str, name: str, principal: Principal) -> bool:
        acl = self.policy.acl
        return acl is None or acl.decide(feature, operation, name, principal)

    # -- lists --------------------------------------------------------------------------------

    def list_resources(self, principal: Principal) -> list[types.Resource]:
        return [r for r, _ in self.resources if self._allows("resources", "list", r.uri, principal)]

    def list_templates(self, principal: Principal) -> list[types.ResourceTemplate]:
        return [t for t, _, _ in self.templates if self._allows("resources", "templates", t.uri_template, principal)]

    def list_prompts(self, principal: Principal) -> list[types.Prompt]:
        return [source.prompts[name][0] for name, source in self.prompts.items()
                if self._allows("prompts", "list", name, principal)]

    # -- requests -----------------------------------------------------------------------------

    def source_of(self, uri: str, principal: Principal, operation: str) -> MCPUpstreamSource:
        """The source serving `uri`, if the access rules let `principal` do `operation` on it.

        Only what is listed, or matches a listed template, counts: anything else (hidden or not)
        gets the same answer without asking an upstream, whose own words could tell them apart.

        Raises:
            MCPError: -32602 "Unknown resource" for an unknown or hidden URI.
        """
        source = self._uris.get(uri) or next((s for _, s, rx in self.templates if rx.fullmatch(uri)), None)
        if source is None or not self._allows("resources", operation, uri, principal):
            _denied(source is not None)
            raise _unknown_resource(uri)
        return source

    async def read_resource(self, uri: str, principal: Principal) -> types.ReadResourceResult:
        """Raises: MCPError -32602 for an unknown or hidden resource, or the upstream's error."""
        source = self.source_of(uri, principal, "read")
        try:
            return await relay(source, "resources/read", source.read_resource(uri))
        except MCPError as exc:
            if exc.code == types.INVALID_PARAMS:  # the upstream's "not found" (SEP-2164), in our words
                raise _unknown_resource(uri) from exc
            raise

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None,
                         principal: Principal) -> types.GetPromptResult:
        """Raises: MCPError -32602 for an unknown or hidden prompt, or the upstream's error."""
        source = self.prompts.get(name)
        if source is None or not self._allows("prompts", "get", name, principal):
            _denied(source is not None)
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {name!r}")
        return await relay(source, "prompts/get", source.get_prompt(name, arguments))

    async def complete(self, params: types.CompleteRequestParams, principal: Principal) -> types.CompleteResult:
        """Completions follow visibility: a prompt that cannot be got, or a template that cannot be
        listed, has none (answered like an unknown one)."""
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            source = self.prompts.get(ref.name)
            if source is None or not self._allows("prompts", "get", ref.name, principal):
                _denied(source is not None)
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {ref.name!r}")
        else:
            source = next((s for t, s, _ in self.templates if t.uri_template == ref.uri), None)
            if source is None or not self._allows("resources", "templates", ref.uri, principal):
                _denied(source is not None)
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource template: {ref.uri!r}")
        return await relay(source, "completion/complete", source.complete(ref, params.argument, params.context))


def _unknown_resource(uri: str) -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri!r}")


def _denied(hidden: bool) -> None:
    record = current_record.get()
    if record is not None and hidden:
        record.acl_denied = True


_T = TypeVar("_T")


async def relay(source: MCPUpstreamSource, method: str, request: Awaitable[_T]) -> _T:
    """Await an upstream request; its failure to answer becomes an internal error that says why."""
    record = current_record.get()
    started = time.perf_counter()
    try:
        return await request
    except UpstreamError as exc:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from exc
    finally:
        if record is not None:
            record.upstream_method, record.upstream_url = method, source.url
            record.upstream_ms = round((time.perf_counter() - started) * 1000, 3)


# A changed list (converter.proxy's kinds): the notification of 2025-era sessions and the event of
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


def register_handlers(server: Server[Any], catalog: Catalog, principal_of: Any) -> None:
    """Add the resources, prompts and completion handlers for the features some MCP source provides,
    advertise `listChanged` for the lists that can change, and pass list changes on to clients."""
    passthrough: Passthrough | None = getattr(catalog, "passthrough", None)  # a DynamicCatalog has none
    if passthrough is None or not passthrough.sources:
        return
    downstream = Downstream()
    server.middleware.append(downstream)
    listen: Any = downstream.listen
    if passthrough.provides("resources"):
        from converter.subscriptions import ResourceSubscriptions  # it builds on this module

        subscriptions = ResourceSubscriptions(passthrough, downstream.bus, downstream.listen, principal_of)
        server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscriptions.subscribe)
        server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, subscriptions.unsubscribe)
        listen = subscriptions.listen
    server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, listen)
    catalog.listeners.append(downstream.notify)
    catalog.stop_streams.append(downstream.listen.close)
    options = NotificationOptions(tools_changed=True, prompts_changed=passthrough.provides("prompts"),
                                  resources_changed=passthrough.provides("resources"))
    # The SDK takes the listChanged flags from create_initialization_options' argument only.
    server.create_initialization_options = functools.partial(  # type: ignore[method-assign]
        _with_options, server.create_initialization_options, options)

    if passthrough.provides("resources"):
        async def list_resources(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourcesResult:
            return types.ListResourcesResult(resources=passthrough.list_resources(principal_of(ctx)))

        async def list_templates(ctx: Any, params: types.PaginatedRequestParams) -> types.ListResourceTemplatesResult:
            return types.ListResourceTemplatesResult(resource_templates=passthrough.list_templates(principal_of(ctx)))

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
            return await passthrough.read_resource(str(params.uri), principal_of(ctx))

        server.add_request_handler("resources/list", types.PaginatedRequestParams, list_resources)
        server.add_request_handler("resources/templates/list", types.PaginatedRequestParams, list_templates)
        server.add_request_handler("resources/read", types.ReadResourceRequestParams, read_resource)

    if passthrough.provides("prompts"):
        async def list_prompts(ctx: Any, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
            return types.ListPromptsResult(prompts=passthrough.list_prompts(principal_of(ctx)))

        async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
            return await passthrough.get_prompt(params.name, params.arguments, principal_of(ctx))

        server.add_request_handler("prompts/list", types.PaginatedRequestParams, list_prompts)
        server.add_request_handler("prompts/get", types.GetPromptRequestParams, get_prompt)

    if passthrough.provides("completions"):
        async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
            return await passthrough.complete(params, principal_of(ctx))

        server.add_request_handler("completion/complete", types.CompleteRequestParams, complete)


def _with_options(create: Any, options: NotificationOptions, notification_options: NotificationOptions | None = None,
                  *args: Any, **kwargs: Any) -> Any:
    return create(notification_options or options, *args, **kwargs)


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
