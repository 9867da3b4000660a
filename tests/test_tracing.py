"""OpenTelemetry: a server span per MCP request with a client span per upstream call, and the trace
context propagated upstream; also the real OTLP/HTTP exporter against a local receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
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


async def test_upstream_call_is_a_child_span_and_carries_traceparent(tmp_path: Path, recording) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "telemetry": {"access_log": "off", "traces": True}}))
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
            await http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                            "params": {"name": "getUser", "arguments": {"userId": "u1"}}})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream), base_url="http://mock.test") as mock:
            log = (await mock.get("/__mock/requests")).json()
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    server, client = spans["tools/call getUser"], spans["GET /marketplace/users/{userId}"]
    assert server.kind == trace.SpanKind.SERVER and client.kind == trace.SpanKind.CLIENT
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.attributes["http.response.status_code"] == 200
    [entry] = [e for e in log if e["path"] == "/marketplace/users/u1"]
    trace_id = entry["headers"]["traceparent"].split("-")[1]
    assert trace_id == format(server.context.trace_id, "032x")


def test_serve_exports_spans_over_otlp_http_to_the_configured_endpoint(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    collector = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    mock = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # a closed upstream is enough: errors are spans too
    port = mock.server_address[1]
    mock.server_close()
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": f"http://127.0.0.1:{port}"},
                                  "telemetry": {"access_log": "off", "traces": True}}))
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
               OTEL_SERVICE_NAME="mcp-under-test", OTEL_BSP_SCHEDULE_DELAY="100", NO_PROXY="127.0.0.1")
    script = (
        "import anyio, sys\n"
        "from mcp import Client, StdioServerParameters\n"
        "async def main():\n"
        f"    p = StdioServerParameters(command={str(Path(sys.executable).parent / 'openapi-mcp')!r},\n"
        f"        args=['serve', '--config', {str(config)!r}, '--transport', 'stdio'], env=dict(__import__('os').environ))\n"
        "    async with Client(p) as c:\n"
        "        r = await c.call_tool('getUser', {'userId': 'u1'})\n"
        "        print('isError', r.is_error)\n"
        "anyio.run(main)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "isError True" in done.stdout, done.stderr[-2000:]
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    collector.shutdown()
    names, services = set(), set()
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                names |= {span.name for span in scope_spans.spans}
    assert services == {"mcp-under-test"}
    assert {"tools/call getUser", "GET /marketplace/users/{userId}"} <= names
