"""One way to open a Redis client, for everything `redis:` shares (limits, verdicts, sessions, lists).

Each command is bounded by `timeout` (connecting too) and redis-py retries nothing on its own: the
callers decide what a failed command means (a local fallback, a degraded `/readyz`), and a retry
loop inside the client would stretch one command past the time the caller allowed it. redis is
the `redis` extra, imported only when `redis:` is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis


def redis_client(url: str, timeout: float, *, waits_for_messages: bool = False) -> Redis:
    """A client on its own connection pool to `url` (`redis://host:port/db`, `rediss://` for TLS).

    `waits_for_messages`: a pub/sub subscriber, which reads for as long as nobody publishes: no read
    timeout on its socket (each wait is bounded by the caller), only on connecting.
    """
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(url, socket_timeout=None if waits_for_messages else timeout,
                          socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
