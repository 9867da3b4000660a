"""The auth layer in process: a fake authorization server (httpx MockTransport) and the real app.

The same checklist runs against the real authorization server in tests/integration/test_auth_flow.py;
these tests pin the exact challenges and the cache/fail-closed behaviour that needs a controllable AS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from joserfc import jwk, jwt

import mock_api
from converter.asgi import MAX_BODY_BYTES, respond
from converter.auth.introspection import MAX_CACHED_TOKENS, IntrospectionVerifier, TokenCache
from converter.auth.jwt import JWTVerifier
from converter.auth.layer import AuthLayer
from converter.auth.principal import (
    AuthServerUnavailableError,
    ClaimHeaderError,
    InvalidTokenError,
    Principal,
    audience_matches,
    claim_headers,
)
from converter.config import load_settings
from converter.models import Operation
from converter.policy import build_policy, operation_scopes
from converter.server.app import create_app
from tests.mcp_http import ACCEPT, mcp_request

pytestmark = pytest.mark.anyio
RESOURCE = "http://127.0.0.1:8000/mcp"
ISSUER = "http://as.test/realms/demo"
META = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"



class FakeAS:
    """Introspection + JWKS endpoints answering from a table of tokens."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.jwks_calls = 0
        self.down = False
        self.status = 200
        self.delay = 0.0
        self.key = jwk.RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
        self.keys = [self.key]

    def add(self, token: str, **claims: Any) -> str:
        self.tokens[token] = {"active": True, "iss": ISSUER, "aud": RESOURCE, "sub": "alice", "client_id": "cli",
                              "scope": "mcp:tools", "exp": int(time.time()) + 300, **claims}
        return token

    def jwt(self, key: Any = None, header: dict | None = None, **claims: Any) -> str:
        key = key or self.key
        body = {"iss": ISSUER, "aud": RESOURCE, "sub": "bob", "client_id": "svc", "scope": "mcp:tools mcp:admin",
                "exp": int(time.time()) + 300, "iat": int(time.time()), **claims}
        return jwt.encode(header or {"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, body, key)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("Connection refused")
        await anyio.sleep(self.delay)
        if request.url.path.endswith("/certs"):
            self.jwks_calls += 1
            return httpx.Response(200, json=jwk.KeySet(self.keys).as_dict(private=False))
        self.calls += 1
        if self.status != 200:
            return httpx.Response(self.status, text="boom")
        assert request.headers["authorization"].startswith("Basic ")  # client_secret_basic
        token = dict(httpx.QueryParams(request.content.decode()))["token"]
        return httpx.Response(200, json=self.tokens.get(token, {"active": False}))


@pytest.fixture
def fake_as() -> FakeAS:
    return FakeAS()


def auth_settings(tmp_path, mode: str = "introspection", **extra: Any):
    auth: dict[str, Any] = {"resource": RESOURCE, "authorization_servers": [ISSUER], "required_scopes": ["mcp:tools"],
                            "tool_scopes": {"createOrder": ["mcp:admin"], "deleteOrder": ["mcp:admin"]},
                            "claim_to_header": [{"claim": "sub", "header": "X-User-Id"},
                                                {"claim": "realm_access.roles", "header": "X-Roles"}]}
    if mode == "introspection":
        auth.update(introspection_endpoint=f"{ISSUER}/protocol/openid-connect/token/introspect", client_id="gw",
                    client_secret="s3cret")
    else:
        auth.update(jwks_uri=f"{ISSUER}/protocol/openid-connect/certs")
    auth.update(extra)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "auth": auth}))
    return load_settings(str(config))


class Harness:
    def __init__(self, app, upstream) -> None:
        self.app, self.upstream = app, upstream
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")

    async def rpc(self, method: str, params: dict | None = None, *, token: str | None = None,
                  session: str | None = None, headers: dict | None = None, id: int | None = 1) -> httpx.Response:
        h, body = mcp_request(method, params, session=session, token=token, id=id)
        h.update(headers or {})
        return await self.http.post("/mcp", headers=h, content=json.dumps(body))

    async def session(self, token: str) -> str:
        init = await self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                             "clientInfo": {"name": "t", "version": "1"}}, token=token)
        assert init.status_code == 200, init.text
        sid = init.headers["mcp-session-id"]
        await self.rpc("notifications/initialized", token=token, session=sid, id=None)
        return sid


@pytest.fixture
async def harness(tmp_path, fake_as) -> Callable[..., Any]:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(mode: str = "introspection", **extra: Any):
        upstream = mock_api.create_app()
        app = create_app(auth_settings(tmp_path, mode, **extra), upstream_transport=httpx.ASGITransport(app=upstream),
                         auth_transport=httpx.MockTransport(fake_as.handler))
        async with app.router.lifespan_context(app):
            h = Harness(app, upstream)
            yield h
            await h.http.aclose()

    return start


async def test_no_token_gets_a_challenge_without_error(harness) -> None:
    async with harness() as h:
        response = await h.rpc("tools/list")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{META}", scope="mcp:tools"'


@pytest.mark.parametrize(("headers", "detail"), [
    ({"authorization": "Basic dXNlcjpwYXNz"}, "Use the Bearer authorization scheme"),
    ({"authorization": "Bearer "}, "Use the Bearer authorization scheme"),
])
async def test_malformed_credentials_are_invalid_request(harness, headers, detail) -> None:
    async with harness() as h:
        response = await h.http.post("/mcp", headers={**headers, "content-type": "application/json"}, content=b"{}")
    assert response.status_code == 400
    assert f'error="invalid_request", error_description="{detail}"' in response.headers["www-authenticate"]


async def test_two_authorization_headers_and_query_tokens_are_refused(harness, fake_as) -> None:
    token = fake_as.add("t1")
    async with harness() as h:
        two = await h.http.post("/mcp", headers=[("authorization", f"Bearer {token}"), ("authorization", "Bearer x")],
                                content=b"{}")
        query = await h.http.post(f"/mcp?access_token={token}", content=b"{}")
    assert (two.status_code, query.status_code) == (400, 400)
    assert "Access tokens are not accepted in the query string" in query.headers["www-authenticate"]


@pytest.mark.parametrize("claims", [
    {"active": False}, {"aud": "account"}, {"aud": ["account", "http://other/mcp"]}, {"iss": "http://evil"},
    {"exp": int(time.time()) - 3600},
])
async def test_unacceptable_tokens_are_invalid_token_and_nothing_reaches_the_upstream(harness, fake_as, claims) -> None:
    token = fake_as.add("bad", **claims)
    async with harness() as h:
        response = await h.rpc("tools/call", {"name": "listUsers", "arguments": {}}, token=token)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{META}", scope="mcp:tools", error="invalid_token"')
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.upstream), base_url="http://mock.test") as mock:
        assert (await mock.get("/__mock/requests")).json() == []


@pytest.mark.parametrize("aud", [[RESOURCE, "mcp-gateway"], "HTTP://127.0.0.1:8000/mcp/"])
async def test_audience_lists_and_canonical_forms_are_accepted(harness, fake_as, aud) -> None:
    token = fake_as.add("ok", aud=aud)
    async with harness() as h:
        sid = await h.session(token)
        response = await h.rpc("tools/list", token=token, session=sid)
    assert response.status_code == 200


async def test_relaxed_audience_accepts_other_audiences(harness, fake_as) -> None:
    token = fake_as.add("acct", aud="account")
    async with harness(insecure_relaxed_audience_validation=True) as h:
        assert (await h.session(token))


async def test_metadata_document_at_both_urls_with_cors(harness) -> None:
    async with harness() as h:
        inserted = await h.http.get("/.well-known/oauth-protected-resource/mcp")
        root = await h.http.get("/.well-known/oauth-protected-resource", headers={"origin": "http://app.test"})
        preflight = await h.http.options("/.well-known/oauth-protected-resource", headers={
            "origin": "http://app.test", "access-control-request-method": "GET"})
    assert inserted.json() == root.json() == {
        "resource": RESOURCE, "authorization_servers": [ISSUER], "scopes_supported": ["mcp:admin", "mcp:tools"],
        "bearer_methods_supported": ["header"]}
    # Any origin may read it (no credentials are involved): Starlette's CORSMiddleware answers "*".
    assert root.headers["access-control-allow-origin"] == "*"
    assert preflight.status_code == 200 and "GET" in preflight.headers["access-control-allow-methods"]


async def test_mcp_preflight_is_not_401_and_exposes_headers(harness, fake_as) -> None:
    token = fake_as.add("t")
    async with harness() as h:
        preflight = await h.http.options("/mcp", headers={"origin": "http://localhost:6274",
                                                          "access-control-request-method": "POST"})
        h.http.headers["origin"] = "http://localhost:6274"
        init = await h.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "t", "version": "1"}}, token=token)
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "mcp-session-id" in init.headers["access-control-expose-headers"]


async def test_per_tool_scopes_filter_the_list_and_step_up_on_call(harness, fake_as) -> None:
    basic = fake_as.add("basic", scope="mcp:tools")
    admin = fake_as.add("admin", scope="mcp:tools mcp:admin")
    async with harness() as h:
        sid = await h.session(basic)
        names = [t["name"] for t in (await h.rpc("tools/list", token=basic, session=sid)).json()["result"]["tools"]]
        denied = await h.rpc("tools/call", {"name": "createOrder", "arguments": {}}, token=basic, session=sid)
        sid2 = await h.session(admin)
        all_names = [t["name"] for t in (await h.rpc("tools/list", token=admin, session=sid2)).json()["result"]["tools"]]
        allowed = await h.rpc("tools/call", {"name": "createOrder", "arguments": {
            "userId": "u1", "item": "x", "quantity": 1, "price": 1}}, token=admin, session=sid2)
    assert "createOrder" not in names and "deleteOrder" not in names and "listUsers" in names
    assert len(all_names) == 10
    assert denied.status_code == 403
    assert denied.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{META}", scope="mcp:admin mcp:tools", error="insufficient_scope", '
        'error_description="Calling tool createOrder needs more scopes"')
    assert allowed.status_code == 200 and '"isError":false' in allowed.text.replace(" ", "")


async def test_mcp_name_header_is_used_without_reading_the_body(harness, fake_as) -> None:
    basic = fake_as.add("basic", scope="mcp:tools")
    async with harness() as h:
        sid = await h.session(basic)
        denied = await h.rpc("tools/call", {"name": "createOrder", "arguments": {}}, token=basic, session=sid,
                             headers={"mcp-method": "tools/call", "mcp-name": "createOrder"})
    assert denied.status_code == 403


async def test_scope_hierarchy_grants_implied_scopes(harness, fake_as) -> None:
    admin_only = fake_as.add("a", scope="mcp:admin")
    async with harness(scope_implies={"mcp:admin": ["mcp:tools"]}) as h:
        sid = await h.session(admin_only)
        names = [t["name"] for t in (await h.rpc("tools/list", token=admin_only, session=sid)).json()["result"]["tools"]]
    assert len(names) == 10


async def test_missing_base_scope_is_403(harness, fake_as) -> None:
    token = fake_as.add("none", scope="openid")
    async with harness() as h:
        response = await h.rpc("tools/list", token=token)
    assert response.status_code == 403
    assert 'scope="mcp:tools", error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_authorization_server_down_or_failing_is_503_never_200(harness, fake_as) -> None:
    token = fake_as.add("t")
    async with harness() as h:
        fake_as.down = True
        down = await h.rpc("tools/list", token=token)
        fake_as.down, fake_as.status = False, 500
        failing = await h.rpc("tools/list", token=token)
    assert (down.status_code, failing.status_code) == (503, 503)
    assert failing.json() == {"error": "temporarily_unavailable",
                              "error_description": "The authorization server answered HTTP 500"}


async def test_session_is_bound_to_its_principal(harness, fake_as) -> None:
    alice = fake_as.add("alice", sub="alice")
    bob = fake_as.add("bob", sub="bob")
    async with harness() as h:
        sid = await h.session(alice)
        stolen = await h.rpc("tools/list", token=bob, session=sid)
        own = await h.rpc("tools/list", token=alice, session=sid)
    assert stolen.status_code == 404 and own.status_code == 200


async def test_claims_go_upstream_as_headers_and_the_token_does_not(harness, fake_as) -> None:
    token = fake_as.add("tok-0123456789abcdef", sub="alice", realm_access={"roles": ["admin", "user"]})
    async with harness() as h:
        sid = await h.session(token)
        result = await h.rpc("tools/call", {"name": "getUser", "arguments": {"userId": "u1"}}, token=token, session=sid)
        log = (await httpx.AsyncClient(transport=httpx.ASGITransport(app=h.upstream),
                                       base_url="http://mock.test").get("/__mock/requests")).json()
    assert result.status_code == 200
    [entry] = [e for e in log if e["path"] == "/marketplace/users/u1"]
    assert entry["headers"]["x-user-id"] == "alice" and entry["headers"]["x-roles"] == "admin,user"
    assert "authorization" not in entry["headers"]
    assert all(token not in json.dumps(e) for e in log)


async def test_the_auth_layer_passes_no_authorization_header_below_it(tmp_path, fake_as) -> None:
    """The client's credentials stop at the auth layer: nothing below it (the MCP transport, tools,
    a passthrough) can see or forward them, whatever it builds its requests from."""
    token = fake_as.add("tok-below-0123456789")
    seen: list[list[tuple[bytes, bytes]]] = []

    async def below(scope, receive, send) -> None:
        seen.append(list(scope["headers"]))
        await respond(send, 200, b"{}", {"content-type": "application/json"})

    settings = auth_settings(tmp_path).auth
    verifier = IntrospectionVerifier(settings, transport=httpx.MockTransport(fake_as.handler))
    layer = AuthLayer(below, settings=settings, verifier=verifier, mcp_path="/mcp",
                      policy=build_policy([], required_scopes=["mcp:tools"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=layer), base_url="http://127.0.0.1:8000") as http:
        answer = await http.post("/mcp", headers={"authorization": f"Bearer {token}", "x-kept": "1"}, content=b"{}")
    await verifier.aclose()
    assert answer.status_code == 200
    [headers] = seen
    assert b"authorization" not in [name for name, _ in headers] and (b"x-kept", b"1") in headers
    assert token.encode() not in b"".join(value for _, value in headers)


async def test_a_request_body_past_the_limit_is_refused_without_reading_the_rest(harness, fake_as) -> None:
    """With per-tool scopes the auth layer reads the body to find the tool: at most MAX_BODY_BYTES
    of it (an endless body costs that much), then 413."""
    token = fake_as.add("t")
    chunk = b" " * 65536
    sent = 0

    async def endless():
        nonlocal sent
        while sent < 4 * MAX_BODY_BYTES:  # bounded, so a broken limit fails the test instead of hanging it
            sent += len(chunk)
            yield chunk

    async with harness() as h:
        sid = await h.session(token)
        big = await h.http.post("/mcp", content=endless(), headers={
            "authorization": f"Bearer {token}", "mcp-session-id": sid, "content-type": "application/json",
            "accept": ACCEPT, "mcp-protocol-version": "2025-06-18"})
        after = await h.rpc("tools/call", {"name": "getUser", "arguments": {"userId": "u1"}}, token=token, session=sid)
    assert sent <= MAX_BODY_BYTES + 2 * len(chunk), f"{sent} bytes read"
    assert big.status_code == 413 and big.json() == {"error": "request body too large"}
    assert after.status_code == 200


# -- verifiers alone ---------------------------------------------------------------------------

async def test_introspection_is_cached_and_shared_by_concurrent_requests(tmp_path, fake_as) -> None:
    settings = auth_settings(tmp_path).auth
    verifier = IntrospectionVerifier(settings, transport=httpx.MockTransport(fake_as.handler))
    token = fake_as.add("t", exp=int(time.time()) + 300)
    fake_as.delay = 0.1
    results: list[Principal] = []

    async def one() -> None:
        results.append(await verifier.verify(token))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    await verifier.verify(token)
    assert fake_as.calls == 1 and len(results) == 20 and results[0].subject == "alice"
    with pytest.raises(InvalidTokenError):
        await verifier.verify("unknown")
    with pytest.raises(InvalidTokenError):
        await verifier.verify("unknown")
    assert fake_as.calls == 2  # the inactive answer is cached briefly too
    await verifier.aclose()


async def test_introspection_cache_never_outlives_the_token(tmp_path, fake_as) -> None:
    now = [float(int(time.time()))]  # one clock for the token's exp and the cache's expiry

    def clock() -> float:
        return now[0]

    verifier = IntrospectionVerifier(auth_settings(tmp_path, leeway=0).auth,
                                     transport=httpx.MockTransport(fake_as.handler), clock=clock, monotonic=clock)
    token = fake_as.add("short", exp=int(now[0]) + 1)  # cache_ttl is longer: the exp must bound it
    await verifier.verify(token)
    now[0] += 0.5
    await verifier.verify(token)
    assert fake_as.calls == 1  # still cached
    now[0] += 0.7
    fake_as.tokens[token]["active"] = False
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)
    assert fake_as.calls == 2
    await verifier.aclose()


async def test_jwt_checks_signature_algorithm_issuer_audience_expiry(tmp_path, fake_as) -> None:
    verifier = JWTVerifier(auth_settings(tmp_path, "jwt").auth, transport=httpx.MockTransport(fake_as.handler))
    principal = await verifier.verify(fake_as.jwt(realm_access={"roles": ["admin"]}))
    assert (principal.subject, principal.client_id, sorted(principal.scopes)) == ("bob", "svc", ["mcp:admin", "mcp:tools"])
    other = jwk.RSAKey.generate_key(2048, parameters={"kid": "k1"})
    hs = jwk.OctKey.import_key(b"x" * 32)
    cases = {
        "signature": fake_as.jwt(key=other),
        "unknown key": fake_as.jwt(key=jwk.RSAKey.generate_key(2048, parameters={"kid": "zz"})),
        "algorithm": jwt.encode({"alg": "HS256", "kid": "k1"}, {"iss": ISSUER, "aud": RESOURCE, "exp": 2**31}, hs,
                                algorithms=["HS256"]),
        "issued by another": fake_as.jwt(iss="http://evil"),
        "audience": fake_as.jwt(aud="account"),
        "expired": fake_as.jwt(exp=int(time.time()) - 3600),
        "not a valid JWT": "garbage",
    }
    for expected, token in cases.items():
        with pytest.raises(InvalidTokenError, match=expected):
            await verifier.verify(token)
    await verifier.aclose()


async def test_jwks_rotation_refetches_once_and_is_rate_limited(tmp_path, fake_as) -> None:
    verifier = JWTVerifier(auth_settings(tmp_path, "jwt", jwks_refetch_interval=60).auth,
                           transport=httpx.MockTransport(fake_as.handler))
    await verifier.verify(fake_as.jwt())
    new = jwk.RSAKey.generate_key(2048, parameters={"kid": "k2"})
    fake_as.keys.append(new)
    await verifier.verify(fake_as.jwt(key=new))
    assert fake_as.jwks_calls == 2
    stranger = jwk.RSAKey.generate_key(2048, parameters={"kid": "k3"})
    for _ in range(5):
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await verifier.verify(fake_as.jwt(key=stranger))
    assert fake_as.jwks_calls == 2  # within the interval: no refetch storm
    await verifier.aclose()


async def test_jwks_unreachable_is_unavailable(tmp_path, fake_as) -> None:
    fake_as.down = True
    verifier = JWTVerifier(auth_settings(tmp_path, "jwt").auth, transport=httpx.MockTransport(fake_as.handler))
    with pytest.raises(AuthServerUnavailableError):
        await verifier.verify(fake_as.jwt())
    await verifier.aclose()


# -- small pieces ------------------------------------------------------------------------------

def test_audience_comparison_is_canonical() -> None:
    assert audience_matches("HTTP://Host:1/mcp/", "http://host:1/mcp")
    assert audience_matches(["a", "http://host:1/mcp"], "http://host:1/mcp")
    assert not audience_matches("http://host:1/mcp2", "http://host:1/mcp")
    assert not audience_matches("http://host:1", "http://host:1/mcp")  # the origin is not the resource
    assert not audience_matches("", "http://host:1/mcp")
    assert not audience_matches(None, "http://host:1/mcp")


def test_claim_headers_join_lists_and_refuse_injection() -> None:
    p = Principal(claims={"sub": "a", "n": 3, "realm_access": {"roles": ["x", "y"]}, "bad": "a\r\nX-Admin: 1",
                          "uni": "zoë", "obj": {"a": 1}})
    assert claim_headers(p, (("sub", "X-Sub"), ("n", "X-N"), ("realm_access.roles", "X-R"), ("missing", "X-M"))) == {
        "X-Sub": "a", "X-N": "3", "X-R": "x,y"}
    for claim in ("bad", "uni", "obj"):
        with pytest.raises(ClaimHeaderError):
            claim_headers(p, ((claim, "X-C"),))


def test_operation_scopes_come_from_oauth_schemes_only() -> None:
    schemes = {"oauth": {"type": "oauth2"}, "key": {"type": "apiKey"}, "oidc": {"type": "openIdConnect"}}
    op = lambda security: Operation(method="GET", path="/", pointer="#", security=security)  # noqa: E731
    assert operation_scopes(op(({"oauth": ("a", "b")},)), schemes) == (frozenset({"a", "b"}),)
    assert operation_scopes(op(({"key": ()}, {"oauth": ("a",)})), schemes) == ()  # API key alternative: no scope
    assert operation_scopes(op(({"oauth": ("a",)}, {"oidc": ("b",)})), schemes) == (frozenset({"a"}), frozenset({"b"}))
    policy = build_policy([("t", op(({"oauth": ("a",)}, {"oidc": ("b", "c")})), schemes)])
    short = asyncio.run(policy.decide(Principal(scopes=frozenset({"c"})), "tools", "call", "t"))
    assert (short.allowed, short.missing_scopes, short.needed_scopes) == (False, {"a"}, {"a"})
    assert asyncio.run(policy.decide(Principal(scopes=frozenset({"b", "c"})), "tools", "call", "t")).allowed


def test_headers_filled_from_claims_are_not_tool_arguments(make_spec) -> None:
    from converter.tools import build_plans

    spec = make_spec({"/me": {"get": {"operationId": "me", "parameters": [
        {"name": "X-User-Id", "in": "header", "schema": {"type": "string"}},
        {"name": "X-Other", "in": "header", "schema": {"type": "string"}}], "responses": {"200": {"description": "ok"}}}}})
    [plan], _ = build_plans(spec, reserved_headers=frozenset({"x-user-id"}))
    assert list(plan.input_schema["properties"]) == ["X-Other"]


async def test_auth_outcomes_reach_the_access_log_and_metrics(harness, fake_as) -> None:
    from prometheus_client import generate_latest

    token = fake_as.add("tok-telemetry", sub="dora")
    async with harness() as h:
        await h.rpc("tools/list")
        await h.rpc("tools/list", token="nope")
        sid = await h.session(token)
        await h.rpc("tools/call", {"name": "createOrder", "arguments": {}}, token=token, session=sid)
        await h.rpc("tools/list", token=token, session=sid)
        telemetry = h.app.state.telemetry
        text = generate_latest(telemetry.metrics.registry).decode()
        recent = telemetry.recent.logs()
    assert 'openapi_mcp_auth_failures_total{reason="missing_token"} 1.0' in text
    assert 'openapi_mcp_auth_failures_total{reason="invalid_token"} 1.0' in text
    assert 'openapi_mcp_auth_failures_total{reason="insufficient_scope"} 1.0' in text
    assert 'openapi_mcp_introspection_cache_total{result="hit"}' in text
    assert [r.get("auth_failure") for r in recent[:2]] == ["missing_token", "invalid_token"]
    assert recent[-1]["subject"] == "dora" and recent[-1]["http_status"] == 200
    assert all("tok-telemetry" not in json.dumps(r) for r in recent)


async def test_a_token_naming_neither_subject_nor_client_is_refused(harness, fake_as) -> None:
    """Issue 12, item 10: sessions are bound to (client, issuer, subject); two such tokens would share one."""
    nobody = fake_as.add("nobody", sub=None, client_id=None)
    for claim in ("sub", "client_id"):
        fake_as.tokens[nobody].pop(claim)
    async with harness() as h:
        response = await h.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}}, token=nobody)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "neither a subject" in response.headers["www-authenticate"]


async def test_arguments_nested_past_what_can_be_read_are_a_parse_error_not_a_500(harness, fake_as) -> None:
    """Issue 12, item 8: with per-tool scopes the auth layer reads the body to find the tool; a body
    nested 100,000 deep is a JSON-RPC parse error (HTTP 400), and the server keeps serving."""
    token = fake_as.add("t")
    depth = 100_000
    body = ('{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "createOrder", "arguments": '
            '{"userId": "u1", "note": ' + "[" * depth + "]" * depth + "}}}")
    async with harness() as h:
        sid = await h.session(token)
        deep = await h.http.post("/mcp", content=body, headers={
            "authorization": f"Bearer {token}", "mcp-session-id": sid, "content-type": "application/json",
            "accept": ACCEPT, "mcp-protocol-version": "2025-06-18"})
        after = await h.rpc("tools/call", {"name": "getUser", "arguments": {"userId": "u1"}}, token=token, session=sid)
    assert deep.status_code == 400 and deep.json()["error"] == {  # the auth layer's answer, not the SDK's
        "code": -32700, "message": "Parse error: the request is nested too deeply"}
    assert after.status_code == 200 and "result" in after.json()


async def test_a_cached_refusal_is_raised_fresh_each_time(fake_as, tmp_path) -> None:
    """Issue 12, item 12: the cached verdict of an inactive token must not collect tracebacks."""
    verifier = IntrospectionVerifier(auth_settings(tmp_path).auth, transport=httpx.MockTransport(fake_as.handler))
    raised = []
    for _ in range(3):
        with pytest.raises(InvalidTokenError) as exc:
            await verifier.verify("unknown-token")
        raised.append(exc.value)
    await verifier.aclose()
    assert fake_as.calls == 1  # the verdict came from the cache after the first call
    assert len({id(e) for e in raised}) == 3
    depth = [len(list(__import__("traceback").walk_tb(e.__traceback__))) for e in raised]
    assert depth[1] == depth[2], depth


async def test_the_token_cache_holds_hashes_never_tokens(tmp_path, fake_as) -> None:
    token = fake_as.add("tok-cached-0123456789")
    verifier = IntrospectionVerifier(auth_settings(tmp_path).auth, transport=httpx.MockTransport(fake_as.handler))
    principal = await verifier.verify(token)
    await verifier.aclose()
    assert verifier.cache.get(token) is None
    assert verifier.cache.get(hashlib.sha256(token.encode()).hexdigest()) is principal


def test_the_token_cache_is_bounded() -> None:
    cache = TokenCache()
    verdict = Principal(subject="alice")
    for i in range(MAX_CACHED_TOKENS + 1):
        cache.put(f"key-{i}", verdict, 60)
    assert MAX_CACHED_TOKENS == 10_000  # as SECURITY.md says
    assert cache.get("key-0") is None  # the oldest went out
    assert cache.get("key-1") is verdict and cache.get(f"key-{MAX_CACHED_TOKENS}") is verdict


def test_a_claim_list_that_would_be_ambiguous_in_a_header_refuses_the_call() -> None:
    mapping = (("realm_access.roles", "X-Roles"),)
    ok = Principal(claims={"realm_access": {"roles": ["a", "b c", 3, True]}})
    assert claim_headers(ok, mapping) == {"X-Roles": "a,b c,3,true"}
    assert claim_headers(Principal(claims={"realm_access": {"roles": []}}), mapping) == {}  # like a missing claim
    for roles in (["a,b", "c"], ["a", ""], [" a"], ["a "], [","]):
        with pytest.raises(ClaimHeaderError) as exc:
            claim_headers(Principal(claims={"realm_access": {"roles": roles}}), mapping)
        assert str(exc.value) == ("The token claim 'realm_access.roles' has an item that is empty, holds ',' or "
                                  "starts or ends with a space, so its list cannot be sent unambiguously as the "
                                  "header 'X-Roles'")
    # a single value may hold commas: it is not a list, and it goes as it is
    assert claim_headers(Principal(claims={"name": "Lovelace, Ada"}), (("name", "X-Name"),)) == {
        "X-Name": "Lovelace, Ada"}


async def test_a_reload_keeps_the_token_cache_and_applies_new_tool_scopes_at_once(tmp_path, fake_as) -> None:
    basic = fake_as.add("basic", scope="mcp:tools")
    settings = auth_settings(tmp_path)
    config = tmp_path / "c.yaml"
    app = create_app(settings, upstream_transport=httpx.ASGITransport(app=mock_api.create_app()),
                     auth_transport=httpx.MockTransport(fake_as.handler),
                     reload_settings=lambda: load_settings(str(config)))
    async with app.router.lifespan_context(app):
        h = Harness(app, None)
        sid = await h.session(basic)
        before = await h.rpc("tools/call", {"name": "listUsers", "arguments": {}}, token=basic, session=sid)
        raw = json.loads(config.read_text())
        raw["auth"]["tool_scopes"]["listUsers"] = ["mcp:admin"]
        config.write_text(json.dumps(raw))
        assert await app.state.reloader.reload("test")
        after = await h.rpc("tools/call", {"name": "listUsers", "arguments": {}}, token=basic, session=sid)
        listed = await h.rpc("tools/list", token=basic, session=sid)
        await h.http.aclose()
    assert before.status_code == 200 and after.status_code == 403
    assert 'error_description="Calling tool listUsers needs more scopes"' in after.headers["www-authenticate"]
    assert "listUsers" not in [t["name"] for t in listed.json()["result"]["tools"]]
    assert fake_as.calls == 1  # the token was introspected once: the cache outlived the reload
    assert app.state.reloader.state.restart_needed == []


async def test_cors_headers_go_to_browsers_only(harness, fake_as) -> None:
    token = fake_as.add("t")
    async with harness() as h:
        plain = await h.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                           "clientInfo": {"name": "t", "version": "1"}}, token=token)
        metadata = await h.http.get("/.well-known/oauth-protected-resource")
        h.http.headers["origin"] = "http://localhost:6274"
        browser = await h.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                             "clientInfo": {"name": "t", "version": "1"}}, token=token)
    # A POST without Origin is no cross-origin call and is never cached: nothing is added to it.
    assert plain.status_code == 200 and "vary" not in plain.headers
    assert not any(name.startswith("access-control-") for name in plain.headers)
    assert metadata.headers["vary"] == "Origin"  # a GET a cache may keep still says what it varies by
    assert browser.headers["access-control-allow-origin"] == "*"
    assert "mcp-session-id" in browser.headers["access-control-expose-headers"]
