"""Kong AI Gateway configuration pasted in (converter.config.kong): the tutorial's blocks load as
pasted, with the tools named as Kong names them; Kong's spellings mean the same here, or get the
exact replacement; and every problem of a config is reported at once, each with its key."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

import mock_api
from converter.catalog import build_catalog
from converter.config import load_settings
from converter.config.kong import kong_tool_name
from converter.errors import ConfigError

KONG = Path(__file__).parent / "specs" / "kong"
TUTORIAL_PROXY = KONG / "tutorial-ai-mcp-proxy.yaml"
TUTORIAL_OAUTH = KONG / "tutorial-ai-mcp-oauth2.yaml"
ENV = {"MCP_AUTH_URL": "http://127.0.0.1:8000/marketplace", "KEYCLOAK_AUTHZ_URL": "http://kc.test/realms/demo",
       "KEYCLOAK_INTROSPECTION_URL": "http://kc.test/realms/demo/protocol/openid-connect/token/introspect",
       "CLIENT_ID": "kong", "CLIENT_SECRET": "s3cret"}


def write(tmp_path: Path, text: str, name: str = "kong.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_tutorials_proxy_block_loads_as_pasted_with_kongs_tool_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="openapi_mcp"):
        settings = load_settings(str(TUTORIAL_PROXY), upstream_url="http://mock.test")
    assert settings.mode == "tools" and settings.upstream.timeout == 60
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=mock_api.create_app()))
    assert [plan.name for plan in catalog.plans] == ["get-marketplace-users", "get-marketplace-orders"]
    assert catalog.plan("get-marketplace-orders").input_schema["required"] == ["userid"]  # type: ignore[union-attr]
    said = caplog.text
    assert "server.timeout: 60000 is Kong's tool-call timeout in milliseconds: read as upstream.timeout: 60 " \
           "(seconds)" in said
    assert "mode: conversion-listener is this server's default" in said


def test_both_tutorial_blocks_pasted_one_after_the_other_load_with_the_kong_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = write(tmp_path, TUTORIAL_PROXY.read_text() + "\n" + TUTORIAL_OAUTH.read_text())
    settings = load_settings(path, upstream_url="http://mock.test")
    auth = settings.auth
    assert auth is not None
    assert (auth.resource, auth.authorization_servers, auth.client_id) == (
        ENV["MCP_AUTH_URL"], [ENV["KEYCLOAK_AUTHZ_URL"]], "kong")
    assert auth.client_secret is not None and auth.client_secret.get_secret_value() == "s3cret"
    assert auth.introspection_endpoint == ENV["KEYCLOAK_INTROSPECTION_URL"]
    assert [(m.claim, m.header) for m in auth.claim_to_header] == [("sub", "X-User-Id")]
    assert auth.insecure_relaxed_audience_validation is True
    assert [t.name for t in settings.tools] == ["get-marketplace-users", "get-marketplace-orders"]


def test_a_deck_file_gives_the_upstream_the_mcp_path_and_the_oauth_settings(tmp_path: Path) -> None:
    path = write(tmp_path, """
_format_version: "3.0"
services:
  - name: mcp-service
    url: http://127.0.0.1:3000
    routes:
      - name: mcp-route
        paths: [/marketplace]
plugins:
  - name: ai-mcp-proxy
    route: mcp-route
    config:
      mode: conversion-listener
      tools:
        - description: Get users
          method: GET
          path: /marketplace/users
          annotations: {title: list-users}
        - description: Orders of a user
          method: GET
          path: /marketplace/{userId}/orders
          parameters: [{name: userId, in: path, required: true, schema: {type: string}}]
      server: {timeout: 45000}
      logging: {log_payloads: true, log_statistics: true}
      max_request_body_size: 32768
  - name: ai-mcp-oauth2
    config:
      resource: http://127.0.0.1:8000/marketplace
      authorization_servers: [http://as.test]
      jwks_endpoint: http://as.test/jwks
      jwt_claims_leeway: 5
      timeout: 3000
      cache_introspection: true
      metadata_endpoint: /marketplace/.well-known/oauth-protected-resource
""")
    settings = load_settings(path)
    assert settings.upstream.url == "http://127.0.0.1:3000" and settings.upstream.timeout == 45
    assert settings.server.path == "/marketplace" and settings.telemetry.log_payloads is True
    assert [t.name for t in settings.tools] == ["list-users", "get-marketplace-user-id-orders"]
    assert settings.auth is not None
    assert (settings.auth.jwks_uri, settings.auth.leeway, settings.auth.timeout) == ("http://as.test/jwks", 5, 3)


def test_passthrough_listener_is_mcp_upstream_and_kong_modes_we_do_otherwise_get_the_replacement(
        tmp_path: Path) -> None:
    deck = """
_format_version: "3.0"
services: [{name: everything, url: "http://127.0.0.1:3001/mcp"}]
plugins: [{name: ai-mcp-proxy, config: {mode: passthrough-listener, server: {timeout: 5000}}}]
"""
    settings = load_settings(write(tmp_path, deck))
    assert settings.mcp_upstream is not None
    assert (settings.mcp_upstream.url, settings.mcp_upstream.timeout) == ("http://127.0.0.1:3001/mcp", 5)
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "mode: passthrough-listener\n", "p.yaml"))
    assert ("  mode: passthrough-listener is Kong's passthrough: use mcp_upstream: URL (the MCP server to front) "
            "instead of mode:\n") in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "mode: conversion-only\ntools: [{method: GET, path: /a}]\n", "c.yaml"))
    assert "mode: conversion-only (Kong's tagged tool sets) is not needed here: list each API under sources:" \
        in str(exc.value)


def test_kong_acl_lists_and_credential_passthrough_are_errors_never_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, """
mode: conversion-listener
upstream: {url: http://127.0.0.1:3000}
default_acl: [{scope: tools, allow: [admins]}]
tools:
  - {description: d, method: GET, path: /a, acl: {allow: [admins]}}
auth:
  resource: http://127.0.0.1:8000/mcp
  authorization_servers: [http://as.test]
  jwks_uri: http://as.test/jwks
  passthrough_credentials: true
  ssl_verify: false
""")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    lines = str(exc.value).splitlines()
    assert lines[0] == f"{path}: 4 problems:"
    assert lines[1].startswith("  default_acl: Kong's ACL lists have no direct equivalent: write acl: rules")
    assert lines[2].startswith("  tools[0].acl: Kong's per-tool ACL has no direct equivalent")
    assert lines[3] == ("  auth.passthrough_credentials: not supported: the client's token is never sent upstream "
                        "(MCP forbids token passthrough)")
    assert lines[4] == "  auth.ssl_verify: not supported: TLS certificates are always verified"


def test_server_timeout_with_a_different_upstream_timeout_names_the_one_to_keep(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: conversion-listener\nupstream: {timeout: 30}\nserver: {timeout: 60000}\n"
                           "tools: [{method: GET, path: /a}]\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == (f"{path}: server.timeout: server.timeout is Kong's tool-call timeout in ms (60000); "
                              "upstream.timeout: 30 is set too: keep only upstream.timeout (seconds)")


def test_an_upstream_timeout_that_looks_like_milliseconds_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "spec: x.yaml\nupstream: {timeout: 60000}\n")
    with caplog.at_level(logging.WARNING, logger="openapi_mcp"):
        load_settings(path)
    assert (f"{path}: upstream.timeout: 60000 is in seconds (16.7 hours); if you meant milliseconds (as Kong), "
            "write 60") in caplog.text


def test_every_problem_of_a_config_is_reported_at_once_with_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, "spec: x.yaml\nmode: fast\nserver: {port: -1, timeout_s: 3}\nupstream: {timout: 9}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == (f"{path}: 4 problems:\n"
                              "  upstream.timout: unknown key\n"
                              "  server.port: Input should be greater than or equal to 0\n"
                              "  server.timeout_s: unknown key\n"
                              "  mode: Input should be 'tools' or 'dynamic'")


def test_a_key_given_twice_is_an_error_not_a_silent_last_one_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "spec: a.yaml\nupstream: {url: http://a.test}\nspec: b.yaml\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == f"{path}: line 3: 'spec' is given twice in one mapping (only the last would count)"


def test_kong_names_unnamed_tools_in_kebab_case_of_method_and_path() -> None:
    assert kong_tool_name("GET", "/marketplace/users") == "get-marketplace-users"
    assert kong_tool_name("post", "/users/{userId}/Orders") == "post-users-user-id-orders"
