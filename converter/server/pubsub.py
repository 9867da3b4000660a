"""Hearing the other replicas over a Redis pub/sub channel, for as long as the server runs.

Shared by the relays that go through Redis pub/sub (list changes: converter.server.announcements;
cancellations: converter.server.cancel_relay). `listen` subscribes, hands each message's data to
its handler, and through an outage (Redis down, restarted, a broken connection) subscribes again
every `RETRY_SECONDS`, logging the outage once and the recovery once. Each wait for a message is
bounded by `POLL_SECONDS` (the subscriber's socket has no read timeout: converter.redis_client), so
cancelling the listener (shutdown) is prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis.asyncio import Redis

RETRY_SECONDS: Final = 2.0
POLL_SECONDS: Final = 1.0  # how long one wait for a message may block (the loop checks for shutdown between)
REDIS_FAILURES: Final = (RedisError, OSError, TimeoutError)


async def listen(subscriber: Redis, channel: str, handle: Callable[[Any], Awaitable[None]], *,
                 on_state: Callable[[bool], None], log: logging.Logger, what: str) -> None:
    """Hand the data of each message on `channel` to `handle`, until cancelled.

    Args:
        on_state: told True once subscribed, False when the subscription is lost.
        what: what is heard, for the log ("the other replicas' list changes").
    """
    failing = False
    while True:
        try:
            async with subscriber.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                on_state(True)
                if failing:
                    log.info("hearing %s again", what)
                failing = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_SECONDS)
                    if message is not None and message.get("type") == "message":
                        await handle(message.get("data"))
        except REDIS_FAILURES as exc:  # Redis down, restarted, or a broken connection: retry
            on_state(False)
            if not failing:
                log.warning("cannot hear %s (Redis: %s); retrying every %g s", what, type(exc).__name__,
                            RETRY_SECONDS)
            failing = True
        await anyio.sleep(RETRY_SECONDS)


async def close_clients(log: logging.Logger, *clients: Redis) -> None:
    """Close each client; one whose server is gone is closed all the same."""
    for client in clients:
        try:
            await client.aclose()
        except REDIS_FAILURES:
            log.debug("closing a Redis client failed", exc_info=True)
