"""Sessions ended with DELETE, remembered until they would have expired, so no replica rebuilds them.

With sealed session IDs (converter.server.shared_sessions) any replica can rebuild a session from
its ID, so ending one must be known to all: `RedisEndedSessions` writes `{key_prefix}se:` + the
ID's SHA-256 with a TTL to the ID's expiry, and keeps a local copy. Redis down: this replica still
refuses the sessions it ended itself; a replica that holds a session in memory looks it up at most
once a second, so a DELETE ends it everywhere within a second; another replica could rebuild one for its owner (the
principal binding holds) until Redis is back. Logged once per outage; `/readyz` says
`redis-sessions: degraded`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from converter.redis_client import BoundedCommands, redis_client, session_digest

log = logging.getLogger("openapi_mcp.sessions")


class LocalEndedSessions:
    """Ended sessions in this process's memory, pruned as they expire."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._ended: dict[str, float] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._ended)

    async def add(self, session_id: str, expires_at: float) -> None:
        self._ended[session_id] = expires_at
        if len(self._ended) % 256 == 0:
            now = self._clock()
            self._ended = {sid: at for sid, at in self._ended.items() if at > now}

    async def has(self, session_id: str) -> bool:
        return session_id in self._ended


class RedisEndedSessions(LocalEndedSessions):
    """Ended sessions shared through Redis, with this process's own as the fallback."""

    is_shared = True  # the session manager also asks about sessions it holds (a DELETE elsewhere)

    def __init__(self, client: Any, *, key_prefix: str, timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._redis = BoundedCommands(client, timeout=timeout, log=log, back="ended sessions are shared again",
                                      down="ended sessions are remembered by this replica only until it answers again")
        self._prefix = f"{key_prefix}se:"

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, timeout: float) -> RedisEndedSessions:
        return cls(redis_client(url, timeout), key_prefix=key_prefix, timeout=timeout)

    @property
    def state(self) -> str:
        return self._redis.state

    async def add(self, session_id: str, expires_at: float) -> None:
        await super().add(session_id, expires_at)
        ttl = expires_at - self._clock()
        if ttl > 0:
            await self._redis("SET", self._key(session_id), b"1", "PX", max(1, int(ttl * 1000)))

    async def has(self, session_id: str) -> bool:
        if await super().has(session_id):
            return True
        return bool(await self._redis("EXISTS", self._key(session_id)))

    def _key(self, session_id: str) -> str:
        return self._prefix + session_digest(session_id)

    async def aclose(self) -> None:
        await self._redis.aclose()
