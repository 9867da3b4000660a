"""Slow clients (issue 12, item 3): `openapi-mcp serve` as a real process with a low open-file limit
(256, set in the child before it starts), attacked over raw loopback sockets.

Attack connections come from other loopback addresses (127.0.0.2 and up: all of 127/8 is loopback)
so the per-client cap is seen apart from the timeouts; the legitimate client (GET /healthz, and the
official SDK client calling tools) is 127.0.0.1. Checked: connections that send nothing, trickle a
request head, or trickle a body are answered 408 and closed within their bound; beyond
`max_connections_per_client`, and beyond `max_connections`, a new connection closes the stalest
waiting one (503), so the server never runs out of descriptors and a server full of waiting
connections still lets /healthz and the SDK client in; a client that
does not read its responses is cut off after `send_timeout`; an oversized head is 431; and a
request whose head and body arrive in pieces within the bounds, or pipelined, is served normally.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import pytest
from mcp import Client

if TYPE_CHECKING:
    from conftest import Process, Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "mock_api" / "marketplace.yaml"
OPEN_FILES: Final = 256  # the server's RLIMIT_NOFILE: max_connections becomes 128
HEADER_TIMEOUT: Final = 2.0
BODY_TIMEOUT: Final = 3.0
KEEP_ALIVE: Final = 1.5
SEND_TIMEOUT: Final = 2.0
PER_CLIENT: Final = 40
MARGIN: Final = 1.5  # seconds a close may come after its bound (a busy 2-core machine)
TRICKLE_EVERY: Final = 0.4  # seconds between the bytes a slow client sends
# The child lowers its own open-file limit, then becomes `openapi-mcp serve` (same pid, limit kept).
LOW_FD_EXEC: Final = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1]))); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@dataclass(frozen=True)
class Server:
    base_url: str
    port: int
    process: Process


@pytest.fixture(scope="module")
def server(processes: Processes, mock_api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Server:
    config = tmp_path_factory.mktemp("slow") / "config.yaml"
    config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": mock_api_url},
                                  "telemetry": {"access_log": "off"},
                                  "server": {"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT,
                                             "keep_alive_timeout": KEEP_ALIVE, "send_timeout": SEND_TIMEOUT,
                                             "max_connections_per_client": PER_CLIENT, "max_header_bytes": 8192}}))
    port = _free_port()
    openapi_mcp = str(Path(sys.executable).parent / "openapi-mcp")
    argv = [sys.executable, "-c", LOW_FD_EXEC, str(OPEN_FILES), openapi_mcp, "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port)]
    process = processes.start("openapi-mcp-slow-clients", argv)
    base_url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base_url}/healthz")
    limits = Path(f"/proc/{process.popen.pid}/limits").read_text()
    assert any(line.startswith("Max open files") and f" {OPEN_FILES} " in line for line in limits.splitlines())
    return Server(base_url, port, process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Outcome:
    kind: str
    seconds: float  # from connect until the server closed the connection
    answer: bytes  # what it said before closing

    @property
    def status(self) -> int | None:
        return int(self.answer[9:12]) if self.answer.startswith(b"HTTP/1.1 ") else None


HEAD = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
       b"Accept: application/json, text/event-stream\r\n"


async def slow_client(port: int, kind: str, source: str, *, limit: float = 20.0) -> Outcome:
    """One hostile connection, kept up until the server closes it (at most `limit` seconds): `nothing`
    sends nothing; `head` trickles a request head that never ends, a byte per TRICKLE_EVERY; `body`
    sends a whole head promising 1,000 bytes of body, then trickles the body likewise."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    started = time.monotonic()
    if kind == "body":
        writer.write(HEAD + b"Content-Length: 1000\r\n\r\n{")
    drip = {"nothing": b"", "head": HEAD + b"X-Slow: " + b"a" * 200, "body": b" " * 200}[kind]

    async def dribble() -> None:
        for i in range(min(len(drip), int(limit / TRICKLE_EVERY))):
            await asyncio.sleep(TRICKLE_EVERY)
            if reader.at_eof() or writer.is_closing():
                return
            try:
                writer.write(drip[i:i + 1])
            except ConnectionError:
                return  # the server closed it meanwhile

    sender = asyncio.create_task(dribble())
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=limit)  # until EOF: the server closed it
    except TimeoutError:
        answer = b"(still open)"
    except ConnectionResetError:
        answer = b"(reset)"
    finally:
        sender.cancel()
        writer.close()
    return Outcome(kind, time.monotonic() - started, answer)


async def legit_traffic(server: Server, until: asyncio.Event) -> list[int]:
    """GET /healthz every 0.2 s on a new connection (at most 200), and SDK client calls, until `until` is set."""
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5, trust_env=False) as http:
        for _ in range(200):
            if until.is_set():
                break
            response = await http.get("/healthz", headers={"connection": "close"})
            statuses.append(response.status_code)
            await asyncio.sleep(0.2)
    return statuses


async def test_slow_clients_from_one_address_are_closed_in_time_while_healthz_and_mcp_keep_working(
        server: Server) -> None:
    # 300 hostile connections from one address (the review's 300, with a 256 open-file limit).
    kinds = ["nothing", "head", "body"] * 100
    done = asyncio.Event()
    legit = asyncio.create_task(legit_traffic(server, done))
    attack = [asyncio.create_task(slow_client(server.port, kind, "127.0.0.2")) for kind in kinds]
    await asyncio.sleep(0.5)
    async with Client(f"{server.base_url}/mcp", mode="legacy") as client:  # the SDK client, during the attack
        assert len((await client.list_tools()).tools) == 10
        result = await client.call_tool("getUser", {"userId": "u1"})
        assert not result.is_error and result.structured_content["id"] == "u1"  # type: ignore[index]
    outcomes = await asyncio.gather(*attack)
    done.set()
    statuses = await legit
    assert statuses and set(statuses) == {200}

    # Beyond its 40, each new connection of the address closed its stalest waiting one, at once; the 40
    # left were closed at their bound. Each got its answer (503, 408), or a reset when its next trickled
    # byte met the closed socket before it read the answer (no lingering close: that would hold the fd).
    held = [o for o in outcomes if o.seconds >= HEADER_TIMEOUT - 0.2]
    made_room = [o for o in outcomes if o.seconds < HEADER_TIMEOUT - 0.2]
    assert len(held) == PER_CLIENT, sorted(round(o.seconds, 1) for o in outcomes)
    assert all(o.status == 503 or o.answer == b"(reset)" for o in made_room), {o.answer[:40] for o in made_room}
    assert all(o.status == 408 or o.answer == b"(reset)" for o in held), {o.answer[:40] for o in held}
    assert sum(o.status == 503 for o in made_room) > len(made_room) // 2
    assert sum(o.status == 408 for o in held) > len(held) // 2
    for outcome in held:
        bound = HEADER_TIMEOUT if outcome.kind in ("nothing", "head") else BODY_TIMEOUT
        assert bound - 0.2 <= outcome.seconds <= bound + MARGIN, outcome
    metrics = httpx.get(f"{server.base_url}/metrics", trust_env=False).text
    assert 'openapi_mcp_connections_closed_total{reason="evicted"}' in metrics
    assert 'openapi_mcp_connections_closed_total{reason="header_timeout"}' in metrics
    assert 'openapi_mcp_connections_closed_total{reason="body_timeout"}' in metrics


async def test_a_server_full_of_waiting_connections_still_lets_new_clients_in(server: Server) -> None:
    # 8 addresses x 40 = 320 connections that send nothing: more than max_connections (128, half of 256).
    attack = [asyncio.create_task(slow_client(server.port, "nothing", f"127.0.0.{2 + i % 8}"))
              for i in range(8 * PER_CLIENT)]
    await asyncio.sleep(0.5)
    fds = len(os.listdir(f"/proc/{server.process.popen.pid}/fd"))
    assert fds < OPEN_FILES
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5, trust_env=False) as http:
        for _ in range(5):  # each on a new connection, into a full server: it closes a waiting one to get in
            assert (await http.get("/healthz", headers={"connection": "close"})).status_code == 200
    async with Client(f"{server.base_url}/mcp", mode="legacy") as client:
        assert len((await client.list_tools()).tools) == 10
    outcomes = await asyncio.gather(*attack)
    statuses = [o.status for o in outcomes]
    # The newest 128 wait until their header timeout; the others were closed (503) to make room
    assert statuses.count(408) + statuses.count(503) == 320, statuses
    assert 128 - 20 <= statuses.count(408) <= 128, statuses.count(408)
    assert all(o.seconds <= HEADER_TIMEOUT + MARGIN for o in outcomes)
    assert "Too many open files" not in server.process.log()
    metrics = httpx.get(f"{server.base_url}/metrics", trust_env=False).text
    assert 'openapi_mcp_connections_closed_total{reason="evicted"}' in metrics


async def test_a_client_whose_connections_all_serve_requests_is_refused_beyond_its_cap(server: Server) -> None:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "streams", "version": "1"}}}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10, trust_env=False,
                                 transport=httpx.AsyncHTTPTransport(local_address="127.0.0.31")) as setup:
        sids = [(await setup.post("/mcp", headers=headers, json=init)).headers["mcp-session-id"]
                for _ in range(PER_CLIENT)]
    limits = httpx.Limits(max_connections=PER_CLIENT + 5)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10, trust_env=False, limits=limits,
                                 transport=httpx.AsyncHTTPTransport(local_address="127.0.0.30", limits=limits)) as http, \
            AsyncExitStack() as streams:
        for sid in sids:  # 40 connections, each serving a GET stream: none is waiting for the client
            stream = await streams.enter_async_context(http.stream("GET", "/mcp", headers={
                "accept": "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}))
            assert stream.status_code == 200
        outcome = await slow_client(server.port, "nothing", "127.0.0.30", limit=5)
        assert outcome.status == 503 and outcome.seconds < 1.0, outcome
    metrics = httpx.get(f"{server.base_url}/metrics", trust_env=False).text
    assert 'openapi_mcp_connections_closed_total{reason="client_full"} 1.0' in metrics


async def test_idle_kept_alive_connections_close_after_the_keep_alive_timeout(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.20", 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'"tools":10}')  # no 408 after a complete answer
    assert KEEP_ALIVE - 0.2 <= time.monotonic() - started <= KEEP_ALIVE + MARGIN


async def test_requests_that_arrive_in_pieces_within_the_bounds_and_pipelined_ones_are_served(server: Server) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "slow", "version": "1"}}}).encode()
    request = HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.21", 0))
    for start in range(0, len(request), len(request) // 5 + 1):  # 5 pieces, 0.3 s apart: 1.5 s in all
        writer.write(request[start:start + len(request) // 5 + 1])
        await asyncio.sleep(0.3)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 200 ") and b"mcp-session-id" in head
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.21", 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3)  # pipelined
    answers = b""
    with pytest.raises(TimeoutError):  # keep reading until idle: all three, then nothing more
        while True:
            answers += await asyncio.wait_for(reader.read(65536), timeout=0.5)
    writer.close()
    assert answers.count(b"HTTP/1.1 200 OK") == 3


async def test_an_oversized_head_is_431(server: Server) -> None:
    for head in (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000):  # complete, and never ending
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.22", 0))
        writer.write(head)
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_client_that_does_not_read_its_responses_is_cut_off(server: Server) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that takes (almost) nothing in
    sock.bind(("127.0.0.23", 0))
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    started = time.monotonic()
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        for _ in range(2000):  # pipelined requests whose answers pile up unread (at most 2000 * 44 bytes)
            sock.send(request)
    except BlockingIOError:
        pass  # the server stopped reading: its answers are stuck
    cut = False
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5, trust_env=False) as http:
        for _ in range(int((SEND_TIMEOUT + 10) / 0.2)):  # never reading from `sock`: poll the server's metrics
            await asyncio.sleep(0.2)
            if 'openapi_mcp_connections_closed_total{reason="send_timeout"} 1.0' in (await http.get("/metrics")).text:
                cut = True
                break
    elapsed = time.monotonic() - started
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    sock.close()
    assert cut and SEND_TIMEOUT - 0.2 <= elapsed <= SEND_TIMEOUT + 4, elapsed
    assert error in (0, 104)  # ECONNRESET once the server's abort arrived
    assert "Exception in ASGI application" not in server.process.log()  # the pipelined answers just stop


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

