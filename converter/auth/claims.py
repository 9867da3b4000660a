"""The claim checks both verifiers make (`exp`, `nbf`, `iss`, `aud`), and the `Principal` they yield.

An introspection answer and a verified JWT differ in two ways only, both given by the caller: a JWT
must carry `exp` and `iss` (RFC 9068), while an introspection answer may leave them out (RFC 7662:
the authorization server already vouched for the token); a JWT names its client in `client_id` or
`azp`, an introspection answer in `client_id`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from converter.auth.principal import InvalidTokenError, Principal, audience_matches, checked_times, scopes_of
from converter.config import AuthSettings

Clock = Callable[[], float]  # seconds since the epoch, as time.time


def principal_from_claims(claims: Mapping[str, Any], settings: AuthSettings, *, self_contained: bool,
                          clock: Clock = time.time) -> Principal:
    """The principal of a token whose `claims` were vouched for (a signature, or an introspection).

    Args:
        self_contained: a JWT: `exp` and `iss` are required, and `azp` may name the client.
        clock: the wall clock the time claims are compared with (tests pass their own).

    Raises:
        InvalidTokenError: expired, not valid yet, another issuer or another audience, or (a JWT)
            no expiry.
    """
    now = clock()
    exp, nbf = checked_times(claims)
    if exp is None and self_contained:
        raise InvalidTokenError("The access token has no expiry")
    if exp is not None and exp + settings.leeway < now:
        raise InvalidTokenError("The access token has expired")
    if nbf is not None and nbf - settings.leeway > now:
        raise InvalidTokenError("The access token is not valid yet")
    iss = claims.get("iss")
    if (iss is not None or self_contained) and iss != settings.expected_issuer:
        raise InvalidTokenError("The access token was issued by another authorization server")
    if not settings.insecure_relaxed_audience_validation and not audience_matches(claims.get("aud"),
                                                                                  settings.resource):
        raise InvalidTokenError("The access token was not issued for this resource (audience)")
    client_id = claims.get("client_id")
    if self_contained and not client_id:
        client_id = claims.get("azp")
    subject = claims.get("sub")
    return Principal(
        subject=subject if isinstance(subject, str) else None,
        client_id=client_id if isinstance(client_id, str) else None,
        issuer=iss if isinstance(iss, str) else settings.expected_issuer,
        scopes=scopes_of(claims),
        claims=dict(claims),
        expires_at=exp,
        is_authenticated=True,
    )
