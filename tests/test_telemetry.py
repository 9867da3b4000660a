"""Access-log records and metric values after real calls through the app (in process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import mock_api
from converter.config import load_settings
from converter.server.app import create_app
from tests.mcp_http import mcp_request

pytestmark = pytest.mark.anyio



def make_app(tmp_path: Path, transport: httpx.AsyncBaseTransport | None = None, **telemetry: Any):
    config = tmp_path / "c.yaml"
    log = tmp_path / "access.log"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "telemetry": {"access_log": str(log), **telemetry}}))
    app = create_app(load_settings(str(config)),
                     upstream_transport=transport or httpx.ASGITransport(app=mock_api.create_app()))
    return app, log


async def rpc(http: httpx.AsyncClient, method: str, params: dict | None = None, session: str | None = None,
              id: int | None = 1) -> httpx.Response:
    headers, body = mcp_request(method, params, session=session, id=id)
    return await http.post("/mcp", headers=headers, json=body)


async def run_calls(app) -> str:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            init = await rpc(http, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                  "clientInfo": {"name": "pytest-client", "version": "1"}})
            sid = init.headers["mcp-session-id"]
            await rpc(http, "notifications/initialized", session=sid, id=None)
            await rpc(http, "tools/call", {"name": "getUser", "arguments": {"userId": "u1"}}, session=sid)
            await rpc(http, "tools/call", {"name": "getUser", "arguments": {"userId": "nobody"}}, session=sid)
            await rpc(http, "tools/call", {"name": "nope", "arguments": {}}, session=sid)
            await rpc(http, "tools/call", {"name": "createOrder", "arguments": {
                "userId": "u1", "item": "x", "quantity": 1, "price": 2, "note": "password=hunter2"}}, session=sid)
            return (await http.get("/metrics")).text


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_one_access_log_record_per_request(tmp_path: Path) -> None:
    app, log = make_app(tmp_path)
    await run_calls(app)
    recs = records(log)
    assert [r.get("mcp_method") for r in recs] == ["initialize", "notifications/initialized", "tools/call",
                                                   "tools/call", "tools/call", "tools/call"]
    init, _, ok, missing, unknown, create = recs
    assert init["client_name"] == "pytest-client" and init["session"] and init["http_status"] == 200
    assert ok["name"] == "getUser" and ok["outcome"] == "ok" and ok["is_error"] is False
    assert (ok["upstream_method"], ok["upstream_url"], ok["upstream_status"]) == ("GET", "/marketplace/users/{userId}", 200)
    assert ok["duration_ms"] >= ok["upstream_ms"] > 0 and ok["request_bytes"] > 0 and ok["response_bytes"] > 0
    assert ok["session"] == init["session"]
    assert (missing["outcome"], missing["upstream_status"]) == ("tool_error", 404)
    assert (unknown["outcome"], unknown["jsonrpc_error"]) == ("rpc_error", -32602)
    assert "request_payload" not in create  # payloads are off by default


async def test_logged_payloads_keep_values_that_only_look_like_secrets(tmp_path: Path) -> None:
    # (Off by default: test_one_access_log_record_per_request; redaction: the test below.)
    app, log = make_app(tmp_path, log_payloads=True)
    await run_calls(app)
    create = records(log)[-1]
    assert create["request_payload"]["arguments"]["item"] == "x"
    assert create["request_payload"]["arguments"]["note"] == "password=hunter2"  # a value, not a secret key
    init = next(r for r in records(log) if r.get("mcp_method") == "initialize")
    assert init["request_payload"]["clientInfo"]["name"] == "pytest-client"


async def test_payload_logging_redacts_secret_looking_keys_at_any_depth(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, log_payloads=True)
    secrets = {"api_key": "sekret-1", "Authorization": "Bearer sekret-2", "nested": {"client_secret": "sekret-3",
                                                                                  "list": [{"password": "sekret-4"}]}}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            init = await rpc(http, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                  "clientInfo": {"name": "pytest-client", "version": "1"}})
            sid = init.headers["mcp-session-id"]
            await rpc(http, "tools/call", {"name": "getUser", "arguments": {"userId": "u1", **secrets}}, session=sid)
    text = log.read_text()
    assert "sekret" not in text
    call = next(r for r in records(log) if r.get("mcp_method") == "tools/call")
    arguments = call["request_payload"]["arguments"]
    assert arguments["userId"] == "u1"
    assert arguments["api_key"] == arguments["Authorization"] == "[redacted]"
    assert arguments["nested"]["client_secret"] == arguments["nested"]["list"][0]["password"] == "[redacted]"


async def test_metrics_after_calls(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    text = await run_calls(app)
    assert 'openapi_mcp_tool_calls_total{outcome="ok",tool="getUser"} 1.0' in text
    assert 'openapi_mcp_tool_calls_total{outcome="tool_error",tool="getUser"} 1.0' in text
    assert 'openapi_mcp_tool_calls_total{outcome="rpc_error",tool="(unknown)"} 1.0' in text  # not the client's name
    assert 'openapi_mcp_requests_total{method="initialize",outcome="ok"} 1.0' in text
    assert 'openapi_mcp_upstream_duration_seconds_count{tool="getUser"} 2.0' in text
    assert "openapi_mcp_in_flight_requests 0.0" in text
    assert "nope" not in text


async def test_access_log_off_and_metrics_off(tmp_path: Path) -> None:
    app, log = make_app(tmp_path, access_log="off", metrics=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            assert (await http.get("/metrics")).status_code in (404, 405, 406)
    assert not log.exists()


async def test_readyz_reports_the_upstream(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready", "tools": 10, "upstreams": {"http://mock.test": "reachable"}}

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    app, _ = make_app(tmp_path, transport=httpx.MockTransport(refuse))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            down = await http.get("/readyz")
            alive = await http.get("/healthz")
    assert down.status_code == 503 and down.json()["upstreams"] == {"http://mock.test": "unreachable"}
    assert alive.status_code == 200


async def test_readyz_shows_the_redis_states_as_they_are_now_while_the_upstream_probe_is_cached() -> None:
    """The upstream probe costs requests and is cached; the Redis states are in-memory flags, so a
    replica whose Redis came back says so at once (it said `degraded` for up to the cache's 5 s)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from converter.server.health import readyz

    class Catalog:
        tool_names = ("a",)
        probes = 0

        async def probe(self) -> dict[str, str]:
            Catalog.probes += 1
            return {"http://api.test": "reachable"}

    redis = {"redis-cancels": "degraded"}
    app = Starlette(routes=[Route("/readyz", readyz(Catalog(), shared=lambda: dict(redis)))])  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        before = (await http.get("/readyz")).json()
        redis["redis-cancels"] = "reachable"
        after = (await http.get("/readyz")).json()
    assert before["upstreams"] == {"http://api.test": "reachable", "redis-cancels": "degraded"}
    assert after["upstreams"] == {"http://api.test": "reachable", "redis-cancels": "reachable"}
    assert Catalog.probes == 1


async def test_the_stdio_access_log_has_the_same_fields_as_http(tmp_path: Path) -> None:
    """On stdio (no HTTP layer) the SDK middleware makes and emits the record: a tool error is a
    tool error, an unknown tool an rpc error, and the sizes are those of the JSON-RPC messages."""
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    from converter.catalog import build_catalog
    from converter.server.app import build_server
    from converter.telemetry.setup import build_telemetry

    log = tmp_path / "access.log"
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    settings = settings.model_copy(update={"telemetry": settings.telemetry.model_copy(
        update={"access_log": str(log)})})
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=mock_api.create_app()))
    telemetry = build_telemetry(settings.telemetry, [p.name for p in catalog.plans], transport="stdio")
    try:
        async with catalog, Client(build_server(catalog, telemetry=telemetry)) as client:
            assert not (await client.call_tool("getUser", {"userId": "u1"})).is_error
            assert (await client.call_tool("getUser", {"userId": "nobody"})).is_error
            with pytest.raises(MCPError):
                await client.call_tool("nope", {})
    finally:
        telemetry.close()
    calls = [r for r in records(log) if r.get("mcp_method") == "tools/call"]
    ok, missing, unknown = calls
    assert {r["transport"] for r in calls} == {"stdio"}
    assert (ok["outcome"], ok["is_error"], missing["outcome"], missing["is_error"]) == ("ok", False, "tool_error", True)
    assert missing["upstream_status"] == 404 and (unknown["outcome"], unknown["jsonrpc_error"]) == ("rpc_error", -32602)
    for record in calls:
        assert record["request_bytes"] > 40 and record["response_bytes"] > 40, record


async def test_the_access_log_writes_the_lines_of_a_loop_turn_in_one_write_at_its_end() -> None:
    import io
    import threading

    import anyio.lowlevel

    from converter.telemetry.record import CallRecord
    from converter.telemetry.sinks import AccessLog

    class Stream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Stream()
    log = AccessLog(stream)
    for n in range(3):
        log.emit(CallRecord(http_method="POST", path=f"/mcp/{n}"))
    assert stream.getvalue() == ""  # this turn of the loop goes on
    await anyio.lowlevel.checkpoint()  # the end of the turn
    assert stream.writes == 1 and [json.loads(line)["path"] for line in stream.getvalue().splitlines()] == [
        "/mcp/0", "/mcp/1", "/mcp/2"]

    log.emit(CallRecord(http_method="POST", path="/mcp/3"))
    log.flush()  # shutdown: what waits is written now
    assert stream.writes == 2 and json.loads(stream.getvalue().splitlines()[-1])["path"] == "/mcp/3"

    thread = threading.Thread(target=log.emit, args=(CallRecord(http_method="GET", path="/thread"),))
    thread.start()
    thread.join()
    assert stream.writes == 3 and "/thread" in stream.getvalue()  # off the loop: at once
