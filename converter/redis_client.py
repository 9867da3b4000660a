"""One way to open a Redis client, for everything `redis:` shares (limits, verdicts, sessions, lists).

Each command is bounded by `timeout` (connecting too) and redis-py retries nothing on its own: the
callers decide what a failed command means (a local fallback, a degraded `/readyz`), and a retry
loop inside the client would stretch one command past the time the caller allowed it. redis is
the `redis` extra, imported only when `redis:` is configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import Redis

RETRY_INTERVAL: Final = 2.0  # seconds without a command after one failed


def session_digest(session_id: str) -> str:
    """What names a session in Redis: the SHA-256 of its ID (whoever reads Redis learns no session ID)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


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


class BoundedCommands:
    """Redis commands for what has a local fallback: each bounded by `timeout`, None instead of an
    exception when Redis is down or fails.

    After a failure nothing is sent for `retry_interval` seconds (a request never waits on a Redis
    that has just failed it); each outage is logged once on `log`, as "Redis failed
    (ConnectionError): " + `down` at error and "Redis is back: " + `back` at warning; `healthy`
    says whether the last command sent was answered (`/readyz`: "reachable" or "degraded").
    """

    def __init__(self, client: Redis, *, timeout: float, log: logging.Logger, down: str, back: str,
                 retry_interval: float = RETRY_INTERVAL, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._timeout, self._retry_interval, self._monotonic = timeout, retry_interval, monotonic
        self._log, self._down, self._back = log, down, back
        self._down_until = float("-inf")
        self.healthy = True

    @property
    def state(self) -> str:
        return "reachable" if self.healthy else "degraded"

    async def __call__(self, *command: Any) -> Any:
        from redis.exceptions import RedisError

        if self._monotonic() < self._down_until:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self.client.execute_command(*command)  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = self._monotonic() + self._retry_interval
            if self.healthy:
                self.healthy = False
                what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
                self._log.error("Redis %s: %s", what, self._down)
            return None
        if not self.healthy:
            self.healthy = True
            self._log.warning("Redis is back: %s", self._back)
        return answer

    async def aclose(self) -> None:
        await self.client.aclose()
