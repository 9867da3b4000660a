"""What the relays of one session's messages between replicas share (converter.server.cancel_relay,
converter.server.answer_relay).

Behind a load balancer without affinity, a message of a sealed session (converter.server.shared_sessions)
may land on another replica than the one holding what it is about (a call in flight, a request the
server waits on). `SessionRelay` is the Redis pub/sub side of relaying it there:

- a table of the sessions whose server task runs here, keyed by the SHA-256 of the session ID (as the
  ended-sessions keys are: whoever reads Redis learns no session ID), each with its dispatcher;
- an outbox of at most `outbox` encoded messages waiting to be published on `<key_prefix><channel>`
  (more are dropped, logged once until it drains), published by one task; a failed publish skips
  publishing for `RETRY_SECONDS`, each outage logged once, and `state` says `"degraded"`;
- one listener (converter.server.pubsub); each message is a JSON object with the publishing
  replica's random id (`from`: no replica acts on its own) and the session's digest (`session`);
  one of another replica's that names a session running here goes to the subclass's `_act`.

Nothing on the request path waits for Redis: a message is queued without blocking.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from converter.redis_client import session_digest
from converter.server.pubsub import REDIS_FAILURES, RETRY_SECONDS, close_clients, listen

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("openapi_mcp.sessions")

DIGEST_CHARS: Final = 64


def read_message(data: Any, own: str, max_bytes: int) -> dict[str, Any] | None:
    """The JSON object of a message of another replica than `own`, naming a session by a digest of
    the right length, in at most `max_bytes`; None for anything else (whoever can write to Redis can
    publish: a message can at most act on a session whose ID digest it already knows)."""
    if not isinstance(data, (bytes, str)) or len(data) > max_bytes:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("from") == own:
        return None
    digest = message.get("session")
    return message if isinstance(digest, str) and len(digest) == DIGEST_CHARS else None


class SessionRelay:
    """Relays messages of this replica's sessions to the other replicas and applies theirs (see the
    module docstring). A subclass names its `channel`, `outbox` size, what it relays (`what`, for
    the log), its `readiness` key and `metric`, queues messages with `_queue` and applies the
    others' in `_act`."""

    channel_name: str = ""
    outbox: int = 256
    what: str = "messages"  # "notifications/cancelled", for "cannot relay notifications/cancelled ..."
    lost: str = "it is lost"  # what follows when Redis loses one, for the same line
    hearing: str = "the other replicas' messages"  # for "cannot hear ..."
    readiness: str = ""  # its key in /readyz ("redis-cancels")
    metric: str = ""  # its counter family on /metrics, by `result` (`counts`)
    metric_help: str = ""

    def __init__(self, *, publisher: Redis, subscriber: Redis, key_prefix: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.channel = key_prefix + self.channel_name
        self.replica = uuid.uuid4().hex
        self._publisher = publisher
        self._subscriber = subscriber
        self._monotonic = monotonic
        self._sessions: dict[str, tuple[JSONRPCDispatcher[Any], str]] = {}  # digest -> (dispatcher, session ID)
        self._outbox_in, self._outbox = anyio.create_memory_object_stream[str](self.outbox)
        self._subscribed = False
        self._publish_failing = False
        self._down_until = float("-inf")
        self._dropping = False
        self.published = 0  # messages this replica relayed (the tests and the metrics read these)
        self.heard = 0  # well-formed messages of other replicas
        self.dropped = 0

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, timeout: float) -> Self:
        from converter.redis_client import redis_client

        return cls(publisher=redis_client(url, timeout), subscriber=redis_client(url, timeout, waits_for_messages=True),
                   key_prefix=key_prefix)

    @property
    def state(self) -> str:
        return "reachable" if self._subscribed and not self._publish_failing else "degraded"

    def counts(self) -> dict[str, int]:
        """What `metric` shows, by result; a subclass adds what it does with the others' messages."""
        return {"published": self.published, "dropped": self.dropped}

    @contextmanager
    def _registered(self, session_id: str, dispatcher: JSONRPCDispatcher[Any]) -> Iterator[str]:
        """`session_id` served by `dispatcher` here, for as long as the block runs; yields its digest."""
        digest = session_digest(session_id)
        entry = (dispatcher, session_id)
        self._sessions[digest] = entry
        try:
            yield digest
        finally:
            if self._sessions.get(digest) is entry:
                del self._sessions[digest]

    def _queue(self, encoded: str) -> None:
        """Publish `encoded` soon (never waits); dropped when the outbox is full."""
        try:
            self._outbox_in.send_nowait(encoded)
        except anyio.WouldBlock:
            self.dropped += 1
            if not self._dropping:
                log.warning("more than %d %s are waiting to be relayed to the other replicas; "
                            "dropping the rest until they are sent", self.outbox, self.what)
            self._dropping = True
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # shutting down
            pass

    async def run(self) -> None:
        """Publish this replica's relayed messages and apply the other replicas', until cancelled."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._publish_all)
            await listen(self._subscriber, self.channel, self._apply, on_state=self._on_state, log=log,
                         what=self.hearing)

    def _on_state(self, subscribed: bool) -> None:
        self._subscribed = subscribed
        if subscribed:  # Redis answers again: the next message is published as usual
            self._publish_failing = False
            self._down_until = float("-inf")

    async def _publish_all(self) -> None:
        async for message in self._outbox:
            self._dropping = False
            if self._monotonic() < self._down_until:
                self.dropped += 1
                continue
            try:
                await self._publisher.publish(self.channel, message)
            except REDIS_FAILURES as exc:  # Redis down or slow
                self._down_until = self._monotonic() + RETRY_SECONDS
                self.dropped += 1
                if not self._publish_failing:
                    log.warning("cannot relay %s to the other replicas (Redis: %s); %s",
                                self.what, type(exc).__name__, self.lost)
                self._publish_failing = True
                continue
            if self._publish_failing:
                log.info("relaying %s to the other replicas again", self.what)
            self._publish_failing = False
            self.published += 1

    async def _apply(self, data: Any) -> None:
        """A message heard on the channel: acted on when it is another replica's, well-formed, and
        names a session running here."""
        found = self._parse(data)
        if found is None:
            return
        self.heard += 1
        entry = self._sessions.get(found[0])
        if entry is not None:
            self._act(*entry, found)

    def _parse(self, data: Any) -> tuple[Any, ...] | None:
        """(session digest, ...) of another replica's message; None for our own and anything malformed."""
        raise NotImplementedError

    def _act(self, dispatcher: JSONRPCDispatcher[Any], session_id: str, found: tuple[Any, ...]) -> None:
        """Apply `found` (what `_parse` gave) to the session's dispatcher here."""
        raise NotImplementedError

    async def aclose(self) -> None:
        self._outbox_in.close()
        self._outbox.close()
        await close_clients(log, self._publisher, self._subscriber)
