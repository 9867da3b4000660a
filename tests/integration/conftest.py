"""Real processes on 127.0.0.1 for the integration tests: the marketplace mock, `openapi-mcp serve`.

Each process gets a free port (bind port 0, read it, close), writes stdout and stderr to a
log file under the session's tmp dir, is polled until it answers (bounded), and is always
stopped at the end (terminate, then kill). When a process does not come up, the test fails
with its log, so a broken start is diagnosed from the test output alone.

Fixtures: `mock_api_url`, `mcp_server` / `mcp_server_url` (session), `start_server(upstream=...,
extra=[...])` for more servers, `mock_api` (function: the mock reset, with `.requests()`),
`node_bin` (tests/node/node_modules/.bin, or a loud failure), `free_port`, `openapi_mcp_command`,
`spec_path`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import anyio
import anyio.to_thread
import httpx
import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "mock_api" / "marketplace.yaml"
NODE_DIR: Final = ROOT / "tests" / "node"
# bench/ is a directory of scripts, not a package: the tests that check its judges (the corpus and
# fidelity slices) import its modules by name from here. Appended, so none of its names shadows a library.
BENCH: Final = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))
VENV_BIN: Final = Path(sys.executable).parent
READY_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 5.0


def _free_port() -> int:
    """A port nothing listens on right now (the OS picks it; the tiny reuse race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openapi_mcp() -> str:
    """The `openapi-mcp` console script of the venv running the tests."""
    path = VENV_BIN / "openapi-mcp"
    if not path.exists():
        pytest.fail(f"{path} is missing; install the package with `bash scripts/test.sh` (pip install -e '.[test]')")
    return str(path)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: unbuffered output, and no proxy for loopback."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


@dataclass
class Process:
    """A started child process whose output goes to `log_path`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> str:
        """The process's stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate, then kill if it does not exit within `STOP_TIMEOUT`."""
        if self.popen.poll() is None:
            self.popen.terminate()
            self.reap()

    def reap(self) -> None:
        """Wait for a signalled process; kill it if it does not exit within `STOP_TIMEOUT`."""
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)

    def wait_ready(self, url: str, *, timeout: float = READY_TIMEOUT) -> httpx.Response:
        """Poll `url` until it answers 200; fail the test with the process's log otherwise."""
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    self._fail(f"exited with code {self.popen.returncode} before answering {url}")
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        return response
                    last_error = f"HTTP {response.status_code}"
                except httpx.TransportError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
        self._fail(f"did not answer 200 at {url} within {timeout:g} s (last: {last_error})")

    def _fail(self, what: str) -> NoReturn:
        message = f"{self.name} {what}\ncommand: {' '.join(self.argv)}\n--- {self.log_path} ---\n{self.log()}"
        print(message, file=sys.stderr)
        pytest.fail(message, pytrace=False)


async def wait_until(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll `check` until it is true; fail after `seconds`. `check` runs in a worker thread: a
    blocking read (`httpx.get` of a replica's /readyz) must not stall this test's event loop, which
    may be serving an upstream that the replica is probing or calling meanwhile."""
    deadline = time.monotonic() + seconds
    while not await anyio.to_thread.run_sync(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.05)


class Processes:
    """Starts processes for the session and stops every one of them at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[Process] = []

    def start(self, name: str, argv: Sequence[str], **env: str) -> Process:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                list(argv), cwd=ROOT, env=child_env(**env), stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT,
            )
        process = Process(name, list(argv), log_path, popen)
        self._started.append(process)
        return process

    def stop_all(self) -> None:
        """Signal every process first, then wait: one by one, the ~160 stops of a run took 12 s."""
        running = [process for process in reversed(self._started) if process.popen.poll() is None]
        for process in running:
            process.popen.terminate()
        for process in running:
            process.reap()


@dataclass(frozen=True)
class McpServer:
    """A running `openapi-mcp serve`: its MCP endpoint, base URL and process."""

    url: str
    base_url: str
    process: Process


class MockApi:
    """The running marketplace mock, with its debug routes."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"MockApi(url={self.url!r})"

    def reset(self) -> None:
        """Restore the seed data and clear the request log."""
        httpx.post(f"{self.url}/__mock/reset", trust_env=False).raise_for_status()

    def refuse(self, count: int) -> None:
        """Make the next `count` requests answer 401 invalid_token."""
        httpx.post(f"{self.url}/__mock/refuse", json={"count": count}, trust_env=False).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Every request the mock received since the last reset, oldest first."""
        response = httpx.get(f"{self.url}/__mock/requests", trust_env=False)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """The session's process starter; everything it started is stopped at session end."""
    started = Processes(tmp_path_factory.mktemp("process-logs"))
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def mock_api_url(processes: Processes) -> str:
    """Base URL of `python -m mock_api` on a free loopback port."""
    port = _free_port()
    process = processes.start(
        "mock_api", [sys.executable, "-m", "mock_api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    )
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{url}/__mock/requests")
    return url


@pytest.fixture(scope="session")
def start_server(processes: Processes, mock_api_url: str) -> Callable[..., McpServer]:
    """Factory: start `openapi-mcp serve` for the marketplace; `upstream` defaults to the mock."""
    count = 0

    def start(*, upstream: str | None = None, extra: Sequence[str] = ()) -> McpServer:
        nonlocal count
        count += 1
        port = _free_port()
        argv = [
            _openapi_mcp(), "serve", str(SPEC), "--upstream", upstream or mock_api_url,
            "--host", "127.0.0.1", "--port", str(port), *extra,
        ]
        process = processes.start(f"openapi-mcp-{count}", argv)
        base_url = f"http://127.0.0.1:{port}"
        health = process.wait_ready(f"{base_url}/healthz").json()
        assert health["status"] == "ok", health
        return McpServer(url=f"{base_url}/mcp", base_url=base_url, process=process)

    return start


@pytest.fixture(scope="session")
def mcp_server(start_server: Callable[..., McpServer]) -> McpServer:
    """The session's `openapi-mcp serve` in front of the mock."""
    return start_server()


@pytest.fixture(scope="session")
def mcp_server_url(mcp_server: McpServer) -> str:
    """The MCP endpoint (`http://127.0.0.1:PORT/mcp`) of the session's server."""
    return mcp_server.url


@pytest.fixture
def mock_api(mock_api_url: str) -> MockApi:
    """The mock, reset (seed data, empty request log) before the test."""
    api = MockApi(mock_api_url)
    api.reset()
    return api


@pytest.fixture(scope="session")
def node_bin() -> Path:
    """tests/node/node_modules/.bin; a missing install fails loudly instead of skipping silently."""
    bin_dir = NODE_DIR / "node_modules" / ".bin"
    if not bin_dir.is_dir():
        pytest.fail(
            f"{bin_dir} is missing: the Node.js test peers are not installed. "
            "Run the tests with `bash scripts/test.sh` (it runs `npm ci` in tests/node).",
            pytrace=False,
        )
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH; the Node.js test peers need it", pytrace=False)
    return bin_dir


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Returns a function giving a loopback port nothing listens on right now."""
    return _free_port


@pytest.fixture(scope="session")
def openapi_mcp_command() -> str:
    """Absolute path of the venv's `openapi-mcp` console script."""
    return _openapi_mcp()


@pytest.fixture(scope="session")
def spec_path() -> Path:
    """The marketplace's OpenAPI document, as the mock serves it."""
    return SPEC

from tests.integration.authserver import AuthServer, auth_server, start_auth_server  # noqa: E402, F401
from tests.integration.balancer import start_nginx, start_pair, start_replicas  # noqa: E402, F401
from tests.integration.services import (  # noqa: E402, F401
    _session_pdp,
    pdp_server,
    redis_server,
    start_pdp_server,
    start_redis,
)
