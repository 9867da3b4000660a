"""The upstream API's own credentials, end to end: `openapi-mcp serve` with auth on, the official
SDK client, the real authorization server (tests/node/auth-server.mjs) and a recording upstream.

The upstream is the echo mock for specs/secured_api.yaml, whose operations ask for credentials
in every way OpenAPI can say it (an OAuth scheme met by the token exchange, the gateway's own
client-credentials token, API keys in a header, the query and a cookie, an AND and an OR); it
records every request, so what the upstream received is checked there. The MCP side verifies the
caller's token by introspection at the same realm, and the token endpoint's counters and faults
show how many token requests were made and what happens when it misbehaves.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult, TextContent

from tests.integration.authserver import (
    EXCHANGE_AUDIENCE,
    EXCHANGER,
    GATEWAY,
    OTHER_RESOURCE,
    SVC_SHORT,
    SVC_USER,
    TOKEN_EXCHANGE,
    AuthServer,
)
from tests.integration.conftest import ROOT, MockApi, Process, Processes, _free_port, _openapi_mcp

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECURED = ROOT / "tests" / "integration" / "specs" / "secured_api.yaml"
KEY_HEADER = "hdr-key-1234567890"  # given as ${KEY_HEADER}: the environment works for secrets
KEY_QUERY = "qry-key-4567890123"
KEY_COOKIE = "cky-key-7890123456"
EXCHANGE_TIMEOUT = 1.5


@dataclass
class Served:
    url: str
    process: Process
    access_log: Path

    @property
    def base(self) -> str:
        return self.url.rsplit("/mcp", 1)[0]

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return _free_port(), _free_port()


@pytest.fixture(scope="module")
def idp(start_auth_server: Callable[[Sequence[str]], AuthServer], ports: tuple[int, int]) -> AuthServer:
    return start_auth_server([f"http://127.0.0.1:{p}/mcp" for p in ports] + [OTHER_RESOURCE])


@pytest.fixture(scope="module")
def echo_url(processes: Processes) -> str:
    port = _free_port()
    process = processes.start("secured-echo", [sys.executable, "-m", "mock_api", "--spec", str(SECURED),
                                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{url}/__mock/requests")
    return url


@pytest.fixture
def upstream(echo_url: str) -> MockApi:
    api = MockApi(echo_url)
    api.reset()
    return api


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exchange(idp: AuthServer, **extra: Any) -> dict[str, Any]:
    return {"token_endpoint": idp.token_endpoint, "client_id": EXCHANGER[0], "client_secret": "${EXCHANGER_SECRET}",
            "audience": EXCHANGE_AUDIENCE, "scopes": ["api:read"], "timeout": EXCHANGE_TIMEOUT, **extra}


def config(idp: AuthServer, port: int, echo_url: str, log: Path, **extra: Any) -> dict[str, Any]:
    api = f"{echo_url}/api"
    url = f"http://127.0.0.1:{port}/mcp"
    return {
        "server": {"port": port},
        "auth": {"resource": url, "authorization_servers": [idp.issuer], "required_scopes": ["mcp:tools"],
                 "introspection_endpoint": idp.introspection_endpoint, "client_id": GATEWAY[0],
                 "client_secret": "${GATEWAY_SECRET}"},
        "telemetry": {"access_log": str(log)},
        "spec": str(SECURED),
        "upstream": {
            "url": api,
            "auth": {"token_exchange": exchange(idp)},
            "credentials": {
                "gateway": {"client_credentials": {"token_url": idp.token_endpoint, "client_id": SVC_SHORT[0],
                                                   "client_secret": "${SHORT_SECRET}", "refresh_leeway": 2}},
                "key_header": "${KEY_HEADER}", "key_query": KEY_QUERY, "key_cookie": KEY_COOKIE,
            },
        },
        **extra,
    }


def serve(processes: Processes, tmp: Path, name: str, settings: dict[str, Any]) -> Served:
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(settings))
    process = processes.start(name, [_openapi_mcp(), "serve", "--config", str(path)],
                              GATEWAY_SECRET=GATEWAY[1], EXCHANGER_SECRET=EXCHANGER[1], SHORT_SECRET=SVC_SHORT[1],
                              KEY_HEADER=KEY_HEADER)
    port = settings["server"]["port"]
    process.wait_ready(f"http://127.0.0.1:{port}/healthz")
    return Served(f"http://127.0.0.1:{port}/mcp", process, Path(settings["telemetry"]["access_log"]))


@pytest.fixture(scope="module")
def server(processes: Processes, tmp_path_factory: pytest.TempPathFactory, idp: AuthServer, ports: tuple[int, int],
           echo_url: str) -> Served:
    """The main server, and beside its spec: the same spec with a token endpoint that is down
    (`down_`), one that refuses the gateway's client (`refused_`), and inline tools whose calls
    carry the gateway's own token."""
    tmp = tmp_path_factory.mktemp("credentials")
    api = f"{echo_url}/api"
    dead = f"http://127.0.0.1:{closed_port()}/realms/demo/protocol/openid-connect/token"
    sources = [
        {"spec": str(SECURED), "prefix": "down_",
         "upstream": {"url": api, "auth": {"token_exchange": exchange(idp, token_endpoint=dead)}}},
        {"spec": str(SECURED), "prefix": "refused_",
         "upstream": {"url": api, "auth": {"token_exchange": exchange(idp, client_secret="not-the-secret")}}},
        {"tools": [{"name": "inlineReports", "method": "GET", "path": "/reports"}],
         "upstream": {"url": api, "auth": {"client_credentials": {
             "token_endpoint": idp.token_endpoint, "client_id": EXCHANGER[0], "client_secret": "${EXCHANGER_SECRET}",
             "client_auth": "client_secret_post", "resource": OTHER_RESOURCE}}}},
    ]
    return serve(processes, tmp, "credentials-main",
                 config(idp, ports[0], echo_url, tmp / "main-access.log", sources=sources))


@pytest.fixture(scope="module")
def dynamic(processes: Processes, tmp_path_factory: pytest.TempPathFactory, idp: AuthServer, ports: tuple[int, int],
            echo_url: str) -> Served:
    tmp = tmp_path_factory.mktemp("credentials-dynamic")
    return serve(processes, tmp, "credentials-dynamic",
                 config(idp, ports[1], echo_url, tmp / "dynamic-access.log", mode="dynamic"))


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    """The official SDK client over streamable HTTP, every request carrying the caller's token."""
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


async def call(url: str, token: str, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
    async with connect(url, token) as client:
        return await client.call_tool(tool, arguments or {})


def text_of(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent), first
    return first.text


def claims_of(idp: AuthServer, token: str) -> dict[str, Any]:
    """The claims of a JWT the realm signed (signature, issuer and expiry checked)."""
    decoded = jwt.decode(token, KeySet.import_key_set(idp.jwks()), algorithms=["RS256"])  # type: ignore[arg-type]
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": idp.issuer}, exp={"essential": True}).validate(
        decoded.claims)
    return dict(decoded.claims)


def bearer(entry: dict[str, Any]) -> str:
    value: str = entry["headers"]["authorization"]
    assert value.startswith("Bearer "), value
    return value.removeprefix("Bearer ")


async def caller_token(idp: AuthServer, resource: str | None = None) -> str:
    """A fresh caller token for the MCP server at `resource` (default: the main one), so no
    exchange of it is cached yet."""
    return await asyncio.to_thread(idp.token, *SVC_USER, resource=resource)


# ---------------------------------------------------------------- the token exchange


async def test_the_upstream_gets_a_token_exchanged_for_the_callers_never_the_callers_own(
        server: Served, idp: AuthServer, upstream: MockApi) -> None:
    alice = await asyncio.to_thread(idp.user_token, "alice", resource=server.url)
    before = idp.count(TOKEN_EXCHANGE, EXCHANGER[0])
    async with connect(server.url, alice) as client:
        profile = await client.call_tool("getProfile", {})
        order = await client.call_tool("createOrder", {"item": "book"})
    assert not profile.is_error and not order.is_error, (text_of(profile), text_of(order))
    assert json.loads(text_of(order))["body"] == {"item": "book"}
    entries = upstream.requests()
    assert [e["path"] for e in entries] == ["/api/me", "/api/orders"]
    assert alice not in json.dumps(entries)  # the caller's token never reaches the upstream
    sent = {bearer(e) for e in entries}
    assert len(sent) == 1 and idp.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 1  # the POST reused it
    claims = claims_of(idp, sent.pop())
    assert claims["aud"] == EXCHANGE_AUDIENCE and claims["scope"] == "api:read"
    assert claims["sub"] == "alice" and claims["azp"] == EXCHANGER[0]


async def test_one_exchange_per_caller_token_while_it_is_cached(server: Served, idp: AuthServer,
                                                                upstream: MockApi) -> None:
    first, second = await caller_token(idp), await caller_token(idp)
    before = idp.count(TOKEN_EXCHANGE, EXCHANGER[0])
    async with connect(server.url, first) as client:
        for _ in range(3):
            assert not (await client.call_tool("getProfile", {})).is_error
        results = await asyncio.gather(*(client.call_tool("getProfile", {}) for _ in range(5)))
        assert not any(r.is_error for r in results)
    assert idp.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 1
    async with connect(server.url, second) as client:
        results = await asyncio.gather(*(client.call_tool("getProfile", {}) for _ in range(4)))
        assert not any(r.is_error for r in results)
    assert idp.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 2
    sent = {bearer(e) for e in upstream.requests()}
    assert len(sent) == 2 and not sent & {first, second}  # one exchanged token per caller


async def test_dynamic_mode_calls_through_the_same_credentials(dynamic: Served, idp: AuthServer,
                                                               upstream: MockApi) -> None:
    token = await caller_token(idp, dynamic.url)
    before = idp.count(TOKEN_EXCHANGE, EXCHANGER[0])
    async with connect(dynamic.url, token) as client:
        assert [t.name for t in (await client.list_tools()).tools] == [
            "search_operations", "describe_operation", "call_operation"]
        profile = await client.call_tool("call_operation", {"name": "getProfile"})
        items = await client.call_tool("call_operation", {"name": "listItems"})
    assert not profile.is_error and not items.is_error, (text_of(profile), text_of(items))
    me, listed = upstream.requests()
    assert claims_of(idp, bearer(me))["sub"] == SVC_USER[0] and bearer(me) != token
    assert listed["headers"]["x-api-key"] == KEY_HEADER and "authorization" not in listed["headers"]
    assert idp.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 1


# ---------------------------------------------------------------- the gateway's own token, API keys


async def test_client_credentials_are_fetched_once_for_every_caller_and_renewed_before_expiry(
        server: Served, idp: AuthServer, upstream: MockApi) -> None:
    callers = [await caller_token(idp), await caller_token(idp)]
    assert not (await call(server.url, callers[0], "listReports")).is_error
    fetched = idp.count("client_credentials", SVC_SHORT[0])
    for token in callers:  # the tokens live 4 s; renewal starts 2 s before expiry
        async with connect(server.url, token) as client:
            results = await asyncio.gather(*(client.call_tool("listReports", {}) for _ in range(3)))
            assert not any(r.is_error for r in results)
    assert idp.count("client_credentials", SVC_SHORT[0]) == fetched
    await asyncio.sleep(2.3)
    assert not (await call(server.url, callers[1], "listReports")).is_error
    assert idp.count("client_credentials", SVC_SHORT[0]) == fetched + 1
    sent = [bearer(e) for e in upstream.requests()]
    assert len(set(sent[:7])) == 1 and sent[7] != sent[0]
    for token in (sent[0], sent[7]):
        claims = claims_of(idp, token)
        assert claims["sub"] == SVC_SHORT[0] and claims["exp"] - claims["iat"] == 4


async def test_an_upstream_401_renews_the_credential_and_retries_an_idempotent_call_once(
        server: Served, idp: AuthServer, upstream: MockApi) -> None:
    """The API stops accepting a cached token (revoked, rotated keys): the next GET gets a new
    exchanged token or gateway token and is sent again, once; a POST is not sent twice."""
    async with connect(server.url, await caller_token(idp)) as client:
        for tool, grant, client_id in (("getProfile", TOKEN_EXCHANGE, EXCHANGER[0]),
                                       ("listReports", "client_credentials", SVC_SHORT[0])):
            assert not (await client.call_tool(tool, {})).is_error  # a token cached
            before, fetched = len(upstream.requests()), idp.count(grant, client_id)
            upstream.refuse(1)
            result = await client.call_tool(tool, {})
            assert not result.is_error, text_of(result)
            refused, retried = upstream.requests()[before:]
            assert (refused["status"], retried["status"]) == (401, 200)
            assert bearer(refused) != bearer(retried)
            assert idp.count(grant, client_id) >= fetched + 1
        before = len(upstream.requests())
        upstream.refuse(1)
        order = await client.call_tool("createOrder", {"item": "book"})
        assert order.is_error and "401" in text_of(order)
        assert [e["status"] for e in upstream.requests()[before:]] == [401]  # not sent again
        assert not (await client.call_tool("createOrder", {"item": "book"})).is_error


async def test_inline_tools_carry_the_gateway_token_of_their_block(server: Served, idp: AuthServer,
                                                                   upstream: MockApi) -> None:
    result = await call(server.url, await caller_token(idp), "inlineReports")
    assert not result.is_error, text_of(result)
    claims = claims_of(idp, bearer(upstream.requests()[0]))
    assert claims["sub"] == EXCHANGER[0] and claims["aud"] == OTHER_RESOURCE


async def test_api_keys_go_where_the_specs_schemes_say(server: Served, idp: AuthServer, upstream: MockApi) -> None:
    async with connect(server.url, await caller_token(idp)) as client:
        for tool, arguments in (("listItems", {}), ("searchItems", {"q": "lamp"}), ("getPrefs", {}),
                                ("getBoth", {}), ("getPublicInfo", {})):
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, (tool, text_of(result))
    items, search, prefs, both, public = upstream.requests()
    assert items["headers"]["x-api-key"] == KEY_HEADER and items["query"] == ""
    assert search["query"] == f"q=lamp&api_key={KEY_QUERY}" and "x-api-key" not in search["headers"]
    assert prefs["headers"]["cookie"] == f"session={KEY_COOKIE}"
    # an AND of two schemes: both are sent; the other alternative (partner) is not configured
    assert both["headers"]["x-api-key"] == KEY_HEADER and both["query"] == f"api_key={KEY_QUERY}"
    assert "x-partner-key" not in both["headers"]
    for entry in (items, search, prefs, both, public):
        assert "authorization" not in entry["headers"]  # an API-key operation gets no token
        assert entry["validation"]["outcome"] == "valid", entry["validation"]
    assert not {"x-api-key", "cookie"} & set(public["headers"]) and public["query"] == ""


# ---------------------------------------------------------------- failures: a clear tool error, nothing sent


async def failed(server: Served, token: str, tool: str, upstream: MockApi) -> str:
    result = await call(server.url, token, tool)
    assert result.is_error
    assert upstream.requests() == []  # never a call without credentials, nor with the caller's token
    text = text_of(result)
    assert text.endswith("; nothing was sent to the upstream") and token not in text
    return text


async def test_a_scheme_without_credentials_is_a_tool_error(server: Served, idp: AuthServer,
                                                            upstream: MockApi) -> None:
    text = await failed(server, await caller_token(idp), "getPartnerData", upstream)
    assert text == ("Tool 'getPartnerData': the upstream needs credentials that are not configured ('partner': no "
                    "credentials for 'partner': set upstream.credentials.partner (an API key for the header "
                    "'X-Partner-Key')); nothing was sent to the upstream")
    text = await failed(server, await caller_token(idp), "down_listItems", upstream)
    assert "set sources[0].upstream.credentials.key_header" in text


async def test_a_token_endpoint_that_is_down(server: Served, idp: AuthServer, upstream: MockApi) -> None:
    text = await failed(server, await caller_token(idp), "down_getProfile", upstream)
    assert text.startswith("The token exchange at http://127.0.0.1:") and "(client 'mcp-exchanger') failed: the " \
        "token endpoint cannot be reached (connection refused or no route)" in text


async def test_a_token_endpoint_that_refuses_the_gateway(server: Served, idp: AuthServer, upstream: MockApi) -> None:
    text = await failed(server, await caller_token(idp), "refused_getProfile", upstream)
    assert text == (f"The token exchange at {idp.token_endpoint} (client 'mcp-exchanger') was refused (invalid_client: "
                    "client authentication failed); nothing was sent to the upstream")
    assert "not-the-secret" not in text


@pytest.mark.parametrize(("fault", "message"), [
    ({"mode": "slow", "delay_ms": 3000}, f"did not answer within {EXCHANGE_TIMEOUT:g} s"),
    ({"mode": "status", "status": 503}, "was refused (temporarily_unavailable: the realm is down (test fault))"),
    ({"mode": "garbage"}, "answered without a usable access_token"),
])
async def test_a_token_endpoint_that_is_slow_or_broken(server: Served, idp: AuthServer, upstream: MockApi,
                                                       fault: dict[str, Any], message: str) -> None:
    token = await caller_token(idp)  # not exchanged yet: the call has to ask the token endpoint
    await asyncio.to_thread(idp.fault, EXCHANGER[0], **fault)
    try:
        started = time.monotonic()
        text = await failed(server, token, "getProfile", upstream)
        assert time.monotonic() - started < EXCHANGE_TIMEOUT + 1.5
    finally:
        await asyncio.to_thread(idp.fault, EXCHANGER[0], "none")
    assert text == (f"The token exchange at {idp.token_endpoint} (client 'mcp-exchanger') {message}; nothing was "
                    "sent to the upstream")


# ---------------------------------------------------------------- what the operator sees (last: reads the whole run)


async def test_access_log_and_metrics_say_what_happened_and_hold_no_token_or_secret(
        server: Served, idp: AuthServer, upstream: MockApi) -> None:
    token = await caller_token(idp)
    async with connect(server.url, token) as client:
        for tool in ("getProfile", "listReports", "getBoth", "getPublicInfo", "getPartnerData", "down_getProfile"):
            await client.call_tool(tool, {})
    sent = [e["headers"].get("authorization", "") for e in upstream.requests()]
    await asyncio.sleep(0.2)  # the access log line is written after the response
    records = {r["name"]: r for r in server.log_records() if r.get("mcp_method") == "tools/call"}
    assert records["getProfile"]["upstream_auth"] == "token_exchange"
    assert records["listReports"]["upstream_auth"] == "client_credentials"
    assert records["getBoth"]["upstream_auth"] == "api_key"
    assert records["getPublicInfo"]["upstream_auth"] == "none"
    assert records["getPartnerData"]["upstream_auth_error"] == "not_configured"
    assert records["down_getProfile"]["upstream_auth_error"] == "unreachable"
    assert records["refused_getProfile"]["upstream_auth_error"] == "refused"
    assert records["refused_getProfile"]["token_endpoint_error"] == "invalid_client"
    assert records["down_getProfile"]["outcome"] == "tool_error" and "upstream_status" not in records["down_getProfile"]

    with httpx.Client(trust_env=False, timeout=10) as http:
        metrics = http.get(f"{server.base}/metrics").text
        dashboard = http.get(f"{server.base}/dashboard/data", headers={"authorization": f"Bearer {token}"})
    assert dashboard.status_code == 200
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("openapi_mcp_upstream_")}
    assert samples['openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="ok"}'] >= 4
    assert samples['openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="unreachable"}'] >= 2
    assert samples['openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="refused"}'] >= 2
    assert samples['openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="timeout"}'] >= 1
    assert samples['openapi_mcp_upstream_token_requests_total{kind="token_exchange",result="invalid_response"}'] >= 1
    assert samples['openapi_mcp_upstream_token_requests_total{kind="client_credentials",result="ok"}'] >= 2
    assert samples['openapi_mcp_upstream_token_exchange_cache_total{result="hit"}'] >= 8
    # Neither a caller's token, an issued token nor a secret in the log, the metrics or the dashboard.
    secrets = {token, *(s.removeprefix("Bearer ") for s in sent if s), EXCHANGER[1], SVC_SHORT[1], GATEWAY[1],
               KEY_HEADER, KEY_QUERY, KEY_COOKIE}
    process_log = server.process.log()
    for where, text in (("access log", server.access_log.read_text()), ("metrics", metrics),
                        ("dashboard", dashboard.text), ("server log", process_log)):
        leaked = [s[:12] for s in secrets if s in text]
        assert not leaked, f"{where} holds {leaked}"
