"""Counters in Redis, shared by every replica: one Lua script per check, so check-and-add is atomic.

Keys: `{key_prefix}rl:{rule id}:{scope digest}:{window number}`, each an integer that expires
two windows after its last increment; the script reads the current and the previous window of
every rule that covers the request and increments all of them only when none is over its limit.
Time comes from the caller (the limiter's clock): replicas need NTP-synchronised clocks, and a
skew of a few milliseconds is nothing against windows of seconds.

Redis down, slow or answering errors: limits keep working on this process's own counters (a
`MemoryBackend`), the failure is logged (once per outage, plus the recovery) and counted, and
Redis is tried again after `retry_interval` seconds, so an outage costs at most one `timeout`
per interval, never a hang. Why not the alternatives: failing open would drop every limit the
moment Redis blinks, and failing closed (429 for everyone) would turn a cache outage into a
full outage. With local counters each replica still enforces the full limit, so a caller gets
at most N x replicas during the outage; that is logged as such.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from converter.policy.limits.window import Count, Counter, MemoryBackend, position
from converter.redis_client import redis_client

log = logging.getLogger("openapi_mcp.limits")

DEFAULT_TIMEOUT: Final = 0.5
DEFAULT_RETRY_INTERVAL: Final = 2.0

# KEYS: per rule i, KEYS[2i-1] = current window, KEYS[2i] = previous window.
# ARGV: [1] = number of rules; per rule i, ARGV[3i-1] = limit, ARGV[3i] = weight of the previous
# window, ARGV[3i+1] = expiry in ms. Returns prev, cur, denied (0/1) per rule, before this request.
SCRIPT: Final = """
local n = tonumber(ARGV[1])
local out = {}
local ok = true
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2*i]) or '0')
  local denied = 0
  if prev * tonumber(ARGV[3*i]) + cur + 1 > tonumber(ARGV[3*i-1]) then
    denied = 1
    ok = false
  end
  out[3*i-2] = prev
  out[3*i-1] = cur
  out[3*i] = denied
end
if ok then
  for i = 1, n do
    redis.call('INCR', KEYS[2*i-1])
    redis.call('PEXPIRE', KEYS[2*i-1], ARGV[3*i+1])
  end
end
return out
"""


@dataclass(slots=True)
class RedisStats:
    """For `/readyz` and metrics."""

    checks: int = 0
    fallback_checks: int = 0  # answered by the local counters because Redis was not usable
    errors: int = 0
    last_error: str | None = None
    healthy: bool = True


class RedisBackend:
    """Rate-limit counters in Redis (see the module docstring), with local counters as the fallback."""

    def __init__(self, client: Redis, *, key_prefix: str = "openapi-mcp:", timeout: float = DEFAULT_TIMEOUT,
                 retry_interval: float = DEFAULT_RETRY_INTERVAL, fallback: MemoryBackend | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._script = client.register_script(SCRIPT)
        self._prefix = key_prefix
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._fallback = fallback or MemoryBackend()
        self._monotonic = monotonic
        self._down_until = float("-inf")
        self.stats = RedisStats()

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str = "openapi-mcp:", timeout: float = DEFAULT_TIMEOUT,
                 **kwargs: Any) -> RedisBackend:
        """A backend on its own connection pool to `url` (`redis://host:port/db`, `rediss://` for TLS)."""
        return cls(redis_client(url, timeout), key_prefix=key_prefix, timeout=timeout, **kwargs)

    @property
    def shared_state(self) -> str | None:
        # Degraded, not down: limits go on with this process's counters until Redis is back.
        return "reachable" if self.stats.healthy else "degraded"

    def __repr__(self) -> str:
        return f"RedisBackend(key_prefix={self._prefix!r}, healthy={self.stats.healthy})"

    async def consume(self, counters: Sequence[Counter], now: float) -> list[Count]:
        self.stats.checks += 1
        if self._monotonic() < self._down_until:
            self.stats.fallback_checks += 1
            return self._fallback.consume_now(counters, now)
        keys: list[str] = []
        args: list[Any] = [len(counters)]
        for counter in counters:
            index, weight = position(now, counter.window)
            base = f"{self._prefix}rl:{counter.key}"
            keys += [f"{base}:{index}", f"{base}:{index - 1}"]
            args += [counter.limit, repr(weight), int(counter.window * 2000) + 1000]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._script(keys=keys, args=args)
            counts = [Count(int(raw[i]), int(raw[i + 1]), bool(int(raw[i + 2]))) for i in range(0, len(raw), 3)]
            if len(counts) != len(counters):
                raise RedisError(f"the rate-limit script returned {len(raw)} values for {len(counters)} rules")
        except (RedisError, OSError, TimeoutError, ValueError, TypeError, IndexError) as exc:
            self._failed(exc)
            self.stats.fallback_checks += 1
            return self._fallback.consume_now(counters, now)
        if not self.stats.healthy:
            self.stats.healthy = True
            log.warning("Redis is back: rate-limit counters are shared again")
        return counts

    def _failed(self, exc: BaseException) -> None:
        what = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
        self.stats.errors += 1
        self.stats.last_error = f"Redis {what}"
        self._down_until = self._monotonic() + self._retry_interval
        if self.stats.healthy:
            self.stats.healthy = False
            log.error("Redis %s: rate limits fall back to this process's own counters (each replica then "
                      "allows the full limit) until Redis answers again; retrying every %g s",
                      what, self._retry_interval)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._fallback.aclose()
