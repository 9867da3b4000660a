"""`notifications/cancelled` across replicas: two `openapi-mcp serve` processes behind nginx round
robin, sharing a real redis-server (converter/server/cancel_relay.py).

The upstream holds every call until the test releases it, and notes when the MCP server closes the
connection instead (the call was cancelled). Sessions are opened through nginx; the `tools/call`
goes to replica A and the cancel to replica B directly, so the cancel lands on the other replica
every time. Checked: A cancels the call (the upstream connection is closed, the POST answers
`Request cancelled`), with raw HTTP and with the official SDK client abandoning its call; a cancel
with the same request ID on another session cancels nothing; Redis stopped: the call runs to its
end, B logs it once, and once Redis is back on its port cancels are relayed again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.balancer import Pair, Replica, open_session
from tests.integration.conftest import wait_until
from tests.integration.services import RedisServer
from tests.integration.test_faults import LoopbackServer
from tests.integration.test_replicas import SESSION_KEY
from tests.mcp_http import mcp_request

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HOLD_SECONDS: Final = 30.0  # how long the upstream holds a call nobody releases or cancels
# The config's start: HoldingUpstream's one tool (a template: `{upstream}` is its URL; test_modern_cancel uses it too).
HOLD_CONFIG: Final = """
upstream: {{url: "{upstream}", timeout: 60}}
tools:
  - name: hold
    description: Waits until the test releases it, or until the call is cancelled
    method: GET
    path: /hold
    parameters: [{{name: call, in: query, required: true, schema: {{type: string}}}}]
"""
CONFIG: Final = HOLD_CONFIG + """server:
  session_keys: ["${{SESSION_KEY}}"]
  json_response: true
redis: {{url: "{redis}", key_prefix: "cancel-relay:", timeout: 0.3}}
telemetry: {{access_log: "off"}}
"""
INIT: Final = {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "cancel-relay-test", "version": "1"}}
CANCELLED: Final = {"code": -32800, "message": "Request cancelled"}
RELAYED_LINE: Final = "on notifications/cancelled received by another replica"
DOWN_LINE: Final = "cannot relay notifications/cancelled to the other replicas"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HoldingUpstream(LoopbackServer):
    """`GET /hold?call=ID` waits until `release(ID)`, or until the client closes the connection.

    `started[ID]` is set when the request arrives, `ended[ID]` to "closed" (the MCP server gave the
    call up: cancelled) or "answered".
    """

    name = "holding-upstream"

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.ended: dict[str, str] = {}
        self.ended_at: dict[str, float] = {}
        self._releases: dict[str, asyncio.Event] = {}

    def release(self, call: str) -> None:
        self._loop.call_soon_threadsafe(lambda: self._releases.setdefault(call, asyncio.Event()).set())

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            _, target, _ = head.decode("latin-1").split(" ", 2)
            call = parse_qs(target.partition("?")[2]).get("call", ["?"])[0]
            self.started[call] = time.monotonic()
            closed = asyncio.ensure_future(reader.read(1))  # b"" once the MCP server closes the connection
            released = asyncio.ensure_future(self._releases.setdefault(call, asyncio.Event()).wait())
            done, pending = await asyncio.wait({closed, released}, timeout=HOLD_SECONDS,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            self.ended_at[call] = time.monotonic()
            if closed in done:
                self.ended[call] = "closed"
                return
            # Marked before the write: once written, the test thread may read `ended` before this
            # thread runs again.
            self.ended[call] = "answered"
            body = json.dumps({"call": call, "released": True}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str, query: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        raise AssertionError("unused: _connection answers")


@pytest.fixture(scope="module")
def upstream() -> Iterator[HoldingUpstream]:
    with HoldingUpstream() as server:
        yield server


@dataclass
class Cluster(Pair):
    upstream: HoldingUpstream


@pytest.fixture(scope="module")
def cluster(start_pair: Callable[..., Pair], upstream: HoldingUpstream) -> Iterator[Cluster]:
    pair = start_pair(CONFIG, upstream=upstream.url, env={"SESSION_KEY": SESSION_KEY})
    cluster = Cluster(pair.nginx, pair.a, pair.b, pair.redis, upstream)
    yield cluster
    cluster.stop()


def relays(replica: Replica) -> str:
    return replica.readiness("redis-cancels")


async def rpc(http: httpx.AsyncClient, base: str, method: str, params: dict[str, Any] | None = None, *,
              session: str | None = None, id: str | int | None = None) -> httpx.Response:
    headers, body = mcp_request(method, params, session=session, id=None)
    if id is not None:
        body["id"] = id
    return await http.post(f"{base}/mcp", headers=headers, content=json.dumps(body))


@asynccontextmanager
async def call_on(http: httpx.AsyncClient, replica: Replica, session: str, call: str,
                  upstream: HoldingUpstream) -> AsyncIterator[list[httpx.Response]]:
    """`tools/call hold` (JSON-RPC id = `call`) POSTed to `replica`, held by the upstream meanwhile."""
    answer: list[httpx.Response] = []

    async def post() -> None:
        answer.append(await rpc(http, replica.base_url, "tools/call", {"name": "hold", "arguments": {"call": call}},
                                session=session, id=call))

    async with anyio.create_task_group() as group:
        group.start_soon(post)
        await wait_until(f"{call} reaching the upstream", lambda: call in upstream.started)
        yield answer
    assert answer, f"{call}: no answer"


async def test_a_cancel_landing_on_another_replica_ends_the_call_there(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        session = await open_session(http, cluster.nginx.url, INIT)
        async with call_on(http, cluster.a, session, "raw-1", cluster.upstream) as answer:
            sent = time.monotonic()
            note = await rpc(http, cluster.b.base_url, "notifications/cancelled",
                             {"requestId": "raw-1", "reason": "the user pressed stop"}, session=session)
            assert note.status_code == 202
            await wait_until("the upstream call closed", lambda: "raw-1" in cluster.upstream.ended)
        assert cluster.upstream.ended["raw-1"] == "closed"
        print(f"cancel sent to B -> upstream connection closed by A: "
              f"{(cluster.upstream.ended_at['raw-1'] - sent) * 1000:.1f} ms")
        assert answer[0].status_code == 200
        assert answer[0].json() == {"jsonrpc": "2.0", "id": "raw-1", "error": CANCELLED}  # as cancelled on A itself
        assert RELAYED_LINE in cluster.a.process.log()


class CancelsElsewhere(httpx2.AsyncBaseTransport):
    """The SDK client's HTTP: every request to replica A, except a `notifications/cancelled` to B."""

    def __init__(self, b_port: int) -> None:
        self.b_port = b_port
        self.inner = httpx2.AsyncHTTPTransport()
        self.cancels = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and b'"notifications/cancelled"' in request.content:
            self.cancels += 1
            request.url = request.url.copy_with(port=self.b_port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_sdk_client_abandoning_a_call_is_heard_by_the_replica_running_it(cluster: Cluster) -> None:
    routing = CancelsElsewhere(cluster.b.port)
    async with httpx2.AsyncClient(transport=routing, timeout=httpx2.Timeout(30, read=120)) as http, \
            Client(streamable_http_client(f"{cluster.a.base_url}/mcp", http_client=http), mode="legacy") as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "hold", {"call": "sdk-1"})
            await wait_until("sdk-1 reaching the upstream", lambda: "sdk-1" in cluster.upstream.started)
            group.cancel_scope.cancel()  # the caller gives up: the SDK sends notifications/cancelled
        await wait_until("the upstream call closed", lambda: "sdk-1" in cluster.upstream.ended)
        assert cluster.upstream.ended["sdk-1"] == "closed" and routing.cancels == 1
        cluster.upstream.release("sdk-2")  # the session goes on
        result = await client.call_tool("hold", {"call": "sdk-2"})
        assert not result.is_error and '"released": true' in str(result.content[0])


async def test_a_cancel_on_another_session_cancels_nothing(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        session = await open_session(http, cluster.nginx.url, INIT)
        other = await open_session(http, cluster.nginx.url, INIT)
        relayed_before = cluster.a.process.log().count(RELAYED_LINE)
        async with call_on(http, cluster.a, session, "mine-1", cluster.upstream) as answer:
            for replica in (cluster.b, cluster.a):  # relayed from B, and on A itself: the session decides
                note = await rpc(http, replica.base_url, "notifications/cancelled", {"requestId": "mine-1"},
                                 session=other)
                assert note.status_code == 202
            await anyio.sleep(1.0)  # a relayed cancel takes milliseconds
            assert "mine-1" not in cluster.upstream.ended
            note = await rpc(http, cluster.b.base_url, "notifications/cancelled", {"requestId": "mine-1"},
                             session=session)
            assert note.status_code == 202
            await wait_until("the upstream call closed", lambda: "mine-1" in cluster.upstream.ended)
        assert cluster.upstream.ended["mine-1"] == "closed"
        assert answer[0].json()["error"] == CANCELLED
        assert cluster.a.process.log().count(RELAYED_LINE) == relayed_before + 1


async def test_redis_down_the_call_runs_to_its_end_and_cancels_are_relayed_once_it_is_back(
        cluster: Cluster, start_redis: Callable[..., RedisServer]) -> None:
    cluster.redis.stop()
    await wait_until("B noticing Redis is gone", lambda: relays(cluster.b) == "degraded", 20)
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        session = await open_session(http, cluster.nginx.url, INIT)
        async with call_on(http, cluster.a, session, "down-1", cluster.upstream) as answer:
            for _ in range(2):
                note = await rpc(http, cluster.b.base_url, "notifications/cancelled", {"requestId": "down-1"},
                                 session=session)
                assert note.status_code == 202
            await anyio.sleep(1.0)
            assert "down-1" not in cluster.upstream.ended
            cluster.upstream.release("down-1")
        assert cluster.upstream.ended["down-1"] == "answered"
        assert answer[0].json()["result"]["isError"] is False  # ran to its end
        assert cluster.b.process.log().count(DOWN_LINE) == 1

        cluster.redis = start_redis(port=cluster.redis.port)  # back on its port
        await wait_until("both relays subscribed again", lambda: relays(cluster.a) == relays(cluster.b) == "reachable",
                         30)
        async with call_on(http, cluster.a, session, "back-1", cluster.upstream) as answer:
            note = await rpc(http, cluster.b.base_url, "notifications/cancelled", {"requestId": "back-1"},
                             session=session)
            assert note.status_code == 202
            await wait_until("the upstream call closed", lambda: "back-1" in cluster.upstream.ended)
        assert answer[0].json()["error"] == CANCELLED
