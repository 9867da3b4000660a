"""The auth checklist (../shared/AUTH.md §7) against the running server and a real authorization
server (node oidc-provider set up like Keycloak), plus the full browserless client flow."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from mcp import Client

from tests.integration.authserver import OTHER_RESOURCE, AuthServer
from tests.integration.conftest import ROOT, Process, Processes, _free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ACCEPT = "application/json, text/event-stream"
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}



@dataclass
class Guarded:
    url: str
    process: Process
    config: Path

    @property
    def base(self) -> str:
        return self.url.rsplit("/mcp", 1)[0]


@pytest.fixture(scope="module")
def ports() -> tuple[int, ...]:
    return _free_port(), _free_port(), _free_port(), _free_port()


@pytest.fixture(scope="module")
def idp(start_auth_server: Callable[..., AuthServer], ports: tuple[int, ...]) -> AuthServer:
    return start_auth_server([f"http://127.0.0.1:{p}/mcp" for p in ports] + [OTHER_RESOURCE])


def _serve(processes: Processes, tmp: Path, name: str, port: int, mock_url: str, auth: dict[str, Any],
           **extra: Any) -> Guarded:
    config = tmp / f"{name}.yaml"
    url = f"http://127.0.0.1:{port}/mcp"
    auth = {"resource": url, "required_scopes": ["mcp:tools"], "tool_scopes": {"createOrder": ["mcp:admin"]},
            "claim_to_header": [{"claim": "sub", "header": "X-User-Id"},
                                {"claim": "realm_access.roles", "header": "X-Roles"}], **auth}
    config.write_text(json.dumps({"spec": str(ROOT / "specs" / "marketplace.yaml"), "upstream": {"url": mock_url},
                                  "server": {"port": port}, "auth": auth, **extra}))
    process = processes.start(name, [str(Path(__import__("sys").executable).parent / "openapi-mcp"), "serve",
                                     "--config", str(config), "--verbose"], CLIENT_SECRET="gateway-secret")
    process.wait_ready(f"http://127.0.0.1:{port}/healthz")
    return Guarded(url, process, config)


@pytest.fixture(scope="module")
def introspecting(processes: Processes, tmp_path_factory, idp: AuthServer, ports, mock_api_url: str) -> Guarded:
    return _serve(processes, tmp_path_factory.mktemp("auth"), "mcp-introspection", ports[0], mock_api_url, {
        "authorization_servers": [idp.issuer], "introspection_endpoint": idp.introspection_endpoint,
        "client_id": "mcp-gateway", "client_secret": "${CLIENT_SECRET}"})


@pytest.fixture(scope="module")
def jwt_server(processes: Processes, tmp_path_factory, idp: AuthServer, ports, mock_api_url: str) -> Guarded:
    return _serve(processes, tmp_path_factory.mktemp("auth"), "mcp-jwt", ports[1], mock_api_url, {
        "authorization_servers": [idp.issuer], "jwks_uri": idp.jwks_uri, "jwks_refetch_interval": 1})


def post(url: str, method: str, params: dict | None = None, *, token: str | None = None, session: str | None = None,
         headers: dict | None = None) -> httpx.Response:
    h = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": "2025-06-18", **(headers or {})}
    if token:
        h["authorization"] = f"Bearer {token}"
    if session:
        h["mcp-session-id"] = session
    return httpx.post(url, headers=h, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
                      trust_env=False, timeout=30)


def session(url: str, token: str) -> str:
    init = post(url, "initialize", INIT, token=token)
    assert init.status_code == 200, (init.status_code, init.text)
    sid = init.headers["mcp-session-id"]
    httpx.post(url, headers={"authorization": f"Bearer {token}", "mcp-session-id": sid, "content-type":
               "application/json", "accept": ACCEPT, "mcp-protocol-version": "2025-06-18"},
               json={"jsonrpc": "2.0", "method": "notifications/initialized"}, trust_env=False)
    return sid


def tool_names(url: str, token: str) -> list[str]:
    sid = session(url, token)
    return [t["name"] for t in post(url, "tools/list", token=token, session=sid).json()["result"]["tools"]]


def test_1_2_no_token_and_garbage(introspecting: Guarded) -> None:
    meta = f"{introspecting.base}/.well-known/oauth-protected-resource/mcp"
    none = post(introspecting.url, "tools/list")
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == f'Bearer resource_metadata="{meta}", scope="mcp:tools"'
    garbage = post(introspecting.url, "tools/list", token="garbage")
    assert garbage.status_code == 401 and 'error="invalid_token"' in garbage.headers["www-authenticate"]


def test_6_other_audience_is_refused_before_the_upstream(introspecting: Guarded, idp: AuthServer, mock_api) -> None:
    token = idp.token("svc-user", "user-secret", resource=OTHER_RESOURCE)
    response = post(introspecting.url, "tools/call", {"name": "listUsers", "arguments": {}}, token=token)
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "audience" in response.headers["www-authenticate"]
    assert mock_api.requests() == []


def test_9_10_11_metadata(introspecting: Guarded, idp: AuthServer) -> None:
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        document = httpx.get(introspecting.base + path, trust_env=False).json()
        assert document == {"resource": introspecting.url, "authorization_servers": [idp.issuer],
                            "scopes_supported": ["mcp:admin", "mcp:tools"], "bearer_methods_supported": ["header"]}
        preflight = httpx.options(introspecting.base + path, headers={"origin": "http://localhost:6274",
                                                                      "access-control-request-method": "GET"},
                                  trust_env=False)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_13_14_per_tool_scopes_with_introspected_tokens(introspecting: Guarded, idp: AuthServer, mock_api) -> None:
    user = idp.token("svc-user", "user-secret", resource=introspecting.url)     # mcp:tools mcp:read
    admin = idp.token("svc-admin", "admin-secret", resource=introspecting.url)  # + mcp:admin
    assert "createOrder" not in tool_names(introspecting.url, user)
    assert "createOrder" in tool_names(introspecting.url, admin)
    sid = session(introspecting.url, user)
    denied = post(introspecting.url, "tools/call", {"name": "createOrder", "arguments": {}}, token=user, session=sid)
    assert denied.status_code == 403
    assert 'scope="mcp:admin mcp:tools", error="insufficient_scope"' in denied.headers["www-authenticate"]
    sid = session(introspecting.url, admin)
    created = post(introspecting.url, "tools/call", {"name": "createOrder", "arguments": {
        "userId": "u1", "item": "lamp", "quantity": 1, "price": 3}}, token=admin, session=sid)
    assert created.status_code == 200 and '"isError":false' in created.text.replace(" ", "")
    # 18: the mapped claims arrive upstream, the token does not
    [entry] = [e for e in mock_api.requests() if e["method"] == "POST"]
    assert entry["headers"]["x-user-id"] == "svc-admin" and entry["headers"]["x-roles"] == "admin,user"
    assert "authorization" not in entry["headers"] and admin not in json.dumps(entry)


def test_17_session_bound_to_its_principal(introspecting: Guarded, idp: AuthServer) -> None:
    a = idp.token("svc-user", "user-secret", resource=introspecting.url)
    b = idp.token("svc-admin", "admin-secret", resource=introspecting.url)
    sid = session(introspecting.url, a)
    assert post(introspecting.url, "tools/list", token=b, session=sid).status_code == 404
    assert post(introspecting.url, "tools/list", token=a, session=sid).status_code == 200


def test_20_23_jwt_tokens_over_jwks_and_key_rotation(jwt_server: Guarded, idp: AuthServer) -> None:
    token = idp.token("svc-jwt", "jwt-secret", resource=jwt_server.url)
    assert len(tool_names(jwt_server.url, token)) == 10
    opaque = idp.token("svc-admin", "admin-secret", resource=jwt_server.url)
    assert post(jwt_server.url, "tools/list", token=opaque).status_code == 401  # not a JWT: refused, not served
    idp.rotate_keys()
    rotated = idp.token("svc-jwt", "jwt-secret", resource=jwt_server.url)
    assert len(tool_names(jwt_server.url, rotated)) == 10
    assert jwt_server.process.log().count("cannot fetch the JWKS") == 0


def test_22_tokens_and_secrets_never_logged(introspecting: Guarded, idp: AuthServer) -> None:
    token = idp.token("svc-user", "user-secret", resource=introspecting.url)
    tool_names(introspecting.url, token)
    post(introspecting.url, "tools/list", token="garbage-token-value")
    log = introspecting.process.log()
    assert token not in log and "gateway-secret" not in log and "garbage-token-value" not in log


def test_8_authorization_server_down_is_503(processes: Processes, tmp_path: Path, mock_api_url: str) -> None:
    port, dead = _free_port(), _free_port()
    server = _serve(processes, tmp_path, "mcp-dead-as", port, mock_api_url, {
        "authorization_servers": [f"http://127.0.0.1:{dead}/realms/demo"],
        "introspection_endpoint": f"http://127.0.0.1:{dead}/realms/demo/protocol/openid-connect/token/introspect",
        "client_id": "mcp-gateway", "client_secret": "${CLIENT_SECRET}", "timeout": 2})
    response = post(server.url, "tools/list", token="anything")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    server.process.stop()


async def test_21_full_client_flow_dcr_pkce_resource_through_the_sdk(introspecting: Guarded, idp: AuthServer,
                                                                     mock_api) -> None:
    """An MCP client with no token: 401 -> metadata -> DCR -> auth code + PKCE + resource -> call."""
    import httpx2
    from mcp.client.auth import OAuthClientProvider, TokenStorage
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

    class Memory(TokenStorage):
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.client

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.client = client_info

    redirect_uri = "http://127.0.0.1:33418/callback"
    codes: list[AuthorizationCodeResult] = []
    seen: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        seen.append(authorization_url)
        q = {k: v[0] for k, v in parse_qs(urlsplit(authorization_url).query).items()}
        result = await anyio.to_thread.run_sync(lambda: idp.authorize(
            username="carol", client_id=q["client_id"], redirect_uri=q["redirect_uri"], scope=q.get("scope", ""),
            resource=q.get("resource"), code_challenge=q["code_challenge"], state=q.get("state")))
        codes.append(AuthorizationCodeResult(code=result.code, state=result.params.get("state"),
                                             iss=result.params.get("iss")))

    async def callback_handler() -> AuthorizationCodeResult:
        return codes[-1]

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=introspecting.url,
        client_metadata=OAuthClientMetadata(client_name="sdk-e2e", redirect_uris=[redirect_uri],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with Client(streamable_http_client(introspecting.url, http_client=http)) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("getUser", {"userId": "u1"})
    query = parse_qs(urlsplit(seen[0]).query)
    assert query["resource"] == [introspecting.url] and query["code_challenge_method"] == ["S256"]
    assert storage.client is not None and storage.client.client_id  # registered dynamically
    assert "createOrder" not in [t.name for t in tools]  # a user token: mcp:tools mcp:read only
    assert not result.is_error and result.structured_content["name"] == "Alice Johnson"
    [entry] = [e for e in mock_api.requests() if e["path"] == "/marketplace/users/u1"]
    assert entry["headers"]["x-user-id"] == "carol" and entry["headers"]["x-roles"] == "user"


def test_12_15_16_preflight_query_tokens_and_malformed_credentials(introspecting: Guarded, idp: AuthServer) -> None:
    preflight = httpx.options(introspecting.url, headers={"origin": "http://localhost:6274",
                                                         "access-control-request-method": "POST",
                                                         "access-control-request-headers": "authorization"},
                              trust_env=False)
    assert preflight.status_code == 200 and "authorization" in preflight.headers["access-control-allow-headers"]
    token = idp.token("svc-user", "user-secret", resource=introspecting.url)
    refused = httpx.post(introspecting.url, json={}, headers={"origin": "http://localhost:6274"}, trust_env=False)
    assert refused.status_code == 401 and "www-authenticate" in refused.headers["access-control-expose-headers"]
    in_query = httpx.post(f"{introspecting.url}?access_token={token}", json={}, trust_env=False)
    assert in_query.status_code == 400
    for headers in ({"authorization": "Basic bWNwOnNlY3JldA=="}, {"authorization": "Bearer"}):
        assert httpx.post(introspecting.url, headers=headers, json={}, trust_env=False).status_code == 400


def test_3_4_5_forged_expired_and_foreign_jwts(jwt_server: Guarded, idp: AuthServer) -> None:
    import base64
    import time

    from joserfc import jwk, jwt

    mine = jwk.RSAKey.generate_key(2048, parameters={"kid": "attacker"})
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": jwt_server.url, "sub": "x", "client_id": "x", "scope": "mcp:tools",
              "iat": now, "exp": now + 300}
    real_kid = idp.jwks()["keys"][0]["kid"]
    cases = {
        "unknown key": jwt.encode({"alg": "RS256", "kid": "attacker"}, claims, mine),
        "bad signature": jwt.encode({"alg": "RS256", "kid": real_kid}, claims, mine),
        "alg none": ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                             for part in ({"alg": "none", "typ": "JWT"}, claims)) + ".",
    }
    for name, token in cases.items():
        response = post(jwt_server.url, "tools/list", token=token)
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name
    # the AS cannot mint a wrong-issuer or expired token; forged ones must fail whatever fails first
    for bad in ({"iss": "http://evil/realms/demo"}, {"exp": now - 3600}):
        token = jwt.encode({"alg": "RS256", "kid": "attacker"}, {**claims, **bad}, mine)
        assert post(jwt_server.url, "tools/list", token=token).status_code == 401


def test_acl_when_rule_on_realm_roles_with_real_tokens(processes: Processes, tmp_path: Path, idp: AuthServer,
                                                      ports, mock_api_url: str) -> None:
    """PRODUCT.md acl: a `when` rule on realm_access.roles behaves differently for two tokens."""
    server = _serve(processes, tmp_path, "mcp-acl", ports[2], mock_api_url, {
        "authorization_servers": [idp.issuer], "introspection_endpoint": idp.introspection_endpoint,
        "client_id": "mcp-gateway", "client_secret": "${CLIENT_SECRET}", "tool_scopes": {}}, acl={"rules": [
            {"features": ["tools"], "name": {"type": "glob", "pattern": "list*"}},
            {"features": ["tools"], "name": {"type": "literal", "pattern": "deleteOrder"},
             "when": "'admin' in claims.realm_access.roles"}]})
    admin = idp.token("svc-admin", "admin-secret", resource=server.url)  # roles admin, user
    user = idp.token("svc-user", "user-secret", resource=server.url)     # roles user
    assert "deleteOrder" in tool_names(server.url, admin)
    assert "deleteOrder" not in tool_names(server.url, user) and "listUsers" in tool_names(server.url, user)
    sid = session(server.url, user)
    refused = post(server.url, "tools/call", {"name": "deleteOrder", "arguments": {"userId": "u1", "orderId": "o1"}},
                   token=user, session=sid)
    assert refused.status_code == 200 and refused.json()["error"] == {"code": -32602, "message": "Unknown tool: 'deleteOrder'"}
    server.process.stop()


def test_a_hidden_tool_stays_hidden_in_every_output(processes: Processes, tmp_path: Path, idp: AuthServer,
                                                    ports, mock_api_url: str) -> None:
    """Issue 12, item 7: a tool the rules hide from a caller answers like an unknown one on a call
    (no step-up challenge naming it and its scopes, although it has tool_scopes), in /metrics
    (public), and on the dashboard of that caller; an admin of the dashboard sees what happened."""
    server = _serve(processes, tmp_path, "mcp-hiding", ports[3], mock_api_url, {
        "authorization_servers": [idp.issuer], "introspection_endpoint": idp.introspection_endpoint,
        "client_id": "mcp-gateway", "client_secret": "${CLIENT_SECRET}"},  # tool_scopes: createOrder needs mcp:admin
        acl={"rules": [{"features": ["tools"]},
                       {"features": ["tools"], "effect": "deny", "name": {"type": "literal", "pattern": "createOrder"},
                        "when": "!('admin' in claims.realm_access.roles)"}]},
        telemetry={"dashboard_scopes": ["mcp:admin"]})
    user = idp.token("svc-user", "user-secret", resource=server.url)     # mcp:tools mcp:read, roles user
    admin = idp.token("svc-admin", "admin-secret", resource=server.url)  # + mcp:admin, roles admin, user
    sid = session(server.url, user)
    hidden = post(server.url, "tools/call", {"name": "createOrder", "arguments": {"userId": "u1"}},
                  token=user, session=sid)
    unknown = post(server.url, "tools/call", {"name": "noSuchTool", "arguments": {}}, token=user, session=sid)
    assert hidden.status_code == unknown.status_code == 200  # not a 403 step-up naming the tool
    assert hidden.json()["error"] == {"code": -32602, "message": "Unknown tool: 'createOrder'"}
    assert unknown.json()["error"]["code"] == -32602
    metrics = httpx.get(f"{server.base}/metrics", trust_env=False).text
    assert "createOrder" not in metrics
    assert 'openapi_mcp_tool_calls_total{outcome="rpc_error",tool="(unknown)"} 2.0' in metrics
    assert 'outcome="denied"' not in metrics
    # The caller's own view: its two calls, alike; nobody else's traffic.
    admin_sid = session(server.url, admin)
    post(server.url, "tools/call", {"name": "listUsers", "arguments": {}}, token=admin, session=admin_sid)
    mine = httpx.get(f"{server.base}/dashboard/data", headers={"authorization": f"Bearer {user}"},
                     trust_env=False).json()
    calls = [r for r in mine["recent"] if r["method"] == "tools/call"]
    assert sorted((r["name"], r["outcome"]) for r in calls) == [("createOrder", "rpc_error"), ("noSuchTool", "rpc_error")]
    assert {r.get("subject") for r in mine["recent"]} == {"svc-user"}
    assert mine["counts"]["by_outcome"]["denied"] == 0
    everything = httpx.get(f"{server.base}/dashboard/data", headers={"authorization": f"Bearer {admin}"},
                           trust_env=False).json()
    assert {r.get("subject") for r in everything["recent"]} == {"svc-user", "svc-admin"}
    assert ("createOrder", "denied") in {(r.get("name"), r["outcome"]) for r in everything["recent"]}
    server.process.stop()
