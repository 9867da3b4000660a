"""OpenTelemetry: a server span per MCP request with a client span per upstream call, and the trace
context propagated upstream; also the real OTLP/HTTP exporter against a local receiver."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import mock_api
from converter.config import load_settings
from converter.server.app import create_app

pytestmark = pytest.mark.anyio
EXPORTER = InMemorySpanExporter()
RECORDING = {"on": False}


class _OnlyWhileRecording(SimpleSpanProcessor):
    """The global provider can be set once per process: keep spans only during this module's test."""

    def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
        if RECORDING["on"]:
            super().on_end(span)


if not isinstance(trace.get_tracer_provider(), TracerProvider):
    _provider = TracerProvider()
    _provider.add_span_processor(_OnlyWhileRecording(EXPORTER))
    trace.set_tracer_provider(_provider)



@pytest.fixture
def recording():
    EXPORTER.clear()
    RECORDING["on"] = True
    yield EXPORTER
    RECORDING["on"] = False
    EXPORTER.clear()


async def call_get_user(tmp_path: Path, *, traces: bool) -> tuple[httpx.Response, list[dict]]:
    """One `tools/call getUser` through the app (traces on or off): its answer and the mock's request log."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "telemetry": {"access_log": "off", "traces": traces}}))
    upstream = mock_api.create_app()
    app = create_app(load_settings(str(config)), upstream_transport=httpx.ASGITransport(app=upstream))
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2025-06-18"}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            init = await http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}}})
            headers["mcp-session-id"] = init.headers["mcp-session-id"]
            call = await http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                   "params": {"name": "getUser", "arguments": {"userId": "u1"}}})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://mock.test") as mock:
            log = (await mock.get("/__mock/requests")).json()
    return call, log


async def test_upstream_call_is_a_child_span_and_carries_traceparent(tmp_path: Path, recording) -> None:
    _, log = await call_get_user(tmp_path, traces=True)
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    server, client = spans["tools/call getUser"], spans["GET /marketplace/users/{userId}"]
    assert server.kind == trace.SpanKind.SERVER and client.kind == trace.SpanKind.CLIENT
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.attributes["http.response.status_code"] == 200
    [entry] = [e for e in log if e["path"] == "/marketplace/users/u1"]
    trace_id = entry["headers"]["traceparent"].split("-")[1]
    assert trace_id == format(server.context.trace_id, "032x")


async def test_without_telemetry_traces_no_span_is_made_even_with_a_tracer_installed(tmp_path: Path,
                                                                                    recording) -> None:
    """The SDK's per-request span is dropped with traces off (5% of a call's CPU for no one)."""
    call, log = await call_get_user(tmp_path, traces=False)
    assert call.json()["result"]["isError"] is False
    assert "traceparent" not in next(e for e in log if e["path"] == "/marketplace/users/u1")["headers"]
    assert EXPORTER.get_finished_spans() == ()
