"""One token request at an OAuth 2 token endpoint: client authentication, a deadline, typed errors.

Shared by client credentials (RFC 6749 §4.4) and token exchange (RFC 8693). The whole request,
connect to last byte, is bounded by the settings' `timeout`; any failure is a
`TokenEndpointError` whose message holds no token or secret (the authorization server's own
`error_description` is shown only after every secret of the request is cut out of it).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast
from urllib.parse import quote

from converter.config.credentials import TokenClientSettings
from converter.credentials.errors import TokenEndpointError
from converter.errors import ConfigError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("openapi_mcp.credentials")

_USABLE_TOKEN_TYPES = frozenset({"bearer", "n_a"})  # RFC 6750; RFC 8693 §2.2.1 N_A (not an access token)
_MAX_DESCRIPTION = 200
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token from a token endpoint. `value` never shows in repr or str."""

    value: str = field(repr=False)
    expires_in: float | None  # seconds, as the endpoint said; None: it did not say
    token_type: str = "Bearer"
    scope: str | None = None
    issued_token_type: str | None = None

    def __str__(self) -> str:
        return repr(self)

    @property
    def fingerprint(self) -> str:
        """A short SHA-256 prefix: enough to tell tokens apart in logs, useless to an attacker."""
        return hashlib.sha256(self.value.encode()).hexdigest()[:12]


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share one run of the work.

    The work runs as its own task: a caller that gives up (cancelled, timed out) does not cancel
    it for the others, and what it caches is kept. Its error reaches every caller waiting then.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(work())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: callers re-raise it; nobody else must be warned


def token_hash(token: str) -> str:
    """What caches key on instead of a caller's token."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenEndpoint:
    """Posts token requests for one client at one endpoint, over a client it is given."""

    def __init__(self, settings: TokenClientSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self._http = http
        self._signing_key: Any = _signing_key(settings) if settings.client_auth == "private_key_jwt" else None
        self.requests = 0  # token requests sent (for metrics and tests)
        self.failures = 0
        # by result: ok, unreachable, timeout, refused, invalid_response (metrics labels)
        self.results: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"TokenEndpoint(url={self.settings.token_endpoint!r}, client_id={self.settings.client_id!r})"

    def use(self, http: httpx.AsyncClient) -> None:
        """Send through `http` from now on (the owner opened a new client for a new lifespan)."""
        self._http = http

    async def request(self, grant_type: str, params: Sequence[tuple[str, str]], *,
                      secrets: Sequence[str] = (), what: str = "token request") -> IssuedToken:
        """POST `grant_type` with `params` (plus client authentication); the issued token.

        Args:
            secrets: values of `params` to cut out of any message (the subject and actor tokens).
            what: names the request in messages, e.g. "token exchange".

        Raises:
            TokenEndpointError: unreachable, no complete answer within the timeout, a refusal
                (non-200, with the OAuth `error` code), or an answer without a usable token.
        """
        import httpx  # on first use: a server that never asks a token endpoint does not load it

        settings = self.settings
        url = settings.token_endpoint
        data: list[tuple[str, str]] = [("grant_type", grant_type), *params]
        headers = {"accept": "application/json"}
        hidden = [*secrets]
        client_id = settings.client_id
        if settings.client_auth == "client_secret_basic":
            secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
            # RFC 6749 §2.3.1: both parts are form-urlencoded before base64
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            hidden.append(secret)
        elif settings.client_auth == "client_secret_post":
            secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
            data += [("client_id", client_id), ("client_secret", secret)]
            hidden.append(secret)
        else:
            assertion = self._client_assertion()
            data += [("client_id", client_id),
                     ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                     ("client_assertion", assertion)]
            hidden.append(assertion)
        where = f"The {what} at {url} (client {client_id!r})"
        self.requests += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(settings.timeout):
                response = await self._http.post(url, data=_form(data), headers=headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            self._failed(what, url, "timeout", started)
            raise TokenEndpointError(f"{where} did not answer within {settings.timeout:g} s", url=url,
                                     reason="timeout") from exc
        except httpx.HTTPError as exc:
            self._failed(what, url, "unreachable", started)
            raise TokenEndpointError(f"{where} failed: the token endpoint cannot be reached ({_kind(exc)})",
                                     url=url, reason="unreachable") from exc
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None
            description = body.get("error_description") if isinstance(body, dict) else None
            detail = _safe(error, hidden) or f"HTTP {response.status_code}"
            if isinstance(description, str) and (text := _safe(description, hidden)):
                detail += f": {text}"
            self._failed(what, url, "refused", started, response.status_code, error)
            raise TokenEndpointError(f"{where} was refused ({detail})", url=url, status=response.status_code,
                                     error=_safe(error, hidden) or None)
        try:
            token = _issued(body, what=where, url=url)
        except TokenEndpointError:
            self._failed(what, url, "invalid_response", started, response.status_code)
            raise
        if token is None:
            self._failed(what, url, "invalid_response", started, response.status_code)
            raise TokenEndpointError(f"{where} answered without a usable access_token", url=url,
                                     status=response.status_code, reason="invalid_response")
        self.results["ok"] = self.results.get("ok", 0) + 1
        log.info("%s at %s for client %s: issued %s token %s, expires_in %s, %.1f ms", what, url, client_id,
                 token.token_type, token.fingerprint,
                 "-" if token.expires_in is None else round(token.expires_in),
                 (time.perf_counter() - started) * 1000)
        return token

    def _failed(self, what: str, url: str, reason: str, started: float, status: int | None = None,
                error: str | None = None) -> None:
        self.failures += 1
        self.results[reason] = self.results.get(reason, 0) + 1
        log.warning("%s at %s for client %s failed: %s%s%s after %.1f ms", what, url, self.settings.client_id, reason,
                    f" HTTP {status}" if status is not None else "", f" {error}" if error else "",
                    (time.perf_counter() - started) * 1000)

    def _client_assertion(self) -> str:
        """RFC 7523 §2.2 private_key_jwt: a short-lived JWT signed with the client's key."""
        from joserfc import jwt

        settings = self.settings
        key, alg = self._signing_key
        now = int(time.time())
        header = {"alg": alg, "typ": "JWT"}
        if settings.client_key_id:
            header["kid"] = settings.client_key_id
        claims = {"iss": settings.client_id, "sub": settings.client_id, "aud": settings.token_endpoint,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60}
        return jwt.encode(header, claims, key, algorithms=[alg])


def _signing_key(settings: TokenClientSettings) -> tuple[Any, str]:
    """The private key for private_key_jwt and its algorithm; a bad key fails at startup."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from joserfc import jwk

    assert settings.client_private_key is not None  # checked by the settings
    text = settings.client_private_key.get_secret_value().strip()
    where = f"token endpoint {settings.token_endpoint} (client {settings.client_id!r}): client_private_key"
    kty: str | None = None
    data: Any = text
    try:
        if text.startswith("{"):
            data = json.loads(text)
            kty = data.get("kty") if isinstance(data, dict) else None
            if not isinstance(data, dict) or "d" not in data:
                raise ConfigError(f"{where}: is a public key; private_key_jwt needs the private key")
        else:
            loaded = serialization.load_pem_private_key(text.encode(), password=None)
            kty = ("RSA" if isinstance(loaded, rsa.RSAPrivateKey)
                   else "EC" if isinstance(loaded, ec.EllipticCurvePrivateKey)
                   else "OKP" if isinstance(loaded, ed25519.Ed25519PrivateKey) else None)
        if kty not in ("RSA", "EC", "OKP"):
            raise ConfigError(f"{where}: use an RSA, EC or Ed25519 private key (PEM or JWK)")
        key = cast(Any, jwk.import_key)(data, kty)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: is not a PEM or JWK private key") from exc
    alg = settings.client_assertion_alg
    if alg is None:
        curve = key.as_dict().get("crv")
        alg = {"RSA": "RS256", "OKP": "EdDSA"}.get(kty) or {"P-384": "ES384", "P-521": "ES512"}.get(str(curve), "ES256")
    return key, alg


def _form(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields for httpx, in order; `audience` and `resource` may repeat (RFC 8693 §2.1)."""
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _issued(body: Any, *, what: str, url: str) -> IssuedToken | None:
    if not isinstance(body, dict):
        return None
    value = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\x00 ") or not value.isascii():
        return None
    if not isinstance(token_type, str) or token_type.lower() not in _USABLE_TOKEN_TYPES:
        # A DPoP- or MAC-bound token cannot be sent as a bearer token (RFC 9449 §7.1).
        raise TokenEndpointError(f"{what} issued a token of type {str(token_type)[:40]!r}; only Bearer tokens "
                                 "can be sent upstream", url=url, status=200, reason="invalid_response")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():  # some servers send it as a string
        expires_in = int(expires_in)
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else None
    scope = body.get("scope") if isinstance(body.get("scope"), str) else None
    issued = body.get("issued_token_type") if isinstance(body.get("issued_token_type"), str) else None
    return IssuedToken(value=value, expires_in=lifetime, token_type="Bearer", scope=scope, issued_token_type=issued)


def _safe(text: str | None, secrets: Sequence[str]) -> str:
    """`text` cut to one short ASCII line with every secret (and anything token-like) removed."""
    if not text:
        return ""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    words = ["[redacted]" if len(word) > 40 else word for word in text.split()]  # a token-like blob
    line = " ".join(words).encode("ascii", "replace").decode()
    return line if len(line) <= _MAX_DESCRIPTION else line[:_MAX_DESCRIPTION - 3] + "..."


def _kind(exc: httpx.HTTPError) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "connection refused or no route"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the connection was closed"
    return type(exc).__name__
