"""Local validation of JWT access tokens against the authorization server's JWKS.

Checks the signature (an allow-list of asymmetric algorithms: never `none`, never HS* with a
public key), `iss`, `aud` (the MCP resource), `exp`/`nbf` with leeway. An unknown `kid`
triggers one JWKS refetch (key rotation), at most once per `jwks_refetch_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from joserfc import errors as jose_errors
from joserfc import jwk, jwt

from converter.auth.claims import Clock, principal_from_claims
from converter.auth.introspection import CachingVerifier, token_key
from converter.auth.principal import AuthServerUnavailableError, InvalidTokenError, Principal
from converter.config import AuthSettings

log = logging.getLogger("openapi_mcp.auth")


class JWTVerifier(CachingVerifier):
    """Verifies JWT access tokens (RFC 9068, Keycloak's `typ: JWT` too) with a cached JWKS."""

    def __init__(self, settings: AuthSettings, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic) -> None:
        assert settings.jwks_uri is not None
        super().__init__(settings, transport=transport, clock=clock, monotonic=monotonic)
        self._keys: jwk.KeySet | None = None
        self._last_refetch = float("-inf")  # of refetches caused by an unknown kid
        self._lock = asyncio.Lock()
        self._failure: tuple[float, str] | None = None  # when the last fetch failed (monotonic), and why
        self.refetches = 0

    async def verify(self, token: str) -> Principal:
        """Return the token's principal.

        Raises:
            InvalidTokenError: bad signature or algorithm, unknown key, wrong issuer or audience, expired.
            AuthServerUnavailableError: the JWKS could not be fetched.
        """
        key = token_key(token)
        cached = self._cache.get(key)
        if isinstance(cached, Principal):
            if cached.expires_at is not None and cached.expires_at + self._settings.leeway < self._clock():
                raise InvalidTokenError("The access token has expired")
            return cached
        principal = await self._verify(token)
        # A verified token is reused until it expires (capped by cache_ttl): no RSA check per request,
        # and one Principal per token, which per-caller caches (access-rule decisions) key on.
        ttl = min(self._settings.cache_ttl, (principal.expires_at or 0) - self._clock())
        self._cache.put(key, principal, ttl)
        return principal

    async def _verify(self, token: str) -> Principal:
        keys = self._keys or await self._refresh(initial=True)
        try:
            decoded = self._decode(token, keys)
        except jose_errors.InvalidKeyIdError:
            keys = await self._refresh(initial=False)  # maybe the keys rotated
            try:
                decoded = self._decode(token, keys)
            except jose_errors.InvalidKeyIdError as exc:
                raise InvalidTokenError("The access token is signed with an unknown key") from exc
        return principal_from_claims(decoded.claims, self._settings, self_contained=True, clock=self._clock)

    def _decode(self, token: str, keys: jwk.KeySet) -> Any:
        try:
            return jwt.decode(token, keys, algorithms=self._settings.algorithms)
        except jose_errors.InvalidKeyIdError:
            raise
        except jose_errors.UnsupportedAlgorithmError as exc:
            raise InvalidTokenError("The access token's signature algorithm is not accepted") from exc
        except jose_errors.BadSignatureError as exc:
            raise InvalidTokenError("The access token's signature is invalid") from exc
        except (jose_errors.JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidTokenError("The access token is not a valid JWT") from exc

    async def _refresh(self, *, initial: bool) -> jwk.KeySet:
        asked = time.monotonic()
        async with self._lock:
            if self._failure is not None and self._failure[0] >= asked:
                # The fetch this request queued behind has just failed: share its verdict rather than
                # wait out auth.timeout again (N requests arriving together must not take N timeouts).
                if self._keys is None:
                    raise AuthServerUnavailableError(self._failure[1])
                return self._keys
            if self._keys is not None:
                if initial:
                    return self._keys  # another request loaded them while we waited
                if time.monotonic() - self._last_refetch < self._settings.jwks_refetch_interval:
                    return self._keys  # rate limit: unknown kids must not make us hammer the AS
                self._last_refetch = time.monotonic()
            uri = self._settings.jwks_uri
            assert uri is not None  # the constructor checked it
            try:
                response = await self._call("JWKS endpoint", "GET", uri, headers={"accept": "application/json"})
                response.raise_for_status()
                keys = jwk.KeySet.import_key_set(response.json())
            except AuthServerUnavailableError as exc:
                self._failure = (time.monotonic(), str(exc))
                if self._keys is None:
                    raise  # timed out or unreachable: _call logged it and says which
                return self._keys
            except (httpx.HTTPError, ValueError, jose_errors.JoseError) as exc:
                log.error("cannot fetch the JWKS from %s: %s", uri, type(exc).__name__)
                self._failure = (time.monotonic(), "The authorization server's keys could not be fetched")
                if self._keys is None:
                    raise AuthServerUnavailableError(self._failure[1]) from exc
                return self._keys
            self._failure = None
            self._keys = keys
            self.refetches += 1
            return keys
