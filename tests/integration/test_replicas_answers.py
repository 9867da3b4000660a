"""The client's answers to the server's requests across replicas: two `openapi-mcp serve` processes
in passthrough mode in front of server-everything (whose tools ask the client for an elicitation or
a sampling during the call), behind nginx round robin, sharing a real redis-server
(converter/server/answer_relay.py).

Checked: with raw HTTP, the call's SSE stream read from replica A, the `elicitation/create` it
carries answered on replica B, A's call ends with the answer; the official SDK client through
nginx, whose answers land on either replica, gets every elicitation and sampling call answered
and the replicas report relayed answers; Redis stopped: the answer is lost (the call times out),
B logs it once and `/readyz` says degraded, and once Redis is back answers are relayed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageResult, ElicitResult, TextContent

from tests.integration.balancer import Pair, Replica, open_session, post
from tests.integration.conftest import Processes, wait_until
from tests.integration.services import RedisServer
from tests.integration.test_mcp_upstream import Upstream, start_everything
from tests.integration.test_replicas import SESSION_KEY
from tests.mcp_http import mcp_request

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CONFIG: Final = """
mcp_upstream: {{url: "{upstream}", relay: [sampling, elicitation], timeout: {timeout}}}
server:
  session_keys: ["${{SESSION_KEY}}"]
redis: {{url: "{redis}", key_prefix: "answer-relay:", timeout: 0.3}}
telemetry: {{access_log: "off"}}
"""
CALL_TIMEOUT: Final = 4  # mcp_upstream.timeout: how long a call whose answer was lost waits
INIT: Final = {"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}, "sampling": {}},
               "clientInfo": {"name": "answer-relay-test", "version": "1"}}
DOWN_LINE: Final = "cannot relay the clients' answers to the other replicas"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def everything(processes: Processes, node_bin: Path) -> Upstream:
    return start_everything(processes, "server-everything-answers")


@pytest.fixture(scope="module")
def cluster(start_pair: Callable[..., Pair], everything: Upstream) -> Iterator[Pair]:
    pair = start_pair(CONFIG, upstream=everything.url, timeout=CALL_TIMEOUT, env={"SESSION_KEY": SESSION_KEY})
    yield pair
    pair.stop()


async def elicit_on(http: httpx.AsyncClient, caller: Replica, answerer: Replica, session: str,
                    call_id: str) -> dict[str, Any]:
    """`tools/call trigger-elicitation-request` on `caller`, its SSE stream read as it comes; the
    `elicitation/create` on it answered on `answerer`; the call's final JSON-RPC message."""
    headers, _ = mcp_request("ping", None, session=session, id=None)
    body = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call",
            "params": {"name": "trigger-elicitation-request", "arguments": {}}}
    async with http.stream("POST", f"{caller.base_url}/mcp", headers=headers, content=json.dumps(body)) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("method") == "elicitation/create":
                answer = {"jsonrpc": "2.0", "id": message["id"],
                          "result": {"action": "accept", "content": {"name": "Ada Lovelace"}}}
                answered = await post(http, answerer.base_url, answer, session)
                assert answered.status_code == 202, answered.text
            elif message.get("id") == call_id:
                return dict(message)
    raise AssertionError(f"{call_id}: the stream ended without the call's answer")


def text_of(message: dict[str, Any]) -> str:
    return " ".join(part.get("text", "") for part in message.get("result", {}).get("content", []))


async def test_an_answer_landing_on_another_replica_reaches_the_call_waiting_for_it(cluster: Pair) -> None:
    delivered = cluster.a.metric("openapi_mcp_answers_relayed_total", result="delivered")
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        session = await open_session(http, cluster.nginx.url, INIT)
        with anyio.fail_after(20):
            final = await elicit_on(http, cluster.a, cluster.b, session, "raw-1")
        assert "Ada Lovelace" in text_of(final), final
        assert cluster.a.metric("openapi_mcp_answers_relayed_total", result="delivered") == delivered + 1
        with anyio.fail_after(20):  # and the other way round, in the same session
            final = await elicit_on(http, cluster.b, cluster.a, session, "raw-2")
        assert "Ada Lovelace" in text_of(final), final


async def test_the_sdk_client_through_the_balancer_gets_every_request_answered(cluster: Pair) -> None:
    before = sum(r.metric("openapi_mcp_answers_relayed_total", result="delivered") for r in (cluster.a, cluster.b))

    async def sample(context: Any, params: Any) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="forty-two"),
                                   model="test-model", stop_reason="endTurn")

    async def elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Ada Lovelace"})

    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60)) as http, Client(
            streamable_http_client(f"{cluster.nginx.url}/mcp", http_client=http), mode="legacy",
            sampling_callback=sample, elicitation_callback=elicit) as client:
        with anyio.fail_after(60):
            for _ in range(3):
                elicited = await client.call_tool("trigger-elicitation-request", {})
                assert "Ada Lovelace" in " ".join(c.text for c in elicited.content if isinstance(c, TextContent))
                sampled = await client.call_tool("trigger-sampling-request", {"prompt": "answer?", "maxTokens": 9})
                assert "forty-two" in " ".join(c.text for c in sampled.content if isinstance(c, TextContent))
    after = sum(r.metric("openapi_mcp_answers_relayed_total", result="delivered") for r in (cluster.a, cluster.b))
    assert after > before  # round robin sent some of the answers to the other replica


async def test_redis_down_loses_the_answer_logs_once_and_comes_back(
        cluster: Pair, start_redis: Callable[..., RedisServer]) -> None:
    cluster.redis.stop()
    await wait_until("B noticing Redis is gone", lambda: cluster.b.readiness("redis-answers") == "degraded", 20)
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        session = await open_session(http, cluster.nginx.url, INIT)
        finals: list[dict[str, Any]] = []

        async def lost(call: str) -> None:
            finals.append(await elicit_on(http, cluster.a, cluster.b, session, call))

        with anyio.fail_after(CALL_TIMEOUT + 15):  # two answers lost at once: one timeout's wait
            async with anyio.create_task_group() as group:
                for call in ("down-1", "down-2"):
                    group.start_soon(lost, call)
        assert len(finals) == 2
        for final in finals:
            assert "Ada Lovelace" not in text_of(final), final  # lost: the call timed out
        assert cluster.b.process.log().count(DOWN_LINE) == 1

        cluster.redis = start_redis(port=cluster.redis.port)  # back on its port
        await wait_until("both relays subscribed again",
                         lambda: all(r.readiness("redis-answers") == "reachable" for r in (cluster.a, cluster.b)), 30)
        with anyio.fail_after(20):
            final = await elicit_on(http, cluster.a, cluster.b, session, "back-1")
        assert "Ada Lovelace" in text_of(final), final
