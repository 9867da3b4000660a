"""List changes announced across replicas, over Redis pub/sub when `redis:` is set.

`LiveCatalog.announce` tells this replica's clients that a list changed (a reload, an upstream MCP
server's `list_changed`): `notifications/*/list_changed` on handshake-era GET streams, the event on
2026-07-28 `subscriptions/listen` streams. Behind a load balancer a client's stream may be held by
another replica than the one that learned of the change. `Announcements` adds a listener that
publishes each change on `<key_prefix>lists-changed`, and a subscriber that announces what the
other replicas publish to this replica's own streams. Each message carries the publishing
replica's random id, so a replica never relays its own, and a relayed change is not published
again (no echo between replicas).

Redis down, slow or failing: changes are still announced to this replica's clients; publishing
is skipped (one log line when it starts failing, one when it works again), the subscriber
reconnects every 2 s (converter.server.pubsub), and `/readyz` says `"redis-announcements": "degraded"` (still
ready). Nothing a client sends depends on it.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol

from converter.server.pubsub import REDIS_FAILURES, close_clients, listen

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("openapi_mcp.announcements")

CHANNEL: Final = "lists-changed"
KINDS: Final = frozenset({"tools", "prompts", "resources", "templates"})
MAX_MESSAGE_BYTES: Final = 4096
_RELAYED: ContextVar[bool] = ContextVar("openapi_mcp_relayed_announcement", default=False)


class Announcer(Protocol):
    """What is told of a change (the server's `LiveCatalog`)."""

    async def announce(self, kinds: frozenset[str]) -> None: ...


class Announcements:
    """Publishes this replica's list changes and announces the other replicas' (see the module docstring)."""

    def __init__(self, catalog: Announcer, *, publisher: Redis, subscriber: Redis, key_prefix: str) -> None:
        self.catalog = catalog
        self.channel = key_prefix + CHANNEL
        self.replica = uuid.uuid4().hex
        self._publisher = publisher
        self._subscriber = subscriber
        self._publish_failing = False
        self._subscribed = False
        self.published = 0
        self.relayed = 0

    @classmethod
    def from_url(cls, catalog: Announcer, url: str, *, key_prefix: str, timeout: float) -> Announcements:
        from converter.redis_client import redis_client

        # Each wait of the subscriber is bounded (converter.server.pubsub) instead of a read timeout.
        return cls(catalog, publisher=redis_client(url, timeout),
                   subscriber=redis_client(url, timeout, waits_for_messages=True), key_prefix=key_prefix)

    @property
    def state(self) -> str:
        return "reachable" if self._subscribed and not self._publish_failing else "degraded"

    async def publish(self, kinds: frozenset[str]) -> None:
        """A `LiveCatalog` listener: tell the other replicas (unless the change came from one)."""
        if _RELAYED.get():
            return
        message = json.dumps({"from": self.replica, "kinds": sorted(kinds & KINDS)})
        try:
            await self._publisher.publish(self.channel, message)
        except REDIS_FAILURES as exc:  # Redis down or slow: the change stays announced here only
            if not self._publish_failing:
                log.warning("cannot announce a list change to the other replicas (Redis: %s); "
                            "announcing to this replica's clients only", type(exc).__name__)
            self._publish_failing = True
            return
        if self._publish_failing:
            log.info("announcing list changes to the other replicas again")
        self._publish_failing = False
        self.published += 1

    async def run(self) -> None:
        """Announce the other replicas' changes to this replica's clients, until cancelled."""
        await listen(self._subscriber, self.channel, self._relay, on_state=self._on_state, log=log,
                     what="the other replicas' list changes")

    def _on_state(self, subscribed: bool) -> None:
        self._subscribed = subscribed
        if subscribed:
            self._publish_failing = False  # Redis answers again: the next publish is tried as usual

    async def _relay(self, data: Any) -> None:
        kinds = _parse(data, self.replica)
        if not kinds:
            return
        token = _RELAYED.set(True)
        try:
            await self.catalog.announce(kinds)
        finally:
            _RELAYED.reset(token)
        self.relayed += 1

    async def aclose(self) -> None:
        await close_clients(log, self._publisher, self._subscriber)


def _parse(data: Any, own: str) -> frozenset[str]:
    """The kinds another replica announced; nothing for our own messages or anything malformed
    (whoever can write to Redis can publish: a message can at most make clients list again)."""
    if not isinstance(data, (bytes, str)) or len(data) > MAX_MESSAGE_BYTES:
        return frozenset()
    try:
        message = json.loads(data)
    except ValueError:
        return frozenset()
    if not isinstance(message, dict) or message.get("from") == own or not isinstance(message.get("kinds"), list):
        return frozenset()
    return frozenset(kind for kind in message["kinds"] if isinstance(kind, str)) & KINDS
