"""Real backing services on 127.0.0.1 for the integration tests: Redis and an AuthZEN PDP.

Fixtures (they use `processes` from tests/integration/conftest.py, so everything they start is
stopped at session end):

- `start_redis(port=None)`: a new Debian `redis-server` on a free port, no persistence (`--save ""`,
  no AOF, its own temp dir), ready when it answers PING; `.stop()` it to test an outage.
- `redis_server`: the session's shared one (tests use their own key prefixes, or `.flush()`).
- `start_pdp_server(tuples=..., prefix=...)`: tests/integration/pdp_server.py (AuthZEN over Cedar).
- `pdp_server`: the session's PDP with `PDP_TUPLES`, under AM's path layout `/demo/access/v1/...`,
  reset (mode ok, request log empty, tuples restored) before each test that uses it.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Process, Processes

READY_TIMEOUT: Final = 15.0
PDP_SCRIPT: Final = Path(__file__).resolve().parent / "pdp_server.py"
PDP_CLIENT: Final = ("mcp-server", "pdp-secret")  # the MCP server's credentials at the PDP (AM: its MCP Server entry)
PDP_PREFIX: Final = "/demo"  # AM serves AuthZEN per security domain: https://AM/{domain}/access/v1/evaluation
PDP_TUPLES: Final = (
    "user:alice reader tool:get_weather",
    "user:alice reader tool:list_orders",
    "user:bob reader tool:list_orders",
    "user:carol viewer tool:delete_order",
    "user:dave member group:ops",
    "group:ops#member admin tool:delete_order",
    "client:svc-reports reader tool:list_orders",
    "user:alice reader resource:file:///reports/q1.txt",
    "user:alice reader prompt:summarize",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running redis-server: `url` (`redis://127.0.0.1:PORT/0`), its process."""

    url: str
    port: int
    process: Process

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="session")
def start_redis(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., RedisServer]:
    """Factory: a fresh redis-server on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: `apt-get install redis-server` (scripts/test.sh does it as root)",
                    pytrace=False)
    count = 0

    def start(port: int | None = None) -> RedisServer:
        """A new server; `port`: the port of one that was stopped (to test a recovery)."""
        nonlocal count
        count += 1
        port = port or _free_port()
        workdir = tmp_path_factory.mktemp(f"redis-{count}")
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"]
        server = RedisServer(f"redis://127.0.0.1:{port}/0", port, processes.start(f"redis-{count}", argv))
        deadline = time.monotonic() + READY_TIMEOUT
        while not server.ping():
            if server.process.popen.poll() is not None or time.monotonic() > deadline:
                server.process._fail(f"did not answer PING on port {port}")
            time.sleep(0.02)
        return server

    return start


@pytest.fixture(scope="session")
def redis_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """The session's redis-server (shared: use a key prefix of your own)."""
    return start_redis()


class PdpServer:
    """A running tests/integration/pdp_server.py, with its test controls."""

    def __init__(self, base_url: str, prefix: str, process: Process) -> None:
        self.base_url = base_url
        self.url = f"{base_url}{prefix}/access/v1/evaluation"
        self.evaluations_url = f"{base_url}{prefix}/access/v1/evaluations"
        self.process = process

    def __repr__(self) -> str:
        return f"PdpServer(url={self.url!r})"

    def _post(self, path: str, body: dict[str, Any]) -> None:
        httpx.post(f"{self.base_url}{path}", json=body, trust_env=False).raise_for_status()

    def mode(self, mode: str, delay: float = 0.0) -> None:
        """ok | slow | error500 | garbage | string | no_batch | short_batch | am_example."""
        self._post("/__pdp/mode", {"mode": mode, "delay": delay})

    def tuples(self, tuples: Sequence[str]) -> None:
        self._post("/__pdp/tuples", {"tuples": list(tuples)})

    def reset(self) -> None:
        self._post("/__pdp/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        """Every AuthZEN request since the last reset: path, auth, request_id, content_type, body."""
        response = httpx.get(f"{self.base_url}/__pdp/requests", trust_env=False)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries


@pytest.fixture(scope="session")
def start_pdp_server(processes: Processes) -> Callable[..., PdpServer]:
    """Factory: `start_pdp_server(tuples=PDP_TUPLES, prefix=PDP_PREFIX)`."""
    count = 0

    def start(*, tuples: Sequence[str] = PDP_TUPLES, prefix: str = PDP_PREFIX) -> PdpServer:
        nonlocal count
        count += 1
        port = _free_port()
        argv = [sys.executable, str(PDP_SCRIPT), "--port", str(port), "--client-id", PDP_CLIENT[0],
                "--client-secret", PDP_CLIENT[1], "--prefix", prefix]
        for line in tuples:
            argv += ["--tuple", line]
        process = processes.start(f"pdp-{count}", argv)
        base_url = f"http://127.0.0.1:{port}"
        process.wait_ready(f"{base_url}/__pdp/health")
        return PdpServer(base_url, prefix, process)

    return start


@pytest.fixture(scope="session")
def _session_pdp(start_pdp_server: Callable[..., PdpServer]) -> PdpServer:
    return start_pdp_server()


@pytest.fixture
def pdp_server(_session_pdp: PdpServer) -> Iterator[PdpServer]:
    """The session's PDP, reset before the test."""
    _session_pdp.reset()
    yield _session_pdp
