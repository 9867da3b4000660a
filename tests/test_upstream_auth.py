"""`upstream.auth` / `upstream.credentials` wired into the server: config keys, `openapi-mcp check`,
the catalog's call path, the shared connection's lifespan, and /metrics.

The token endpoint is an `httpx.MockTransport` and the upstream the echo mock in-process; the
real authorization server is exercised in tests/integration/test_credentials_served.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import yaml
from prometheus_client import generate_latest

from converter.auth.principal import ANONYMOUS, Principal
from converter.catalog import Catalog, build_catalog
from converter.catalog.openapi import OpenAPISource
from converter.catalog.served import CallContext
from converter.cli import main
from converter.config import load_settings
from converter.credentials import CredentialsSettings, CredentialStats, UpstreamCredentials, combined_stats
from converter.errors import ConfigError
from converter.invoke.upstream import Upstream
from converter.spec import spec_from_document
from converter.telemetry.record import CallRecord, current_record
from converter.telemetry.sinks import Metrics
from converter.tools import build_plans
from mock_api.echo import create_echo_app

pytestmark = pytest.mark.anyio

SECURED = Path(__file__).parent / "integration" / "specs" / "secured_api.yaml"
TOKEN_URL = "https://as.test/realms/demo/protocol/openid-connect/token"
SECRET = "gw-secret-value-123"
CALLER = "caller-token-aaaaaaaaaaaaaaaaaaaa"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write(tmp_path: Path, config: dict[str, Any], name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def own_token(**extra: Any) -> dict[str, Any]:
    return {"token_endpoint": TOKEN_URL, "client_id": "gw", "client_secret": SECRET, **extra}


AUTH_ON = {"resource": "http://127.0.0.1:8000/mcp", "authorization_servers": ["http://127.0.0.1:1/realms/demo"],
           "jwks_uri": "http://127.0.0.1:1/realms/demo/protocol/openid-connect/certs"}


# ---------------------------------------------------------------- config


def test_upstream_auth_and_credentials_are_keys_of_every_upstream(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_SECRET", SECRET)
    monkeypatch.setenv("API_KEY", "key-from-env")
    path = write(tmp_path, {
        "spec": str(SECURED), "auth": AUTH_ON,
        "upstream": {"url": "http://api.test", "auth": {"token_exchange": own_token(client_secret="${GW_SECRET}")},
                     "credentials": {"key_header": "${API_KEY}", "key_cookie": {"token": "t"},
                                     "gateway": {"client_credentials": {
                                         "token_url": TOKEN_URL, "client_id": "gw", "client_secret": SECRET}}}},
        "sources": [{"tools": [{"name": "ping", "method": "GET", "path": "/ping"}], "prefix": "x_",
                     "upstream": {"url": "http://api.test", "auth": {"client_credentials": own_token()}}}],
    })
    settings = load_settings(path)
    exchange = settings.upstream.auth.token_exchange if settings.upstream.auth else None
    assert exchange is not None and exchange.client_secret is not None
    assert exchange.client_secret.get_secret_value() == SECRET
    assert settings.upstream.credentials["key_header"].get_secret_value() == "key-from-env"  # type: ignore[union-attr]
    assert settings.sources[0].upstream.auth is not None
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text and "key-from-env" not in text


@pytest.mark.parametrize(("upstream", "key", "message"), [
    ({"auth": {"client_credentials": own_token(token_endpoint="ftp://as.test")}},
     "upstream.auth.client_credentials.token_endpoint", "must be an http(s) URL, not 'ftp://as.test'"),
    ({"auth": {"client_credentials": {"token_endpoint": TOKEN_URL, "client_id": "gw"}}},
     "upstream.auth.client_credentials", "client_secret is needed for client_auth client_secret_basic"),
    ({"auth": {}}, "upstream.auth", "give exactly one of token_exchange and client_credentials"),
    ({"auth": {"client_credentials": {**own_token(), "scope": "x"}}}, "upstream.auth.client_credentials.scope",
     "unknown key"),
    ({"credentials": {"key_header": "a\r\nb"}}, "upstream.credentials", "the credential for 'key_header' contains "
     "CR, LF or NUL"),
    ({"headers": {"authorization": "Bearer static"}, "auth": {"client_credentials": own_token()}}, "upstream",
     "upstream.headers and upstream.auth both set the Authorization header; remove one"),
])
def test_bad_credential_settings_are_one_error_naming_the_key(tmp_path: Path, upstream: dict[str, Any], key: str,
                                                              message: str) -> None:
    path = write(tmp_path, {"spec": str(SECURED), "upstream": upstream})
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert exc.value.key == key
    assert str(exc.value).startswith(f"{path}: {key}: ") and message in str(exc.value)
    assert "\r\n" not in str(exc.value)


def test_a_token_exchange_without_auth_is_refused_at_startup(tmp_path: Path) -> None:
    path = write(tmp_path, {"spec": str(SECURED), "sources": [
        {"spec": str(SECURED), "prefix": "b_",
         "upstream": {"credentials": {"user_oauth": {"token_exchange": own_token()}}}}]})
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert str(exc.value) == (f"{path}: sources[0].upstream.credentials.user_oauth.token_exchange: exchanges the "
                              "caller's token, so it needs auth: (the caller's verified token is the subject token); "
                              "use client_credentials for the gateway's own token")


def test_a_credential_of_the_wrong_kind_for_its_scheme_stops_the_start(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {"spec": str(SECURED), "upstream": {
        "url": "http://api.test", "credentials": {"key_header": {"username": "u", "password": "p"}}}})
    assert main(["check", "--config", path]) == 2
    assert capsys.readouterr().err == (
        "openapi-mcp: error: upstream.credentials.key_header: security scheme 'key_header' is an API key; give it "
        "as a string, not username/password\n")


# ---------------------------------------------------------------- openapi-mcp check


def many_secured(tmp_path: Path) -> str:
    paths = {f"/r{i}": {"get": {"operationId": f"op{i}", "responses": {"200": {"description": "ok"}}}}
             for i in range(8)}
    paths["/k"] = {"get": {"operationId": "keyed", "security": [{"key": []}],
                           "responses": {"200": {"description": "ok"}}}}
    paths["/p"] = {"get": {"operationId": "open", "security": [], "responses": {"200": {"description": "ok"}}}}
    document = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": paths,
                "security": [{"oauth": []}],
                "components": {"securitySchemes": {
                    "oauth": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": {}}}},
                    "key": {"type": "apiKey", "in": "header", "name": "X-Key"}}}}
    return write(tmp_path, document, "api.yaml")


def test_check_lists_the_tools_without_credentials_grouped_by_why(tmp_path: Path, capsys) -> None:
    spec = many_secured(tmp_path)
    config = write(tmp_path, {"spec": spec, "upstream": {"url": "http://api.test",
                                                         "credentials": {"key": "k", "nope": "x"}}})
    assert main(["check", "--config", config]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "warning  upstream.credentials.nope: the spec defines no security scheme of that name, so it is never sent",
        "warning  upstream: 8 tool(s) cannot be called (nothing is sent): op0, op1, op2, op3, op4 and 3 more; "
        "'oauth': no credentials for 'oauth': set upstream.credentials.oauth (token_exchange, client_credentials "
        "or token) or upstream.auth",
        "10 tools, 0 operation(s) skipped, 2 warning(s)",
    ]
    assert main(["check", "--config", config, "--strict"]) == 1
    capsys.readouterr()
    # Nothing configured: the calls go out as they always did, without the credentials the spec asks for.
    assert main(["check", spec]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("warning  upstream: 1 tool(s) are sent without the credentials their spec asks for (none "
                      "are configured): keyed; 'key': no credentials for 'key': set upstream.credentials.key (an API "
                      "key for the header 'X-Key')")
    assert out[1].startswith("warning  upstream: 8 tool(s) are sent without the credentials their spec asks for "
                             "(none are configured): op0, op1, op2, op3, op4 and 3 more; 'oauth': ")
    config = write(tmp_path, {"spec": spec, "upstream": {"url": "http://api.test", "credentials": {"key": "k"},
                                                         "auth": {"client_credentials": own_token()}}})
    assert main(["check", "--config", config]) == 0
    assert capsys.readouterr().out.splitlines() == ["10 tools, 0 operation(s) skipped, 0 warning(s)"]


# ---------------------------------------------------------------- the call path


class TokenServer:
    """A token endpoint: records each form, answers with numbered tokens."""

    def __init__(self) -> None:
        self.forms: list[dict[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(parse_qs(request.content.decode()))
        return httpx.Response(200, json={"access_token": f"issued-token-{len(self.forms)}", "token_type": "Bearer",
                                         "expires_in": 300})


@pytest.fixture
def echo() -> Any:
    return create_echo_app(SECURED)


async def echo_log(app: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        entries: list[dict[str, Any]] = (await http.get("/__mock/requests")).json()
        return entries


def secured_catalog(echo: Any, tokens: TokenServer, **settings: Any) -> Catalog:
    spec = spec_from_document(yaml.safe_load(SECURED.read_text()), str(SECURED), source=str(SECURED))
    plans, _ = build_plans(spec)
    credentials = UpstreamCredentials(CredentialsSettings.model_validate(settings), spec.security_schemes,
                                      transport=httpx.MockTransport(tokens))
    upstream = Upstream(timeout=5, transport=httpx.ASGITransport(app=echo))
    return Catalog([OpenAPISource(plans, upstream, base_url="http://api.test/api",
                                  security_schemes=spec.security_schemes, credentials=credentials)])


def verified(expires_in: float = 300) -> Principal:
    return Principal(subject="alice", client_id="cli", is_authenticated=True, expires_at=time.time() + expires_in)


async def test_a_call_carries_the_token_exchanged_for_the_verified_callers(echo: Any) -> None:
    tokens = TokenServer()
    catalog = secured_catalog(echo, tokens, auth={"token_exchange": own_token(audience="api")})
    record = CallRecord()
    reset = current_record.set(record)
    try:
        async with catalog:
            result = await catalog.call_tool("getProfile", {}, verified(), context=CallContext(bearer_token=CALLER))
    finally:
        current_record.reset(reset)
    assert not result.is_error, result.content
    (entry,) = await echo_log(echo)
    assert entry["headers"]["authorization"] == "Bearer issued-token-1" and CALLER not in json.dumps(entry)
    assert tokens.forms[0]["subject_token"] == [CALLER] and tokens.forms[0]["audience"] == ["api"]
    assert record.upstream_auth == "token_exchange" and record.upstream_status == 200
    assert CALLER not in json.dumps(record.as_log()) and "issued-token" not in json.dumps(record.as_log())


@pytest.mark.parametrize(("principal", "context", "message", "reason"), [
    # the catalog hands the verified principal to the source: its exp is the caller token's
    (verified(-5), CallContext(bearer_token=CALLER), "The caller's token has expired, so it cannot be exchanged "
     "for the upstream", "caller_token_expired"),
    # a token without a verified principal is not a caller token (never exchanged, never sent)
    (ANONYMOUS, CallContext(bearer_token=CALLER), "Tool 'getProfile': the upstream needs a token exchanged for "
     "the caller's ('user_oauth'), but this call carries no caller token", "no_caller_token"),
])
async def test_no_verified_caller_token_means_no_call(echo: Any, principal: Principal, context: CallContext,
                                                      message: str, reason: str) -> None:
    tokens = TokenServer()
    catalog = secured_catalog(echo, tokens, credentials={"user_oauth": {"token_exchange": own_token()}})
    record = CallRecord()
    reset = current_record.set(record)
    try:
        async with catalog:
            result = await catalog.call_tool("getProfile", {}, principal, context=context)
    finally:
        current_record.reset(reset)
    assert result.is_error and result.content[0].text == f"{message}; nothing was sent to the upstream"  # type: ignore[union-attr]
    assert await echo_log(echo) == [] and tokens.forms == []
    assert record.upstream_auth_error == reason and record.upstream_auth is None


async def test_without_any_credentials_configured_calls_go_out_as_before(echo: Any) -> None:
    settings = load_settings(None, spec=str(SECURED), upstream_url="http://api.test/api")
    catalog = build_catalog(settings, transport=httpx.ASGITransport(app=echo))
    assert catalog.upstream_credentials == []
    async with catalog:
        result = await catalog.call_tool("getProfile", {}, verified(), context=CallContext(bearer_token=CALLER))
    assert not result.is_error
    (entry,) = await echo_log(echo)
    assert "authorization" not in entry["headers"]  # and never the caller's token


# ---------------------------------------------------------------- the shared connection


async def test_credentials_open_and_close_with_the_upstream_client_they_share(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "spec": str(SECURED), "tools": [{"name": "ping", "method": "GET", "path": "/ping"}],
        "upstream": {"url": "http://api.test", "auth": {"client_credentials": own_token()},
                     "credentials": {"key_header": "k"}},
        "sources": [{"tools": [{"name": "pong", "method": "GET", "path": "/pong"}],
                     "upstream": {"url": "http://api.test", "credentials": {"key_header": "k"}}}],
    })
    catalog = build_catalog(load_settings(path))
    spec_source, inline, other = catalog.sources
    assert spec_source.upstream is inline.upstream and other.upstream is not inline.upstream
    assert catalog.resources()[:3] == [spec_source.upstream, spec_source.credentials, inline.credentials]
    # Beside the spec, the inline tools get upstream.auth only: the credentials are the spec's schemes'.
    assert inline.credentials is not None and inline.credentials.compiler.settings.credentials == {}
    assert [str(p) for p in catalog.problems] == [
        "sources[0].upstream.credentials.key_header: the spec defines no security scheme of that name, so it is "
        "never sent"]
    assert other.credentials is not None and not other.credentials.compiler.sources()  # a static key: no client
    clients = [creds._http for creds in catalog.upstream_credentials if creds._http is not None]
    assert len(clients) == 2
    for _ in range(2):  # a lifespan that starts again gets working clients again
        async with catalog:
            opened = [creds._http for creds in catalog.upstream_credentials if creds._http is not None]
            assert all(not client.is_closed for client in opened)
        assert all(client.is_closed for client in opened)


# ---------------------------------------------------------------- metrics


def test_metrics_count_token_requests_by_kind_and_result() -> None:
    stats = CredentialStats({("token_exchange", "ok"): 3, ("token_exchange", "timeout"): 1,
                             ("client_credentials", "ok"): 1}, exchange_cache_hits=7, exchange_cache_misses=3,
                            upstream_401_retries=1)
    text = generate_latest(Metrics(["t"], credential_stats=lambda: stats).registry).decode()
    for line in ('openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="ok"} 3.0',
                 'openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="timeout"} 1.0',
                 'openapi_mcp_upstream_token_requests_total{kind="client_credentials",result="ok"} 1.0',
                 'openapi_mcp_upstream_token_exchange_cache_total{result="hit"} 7.0',
                 'openapi_mcp_upstream_token_exchange_cache_total{result="miss"} 3.0',
                 "openapi_mcp_upstream_auth_retries_total 1.0"):
        assert line in text.splitlines()
    assert "openapi_mcp_upstream_token" not in generate_latest(Metrics(["t"]).registry).decode()


async def test_combined_stats_add_up_every_source() -> None:
    tokens = TokenServer()
    settings = CredentialsSettings.model_validate({"auth": {"client_credentials": own_token()}})
    both = [UpstreamCredentials(settings, {}, transport=httpx.MockTransport(tokens)) for _ in range(2)]
    for creds in both:
        await creds.credentials(None)
        await creds.credentials(None)  # held: not fetched again
        await creds.aclose()
    assert combined_stats(both) == CredentialStats({("client_credentials", "ok"): 2})
