"""Direct answers for `tools/call` and `tools/list` (converter.server.direct_calls): the same bytes as
the SDK's own path for every handshake protocol version, cancellation, the idle timer, and the
requests that must still go the SDK's way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette

import mock_api
from converter.config import load_settings
from converter.server.app import create_app
from converter.server.direct_requests import direct_request

pytestmark = pytest.mark.anyio
BASE = "http://127.0.0.1:8000"
Upstream = Callable[[Any, Any, Any], Awaitable[None]]


@asynccontextmanager
async def served(*, direct: bool, upstream: Upstream | None = None,
                 **server: Any) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    settings = settings.model_copy(update={"server": settings.server.model_copy(
        update={"direct_calls": direct, **server})})
    app = create_app(settings, upstream_transport=httpx.ASGITransport(app=upstream or mock_api.create_app()))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield app, client


def headers(version: str, session: str | None = None, **extra: str) -> dict[str, str]:
    found = {"content-type": "application/json", "accept": "application/json, text/event-stream",
             "mcp-protocol-version": version, **extra}
    if session is not None:
        found["mcp-session-id"] = session
    return found


async def open_session(client: httpx.AsyncClient, version: str, *, initialized: bool = True) -> str:
    init = await client.post("/mcp", headers=headers(version), json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    if initialized:
        done = await client.post("/mcp", headers=headers(version, session),
                                 json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202
    return session


TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
CALLS: list[tuple[str, Any]] = [
    ("list", TOOLS_LIST),
    ("list with params", {"jsonrpc": "2.0", "id": "l-2", "method": "tools/list", "params": {}}),
    ("call", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "listUserOrders", "arguments": {"userId": "u1"}}}),
    ("string id, unicode", {"jsonrpc": "2.0", "id": "größe", "method": "tools/call",
                            "params": {"name": "getUser", "arguments": {"userId": "u2"}}}),
    ("bad arguments", {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                       "params": {"name": "getUser", "arguments": {"userId": 7}}}),
    ("upstream 404", {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                      "params": {"name": "getUser", "arguments": {"userId": "nobody"}}}),
    ("unknown tool", {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nope", "arguments": {}}}),
    ("no name", {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"arguments": {}}}),
    ("params not an object", {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": [1]}),
    ("no params", {"jsonrpc": "2.0", "id": 8, "method": "tools/call"}),
    ("bool id", {"jsonrpc": "2.0", "id": True, "method": "tools/list"}),
    ("extra member", {"jsonrpc": "2.0", "id": 9, "method": "tools/list", "x": 1}),
    ("batch", [TOOLS_LIST]),
    ("other method", {"jsonrpc": "2.0", "id": 10, "method": "ping"}),
    ("notification", {"jsonrpc": "2.0", "method": "tools/list"}),
    ("wrong jsonrpc", {"jsonrpc": "1.0", "id": 11, "method": "tools/list"}),
    ("not JSON", b'{"jsonrpc": "2.0", "id": 12, "method": "tools/list"'),
]
DIRECT = {"list", "list with params", "call", "string id, unicode", "bad arguments", "upstream 404", "unknown tool",
          "no name", "no params"}


async def answers(direct: bool, version: str) -> tuple[list[tuple[str, int, dict[str, str], bytes]], int]:
    """Each of CALLS on one session: (name, status, headers without the session ID, body); and the
    number of them answered directly."""
    seen = []
    async with served(direct=direct) as (app, client):
        session = await open_session(client, version)
        for name, body in CALLS:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            answer = await client.post("/mcp", headers=headers(version, session), content=content)
            kept = {k: v for k, v in answer.headers.items() if k not in ("mcp-session-id", "date")}
            assert answer.headers.get("mcp-session-id") in (session, None), name
            seen.append((name, answer.status_code, kept, answer.content))
        return seen, app.state.session_manager.direct_answers


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
async def test_direct_answers_are_byte_equal_to_the_sdks_for_every_protocol_version(version: str) -> None:
    direct, count = await answers(True, version)
    sdk, none = await answers(False, version)
    for mine, theirs in zip(direct, sdk, strict=True):
        assert mine == theirs, mine[0]
    assert (count, none) == (len(DIRECT), 0)
    outcome = {name: json.loads(body) for name, status, _, body in direct if status == 200 and body}
    assert outcome["call"]["result"]["isError"] is False and "u1" in body_of(outcome["call"])  # the upstream's
    assert outcome["upstream 404"]["result"]["isError"] is True
    assert outcome["bad arguments"]["result"]["isError"] is True
    assert outcome["no name"]["error"]["code"] == -32602


INITIALIZE = {"jsonrpc": "2.0", "id": "i", "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


async def stateless_answers(direct: bool, version: str | None,
                            session: str | None) -> tuple[list[tuple[str, int, dict[str, str], bytes]], int]:
    """Each of CALLS (and an initialize) in stateless mode, with the protocol version header `version`
    (None: none) and a session ID header `session` (ignored there): (name, status, headers, body)."""
    sent = {k: v for k, v in headers(version or "", session).items() if version or k != "mcp-protocol-version"}
    seen = []
    async with served(direct=direct, stateless=True) as (app, client):
        for name, body in [*CALLS, ("initialize", INITIALIZE)]:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            answer = await client.post("/mcp", headers=sent, content=content)
            assert "mcp-session-id" not in answer.headers, name
            seen.append((name, answer.status_code, {k: v for k, v in answer.headers.items() if k != "date"},
                         answer.content))
        return seen, app.state.session_manager.direct_answers


@pytest.mark.parametrize(("version", "session"), [*((v, None) for v in HANDSHAKE_PROTOCOL_VERSIONS),
                                                  (None, None), ("2025-06-18", "stray-session-id")])
async def test_stateless_direct_answers_are_byte_equal_to_the_sdks(version: str | None, session: str | None) -> None:
    direct, count = await stateless_answers(True, version, session)
    sdk, none = await stateless_answers(False, version, session)
    for mine, theirs in zip(direct, sdk, strict=True):
        assert mine == theirs, mine[0]
    assert (count, none) == (len(DIRECT), 0)
    outcome = {name: json.loads(body) for name, status, _, body in direct if status == 200 and body}
    assert outcome["call"]["result"]["isError"] is False and "u1" in body_of(outcome["call"])
    assert outcome["initialize"]["result"]["serverInfo"]["name"]  # the SDK's way, answered as before


async def test_stateless_direct_answers_meet_the_same_host_accept_and_content_checks() -> None:
    base = headers("2025-06-18")
    refused = [{**base, "host": "evil.example"}, {**base, "accept": "text/event-stream"},
               {**base, "content-type": "text/plain"}]
    seen = []
    for direct in (True, False):
        async with served(direct=direct, stateless=True) as (app, client):
            answers = [await client.post("/mcp", headers=sent, content=json.dumps(TOOLS_LIST)) for sent in refused]
            seen.append([(a.status_code, a.content) for a in answers])
            assert app.state.session_manager.direct_answers == 0
            assert (await client.post("/mcp", headers=base, json=TOOLS_LIST)).status_code == 200
            assert app.state.session_manager.direct_answers == (1 if direct else 0)
    assert seen[0] == seen[1]
    assert [status for status, _ in seen[0]] == [421, 406, 400]


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
async def test_a_call_before_notifications_initialized_meets_the_same_gate(version: str) -> None:
    bodies = []
    for direct in (True, False):
        async with served(direct=direct) as (_, client):
            session = await open_session(client, version, initialized=False)
            answer = await client.post("/mcp", headers=headers(version, session), json=TOOLS_LIST)
            bodies.append((answer.status_code, answer.content))
    assert bodies[0] == bodies[1]


async def test_the_session_id_must_match_and_a_foreign_host_is_refused_as_before() -> None:
    async with served(direct=True) as (app, client):
        session = await open_session(client, "2025-06-18")
        other = await client.post("/mcp", headers=headers("2025-06-18", session + "x"), json=TOOLS_LIST)
        assert other.status_code == 404
        foreign = await client.post("/mcp", headers=headers("2025-06-18", session, host="evil.example"),
                                    json=TOOLS_LIST)
        assert foreign.status_code == 421
        no_json = await client.post("/mcp", headers=headers("2025-06-18", session, accept="text/event-stream"),
                                    json=TOOLS_LIST)
        assert no_json.status_code == 406
        assert app.state.session_manager.direct_answers == 0


def body_of(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


def slow_upstream(started: anyio.Event, cancelled: anyio.Event, seconds: float) -> Upstream:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id": "u1", "name": "slow", "email": "s@x.test"}'})

    return app


@pytest.mark.parametrize("direct", [True, False])
async def test_notifications_cancelled_cancels_a_direct_call_as_the_sdk_does(direct: bool) -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    async with served(direct=direct, upstream=slow_upstream(started, cancelled, 30)) as (app, client):
        session = await open_session(client, "2025-06-18")
        answer: list[httpx.Response] = []

        async def call() -> None:
            answer.append(await client.post("/mcp", headers=headers("2025-06-18", session), json={
                "jsonrpc": "2.0", "id": "slow-1", "method": "tools/call",
                "params": {"name": "getUser", "arguments": {"userId": "u1"}}}))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await started.wait()
                note = await client.post("/mcp", headers=headers("2025-06-18", session), json={
                    "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-1"}})
                assert note.status_code == 202
            await cancelled.wait()
        assert answer[0].status_code == 200
        assert answer[0].json() == {"jsonrpc": "2.0", "id": "slow-1",
                                    "error": {"code": -32800, "message": "Request cancelled"}}
        assert app.state.session_manager.direct_answers == (1 if direct else 0)


async def test_a_direct_call_in_flight_keeps_its_session_from_idling_out() -> None:
    started, cancelled = anyio.Event(), anyio.Event()
    async with served(direct=True, upstream=slow_upstream(started, cancelled, 0.8),
                      session_idle_timeout=0.3) as (app, client):
        session = await open_session(client, "2025-06-18")
        call = await client.post("/mcp", headers=headers("2025-06-18", session), json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "getUser", "arguments": {"userId": "u1"}}})
        assert call.status_code == 200 and call.json()["result"]["isError"] is False, call.text
        assert (await client.post("/mcp", headers=headers("2025-06-18", session), json=TOOLS_LIST)).status_code == 200
        await anyio.sleep(0.6)  # idle now: the SDK's timer ends the session
        gone = await client.post("/mcp", headers=headers("2025-06-18", session), json=TOOLS_LIST)
        assert gone.status_code == 404
        assert app.state.session_manager.direct_answers == 2 and not cancelled.is_set()


def test_only_one_plain_request_for_a_direct_method_is_taken() -> None:
    assert direct_request(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}') == (
        1, "tools/call", {"name": "x"})
    assert direct_request(b'{"jsonrpc":"2.0","id":"a","method":"tools/list"}') == ("a", "tools/list", None)
    for body in (b'{"jsonrpc":"2.0","id":null,"method":"tools/list"}', b'{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}',
                 b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}', b'{"id":1,"method":"tools/list"}',
                 b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}', b"[]", b"", b"\xff"):
        assert direct_request(body) is None, body


MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def modern(body: Any) -> tuple[dict[str, str], bytes]:
    """One of CALLS as a 2026-07-28 single exchange (the `_meta` envelope, the routing headers) where
    it is a request with object params or none; else as it is, with the modern version header."""
    sent = headers(MODERN)
    if isinstance(body, dict) and isinstance(body.get("params", {}), dict) and "method" in body:
        params = {**body.get("params", {}), "_meta": ENVELOPE}
        body = {**body, "params": params}
        sent["mcp-method"] = body["method"]
        if isinstance(params.get("name"), str):
            sent["mcp-name"] = params["name"]
    return sent, body if isinstance(body, bytes) else json.dumps(body).encode()


async def modern_answers(direct: bool) -> list[tuple[str, int, dict[str, str], bytes]]:
    seen = []
    async with served(direct=direct) as (_, client):
        for name, body in CALLS:
            sent, content = modern(body)
            answer = await client.post("/mcp", headers=sent, content=content)
            seen.append((name, answer.status_code, {k: v for k, v in answer.headers.items() if k != "date"},
                         answer.content))
    return seen


async def test_2026_answers_are_byte_equal_to_the_sdks() -> None:
    mine, theirs = await modern_answers(True), await modern_answers(False)
    for one, other in zip(mine, theirs, strict=True):
        assert one == other, one[0]
    outcome = {name: json.loads(body) for name, status, _, body in mine if status == 200 and body}
    call = outcome["call"]["result"]
    assert call["isError"] is False and call["resultType"] == "complete" and "u1" in body_of(outcome["call"])
    assert call["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "openapi-mcp"
    assert outcome["upstream 404"]["result"]["isError"] is True


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("version", ["2025-11-25", MODERN])
async def test_a_plain_tool_result_is_put_in_wire_form_once(direct: bool, version: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's sieve (dump, validate, dump again) is skipped for our plain results when direct."""
    import mcp.server.runner as runner

    sieved: list[str] = []
    real = runner._methods.serialize_server_result
    monkeypatch.setattr(runner._methods, "serialize_server_result",
                        lambda method, *rest, **kw: sieved.append(method) or real(method, *rest, **kw))
    async with served(direct=direct) as (_, client):
        if version == MODERN:
            call = await client.post("/mcp", headers=modern(CALLS[2][1])[0], content=modern(CALLS[2][1])[1])
        else:
            session = await open_session(client, version)
            call = await client.post("/mcp", headers=headers(version, session), json=CALLS[2][1])
    assert call.json()["result"]["isError"] is False
    assert sieved.count("tools/call") == (0 if direct else 1)


def test_2026_results_are_finished_as_the_runner_finishes_them() -> None:
    """The sieve's shape plus what the runner adds in the 2026-07-28 era (resultType, the serverInfo
    stamp), for plain results and for ones that go through the sieve (an image, a `_meta` of the
    result's own, one that names its own serverInfo)."""
    from mcp import types
    from mcp.server.connection import Connection
    from mcp.server.lowlevel.server import Server
    from mcp.server.runner import ServerRunner
    from mcp_types.methods import serialize_server_result

    from converter.server.call_results import plain_wire, stamped

    server: Server[Any] = Server("s", version="9", icons=[types.Icon(src="https://x.test/i.png")])
    runner = ServerRunner(server, Connection.from_envelope(MODERN, None, None), None)
    text = types.TextContent(type="text", text="é")
    for result in (types.CallToolResult(content=[text], structured_content={"n": [1, None]}, is_error=True),
                   types.CallToolResult(content=[]),
                   types.CallToolResult(content=[types.ImageContent(type="image", data="AA==", mime_type="image/png")]),
                   types.CallToolResult(content=[text], _meta={"k": 1}),
                   types.CallToolResult(content=[text], _meta={"io.modelcontextprotocol/serverInfo": {"name": "up"}})):
        expected = runner._serialize("tools/call", MODERN, result)
        wire = plain_wire(result, modern=True) or serialize_server_result(
            "tools/call", MODERN, result.model_dump(by_alias=True, mode="json", exclude_none=True))
        mine = stamped(wire, lambda: server.server_info_stamp)
        assert json.dumps(mine) == json.dumps(expected), result


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
def test_results_that_are_not_plain_go_through_the_sieve(version: str) -> None:
    from mcp import types
    from mcp_types.methods import serialize_server_result

    from converter.server.call_results import plain_wire

    text = types.TextContent(type="text", text="é")
    plain = types.CallToolResult(content=[text, text], structured_content={"n": 1.5, "s": [None]}, is_error=True)
    assert plain_wire(plain) == serialize_server_result("tools/call", version, plain.model_dump(
        by_alias=True, mode="json", exclude_none=True))
    for other in (types.CallToolResult(content=[types.ImageContent(type="image", data="AA==", mime_type="image/png")]),
                  types.CallToolResult(content=[types.TextContent(type="text", text="x",
                                                                  annotations=types.Annotations(priority=1))]),
                  types.CallToolResult(content=[], _meta={"k": 1})):
        assert plain_wire(other) is None


@pytest.mark.parametrize("swallow", [False, True])
async def test_a_cancelled_direct_call_leaves_its_task_as_it_found_it(swallow: bool) -> None:
    """notifications/cancelled cancels the HTTP request's task natively; whether the handler lets the
    cancellation through or swallows it, the answer is `Request cancelled` and the task goes on
    uncancelled. A cancellation of the request itself (shutdown) still goes through."""
    import asyncio

    from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
    from starlette.requests import Request

    from converter.server.direct_calls import DirectTransport

    started = anyio.Event()

    class Runner:
        async def on_request(self, dctx: Any, method: str, params: Any) -> dict[str, Any]:
            started.set()
            try:
                await anyio.sleep(30)
            except asyncio.CancelledError:
                if not swallow:
                    raise
            return {"late": True}

    send, receive = anyio.create_memory_object_stream[Any](1)
    dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(receive, send)
    transport = DirectTransport(mcp_session_id="s", is_json_response_enabled=True)
    request = Request({"type": "http", "method": "POST", "path": "/mcp", "headers": []})

    async def cancel_when_started() -> None:
        await started.wait()
        in_flight = dispatcher._in_flight["r-1"]  # what the dispatcher does on notifications/cancelled
        in_flight.dctx.cancel_requested.set()
        in_flight.scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_when_started)
        answer = await transport._answer(Runner(), dispatcher, request, "r-1", "tools/call", {})  # type: ignore[arg-type]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert answer.model_dump(by_alias=True, exclude_none=True) == {
        "jsonrpc": "2.0", "id": "r-1", "error": {"code": -32800, "message": "Request cancelled"}}
    assert dispatcher._in_flight == {}

    started = anyio.Event()
    with anyio.move_on_after(0.2) as scope:  # not the client's cancel: it is not absorbed
        await transport._answer(Runner(), dispatcher, request, "r-2", "tools/call", {})  # type: ignore[arg-type]
    assert scope.cancelled_caught != swallow  # a handler that swallows it returns its late result
    send.close()
    receive.close()
