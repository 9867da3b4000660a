"""Introspection verdicts shared by every replica through Redis (`redis:`), so a token is asked about once.

Without it each replica introspects each token itself (N replicas: N calls to the authorization
server), and a token revoked meanwhile is refused by the replicas that asked after the revocation
while the one that cached it first accepts it for up to `cache_ttl`. With it:

- key `{key_prefix}tv:{SHA-256 of the token}` (never the token), value the authorization
  server's answer (active) or the refusal's message (inactive) and the verdict's expiry, with a
  Redis TTL to match: never past the token's `exp`, at most `cache_ttl` (`inactive_cache_ttl`);
- a replica that finds a verdict checks the answer again itself (issuer, audience, expiry: the
  same code as for a fresh answer) and caches it locally *until the shared verdict's expiry*, so
  every replica drops it at the same moment: no split window between replicas;
- a replica that finds none takes a short lock (`SET NX`, `auth.timeout` long) and introspects;
  the others wait for its verdict (polling, within `auth.timeout`) instead of asking too, and ask
  themselves if it does not come. So N replicas that get a new token at the same moment still
  make one introspection call.

Redis down, slow or answering nonsense: each replica asks the authorization server itself, as
without Redis (never an acceptance without a verdict: fail closed), logs it once per outage and
the recovery, retries Redis after `retry_interval`, and `/readyz` shows `redis-verdicts:
degraded`. Whoever can write to Redis can plant verdicts: protect it like the introspection
client secret (password or ACL user, TLS, network policy).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from converter.redis_client import RETRY_INTERVAL, BoundedCommands, redis_client

if TYPE_CHECKING:  # redis is the `redis` extra: imported only when redis: is configured
    from redis.asyncio import Redis

log = logging.getLogger("openapi_mcp.auth")

_POLL: Final = 0.02  # seconds between looks for the verdict another replica is fetching


@dataclass(frozen=True, slots=True)
class SharedVerdict:
    """What Redis holds for one token: the AS's answer when active, else the refusal; until `expires_at`."""

    answer: dict[str, Any] | None
    refusal: str | None
    expires_at: float  # Unix seconds


@dataclass(slots=True)
class SharedCacheStats:
    hits: int = 0
    misses: int = 0
    waits: int = 0  # verdicts another replica fetched while this one waited


class SharedVerdicts:
    """Verdicts in Redis (see the module docstring); every failure is a miss, never a verdict."""

    def __init__(self, client: Redis, *, key_prefix: str, timeout: float,
                 retry_interval: float = RETRY_INTERVAL,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._redis = BoundedCommands(
            client, timeout=timeout, log=log, retry_interval=retry_interval, monotonic=monotonic,
            down=f"token verdicts are no longer shared; each replica asks the authorization server itself until "
                 f"Redis answers again (retrying every {retry_interval:g} s)",
            back="token verdicts are shared again")
        self._prefix = f"{key_prefix}tv:"
        self._clock = clock
        self._monotonic = monotonic
        self.stats = SharedCacheStats()

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, timeout: float, **kwargs: Any) -> SharedVerdicts:
        return cls(redis_client(url, timeout), key_prefix=key_prefix, timeout=timeout, **kwargs)

    def __repr__(self) -> str:
        return f"SharedVerdicts(prefix={self._prefix!r}, healthy={self._redis.healthy})"

    @property
    def state(self) -> str:
        """For /readyz: degraded (each replica asks the AS itself) is still ready."""
        return self._redis.state

    async def get(self, key: str) -> SharedVerdict | None:
        """The shared verdict for token hash `key`, or None (none yet, expired, or Redis unusable)."""
        raw = await self._redis("GET", self._prefix + key)
        verdict = _parse(raw) if isinstance(raw, bytes) else None
        if verdict is not None and verdict.expires_at <= self._clock():
            verdict = None
        if verdict is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return verdict

    async def claim(self, key: str, seconds: float) -> bool:
        """True when this replica should introspect: it took the lock, or Redis cannot say."""
        taken = await self._redis("SET", f"{self._prefix}{key}:lock", b"1", "NX", "PX", max(1, int(seconds * 1000)))
        return bool(taken) or not self._redis.healthy

    async def release(self, key: str) -> None:
        """Give the lock up without a verdict (the AS failed): the waiting replicas ask at once."""
        await self._redis("DEL", f"{self._prefix}{key}:lock")

    async def wait(self, key: str, seconds: float) -> SharedVerdict | None:
        """The verdict another replica is fetching, if it arrives within `seconds`."""
        deadline = self._monotonic() + seconds
        while self._monotonic() < deadline and self._redis.healthy:
            await asyncio.sleep(_POLL)
            raw = await self._redis("GET", self._prefix + key)
            verdict = _parse(raw) if isinstance(raw, bytes) else None
            if verdict is not None and verdict.expires_at > self._clock():
                self.stats.waits += 1
                return verdict
        return None

    async def put(self, key: str, verdict: SharedVerdict) -> None:
        ttl = verdict.expires_at - self._clock()
        if ttl <= 0:
            return
        value = json.dumps({"a": verdict.answer, "r": verdict.refusal, "x": verdict.expires_at}).encode()
        await self._redis("SET", self._prefix + key, value, "PX", max(1, int(ttl * 1000)))
        await self._redis("DEL", f"{self._prefix}{key}:lock")

    async def aclose(self) -> None:
        await self._redis.aclose()


def _parse(raw: bytes) -> SharedVerdict | None:
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    answer, refusal, expires_at = document.get("a"), document.get("r"), document.get("x")
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        return None
    if isinstance(answer, dict) and refusal is None:
        return SharedVerdict(answer, None, float(expires_at))
    if answer is None and isinstance(refusal, str):
        return SharedVerdict(None, refusal, float(expires_at))
    return None
