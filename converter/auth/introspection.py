"""RFC 7662 token introspection (Keycloak, Gravitee AM, any OAuth 2 server), cached.

Results are cached per token (by its SHA-256, never the token itself) for `cache_ttl` seconds
and never past the token's `exp`; inactive answers for `inactive_cache_ttl`. Concurrent
requests with the same new token share one introspection call. If the authorization server
cannot answer, the request is refused (`AuthServerUnavailableError`), never let through.
With `redis:` set, verdicts are shared by every replica (converter.auth.shared_cache).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from converter.auth.claims import Clock, principal_from_claims
from converter.auth.principal import AuthServerUnavailableError, InvalidTokenError, Principal
from converter.auth.shared_cache import SharedVerdict, SharedVerdicts
from converter.bodies import ACCEPT_ENCODING, BodyDecodingError, BoundedBody
from converter.config import AuthSettings
from converter.expiring import ExpiringLRU

log = logging.getLogger("openapi_mcp.auth")

MAX_CACHED_TOKENS = 10_000
MAX_ANSWER_BYTES = 1024 * 1024  # an introspection answer or a JWKS is a few KB


class TokenCache(ExpiringLRU[str, "Principal | InvalidTokenError"]):
    """A bounded map from token hash to a verdict with an expiry (monotonic clock)."""

    def __init__(self, max_entries: int = MAX_CACHED_TOKENS, *, clock: Clock = time.monotonic) -> None:
        super().__init__(max_entries, clock=clock)


def token_key(token: str) -> str:
    """What the caches hold instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class CachingVerifier:
    """What both verifiers share: settings, a per-token verdict cache, a client for the AS."""

    def __init__(self, settings: AuthSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 shared: SharedVerdicts | None = None) -> None:
        """`clock` is the wall clock token times are compared with, `monotonic` the one cache
        entries expire by (tests pass their own, instead of sleeping); `shared` holds verdicts
        shared with the other replicas (introspection only), when redis: is set."""
        self._settings = settings
        self._clock = clock
        self._cache = TokenCache(clock=monotonic)
        self.shared = shared
        # Never follows redirects: an introspection request carries the client secret, and a JWKS
        # from wherever a redirect points is not the authorization server's (fail closed: 503).
        self._client = httpx.AsyncClient(timeout=settings.timeout, transport=transport, follow_redirects=False,
                                         headers={"accept-encoding": ACCEPT_ENCODING})

    @property
    def cache(self) -> TokenCache:
        return self._cache

    async def aclose(self) -> None:
        await self._client.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    async def _call(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request to the authorization server, its whole answer bounded by `auth.timeout`.

        httpx's timeouts bound each connect, read and write: an AS that sends its answer a byte at
        a time would hold the MCP request (and every request waiting on the same token) forever.

        Raises:
            AuthServerUnavailableError: no complete answer within the timeout, or a network failure.
        """
        timeout = self._settings.timeout
        try:
            async with asyncio.timeout(timeout), self._client.stream(method, url, **kwargs) as response:
                return await _bounded(response)
        except BodyDecodingError as exc:
            log.error("%s %s answered a body that cannot be read: %s", what, url, exc)
            raise AuthServerUnavailableError("The authorization server's answer could not be read") from exc
        except _TooLargeError as exc:
            log.error("%s %s answered more than %d bytes", what, url, MAX_ANSWER_BYTES)
            raise AuthServerUnavailableError("The authorization server's answer is too large") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            log.error("%s %s did not answer within %g s", what, url, timeout)
            message = f"The authorization server did not answer within {timeout:g} s"
            raise AuthServerUnavailableError(message) from exc
        except httpx.HTTPError as exc:
            log.error("%s %s failed: %s", what, url, type(exc).__name__)
            raise AuthServerUnavailableError("The authorization server could not be reached") from exc


class _TooLargeError(Exception):
    pass


async def _bounded(response: httpx.Response) -> httpx.Response:
    """`response` read into memory, at most MAX_ANSWER_BYTES of it once decoded (a gzip bomb from
    the authorization server, or anything posing as it, costs that much and no more)."""
    if response.is_stream_consumed:  # made in memory (a MockTransport answer): already read
        data = response.content
        if len(data) > MAX_ANSWER_BYTES:
            raise _TooLargeError
    else:
        body = BoundedBody(response.headers.get("content-encoding"), MAX_ANSWER_BYTES)
        async for chunk in response.aiter_raw():
            if not body.add(chunk):
                raise _TooLargeError
        data = body.finish()
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=data, request=response.request)


class IntrospectionVerifier(CachingVerifier):
    """Verifies opaque (or any) access tokens with the authorization server's introspection endpoint."""

    def __init__(self, settings: AuthSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 shared: SharedVerdicts | None = None) -> None:
        assert settings.introspection_endpoint is not None
        super().__init__(settings, transport=transport, clock=clock, monotonic=monotonic, shared=shared)
        self._endpoint = settings.introspection_endpoint
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    async def verify(self, token: str) -> Principal:
        """Return the token's principal.

        Raises:
            InvalidTokenError: inactive, expired, or issued for another audience or issuer.
            AuthServerUnavailableError: the introspection endpoint failed or answered nonsense.
        """
        key = token_key(token)
        cached = self._cache.get(key)
        if isinstance(cached, Principal):
            if cached.expires_at is not None and cached.expires_at <= self._clock():
                raise InvalidTokenError("The access token has expired")
            return cached
        if isinstance(cached, InvalidTokenError):
            # A new exception each time: re-raising the cached one would grow its traceback by a
            # frame per request (and keep every such request's frames alive).
            raise InvalidTokenError(str(cached))
        pending = self._inflight.get(key)
        if pending is not None:  # one introspection per new token, however many requests bring it
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            principal = await self._introspect(token, key)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else AuthServerUnavailableError("cancelled"))
                future.exception()  # mark retrieved: waiters re-raise it, nobody else must be warned
            raise
        else:
            future.set_result(principal)
            return principal
        finally:
            self._inflight.pop(key, None)

    async def _introspect(self, token: str, key: str) -> Principal:
        """The verdict of the other replicas (converter.auth.shared_cache) if there is one, else the AS's."""
        shared = self.shared
        if shared is None:
            return await self._ask(token, key)
        verdict = await shared.get(key)
        if verdict is None and not await shared.claim(key, self._settings.timeout):
            verdict = await shared.wait(key, self._settings.timeout)  # another replica is asking right now
        if verdict is not None:
            return self._from_shared(key, verdict)
        try:
            return await self._ask(token, key)
        except AuthServerUnavailableError:
            await shared.release(key)
            raise

    def _from_shared(self, key: str, verdict: SharedVerdict) -> Principal:
        """A shared verdict, checked again here and cached locally until it expires for every replica."""
        remaining = verdict.expires_at - self._clock()
        if verdict.answer is None:
            refusal = InvalidTokenError(verdict.refusal or "The access token is not active")
            self._cache.put(key, refusal, min(remaining, self._settings.inactive_cache_ttl))
            raise refusal
        try:
            principal = self._principal(verdict.answer)
        except InvalidTokenError as exc:
            self._cache.put(key, exc, min(remaining, self._settings.inactive_cache_ttl))
            raise
        ttl = min(remaining, self._settings.cache_ttl)
        if principal.expires_at is not None:
            ttl = min(ttl, principal.expires_at - self._clock())
        self._cache.put(key, principal, ttl)
        return principal

    async def _ask(self, token: str, key: str) -> Principal:
        """Introspect `token` at the authorization server; cache (and share) the verdict."""
        settings = self._settings
        data = {"token": token, "token_type_hint": "access_token"}
        headers = {"accept": "application/json"}
        client_id = settings.client_id or ""
        if settings.client_auth_method == "client_secret_basic":
            secret = settings.client_secret.get_secret_value() if settings.client_secret else ""
            # RFC 6749 §2.3.1: both parts are form-urlencoded before base64
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif settings.client_auth_method == "client_secret_post":
            data["client_id"] = client_id
            data["client_secret"] = settings.client_secret.get_secret_value() if settings.client_secret else ""
        else:
            data["client_id"] = client_id
            data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            data["client_assertion"] = self._client_assertion()
        response = await self._call("introspection endpoint", "POST", self._endpoint, data=data, headers=headers)
        if response.status_code != 200:
            log.error("introspection endpoint %s answered HTTP %d", self._endpoint, response.status_code)
            raise AuthServerUnavailableError(f"The authorization server answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise AuthServerUnavailableError("The authorization server answered with invalid JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise AuthServerUnavailableError("The authorization server's introspection answer has no 'active'")
        now = self._clock()
        try:
            principal = self._principal(body)
        except InvalidTokenError as exc:
            self._cache.put(key, exc, settings.inactive_cache_ttl)
            if self.shared is not None:
                await self.shared.put(key, SharedVerdict(None, str(exc), now + settings.inactive_cache_ttl))
            raise
        ttl = settings.cache_ttl
        if principal.expires_at is not None:
            ttl = min(ttl, principal.expires_at - now)
        self._cache.put(key, principal, ttl)
        if self.shared is not None:
            await self.shared.put(key, SharedVerdict(body, None, now + ttl))
        return principal

    def _principal(self, body: dict[str, Any]) -> Principal:
        if body["active"] is not True:
            raise InvalidTokenError("The access token is not active")
        claims = {k: v for k, v in body.items() if k != "active"}
        return principal_from_claims(claims, self._settings, self_contained=False, clock=self._clock)

    def _client_assertion(self) -> str:
        """RFC 7523 private_key_jwt client authentication."""
        from joserfc import jwk, jwt

        settings = self._settings
        assert settings.client_private_key is not None
        key = jwk.import_key(settings.client_private_key.get_secret_value())
        now = int(time.time())
        header = {"alg": "RS256" if key.key_type == "RSA" else "ES256"}
        if settings.client_key_id:
            header["kid"] = settings.client_key_id
        claims = {"iss": settings.client_id, "sub": settings.client_id, "aud": self._endpoint,
                  "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60}
        return jwt.encode(header, claims, key)
