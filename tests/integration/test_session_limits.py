"""Session-table exhaustion (issue 12, item 2): `openapi-mcp serve` as a real process, flooded with
`initialize` POSTs over raw HTTP from other loopback addresses (127.0.0.2 and up), while the official
SDK client (127.0.0.1) keeps working.

Checked: a client that re-initializes in a loop (300 times, never ending a session) is never refused
and never holds more than its cap, because its own oldest idle sessions are ended; callers that
together fill `max_sessions` get 503 with `Retry-After` and a JSON-RPC error, existing sessions keep
working, and a DELETE frees a slot; a caller whose sessions all have a GET stream open gets 429;
sessions that pass `session_idle_timeout` leave the table and the SDK's. Every loop is bounded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx
import pytest
from mcp import Client

if TYPE_CHECKING:
    from conftest import McpServer, Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "mock_api" / "marketplace.yaml"
INIT: Final = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "flood", "version": "1"}}}
HEADERS: Final = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture
def start(processes: Processes, mock_api_url: str, free_port: Callable[[], int], tmp_path: Path,
          openapi_mcp_command: str) -> Callable[..., McpServer]:
    """Start `openapi-mcp serve` for the marketplace with these `server:` settings."""
    from conftest import McpServer

    def run(**server: Any) -> McpServer:
        config = tmp_path / "config.yaml"
        config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": mock_api_url},
                                      "telemetry": {"access_log": "off"}, "server": server}))
        port = free_port()
        process = processes.start(f"openapi-mcp-sessions-{port}", [
            openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
        base_url = f"http://127.0.0.1:{port}"
        process.wait_ready(f"{base_url}/healthz")
        return McpServer(url=f"{base_url}/mcp", base_url=base_url, process=process)

    return run


@asynccontextmanager
async def caller(server: McpServer, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the MCP endpoint from `address` (a loopback address of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, base_url=server.base_url, timeout=10, trust_env=False) as http:
        yield http


async def initialize(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/mcp", headers=HEADERS, json=INIT)


async def alive(http: httpx.AsyncClient, sid: str) -> bool:
    answer = await http.post("/mcp", headers={**HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"},
                             json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert answer.status_code in (200, 404), answer.text
    return answer.status_code == 200


def metric(server: McpServer, sample: str) -> float:
    for line in httpx.get(f"{server.base_url}/metrics", trust_env=False).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def sdk_calls(server: McpServer) -> None:
    """What a real client does: the SDK over streamable HTTP (its session, a GET stream), then DELETE."""
    async with Client(server.url, mode="legacy") as client:
        assert len((await client.list_tools()).tools) == 10
        result = await client.call_tool("getUser", {"userId": "u1"})
        assert not result.is_error


async def test_a_client_that_reinitializes_in_a_loop_hurts_only_itself(start: Callable[..., McpServer]) -> None:
    server = start(max_sessions=20, max_sessions_per_principal=5)
    async with Client(server.url, mode="legacy") as bystander, caller(server, "127.0.0.2") as flood:
        with anyio.fail_after(60):
            statuses = [(await initialize(flood)).status_code for _ in range(300)]  # the review's loop, scaled
        assert statuses == [200] * 300  # never refused: it only ever ends its own idle sessions
        assert metric(server, "openapi_mcp_sessions") == 6  # its 5 and the bystander's
        assert metric(server, "openapi_mcp_sessions_evicted_total") == 295
        assert len((await bystander.list_tools()).tools) == 10  # the session from before the flood
        await sdk_calls(server)  # and a new client


async def test_callers_that_fill_the_server_get_503_with_retry_after_and_a_delete_frees_a_slot(
        start: Callable[..., McpServer]) -> None:
    server = start(max_sessions=20, max_sessions_per_principal=5)
    async with AsyncExitStack() as stack:
        bystander = await stack.enter_async_context(Client(server.url, mode="legacy"))
        callers = [await stack.enter_async_context(caller(server, f"127.0.0.{n}")) for n in range(3, 8)]
        opened: list[str] = []
        for http in callers[:3]:  # 3 callers x 5 sessions, plus the bystander's: 16
            opened += [(await initialize(http)).headers["mcp-session-id"] for _ in range(5)]
        last = [(await initialize(callers[3])).headers["mcp-session-id"] for _ in range(4)]  # 20: full
        for http in (callers[3], callers[4]):  # under their own caps, but the server is full
            refused = await initialize(http)
            assert refused.status_code == 503
            assert 590 <= int(refused.headers["retry-after"]) <= 600  # when the oldest idle session expires
            assert refused.json() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": "The server has its maximum of 20 open sessions; retry later"}}
        assert len((await bystander.list_tools()).tools) == 10
        assert all([await alive(callers[0], sid) for sid in opened[:5]])
        ended = await callers[3].delete("/mcp", headers={"mcp-session-id": last[0], "mcp-protocol-version": "2025-06-18"})
        assert ended.status_code == 200
        assert (await initialize(callers[4])).status_code == 200
        assert metric(server, 'openapi_mcp_sessions_refused_total{reason="server_limit"}') == 2


async def test_a_caller_whose_sessions_all_hold_a_stream_is_refused_with_429(start: Callable[..., McpServer]) -> None:
    server = start(max_sessions_per_principal=2)
    async with caller(server, "127.0.0.2") as http, AsyncExitStack() as streams:
        sids = [(await initialize(http)).headers["mcp-session-id"] for _ in range(2)]
        for sid in sids:  # a GET stream each (as the SDK client opens one): in use, so not evictable
            stream = await streams.enter_async_context(http.stream("GET", "/mcp", headers={
                "accept": "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}))
            assert stream.status_code == 200
        refused = await initialize(http)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
        assert refused.json()["error"]["message"] == (
            "Too many open sessions for this caller (2, all in use); end one (HTTP DELETE) or retry later")
        await sdk_calls(server)  # another address: unaffected
        await streams.aclose()  # the streams end, the sessions stay (idle once the server sees the disconnects)
        for _ in range(50):  # bounded: 5 s
            if (await initialize(http)).status_code == 200:
                break
            await anyio.sleep(0.1)
        else:
            pytest.fail("no session could be opened after the streams ended")
        assert [await alive(http, sid) for sid in sids].count(True) == 1  # the older idle one made room


async def test_idle_sessions_free_their_slot(start: Callable[..., McpServer]) -> None:
    server = start(max_sessions=2, max_sessions_per_principal=2, session_idle_timeout=1)
    async with caller(server, "127.0.0.2") as http:
        sids = [(await initialize(http)).headers["mcp-session-id"] for _ in range(2)]
        assert metric(server, "openapi_mcp_sessions") == 2
        await anyio.sleep(1.5)
        assert metric(server, "openapi_mcp_sessions") == 0
        assert [await alive(http, sid) for sid in sids] == [False, False]  # the SDK ended them too
    await sdk_calls(server)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
