"""What a graceful shutdown does with connections that arrive while it begins (converter.server.listener):
every one is served or refused, none is reset after its request could have been sent. Against
the whole server, under load: tests/integration/test_replicas_restart.py."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import pytest

from converter.serve import bind_socket
from converter.server import listener
from converter.server.listener import accept_waiting, half_open, refuse_new_connections

linux = pytest.mark.skipif(sys.platform != "linux", reason="socket filters are Linux's")
LOOPS = ["asyncio", "uvloop"]
HOSTS = ["127.0.0.1", "::1"]


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


def only_syns(listening: socket.socket) -> None:
    """A filter that lets a client's SYN reach `listening` and drops the rest: the client gets its
    SYN-ACK and is connected, while its ACK and request are lost, as if still on their way."""
    code = [(0x30, 0, 0, 13), (0x54, 0, 0, 0x12), (0x15, 0, 1, 0x02), (0x06, 0, 0, 0xFFFFFFFF), (0x06, 0, 0, 0)]
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in code))
    listening.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HP", len(code), ctypes.addressof(program)))


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


@linux
@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("ack_delay", [0.0, 0.1])
def test_a_handshake_under_way_when_the_shutdown_begins_is_completed_and_served(
        loop_name: str, host: str, ack_delay: float) -> None:
    """A client whose SYN was answered just before the shutdown began is connected and sends its
    request; the ACK that completes its handshake reaches the server after the shutdown began (a
    network round trip later: here `ack_delay` s). The server must let that handshake complete and
    accept it: a listening socket closed before resets the client after it sent its request."""
    async def scenario() -> None:
        listening = bind_socket(host, 0)
        server = await asyncio.get_running_loop().create_server(_Recording, sock=listening)
        only_syns(listening)
        client = socket.create_connection(listening.getsockname()[:2], timeout=2)  # SYN-ACK'd: connected
        refuse_new_connections(listening)
        asyncio.get_running_loop().call_later(ack_delay, client.sendall, b"request")
        await accept_waiting([server])
        server.close()
        await asyncio.sleep(0.05)
        client.close()

    run(loop_name, scenario)
    assert (_Recording.made, _Recording.received) == (1, [b"request"])


@linux
@pytest.mark.parametrize("host", HOSTS)
def test_a_connect_after_the_shutdown_began_is_refused_once_the_listener_closes(host: str) -> None:
    """A new connection's SYN is dropped while the listener is still open (nothing is sent on an
    unfinished connect); the client sends it again a second later, to a closed port: refused,
    and a balancer tries another replica."""
    listening = bind_socket(host, 0)
    refuse_new_connections(listening)
    client = socket.socket(listening.family, socket.SOCK_STREAM)
    try:
        client.setblocking(False)
        assert client.connect_ex(listening.getsockname()[:2]) == errno.EINPROGRESS
        assert select.select([], [client], [], 0.3)[1] == [], "connected during the shutdown"
        listening.close()
        began = time.monotonic()
        assert select.select([], [client], [], 3)[1] == [client], "no answer to the SYN sent again"
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        assert time.monotonic() - began < 3
    finally:
        client.close()


@linux
def test_a_handshake_that_completes_while_they_are_counted_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last handshake under way can complete while the kernel is asked how many are (it is
    then no longer counted): the accept queue is looked at again after counting, not only before."""
    async def scenario() -> None:
        listening = bind_socket("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(_Recording, sock=listening)
        only_syns(listening)
        client = socket.create_connection(listening.getsockname()[:2], timeout=2)
        refuse_new_connections(listening)

        def counted(listeners: Any) -> int:
            client.sendall(b"request")  # its ACK arrives meanwhile: queued, no longer half-open
            select.select([listening], [], [], 2)
            monkeypatch.setattr(listener, "half_open", half_open)
            return 0

        monkeypatch.setattr(listener, "half_open", counted)
        await accept_waiting([server])
        server.close()
        await asyncio.sleep(0.05)
        client.close()

    run("asyncio", scenario)
    assert (_Recording.made, _Recording.received) == (1, [b"request"])

