"""An in-memory Redis for apps in process (keys and pub/sub), and a bounded wait: the relay tests'
(tests/test_cancel_relay.py, tests/test_answer_relay.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError


class Bus:
    """An in-memory Redis for these apps: keys (SET/EXISTS), and pub/sub delivered to every subscriber."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.subscribers: list[PubSub] = []
        self.down = False

    def client(self, url: str, timeout: float, *, waits_for_messages: bool = False) -> Client:
        return Client(self)


class Client:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _check(self) -> None:
        if self.bus.down:
            raise RedisConnectionError("Connection refused")

    async def execute_command(self, *command: Any) -> Any:
        self._check()
        if command[0] == "SET":
            self.bus.keys[command[1]] = command[2]
            return True
        return int(command[1] in self.bus.keys)

    async def publish(self, channel: str, message: str) -> int:
        self._check()
        heard = [s for s in self.bus.subscribers if channel in s.channels]
        for subscriber in heard:
            subscriber.inbox_in.send_nowait(message.encode())
        return len(heard)

    def pubsub(self) -> PubSub:
        return PubSub(self.bus)

    async def aclose(self) -> None:
        return None


class PubSub:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.channels: set[str] = set()
        self.inbox_in, self.inbox = anyio.create_memory_object_stream[bytes](100)

    async def __aenter__(self) -> PubSub:
        self.bus.subscribers.append(self)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.bus.subscribers.remove(self)

    async def subscribe(self, channel: str) -> None:
        if self.bus.down:
            raise RedisConnectionError("Connection refused")
        self.channels.add(channel)

    async def get_message(self, *, ignore_subscribe_messages: bool,
                          timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109 - redis-py's signature
        with anyio.move_on_after(min(timeout, 0.05)):
            data = await self.inbox.receive()
            return {"type": "message", "data": data}
        if self.bus.down:
            raise RedisConnectionError("Connection lost")
        return None


async def wait_until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.01)
