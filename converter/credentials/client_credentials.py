"""The gateway's own token (OAuth 2 client credentials): fetched once, shared, refreshed before expiry.

Every caller gets the same token. A token is fetched on first use; from `refresh_leeway` seconds
before it expires (at the latest half-way through its life) the next call fetches a new one, and
concurrent calls share that fetch. If the refresh fails while the old token is still valid, the old
one is used (and the failure logged); once it has expired, the failure is the caller's error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from converter.config.credentials import ClientCredentialsSettings
from converter.credentials.errors import TokenEndpointError
from converter.credentials.tokens import IssuedToken, SingleFlight, TokenEndpoint

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("openapi_mcp.credentials")


def token_params(scopes: list[str], audience: list[str], resource: list[str]) -> list[tuple[str, str]]:
    """The `scope`, `audience` and `resource` form fields (the last two may repeat)."""
    params: list[tuple[str, str]] = []
    if scopes:
        params.append(("scope", " ".join(scopes)))
    params += [("audience", a) for a in audience]
    params += [("resource", r) for r in resource]
    return params


def lifetime_marks(now: float, lifetime: float, leeway: float) -> tuple[float, float]:
    """(renew_at, usable_until) for a token that lives `lifetime` seconds from `now`.

    Renewal starts `leeway` seconds before expiry but never before half-way; a token is used
    until a small margin (5 s, or a tenth of a short life) before it expires, for clock skew.
    """
    renew_at = now + max(lifetime - leeway, lifetime / 2)
    usable_until = now + lifetime - min(5.0, lifetime / 10)
    return renew_at, usable_until


@dataclass(frozen=True, slots=True)
class _Held:
    token: IssuedToken
    renew_at: float
    usable_until: float


class ClientCredentials:
    """One client's token at one token endpoint, for every caller."""

    def __init__(self, settings: ClientCredentialsSettings, http: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.endpoint = TokenEndpoint(settings, http)
        self._clock = clock
        self._held: _Held | None = None
        self._flight: SingleFlight[str, IssuedToken] = SingleFlight()

    def __repr__(self) -> str:
        return (f"ClientCredentials(token_endpoint={self.settings.token_endpoint!r}, "
                f"client_id={self.settings.client_id!r}, scopes={self.settings.scopes!r})")

    @property
    def fetches(self) -> int:
        """Token requests sent so far."""
        return self.endpoint.requests

    async def token(self) -> IssuedToken:
        """The current token, fetched or renewed as needed.

        Raises:
            TokenEndpointError: no valid token is held and the token endpoint failed.
        """
        held = self._held
        now = self._clock()
        if held is not None and now < held.renew_at:
            return held.token
        if held is not None and now < held.usable_until:
            try:
                return await self._flight.run("token", self._fetch)
            except TokenEndpointError as exc:
                log.warning("client credentials for %s: renewal failed, the current token (valid %.0f s more) "
                            "is used meanwhile: %s", self.settings.client_id, held.usable_until - now, exc)
                return held.token
        return await self._flight.run("token", self._fetch)

    def invalidate(self, token: IssuedToken | None = None) -> bool:
        """Drop the held token (only if it is still `token`, when given): the upstream refused it.

        Returns whether a token was dropped; the next `token()` fetches a new one.
        """
        held = self._held
        if held is None or (token is not None and held.token.value != token.value):
            return False
        self._held = None
        log.info("client credentials for %s: token %s dropped (the upstream refused it)", self.settings.client_id,
                 held.token.fingerprint)
        return True

    async def _fetch(self) -> IssuedToken:
        settings = self.settings
        started = self._clock()
        token = await self.endpoint.request(
            "client_credentials", token_params(settings.scopes, settings.audience, settings.resource),
            what="client credentials request")
        lifetime = token.expires_in if token.expires_in is not None else settings.ttl
        renew_at, usable_until = lifetime_marks(started, lifetime, settings.refresh_leeway)
        self._held = _Held(token, renew_at, usable_until)
        return token
