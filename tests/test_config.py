from __future__ import annotations

from pathlib import Path

import pytest

from converter import ConfigError
from converter.catalog import build_catalog, inline_tools_spec
from converter.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_env_substitution_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "k-123")
    monkeypatch.delenv("UPSTREAM", raising=False)
    settings = load_settings(write(tmp_path, """
upstream:
  url: ${UPSTREAM:-http://127.0.0.1:3000}
  headers: {X-Api-Key: "${API_KEY}"}
tools: [{method: GET, path: /x}]
"""))
    assert settings.upstream.url == "http://127.0.0.1:3000"
    assert settings.upstream.headers["X-Api-Key"].get_secret_value() == "k-123"
    assert "k-123" not in repr(settings)


def test_missing_env_var_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    path = write(tmp_path, "upstream: {headers: {X-Key: '${NOPE}'}}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == (f"{path}: upstream.headers.X-Key: environment variable NOPE is not set "
                              "(use ${NOPE:-default} for a default)")


def test_unknown_and_wrong_keys_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "spec: x.yaml\nupstream: {timout: 3}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == f"{path}: upstream.timout: unknown key"
    path = write(tmp_path, "spec: x.yaml\nupstream: {url: 'ftp://x'}\n")
    with pytest.raises(ConfigError, match=r"upstream.url: Value error, must be an http\(s\) URL, not 'ftp://x'"):
        load_settings(path)


def test_header_values_with_newlines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains CR, LF or NUL"):
        load_settings(write(tmp_path, 'spec: x\nupstream: {headers: {X-A: "a\\r\\nb: c"}}\n'))


def test_passthrough_fails_closed_until_supported(tmp_path: Path) -> None:
    for block in ("mcp_upstream: http://x/mcp",):
        with pytest.raises(ConfigError, match="is not supported by this version yet"):
            load_settings(write(tmp_path, f"spec: x.yaml\n{block}\n"))


def test_cli_overrides_and_nothing_to_serve(tmp_path: Path) -> None:
    settings = load_settings(None, spec="s.yaml", upstream_url="http://u", port=9, host="0.0.0.0")
    assert (settings.spec, settings.upstream.url, settings.server.port, settings.server.host) == \
        ("s.yaml", "http://u", 9, "0.0.0.0")
    with pytest.raises(ConfigError, match="nothing to serve"):
        load_settings(None)


def test_spec_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text("openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: {}\n")
    settings = load_settings(write(tmp_path, "spec: api.yaml\n"))
    assert settings.spec == str(tmp_path / "api.yaml")


def test_bundled_inline_tools_config_converts() -> None:
    settings = load_settings(str(ROOT / "specs" / "marketplace-tools.yaml"))
    catalog = build_catalog(settings)
    names = [plan.name for plan in catalog.plans]
    assert names == ["get_users", "get_user_orders"]
    orders = catalog.plan("get_user_orders")
    assert orders is not None and orders.input_schema["required"] == ["userid"]


def test_inline_tools_with_the_same_route_are_refused() -> None:
    from converter.config import InlineTool

    tools = [InlineTool(method="GET", path="/a"), InlineTool(method="get", path="/a")]
    with pytest.raises(ConfigError, match=r"cfg: tools\[1\]: GET /a is already defined by tools\[0\]"):
        inline_tools_spec(tools, source="cfg")


AUTH = "spec: x.yaml\nauth:\n  resource: http://127.0.0.1:8000/mcp\n  authorization_servers: [http://as.test/realms/demo]\n"


@pytest.mark.parametrize(("extra", "message"), [
    ("", "auth: give exactly one of introspection_endpoint and jwks_uri"),
    ("  jwks_uri: http://as.test/certs\n  introspection_endpoint: http://as.test/i\n",
     "auth: give exactly one of introspection_endpoint and jwks_uri"),
    ("  introspection_endpoint: http://as.test/i\n", "auth.client_id: is needed to call the introspection endpoint"),
    ("  introspection_endpoint: http://as.test/i\n  client_id: gw\n", "auth.client_secret: is needed for "
     "client_secret_basic"),
    ("  jwks_uri: http://as.test/certs\n  algorithms: [RS256, HS256]\n",
     "auth.algorithms: Value error, 'HS256' is not allowed: only asymmetric signatures can be checked with a JWKS"),
    ("  jwks_uri: http://as.test/certs\n  claim_to_header: [{claim: sub, header: Authorization}]\n",
     "auth.claim_to_header.0.header: Value error, 'Authorization' cannot be used as a claim header"),
])
def test_auth_config_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    path = write(tmp_path, AUTH + extra)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == f"{path}: {message}"


def test_auth_is_refused_on_stdio(tmp_path: Path) -> None:
    path = write(tmp_path, AUTH + "  jwks_uri: http://as.test/certs\n")
    with pytest.raises(ConfigError, match="auth: applies to the HTTP transport only"):
        load_settings(path, transport="stdio")
    settings = load_settings(path)
    assert settings.auth is not None and settings.auth.expected_issuer == "http://as.test/realms/demo"
