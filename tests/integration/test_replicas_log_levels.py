"""`logging/setLevel` across replicas: two `openapi-mcp serve` processes in passthrough mode in
front of a tiny MCP server whose tool `log_twice` sends an info and a debug log message during the
call (headers_mcp.py), behind nginx round robin, sharing a real redis-server
(converter/passthrough/log_levels.py).

Checked: a level set on replica A holds for the session's calls on replica B, and the other way
round; the official SDK client through nginx gets only the levels it asked for on every call;
Redis stopped: a replica goes by the levels it took itself, logs the outage once and `/readyz`
says degraded; once Redis is back, levels are shared again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Final

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LoggingMessageNotificationParams

from tests.integration.balancer import Pair, Replica, open_session, post
from tests.integration.conftest import wait_until
from tests.integration.services import RedisServer
from tests.integration.test_mcp_upstream import Upstream, headers_upstream  # noqa: F401 - a fixture
from tests.integration.test_replicas import SESSION_KEY

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CONFIG: Final = """
mcp_upstream: "{upstream}"
server:
  session_keys: ["${{SESSION_KEY}}"]
redis: {{url: "{redis}", key_prefix: "log-levels:", timeout: 0.3}}
telemetry: {{access_log: "off"}}
"""
INIT: Final = {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "log-levels-test", "version": "1"}}
DOWN_LINE: Final = "a logging/setLevel reaches only the replica that took it"
READY_KEY: Final = "redis-log-levels"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cluster(start_pair: Callable[..., Pair], headers_upstream: Upstream) -> Iterator[Pair]:  # noqa: F811
    pair = start_pair(CONFIG, upstream=headers_upstream.url, env={"SESSION_KEY": SESSION_KEY})
    yield pair
    pair.stop()


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer, SSE or JSON."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    data = (line[5:] for line in response.text.splitlines() if line.startswith("data:"))
    return [json.loads(text) for text in data if text.strip()]


async def set_level(http: httpx.AsyncClient, replica: Replica, session: str, level: str) -> None:
    answer = messages(await post(http, replica.base_url, {"jsonrpc": "2.0", "id": "level", "method": "logging/setLevel",
                                                          "params": {"level": level}}, session))
    assert answer[-1].get("result") == {}, answer


async def heard(http: httpx.AsyncClient, replica: Replica, session: str) -> list[str]:
    """`tools/call log_twice` on `replica`: the texts of the log messages its answer carried."""
    answer = messages(await post(http, replica.base_url, {"jsonrpc": "2.0", "id": "call", "method": "tools/call",
                                                          "params": {"name": "log_twice", "arguments": {}}}, session))
    assert answer[-1]["result"]["content"][0]["text"] == "logged", answer
    return [m["params"]["data"] for m in answer if m.get("method") == "notifications/message"]


async def test_a_level_set_on_one_replica_holds_for_the_sessions_calls_on_the_other(cluster: Pair) -> None:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        session = await open_session(http, cluster.a.base_url, INIT)
        assert await heard(http, cluster.b, session) == ["starting", "details"]  # no level yet: all
        await set_level(http, cluster.a, session, "info")
        for replica in (cluster.b, cluster.a, cluster.b):
            assert await heard(http, replica, session) == ["starting"], replica.base_url
        await set_level(http, cluster.b, session, "debug")  # and back, from the other side
        for replica in (cluster.a, cluster.b):
            assert await heard(http, replica, session) == ["starting", "details"], replica.base_url
        other = await open_session(http, cluster.b.base_url, INIT)  # a level belongs to its session only
        await set_level(http, cluster.b, other, "error")
        assert await heard(http, cluster.a, other) == []
        assert await heard(http, cluster.a, session) == ["starting", "details"]


async def test_the_sdk_client_through_the_balancer_hears_only_what_it_asked_for(cluster: Pair) -> None:
    logged: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logged.append(params)

    async with httpx2.AsyncClient(timeout=30) as http, Client(
            streamable_http_client(f"{cluster.nginx.url}/mcp", http_client=http), mode="legacy",
            logging_callback=on_log) as client:
        with anyio.fail_after(30):
            # (the SDK's own call warns: deprecated in 2026)
            await client.session._dispatcher.send_raw_request("logging/setLevel", {"level": "info"}, {})
            for _ in range(6):  # round robin: three calls on each replica
                await client.call_tool("log_twice", {})
    assert [p.data for p in logged] == ["starting"] * 6


async def test_redis_down_each_replica_goes_by_its_own_levels_logs_once_and_comes_back(
        cluster: Pair, start_redis: Callable[..., RedisServer]) -> None:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        session = await open_session(http, cluster.a.base_url, INIT)
        await set_level(http, cluster.b, session, "info")  # B took info, while Redis is up
        cluster.redis.stop()
        await set_level(http, cluster.a, session, "error")  # A takes error: only A knows it now
        assert await heard(http, cluster.a, session) == []
        assert await heard(http, cluster.b, session) == ["starting"]  # B goes by its own
        assert [r.readiness(READY_KEY) for r in (cluster.a, cluster.b)] == ["degraded"] * 2
        for replica in (cluster.a, cluster.b):
            assert replica.process.log().count(DOWN_LINE) == 1, replica.process.log()

        cluster.redis = start_redis(port=cluster.redis.port)  # back on its port, empty
        await anyio.sleep(2.1)  # converter.redis_client.RETRY_INTERVAL: the next command is sent
        await set_level(http, cluster.a, session, "debug")
        await wait_until("A's level written to Redis again", lambda: cluster.a.readiness(READY_KEY) == "reachable", 10)
        assert await heard(http, cluster.b, session) == ["starting", "details"]
        assert cluster.b.readiness(READY_KEY) == "reachable"
