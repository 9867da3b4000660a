"""RFC 8693 token exchange: the caller's validated token becomes one meant for the upstream API.

Results are cached per (SHA-256 of the caller's token, exchange request), in a bounded LRU, and
reused until shortly before the issued token expires (`expires_in`, else `cache.ttl`) and never
past the caller's own token's `exp`. Concurrent calls for one caller share one exchange. The
caller's token itself is never returned: an authorization server that answers with it is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from converter.config.credentials import TokenExchangeSettings
from converter.credentials.client_credentials import ClientCredentials, token_params
from converter.credentials.errors import CredentialError, TokenEndpointError
from converter.credentials.tokens import IssuedToken, SingleFlight, TokenEndpoint, token_hash

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("openapi_mcp.credentials")

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


@dataclass(frozen=True, slots=True)
class _Entry:
    token: IssuedToken
    usable_until: float


class TokenExchanger:
    """Exchanges callers' tokens at one token endpoint, for one target (audience/resource/scopes)."""

    def __init__(self, settings: TokenExchangeSettings, http: httpx.AsyncClient, *,
                 actor: ClientCredentials | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.endpoint = TokenEndpoint(settings, http)
        actor_settings = settings.actor_settings()
        if actor is None and actor_settings is not None:
            actor = ClientCredentials(actor_settings, http, clock=clock)
        self.actor = actor
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._flight: SingleFlight[str, IssuedToken] = SingleFlight()
        self._params = [("subject_token_type", settings.subject_token_type),
                        ("requested_token_type", settings.requested_token_type),
                        *token_params(settings.scopes, settings.audience, settings.resource)]
        # Part of every cache key: two exchangers for different targets never share a result.
        request = [settings.token_endpoint, settings.client_id, *map(list, self._params)]
        self._request_key = hashlib.sha256(json.dumps(request).encode()).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        s = self.settings
        return (f"TokenExchanger(token_endpoint={s.token_endpoint!r}, client_id={s.client_id!r}, "
                f"audience={s.audience!r}, resource={s.resource!r}, scopes={s.scopes!r})")

    @property
    def exchanges(self) -> int:
        """Exchange requests sent so far."""
        return self.endpoint.requests

    @property
    def cached(self) -> int:
        return len(self._cache)

    async def exchange(self, subject_token: str | None, *, subject_expires_at: float | None = None) -> IssuedToken:
        """A token for the upstream in place of `subject_token` (the caller's, already validated).

        Args:
            subject_token: the caller's access token as it arrived.
            subject_expires_at: its `exp` (epoch seconds), which bounds how long the result is reused.

        Raises:
            CredentialError: there is no caller token, or it has expired.
            TokenEndpointError: the exchange (or the actor token's fetch) failed.
        """
        if not subject_token:
            raise CredentialError("The upstream needs a token exchanged for the caller's, but this call carries "
                                  "no caller token (is auth: configured?)", reason="no_caller_token")
        now = self._clock()
        if subject_expires_at is not None and subject_expires_at <= now:
            raise CredentialError("The caller's token has expired, so it cannot be exchanged for the upstream",
                                  reason="caller_token_expired")
        key = f"{token_hash(subject_token)}:{self._request_key}"
        if self.settings.cache.enabled:
            entry = self._cache.get(key)
            if entry is not None:
                if now < entry.usable_until:
                    self._cache.move_to_end(key)
                    self.hits += 1
                    return entry.token
                del self._cache[key]
        self.misses += 1
        return await self._flight.run(key, lambda: self._exchange(subject_token, subject_expires_at, key))

    def invalidate(self, subject_token: str, token: IssuedToken | None = None) -> bool:
        """Drop the cached result for this caller (only if it is still `token`, when given).

        For an upstream 401: the next `exchange()` asks the token endpoint again.
        """
        key = f"{token_hash(subject_token)}:{self._request_key}"
        entry = self._cache.get(key)
        if entry is None or (token is not None and entry.token.value != token.value):
            return False
        del self._cache[key]
        log.info("token exchange: token %s dropped (the upstream refused it)", entry.token.fingerprint)
        return True

    async def _exchange(self, subject_token: str, subject_expires_at: float | None, key: str) -> IssuedToken:
        settings = self.settings
        started = self._clock()
        params = [("subject_token", subject_token), *self._params]
        secrets = [subject_token]
        if self.actor is not None:
            actor = await self.actor.token()
            params += [("actor_token", actor.value), ("actor_token_type", settings.actor_token_type)]
            secrets.append(actor.value)
        token = await self.endpoint.request(TOKEN_EXCHANGE_GRANT, params, secrets=secrets, what="token exchange")
        if token.value == subject_token or any(token.value == s for s in secrets):
            raise TokenEndpointError(
                f"The token exchange at {settings.token_endpoint} (client {settings.client_id!r}) answered with the "
                "token it was given; the caller's token is never sent upstream", url=settings.token_endpoint,
                status=200, reason="invalid_response")
        lifetime = token.expires_in if token.expires_in is not None else settings.cache.ttl
        usable_until = started + lifetime - min(settings.cache.leeway, lifetime / 10)
        if subject_expires_at is not None:
            usable_until = min(usable_until, subject_expires_at)
        if settings.cache.enabled and usable_until > self._clock():
            self._cache[key] = _Entry(token, usable_until)
            self._cache.move_to_end(key)
            while len(self._cache) > settings.cache.max_entries:
                self._cache.popitem(last=False)
        return token
