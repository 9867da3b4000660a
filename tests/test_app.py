"""End to end in one process: SDK client -> our MCP server -> marketplace mock (ASGI)."""

from __future__ import annotations

import base64
import json
import logging

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

import mock_api
from converter.catalog import build_catalog
from converter.config import load_settings
from converter.server.app import build_server, create_app

pytestmark = pytest.mark.anyio



@pytest.fixture
async def marketplace():
    """(client, mock app): the SDK client talks in-process to our server, which calls the mock."""
    upstream_app = mock_api.create_app()
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=upstream_app))
    async with catalog, Client(build_server(catalog)) as client:
        yield client, upstream_app


async def mock_log(app) -> list[dict]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock.test") as http:
        return (await http.get("/__mock/requests")).json()


async def test_every_tool_is_listed_with_its_operation(marketplace) -> None:
    client, _ = marketplace
    tools = (await client.list_tools()).tools
    assert len(tools) == 10
    by_name = {t.name: t for t in tools}
    assert by_name["listUserOrders"].meta["openapi-mcp/operation"] == {
        "method": "GET", "path": "/marketplace/{userId}/orders", "operationId": "listUserOrders"}


async def test_calls_reach_the_mock_and_conform_to_its_spec(marketplace) -> None:
    client, app = marketplace
    users = await client.call_tool("listUsers", {})
    assert not users.is_error and len(users.structured_content["result"]) >= 2
    user_id = users.structured_content["result"][0]["id"]
    created = await client.call_tool("createOrder", {"userId": user_id, "item": "lamp", "quantity": 2, "price": 9.5})
    assert not created.is_error, created.content[0].text
    order_id = created.structured_content["id"]
    updated = await client.call_tool("updateOrder", {"userId": user_id, "orderId": order_id, "quantity": 3})
    assert updated.structured_content["quantity"] == 3
    orders = await client.call_tool("listOrdersByUser", {"userid": user_id})
    assert order_id in [o["id"] for o in orders.structured_content["result"]]
    deleted = await client.call_tool("deleteOrder", {"userId": user_id, "orderId": order_id})
    assert not deleted.is_error
    avatar = await client.call_tool("getUserAvatar", {"userId": user_id})
    assert avatar.content[0].type == "image"
    assert base64.b64decode(avatar.content[0].data).startswith(b"\x89PNG\r\n\x1a\n")
    log = await mock_log(app)
    assert log and all(entry["status"] < 400 for entry in log if entry["path"] != "/__mock/requests"), json.dumps(log)[:2000]


async def test_bad_arguments_never_reach_the_upstream(marketplace) -> None:
    client, app = marketplace
    result = await client.call_tool("createOrder", {"userId": "u1", "item": "lamp", "quantity": 0, "price": 1})
    assert result.is_error
    assert result.content[0].text == "Invalid arguments for tool 'createOrder' at $.quantity: 0 is less than the minimum of 1"
    assert [e for e in await mock_log(app) if e["method"] == "POST"] == []


async def test_upstream_errors_are_tool_errors_and_unknown_tools_protocol_errors(marketplace) -> None:
    client, _ = marketplace
    missing = await client.call_tool("getUser", {"userId": "nobody"})
    assert missing.is_error and "HTTP 404" in missing.content[0].text
    with pytest.raises(MCPError) as exc:
        await client.call_tool("noSuchTool", {})
    assert exc.value.code == -32602


async def test_cancelling_a_call_cancels_the_upstream_request() -> None:
    started, cancelled = anyio.Event(), anyio.Event()

    async def slow_upstream(scope, receive, send):
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=slow_upstream))
    async with catalog:
        plan = catalog.plan("listUsers")
        async with anyio.create_task_group() as tg:
            tg.start_soon(catalog.call_tool, "listUsers", {})
            with anyio.fail_after(5):
                await started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            await cancelled.wait()
    assert plan is not None


async def test_repeated_tools_list_is_served_from_the_first_answer(marketplace, monkeypatch) -> None:
    """The list is dumped to wire form once; later lists reuse it (no dump, no SDK pass)."""
    import converter.server.list_cache as list_cache

    dumped: list[str] = []
    real = list_cache.wire_tool
    monkeypatch.setattr(list_cache, "wire_tool", lambda tool: dumped.append(tool.name) or real(tool))
    client, _ = marketplace
    first = await client.list_tools()
    assert sorted(dumped) == sorted(t.name for t in first.tools) and dumped
    second = await client.list_tools()
    assert len(dumped) == len(first.tools)  # nothing dumped again
    assert [t.model_dump() for t in first.tools] == [t.model_dump() for t in second.tools]


@pytest.mark.parametrize("version", sorted(__import__("converter.server.list_cache", fromlist=["x"]).FAST_LIST_VERSIONS))
async def test_fast_tools_list_equals_the_sdk_serialization(version: str) -> None:
    """The fast path may skip the SDK's surface validation only where it changes nothing."""
    from mcp_types.methods import serialize_server_result

    from converter.server.list_cache import ListCache
    from tests.conftest import SPECS

    for spec in (mock_api.SPEC_PATH, SPECS / "openapi31.yaml", SPECS / "recursive.yaml", SPECS / "multipart.yaml"):
        catalog = build_catalog(load_settings(None, spec=str(spec), upstream_url="http://x.test"))
        sdk = serialize_server_result("tools/list", version, catalog.list_result.model_dump(
            by_alias=True, mode="json", exclude_none=True))
        assert sdk["tools"] == ListCache(catalog).wire_tools(), spec


async def test_list_cache_answers_once_per_protocol_version() -> None:
    from converter.server.list_cache import ListCache

    calls: list[str] = []

    async def call_next(ctx):
        calls.append(ctx.protocol_version)
        return {"tools": [], "n": len(calls)}

    class Ctx:
        def __init__(self, method, version, params=None):
            self.method, self.protocol_version, self.params = method, version, params

    cache = ListCache(build_catalog(load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://x.test")))
    wire = cache.wire_tools()
    assert await cache(Ctx("tools/list", "2025-06-18"), call_next) == {"tools": wire, "n": 1}
    assert await cache(Ctx("tools/list", "2025-06-18"), call_next) == {"tools": wire, "n": 1}
    assert await cache(Ctx("tools/list", "2025-03-26"), call_next) == {"tools": [], "n": 2}  # SDK path
    await cache(Ctx("tools/call", "2025-06-18"), call_next)
    with pytest.raises(MCPError, match="Invalid cursor"):  # no paging configured: no cursor is valid
        await cache(Ctx("tools/list", "2025-06-18", {"cursor": "x"}), call_next)
    assert calls == ["2025-06-18", "2025-03-26", "2025-06-18"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_openapi_only_server_lists_no_resources_and_no_prompts_instead_of_failing(mode: str) -> None:
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=mock_api.create_app()))
    async with catalog, Client(build_server(catalog), mode=mode) as client:
        capabilities = client.server_capabilities
        assert capabilities.resources is not None and capabilities.prompts is not None
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError) as exc:
            await client.read_resource("demo://nothing")
        assert (exc.value.code, exc.value.error.message) == (-32602, "Unknown resource: 'demo://nothing'")
        with pytest.raises(MCPError) as exc:
            await client.get_prompt("nothing")
        assert (exc.value.code, exc.value.error.message) == (-32602, "Unknown prompt: 'nothing'")


async def test_a_loopback_listener_refuses_foreign_hosts_and_origins_on_mcp() -> None:
    """DNS rebinding: a page on a hostile name that resolves to 127.0.0.1 reaches the loopback
    listener with its own Host (421) or, from a browser, its own Origin (403)."""
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    assert settings.server.host == "127.0.0.1"
    app = create_app(settings, upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}

    async def post(base_url: str, **headers: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
            return await http.post("/mcp", json=initialize, headers={
                "accept": "application/json, text/event-stream", **headers})

    async with app.router.lifespan_context(app):
        rebound = await post("http://evil.test:8000")
        foreign = await post("http://127.0.0.1:8000", origin="http://evil.test")
        own = await post("http://127.0.0.1:8000", origin="http://127.0.0.1:8000")
    assert (rebound.status_code, foreign.status_code, own.status_code) == (421, 403, 200)


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_no_auth_on_a_non_loopback_listener_is_warned_about(host: str, warned: bool,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test", host=host)
    caplog.set_level(logging.WARNING, logger="openapi_mcp")
    create_app(settings, upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
    said = [r.getMessage() for r in caplog.records if "anyone who can reach it can call every tool" in r.getMessage()]
    assert said == ([f"no auth: configured and listening on {host}: anyone who can reach it can call every tool"]
                    if warned else [])


async def test_the_mcp_path_goes_past_the_router_and_its_near_misses_are_answered_as_before(monkeypatch) -> None:
    from starlette.routing import Router

    from converter.asgi import PathShortcut

    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append("app:" + scope["path"])

    async def target(scope, receive, send):
        seen.append("target:" + scope["path"])

    shortcut = PathShortcut(app, path="/mcp", target=target)
    for path, kind in (("/mcp", "http"), ("/mcp/", "http"), ("/mcpx", "http"), ("/mcp", "websocket")):
        await shortcut({"type": kind, "path": path}, None, None)
    assert seen == ["target:/mcp", "app:/mcp/", "app:/mcpx", "app:/mcp"]

    routed: list[str] = []
    real = Router.__call__

    async def counting(self, scope, receive, send):
        routed.append(scope["path"])
        await real(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counting)
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    created = create_app(settings, upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
    async with created.router.lifespan_context(created), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=created), base_url="http://127.0.0.1:8000") as http:
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        init = await http.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200
        assert routed == []  # straight to the MCP endpoint
        slash = await http.post("/mcp/", headers=headers, content=b"{}", follow_redirects=False)
        assert slash.status_code == 307 and slash.headers["location"].endswith("/mcp")
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
        assert routed and "/mcp" not in routed
