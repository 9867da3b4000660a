"""`openapi-mcp demo` end to end, a spec read from a URL, and an inline-tools config served for real."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client

from tests.integration.conftest import ROOT, Processes, child_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]



def wait_for_line(process, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, process.log())
        if match:
            return match
        if process.popen.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"{process.name} never printed {pattern!r}:\n{process.log()}")


async def test_demo_serves_the_marketplace_and_prints_client_configs(
    processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str
) -> None:
    port, mock_port = free_port(), free_port()
    demo = processes.start("demo", [openapi_mcp_command, "demo", "--port", str(port), "--mock-port", str(mock_port)])
    url = wait_for_line(demo, r"MCP server: (http://\S+/mcp)").group(1)
    wait_for_line(demo, r"Press Ctrl\+C to stop")
    assert url == f"http://127.0.0.1:{port}/mcp"
    cursor = json.loads(re.search(r"Cursor \(~/.cursor/mcp.json\):\n(\{.*?\n\})", demo.log(), re.S).group(1))
    assert cursor == {"mcpServers": {"marketplace": {"url": url}}}
    assert '"type": "http"' in demo.log() and "mcp-remote" in demo.log()
    assert f"Live traffic: http://127.0.0.1:{port}/dashboard" in demo.log()
    async with Client(url) as client:
        assert len((await client.list_tools()).tools) == 10
        user = await client.call_tool("getUser", {"userId": "u1"})
    assert user.structured_content["name"] == "Alice Johnson"
    demo.stop()


def test_spec_from_a_url(mock_api_url: str, openapi_mcp_command: str) -> None:
    result = subprocess.run([openapi_mcp_command, "tools", f"{mock_api_url}/openapi.json", "--json"],
                            capture_output=True, text=True, timeout=60, env=child_env())
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 10
    missing = subprocess.run([openapi_mcp_command, "tools", f"{mock_api_url}/nope.json"],
                             capture_output=True, text=True, timeout=60, env=child_env())
    assert (missing.returncode, missing.stderr) == (
        2, f"openapi-mcp: error: {mock_api_url}/nope.json: fetching it answered HTTP 404\n")


async def test_inline_tools_config_with_static_headers(
    processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str, mock_api, tmp_path: Path
) -> None:
    port = free_port()
    server = processes.start("inline", [openapi_mcp_command, "serve", "--config", str(ROOT / "specs" / "marketplace-tools.yaml"),
                                        "--port", str(port)], MARKETPLACE_URL=mock_api.url)
    server.wait_ready(f"http://127.0.0.1:{port}/healthz")
    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"get_users", "get_user_orders"}
        assert tools["get_users"].meta["openapi-mcp/operation"] == {"method": "GET", "path": "/marketplace/users",
                                                                  "operationId": "get_users"}
        orders = await client.call_tool("get_user_orders", {"userid": "u1"})
    assert not orders.is_error and "u1" in orders.content[0].text
    [entry] = [e for e in mock_api.requests() if e["path"] == "/marketplace/orders"]
    assert entry["query"] == "userid=u1" and entry["status"] == 200


async def test_static_upstream_headers_reach_the_upstream_and_secrets_stay_out_of_logs(
    processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str, mock_api, tmp_path: Path
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"spec: {ROOT / 'specs' / 'marketplace.yaml'}\n"
                      f"upstream: {{url: '{mock_api.url}', headers: {{X-Api-Key: '${{API_KEY}}'}}}}\n")
    port = free_port()
    server = processes.start("headers", [openapi_mcp_command, "serve", "--config", str(config), "--port", str(port),
                                         "--verbose"], API_KEY="s3cr3t-value")
    server.wait_ready(f"http://127.0.0.1:{port}/healthz")
    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
        assert not (await client.call_tool("getUser", {"userId": "u1"})).is_error
    [entry] = [e for e in mock_api.requests() if e["path"] == "/marketplace/users/u1"]
    assert entry["headers"]["x-api-key"] == "s3cr3t-value"
    assert entry["headers"]["user-agent"].startswith("openapi-mcp/")
    server.stop()
    assert "s3cr3t-value" not in server.log()
