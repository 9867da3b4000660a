"""converter.credentials without a network: settings, the scheme mapping, caching and failure rules.

Token endpoints are `httpx.MockTransport` handlers; the upstream is a recording `Sender`. The real
authorization server is exercised in tests/integration/test_upstream_credentials.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwk, jwt
from pydantic import SecretStr, ValidationError

from converter.credentials import (
    Caller,
    ClientCredentials,
    ClientCredentialsSettings,
    CredentialError,
    CredentialsSettings,
    TokenEndpointError,
    TokenExchanger,
    TokenExchangeSettings,
    UpstreamCredentials,
    missing_credentials,
)
from converter.errors import ConfigError, UpstreamError
from converter.invoke.request import HttpRequest
from converter.invoke.upstream import UpstreamResponse
from converter.models import Operation

TOKEN_URL = "https://as.test/token"
SUBJECT = "caller-token-aaaaaaaaaaaaaaaa"
SECRET = "s3cret-value-xyz"

SCHEMES: dict[str, Any] = {
    "key_header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "key_query": {"type": "apiKey", "in": "query", "name": "api_key"},
    "key_cookie": {"type": "apiKey", "in": "cookie", "name": "session"},
    "basic": {"type": "http", "scheme": "basic"},
    "bearer": {"type": "http", "scheme": "bearer"},
    "oauth": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": TOKEN_URL, "scopes": {}}}},
    "oidc": {"type": "openIdConnect", "openIdConnectUrl": "https://as.test/.well-known/openid-configuration"},
    "digest": {"type": "http", "scheme": "digest"},
    "mtls": {"type": "mutualTLS"},
    "alias": {"$ref": "#/components/securitySchemes/key_header"},
}



class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """A token endpoint: records the form of each request, answers with numbered tokens."""

    def __init__(self, *, expires_in: int | None = 300, answer: Callable[[dict[str, list[str]]], httpx.Response]
                 | None = None, delay: float = 0.0) -> None:
        self.forms: list[dict[str, list[str]]] = []
        self.headers: list[httpx.Headers] = []
        self.expires_in = expires_in
        self.answer = answer
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode(), keep_blank_values=True)
        self.forms.append(form)
        self.headers.append(request.headers)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is not None:
            return self.answer(form)
        body: dict[str, Any] = {"access_token": f"issued-{len(self.forms)}", "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class Recorder:
    """The upstream: records requests, answers with the statuses given (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.requests: list[HttpRequest] = []
        self.statuses = list(statuses)

    async def send(self, request: HttpRequest) -> UpstreamResponse:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return UpstreamResponse(status, "", "application/json", b"{}", False, 0.0, request.url)


def client_settings(**extra: Any) -> dict[str, Any]:
    return {"token_endpoint": TOKEN_URL, "client_id": "gw", "client_secret": SECRET, **extra}


def credentials(schemes: dict[str, Any] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                clock: Callable[[], float] | None = None, **settings: Any) -> UpstreamCredentials:
    kwargs: dict[str, Any] = {"transport": transport}
    if clock is not None:
        kwargs["clock"] = clock
    return UpstreamCredentials(CredentialsSettings.model_validate(settings), SCHEMES if schemes is None else schemes,
                               **kwargs)


def request(url: str = "https://api.test/items?x=1", **headers: str) -> HttpRequest:
    return HttpRequest("GET", url, {"accept": "application/json", **headers}, template="/items")


def decode_basic(value: str) -> str:
    return base64.b64decode(value.removeprefix("Basic ")).decode()


# ---------------------------------------------------------------- settings


def test_token_exchange_settings_take_kongs_request_block_and_short_token_types() -> None:
    settings = TokenExchangeSettings.model_validate({
        **client_settings(client_auth="client_secret_post"),
        "request": {"subject_token_type": "jwt", "requested_token_type": "access_token", "scopes": ["mcp:read"]},
        "audience": "upstream-api", "cache": {"ttl": 60},
    })
    assert settings.subject_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert settings.requested_token_type == "urn:ietf:params:oauth:token-type:access_token"
    assert settings.scopes == ["mcp:read"] and settings.audience == ["upstream-api"]
    assert settings.cache.ttl == 60 and settings.cache.enabled


def test_client_credentials_settings_accept_token_url_and_a_scope_string() -> None:
    settings = ClientCredentialsSettings.model_validate(
        {"token_url": TOKEN_URL, "client_id": "gw", "client_secret": SECRET, "scopes": "read write"})
    assert settings.token_endpoint == TOKEN_URL and settings.scopes == ["read", "write"]


@pytest.mark.parametrize(("data", "message"), [
    ({"token_endpoint": TOKEN_URL, "client_id": "gw"}, "client_secret is needed for client_auth client_secret_basic"),
    ({**client_settings(), "client_auth": "private_key_jwt"}, "client_private_key is needed for client_auth private_key_jwt"),
    ({**client_settings(), "token_endpoint": "ftp://x"}, "must be an http(s) URL, not 'ftp://x'"),
    ({**client_settings(), "header": "Host"}, "'Host' cannot carry a credential"),
    ({**client_settings(), "subject_token_type": "opaque"}, "'opaque' is not a token type"),
])
def test_bad_token_settings_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        TokenExchangeSettings.model_validate(data)
    assert message in str(exc.value)


def test_upstream_auth_takes_exactly_one_kind() -> None:
    with pytest.raises(ValidationError, match="give exactly one of token_exchange and client_credentials"):
        CredentialsSettings.model_validate({"auth": {}})
    with pytest.raises(ValidationError, match="give exactly one of token_exchange, client_credentials and token"):
        CredentialsSettings.model_validate({"credentials": {"oauth": {"token": "a", "client_credentials": client_settings()}}})


def test_scheme_credentials_come_as_a_string_basic_pair_or_token_source() -> None:
    settings = CredentialsSettings.model_validate({"credentials": {
        "key_header": "k", "basic": {"username": "me", "password": "pw"},
        "oauth": {"client_credentials": client_settings()}, "bearer": {"token": "t"},
    }})
    kinds = {name: type(value).__name__ for name, value in settings.credentials.items()}
    assert kinds == {"key_header": "SecretStr", "basic": "BasicCredential", "oauth": "OAuthCredential",
                     "bearer": "OAuthCredential"}


def test_secrets_never_show_in_reprs() -> None:
    settings = CredentialsSettings.model_validate({
        "auth": {"token_exchange": client_settings()},
        "credentials": {"key_header": SECRET, "basic": {"username": "me", "password": SECRET}},
    })
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    caller = Caller(SUBJECT, 123.0)
    assert SUBJECT not in repr(caller)


# ---------------------------------------------------------------- schemes


@pytest.mark.anyio
async def test_api_keys_go_where_their_schemes_say_replacing_what_arguments_put_there() -> None:
    creds = credentials(credentials={"key_header": "H-KEY", "key_query": "Q KEY&=", "key_cookie": "C-KEY"})
    security = ({"key_header": (), "key_query": (), "key_cookie": ()},)
    original = request("https://api.test/items?x=1&api_key=from-model", **{"x-api-key": "model", "cookie": "a=1; session=m"})
    sent, parts = await creds.apply(original, security)
    assert sent.headers["X-API-Key"] == "H-KEY" and "x-api-key" not in sent.headers
    assert sent.url == "https://api.test/items?x=1&api_key=Q%20KEY%26%3D"
    assert sent.headers["cookie"] == "a=1; session=C-KEY"
    assert original.headers["x-api-key"] == "model"  # the plan's request is not changed
    assert parts.schemes == ("key_header", "key_query", "key_cookie") and not parts.has_tokens
    assert "H-KEY" not in repr(parts) and repr(parts) == (
        "CredentialParts(schemes=('key_header', 'key_query', 'key_cookie'), kinds=('api_key', 'api_key', "
        "'api_key'), headers=['X-API-Key'], "
        "query=['api_key'], cookies=['session'])")
    await creds.aclose()


@pytest.mark.anyio
async def test_http_basic_bearer_other_schemes_and_refs() -> None:
    creds = credentials(credentials={"basic": {"username": "me", "password": "p:w"}, "bearer": "static-token",
                                     "key_header": "K"})
    sent, _ = await creds.apply(request(), ({"basic": ()},))
    assert decode_basic(sent.headers["Authorization"]) == "me:p:w"
    sent, _ = await creds.apply(request(), ({"bearer": ()},))
    assert sent.headers["Authorization"] == "Bearer static-token"
    sent, _ = await creds.apply(request(), ({"alias": ()},))  # a $ref to key_header
    assert sent.headers["X-API-Key"] == "K"
    basic_string = credentials(credentials={"basic": "user:pw"})
    sent, _ = await basic_string.apply(request(), ({"basic": ()},))
    assert decode_basic(sent.headers["Authorization"]) == "user:pw"
    custom = credentials({"token": {"type": "http", "scheme": "Token"}}, credentials={"token": "abc"})
    sent, _ = await custom.apply(request(), ({"token": ()},))
    assert sent.headers["Authorization"] == "Token abc"


@pytest.mark.anyio
async def test_the_first_alternative_with_credentials_is_used_and_and_means_all() -> None:
    creds = credentials(credentials={"key_header": "K", "key_query": "Q"})
    security = ({"basic": ()}, {"key_header": (), "key_query": ()}, {"key_header": ()})
    sent, parts = await creds.apply(request(), security)
    assert parts.schemes == ("key_header", "key_query")
    assert sent.headers["X-API-Key"] == "K" and sent.url.endswith("&api_key=Q")


@pytest.mark.anyio
async def test_anonymous_alternative_is_taken_only_when_nothing_else_can_be() -> None:
    creds = credentials(credentials={"key_header": "K"})
    _, parts = await creds.apply(request(), ({}, {"key_header": ()}))
    assert parts.schemes == ("key_header",)
    _, parts = await creds.apply(request(), ({}, {"basic": ()}))
    assert parts.schemes == ()


@pytest.mark.anyio
async def test_upstream_auth_goes_on_operations_without_security_but_not_on_public_ones() -> None:
    server = TokenServer()
    creds = credentials(transport=server.transport, auth={"client_credentials": client_settings(scopes=["read"])})
    sent, parts = await creds.apply(request(), None)
    assert sent.headers["Authorization"] == "Bearer issued-1" and parts.has_tokens
    sent, parts = await creds.apply(request(), ())  # security: [] -> public
    assert "Authorization" not in sent.headers and parts.schemes == ()
    sent, _ = await creds.apply(request(), ({"oauth": ("write",)},))  # oauth2 without its own credential
    assert sent.headers["Authorization"] == "Bearer issued-1"
    sent, _ = await creds.apply(request(), ({"oidc": ()},))
    assert sent.headers["Authorization"] == "Bearer issued-1"
    assert len(server.forms) == 1 and server.forms[0]["scope"] == ["read"]
    await creds.aclose()


@pytest.mark.anyio
async def test_a_token_in_a_configured_header_goes_raw() -> None:
    server = TokenServer()
    creds = credentials(transport=server.transport,
                        auth={"client_credentials": client_settings(header="X-Upstream-Token")})
    sent, _ = await creds.apply(request(), None)
    assert sent.headers["X-Upstream-Token"] == "issued-1" and "Authorization" not in sent.headers
    await creds.aclose()


@pytest.mark.anyio
async def test_a_call_without_the_credentials_it_needs_is_refused() -> None:
    creds = credentials(credentials={"key_query": "Q"})
    with pytest.raises(CredentialError) as exc:
        await creds.apply(request(), ({"key_header": ()}, {"basic": ()}, {"digest": ()}, {"mtls": ()}), tool="get_item")
    assert str(exc.value) == (
        "Tool 'get_item': the upstream needs credentials that are not configured ('key_header': no credentials for "
        "'key_header': set upstream.credentials.key_header (an API key for the header 'X-API-Key') | 'basic': no "
        "credentials for 'basic': set upstream.credentials.basic (username and password) | 'digest': security "
        "scheme 'digest' (http digest) needs a challenge-response, which is not supported | 'mtls': security "
        "scheme 'mtls' (mutualTLS client certificates) is not supported)")


@pytest.mark.anyio
async def test_token_exchange_needs_a_caller_token_and_another_alternative_can_serve_without() -> None:
    server = TokenServer()
    creds = credentials(transport=server.transport, credentials={
        "oauth": {"token_exchange": client_settings(audience="api")}, "key_header": "K"})
    with pytest.raises(CredentialError) as exc:
        await creds.apply(request(), ({"oauth": ()},), tool="t")
    assert str(exc.value) == ("Tool 't': the upstream needs a token exchanged for the caller's ('oauth'), but this "
                              "call carries no caller token")
    _, parts = await creds.apply(request(), ({"oauth": ()}, {"key_header": ()}))
    assert parts.schemes == ("key_header",)
    sent, parts = await creds.apply(request(), ({"oauth": ()}, {"key_header": ()}), Caller(SUBJECT))
    assert parts.schemes == ("oauth",) and sent.headers["Authorization"] == "Bearer issued-1"
    assert server.forms[0]["subject_token"] == [SUBJECT] and server.forms[0]["audience"] == ["api"]
    assert SUBJECT not in json.dumps(sent.headers)
    await creds.aclose()


def test_a_credential_that_does_not_fit_its_scheme_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match=r"upstream.credentials.key_header: security scheme 'key_header' is an API "
                                          "key; give it as a string, not username/password"):
        credentials(credentials={"key_header": {"username": "u", "password": "p"}})
    with pytest.raises(ConfigError, match="an http basic scheme takes"):
        credentials(credentials={"basic": "no-colon"})
    with pytest.raises(ConfigError, match="cannot be sent as a cookie"):
        credentials(credentials={"key_cookie": "a;b"})


def test_missing_credentials_lists_operations_that_cannot_be_called() -> None:
    ops = [
        Operation("GET", "/a", "#/paths/~1a/get", security=({"key_header": ()},)),
        Operation("GET", "/b", "#/paths/~1b/get", security=({"basic": ()}, {"key_query": ()})),
        Operation("GET", "/c", "#/paths/~1c/get", security=({"oauth": ()},)),
        Operation("GET", "/d", "#/paths/~1d/get", security=()),
        Operation("GET", "/e", "#/paths/~1e/get"),
    ]
    settings = CredentialsSettings.model_validate({"credentials": {"key_query": "Q", "nonexistent": "x"}})
    problems = missing_credentials(ops, SCHEMES, settings)
    assert [str(p) for p in problems] == [
        "upstream.credentials.nonexistent: the spec defines no security scheme of that name, so it is never sent",
        ("#/paths/~1a/get: GET /a cannot be called: no upstream credentials for its security requirement "
        "('key_header': no credentials for 'key_header': set upstream.credentials.key_header (an API key for the "
        "header 'X-API-Key'))"),
        ("#/paths/~1c/get: GET /c cannot be called: no upstream credentials for its security requirement "
        "('oauth': no credentials for 'oauth': set upstream.credentials.oauth (token_exchange, client_credentials "
        "or token) or upstream.auth)"),
    ]
    with_auth = CredentialsSettings.model_validate({"auth": {"client_credentials": client_settings()},
                                                    "credentials": {"key_header": "K", "key_query": "Q"}})
    assert missing_credentials(ops, SCHEMES, with_auth) == []


# ---------------------------------------------------------------- token endpoints


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_secret_authentication(method: str) -> None:
    server = TokenServer()
    secret = "p@ss:w/rd"
    async with httpx.AsyncClient(transport=server.transport) as http:
        cc = ClientCredentials(ClientCredentialsSettings.model_validate(
            client_settings(client_id="gw:1", client_secret=secret, client_auth=method, audience=["a", "b"])), http)
        await cc.token()
    form, headers = server.forms[0], server.headers[0]
    assert form["grant_type"] == ["client_credentials"] and form["audience"] == ["a", "b"]
    if method == "client_secret_basic":
        # RFC 6749 §2.3.1: form-urlencoded, then base64
        assert decode_basic(headers["authorization"]) == "gw%3A1:p%40ss%3Aw%2Frd"
        assert "client_secret" not in form
    else:
        assert form["client_id"] == ["gw:1"] and form["client_secret"] == [secret]
        assert "authorization" not in headers


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["RSA", "EC"])
async def test_private_key_jwt_signs_a_short_lived_assertion(kind: str) -> None:
    key = jwk.generate_key(kind, 2048 if kind == "RSA" else "P-256", private=True)  # type: ignore[call-overload]
    server = TokenServer()
    async with httpx.AsyncClient(transport=server.transport) as http:
        cc = ClientCredentials(ClientCredentialsSettings.model_validate({
            "token_endpoint": TOKEN_URL, "client_id": "gw", "client_auth": "private_key_jwt",
            "client_private_key": json.dumps(key.as_dict(private=True)), "client_key_id": "k1"}), http)
        await cc.token()
    form = server.forms[0]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    alg = "RS256" if kind == "RSA" else "ES256"
    token = jwt.decode(form["client_assertion"][0], key, algorithms=[alg])
    assert token.header["kid"] == "k1"
    claims = token.claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("gw", "gw", TOKEN_URL)
    assert claims["exp"] - claims["iat"] == 60 and claims["jti"]


def test_private_key_jwt_refuses_a_public_key() -> None:
    key = jwk.generate_key("RSA", 2048, private=True)
    settings = ClientCredentialsSettings.model_validate({
        "token_endpoint": TOKEN_URL, "client_id": "gw", "client_auth": "private_key_jwt",
        "client_private_key": json.dumps(key.as_dict(private=False))})
    with pytest.raises(ConfigError, match="is a public key; private_key_jwt needs the private key"):
        ClientCredentials(settings, httpx.AsyncClient())


@pytest.mark.anyio
async def test_refusals_are_typed_errors_without_tokens_or_secrets(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(form: dict[str, list[str]]) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_grant",
                                         "error_description": f"token {form['subject_token'][0]} rejected; {SECRET}"})

    server = TokenServer(answer=refuse)
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=server.transport) as http:
        exchanger = TokenExchanger(TokenExchangeSettings.model_validate(client_settings()), http)
        with pytest.raises(TokenEndpointError) as exc:
            await exchanger.exchange(SUBJECT)
    assert isinstance(exc.value, UpstreamError) and exc.value.status == 400 and exc.value.error == "invalid_grant"
    assert str(exc.value) == (f"The token exchange at {TOKEN_URL} (client 'gw') was refused (invalid_grant: token "
                              "[redacted] rejected; [redacted])")
    assert SUBJECT not in caplog.text and SECRET not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(("response", "message"), [
    (httpx.Response(503, text="<html>down</html>"), "was refused (HTTP 503)"),
    (httpx.Response(200, text="<html>maintenance</html>"), "answered without a usable access_token"),
    (httpx.Response(200, json={"token_type": "Bearer"}), "answered without a usable access_token"),
    (httpx.Response(200, json={"access_token": "x", "token_type": "DPoP"}),
     "issued a token of type 'DPoP'; only Bearer tokens can be sent upstream"),
])
async def test_nonsense_answers_are_errors(response: httpx.Response, message: str) -> None:
    server = TokenServer(answer=lambda form: response)
    async with httpx.AsyncClient(transport=server.transport) as http:
        cc = ClientCredentials(ClientCredentialsSettings.model_validate(client_settings()), http)
        with pytest.raises(TokenEndpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            await cc.token()


@pytest.mark.anyio
async def test_an_exchange_that_answers_with_the_callers_token_is_refused() -> None:
    server = TokenServer(answer=lambda form: httpx.Response(
        200, json={"access_token": form["subject_token"][0], "token_type": "Bearer"}))
    async with httpx.AsyncClient(transport=server.transport) as http:
        exchanger = TokenExchanger(TokenExchangeSettings.model_validate(client_settings()), http)
        with pytest.raises(TokenEndpointError, match="answered with the token it was given; the caller's token is "
                                                     "never sent upstream"):
            await exchanger.exchange(SUBJECT)
        assert exchanger.cached == 0


@pytest.mark.anyio
async def test_a_slow_token_endpoint_times_out_as_a_whole() -> None:
    server = TokenServer(delay=2.0)
    async with httpx.AsyncClient(transport=server.transport) as http:
        cc = ClientCredentials(ClientCredentialsSettings.model_validate(client_settings(timeout=0.05)), http)
        with pytest.raises(TokenEndpointError, match=r"did not answer within 0.05 s") as exc:
            await cc.token()
    assert exc.value.reason == "timeout"


@pytest.mark.anyio
async def test_a_token_endpoint_redirect_is_not_followed() -> None:
    """A token request carries the client secret (and, for an exchange, the caller's token): it is
    never re-sent wherever a 3xx points."""
    asked: list[str] = []

    async def endpoint(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.host == "as.test":
            return httpx.Response(307, headers={"location": "https://elsewhere.test/token"})
        return httpx.Response(200, json={"access_token": "from-elsewhere", "token_type": "Bearer"})

    creds = credentials(transport=httpx.MockTransport(endpoint), auth={"client_credentials": client_settings()})
    with pytest.raises(TokenEndpointError, match=r"was refused \(HTTP 307\)"):
        await creds.apply(request(), None)
    await creds.aclose()
    assert asked == [TOKEN_URL]


# ---------------------------------------------------------------- caching


@pytest.mark.anyio
async def test_exchanges_are_cached_per_caller_and_shared_by_concurrent_calls() -> None:
    server = TokenServer(delay=0.05)
    async with httpx.AsyncClient(transport=server.transport) as http:
        exchanger = TokenExchanger(TokenExchangeSettings.model_validate(client_settings()), http)
        tokens = await asyncio.gather(*(exchanger.exchange(SUBJECT) for _ in range(10)))
        assert {t.value for t in tokens} == {"issued-1"} and len(server.forms) == 1
        assert (await exchanger.exchange(SUBJECT)).value == "issued-1" and len(server.forms) == 1
        assert (await exchanger.exchange("another-caller")).value == "issued-2"
        assert exchanger.invalidate(SUBJECT) and not exchanger.invalidate(SUBJECT)
        assert (await exchanger.exchange(SUBJECT)).value == "issued-3"


@pytest.mark.anyio
async def test_an_exchanged_token_is_reused_until_it_or_the_callers_token_expires() -> None:
    clock = Clock()
    server = TokenServer(expires_in=100)
    async with httpx.AsyncClient(transport=server.transport) as http:
        settings = TokenExchangeSettings.model_validate(client_settings(cache={"leeway": 10}))
        exchanger = TokenExchanger(settings, http, clock=clock)
        await exchanger.exchange(SUBJECT, subject_expires_at=clock.now + 1000)
        clock.now += 89
        assert (await exchanger.exchange(SUBJECT, subject_expires_at=clock.now + 1000)).value == "issued-1"
        clock.now += 2  # within 10 s of the exchanged token's expiry
        assert (await exchanger.exchange(SUBJECT, subject_expires_at=clock.now + 1000)).value == "issued-2"
        # the caller's token expires first: the result is not reused past it
        other = "short-lived-caller"
        await exchanger.exchange(other, subject_expires_at=clock.now + 20)
        clock.now += 21
        with pytest.raises(CredentialError, match="The caller's token has expired"):
            await exchanger.exchange(other, subject_expires_at=clock.now - 1)
        assert (await exchanger.exchange(other, subject_expires_at=clock.now + 500)).value == "issued-4"


@pytest.mark.anyio
async def test_the_exchange_cache_is_bounded() -> None:
    server = TokenServer()
    async with httpx.AsyncClient(transport=server.transport) as http:
        exchanger = TokenExchanger(TokenExchangeSettings.model_validate(client_settings(cache={"max_entries": 2})), http)
        for caller in ("a", "b", "c", "a"):
            await exchanger.exchange(caller)
        assert exchanger.cached == 2 and len(server.forms) == 4  # "a" was evicted by "c"


@pytest.mark.anyio
async def test_client_credentials_are_fetched_once_renewed_early_and_kept_on_a_failed_renewal() -> None:
    clock = Clock()
    failing = False

    def answer(form: dict[str, list[str]]) -> httpx.Response:
        if failing:
            return httpx.Response(503)
        return httpx.Response(200, json={"access_token": f"own-{len(server.forms)}", "token_type": "bearer",
                                         "expires_in": 100})

    server = TokenServer(answer=answer)
    async with httpx.AsyncClient(transport=server.transport) as http:
        cc = ClientCredentials(ClientCredentialsSettings.model_validate(client_settings(refresh_leeway=30)), http,
                               clock=clock)
        tokens = await asyncio.gather(*(cc.token() for _ in range(5)))
        assert {t.value for t in tokens} == {"own-1"} and cc.fetches == 1
        clock.now += 69
        assert (await cc.token()).value == "own-1" and cc.fetches == 1
        clock.now += 2  # 30 s before expiry: renewed
        assert (await cc.token()).value == "own-2" and cc.fetches == 2
        failing = True
        clock.now += 75  # renewal due, token still valid for 25 s: the old one is used
        assert (await cc.token()).value == "own-2"
        clock.now += 25  # expired now
        with pytest.raises(TokenEndpointError, match="was refused"):
            await cc.token()


@pytest.mark.anyio
async def test_a_401_renews_the_token_and_retries_idempotent_calls_once() -> None:
    server = TokenServer()
    creds = credentials(transport=server.transport, auth={"client_credentials": client_settings()})
    upstream = Recorder(401, 401)
    response = await creds.send(upstream, request(), None)
    assert response.status == 401  # retried once with a new token, which was refused as well
    assert [r.headers["Authorization"] for r in upstream.requests] == ["Bearer issued-1", "Bearer issued-2"]
    post = HttpRequest("POST", "https://api.test/items", {}, b"{}", "/items")
    upstream = Recorder(401)
    response = await creds.send(upstream, post, None)
    assert response.status == 401 and len(upstream.requests) == 1  # not idempotent: no resend
    upstream = Recorder()
    await creds.send(upstream, post, None)
    assert upstream.requests[0].headers["Authorization"] == "Bearer issued-3"  # but the token was renewed
    assert creds.stats()["upstream_401_retries"] == 1 and creds.stats()["token_requests"] == 3
    await creds.aclose()


@pytest.mark.anyio
async def test_static_credentials_are_not_retried() -> None:
    creds = credentials(credentials={"key_header": "K"})
    upstream = Recorder(401)
    assert (await creds.send(upstream, request(), ({"key_header": ()},))).status == 401
    assert len(upstream.requests) == 1


@pytest.mark.anyio
async def test_a_failed_token_request_sends_nothing_upstream() -> None:
    server = TokenServer(answer=lambda form: httpx.Response(401, json={"error": "invalid_client"}))
    creds = credentials(transport=server.transport, auth={"token_exchange": client_settings()})
    upstream = Recorder()
    with pytest.raises(TokenEndpointError, match=r"was refused \(invalid_client\)"):
        await creds.send(upstream, request(), None, Caller(SUBJECT))
    assert upstream.requests == []
    await creds.aclose()


@pytest.mark.anyio
async def test_the_actor_token_is_the_gateways_own() -> None:
    def answer(form: dict[str, list[str]]) -> httpx.Response:
        grant = form["grant_type"][0]
        value = "actor-1" if grant == "client_credentials" else "exchanged-1"
        return httpx.Response(200, json={"access_token": value, "token_type": "Bearer", "expires_in": 300})

    server = TokenServer(answer=answer)
    async with httpx.AsyncClient(transport=server.transport) as http:
        settings = TokenExchangeSettings.model_validate(client_settings(audience="api", scopes="read",
                                                                        actor_token_source="client_credentials"))
        exchanger = TokenExchanger(settings, http)
        assert (await exchanger.exchange(SUBJECT)).value == "exchanged-1"
        assert (await exchanger.exchange("other")).value == "exchanged-1"
    grants = [f["grant_type"][0] for f in server.forms]
    assert grants == ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange",
                      "urn:ietf:params:oauth:grant-type:token-exchange"]  # the actor token is fetched once
    assert "audience" not in server.forms[0] and "scope" not in server.forms[0]
    exchange = server.forms[1]
    assert exchange["actor_token"] == ["actor-1"]
    assert exchange["actor_token_type"] == ["urn:ietf:params:oauth:token-type:access_token"]
    assert exchange["subject_token_type"] == ["urn:ietf:params:oauth:token-type:access_token"]
    assert exchange["scope"] == ["read"] and exchange["audience"] == ["api"]


def test_issued_tokens_hide_their_value() -> None:
    from converter.credentials import IssuedToken

    token = IssuedToken(value=SECRET, expires_in=10)
    assert SECRET not in repr(token) and SECRET not in str(token) and SECRET not in f"{token}"
    assert SecretStr(SECRET).get_secret_value() == SECRET


@pytest.mark.anyio
async def test_logs_name_endpoints_and_fingerprints_never_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = TokenServer(answer=lambda form: httpx.Response(
        200, json={"access_token": "exchanged-token-value-123", "token_type": "Bearer", "expires_in": 60}))
    creds = credentials(transport=server.transport, auth={"token_exchange": client_settings()})
    await creds.send(Recorder(401, 200), request(), None, Caller(SUBJECT))
    await creds.aclose()
    assert TOKEN_URL in caplog.text and "dropped" in caplog.text and "retrying once" in caplog.text
    for secret in ("exchanged-token-value-123", SUBJECT, SECRET):
        assert secret not in caplog.text


@pytest.mark.anyio
async def test_a_scheme_whose_header_upstream_headers_sets_is_met_already() -> None:
    settings = CredentialsSettings()
    creds = UpstreamCredentials(settings, SCHEMES, static_headers=["x-api-key", "Authorization"])
    for security in ({"key_header": ()},), ({"bearer": ()},), ({"oauth": ()},):
        sent, parts = await creds.apply(request(), security)
        assert sent.headers == request().headers and parts.schemes == (next(iter(security[0])),)
    with pytest.raises(CredentialError):
        await creds.apply(request(), ({"key_query": ()},))
    ops = [Operation("GET", "/a", "#/a", security=({"key_header": ()},)),
           Operation("GET", "/b", "#/b", security=({"key_query": ()},))]
    problems = missing_credentials(ops, SCHEMES, settings, static_headers=["X-API-Key"])
    assert [p.pointer for p in problems] == ["#/b"]
