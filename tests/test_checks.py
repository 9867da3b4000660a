"""Startup warnings for settings that validate but cannot work together (converter.config.checks)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from converter.config import Settings
from converter.config.checks import resource_warnings


def settings(resource: str, **server: Any) -> Settings:
    return Settings.model_validate({"spec": "x.yaml", "server": server, "auth": {
        "resource": resource, "authorization_servers": ["http://as.test"], "jwks_uri": "http://as.test/jwks"}})


def test_a_resource_that_cannot_be_the_listener_is_named_with_every_difference() -> None:
    [warning] = resource_warnings(settings("http://localhost:8000/mcp", port=8123, path="/marketplace"))
    assert warning == (
        "auth.resource 'http://localhost:8000/mcp' cannot be the URL of this server "
        "(http://127.0.0.1:8123/marketplace): the port is 8000 but this server listens on 8123; the path is '/mcp' "
        "but MCP is served at '/marketplace'. Clients connecting to one will refuse the other's metadata. Set "
        "auth.resource to the URL clients use, and behind a proxy (TLS, another host, port or path) say so with "
        "server.public_url")


@pytest.mark.parametrize(("resource", "server"), [
    ("http://127.0.0.1:8000/mcp", {}),
    ("http://localhost:8000/mcp/", {}),  # loopback names are one host; a trailing slash is the same path
    ("http://mcp.internal:8000/mcp", {"host": "0.0.0.0"}),  # any name may reach every interface
    ("https://mcp.example.com/mcp", {"public_url": "https://mcp.example.com/mcp"}),
    ("http://127.0.0.1:9999/other", {"transport": "http", "port": 0, "path": "/other"}),  # a free port: unknown
])
def test_resources_that_can_be_this_server_are_not_warned_about(resource: str, server: dict[str, Any]) -> None:
    assert resource_warnings(settings(resource, **server)) == []


def test_behind_a_proxy_the_resource_must_be_the_public_url() -> None:
    assert resource_warnings(settings("https://mcp.example.com/mcp", public_url="https://mcp.example.com/api/mcp")) \
        == ["auth.resource 'https://mcp.example.com/mcp' is not server.public_url 'https://mcp.example.com/api/mcp': "
            "clients that connect to the public URL will refuse this server's metadata; make them the same URL"]
    [warning] = resource_warnings(settings("https://mcp.example.com/mcp"))
    assert "the scheme is 'https' but this server listens on plain http" in warning
    assert "the host 'mcp.example.com' does not reach a listener on 127.0.0.1" in warning


def test_the_warnings_are_logged_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    import mock_api
    from converter.server.app import create_app

    config = Settings.model_validate({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                      "server": {"port": 8123, "path": "/marketplace"},
                                      "auth": {"resource": "http://localhost:8000/mcp",
                                               "authorization_servers": ["http://as.test"],
                                               "jwks_uri": "http://as.test/jwks"}})
    with caplog.at_level(logging.WARNING, logger="openapi_mcp"):
        create_app(config, upstream_transport=httpx.ASGITransport(app=mock_api.create_app()))
    assert "auth.resource 'http://localhost:8000/mcp' cannot be the URL of this server" in caplog.text
    assert "auth: no scopes at all" in caplog.text
