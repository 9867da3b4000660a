"""Where `logging/setLevel` keeps a session's level (converter/passthrough/log_levels.py) and how the
relay of upstream log messages reads it (converter/passthrough/handlers.py `notification_relay`).
Across real replicas and a real Redis: tests/integration/test_replicas_log_levels.py."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from converter.passthrough import LogLevels, SharedLogLevels, notification_relay

pytestmark = pytest.mark.anyio

SESSION = "session-id-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Connection:
    """Stands for the SDK's per-session connection object (weakly referenced)."""


@dataclass
class Session:
    _connection: Connection = field(default_factory=Connection)
    sent: list[Any] = field(default_factory=list)

    async def send_notification(self, notification: Any, related_request_id: Any = None) -> None:
        self.sent.append(notification.params.data)


@dataclass
class Request:
    headers: dict[str, str]


@dataclass
class Context:
    session: Session = field(default_factory=Session)
    request: Request = field(default_factory=lambda: Request({"mcp-session-id": SESSION}))
    protocol_version: str = "2025-06-18"
    meta: Any = None
    request_id: Any = 1


class FakeRedis:
    """Records the commands; answers GET from what SET stored; `down`: every command fails."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.values: dict[str, bytes] = {}
        self.down = False

    async def execute_command(self, *command: Any) -> Any:
        self.commands.append(command)
        if self.down:
            raise RedisConnectionError("refused")
        if command[0] == "SET":
            self.values[command[1]] = command[2]
            return True
        return self.values.get(command[1])

    async def aclose(self) -> None:
        return None


class CountingLevels(LogLevels):
    def __init__(self, level: str | None) -> None:
        super().__init__()
        self.level, self.reads = level, 0

    async def chosen(self, ctx: Any) -> str | None:
        self.reads += 1
        return self.level


def message(level: str, data: str) -> dict[str, Any]:
    return {"level": level, "data": data, "logger": "upstream"}


async def test_the_level_is_read_at_the_first_log_message_of_a_call_and_only_then() -> None:
    ctx, levels = Context(), CountingLevels("info")
    relay = notification_relay(ctx, levels)
    assert relay is not None and levels.reads == 0  # a call whose upstream logs nothing reads nothing
    await relay("notifications/progress", {"progress": 1})
    assert levels.reads == 0
    for level, data in (("debug", "d"), ("info", "i"), ("error", "e")):
        await relay("notifications/message", message(level, data))
    assert ctx.session.sent == ["i", "e"] and levels.reads == 1


async def test_a_2026_request_without_a_log_level_gets_no_relay() -> None:
    assert notification_relay(Context(protocol_version="2026-07-28"), CountingLevels("debug")) is None


async def test_this_process_keeps_a_level_per_session_connection() -> None:
    levels, one, two = LogLevels(), Context(), Context()
    await levels.choose(one, "warning")
    assert await levels.chosen(one) == "warning"
    assert await levels.chosen(two) is None


async def test_shared_levels_are_written_under_the_session_ids_digest_for_the_session_lifetime() -> None:
    redis = FakeRedis()
    levels = SharedLogLevels(redis, key_prefix="p:", timeout=1, lifetime=3600)
    await levels.choose(Context(), "notice")
    key = "p:ll:" + hashlib.sha256(SESSION.encode()).hexdigest()
    assert redis.commands == [("SET", key, b"notice", "PX", 3_600_000)]
    other_process = Context()  # the same session ID, another connection: what another replica sees
    assert await levels.chosen(other_process) == "notice"
    redis.values[key] = b"loud"  # whoever can write to Redis: not a level, so not taken
    assert await levels.chosen(other_process) is None


async def test_redis_down_falls_back_to_this_processs_levels_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    redis = FakeRedis()
    levels = SharedLogLevels(redis, key_prefix="p:", timeout=1, lifetime=60)
    ctx = Context()
    redis.down = True
    with caplog.at_level(logging.ERROR):
        await levels.choose(ctx, "error")
        assert await levels.chosen(ctx) == "error"  # its own, kept here
        assert await levels.chosen(Context()) is None  # another connection: none known here
    assert levels.state == "degraded"
    assert caplog.text.count("a logging/setLevel reaches only the replica that took it") == 1
    assert len(redis.commands) == 1  # after a failure, no command for the retry interval


async def test_stdio_has_no_session_id_and_stays_in_this_process() -> None:
    redis = FakeRedis()
    levels = SharedLogLevels(redis, key_prefix="p:", timeout=1, lifetime=60)
    ctx = Context(request=None)  # type: ignore[arg-type]
    await levels.choose(ctx, "info")
    assert await levels.chosen(ctx) == "info" and redis.commands == []
