"""Session limits (issue 12, item 2): the whole app in process, the MCP SDK's real session manager behind
`converter.server.sessions.SessionLimits`, clients at chosen addresses (httpx's ASGI transport).

The same limits against a running `openapi-mcp serve` and the SDK client: tests/integration/test_limits.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Message

import mock_api
from converter.config import load_settings
from converter.server.addresses import client_key
from converter.server.app import create_app
from converter.server.sessions import Session, SessionTable
from tests.mcp_http import introspection_of, mcp_request

pytestmark = pytest.mark.anyio
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Caller:
    """One client address talking to the app."""

    def __init__(self, app: ASGIApp, host: str, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)),
                                      base_url="http://127.0.0.1:8000", headers=headers or {})

    async def rpc(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
                  version: str | None = "2025-06-18", id: int | None = 1) -> httpx.Response:
        headers, body = mcp_request(method, params, session=session, id=id, version=version)
        return await self.http.post("/mcp", headers=headers, content=json.dumps(body))

    async def open(self) -> str:
        """initialize + notifications/initialized; the session's ID."""
        init = await self.rpc("initialize", INIT, version=None)
        assert init.status_code == 200, init.text
        sid = init.headers["mcp-session-id"]
        assert (await self.rpc("notifications/initialized", session=sid, id=None)).status_code == 202
        return sid

    async def alive(self, sid: str) -> bool:
        status = (await self.rpc("tools/list", session=sid)).status_code
        assert status in (200, 404), status
        return status == 200


RESOURCE = "http://127.0.0.1:8000/mcp"
ISSUER = "http://as.test/realms/demo"
TOKENS = {  # token -> who it was issued to: alice has two tokens, from two clients of one identity
    "alice-1": {"sub": "alice", "client_id": "cli"}, "alice-2": {"sub": "alice", "client_id": "cli"},
    "bob": {"sub": "bob", "client_id": "cli"},
}


introspection = introspection_of(TOKENS, issuer=ISSUER, resource=RESOURCE)  # an AS's endpoint for TOKENS


@asynccontextmanager
async def serving(tmp_path: Path, *, auth: bool = False, **server: Any) -> AsyncIterator[Any]:
    """The app with these `server:` settings, its lifespan running; `app.state.probe` reads /metrics."""
    config = tmp_path / "c.yaml"
    document: dict[str, Any] = {"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                "telemetry": {"access_log": "off"}, "server": server}
    if auth:
        document["auth"] = {"resource": RESOURCE, "authorization_servers": [ISSUER], "client_id": "gw",
                            "client_secret": "s", "introspection_endpoint": f"{ISSUER}/introspect"}
    config.write_text(json.dumps(document))
    app = create_app(load_settings(str(config)), upstream_transport=httpx.ASGITransport(app=mock_api.create_app()),
                     auth_transport=httpx.MockTransport(introspection))
    async with app.router.lifespan_context(app):
        app.state.probe = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")
        yield app
        await app.state.probe.aclose()


async def metric(app: Any, name: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = (await app.state.probe.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@asynccontextmanager
async def get_stream(app: ASGIApp, sid: str, host: str) -> AsyncIterator[None]:
    """A GET stream on `sid` held open (a request in flight for the SDK and for the table) until exit."""
    started = anyio.Event()
    leave = anyio.Event()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/mcp", "raw_path": b"/mcp", "root_path": "", "query_string": b"", "client": (host, 40001),
             "server": ("127.0.0.1", 8000), "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"text/event-stream"),
                                                       (b"mcp-session-id", sid.encode()),
                                                       (b"mcp-protocol-version", b"2025-06-18")]}
    status: list[int] = []
    body_sent = False

    async def receive() -> Message:  # as a server does: the (empty) body, then the disconnect when it comes
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope, receive, send)
        with anyio.fail_after(5):
            await started.wait()
        assert status == [200]
        try:
            yield
        finally:
            leave.set()


async def test_a_caller_over_its_cap_loses_its_own_oldest_idle_session_and_nobody_elses(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions_per_principal=3) as app:
        a, b = Caller(app, "192.0.2.1"), Caller(app, "192.0.2.2")
        theirs = await b.open()
        first, second, third = [await a.open() for _ in range(3)]
        assert await a.alive(first)  # now the most recently used: `second` is the oldest idle one
        fourth = await a.open()
        assert [await a.alive(s) for s in (first, second, third, fourth)] == [True, False, True, True]
        for _ in range(20):  # re-initializing in a loop: never refused, never more than the cap
            await a.open()
        assert await metric(app, "openapi_mcp_sessions") == 4  # a's 3 and b's 1
        assert await metric(app, "openapi_mcp_sessions_evicted_total") == 21
        assert await b.alive(theirs)


async def test_with_auth_the_cap_is_per_token_identity_and_eviction_keeps_the_session_binding(tmp_path: Path) -> None:
    async with serving(tmp_path, auth=True, max_sessions_per_principal=2) as app:
        alice_1, alice_2, bob = (Caller(app, "192.0.2.1", {"authorization": f"Bearer {token}"})
                                 for token in ("alice-1", "alice-2", "bob"))
        first, second = await alice_1.open(), await alice_1.open()
        bobs = [await bob.open(), await bob.open()]  # same address, another identity: its own cap
        third = await alice_2.open()  # another token of alice: her cap, so her oldest idle session goes
        assert [await alice_1.alive(s) for s in (first, second, third)] == [False, True, True]
        assert [await bob.alive(s) for s in bobs] == [True, True]
        assert not await bob.alive(second)  # the SDK's binding still holds: bob cannot use alice's session
        assert await metric(app, "openapi_mcp_sessions") == 4
        assert await metric(app, "openapi_mcp_sessions_evicted_total") == 1


async def test_a_caller_whose_sessions_are_all_in_use_is_refused_with_429_and_retry_after(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions_per_principal=2) as app:
        a = Caller(app, "192.0.2.1")
        one, two = await a.open(), await a.open()
        async with get_stream(app, one, "192.0.2.1"), get_stream(app, two, "192.0.2.1"):
            refused = await a.rpc("initialize", INIT, version=None)
            other = await Caller(app, "192.0.2.9").open()
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert refused.json() == {"jsonrpc": "2.0", "id": None, "error": {
            "code": -32000, "message": "Too many open sessions for this caller (2, all in use); "
                                       "end one (HTTP DELETE) or retry later"}}
        assert other
        assert await metric(app, 'openapi_mcp_sessions_refused_total{reason="principal_limit"}') == 1
        assert await a.alive(one) and await a.alive(two)  # the streams ended; the sessions did not
        assert await a.open()  # and now one of them is idle, so it makes room


async def test_a_full_server_refuses_new_sessions_with_503_and_when_a_slot_frees(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions=3, max_sessions_per_principal=2, session_idle_timeout=30) as app:
        a, b, c = Caller(app, "192.0.2.1"), Caller(app, "192.0.2.2"), Caller(app, "192.0.2.3")
        a1, _a2, b1 = await a.open(), await a.open(), await b.open()
        refused = await c.rpc("initialize", INIT, version=None)
        assert refused.status_code == 503
        assert 28 <= int(refused.headers["retry-after"]) <= 30  # until the oldest idle session expires
        assert refused.json()["error"]["message"] == "The server has its maximum of 3 open sessions; retry later"
        assert await a.open()  # a is at its own cap: it makes room by ending its own idle session
        assert not await a.alive(a1) and await b.alive(b1)
        ended = await a.http.delete("/mcp", headers={"mcp-session-id": b1, "mcp-protocol-version": "2025-06-18"})
        assert ended.status_code == 200
        assert await metric(app, "openapi_mcp_sessions") == 2
        assert await c.open()  # DELETE freed a slot
        assert await metric(app, 'openapi_mcp_sessions_refused_total{reason="server_limit"}') == 1


async def test_idle_sessions_leave_the_table_when_the_sdk_ends_them_and_busy_ones_do_not(tmp_path: Path) -> None:
    # Contract with the SDK's idle rule (mcp 2.3 StreamableHTTPServerTransport): idle = no request in
    # flight, an open GET stream counts as one. If the SDK changes it, this table and its drift apart here.
    async with serving(tmp_path, max_sessions_per_principal=5, session_idle_timeout=0.5) as app:
        a = Caller(app, "192.0.2.1")
        idle, busy = await a.open(), await a.open()
        async with get_stream(app, busy, "192.0.2.1"):
            await anyio.sleep(0.4)
            assert await metric(app, "openapi_mcp_sessions") == 2
            await anyio.sleep(0.5)
            assert await metric(app, "openapi_mcp_sessions") == 1
            assert not await a.alive(idle)  # the SDK ended it too
            assert await a.alive(busy)
        await anyio.sleep(0.7)
        assert await metric(app, "openapi_mcp_sessions") == 0
        assert not await a.alive(busy)


async def test_requests_from_2026_clients_are_sessionless_and_never_counted(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions=1, max_sessions_per_principal=1) as app:
        a = Caller(app, "192.0.2.1")
        await a.open()
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}
        for _ in range(5):
            answer = await a.rpc("tools/list", {"_meta": meta}, version="2026-07-28")
            assert answer.status_code == 200, answer.text
            assert "mcp-session-id" not in answer.headers
            assert answer.json()["result"]["tools"]
        assert await metric(app, "openapi_mcp_sessions") == 1


async def test_openings_that_fail_hold_no_slot(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions=2, max_sessions_per_principal=2) as app:
        a = Caller(app, "192.0.2.1")
        for _ in range(10):
            bad = await a.rpc("tools/list", version=None)  # no session ID and not an initialize
            assert bad.status_code == 400
            assert (await a.http.get("/mcp", headers={"accept": "text/event-stream"})).status_code == 400
        assert await metric(app, "openapi_mcp_sessions") == 0
        assert await Caller(app, "192.0.2.2").open() and await a.open()


async def test_stateless_mode_has_no_session_table(tmp_path: Path) -> None:
    async with serving(tmp_path, stateless=True, max_sessions=1, max_sessions_per_principal=1) as app:
        a = Caller(app, "192.0.2.1")
        for _ in range(3):
            assert (await a.rpc("initialize", INIT, version=None)).status_code == 200
        assert await metric(app, "openapi_mcp_sessions") == 0


def test_ipv6_callers_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == client_key("not-an-address") == "unknown"


def test_the_table_prunes_on_the_sdk_clock_and_picks_the_least_recently_active_idle_victim() -> None:
    now = [100.0]
    table = SessionTable(max_sessions=10, per_principal=2, idle_timeout=60, clock=lambda: now[0])
    opened = []
    for sid in ("s1", "s2"):
        victim, session = table.admit("k", None, None, ())
        assert victim is None and isinstance(session, Session)
        table.opened(session, sid)
        table.end(session)
        opened.append(session)
        now[0] += 1
    busy = table.begin("s1", None)
    assert busy is not None and table.begin("s1", ("someone", "else", None)) is None  # type: ignore[arg-type]
    victim, _ = table.admit("k", None, None, ())
    assert victim is opened[1]  # s1 is in use, so the idle s2 goes
    now[0] += 59.5
    assert len(table) == 2  # s1 (busy) and the new one (opening)
    table.end(busy)
    now[0] += 60
    assert len(table) == 1 and table.count("k") == 1


async def answered_before_it_returns(app: ASGIApp, method: str, headers: dict[str, str], body: bytes,
                                     then: Callable[[dict[str, str]], Awaitable[None]]) -> None:
    """One request from 192.0.2.1, with `then(its answer's headers)` run the moment the answer is sent:
    before the app returns, as a real client under load does (it reads the answer while the server
    is still unwinding the request)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": "/mcp", "raw_path": b"/mcp", "root_path": "", "query_string": b"", "client": ("192.0.2.1", 40002),
             "server": ("127.0.0.1", 8000), "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                                                       (b"accept", b"application/json, text/event-stream"),
                                                       *((k.encode(), v.encode()) for k, v in headers.items())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, str] = {}

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.update((k.decode(), v.decode()) for k, v in message["headers"])
        elif not message.get("more_body"):
            await then(answer)

    await app(scope, receive, send)


async def open_answered_before_it_returns(app: ASGIApp, caller: Caller) -> str:
    """initialize, with the session used (initialized, then a tools/list) the moment its answer is sent."""
    sid: list[str] = []

    async def use(answer: dict[str, str]) -> None:
        sid.append(answer["mcp-session-id"])
        assert (await caller.rpc("notifications/initialized", session=sid[0], id=None)).status_code == 202
        assert await caller.alive(sid[0])

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}).encode()
    await answered_before_it_returns(app, "POST", {}, body, use)
    return sid[0]


async def test_a_session_used_before_its_opening_request_returns_is_counted_once(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions_per_principal=2) as app:
        a = Caller(app, "192.0.2.1")
        first = await open_answered_before_it_returns(app, a)
        assert await metric(app, "openapi_mcp_sessions") == 1
        second = await a.open()  # under the cap of 2: nothing may be ended to make room
        assert await metric(app, "openapi_mcp_sessions_evicted_total") == 0
        assert await a.alive(first) and await a.alive(second)
        await a.open()  # now over it: the least recently used idle one goes, and the table agrees with the SDK
        assert [await a.alive(s) for s in (first, second)] == [False, True]
        assert await metric(app, "openapi_mcp_sessions") == 2


async def test_a_session_ended_by_delete_frees_its_slot_before_the_request_returns(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sessions_per_principal=2) as app:
        a = Caller(app, "192.0.2.1")
        ended, kept = await a.open(), await a.open()
        opened: list[str] = []

        async def open_another(answer: dict[str, str]) -> None:
            opened.append(await a.open())  # at the cap only if the ended session still counted

        await answered_before_it_returns(app, "DELETE", {"mcp-session-id": ended, "mcp-protocol-version": "2025-06-18"},
                                         b"", open_another)
        assert await metric(app, "openapi_mcp_sessions_evicted_total") == 0
        assert await a.alive(kept) and await a.alive(opened[0]) and not await a.alive(ended)
        assert await metric(app, "openapi_mcp_sessions") == 2

def test_the_table_keeps_one_entry_per_session_id() -> None:
    table = SessionTable(max_sessions=10, per_principal=2, idle_timeout=60)
    _, opening = table.admit("k", None, None, ())
    assert isinstance(opening, Session)
    table.adopt("k", None, None, (), "s1")  # served before its opening request was seen to succeed
    table.opened(opening, "s1")
    table.end(opening)
    assert len(table) == 1 and table.count("k") == 1
