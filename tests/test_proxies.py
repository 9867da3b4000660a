"""Behind proxies (issue 13, item 4): `server.allowed_hosts` / `server.allowed_origins` for the
DNS-rebinding check of the MCP transport and the dashboard's data. With nginx in front:
tests/integration/test_replicas.py::test_a_proxy_that_sends_its_own_host_is_served_once_allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import mock_api
from converter.config import load_settings
from converter.errors import ConfigError
from converter.server.app import create_app

pytestmark = pytest.mark.anyio
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def initialize(tmp_path: Path, server: dict[str, Any], **headers: str) -> int:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "telemetry": {"access_log": "off"}, "server": server}))
    app = create_app(load_settings(str(config)), upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
        response = await http.post("/mcp", json=INIT, headers={
            "accept": "application/json, text/event-stream", **headers})
        dashboard = await http.get("/dashboard/data", headers={"host": headers.get("host", "127.0.0.1:8000")})
        assert (dashboard.status_code == 421) == (response.status_code == 421), (response, dashboard)
        return response.status_code


async def test_a_proxys_own_host_is_refused_on_loopback_until_allowed(tmp_path: Path) -> None:
    assert await initialize(tmp_path, {}, host="replicas") == 421
    assert await initialize(tmp_path, {"allowed_hosts": ["replicas"]}, host="replicas") == 200
    assert await initialize(tmp_path, {"allowed_hosts": ["mcp.example.com:*"]}, host="mcp.example.com:443") == 200
    assert await initialize(tmp_path, {"allowed_hosts": ["replicas"]}, host="evil.example") == 421
    assert await initialize(tmp_path, {"allowed_hosts": ["replicas"]}) == 200  # loopback stays allowed


async def test_allowed_hosts_turn_the_check_on_for_any_listener_and_origins_are_checked(tmp_path: Path) -> None:
    wide = {"host": "0.0.0.0"}
    assert await initialize(tmp_path, wide, host="evil.example") == 200  # as before: no check
    allowed = {**wide, "allowed_hosts": ["mcp.example.com"], "allowed_origins": ["https://app.example.com"]}
    assert await initialize(tmp_path, allowed, host="evil.example") == 421
    assert await initialize(tmp_path, allowed, host="mcp.example.com") == 200
    assert await initialize(tmp_path, allowed, host="mcp.example.com", origin="https://app.example.com") == 200
    assert await initialize(tmp_path, allowed, host="mcp.example.com", origin="https://evil.example") == 403


@pytest.mark.parametrize(("key", "value", "message"), [
    ("allowed_hosts", "https://mcp.example.com", "is not a Host value: give name, name:port or name:*"),
    ("allowed_hosts", "*", "is not a Host value"),
    ("allowed_origins", "mcp.example.com", "is not an Origin: give scheme://name[:port] (no path)"),
    ("allowed_origins", "https://app.example.com/path", "is not an Origin"),
])
def test_bad_allowed_values_are_one_clear_error(tmp_path: Path, key: str, value: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "server": {key: [value]}}))
    with pytest.raises(ConfigError) as exc:
        load_settings(str(config))
    assert f"server.{key}" in str(exc.value) and message in str(exc.value)
