"""What the auth layer learned about the caller, and helpers shared by the token verifiers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from converter.errors import ConverterError


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Principal:
    """The caller behind a request: from a verified token, or anonymous (auth off, stdio).

    Compared by identity: verifiers cache one Principal per token, and per-principal caches
    (access-rule decisions) key on it weakly.
    """

    subject: str | None = None
    client_id: str | None = None
    issuer: str | None = None
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    is_authenticated: bool = False

    def __repr__(self) -> str:  # never the claims: they may hold personal data
        return f"Principal(subject={self.subject!r}, client_id={self.client_id!r}, scopes={sorted(self.scopes)!r})"


ANONYMOUS = Principal()


class ClaimHeaderError(ConverterError):
    """A claim cannot be sent as a header (CR/LF, non-ASCII, or not a scalar or list)."""


class InvalidTokenError(Exception):
    """The token is not acceptable (RFC 6750 `invalid_token`); the message is safe to show."""


class AuthServerUnavailableError(Exception):
    """The authorization server could not answer; requests are refused, never let through."""


def canonical_resource(url: str) -> str:
    """RFC 8707 / MCP canonical form: lowercase scheme and host, no fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def audience_matches(audience: Any, resource: str) -> bool:
    """True when the token's `aud` (a string or a list) names `resource` (canonically compared)."""
    wanted = canonical_resource(resource)
    values = audience if isinstance(audience, list) else [audience]
    return any(isinstance(v, str) and canonical_resource(v) == wanted for v in values)


MAX_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z: a later "time" is not one
_TIME_CLAIMS = ("exp", "nbf", "iat")
_TEXT_CLAIMS = ("iss", "sub", "client_id", "azp", "scope")


def checked_times(claims: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """`exp` and `nbf` of a token's claims (None when absent), after checking that every claim
    this server reads has the type RFC 7519 / 7662 / 9068 give it.

    A malformed claim makes the token invalid: `"exp": NaN` or `"exp": "1"` must not pass as a
    token that never expires, nor `"exp": true` as one that expired in 1970, nor a number too
    large for a float crash the request.

    Raises:
        InvalidTokenError: a time that is not a finite number of seconds in [0, year 9999]
            (booleans are not numbers), a text claim that is not a string, an `aud` that is
            neither a string nor a list of strings, a `scp` that is neither.
    """
    for name in _TIME_CLAIMS:
        if name in claims:
            value = claims[name]
            # (NaN fails the range test; the range test never turns a huge int into a float)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_NUMERIC_DATE:
                raise InvalidTokenError(f"The access token's {name!r} claim is not a valid time")
    for name in _TEXT_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise InvalidTokenError(f"The access token's {name!r} claim is not a string")
    for name in ("aud", "scp"):
        if name in claims and not _is_text_or_texts(claims[name]):
            raise InvalidTokenError(f"The access token's {name!r} claim is not a string or a list of strings")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    return (None if exp is None else float(exp)), (None if nbf is None else float(nbf))


def _is_text_or_texts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (space-separated, RFC 7662 / 9068) or `scp` (a list, some IdPs)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()


def claim_value(claims: Mapping[str, Any], dotted: str) -> Any:
    """Look up a claim by dotted path (`realm_access.roles`); None when absent."""
    node: Any = claims
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def claim_headers(principal: Principal, mappings: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Upstream headers from the caller's claims (`claim_to_header`).

    A missing claim (or an empty list) sends no header (the argument-side header is never used:
    see `reserved_headers`); lists are joined with `,`. Anything that could split or smuggle a
    header (CR, LF, NUL, non-ASCII), or make the list ambiguous (an item holding `,`, an empty
    item, or one with spaces at either end, which HTTP's list syntax drops), refuses the call
    rather than being cleaned silently: `["a,b", "c"]` must not reach the upstream as three roles.

    Raises:
        ClaimHeaderError: a claim value cannot be sent safely.
    """
    headers: dict[str, str] = {}
    for claim, header in mappings:
        value = claim_value(principal.claims, claim)
        if value is None or value == []:
            continue
        if isinstance(value, list):
            items = [_claim_text(v, claim, header) for v in value]
            if any("," in item or item != item.strip() or not item for item in items):
                raise ClaimHeaderError(f"The token claim {claim!r} has an item that is empty, holds ',' or starts "
                                       f"or ends with a space, so its list cannot be sent unambiguously as the "
                                       f"header {header!r}")
            text = ",".join(items)
        else:
            text = _claim_text(value, claim, header)
        headers[header] = text
    return headers


def _claim_text(value: Any, claim: str, header: str) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        text = str(value)
    else:
        raise ClaimHeaderError(f"The token claim {claim!r} is not a string, number or list, so it cannot be sent "
                               f"as the header {header!r}")
    if not text.isascii() or any(c in text for c in "\r\n\x00"):
        raise ClaimHeaderError(f"The token claim {claim!r} contains CR, LF, NUL or non-ASCII characters, so it "
                               f"cannot be sent as the header {header!r}")
    return text
