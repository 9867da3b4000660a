"""The least severe log level each session asked for with `logging/setLevel` (handshake era), for
the upstream log messages the passthrough relays to it during a call (converter.passthrough.handlers).

`LogLevels` keeps it in this process, by the SDK's connection of the session (gone with it).

Behind a load balancer with sealed sessions (replicas, `--workers`), a session's requests land on
any process. With `redis:` set, `SharedLogLevels` also writes each level to Redis, as
`{key_prefix}ll:` + the SHA-256 of the session ID (whoever reads Redis learns no session ID), for
`server.session_lifetime` (no session outlives it). A call reads it from there only when its
upstream sends it a log message, once per call: a call whose upstream logs nothing never waits on
Redis. Redis down: a process goes by the level it took itself (every level if it took none, the
MCP default), logged once per outage, and `/readyz` says `"redis-log-levels": "degraded"`.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Final, get_args

import mcp.types as types

from converter.redis_client import BoundedCommands, redis_client, session_digest

log = logging.getLogger("openapi_mcp.sessions")

LEVELS: Final[tuple[str, ...]] = get_args(types.LoggingLevel)  # least severe first


class LogLevels:
    """The levels this process took, by session connection."""

    readiness = ""  # its key in /readyz (shared only)

    def __init__(self) -> None:
        self._chosen: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    async def choose(self, ctx: Any, level: str) -> None:
        connection = _connection(ctx)
        if connection is not None:
            self._chosen[connection] = level

    async def chosen(self, ctx: Any) -> str | None:
        """The least severe level the session of request `ctx` wants; None: it never said (all)."""
        connection = _connection(ctx)
        return self._chosen.get(connection) if connection is not None and self._chosen else None

    async def aclose(self) -> None:
        return None


class SharedLogLevels(LogLevels):
    """The levels of every process, through Redis (see the module docstring)."""

    readiness = "redis-log-levels"

    def __init__(self, client: Any, *, key_prefix: str, timeout: float, lifetime: float) -> None:
        super().__init__()
        self._redis = BoundedCommands(client, timeout=timeout, log=log, back="log levels are shared again",
                                      down="a logging/setLevel reaches only the replica that took it until it "
                                           "answers again")
        self._prefix = f"{key_prefix}ll:"
        self._lifetime_ms = max(1, int(lifetime * 1000))

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, timeout: float, lifetime: float) -> SharedLogLevels:
        return cls(redis_client(url, timeout), key_prefix=key_prefix, timeout=timeout, lifetime=lifetime)

    @property
    def state(self) -> str:
        return self._redis.state

    async def choose(self, ctx: Any, level: str) -> None:
        await super().choose(ctx, level)
        key = self._key(ctx)
        if key is not None:
            await self._redis("SET", key, level.encode(), "PX", self._lifetime_ms)

    async def chosen(self, ctx: Any) -> str | None:
        key = self._key(ctx)
        shared = await self._redis("GET", key) if key is not None else None
        level = shared.decode("ascii", "replace") if isinstance(shared, bytes) else None
        return level if level in LEVELS else await super().chosen(ctx)

    def _key(self, ctx: Any) -> str | None:
        headers = getattr(getattr(ctx, "request", None), "headers", None)
        session_id = headers.get("mcp-session-id") if headers is not None else None
        if not isinstance(session_id, str) or not session_id:
            return None  # stdio: this process only
        return self._prefix + session_digest(session_id)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _connection(ctx: Any) -> Any:
    return getattr(getattr(ctx, "session", None), "_connection", None)  # the SDK has no public handle on it
