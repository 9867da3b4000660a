from __future__ import annotations

from pathlib import Path

import pytest

from converter import ConfigError
from converter.catalog import build_catalog, inline_tools_spec
from converter.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "marketplace.yaml"


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


def test_mcp_upstream_is_a_url_or_a_mapping_with_secret_headers(tmp_path: Path) -> None:
    short = load_settings(write(tmp_path, "mcp_upstream: http://127.0.0.1:3001/mcp\n"))
    assert short.mcp_upstream is not None and short.mcp_upstream.url == "http://127.0.0.1:3001/mcp"
    assert short.mcp_upstream.timeout == 60
    full = load_settings(write(tmp_path, "mcp_upstream:\n  url: https://mcp.example/mcp\n  timeout: 5\n"
                                         "  headers: {Authorization: Bearer upstream-secret}\n"))
    assert full.mcp_upstream is not None and full.mcp_upstream.timeout == 5
    assert "upstream-secret" not in repr(full)
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "mcp_upstream: ftp://x/mcp\n"))
    assert str(exc.value) == f"{tmp_path / 'config.yaml'}: mcp_upstream.url: Value error, must be an http(s) URL, not 'ftp://x/mcp'"


def test_sources_are_specs_or_mcp_servers_with_prefixes(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text("openapi: 3.0.3\n")
    settings = load_settings(write(tmp_path, """
sources:
  - {spec: api.yaml, prefix: market_, upstream: {url: http://127.0.0.1:3000}}
  - {mcp_upstream: http://127.0.0.1:3001/mcp, prefix: ev_}
"""))
    first, second = settings.sources
    assert first.spec == str(tmp_path / "api.yaml")  # relative to the config file, like `spec:`
    assert (first.prefix, second.prefix, second.mcp_upstream.url) == ("market_", "ev_", "http://127.0.0.1:3001/mcp")
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "sources: [{spec: a.yaml, mcp_upstream: http://x/mcp}]\n"))
    assert str(exc.value) == f"{path}: sources[0]: give either spec: (and/or tools:) or mcp_upstream:, not spec and mcp_upstream"
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "sources: [{prefix: x_}]\n"))
    assert str(exc.value) == f"{path}: sources[0]: give either spec: (and/or tools:) or mcp_upstream:, not neither"
    with pytest.raises(ConfigError, match=r"sources\.0\.prefix: String should match pattern"):
        load_settings(write(tmp_path, "sources: [{mcp_upstream: http://x/mcp, prefix: 'a b'}]\n"))


def test_two_sources_defining_one_tool_name_is_an_error_naming_both(tmp_path: Path) -> None:
    tool = "{name: get_users, method: GET, path: /users}"
    settings = load_settings(write(tmp_path, f"""
sources:
  - {{tools: [{tool}], upstream: {{url: http://127.0.0.1:1}}}}
  - {{tools: [{tool}], upstream: {{url: http://127.0.0.1:2}}}}
"""))
    with pytest.raises(ConfigError) as exc:
        build_catalog(settings)
    config = tmp_path / "config.yaml"
    assert str(exc.value) == (f"tool name 'get_users' is defined twice ({config}: sources[0]: tools[0] and "
                              f"{config}: sources[1]: tools[0]); rename one with x-mcp-name or `name:`, "
                              "or give a source a `prefix:`")
    prefixed = load_settings(write(tmp_path, f"""
sources:
  - {{tools: [{tool}], upstream: {{url: http://127.0.0.1:1}}}}
  - {{tools: [{tool}], upstream: {{url: http://127.0.0.1:2}}, prefix: b_}}
"""))
    catalog = build_catalog(prefixed)
    assert sorted(catalog.tool_names) == ["b_get_users", "get_users"]
    assert catalog.plan("b_get_users").tool.name == "b_get_users"


def test_cli_overrides_and_nothing_to_serve(tmp_path: Path) -> None:
    settings = load_settings(None, spec="s.yaml", upstream_url="http://u", port=9, host="0.0.0.0")
    assert (settings.spec, settings.upstream.url, settings.server.port, settings.server.host) == \
        ("s.yaml", "http://u", 9, "0.0.0.0")
    with pytest.raises(ConfigError) as exc:
        load_settings(None)
    assert str(exc.value) == ("<command line>: nothing to serve: give a SPEC (path or URL), `spec:`, `tools:`, "
                              "`mcp_upstream:` or `sources:`")


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
     "3 problems:\n  auth: give exactly one of introspection_endpoint and jwks_uri\n"
     "  auth.client_id: is needed to call the introspection endpoint\n"
     "  auth.client_secret: is needed for client_secret_basic"),
    ("  introspection_endpoint: http://as.test/i\n", "2 problems:\n"
     "  auth.client_id: is needed to call the introspection endpoint\n"
     "  auth.client_secret: is needed for client_secret_basic"),
    ("  introspection_endpoint: http://as.test/i\n  client_id: gw\n", "auth.client_secret: is needed for "
     "client_secret_basic"),
    ("  jwks_uri: http://as.test/certs\n  algorithms: [RS256, HS256]\n",
     "auth.algorithms: Value error, 'HS256' is not allowed: only asymmetric signatures can be checked with a JWKS"),
    ("  jwks_uri: http://as.test/certs\n  claim_to_header: [{claim: sub, header: Authorization}]\n",
     "auth.claim_to_header.0.header: Value error, 'Authorization' cannot be used as a claim header"),
    ("  jwks_uri: http://as.test/certs\n  claim_to_header: [{claim: sub, header: Host}]\n",
     "auth.claim_to_header.0.header: Value error, 'Host' cannot be used as a claim header"),
    ("  jwks_uri: http://as.test/certs\n  claim_to_header: [{claim: sub, header: Transfer-Encoding}]\n",
     "auth.claim_to_header.0.header: Value error, 'Transfer-Encoding' cannot be used as a claim header"),
    ("  jwks_uri: http://as.test/certs\n  claim_to_header: [{claim: sub, header: X-User}, {claim: k, header: "
     "x-api-key}]\nupstream: {headers: {X-Api-Key: k}}\n",
     "auth.claim_to_header[1].header: 'x-api-key' is a header upstream.headers (or mcp_upstream.headers) sets; map "
     "the claim to another header"),
    ("  jwks_uri: http://as.test/certs\nupstream: {headers: {Transfer-Encoding: chunked}}\n",
     "upstream.headers: Value error, the Transfer-Encoding header cannot be set (HTTP framing: the server sets it)"),
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


def test_yaml_words_stay_text_where_text_is_expected_and_flags_where_flags_are(tmp_path: Path) -> None:
    # YAML 1.1 reads off/yes/no/on as booleans, 010 as 8 and 12:30 as 750; the config is read as YAML 1.2.
    settings = load_settings(write(tmp_path, """
telemetry: {access_log: off, metrics: off, dashboard: no, log_payloads: yes}
read_only: yes
upstream:
  url: http://127.0.0.1:3000
  headers: {X-Flag: yes, X-Off: off, X-Version: 010, X-Time: 12:30, X-Count: 2, X-Ratio: 1.5}
tools:
  - method: GET
    path: /x
    parameters:
      - {name: q, in: query, required: yes, schema: {type: string, enum: [yes, no, on, off]}}
    requestBody: {required: no, content: {application/json: {schema: {type: object}}}}
acl: {audit: on, rules: [{features: [tools], when: "true"}]}
"""))
    telemetry = settings.telemetry
    assert (telemetry.access_log, telemetry.metrics, telemetry.dashboard, telemetry.log_payloads) == (
        "off", False, False, True)
    assert settings.read_only is True
    assert {k: v.get_secret_value() for k, v in settings.upstream.headers.items()} == {
        "X-Flag": "yes", "X-Off": "off", "X-Version": "010", "X-Time": "12:30", "X-Count": "2", "X-Ratio": "1.5"}
    parameter = settings.tools[0].parameters[0]
    assert parameter["required"] is True and parameter["schema"]["enum"] == ["yes", "no", "on", "off"]
    assert settings.tools[0].request_body is not None and settings.tools[0].request_body["required"] is False
    catalog = build_catalog(settings)
    assert catalog.plans[0].tool.input_schema["required"] == ["q"]
    from converter.policy.acl import compile_acl

    assert settings.acl is not None and compile_acl(settings.acl).audit is True


@pytest.mark.parametrize(("written", "read"), [("off", "off"), ("Off", "off"), ("OFF", "off"), ("false", "off"),
                                               ("STDERR", "stderr"), ("Stdout", "stdout"), ("./log.jsonl",
                                                                                            "./log.jsonl")])
def test_access_log_keywords_are_read_in_any_case(tmp_path: Path, written: str, read: str) -> None:
    settings = load_settings(write(tmp_path, f"telemetry: {{access_log: {written}}}\ntools: [{{method: GET, path: /x}}]\n"))
    assert settings.telemetry.access_log == read


@pytest.mark.parametrize(("text", "message"), [
    ("telemetry: {access_log: true}", "telemetry.access_log: Value error, must be stderr, stdout, off or a file "
                                      "path, not true"),
    ("tools: [{method: GET, path: /x, parameters: [{name: q, in: query, required: maybe}]}]",
     "tools.0.parameters: Value error, parameters[0].required must be true or false, not 'maybe'"),
    ("acl: {audit: sometimes}", "acl.audit: must be true or false, not 'sometimes'"),
])
def test_a_flag_that_is_not_one_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\nupstream: {url: http://127.0.0.1:9}\n" + (
        "" if "tools:" in text else "tools: [{method: GET, path: /y}]\n"))
    with pytest.raises(ConfigError) as exc:
        build_catalog(load_settings(path))
    assert str(exc.value) == f"{path}: {message}"


def test_workers_get_one_shared_session_key_when_none_is_configured(tmp_path: Path) -> None:
    from converter.serve import with_worker_session_key

    config = tmp_path / "c.yaml"
    config.write_text(f"spec: {SPEC}\nserver: {{workers: 3}}\n")
    load = with_worker_session_key(lambda: load_settings(str(config)))
    first, again = load(), load()
    keys = [k.get_secret_value() for k in first.server.session_keys]
    assert len(keys) == 1 and len(keys[0]) >= 32
    assert [k.get_secret_value() for k in again.server.session_keys] == keys  # every reload: the same key
    config.write_text(f"spec: {SPEC}\nserver: {{workers: 1}}\n")
    assert load().server.session_keys == []  # one process: the SDK's own session IDs


@pytest.mark.parametrize(("server", "message"), [
    ("{workers: 2, transport: stdio}", "server.workers: stdio is one process"),
    ("{workers: 2, stateless: true}", "server.workers: with server.stateless"),
    ("{workers: 0}", "server.workers: Input should be greater than or equal to 1"),
])
def test_workers_that_cannot_apply_name_the_key(tmp_path: Path, server: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"spec: {SPEC}\nserver: {server}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(str(config))
