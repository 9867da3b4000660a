"""Sessions any replica can serve (issue 13, item 1): several apps in process with the same
`server.session_keys`, one client whose requests go round robin over them (no affinity).

converter.server.session_ids (the sealed IDs) and converter.server.shared_sessions (the SDK's
session manager rebuilding a session from its ID). The same with real processes behind nginx:
tests/integration/test_replicas.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.types import CallToolRequestParams, CallToolResult, ClientCapabilities, SamplingCapability, TextContent
from starlette.applications import Starlette
from starlette.routing import Route

import mock_api
from converter.config import load_settings
from converter.errors import ConfigError
from converter.server.app import create_app
from converter.server.session_ids import PREFIX, SessionSealer, owner_digest, same_owner
from converter.server.shared_sessions import SharedSessionManager
from tests.mcp_http import introspection_of, mcp_request

pytestmark = pytest.mark.anyio
KEY_1 = "k1-" + "a" * 40
KEY_2 = "k2-" + "b" * 40
INIT = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "round-robin-client", "version": "7"}}
RESOURCE = "http://127.0.0.1:8000/mcp"
ISSUER = "http://as.test/realms/demo"
TOKENS = {"alice-1": {"sub": "alice", "client_id": "cli"}, "alice-2": {"sub": "alice", "client_id": "cli"},
          "bob": {"sub": "bob", "client_id": "cli"}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


introspection = introspection_of(TOKENS, issuer=ISSUER, resource=RESOURCE)


class Balancer:
    """A client whose every request goes to the next replica (round robin), as behind nginx."""

    def __init__(self, apps: Sequence[Any], token: str | None = None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000",
                                          headers=headers) for app in apps]
        self.turn = 0
        self.served_by: list[int] = []

    async def rpc(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
                  id: int | None = 1, replica: int | None = None, token: str | None = None) -> httpx.Response:
        headers, body = mcp_request(method, params, session=session, token=token, id=id)
        if replica is None:
            replica, self.turn = self.turn, (self.turn + 1) % len(self.clients)
        self.served_by.append(replica)
        return await self.clients[replica].post("/mcp", headers=headers, content=json.dumps(body))

    async def open(self, replica: int | None = None) -> str:
        init = await self.rpc("initialize", INIT, replica=replica)
        assert init.status_code == 200, init.text
        sid = init.headers["mcp-session-id"]
        assert (await self.rpc("notifications/initialized", session=sid, id=None)).status_code == 202
        return sid

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def result_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC result of a JSON or SSE answer."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        message = json.loads(data[-1])
    else:
        message = response.json()
    assert "result" in message, message
    result: dict[str, Any] = message["result"]
    return result


@asynccontextmanager
async def replicas(tmp_path: Path, count: int, *, keys: Sequence[Sequence[str]] | None = None, auth: bool = False,
                   **server: Any) -> AsyncIterator[list[Any]]:
    """`count` apps from one config (each its own session manager), their lifespans running."""
    async with AsyncExitStack() as stack:
        apps = []
        for index in range(count):
            config = tmp_path / f"replica-{index}.yaml"
            document: dict[str, Any] = {
                "spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                "telemetry": {"access_log": "off"},
                "server": {**server, "session_keys": list(keys[index] if keys else [KEY_1])}}
            if auth:
                document["auth"] = {"resource": RESOURCE, "authorization_servers": [ISSUER], "client_id": "gw",
                                    "client_secret": "s", "introspection_endpoint": f"{ISSUER}/introspect"}
            config.write_text(json.dumps(document))
            app = create_app(load_settings(str(config)),
                             upstream_transport=httpx.ASGITransport(app=mock_api.create_app()),
                             auth_transport=httpx.MockTransport(introspection))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append(app)
        yield apps


@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
async def test_a_session_opened_on_one_replica_is_served_by_every_other(tmp_path: Path, json_response: bool) -> None:
    async with replicas(tmp_path, 3, json_response=json_response) as apps:
        client = Balancer(apps)
        sid = await client.open()
        assert sid.startswith(PREFIX)
        for _ in range(3):  # every replica answers list and call, twice each
            tools = result_of(await client.rpc("tools/list", session=sid))["tools"]
            assert any(tool["name"] == "listUsers" for tool in tools)
            call = result_of(await client.rpc("tools/call", {"name": "listUsers", "arguments": {}}, session=sid))
            assert call.get("isError") is not True, call
        assert sorted(set(client.served_by)) == [0, 1, 2]
        await client.aclose()


async def test_without_session_keys_another_replica_does_not_know_the_session(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        apps = []
        for index in range(2):
            config = tmp_path / f"plain-{index}.yaml"
            config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                          "telemetry": {"access_log": "off"}}))
            app = create_app(load_settings(str(config)),
                             upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps.append(app)
        client = Balancer(apps)
        sid = await client.open(replica=0)
        assert not sid.startswith(PREFIX)
        assert (await client.rpc("tools/list", session=sid, replica=1)).status_code == 404
        await client.aclose()


async def test_the_principal_binding_holds_on_every_replica(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2, auth=True) as apps:
        alice = Balancer(apps, token="alice-1")
        sid = await alice.open(replica=0)
        # Another principal: 404 on the replica that never saw the session, and on the one that did.
        assert (await alice.rpc("tools/list", session=sid, replica=1, token="bob")).status_code == 404
        assert (await alice.rpc("tools/list", session=sid, replica=0, token="bob")).status_code == 404
        # The same identity with another token (a refreshed one): served, as by the SDK in one process.
        assert result_of(await alice.rpc("tools/list", session=sid, replica=1, token="alice-2"))["tools"]
        assert result_of(await alice.rpc("tools/list", session=sid, replica=0))["tools"]
        # Rebuilt on replica 1 for alice: bob still gets 404 there.
        assert (await alice.rpc("tools/list", session=sid, replica=1, token="bob")).status_code == 404
        await alice.aclose()


async def test_a_session_ended_with_delete_stays_ended_on_that_replica(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as apps:
        client = Balancer(apps)
        sid = await client.open()
        deleted = await client.clients[0].delete("/mcp", headers={"mcp-session-id": sid,
                                                                  "mcp-protocol-version": "2025-06-18"})
        assert deleted.status_code == 200, deleted.text
        assert (await client.rpc("tools/list", session=sid)).status_code == 404
        await client.aclose()


async def test_forged_altered_foreign_and_expired_ids_are_unknown_sessions(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2, keys=[[KEY_1], [KEY_2]]) as apps:
        client = Balancer(apps)
        sid = await client.open(replica=0)
        raw = bytearray(base64.urlsafe_b64decode(sid[len(PREFIX):] + "=" * (-len(sid[len(PREFIX):]) % 4)))
        raw[-1] ^= 1
        altered = PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        expired, _ = SessionSealer([KEY_1], lifetime=-10).seal(INIT, None)
        for bad, replica in ((altered, 0), (sid, 1), (expired, 0), (PREFIX + "not-base64!", 0), ("0" * 32, 0)):
            assert (await client.rpc("tools/list", session=bad, replica=replica)).status_code == 404, bad
        assert result_of(await client.rpc("tools/list", session=sid, replica=0))["tools"]
        await client.aclose()


async def test_key_rotation_new_key_first_old_ids_still_open(tmp_path: Path) -> None:
    async with replicas(tmp_path, 3, keys=[[KEY_1], [KEY_2, KEY_1], [KEY_2]]) as apps:
        client = Balancer(apps)
        old = await client.open(replica=0)
        assert result_of(await client.rpc("tools/list", session=old, replica=1))["tools"]  # old key still opens
        assert (await client.rpc("tools/list", session=old, replica=2)).status_code == 404  # old key dropped
        new = await client.open(replica=1)  # sealed with the new key: every replica with it opens it
        assert result_of(await client.rpc("tools/list", session=new, replica=2))["tools"]
        assert (await client.rpc("tools/list", session=new, replica=0)).status_code == 404
        await client.aclose()


async def test_a_rebuilt_session_has_the_negotiated_version_and_the_clients_capabilities() -> None:
    """At the SDK level: what a handler sees of the session is the same on the replica that never saw initialize."""

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        session = ctx.session
        info = session.client_params.client_info if session.client_params else None
        seen = {"version": session.protocol_version, "client": info.name if info else None,
                "sampling": session.check_client_capability(ClientCapabilities(sampling=SamplingCapability()))}
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(seen))])

    sealer = SessionSealer([KEY_1], lifetime=60)
    apps, managers = [], []
    for _ in range(2):
        server: Server[Any] = Server("t", on_call_tool=call_tool)
        manager = SharedSessionManager(server, sealer=sealer, json_response=True)
        managers.append(manager)
        apps.append(Starlette(routes=[Route("/mcp", endpoint=StreamableHTTPASGIApp(manager))]))
    async with managers[0].run(), managers[1].run():
        client = Balancer(apps)
        sid = await client.open(replica=0)
        seen = [json.loads(result_of(await client.rpc("tools/call", {"name": "x", "arguments": {}}, session=sid,
                                                       replica=replica))["content"][0]["text"]) for replica in (0, 1)]
        assert seen[0] == seen[1] == {"version": "2025-06-18", "client": "round-robin-client", "sampling": True}
        assert (managers[0].rebuilt, managers[1].rebuilt) == (0, 1)
        await client.aclose()


def test_the_sealed_id_carries_no_readable_data_and_stays_small_for_huge_client_params() -> None:
    sealer = SessionSealer([KEY_1, KEY_2], lifetime=60)
    owner = AuthorizationContext(client_id="cli", issuer=ISSUER, subject="alice")
    sid, _ = sealer.seal(INIT, owner)
    assert "round-robin" not in base64.urlsafe_b64decode(sid[3:] + "==").decode("latin-1")
    opened = sealer.open(sid)
    assert opened is not None and opened.params == INIT and same_owner(opened, owner)
    assert not same_owner(opened, AuthorizationContext(client_id="cli", issuer=ISSUER, subject="bob"))
    assert not same_owner(opened, None)
    assert opened.owner == owner_digest(owner) and "alice" not in str(opened.owner)
    huge = {**INIT, "capabilities": {"sampling": {}, "experimental": {"x": "y" * 50_000}},
            "clientInfo": {"name": "n", "version": "1", "description": "d" * 50_000}}
    big, _ = sealer.seal(huge, None)
    assert len(big) < 4096
    slim = sealer.open(big)
    assert slim is not None and slim.params["capabilities"] == {"sampling": {}}
    assert repr(sealer) == "SessionSealer(keys=2, lifetime=60)"


def test_a_short_session_key_is_a_clear_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "server": {"session_keys": ["short"]}}))
    with pytest.raises(ConfigError) as exc:
        load_settings(str(config))
    assert "server.session_keys" in str(exc.value)
    assert "key 0 is too short: session keys need at least 32 characters" in str(exc.value)
    assert "short'" not in str(exc.value)  # the secret itself is never shown


async def test_calls_in_flight_together_on_a_replica_that_never_saw_the_session_are_all_served(
        tmp_path: Path) -> None:
    """The first requests of a session on a new replica (a restarted one, under load) arrive together:
    each must find the rebuilt session connected, not half made (a 500)."""
    async with replicas(tmp_path, 2) as apps:
        client = Balancer(apps)
        sid = await client.open(replica=0)
        answers: list[httpx.Response] = []

        async def call(index: int) -> None:
            answers.append(await client.rpc("tools/call", {"name": "listUsers", "arguments": {}}, session=sid,
                                            id=10 + index, replica=1))

        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(call, index)
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
        assert all(result_of(a).get("isError") is not True for a in answers)
        await client.aclose()
