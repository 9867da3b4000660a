"""List changes across replicas (converter/server/announcements.py), in process with a fake Redis.

The real thing (two processes, a real redis-server, stopped and started again) is
tests/integration/test_replicas_announce.py; here: what is published, what is relayed, what is
ignored, and that a relayed change is never published again.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from converter.server.announcements import Announcements, _parse

pytestmark = pytest.mark.anyio


class FakeRedis:
    """`publish`, `aclose` and a `pubsub()` that hands out queued messages, then stops the loop."""

    def __init__(self, messages: list[Any] | None = None, *, failing: bool = False) -> None:
        self.published: list[tuple[str, str]] = []
        self.messages = list(messages or [])
        self.failing = failing

    async def publish(self, channel: str, message: str) -> int:
        if self.failing:
            raise RedisConnectionError("down")
        self.published.append((channel, message))
        return 1

    def pubsub(self) -> FakeRedis:
        return self

    async def __aenter__(self) -> FakeRedis:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self.channel = channel

    async def get_message(self, **options: Any) -> dict[str, Any] | None:
        if not self.messages:
            raise StopError
        return {"type": "message", "data": self.messages.pop(0)}

    async def aclose(self) -> None:
        return None


class StopError(Exception):
    pass


class Catalog:
    """Announces to its listeners, as LiveCatalog does."""

    def __init__(self) -> None:
        self.told: list[frozenset[str]] = []
        self.listeners: list[Any] = []

    async def announce(self, kinds: frozenset[str]) -> None:
        self.told.append(kinds)
        for listener in self.listeners:
            await listener(kinds)


def announcements(catalog: Catalog, publisher: FakeRedis, subscriber: FakeRedis) -> Announcements:
    made = Announcements(catalog, publisher=publisher, subscriber=subscriber,  # type: ignore[arg-type]
                         key_prefix="p:")
    catalog.listeners.append(made.publish)
    return made


async def test_a_change_here_is_published_with_this_replicas_id() -> None:
    catalog, publisher = Catalog(), FakeRedis()
    made = announcements(catalog, publisher, FakeRedis())
    await catalog.announce(frozenset({"tools", "prompts", "not-a-kind"}))
    assert publisher.published == [("p:lists-changed", json.dumps({"from": made.replica,
                                                                   "kinds": ["prompts", "tools"]}))]


async def test_another_replicas_change_is_announced_here_and_not_published_again() -> None:
    catalog, publisher = Catalog(), FakeRedis()
    other = json.dumps({"from": "another-replica", "kinds": ["tools"]}).encode()
    subscriber = FakeRedis([other])
    made = announcements(catalog, publisher, subscriber)
    own = json.dumps({"from": made.replica, "kinds": ["tools"]}).encode()
    subscriber.messages += [own, b"not json", b'{"from": "x", "kinds": "tools"}', b"[]", 42]
    with pytest.raises(StopError):
        await made.run()
    assert catalog.told == [frozenset({"tools"})]  # once: our own echo and the garbage are ignored
    assert publisher.published == []  # a relayed change is not sent round again
    assert made.relayed == 1


async def test_redis_down_keeps_the_change_local_and_says_degraded(caplog: pytest.LogCaptureFixture) -> None:
    catalog, publisher = Catalog(), FakeRedis(failing=True)
    made = announcements(catalog, publisher, FakeRedis())
    await catalog.announce(frozenset({"tools"}))
    await catalog.announce(frozenset({"tools"}))
    assert catalog.told == [frozenset({"tools"})] * 2  # this replica's clients are told all the same
    assert made.state == "degraded"
    assert len([r for r in caplog.records if "cannot announce" in r.getMessage()]) == 1  # once, not per change
    publisher.failing = False
    await catalog.announce(frozenset({"tools"}))
    assert len(publisher.published) == 1


def test_only_known_kinds_from_another_replica_are_taken() -> None:
    assert _parse(json.dumps({"from": "b", "kinds": ["tools", "resources", "x", 3]}), "a") == {"tools", "resources"}
    assert _parse(json.dumps({"from": "a", "kinds": ["tools"]}), "a") == frozenset()
    assert _parse(b"x" * 5000, "a") == frozenset()
