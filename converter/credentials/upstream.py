"""`UpstreamCredentials`: the credentials one OpenAPI source's calls carry, applied per operation.

The request path calls one method per upstream call:

```python
response = await credentials.send(upstream, request, plan.operation.security, caller, tool=plan.name)
```

It picks the operation's security alternative (converter.credentials.schemes), gets the tokens
(static, client credentials, or a token exchange of the caller's token), adds them to a copy of
the request (headers, query parameters, cookies; what the arguments put under the same names is
replaced), sends it, and on an upstream 401 drops the tokens it used and, for an idempotent
method, sends once more with new ones. Any failure to get credentials raises (`CredentialError`,
`TokenEndpointError`): a call never goes out without its credentials or with the caller's token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Protocol, Self
from urllib.parse import quote, unquote

from pydantic import SecretStr

from converter.config.credentials import (
    ClientCredentialsSettings,
    CredentialsSettings,
    TokenExchangeSettings,
)
from converter.credentials.client_credentials import ClientCredentials
from converter.credentials.errors import CredentialError, TokenEndpointError
from converter.credentials.schemes import (
    _COOKIE_UNSAFE,
    Binding,
    SchemeCompiler,
    Security,
    SecurityPlan,
    SourceSpec,
    describe,
)
from converter.credentials.token_exchange import TokenExchanger
from converter.credentials.tokens import IssuedToken, TokenEndpoint
from converter.invoke.request import HttpRequest
from converter.telemetry.record import current_record

if TYPE_CHECKING:
    import httpx

    from converter.auth.principal import Principal
    from converter.invoke.upstream import UpstreamResponse
    from converter.telemetry.record import CallRecord

log = logging.getLogger("openapi_mcp.credentials")

# RFC 9110 §9.2.2: safe to send twice
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the call is for: the caller's token as it arrived (already verified) and its `exp`."""

    token: str | None = field(default=None, repr=False)
    expires_at: float | None = None

    @classmethod
    def of(cls, principal: Principal | None, token: str | None) -> Caller:
        """From the auth layer's principal and the bearer token it verified."""
        if principal is None or not principal.is_authenticated:
            return cls(None, None)
        return cls(token or None, principal.expires_at)


ANONYMOUS_CALLER: Final = Caller()


class Sender(Protocol):
    async def send(self, request: HttpRequest) -> UpstreamResponse: ...


class _Source(Protocol):
    async def get(self, caller: Caller) -> tuple[str, IssuedToken | None]: ...
    def invalidate(self, caller: Caller, token: IssuedToken) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Static:
    value: SecretStr

    async def get(self, caller: Caller) -> tuple[str, IssuedToken | None]:
        return self.value.get_secret_value(), None

    def invalidate(self, caller: Caller, token: IssuedToken) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _Own:
    credentials: ClientCredentials

    async def get(self, caller: Caller) -> tuple[str, IssuedToken | None]:
        token = await self.credentials.token()
        return token.value, token

    def invalidate(self, caller: Caller, token: IssuedToken) -> bool:
        return self.credentials.invalidate(token)


@dataclass(frozen=True, slots=True)
class _Exchange:
    exchanger: TokenExchanger

    async def get(self, caller: Caller) -> tuple[str, IssuedToken | None]:
        token = await self.exchanger.exchange(caller.token, subject_expires_at=caller.expires_at)
        return token.value, token

    def invalidate(self, caller: Caller, token: IssuedToken) -> bool:
        return caller.token is not None and self.exchanger.invalidate(caller.token, token)


@dataclass(slots=True)
class CredentialParts:
    """What one call adds to its request. Values never show in repr."""

    schemes: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()  # what was sent, per scheme: token_exchange, api_key... (Binding.kind)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    query: list[tuple[str, str]] = field(default_factory=list, repr=False)
    cookies: list[tuple[str, str]] = field(default_factory=list, repr=False)
    tokens: list[tuple[_Source, IssuedToken]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (f"CredentialParts(schemes={self.schemes!r}, kinds={self.kinds!r}, headers={sorted(self.headers)!r}, "
                f"query={[n for n, _ in self.query]!r}, cookies={[n for n, _ in self.cookies]!r})")

    @property
    def has_tokens(self) -> bool:
        """True when a token came from a token endpoint (so a 401 may be cured by a new one)."""
        return bool(self.tokens)

    def apply_to(self, request: HttpRequest) -> HttpRequest:
        """A copy of `request` carrying these credentials (same-named parts of it are replaced)."""
        headers = dict(request.headers)
        for name, value in self.headers.items():
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        if self.cookies:
            names = {n for n, _ in self.cookies}
            cookie_keys = [k for k in headers if k.lower() == "cookie"]
            pairs = [p for k in cookie_keys for p in headers.pop(k).split("; ") if p.split("=", 1)[0] not in names]
            headers["cookie"] = "; ".join([*pairs, *(f"{n}={v}" for n, v in self.cookies)])
        url = request.url
        if self.query:
            names = {n for n, _ in self.query}
            base, _, query = url.partition("?")
            kept = [p for p in query.split("&") if p and unquote(p.split("=", 1)[0]) not in names]
            added = [f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in self.query]
            url = f"{base}?{'&'.join([*kept, *added])}"
        return replace(request, url=url, headers=headers)


class UpstreamCredentials:
    """The credentials of one OpenAPI source's upstream; owns the HTTP client for token endpoints.

    Create it at startup (a bad credential config raises `ConfigError` here), close it in the
    lifespan (`aclose()` or `async with`).
    """

    def __init__(self, settings: CredentialsSettings, security_schemes: Mapping[str, Any], *,
                 label: str = "upstream", static_headers: Iterable[str] = (),
                 transport: httpx.AsyncBaseTransport | None = None, clock: Callable[[], float] = time.time) -> None:
        self.compiler = SchemeCompiler(settings, security_schemes, label=label, static_headers=static_headers)
        specs = self.compiler.sources()
        self._http = self._client(transport) if specs else None
        self._sources: dict[int, _Source] = {}
        self._clock = clock
        for spec in specs:
            self._source(spec)
        self._transport = transport
        self.retries = 0  # resends after an upstream 401 with a renewed token

    def __repr__(self) -> str:
        return f"UpstreamCredentials(label={self.compiler.label!r}, schemes={sorted(self.compiler.schemes)!r})"

    @property
    def is_active(self) -> bool:
        """False when nothing is configured: calls can skip `send` and go straight upstream."""
        return self.compiler.default_source is not None or bool(self.compiler.settings.credentials)

    @staticmethod
    def _client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        import httpx

        # No redirects (a token request is not re-posted elsewhere), no proxy from the environment.
        return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)

    async def __aenter__(self) -> Self:
        """Usable again after `aclose()` (a server lifespan that starts again): a new client,
        the same caches."""
        if self._http is not None and self._http.is_closed:
            self._http = self._client(self._transport)
            for _, endpoint in self._endpoints():
                endpoint.use(self._http)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _source(self, spec: SourceSpec) -> _Source:
        if isinstance(spec, SecretStr):
            return _Static(spec)
        source = self._sources.get(id(spec))
        if source is None:
            assert self._http is not None
            if isinstance(spec, TokenExchangeSettings):
                source = _Exchange(TokenExchanger(spec, self._http, clock=self._clock))
            else:
                assert isinstance(spec, ClientCredentialsSettings)
                source = _Own(ClientCredentials(spec, self._http, clock=self._clock))
            self._sources[id(spec)] = source
        return source

    def _endpoints(self) -> list[tuple[str, TokenEndpoint]]:
        """Every token endpoint client, with its kind: token_exchange or client_credentials."""
        found: list[tuple[str, TokenEndpoint]] = []
        for source in self._sources.values():
            if isinstance(source, _Exchange):
                found.append(("token_exchange", source.exchanger.endpoint))
                if source.exchanger.actor is not None:  # the actor token: the gateway's own
                    found.append(("client_credentials", source.exchanger.actor.endpoint))
            else:
                assert isinstance(source, _Own)
                found.append(("client_credentials", source.credentials.endpoint))
        return found

    def stats(self) -> dict[str, int]:
        """Counters for metrics: token requests, exchange cache hits and misses, 401 retries."""
        out = {"token_requests": 0, "token_failures": 0, "exchange_cache_hits": 0, "exchange_cache_misses": 0,
               "upstream_401_retries": self.retries}
        for source in self._sources.values():
            if isinstance(source, _Exchange):
                out["exchange_cache_hits"] += source.exchanger.hits
                out["exchange_cache_misses"] += source.exchanger.misses
        for _, endpoint in self._endpoints():
            out["token_requests"] += endpoint.requests
            out["token_failures"] += endpoint.failures
        return out

    def token_requests(self) -> dict[tuple[str, str], int]:
        """Token requests by (kind, result): kind token_exchange or client_credentials, result ok,
        unreachable, timeout, refused or invalid_response."""
        out: dict[tuple[str, str], int] = {}
        for kind, endpoint in self._endpoints():
            for result, count in endpoint.results.items():
                out[kind, result] = out.get((kind, result), 0) + count
        return out

    def plan(self, security: Security) -> SecurityPlan:
        return self.compiler.plan(security)

    def _choose(self, plan: SecurityPlan, caller: Caller, tool: str | None) -> tuple[Binding, ...]:
        if plan.default is not None:
            return (plan.default,)
        usable = [a for a in plan.alternatives if a.is_bound]
        for alternative in usable:
            if caller.token or not any(b.needs_caller for b in alternative.bindings):
                return alternative.bindings
        if plan.anonymous or not plan.alternatives:
            return ()
        where = f"Tool {tool!r}: the" if tool else "The"
        if usable:
            raise CredentialError(f"{where} upstream needs a token exchanged for the caller's ("
                                  f"{usable[0].label}), but this call carries no caller token", tool=tool,
                                  reason="no_caller_token")
        raise CredentialError(f"{where} upstream needs credentials that are not configured ({describe(plan)})",
                              tool=tool)

    async def credentials(self, security: Security, caller: Caller = ANONYMOUS_CALLER, *,
                          tool: str | None = None) -> CredentialParts:
        """What a call of an operation with `security` must carry, for `caller`.

        Raises:
            CredentialError: no alternative can be met (none configured, or no caller token).
            TokenEndpointError: a token could not be obtained.
        """
        bindings = self._choose(self.plan(security), caller, tool)
        parts = CredentialParts(schemes=tuple(b.scheme for b in bindings), kinds=tuple(b.kind for b in bindings))
        for binding in bindings:
            if binding.source is None:
                continue  # upstream.headers sends it
            source = self._source(binding.source)
            value, token = await source.get(caller)
            if token is not None:
                parts.tokens.append((source, token))
            placement = binding.placement
            if placement.location == "header":
                parts.headers[placement.name] = placement.prefix + value
            elif placement.location == "query":
                parts.query.append((placement.name, value))
            else:
                if _COOKIE_UNSAFE.intersection(value):
                    raise CredentialError(f"The credential for {binding.scheme!r} cannot be sent as a cookie",
                                          tool=tool, reason="unusable")
                parts.cookies.append((placement.name, value))
        return parts

    async def apply(self, request: HttpRequest, security: Security, caller: Caller = ANONYMOUS_CALLER, *,
                    tool: str | None = None) -> tuple[HttpRequest, CredentialParts]:
        """`request` with its credentials added (a copy), and what was added."""
        parts = await self.credentials(security, caller, tool=tool)
        return parts.apply_to(request), parts

    def invalidate(self, parts: CredentialParts, caller: Caller = ANONYMOUS_CALLER) -> bool:
        """Drop the tokens `parts` carried (the upstream answered 401); True if any was dropped."""
        dropped = False
        for source, token in parts.tokens:
            dropped = source.invalidate(caller, token) or dropped
        return dropped

    async def send(self, upstream: Sender, request: HttpRequest, security: Security,
                   caller: Caller = ANONYMOUS_CALLER, *, tool: str | None = None) -> UpstreamResponse:
        """Apply the credentials, send, and on a 401 renew the tokens (resending idempotent calls once).

        Raises:
            CredentialError, TokenEndpointError: credentials could not be given (nothing is sent).
            UpstreamError: from `upstream.send`.
        """
        record = current_record.get()
        prepared, parts = await self._apply_recorded(request, security, caller, tool, record)
        response = await upstream.send(prepared)
        if response.status != 401 or not parts.has_tokens:
            return response
        dropped = self.invalidate(parts, caller)
        if not dropped or request.method.upper() not in IDEMPOTENT_METHODS:
            return response
        log.info("%s %s answered 401; retrying once with a new token", request.method, request.template or "")
        self.retries += 1
        if record is not None:
            record.upstream_auth_retried = True
        prepared, parts = await self._apply_recorded(request, security, caller, tool, record)
        return await upstream.send(prepared)

    async def _apply_recorded(self, request: HttpRequest, security: Security, caller: Caller, tool: str | None,
                              record: CallRecord | None) -> tuple[HttpRequest, CredentialParts]:
        """`apply`, noting on the access-log record what was sent or why nothing could be (no values)."""
        try:
            prepared, parts = await self.apply(request, security, caller, tool=tool)
        except TokenEndpointError as exc:
            if record is not None:
                record.upstream_auth_error, record.token_endpoint_error = exc.reason, (exc.error or "")[:64] or None
            raise
        except CredentialError as exc:
            if record is not None:
                record.upstream_auth_error = exc.reason
            raise
        if record is not None:
            record.upstream_auth = "+".join(dict.fromkeys(parts.kinds)) or "none"
        return prepared, parts
