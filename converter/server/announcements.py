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
reconnects every `RETRY_SECONDS`, and `/readyz` says `"redis-announcements": "degraded"` (still
ready). Nothing a client sends depends on it.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("openapi_mcp.announcements")

CHANNEL: Final = "lists-changed"
RETRY_SECONDS: Final = 2.0
POLL_SECONDS: Final = 1.0  # how long one wait for a message may block (the loop checks for shutdown between)
KINDS: Final = frozenset({"tools", "prompts", "resources", "templates"})
MAX_MESSAGE_BYTES: Final = 4096
REDIS_FAILURES: Final = (RedisError, OSError, TimeoutError)
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

        # Each wait of the subscriber is bounded by POLL_SECONDS instead of a read timeout.
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
        failing = False
        while True:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._subscribed = True
                    self._publish_failing = False  # Redis answers again: the next publish is tried as usual
                    if failing:
                        log.info("hearing the other replicas' list changes again")
                    failing = False
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_SECONDS)
                        if message is not None and message.get("type") == "message":
                            await self._relay(message.get("data"))
            except REDIS_FAILURES as exc:  # Redis down, restarted, or a broken connection: retry
                self._subscribed = False
                if not failing:
                    log.warning("cannot hear the other replicas' list changes (Redis: %s); retrying every %g s",
                                type(exc).__name__, RETRY_SECONDS)
                failing = True
            await anyio.sleep(RETRY_SECONDS)

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
        for client in (self._publisher, self._subscriber):
            try:
                await client.aclose()
            except REDIS_FAILURES:  # closing a client whose server is gone
                log.debug("closing a Redis client failed", exc_info=True)


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
