"""The client's answer to a request the server sent it during a call, relayed to the replica that sent
it (converter/server/answer_relay.py): two passthrough apps in process with the same
`server.session_keys` and `redis:` (an in-memory bus), in front of a real upstream MCP server (the
SDK's MCPServer on a loopback port) whose tool elicits from the client.

The call runs on replica A, which relays the upstream's `elicitation/create` on the call's stream;
the client POSTs its answer to replica B: A's call gets it and ends with it. An answer too large to
relay ends the call with an error rather than a hang; an answer in another session reaches nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ErrorData
from pydantic import BaseModel

import converter.redis_client
from converter.config import load_settings
from converter.redis_client import session_digest
from converter.server.answer_relay import MAX_MESSAGE_BYTES, AnswerRelay, encode, parse, tag_of
from converter.server.app import create_app
from tests.fake_redis import Bus, wait_until
from tests.mcp_http import mcp_request

pytestmark = pytest.mark.anyio
KEY = "answer-relay-key-" + "a" * 30
INIT = {"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Name(BaseModel):
    name: str


def upstream_server() -> MCPServer:
    server = MCPServer("asking")

    @server.tool()
    async def ask_name(ctx: Context) -> str:
        """Asks the client for a name."""
        answer = await ctx.elicit("Your name?", Name)
        return f"hello {answer.data.name}" if answer.action == "accept" and answer.data else f"no name ({answer.action})"

    return server


@asynccontextmanager
async def serving_upstream() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(upstream_server().streamable_http_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        await wait_until(lambda: server.started, 10)
        yield f"http://127.0.0.1:{port}/mcp"
        server.should_exit = True


@asynccontextmanager
async def two_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[tuple[Bus, list[httpx.AsyncClient], list[AnswerRelay]]]:
    """Replicas A and B of one passthrough config sharing a `Bus` as their Redis."""
    bus = Bus()
    monkeypatch.setattr(converter.redis_client, "redis_client", bus.client)
    monkeypatch.setattr("converter.server.pubsub.RETRY_SECONDS", 0.05)
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(serving_upstream())
        config = tmp_path / "replica.yaml"
        config.write_text(json.dumps({
            "mcp_upstream": {"url": url, "relay": ["elicitation"]}, "telemetry": {"access_log": "off"},
            "redis": {"url": "redis://redis.test:6379/0", "key_prefix": "t:"}, "server": {"session_keys": [KEY]}}))
        clients, relays = [], []
        for _ in range(2):
            app = create_app(load_settings(str(config)))
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", timeout=20)))
            relays.append(app.state.answer_relay)
        await wait_until(lambda: all(relay.state == "reachable" for relay in relays))
        yield bus, clients, relays


def post(client: httpx.AsyncClient, body: dict[str, Any], session: str | None) -> Any:
    headers, _ = mcp_request("ping", None, session=session, id=None)
    return client.post("/mcp", headers=headers, content=json.dumps(body))


async def open_session(client: httpx.AsyncClient) -> str:
    init = await post(client, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT}, None)
    assert init.status_code == 200, init.text
    session: str = init.headers["mcp-session-id"]
    assert (await post(client, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)).status_code == 202
    return session


async def call_answered_elsewhere(caller: httpx.AsyncClient, answerer: httpx.AsyncClient, relay: AnswerRelay,
                                  session: str, answer: dict[str, Any], *, answer_session: str | None = None) -> Any:
    """tools/call on `caller` (`relay` its answer relay); the elicitation request it sends the client
    is answered (`answer`: the response's result or error part) on `answerer`; the call's final
    JSON-RPC message. (httpx's ASGI transport hands over an SSE answer only once it is complete, so
    the request's ID is read from the session's dispatcher, where it waits for its answer.)"""
    headers, _ = mcp_request("ping", None, session=session, id=None)
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "ask_name", "arguments": {}}}
    final: list[Any] = []

    async def call() -> None:
        response = await caller.post("/mcp", headers=headers, content=json.dumps(body))
        final.append(message_of(response))

    dispatcher = relay._sessions[session_digest(session)][0]
    before = set(dispatcher._pending)  # requests of calls given up on still wait upstream
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await wait_until(lambda: len(dispatcher._pending) > len(before))
        [request_id] = set(dispatcher._pending) - before
        answered = await post(answerer, {"jsonrpc": "2.0", "id": request_id, **answer}, answer_session or session)
        assert answered.status_code == 202, answered.text
    return final[0]


async def settle(clients: list[httpx.AsyncClient], relays: list[AnswerRelay], session: str) -> None:
    """Decline what the upstream still waits on in `session` (the calls given up on), on the replica
    that asked, so every call has ended before the replicas shut down."""
    for client, relay in zip(clients, relays, strict=True):
        entry = relay._sessions.get(session_digest(session))
        if entry is None:
            continue
        pending = entry[0]._pending
        for request_id in list(pending):
            await post(client, {"jsonrpc": "2.0", "id": request_id, "result": {"action": "decline"}}, session)
        await wait_until(lambda pending=pending: not pending)


def message_of(response: httpx.Response) -> Any:
    """The JSON-RPC message of an SSE answer: its last event."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    return json.loads([line[5:] for line in response.text.splitlines() if line.startswith("data:")][-1])


async def test_an_answer_posted_to_another_replica_reaches_the_call_waiting_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_replicas(tmp_path, monkeypatch) as (_, (a, b), relays):
        session = await open_session(a)
        with anyio.fail_after(10):
            final = await call_answered_elsewhere(a, b, relays[0], session, {"result": {"action": "accept",
                                                                             "content": {"name": "Ada"}}})
        assert final["result"]["content"][0]["text"] == "hello Ada"
        assert relays[1].published == 1 and relays[0].delivered == 1
        shown_a, shown_b = (await a.get("/metrics")).text, (await b.get("/metrics")).text
        assert 'openapi_mcp_answers_relayed_total{result="delivered"} 1.0' in shown_a
        assert 'openapi_mcp_answers_relayed_total{result="published"} 1.0' in shown_b
        # answered on the replica that asked: nothing goes through Redis
        with anyio.fail_after(10):
            final = await call_answered_elsewhere(a, a, relays[0], session, {"result": {"action": "decline"}})
        assert final["result"]["content"][0]["text"] == "no name (decline)"
        assert relays[1].published == 1 and relays[0].published == 0


async def test_an_answer_too_large_to_relay_ends_the_call_with_an_error_not_a_hang(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_replicas(tmp_path, monkeypatch) as (_, (a, b), relays):
        session = await open_session(a)
        huge = {"result": {"action": "accept", "content": {"name": "x" * MAX_MESSAGE_BYTES}}}
        with anyio.fail_after(10):
            final = await call_answered_elsewhere(a, b, relays[0], session, huge)
        assert relays[1].too_large == 1 and relays[0].delivered == 1
        assert final["error"]["code"] == -32603  # what the upstream made of the error it got for an answer
        assert "larger than the 1048576 bytes that replicas relay" in final["error"]["message"]


async def test_an_answer_in_another_session_reaches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_replicas(tmp_path, monkeypatch) as (_, (a, b), relays):
        session, other = await open_session(a), await open_session(b)
        async with anyio.create_task_group() as group:
            group.cancel_scope.deadline = anyio.current_time() + 1.5
            # the answer is posted in `other`, a session of the same (anonymous) caller: it names
            # a request of `session` but reaches nothing, and the call goes on waiting
            group.start_soon(partial(call_answered_elsewhere, a, b, relays[0], session, {"result": {"action": "decline"}},
                                     answer_session=other))
        assert relays[1].published == 1 and relays[0].heard == 1 and relays[0].delivered == 0
        await settle([a, b], relays, session)


async def test_with_requests_pending_on_both_replicas_an_answer_reaches_only_the_one_it_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_replicas(tmp_path, monkeypatch) as (_, (a, b), relays):
        session = await open_session(a)
        headers, _ = mcp_request("ping", None, session=session, id=None)
        body = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "ask_name", "arguments": {}}}
        async with anyio.create_task_group() as group:
            group.start_soon(partial(b.post, "/mcp", headers=headers, content=json.dumps(body)))  # B asks too
            await wait_until(lambda: bool(relays[1]._sessions) and bool(relays[1]._sessions[session_digest(session)][0]._pending))
            [asked_by_b] = relays[1]._sessions[session_digest(session)][0]._pending
            with anyio.fail_after(10):
                final = await call_answered_elsewhere(a, b, relays[0], session, {"result": {"action": "decline"}})
            assert final["result"]["content"][0]["text"] == "no name (decline)"
            assert asked_by_b in relays[1]._sessions[session_digest(session)][0]._pending  # still waiting
            await settle([a, b], relays, session)
        assert relays[0].delivered == 1 and relays[1].delivered == 0


async def test_redis_down_loses_the_answer_logs_once_and_says_degraded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with two_replicas(tmp_path, monkeypatch) as (bus, (a, b), relays):
        session = await open_session(a)
        bus.down = True
        for _ in range(2):
            async with anyio.create_task_group() as group:
                group.cancel_scope.deadline = anyio.current_time() + 1
                group.start_soon(call_answered_elsewhere, a, b, relays[0], session, {"result": {"action": "decline"}})
        failed = [r for r in caplog.records if "cannot relay the clients' answers" in r.getMessage()]
        assert len(failed) == 1 and relays[1].state == "degraded" and relays[0].delivered == 0
        assert relays[1].dropped == 2
        bus.down = False
        await wait_until(lambda: all(relay.state == "reachable" for relay in relays))
        with anyio.fail_after(10):
            final = await call_answered_elsewhere(a, b, relays[0], session, {"result": {"action": "decline"}})
        assert final["result"]["content"][0]["text"] == "no name (decline)"
        await settle([a, b], relays, session)


def test_messages_are_bounded_and_only_tagged_ids_name_a_replica() -> None:
    digest = "d" * 64
    encoded, fits = encode("r1", digest, "0123456789ab-3", {"action": "accept"})
    assert fits and parse(encoded, "r2") == (digest, "0123456789ab-3", {"action": "accept"})
    assert parse(encoded, "r1") is None  # our own
    error, fits = encode("r1", digest, "0123456789ab-3", ErrorData(code=-1, message="no"))
    assert fits and parse(error, "r2") == (digest, "0123456789ab-3", ErrorData(code=-1, message="no"))
    big, fits = encode("r1", digest, "0123456789ab-3", {"x": "y" * MAX_MESSAGE_BYTES})
    assert not fits and len(big) < 1000 and isinstance(parse(big, "r2")[2], ErrorData)  # type: ignore[index]
    assert parse(json.dumps({"from": "r1", "session": digest, "id": "a-1", "result": 3}), "r2") is None
    assert parse(json.dumps({"from": "r1", "session": "short", "id": "a-1", "result": {}}), "r2") is None
    assert tag_of("0123456789ab-3") == "0123456789ab"
    assert tag_of(3) is None and tag_of("3") is None and tag_of("0123456789ab-") is None
