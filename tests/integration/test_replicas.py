"""Three `openapi-mcp serve` replicas behind nginx round robin (no affinity) serve one client (issue 13).

Sessions: `server.session_keys` seals the session into its ID, so whichever replica a request
lands on serves it (converter.server.shared_sessions); the official SDK client (handshake era
and 2026-07-28) and the Inspector CLI go through nginx and never see a 404.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent

from tests.integration.balancer import Nginx, Replica, spread
from tests.integration.test_inspector_cli import inspector, parse

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SESSION_KEY = "integration-session-key-" + "x" * 20
CONFIG = """
spec: {spec}
upstream: {{url: "{mock}"}}
server:
  session_keys: ["${{SESSION_KEY}}"]
  json_response: {json_response}
  allowed_hosts: [replicas]   # the Host nginx sends when it does not pass the client's (its upstream's name)
telemetry: {{access_log: "off"}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster(start_replicas: Callable[..., list[Replica]], start_nginx: Callable[..., Nginx], spec_path: Path,
            mock_api_url: str) -> Iterator[tuple[Nginx, list[Replica]]]:
    replicas = start_replicas(CONFIG.format(spec=spec_path, mock=mock_api_url, json_response="true"),
                              env={"SESSION_KEY": SESSION_KEY})
    nginx = start_nginx([r.port for r in replicas])
    yield nginx, replicas
    nginx.process.stop()
    for replica in replicas:
        replica.process.stop()


@asynccontextmanager
async def connect(url: str, *, mode: str = "legacy") -> AsyncIterator[Client]:
    async with create_mcp_http_client() as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def many_calls(url: str, count: int, *, mode: str = "legacy") -> int:
    """`count` tool calls (and lists) on one session through the balancer; the number that succeeded."""
    ok = 0
    async with connect(url, mode=mode) as client:
        for index in range(count):
            if index % 5 == 0:
                assert len((await client.list_tools()).tools) == 10
            result = await client.call_tool("getUser", {"userId": "u1"})
            first = result.content[0]
            assert isinstance(first, TextContent) and not result.is_error, result.content
            assert json.loads(first.text)["name"] == "Alice Johnson"
            ok += 1
    return ok


async def test_a_handshake_client_keeps_its_session_across_three_replicas(
        cluster: tuple[Nginx, list[Replica]]) -> None:
    nginx, replicas = cluster
    before = spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser")
    rebuilt_before = sum(spread(replicas, "openapi_mcp_sessions_rebuilt_total"))
    assert await many_calls(f"{nginx.url}/mcp", 30) == 30
    after = spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser")
    calls = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(calls) == 30 and all(c >= 5 for c in calls), calls  # round robin: every replica served calls
    # One session, opened on one replica, rebuilt once on each of the two others.
    assert sum(spread(replicas, "openapi_mcp_sessions_rebuilt_total")) - rebuilt_before == 2


async def test_a_2026_client_is_served_by_every_replica(cluster: tuple[Nginx, list[Replica]]) -> None:
    nginx, replicas = cluster
    before = spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser")
    assert await many_calls(f"{nginx.url}/mcp", 12, mode="auto") == 12
    after = spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser")
    assert all(a > b for a, b in zip(after, before, strict=True))


def test_the_inspector_cli_lists_and_calls_through_the_balancer(cluster: tuple[Nginx, list[Replica]],
                                                                node_bin: Path, tmp_path: Path) -> None:
    nginx, _ = cluster
    for _ in range(3):  # initialize, notifications/initialized and the request each land on another replica
        listed = parse(inspector(node_bin, f"{nginx.url}/mcp", tmp_path, "--method", "tools/list"))
        assert len(listed["tools"]) == 10
        called = parse(inspector(node_bin, f"{nginx.url}/mcp", tmp_path, "--method", "tools/call",
                                 "--tool-name", "getUser", "--tool-arg", "userId=u1"))
        assert not called.get("isError"), called


async def test_sse_answers_keep_the_session_across_replicas(
        start_replicas: Callable[..., list[Replica]], start_nginx: Callable[..., Nginx], spec_path: Path,
        mock_api_url: str) -> None:
    replicas = start_replicas(CONFIG.format(spec=spec_path, mock=mock_api_url, json_response="false"),
                              env={"SESSION_KEY": SESSION_KEY})
    nginx = start_nginx([r.port for r in replicas])
    try:
        assert await many_calls(f"{nginx.url}/mcp", 9) == 9
        assert all(c > 0 for c in spread(replicas, "openapi_mcp_tool_calls_total", tool="getUser"))
    finally:
        nginx.process.stop()
        for replica in replicas:
            replica.process.stop()




async def test_a_proxy_that_sends_its_own_host_is_served_once_allowed(
        cluster: tuple[Nginx, list[Replica]], start_nginx: Callable[..., Nginx]) -> None:
    """nginx's default `Host` is the upstream block's name: 421 from a loopback listener unless allowed."""
    _, replicas = cluster
    own_host = start_nginx([r.port for r in replicas], pass_host=False)
    try:
        assert await many_calls(f"{own_host.url}/mcp", 6) == 6
    finally:
        own_host.process.stop()


LIMITED_CONFIG = """
spec: {spec}
upstream: {{url: "{mock}"}}
server: {{trusted_proxies: {trusted}}}
telemetry: {{access_log: "off"}}
limits:
  - {{per: subject, requests: 2, window: 60}}   # auth off: per client address
"""


@pytest.mark.parametrize(("trusted", "statuses"), [
    ('["127.0.0.1/32"]', [200, 200, 200]),  # the proxy on loopback is believed: two clients, the second not limited
    ("[]", [200, 200, 429]),  # nobody is believed: both are the proxy's address, the third request is over
], ids=["trusted", "untrusted"])
def test_trusted_proxies_decide_the_client_address_behind_a_proxy(
        start_replicas: Callable[..., list[Replica]], spec_path: Path, mock_api_url: str, trusted: str,
        statuses: list[int]) -> None:
    [server] = start_replicas(LIMITED_CONFIG.format(spec=spec_path, mock=mock_api_url, trusted=trusted), 1)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    try:
        got = [httpx.post(f"{server.base_url}/mcp", json=init, trust_env=False, timeout=10,
                          headers={**headers, "x-forwarded-for": client}).status_code
               for client in ("203.0.113.1", "203.0.113.1", "203.0.113.2")]
        assert got == statuses
    finally:
        server.process.stop()
