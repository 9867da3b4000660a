"""Direct answers in sessions with SSE answers (converter/server/deferred_sse.py): JSON unless the
call streams something, the SDK's bytes otherwise, keepalive pings, the router kept safe. Streams
through real upstreams (log messages, progress, elicitation across replicas): tests/integration."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification, JSONRPCResponse

from converter.server import deferred_sse
from converter.server.deferred_sse import DeferredAnswer
from tests.test_direct_calls import CALLS, headers, open_session, served

pytestmark = pytest.mark.anyio

NOTE = JSONRPCNotification(jsonrpc="2.0", method="notifications/message",
                           params={"level": "info", "logger": "t", "data": "hello"})
RESULT = JSONRPCResponse(jsonrpc="2.0", id=7, result={"content": []})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def final_message(answer: httpx.Response) -> Any:
    """The JSON-RPC message an answer carries: its JSON body, or its event stream's last event."""
    if answer.headers["content-type"].startswith("application/json"):
        return answer.json()
    events = [line[5:].strip() for line in answer.text.splitlines() if line.startswith("data:")]
    return json.loads(events[-1])


async def test_a_call_with_nothing_to_stream_is_answered_as_json_with_the_sdks_message() -> None:
    seen: dict[bool, list[tuple[str, int, Any]]] = {}
    for direct in (True, False):
        async with served(direct=direct, json_response=False) as (app, client):
            session = await open_session(client, "2025-11-25")
            seen[direct] = []
            for name, body in CALLS:
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                answer = await client.post("/mcp", headers=headers("2025-11-25", session), content=content)
                if answer.status_code == 200 and answer.content:
                    seen[direct].append((name, answer.status_code, final_message(answer)))
                    if direct and app.state.session_manager.direct_answers:
                        assert answer.headers["mcp-session-id"] == session
            if direct:
                assert app.state.session_manager.direct_answers > 0
    assert seen[True] == seen[False]


class Sent:
    """An ASGI `send` that records what it is given; `fail`: it raises (a client gone)."""

    def __init__(self, fail: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail = fail

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("the client left")
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


async def test_the_first_message_commits_an_event_stream_and_the_result_ends_it() -> None:
    sent = Sent()
    answer = DeferredAnswer(sent, {"mcp-session-id": "s1"})
    answer.expected = 1
    await answer.send(EventMessage(NOTE, None))
    await answer.drain()
    assert await answer.finish(RESULT)
    start = sent.messages[0]
    assert start["type"] == "http.response.start" and (b"mcp-session-id", b"s1") in start["headers"]
    assert dict(start["headers"])[b"content-type"].startswith(b"text/event-stream")
    events = [json.loads(line[5:]) for line in sent.body.decode().splitlines() if line.startswith("data:")]
    assert events == [NOTE.model_dump(by_alias=True, exclude_unset=True),
                      RESULT.model_dump(by_alias=True, exclude_unset=True)]
    assert sent.messages[-1]["more_body"] is False
    await answer.send(EventMessage(NOTE, None))  # after the end: dropped
    assert sent.body.decode().count("data:") == 2


async def test_the_result_waits_for_every_message_written_for_the_call() -> None:
    sent = Sent()
    answer = DeferredAnswer(sent, {})
    answer.expected = 2  # the dispatcher wrote two; the router delivers the second late
    await answer.send(EventMessage(NOTE, None))
    late = asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(
        answer.send(EventMessage(NOTE, None))))
    await asyncio.wait_for(answer.drain(), 5)
    late.cancel()
    assert await answer.finish(RESULT)
    assert sent.body.decode().count("data:") == 3


async def test_nothing_streamed_means_json_and_nothing_sent_here() -> None:
    sent = Sent()
    answer = DeferredAnswer(sent, {})
    assert not await answer.finish(RESULT)  # the transport answers JSON itself
    assert sent.messages == []


async def test_a_silent_call_is_committed_and_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deferred_sse, "KEEPALIVE_SECONDS", 0.05)
    sent = Sent()
    answer = DeferredAnswer(sent, {})
    await asyncio.sleep(0.2)
    assert answer.streaming and sent.body.count(b": ping") >= 2
    assert await answer.finish(RESULT)
    assert b'"id":7' in sent.body and sent.messages[-1]["more_body"] is False


async def test_a_client_gone_mid_stream_never_breaks_the_router() -> None:
    answer = DeferredAnswer(Sent(fail=True), {})
    answer.expected = 1
    await answer.send(EventMessage(NOTE, None))  # raises nothing into the router's task
    await answer.drain()
    assert await answer.finish(RESULT)


async def test_a_client_accepting_json_only_is_refused_as_the_sdk_refuses_it() -> None:
    seen = []
    for direct in (True, False):
        async with served(direct=direct, json_response=False) as (app, client):
            session = await open_session(client, "2025-11-25")
            answer = await client.post("/mcp", headers=headers("2025-11-25", session, accept="application/json"),
                                       json=CALLS[0][1])
            seen.append((answer.status_code, answer.content))
            assert app.state.session_manager.direct_answers == 0
    assert seen[0] == seen[1] and seen[0][0] == 406
