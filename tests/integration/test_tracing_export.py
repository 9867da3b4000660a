"""The real OTLP/HTTP exporter: `openapi-mcp serve` (stdio, a child process) sends its spans to a
collector on loopback. The in-process span tests are tests/test_tracing.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

import mock_api

pytestmark = pytest.mark.integration


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
