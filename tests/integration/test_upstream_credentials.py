"""Upstream credentials against the real authorization server (tests/node/auth-server.mjs).

The caller's token is exchanged (RFC 8693) at the realm for one meant for the upstream; the
gateway's own token comes from client credentials. Calls go through converter.invoke's real
`Upstream` to the marketplace mock (a separate process that records every request), so what the
upstream received is checked there. Exchanges are counted at the authorization server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc import jwk, jwt
from joserfc.jwk import KeySet

from converter.credentials import (
    Caller,
    CredentialsSettings,
    TokenEndpointError,
    UpstreamCredentials,
)
from converter.invoke.request import HttpRequest
from converter.invoke.upstream import Upstream
from tests.integration.authserver import (
    EXCHANGE_AUDIENCE,
    EXCHANGER,
    SVC_JWT,
    SVC_SHORT,
    SVC_USER,
    TOKEN_EXCHANGE,
    AuthServer,
)
from tests.integration.conftest import MockApi

pytestmark = pytest.mark.integration



@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(timeout=10) as up:
        yield up


def exchange_settings(auth_server: AuthServer, **extra: Any) -> dict[str, Any]:
    return {"token_endpoint": auth_server.token_endpoint, "client_id": EXCHANGER[0], "client_secret": EXCHANGER[1],
            "audience": EXCHANGE_AUDIENCE, "scopes": ["api:read"], **extra}


def make(auth: dict[str, Any] | None = None, credentials: dict[str, Any] | None = None,
         schemes: dict[str, Any] | None = None) -> UpstreamCredentials:
    settings = CredentialsSettings.model_validate({"auth": auth, "credentials": credentials or {}})
    return UpstreamCredentials(settings, schemes or {})


def users_request(mock_api: MockApi) -> HttpRequest:
    return HttpRequest("GET", f"{mock_api.url}/marketplace/users", {"accept": "application/json"},
                       template="/marketplace/users")


def verified_claims(auth_server: AuthServer, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(auth_server.jwks())  # type: ignore[arg-type]
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": auth_server.issuer}, exp={"essential": True}).validate(
        decoded.claims)
    return dict(decoded.claims)


def upstream_bearer(mock_api: MockApi) -> str:
    (entry,) = mock_api.requests()
    authorization: str = entry["headers"]["authorization"]
    assert authorization.startswith("Bearer ")
    return authorization.removeprefix("Bearer ")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_the_upstream_gets_an_exchanged_token_for_its_audience_never_the_callers(
        auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    caller_token = auth_server.user_token("alice")
    async with make({"token_exchange": exchange_settings(auth_server)}) as creds:
        response = await creds.send(upstream, users_request(mock_api), None, Caller(caller_token, time.time() + 300))
    assert response.status == 200
    sent = upstream_bearer(mock_api)
    assert sent != caller_token and caller_token not in json.dumps(mock_api.requests())
    claims = verified_claims(auth_server, sent)
    assert claims["aud"] == EXCHANGE_AUDIENCE
    assert claims["sub"] == "alice" and claims["preferred_username"] == "alice"
    assert claims["azp"] == claims["client_id"] == EXCHANGER[0]
    assert claims["scope"] == "api:read" and "act" not in claims


@pytest.mark.anyio
async def test_one_exchange_per_caller_token_while_it_is_cached(
        auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    alice = auth_server.user_token("alice")
    bob = auth_server.token(*SVC_USER)  # a service account's opaque token is a subject too
    before = auth_server.count(TOKEN_EXCHANGE, EXCHANGER[0])
    async with make({"token_exchange": exchange_settings(auth_server)}) as creds:
        for _ in range(3):
            await creds.send(upstream, users_request(mock_api), None, Caller(alice))
        await asyncio.gather(*(creds.send(upstream, users_request(mock_api), None, Caller(alice)) for _ in range(8)))
        assert auth_server.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 1
        await asyncio.gather(*(creds.send(upstream, users_request(mock_api), None, Caller(bob)) for _ in range(4)))
        assert auth_server.count(TOKEN_EXCHANGE, EXCHANGER[0]) == before + 2
        assert creds.stats()["exchange_cache_hits"] >= 9
    tokens = {entry["headers"]["authorization"] for entry in mock_api.requests()}
    assert len(tokens) == 2  # one exchanged token per caller
    subjects = {verified_claims(auth_server, t.removeprefix("Bearer "))["sub"] for t in tokens}
    assert subjects == {"alice", SVC_USER[0]}


@pytest.mark.anyio
async def test_an_actor_token_from_client_credentials_makes_a_delegation(
        auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    caller_token = auth_server.token(*SVC_JWT)  # a JWT subject token
    own_before = auth_server.count("client_credentials", EXCHANGER[0])
    settings = exchange_settings(auth_server, actor_token_source="client_credentials", client_auth="client_secret_post")
    async with make({"token_exchange": settings}) as creds:
        await creds.send(upstream, users_request(mock_api), None, Caller(caller_token))
    claims = verified_claims(auth_server, upstream_bearer(mock_api))
    assert claims["sub"] == SVC_JWT[0] and claims["act"] == {"sub": EXCHANGER[0]}
    assert claims["aud"] == EXCHANGE_AUDIENCE
    assert auth_server.count("client_credentials", EXCHANGER[0]) == own_before + 1


@pytest.mark.anyio
async def test_client_credentials_are_fetched_once_shared_and_renewed_before_expiry(
        auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    settings = {"token_endpoint": auth_server.token_endpoint, "client_id": SVC_SHORT[0],
                "client_secret": SVC_SHORT[1], "refresh_leeway": 2}
    before = auth_server.count("client_credentials", SVC_SHORT[0])
    async with make({"client_credentials": settings}) as creds:
        await asyncio.gather(*(creds.send(upstream, users_request(mock_api), None, Caller(f"caller-{i}"))
                               for i in range(6)))
        assert auth_server.count("client_credentials", SVC_SHORT[0]) == before + 1
        await asyncio.sleep(2.2)  # the token lives 4 s; renewal starts 2 s before expiry
        await creds.send(upstream, users_request(mock_api), None)
        assert auth_server.count("client_credentials", SVC_SHORT[0]) == before + 2
    tokens = [entry["headers"]["authorization"].removeprefix("Bearer ") for entry in mock_api.requests()]
    assert len(set(tokens[:6])) == 1 and tokens[6] != tokens[0]
    for token in (tokens[0], tokens[6]):
        claims = verified_claims(auth_server, token)
        assert claims["sub"] == SVC_SHORT[0] and claims["exp"] - claims["iat"] == 4


@pytest.mark.anyio
async def test_private_key_jwt_client_authentication_at_the_realm(auth_server: AuthServer) -> None:
    key = jwk.generate_key("RSA", 2048, private=True, parameters={"kid": "gw-key-1", "alg": "RS256", "use": "sig"})
    client = auth_server.register_client(
        client_name="gateway with a key", grant_types=[TOKEN_EXCHANGE, "client_credentials"], response_types=[],
        redirect_uris=[], token_endpoint_auth_method="private_key_jwt", token_endpoint_auth_signing_alg="RS256",
        jwks={"keys": [key.as_dict(private=False)]}, scope="api:read", token_format="jwt")
    settings = {"token_endpoint": auth_server.token_endpoint, "client_id": client["client_id"],
                "client_auth": "private_key_jwt", "client_private_key": json.dumps(key.as_dict(private=True)),
                "client_key_id": "gw-key-1", "audience": EXCHANGE_AUDIENCE}
    caller_token = auth_server.token(*SVC_USER)
    async with make({"token_exchange": settings}) as creds:
        parts = await creds.credentials(None, Caller(caller_token))
    claims = verified_claims(auth_server, parts.headers["Authorization"].removeprefix("Bearer "))
    assert claims["azp"] == client["client_id"] and claims["sub"] == SVC_USER[0]


@pytest.mark.anyio
async def test_api_keys_and_tokens_go_where_the_specs_schemes_say(
        auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    schemes = {"key": {"type": "apiKey", "in": "query", "name": "api_key"},
               "partner": {"type": "apiKey", "in": "header", "name": "X-Partner"},
               "oauth": {"type": "oauth2", "flows": {}}}
    own = {"token_endpoint": auth_server.token_endpoint, "client_id": EXCHANGER[0], "client_secret": EXCHANGER[1],
           "resource": [auth_server.resources[1]]}
    async with make(credentials={"key": "k-123", "partner": "p-456", "oauth": {"client_credentials": own}},
                    schemes=schemes) as creds:
        await creds.send(upstream, users_request(mock_api), ({"key": (), "partner": (), "oauth": ()},))
    (entry,) = mock_api.requests()
    assert entry["query"] == "api_key=k-123" and entry["headers"]["x-partner"] == "p-456"
    claims = verified_claims(auth_server, entry["headers"]["authorization"].removeprefix("Bearer "))
    assert claims["sub"] == EXCHANGER[0] and claims["aud"] == auth_server.resources[1]


# ---------------------------------------------------------------- failures: a clear error, nothing sent


async def _refused(settings: dict[str, Any], caller: Caller, mock_api: MockApi, upstream: Upstream) -> TokenEndpointError:
    async with make({"token_exchange": settings}) as creds:
        with pytest.raises(TokenEndpointError) as exc:
            await creds.send(upstream, users_request(mock_api), None, caller)
    assert mock_api.requests() == []  # never a call without credentials, nor with the caller's token
    return exc.value


@pytest.mark.anyio
async def test_a_token_endpoint_that_is_down(auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    url = f"http://127.0.0.1:{closed_port()}/realms/demo/protocol/openid-connect/token"
    error = await _refused(exchange_settings(auth_server, token_endpoint=url), Caller("caller"), mock_api, upstream)
    assert str(error) == (f"The token exchange at {url} (client 'mcp-exchanger') failed: the token endpoint cannot "
                          "be reached (connection refused or no route)")
    assert error.reason == "unreachable" and error.url == url


@pytest.mark.anyio
async def test_a_slow_token_endpoint(auth_server: AuthServer, mock_api: MockApi, upstream: Upstream) -> None:
    caller_token = auth_server.token(*SVC_USER)
    auth_server.fault(EXCHANGER[0], "slow", delay_ms=3000)
    try:
        started = time.monotonic()
        error = await _refused(exchange_settings(auth_server, timeout=0.5), Caller(caller_token), mock_api, upstream)
        assert time.monotonic() - started < 2.5
    finally:
        auth_server.fault(EXCHANGER[0], "none")
    assert str(error) == (f"The token exchange at {auth_server.token_endpoint} (client 'mcp-exchanger') did not "
                          "answer within 0.5 s")


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "message", "reason"), [
    ({"mode": "status", "status": 503}, "was refused (temporarily_unavailable: the realm is down (test fault))", "refused"),
    ({"mode": "garbage"}, "answered without a usable access_token", "invalid_response"),
    ({"mode": "reset"}, "failed: the token endpoint cannot be reached (the connection was closed)", "unreachable"),
])
async def test_a_broken_token_endpoint(auth_server: AuthServer, mock_api: MockApi, upstream: Upstream,
                                       fault: dict[str, Any], message: str, reason: str) -> None:
    caller_token = auth_server.token(*SVC_USER)
    auth_server.fault(EXCHANGER[0], **fault)
    try:
        error = await _refused(exchange_settings(auth_server), Caller(caller_token), mock_api, upstream)
    finally:
        auth_server.fault(EXCHANGER[0], "none")
    assert str(error) == f"The token exchange at {auth_server.token_endpoint} (client 'mcp-exchanger') {message}"
    assert error.reason == reason


@pytest.mark.anyio
@pytest.mark.parametrize(("change", "subject", "detail"), [
    ({"client_secret": "wrong"}, "valid", "invalid_client: client authentication failed"),
    ({"audience": "unknown-api"}, "valid", "invalid_target: unknown audience unknown-api"),
    ({"scopes": ["mcp:admin"]}, "valid", "invalid_scope: scope not allowed for this client: mcp:admin"),
    ({}, "garbage", "invalid_request: subject_token is invalid, expired or was not issued by this realm"),
])
async def test_the_realm_refusing_an_exchange(auth_server: AuthServer, mock_api: MockApi, upstream: Upstream,
                                              change: dict[str, Any], subject: str, detail: str) -> None:
    caller_token = auth_server.token(*SVC_USER) if subject == "valid" else "not-a-token-of-this-realm"
    error = await _refused(exchange_settings(auth_server, **change), Caller(caller_token), mock_api, upstream)
    assert str(error) == (f"The token exchange at {auth_server.token_endpoint} (client 'mcp-exchanger') was "
                          f"refused ({detail})")
    assert error.status in (400, 401) and error.error == detail.split(":")[0]
    assert caller_token not in str(error) and "exchanger-secret" not in str(error)


@pytest.mark.anyio
async def test_a_revoked_caller_token_cannot_be_exchanged(auth_server: AuthServer, mock_api: MockApi,
                                                         upstream: Upstream) -> None:
    import httpx

    caller_token = auth_server.token(*SVC_USER)
    with httpx.Client(trust_env=False) as client:
        revoked = client.post(f"{auth_server.issuer}/protocol/openid-connect/revoke", data={"token": caller_token},
                              auth=SVC_USER)
    assert revoked.status_code == 200
    error = await _refused(exchange_settings(auth_server), Caller(caller_token), mock_api, upstream)
    assert error.error == "invalid_request"
