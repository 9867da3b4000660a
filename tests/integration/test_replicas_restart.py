"""Replicas restarted and killed under load behind nginx round robin (issue 13, item 6).

One official SDK client (handshake era, one session, sealed IDs) keeps a bounded number of
`tools/call`s in flight through nginx while:

- each of the three replicas in turn gets SIGTERM, drains, exits and starts again on its port
  (a rolling restart): **no call fails**. A stopped replica refuses connections, and nginx sends
  the request to the next one (`proxy_next_upstream error timeout`: safe for a POST because
  nothing of it was sent). What makes the drain lose nothing is shown on its own first: the
  replica answers the requests that still arrive on its kept-alive connections (with
  `Connection: close`) instead of closing them under nginx (converter.server.connections), and
  it accepts the connections the kernel already completed before it closes its listening socket,
  whose new SYNs it drops first (converter.serve); the session is rebuilt from its ID wherever
  the next call lands, also by many calls arriving together on a restarted replica;
- one replica is killed with SIGKILL: only the calls in flight on it fail (nginx's `502`: they
  had been sent, so nginx does not send them again, which could run a tool twice), and the
  client goes on with the same session without initializing again.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent

from tests.integration.balancer import Nginx, Replica, spread
from tests.integration.conftest import McpServer
from tests.integration.services import RedisServer
from tests.integration.test_replicas import SESSION_KEY

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

WORKERS = 4  # calls in flight at once on the one session
MAX_CALLS = 4000  # the load's bound in count (it stops earlier when the scenario is over)
CALL_TIMEOUT = 15.0
EXIT_TIMEOUT = 20.0  # seconds a replica has to drain and exit after SIGTERM
CONFIG = """
spec: {spec}
upstream: {{url: "{mock}"}}
server:
  session_keys: ["${{SESSION_KEY}}"]
  json_response: true
telemetry: {{access_log: "off"}}
redis: {{url: "{redis}", key_prefix: "replicas-restart:", timeout: 0.3}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Load:
    """Calls made by the workers: how many succeeded, and every failure with when it happened."""

    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    started: int = 0
    stop: bool = False

    def ok_since(self, mark: int) -> int:
        return self.ok - mark


@asynccontextmanager
async def connect(url: str, sessions: list[str | None]) -> AsyncIterator[Client]:
    """The SDK client (handshake era); `sessions` gets the Mcp-Session-Id of every request it sends."""
    async with create_mcp_http_client() as http:
        async def note(request: object) -> None:
            sessions.append(request.headers.get("mcp-session-id"))  # type: ignore[attr-defined]

        http.event_hooks["request"].append(note)
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            yield client


def one_session(sessions: list[str | None]) -> None:
    """The client initialized once (the first request had no session) and kept that session to the end."""
    assert sessions[0] is None and len(set(sessions[1:])) == 1 and None not in sessions[1:], set(sessions)


async def worker(client: Client, load: Load, deadline: float) -> None:
    while not load.stop and load.started < MAX_CALLS and time.monotonic() < deadline:
        load.started += 1
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                result = await client.call_tool("getUser", {"userId": "u1"})
            first = result.content[0]
            if result.is_error or not isinstance(first, TextContent) or "Alice Johnson" not in first.text:
                load.failures.append((time.monotonic(), f"tool error: {result.content}"))
            else:
                load.ok += 1
        except Exception as exc:  # a failed call is counted, and the load goes on
            load.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await anyio.sleep(0.05)


@pytest.fixture
def cluster(start_replicas: Callable[..., list[Replica]], start_nginx: Callable[..., Nginx],
            start_redis: Callable[..., RedisServer], spec_path: Path,
            mock_api_url: str) -> Iterator[tuple[Nginx, list[Replica], Callable[[int], Replica]]]:
    redis = start_redis()
    config = CONFIG.format(spec=spec_path, mock=mock_api_url, redis=redis.url)
    replicas = start_replicas(config, env={"SESSION_KEY": SESSION_KEY})
    nginx = start_nginx([r.port for r in replicas])

    def restart(index: int) -> Replica:
        """Start replica `index` again on its port (after it exited)."""
        [replica] = start_replicas(config, 1, env={"SESSION_KEY": SESSION_KEY}, ports=[replicas[index].port])
        replicas[index] = replica
        return replica

    yield nginx, replicas, restart
    nginx.process.stop()
    for replica in replicas:
        replica.process.stop()
    redis.stop()


async def wait_exit(replica: Replica) -> float:
    """Seconds until the replica's process exited (bounded)."""
    began = time.monotonic()
    await until(lambda: replica.process.popen.poll() is not None, EXIT_TIMEOUT,
                f"{replica.name} did not exit after SIGTERM")
    return time.monotonic() - began


def read_response(sock: socket.socket) -> tuple[str, bytes]:
    """One HTTP/1.1 response with a Content-Length: its head (lowercase) and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection closed before a whole response head: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    text = head.decode("latin-1").lower()
    length = int(next(line.split(":", 1)[1] for line in text.split("\r\n") if line.startswith("content-length:")))
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "the connection closed in the middle of a body"
        body += piece
    return text, body


def test_a_draining_server_answers_a_request_on_a_kept_alive_connection_and_then_closes_it(
        start_server: Callable[..., McpServer]) -> None:
    """What makes a rolling restart lose nothing: on SIGTERM uvicorn alone closes idle kept-alive
    connections at once, so a request a balancer sends on one at that moment is lost after it was
    sent (nginx: `upstream prematurely closed connection`, a 502 for a POST)."""
    server = start_server()
    port = int(server.base_url.rsplit(":", 1)[1])
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as kept:
        kept.sendall(request)
        head, _ = read_response(kept)
        assert head.startswith("http/1.1 200") and "connection: close" not in head, head
        terminated = time.monotonic()
        os.kill(server.process.popen.pid, signal.SIGTERM)
        time.sleep(0.5)  # the shutdown has begun (uvicorn's own waits 0.1 s before it waits for connections)
        with pytest.raises(ConnectionRefusedError):  # no new connection: a balancer goes elsewhere
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert server.process.popen.poll() is None, "exited with a kept-alive connection open"
        kept.sendall(request)
        head, _ = read_response(kept)
        assert head.startswith("http/1.1 200") and "connection: close" in head, head
        assert kept.recv(1) == b""  # closed after the response, by the server
    deadline = time.monotonic() + 10
    while server.process.popen.poll() is None:
        assert time.monotonic() < deadline, "did not exit after its last connection closed"
        time.sleep(0.05)
    assert server.process.popen.returncode in (0, -signal.SIGTERM), server.process.log()
    assert time.monotonic() - terminated < 5, "the drain waited for more than the connections"


def test_connections_opened_while_a_server_shuts_down_are_served_or_refused_never_reset(
        start_server: Callable[..., McpServer]) -> None:
    """Closing a listening socket resets the connections the kernel completed but the server had not
    accepted yet; their request was sent, so a balancer cannot retry a POST elsewhere. A flood of new
    connections across the SIGTERM: each one is served (accepted in time) or refused (nothing sent)."""
    server = start_server()
    port = int(server.base_url.rsplit(":", 1)[1])
    counts = {"served": 0, "refused": 0, "reset": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + 2.5
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    def flood() -> None:
        while time.monotonic() < stop_at:
            outcome = "served"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(request)
                    assert sock.recv(16).startswith(b"HTTP/1.1 200")
            except ConnectionRefusedError:
                outcome = "refused"
                time.sleep(0.002)
            except ConnectionResetError:
                outcome = "reset"
            with lock:
                counts[outcome] += 1

    threads = [threading.Thread(target=flood) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.8)
    os.kill(server.process.popen.pid, signal.SIGTERM)
    for thread in threads:
        thread.join(15)
    print(f"connections across a SIGTERM: {counts}")
    assert counts["reset"] == 0 and counts["served"] > 0 and counts["refused"] > 0, counts


async def test_a_rolling_restart_under_load_fails_no_call(
        cluster: tuple[Nginx, list[Replica], Callable[[int], Replica]]) -> None:
    nginx, replicas, restart = cluster
    load = Load()
    deadline = time.monotonic() + 120
    exits: list[float] = []
    signalled: list[float] = []
    restarted: list[float] = []
    sessions: list[str | None] = []
    async with connect(f"{nginx.url}/mcp", sessions) as client, anyio.create_task_group() as group:
        await client.list_tools()  # the SDK client checks results against the output schemas it listed
        for _ in range(WORKERS):
            group.start_soon(worker, client, load, deadline)
        await until(lambda: load.ok >= 60, 30, "the load never started")
        for index in range(len(replicas)):
            old = replicas[index]
            signalled.append(time.monotonic())
            os.kill(old.process.popen.pid, signal.SIGTERM)
            exits.append(await wait_exit(old))
            restarted.append(time.monotonic())
            assert old.process.popen.returncode in (0, -signal.SIGTERM), old.process.log()
            assert "Traceback" not in old.process.log(), old.process.log()
            mark = load.ok
            restart(index)
            await until(lambda m=mark: load.ok - m >= 60, 30, "calls stopped after a restart")  # type: ignore[misc]
        mark = load.ok
        await until(lambda: load.ok - mark >= 60, 30, "calls stopped after the last restart")
        load.stop = True
    print(f"rolling restart: {load.ok} calls, {len(load.failures)} failed; exits after SIGTERM: "
          + ", ".join(f"{e:.2f} s" for e in exits))
    assert load.failures == [], ([f"{at - signalled[0]:.3f} s after the first SIGTERM: {what}"
                                  for at, what in load.failures],
                                 [f"{t - signalled[0]:.3f}" for t in signalled + restarted],
                                 # what nginx answered other than 200/202, and why (a reset, a refusal...)
                                 [line for line in nginx.access_log().splitlines()
                                  if '" 200 ' not in line and '" 202 ' not in line][-10:],
                                 nginx.error_log()[-3000:])
    # every restarted replica served calls of the session (rebuilt from its sealed ID)
    served = spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser")
    assert all(s > 0 for s in served), served
    assert all(r >= 1 for r in spread(replicas, "openapi_mcp_sessions_rebuilt_total"))
    one_session(sessions)
    assert "upstream prematurely closed" not in nginx.error_log()


async def test_a_replica_killed_under_load_fails_only_its_calls_in_flight(
        cluster: tuple[Nginx, list[Replica], Callable[[int], Replica]]) -> None:
    nginx, replicas, _ = cluster
    load = Load()
    deadline = time.monotonic() + 60
    sessions: list[str | None] = []
    async with connect(f"{nginx.url}/mcp", sessions) as client, anyio.create_task_group() as group:
        await client.list_tools()
        for _ in range(WORKERS):
            group.start_soon(worker, client, load, deadline)
        await until(lambda: load.ok >= 60, 30, "the load never started")
        before = load.ok
        replicas[1].process.popen.kill()
        killed_at = time.monotonic()
        await until(lambda: load.ok - before >= 300, 45, "the client did not go on after the kill")
        load.stop = True
    print(f"SIGKILL: {load.ok} calls, {len(load.failures)} failed: {[f for _, f in load.failures]}")
    # At most the calls in flight at that moment (one per worker, and only those on the killed replica)
    assert len(load.failures) <= WORKERS, load.failures
    assert all(at - killed_at < 2.0 for at, _ in load.failures), load.failures
    assert all("Server returned an error response" in f for _, f in load.failures), load.failures
    one_session(sessions)
    survivors = [replicas[0], replicas[2]]
    assert all(s > 0 for s in spread(survivors, "openapi_mcp_tool_calls_total", tool="getUser"))
