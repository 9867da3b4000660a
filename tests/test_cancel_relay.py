"""`notifications/cancelled` relayed to the replica running the call (converter/server/cancel_relay.py):
two apps in process with the same `server.session_keys` and `redis:`, their Redis an in-memory bus.

The call runs on replica A; the cancel for it arrives on replica B, in the same session: A cancels
the call as if the cancel had arrived there (direct answers and the SDK's path). A cancel for
another session's request cancels nothing; a cancel for a call in flight locally is never
published; Redis down: logged once, the call runs on. The real thing (processes, redis-server,
nginx): tests/integration/test_replicas_cancel.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import converter.redis_client
import mock_api
from converter.config import load_settings
from converter.server.app import create_app
from converter.server.cancel_relay import MAX_MESSAGE_BYTES, CancelRelay, _encode, _parse, session_digest
from tests.fake_redis import Bus, wait_until
from tests.mcp_http import introspection_of, mcp_request

pytestmark = pytest.mark.anyio
KEY = "cancel-relay-key-" + "c" * 30
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
RESOURCE = "http://127.0.0.1:8000/mcp"
ISSUER = "http://as.test/realms/demo"
TOKENS = {"alice": {"sub": "alice", "client_id": "cli"}, "bob": {"sub": "bob", "client_id": "cli"}}
CALL = {"name": "getUser", "arguments": {"userId": "u1"}}
CANCELLED = {"jsonrpc": "2.0", "id": "slow-1", "error": {"code": -32800, "message": "Request cancelled"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Holding:
    """The upstream API: every request waits `seconds` before it is answered; `started` is set when
    one arrives, `cancelled` when one is cancelled before its answer (the caller went away)."""

    def __init__(self, seconds: float = 30) -> None:
        self.seconds = seconds
        self.reset()

    def reset(self) -> None:
        self.started, self.cancelled = anyio.Event(), anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.started.set()
        try:
            await anyio.sleep(self.seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id": "u1", "name": "slow", "email": "s@x.test"}'})


@asynccontextmanager
async def two_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: Any, *, auth: bool = False,
                       **server: Any) -> AsyncIterator[tuple[Bus, list[httpx.AsyncClient], list[CancelRelay]]]:
    """Replicas A and B (one config) sharing a `Bus` as their Redis; a client for each, and their relays."""
    bus = Bus()
    monkeypatch.setattr(converter.redis_client, "redis_client", bus.client)
    monkeypatch.setattr("converter.server.pubsub.RETRY_SECONDS", 0.05)
    monkeypatch.setattr("converter.server.session_relay.RETRY_SECONDS", 0.05)
    document: dict[str, Any] = {
        "spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
        "telemetry": {"access_log": "off"}, "redis": {"url": "redis://redis.test:6379/0", "key_prefix": "t:"},
        "server": {**server, "session_keys": [KEY]}}
    if auth:
        document["auth"] = {"resource": RESOURCE, "authorization_servers": [ISSUER], "client_id": "gw",
                            "client_secret": "s", "introspection_endpoint": f"{ISSUER}/introspect"}
    config = tmp_path / "replica.yaml"
    config.write_text(json.dumps(document))
    async with AsyncExitStack() as stack:
        clients, relays = [], []
        for _ in range(2):
            app = create_app(load_settings(str(config)), upstream_transport=httpx.ASGITransport(app=upstream),
                             auth_transport=httpx.MockTransport(introspection_of(TOKENS, issuer=ISSUER,
                                                                                 resource=RESOURCE)))
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", timeout=20)))
            relays.append(app.state.cancel_relay)
        with anyio.fail_after(5):
            while sum(relay.state == "reachable" for relay in relays) < 2:
                await anyio.sleep(0.01)
        yield bus, clients, relays


async def rpc(client: httpx.AsyncClient, method: str, params: dict[str, Any] | None = None, *,
              session: str | None = None, id: int | str | None = 1, token: str | None = None) -> httpx.Response:
    headers, body = mcp_request(method, params, session=session, token=token, id=None)
    if id is not None:
        body["id"] = id
    return await client.post("/mcp", headers=headers, content=json.dumps(body))


async def open_session(client: httpx.AsyncClient, token: str | None = None) -> str:
    init = await rpc(client, "initialize", INIT, id=0, token=token)
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    assert (await rpc(client, "notifications/initialized", session=session, id=None, token=token)).status_code == 202
    return session


def message_of(response: httpx.Response) -> Any:
    """The JSON-RPC message of a JSON or SSE answer."""
    if response.headers["content-type"].startswith("text/event-stream"):
        return json.loads([line[5:] for line in response.text.splitlines() if line.startswith("data:")][-1])
    return response.json()




@pytest.mark.parametrize(("json_response", "direct_calls"), [(True, True), (True, False), (False, True)],
                         ids=["direct", "sdk-json", "sdk-sse"])
async def test_a_cancel_landing_on_another_replica_cancels_the_call_where_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_response: bool, direct_calls: bool) -> None:
    upstream = Holding()
    async with two_replicas(tmp_path, monkeypatch, upstream, json_response=json_response,
                            direct_calls=direct_calls) as (_, (a, b), (relay_a, relay_b)):
        session = await open_session(a)
        answers: list[httpx.Response] = []

        async def call() -> None:
            answers.append(await rpc(a, "tools/call", CALL, session=session, id="slow-1"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await upstream.started.wait()
                note = await rpc(b, "notifications/cancelled", {"requestId": "slow-1", "reason": "user pressed stop"},
                                 session=session, id=None)
                assert note.status_code == 202
                await upstream.cancelled.wait()  # the upstream request was cancelled on replica A
        assert message_of(answers[0]) == CANCELLED  # what a cancel arriving on A itself gives
        assert (relay_b.published, relay_a.cancelled, relay_b.cancelled) == (1, 1, 0)
        shown_a, shown_b = (await a.get("/metrics")).text, (await b.get("/metrics")).text
        assert 'openapi_mcp_cancels_relayed_total{result="applied"} 1.0' in shown_a
        assert 'openapi_mcp_cancels_relayed_total{result="published"} 1.0' in shown_b
        assert 'openapi_mcp_cancels_relayed_total{result="applied"} 0.0' in shown_b


async def test_a_cancel_for_a_call_in_flight_here_stays_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = Holding()
    async with two_replicas(tmp_path, monkeypatch, upstream) as (_, (a, _b), relays):
        session = await open_session(a)
        async with anyio.create_task_group() as group:
            group.start_soon(partial(rpc, a, "tools/call", CALL, session=session, id="slow-1"))
            await upstream.started.wait()
            await rpc(a, "notifications/cancelled", {"requestId": "slow-1"}, session=session, id=None)
            with anyio.fail_after(5):
                await upstream.cancelled.wait()
        assert [relay.published for relay in relays] == [0, 0]  # nothing reached Redis
        # One for a request not in flight here is relayed (it may run on another replica).
        await rpc(a, "notifications/cancelled", {"requestId": "elsewhere"}, session=session, id=None)
        await wait_until(lambda: relays[0].published == 1 and relays[1].heard == 1)
        assert relays[1].cancelled == 0


async def test_a_cancel_on_another_session_cancels_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same request ID, sent on another session (of the same caller, or another caller's
    session that it cannot use): nothing is cancelled; the right session's cancel still is."""
    upstream = Holding()
    async with two_replicas(tmp_path, monkeypatch, upstream,
                            auth=True) as (_, (a, b), (relay_a, relay_b)):
        session = await open_session(a, token="alice")
        other = await open_session(b, token="alice")
        answers: list[httpx.Response] = []

        async def call() -> None:
            answers.append(await rpc(a, "tools/call", CALL, session=session, id="slow-1", token="alice"))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            with anyio.fail_after(5):
                await upstream.started.wait()
            note = await rpc(b, "notifications/cancelled", {"requestId": "slow-1"}, session=other, id=None,
                             token="alice")
            assert note.status_code == 202
            await wait_until(lambda: relay_a.heard == 1)  # A heard it, and it named another session
            # Alice's session used by bob: refused as an unknown session, nothing relayed.
            foreign = await rpc(b, "notifications/cancelled", {"requestId": "slow-1"}, session=session, id=None,
                                token="bob")
            assert foreign.status_code == 404
            await anyio.sleep(0.2)
            assert not upstream.cancelled.is_set() and relay_a.cancelled == 0 and relay_b.published == 1
            note = await rpc(b, "notifications/cancelled", {"requestId": "slow-1"}, session=session, id=None,
                             token="alice")
            assert note.status_code == 202
            with anyio.fail_after(5):
                await upstream.cancelled.wait()
        assert answers[0].json() == CANCELLED and relay_a.cancelled == 1


async def test_redis_down_the_call_runs_to_its_end_and_it_is_logged_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    upstream = Holding()
    async with two_replicas(tmp_path, monkeypatch, upstream) as (bus, (a, b), relays):
        upstream.seconds = 0.6
        session = await open_session(a)
        bus.down = True
        answers: list[httpx.Response] = []

        async def call() -> None:
            answers.append(await rpc(a, "tools/call", CALL, session=session, id="slow-1"))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            with anyio.fail_after(5):
                await upstream.started.wait()
            for _ in range(3):
                note = await rpc(b, "notifications/cancelled", {"requestId": "slow-1"}, session=session, id=None)
                assert note.status_code == 202  # the request path never waits for Redis
        assert not upstream.cancelled.is_set()
        assert answers[0].json()["result"]["isError"] is False  # ran to its end
        failed = [r for r in caplog.records if "cannot relay notifications/cancelled" in r.getMessage()]
        assert len(failed) == 1 and relays[1].state == "degraded"

        bus.down = False  # back: relayed again
        await wait_until(lambda: all(relay.state == "reachable" for relay in relays))
        upstream.reset()
        upstream.seconds = 30
        async with anyio.create_task_group() as group:
            group.start_soon(partial(rpc, a, "tools/call", CALL, session=session, id="slow-2"))
            with anyio.fail_after(5):
                await upstream.started.wait()
            await rpc(b, "notifications/cancelled", {"requestId": "slow-2"}, session=session, id=None)
            with anyio.fail_after(5):
                await upstream.cancelled.wait()
        assert relays[0].cancelled == 1


async def test_the_relay_holds_the_sessions_running_here_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_replicas(tmp_path, monkeypatch, mock_api.create_app()) as (_, (a, b), relays):
        session = await open_session(a)
        assert list(relays[0]._sessions) == [session_digest(session)] and relays[1]._sessions == {}
        assert (await rpc(b, "tools/list", session=session)).status_code == 200  # rebuilt on B
        assert list(relays[1]._sessions) == [session_digest(session)]
        deleted = await b.delete("/mcp", headers={"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"})
        assert deleted.status_code == 200
        await wait_until(lambda: relays[1]._sessions == {})  # its server task ended
    assert relays[0]._sessions == {}  # shut down: every session's entry is gone


def test_only_well_formed_messages_of_other_replicas_are_taken() -> None:
    digest = "a" * 64
    good = {"from": "b", "session": digest, "request": 7, "reason": "stop"}
    assert _parse(json.dumps(good), "a") == (digest, 7, "stop")
    assert _parse(json.dumps({**good, "request": "r-1", "reason": 3}).encode(), "a") == (digest, "r-1", None)
    for bad in ({**good, "from": "a"}, {**good, "session": "short"}, {**good, "request": True},
                {**good, "request": None}, {**good, "request": 1.5}, {**good, "session": None}, [good]):
        assert _parse(json.dumps(bad), "a") is None, bad
    assert _parse(json.dumps({**good, "reason": "x" * 3000}), "a") is None  # larger than any message we send
    assert _parse(b"not json", "a") is None and _parse(42, "a") is None


def test_what_is_published_always_fits_what_is_taken() -> None:
    digest = "d" * 64
    assert _parse(_encode("b", digest, 7, "stop"), "a") == (digest, 7, "stop")
    assert _parse(_encode("b", digest, "r", None), "a") == (digest, "r", None)
    long = _encode("b", digest, "r", "x" * 5000)  # cut to 200 characters
    assert long is not None and _parse(long, "a") == (digest, "r", "x" * 200)
    wide = _encode("b", digest, "é" * 200, "😀" * 200)
    assert wide is not None and _parse(wide.encode(), "a") == (digest, "é" * 200, "😀" * 200)
    escaped = _encode("b", digest, "\x01" * 200, "\x01" * 200)  # six bytes a character once escaped
    assert escaped is not None and len(escaped.encode()) <= MAX_MESSAGE_BYTES
    assert _parse(escaped.encode(), "a") == (digest, "\x01" * 200, None)  # the reason left out, the cancel kept
    assert _encode("b", digest, "r" * 201, None) is None  # nobody's request ID
