"""Resource subscriptions through the gateway, for both protocol eras.

A client asks to hear when a resource changes: with `resources/subscribe` up to 2025-11-25
(the update then comes as `notifications/resources/updated` on its session's stream), or by
naming the URI in a 2026-07-28 `subscriptions/listen` stream. Either way the gateway subscribes
once, upstream, on its shared session with the MCP server that serves the URI, for as long as
some client wants that URI, and passes each update on to the clients that asked.

The access rules decide as for reading: `resources` / `subscribe` on the URI. A URI the caller
may not subscribe to answers like an unknown resource (`resources/subscribe`), or is left out of
the listen stream's acknowledged filter, so nothing is ever sent for it.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import mcp.types as types
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError

from converter.passthrough.view import NOTIFY_SECONDS, Passthrough, relay

if TYPE_CHECKING:
    from converter.passthrough.source import MCPUpstreamSource

log = logging.getLogger("openapi_mcp")

RELEASE_SECONDS = 5.0  # for the upstream unsubscribes when a listen stream ends (even when cancelled)


class ResourceSubscriptions:
    """Who wants which URI, the upstream subscriptions that follows from it, and the relay."""

    def __init__(self, passthrough: Passthrough, bus: SubscriptionBus, listen: ListenHandler,
                 principal_of: Any, current: Callable[[], Passthrough] | None = None) -> None:
        """`current`: the passthrough served now (a reload replaces it; its sources stay)."""
        self._current = current or (lambda: passthrough)
        self._bus = bus
        self._listen = listen
        self._principal_of = principal_of
        self._sessions: dict[str, weakref.WeakSet[Any]] = {}  # URI -> connections that subscribed
        self._streams: Counter[str] = Counter()  # URI -> open listen streams that name it
        self._upstream: dict[str, MCPUpstreamSource] = {}  # URIs subscribed upstream, with their source
        for source in passthrough.sources:
            source.update_listeners.append(self.updated)

    # -- handlers -------------------------------------------------------------------------------

    async def subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """`resources/subscribe` (2025-era sessions)."""
        uri = str(params.uri)
        connection = getattr(ctx.session, "_connection", None)
        if connection is None:
            raise MCPError(code=types.INVALID_REQUEST, message="resources/subscribe needs a session to send updates on")
        source = await self._source(uri, self._principal_of(ctx))
        await self._want(uri, source)
        self._sessions.setdefault(uri, weakref.WeakSet()).add(connection)
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None and uri in self._sessions:
            self._sessions[uri].discard(connection)
        await self._release()
        return types.EmptyResult()

    async def listen(self, ctx: Any, params: types.SubscriptionsListenRequestParams) -> types.SubscriptionsListenResult:
        """`subscriptions/listen` (2026-07-28): the SDK's handler, with the URIs checked and subscribed."""
        wanted = params.notifications.resource_subscriptions or []
        principal = self._principal_of(ctx)
        honored: list[str] = []
        for uri in dict.fromkeys(wanted):
            try:
                source = await self._source(uri, principal)
                await self._want(uri, source)
            except MCPError as exc:
                log.debug("listen: %s left out: %s", uri, exc.message)
                continue
            self._streams[uri] += 1
            honored.append(uri)
        notifications = params.notifications.model_copy(update={"resource_subscriptions": honored or None})
        try:
            return await self._listen(ctx, params.model_copy(update={"notifications": notifications}))
        finally:
            for uri in honored:
                self._streams[uri] -= 1
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
                await self._release()

    # -- from the upstreams ----------------------------------------------------------------------

    async def updated(self, uri: str) -> None:
        """An upstream says `uri` changed: tell every client that asked."""
        for connection in list(self._sessions.get(uri, ())):
            with anyio.move_on_after(NOTIFY_SECONDS):
                await connection.notify("notifications/resources/updated", {"uri": uri})
        await self._bus.publish(ResourceUpdated(uri=uri))
        await self._release()  # sessions that ended since are gone from the weak sets

    # -- bookkeeping -----------------------------------------------------------------------------

    async def _source(self, uri: str, principal: Any) -> MCPUpstreamSource:
        """The source that serves `uri`, if the caller may subscribe to it there.

        Raises:
            MCPError: -32602 for an unknown or hidden URI, or one whose server takes no subscriptions.
        """
        source = await self._current().source_of(uri, principal, "subscribe")
        if not source.can_subscribe:
            raise MCPError(code=types.INVALID_PARAMS,
                           message=f"Updates of {uri!r} are not available: its server does not support subscriptions")
        return source

    async def _want(self, uri: str, source: MCPUpstreamSource) -> None:
        if uri not in self._upstream:
            await relay(source, "resources/subscribe", source.subscribe(uri))
            self._upstream[uri] = source

    async def _release(self) -> None:
        """Unsubscribe upstream from what no client wants any more."""
        for uri, source in list(self._upstream.items()):
            if not self._sessions.get(uri) and not self._streams[uri]:
                del self._upstream[uri]
                self._sessions.pop(uri, None)
                try:
                    await source.unsubscribe(uri)
                except Exception as exc:  # noqa: BLE001 - the worst case is updates nobody asked for
                    log.debug("%s: unsubscribing from %s failed: %s", source.describe(), uri, exc)
