"""The test authorization server (tests/node/auth-server.mjs) behaves as the auth tests assume.

Keycloak-style realm paths, client_credentials tokens per resource (opaque for introspection,
JWT for JWKS validation), `invalid_target` for unknown resources, introspection by mcp-gateway
only, key rotation, open DCR, and a headless authorization code + PKCE + `resource` flow.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.integration.authserver import (
    ALL_SCOPES,
    GATEWAY,
    OTHER_RESOURCE,
    SVC_ADMIN,
    SVC_JWT,
    SVC_USER,
    TEST_CLI_REDIRECT,
    AuthServer,
    pkce_pair,
)

pytestmark = pytest.mark.integration


def _b64json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and claims of a compact JWS."""
    header, payload, _ = token.split(".")
    return _b64json(header), _b64json(payload)


def _verify_jwt(auth_server: AuthServer, token: str) -> jwt.Token:
    keys = KeySet.import_key_set(auth_server.jwks())  # type: ignore[arg-type]
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": auth_server.issuer},
        aud={"essential": True, "value": auth_server.resource},
        exp={"essential": True},
        sub={"essential": True},
    ).validate(decoded.claims)
    return decoded


def test_discovery_has_the_realm_paths(auth_server: AuthServer) -> None:
    base = auth_server.base_url
    realm = f"{base}/realms/demo"
    assert auth_server.issuer == realm
    assert auth_server.mcp_port == int(auth_server.resource.split(":")[2].split("/")[0])
    assert auth_server.resources == (f"http://127.0.0.1:{auth_server.mcp_port}/mcp", OTHER_RESOURCE)
    oidc = f"{realm}/protocol/openid-connect"
    expected = {
        "issuer": realm,
        "token_endpoint": f"{oidc}/token",
        "introspection_endpoint": f"{oidc}/token/introspect",
        "jwks_uri": f"{oidc}/certs",
        "authorization_endpoint": f"{oidc}/auth",
        "registration_endpoint": f"{realm}/clients-registrations/openid-connect",
    }
    with httpx.Client(trust_env=False) as client:
        for well_known in ("openid-configuration", "oauth-authorization-server"):
            response = client.get(f"{realm}/.well-known/{well_known}")
            assert response.status_code == 200, response.text
            document = response.json()
            assert {key: document.get(key) for key in expected} == expected, well_known
            assert {"mcp:tools", "mcp:admin", "mcp:read"} <= set(document["scopes_supported"])
            assert "S256" in document["code_challenge_methods_supported"]
            assert document["introspection_endpoint_auth_methods_supported"] == [
                "client_secret_basic", "client_secret_post"]
            assert {"client_credentials", "authorization_code"} <= set(document["grant_types_supported"])
        health = client.get(f"{base}/__test/health")
        assert health.json()["status"] == "ok"
        assert client.get(f"{base}/.well-known/openid-configuration").status_code == 404
    assert auth_server.token_endpoint == expected["token_endpoint"]
    assert auth_server.introspection_endpoint == expected["introspection_endpoint"]
    assert auth_server.jwks_uri == expected["jwks_uri"]
    assert auth_server.authorization_endpoint == expected["authorization_endpoint"]
    assert auth_server.registration_endpoint == expected["registration_endpoint"]


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_svc_user_gets_an_opaque_token_that_introspects(auth_server: AuthServer, auth: str) -> None:
    response = auth_server.token_response(*SVC_USER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "mcp:tools mcp:read"
    token = body["access_token"]
    assert token.count(".") == 0, "svc-user tokens are opaque"

    claims = auth_server.introspect(token, auth=auth)
    now = time.time()
    assert claims["active"] is True
    assert claims["aud"] == auth_server.resource
    assert claims["scope"] == "mcp:tools mcp:read"
    assert claims["realm_access"] == {"roles": ["user"]}
    assert claims["client_id"] == "svc-user"
    assert claims["sub"] == "svc-user"
    assert claims["iss"] == auth_server.issuer
    assert claims["token_type"] == "Bearer"
    assert claims["preferred_username"] == "service-account-svc-user"
    assert claims["email"] == "svc-user@example.com"
    assert now < claims["exp"] <= now + 301


def test_client_scope_limits_and_defaults(auth_server: AuthServer) -> None:
    admin = auth_server.introspect(auth_server.token(*SVC_ADMIN))
    assert admin["scope"] == ALL_SCOPES
    assert admin["realm_access"] == {"roles": ["admin", "user"]}
    narrowed = auth_server.introspect(auth_server.token(*SVC_ADMIN, scope="mcp:tools"))
    assert narrowed["scope"] == "mcp:tools"
    # svc-user is not registered for mcp:admin (Keycloak: optional scope not assigned).
    response = auth_server.token_response(*SVC_USER, scope="mcp:tools mcp:admin")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    # client_secret_post works at the token endpoint too; a wrong secret does not.
    assert auth_server.token_response(*SVC_USER, auth="post").status_code == 200
    wrong = auth_server.token_response("svc-user", "nope")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"


def test_svc_jwt_gets_a_jwt_verifiable_with_the_jwks(auth_server: AuthServer) -> None:
    token = auth_server.token(*SVC_JWT, resource=auth_server.resource)
    header, _ = _jwt_parts(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] in {key["kid"] for key in auth_server.jwks()["keys"]}

    claims = _verify_jwt(auth_server, token).claims
    assert claims["iss"] == auth_server.issuer
    assert claims["aud"] == auth_server.resource
    assert claims["sub"] == "svc-jwt"
    assert claims["client_id"] == "svc-jwt"
    assert claims["scope"] == ALL_SCOPES
    assert claims["realm_access"] == {"roles": ["admin"]}
    assert claims["preferred_username"] == "service-account-svc-jwt"
    assert claims["email"] == "svc-jwt@example.com"
    assert {"jti", "iat", "exp"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 300
    # The JWKS publishes public keys only.
    assert all("d" not in key for key in auth_server.jwks()["keys"])


def test_jwts_cannot_be_introspected(auth_server: AuthServer) -> None:
    response = auth_server.introspect_response(auth_server.token(*SVC_JWT))
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_token_type"


def test_unknown_resource_is_invalid_target(auth_server: AuthServer) -> None:
    response = auth_server.token_response(*SVC_USER, resource="http://127.0.0.1:9/unknown")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    two = auth_server.token_response(*SVC_USER, resource=[auth_server.resource, OTHER_RESOURCE])
    assert two.status_code == 400
    assert two.json()["error"] == "invalid_target"


def test_other_resource_gives_another_audience(auth_server: AuthServer) -> None:
    opaque = auth_server.token(*SVC_ADMIN, resource=OTHER_RESOURCE)
    assert auth_server.introspect(opaque)["aud"] == OTHER_RESOURCE
    signed = auth_server.token(*SVC_JWT, resource=OTHER_RESOURCE)
    assert _jwt_parts(signed)[1]["aud"] == OTHER_RESOURCE


def test_introspection_of_garbage_and_by_other_clients(auth_server: AuthServer) -> None:
    assert auth_server.introspect("garbage") == {"active": False}
    assert auth_server.introspect("garbage", auth="post") == {"active": False}
    token = auth_server.token(*SVC_USER)
    # Only mcp-gateway may introspect; the token's own client gets an inactive answer.
    assert auth_server.introspect(token, client=SVC_USER) == {"active": False}
    bad_secret = auth_server.introspect_response(token, client=(GATEWAY[0], "wrong"))
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    assert auth_server.introspect(token)["active"] is True


def test_rotate_keys_makes_a_new_active_kid(auth_server: AuthServer) -> None:
    before = auth_server.token(*SVC_JWT)
    opaque = auth_server.token(*SVC_USER)
    old_kid = _jwt_parts(before)[0]["kid"]

    new_kid = auth_server.rotate_keys()

    assert new_kid != old_kid
    kids = [key["kid"] for key in auth_server.jwks()["keys"]]
    assert kids[0] == new_kid
    assert old_kid in kids, "the previous key stays published"
    after = auth_server.token(*SVC_JWT)
    assert _jwt_parts(after)[0]["kid"] == new_kid
    _verify_jwt(auth_server, after)
    _verify_jwt(auth_server, before)
    assert auth_server.introspect(opaque)["active"] is True, "state survives the rotation"


def test_open_dcr_registers_a_public_client(auth_server: AuthServer) -> None:
    registered = auth_server.register_client(
        client_name="dcr test", redirect_uris=["http://127.0.0.1:33419/callback"],
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method="none",
    )
    assert registered["client_id"]
    assert "client_secret" not in registered
    assert registered["token_endpoint_auth_method"] == "none"
    assert registered["registration_client_uri"].startswith(auth_server.registration_endpoint + "/")
    # Roles are not self-assigned through DCR.
    with httpx.Client(trust_env=False) as client:
        refused = client.post(
            auth_server.registration_endpoint,
            json={"redirect_uris": ["http://127.0.0.1:33419/callback"], "realm_roles": ["admin"]},
        )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_client_metadata"


def test_authorization_code_pkce_with_resource(auth_server: AuthServer) -> None:
    verifier, challenge = pkce_pair()
    result = auth_server.authorize(
        username="alice", scope="mcp:tools mcp:read", resource=auth_server.resource,
        code_challenge=challenge, state="st-1",
    )
    assert result.redirect.startswith(TEST_CLI_REDIRECT + "?")
    assert result.params["state"] == "st-1"
    assert result.params["iss"] == auth_server.issuer  # RFC 9207
    assert any("/interaction/" in hop for hop in result.hops), result.hops

    other_verifier = pkce_pair()[0]
    resource = auth_server.resource
    wrong = auth_server.exchange_code(result.code, code_verifier=other_verifier, resource=resource)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"

    # The code was burnt by the failed attempt: start again for the real exchange.
    verifier, challenge = pkce_pair()
    result = auth_server.authorize(
        username="alice", scope="mcp:tools mcp:read", resource=auth_server.resource, code_challenge=challenge,
    )
    response = auth_server.exchange_code(result.code, code_verifier=verifier, resource=auth_server.resource)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "mcp:tools mcp:read"
    claims = auth_server.introspect(body["access_token"])
    assert claims["active"] is True
    assert claims["aud"] == auth_server.resource
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "test-cli"
    assert claims["scope"] == "mcp:tools mcp:read"
    assert claims["realm_access"] == {"roles": ["user"]}
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.com"

    # Refresh tokens are issued (as Keycloak does) and keep the resource and the user.
    refreshed = auth_server.token_response(
        "test-cli", None, auth="post", grant_type="refresh_token", refresh_token=body["refresh_token"],
    )
    assert refreshed.status_code == 200, refreshed.text
    again = auth_server.introspect(refreshed.json()["access_token"])
    assert (again["active"], again["aud"], again["sub"]) == (True, auth_server.resource, "alice")


def test_pkce_is_required_for_public_clients(auth_server: AuthServer) -> None:
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        response = client.get(auth_server.authorization_endpoint, params={
            "client_id": "test-cli", "response_type": "code", "redirect_uri": TEST_CLI_REDIRECT,
            "scope": "mcp:tools", "resource": auth_server.resource,
        })
    assert response.status_code == 303
    assert response.headers["location"].startswith(TEST_CLI_REDIRECT)
    assert "error=invalid_request" in response.headers["location"]


def test_dcr_client_user_token_for_a_jwt_resource(auth_server: AuthServer) -> None:
    redirect = "http://127.0.0.1:33420/callback"
    client = auth_server.register_client(
        redirect_uris=[redirect], token_endpoint_auth_method="none", token_format="jwt",
        grant_types=["authorization_code"], response_types=["code"],
    )
    token = auth_server.user_token(
        "bob", scope="mcp:tools mcp:admin", client_id=client["client_id"], redirect_uri=redirect,
    )
    claims = _verify_jwt(auth_server, token).claims
    assert claims["sub"] == "bob"
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"] == "mcp:tools mcp:admin"
    assert claims["realm_access"] == {"roles": ["user"]}
