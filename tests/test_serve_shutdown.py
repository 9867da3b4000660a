"""What a graceful shutdown does with connections that arrive while it begins (converter.serve):
every one is served or refused, none is reset after its request could have been sent. Against
the whole server, under load: tests/integration/test_replicas_restart.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import pytest

from converter.serve import accept_waiting, bind_socket

LOOPS = ["asyncio", "uvloop"]


class _Recording(asyncio.Protocol):
    made: ClassVar[int] = 0
    received: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Recording.made += 1

    def data_received(self, data: bytes) -> None:
        _Recording.received.append(data)


def run(loop_name: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = asyncio.new_event_loop
    if loop_name == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    _Recording.made, _Recording.received = 0, []
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("accept_first", [True, False])
def test_connections_completed_before_shutdown_are_accepted_not_reset(loop_name: str, accept_first: bool) -> None:
    """The kernel completes a connect before the server accepts it: closing the listening socket
    resets the ones still queued, so shutdown lets the loop accept them first (a rolling restart
    behind nginx loses no POST to it: tests/integration/test_replicas_restart.py)."""
    async def scenario() -> None:
        listening = bind_socket("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(_Recording, sock=listening)
        # connected while the loop is busy here: in the queue, not yet accepted
        clients = [socket.create_connection(listening.getsockname()[:2]) for _ in range(5)]
        if accept_first:
            await accept_waiting([server])
        server.close()
        await asyncio.sleep(0.05)
        for client in clients:
            client.close()

    run(loop_name, scenario)
    assert _Recording.made == (5 if accept_first else 0)
