"""The spec's securitySchemes matched with the configured credentials: what each operation sends.

Compiling is pure (no network), so `openapi-mcp check` can list the operations that cannot be
called for lack of credentials (`missing_credentials`). A scheme is bound to its credential by
name (`upstream.credentials.<scheme>`); oauth2, openIdConnect and http bearer schemes without one
use `upstream.auth` when it is set. Per operation (OpenAPI 3 §4.8.30 Security Requirement):

- `security` absent everywhere: only `upstream.auth` (if set) is sent, in its header.
- `security: []`: nothing is sent (the operation is public).
- alternatives: the first one whose schemes are all bound (and, at call time, whose token
  exchange has a caller token) is used; an empty alternative `{}` (anonymous) only when no other
  is. Inside one alternative, every scheme is sent (AND).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pydantic import SecretStr

from converter.config.credentials import (
    BasicCredential,
    ClientCredentialsSettings,
    CredentialsSettings,
    OAuthCredential,
    TokenExchangeSettings,
)
from converter.errors import ConfigError
from converter.models import Operation, Problem

Security: TypeAlias = "tuple[Mapping[str, tuple[str, ...]], ...] | None"
SourceSpec: TypeAlias = "SecretStr | ClientCredentialsSettings | TokenExchangeSettings"

# http schemes whose challenge-response cannot be answered with a fixed header value
_INTERACTIVE_HTTP = frozenset({"digest", "hoba", "mutual", "negotiate", "scram-sha-1", "scram-sha-256", "vapid"})
_COOKIE_UNSAFE = set(' ",;\\\t\r\n')


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a credential goes: a header (with a prefix such as `Bearer `), a query parameter or a cookie."""

    location: Literal["header", "query", "cookie"]
    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """One security scheme of the spec, with the credential it sends and where."""

    scheme: str
    placement: Placement
    source: SourceSpec | None  # None: `upstream.headers` already sends this header
    static_kind: str = "static_token"  # what a fixed credential is: api_key, basic, static_token

    @property
    def needs_caller(self) -> bool:
        return isinstance(self.source, TokenExchangeSettings)

    @property
    def kind(self) -> str:
        """What this sends, for the access log: token_exchange, client_credentials, api_key,
        basic, static_token or upstream_headers (never a value)."""
        if self.source is None:
            return "upstream_headers"
        if isinstance(self.source, TokenExchangeSettings):
            return "token_exchange"
        if isinstance(self.source, ClientCredentialsSettings):
            return "client_credentials"
        return self.static_kind

    def __repr__(self) -> str:
        kind = "upstream.headers" if self.source is None else \
            type(self.source).__name__.removesuffix("Settings").replace("SecretStr", "static")
        return f"Binding(scheme={self.scheme!r}, placement={self.placement!r}, source={kind})"


@dataclass(frozen=True, slots=True)
class Alternative:
    """One Security Requirement Object: all of `bindings`, or `missing` says why it cannot be met."""

    schemes: tuple[str, ...]
    bindings: tuple[Binding, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join(repr(s) for s in self.schemes) or "anonymous"

    @property
    def is_bound(self) -> bool:
        return not self.missing


@dataclass(frozen=True, slots=True)
class SecurityPlan:
    """What one operation's `security` asks for, compiled."""

    alternatives: tuple[Alternative, ...] = ()  # the non-empty requirements, in the spec's order
    anonymous: bool = False  # `security: []` or an empty requirement `{}` among the alternatives
    default: Binding | None = None  # `upstream.auth` for an operation without `security`

    @property
    def is_satisfiable(self) -> bool:
        """True when some alternative is bound (a token exchange still needs a caller token)."""
        return self.anonymous or not self.alternatives or any(a.is_bound for a in self.alternatives)


class SchemeCompiler:
    """Binds the spec's security schemes to the configured credentials, once per scheme."""

    def __init__(self, settings: CredentialsSettings, security_schemes: Mapping[str, Any], *,
                 label: str = "upstream", static_headers: Iterable[str] = ()) -> None:
        self.settings = settings
        self.schemes = security_schemes
        self.label = label
        # Header names `upstream.headers` sets: a scheme sent in one of them is met already.
        self.static_headers = frozenset(h.lower() for h in static_headers)
        auth = settings.auth
        self.default_source: SourceSpec | None = (auth.token_exchange or auth.client_credentials) if auth else None
        self._bound: dict[str, Binding | str] = {}
        self._plans: dict[Any, SecurityPlan] = {}
        for name in settings.credentials:  # a credential for a scheme of the wrong type fails at startup
            if name in security_schemes:
                self.bind(name)

    def unused_credentials(self) -> list[str]:
        """Configured credential names the spec has no security scheme for (worth a warning)."""
        return [name for name in self.settings.credentials if name not in self.schemes]

    def sources(self) -> list[SourceSpec]:
        """Every token source that calls may need (the default one and the per-scheme ones)."""
        found: list[SourceSpec] = [] if self.default_source is None else [self.default_source]
        for credential in self.settings.credentials.values():
            if isinstance(credential, OAuthCredential):
                found.append(credential.token_exchange or credential.client_credentials or credential.token
                             or SecretStr(""))
        return [s for s in found if not isinstance(s, SecretStr)]

    def plan(self, security: Security) -> SecurityPlan:
        """The compiled plan for an operation's `security` (cached per distinct value)."""
        key = None if security is None else tuple(tuple(sorted(r.items())) for r in security)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(security)
        return plan

    def _compile(self, security: Security) -> SecurityPlan:
        if security is None:
            return SecurityPlan(default=self._default_binding())
        if not security:
            return SecurityPlan(anonymous=True)
        alternatives: list[Alternative] = []
        anonymous = False
        for requirement in security:
            if not requirement:
                anonymous = True
                continue
            bound = [self.bind(name) for name in requirement]
            alternatives.append(Alternative(
                schemes=tuple(requirement),
                bindings=tuple(b for b in bound if isinstance(b, Binding)),
                missing=tuple(b for b in bound if isinstance(b, str)),
            ))
        return SecurityPlan(alternatives=tuple(alternatives), anonymous=anonymous)

    def _default_binding(self) -> Binding | None:
        if self.default_source is None:
            return None
        return Binding("upstream.auth", _token_placement(self.default_source), self.default_source)

    def bind(self, name: str) -> Binding | str:
        """The scheme `name` bound to its credential, or a sentence saying why it cannot be."""
        if name not in self._bound:
            self._bound[name] = self._bind(name)
        return self._bound[name]

    def _bind(self, name: str) -> Binding | str:
        scheme, names = self._resolve(name)
        key = f"{self.label}.credentials.{name}"
        if scheme is None:
            return f"the spec defines no security scheme {name!r}"
        # A scheme that is a $ref to another takes either name's credential (its own first).
        credential = next((self.settings.credentials[n] for n in names if n in self.settings.credentials), None)
        kind = scheme.get("type")
        if kind == "apiKey":
            where, param = scheme.get("in"), scheme.get("name")
            if where not in ("header", "query", "cookie") or not isinstance(param, str) or not param:
                return f"security scheme {name!r} (apiKey) has no usable `in` and `name`"
            what = f"an API key for the {where} {'parameter ' if where == 'query' else ''}{param!r}"
            if credential is None and where == "header" and param.lower() in self.static_headers:
                return Binding(name, Placement("header", param), None)
            if credential is None:
                return f"no credentials for {name!r}: set {key} ({what})"
            if isinstance(credential, BasicCredential):
                raise ConfigError(f"{key}: security scheme {name!r} is an API key; give it as a string, not "
                                  "username/password", key=key)
            source = _source_of(credential)
            if where == "cookie" and isinstance(source, SecretStr) and \
                    _COOKIE_UNSAFE.intersection(source.get_secret_value()):
                raise ConfigError(f"{key}: the API key cannot be sent as a cookie (it contains a space, quote, "
                                  "comma, semicolon or backslash)", key=key)
            location: Literal["header", "query", "cookie"] = where
            return Binding(name, Placement(location, param), source, static_kind="api_key")
        if credential is None and kind in ("http", "oauth2", "openIdConnect") and self.default_source is None \
                and "authorization" in self.static_headers:
            return Binding(name, Placement("header", "Authorization"), None)
        if kind == "http":
            http = str(scheme.get("scheme", "")).lower()
            if http == "basic":
                if credential is None:
                    return f"no credentials for {name!r}: set {key} (username and password)"
                return Binding(name, Placement("header", "Authorization", "Basic "), _basic(credential, key),
                               static_kind="basic")
            if http in _INTERACTIVE_HTTP:
                return f"security scheme {name!r} (http {http}) needs a challenge-response, which is not supported"
            if http == "bearer" or not http:
                return self._token_binding(name, credential, key, "a bearer token")
            if credential is None:
                return f"no credentials for {name!r}: set {key} (the {scheme.get('scheme')} credentials)"
            if not isinstance(credential, SecretStr):
                raise ConfigError(f"{key}: security scheme {name!r} (http {scheme.get('scheme')}) takes a string",
                                  key=key)
            return Binding(name, Placement("header", "Authorization", f"{scheme.get('scheme')} "), credential)
        if kind in ("oauth2", "openIdConnect"):
            return self._token_binding(name, credential, key, "token_exchange, client_credentials or token")
        if kind == "mutualTLS":
            return f"security scheme {name!r} (mutualTLS client certificates) is not supported"
        return f"security scheme {name!r} has the unknown type {kind!r}"

    def _token_binding(self, name: str, credential: Any, key: str, what: str) -> Binding | str:
        if credential is None:
            if self.default_source is None:
                return f"no credentials for {name!r}: set {key} ({what}) or {self.label}.auth"
            source: SourceSpec = self.default_source
        elif isinstance(credential, BasicCredential):
            raise ConfigError(f"{key}: security scheme {name!r} takes a token, not username/password", key=key)
        else:
            source = _source_of(credential)
        return Binding(name, _token_placement(source), source)

    def _resolve(self, name: str) -> tuple[Mapping[str, Any] | None, list[str]]:
        """The scheme object named `name` (following local $refs) and the names passed through."""
        scheme = self.schemes.get(name)
        names = [name]
        for _ in range(8):  # a Reference Object to another scheme (OpenAPI 3 §4.8.27)
            ref = scheme.get("$ref") if isinstance(scheme, Mapping) else None
            if not isinstance(ref, str) or not ref.startswith("#/components/securitySchemes/"):
                break
            target = ref.removeprefix("#/components/securitySchemes/").replace("~1", "/").replace("~0", "~")
            names.append(target)
            scheme = self.schemes.get(target)
        return (scheme if isinstance(scheme, Mapping) and "$ref" not in scheme else None), names


def _source_of(credential: SecretStr | OAuthCredential) -> SourceSpec:
    if isinstance(credential, SecretStr):
        return credential
    source = credential.token_exchange or credential.client_credentials or credential.token
    assert source is not None  # OAuthCredential checks that one is given
    return source


def _token_placement(source: SourceSpec) -> Placement:
    header = "Authorization" if isinstance(source, SecretStr) else source.header
    return Placement("header", header, "Bearer " if header.lower() == "authorization" else "")


def _basic(credential: Any, key: str) -> SecretStr:
    if isinstance(credential, BasicCredential):
        user, password = credential.username, credential.password.get_secret_value()
    elif isinstance(credential, SecretStr) and ":" in credential.get_secret_value():
        user, _, password = credential.get_secret_value().partition(":")
    else:
        raise ConfigError(f"{key}: an http basic scheme takes {{username, password}} or 'user:password'", key=key)
    return SecretStr(base64.b64encode(f"{user}:{password}".encode()).decode())


def describe(plan: SecurityPlan) -> str:
    """Why no alternative of `plan` can be met, in one sentence."""
    parts = [f"{a.label}: {'; '.join(a.missing)}" for a in plan.alternatives if a.missing]
    return " | ".join(parts)


def unmet_requirements(operations: Iterable[Operation], compiler: SchemeCompiler) -> dict[str, list[Operation]]:
    """The operations no configured credential can be given for, grouped by why (`describe`)."""
    found: dict[str, list[Operation]] = {}
    for op in operations:
        plan = compiler.plan(op.security)
        if not plan.is_satisfiable:
            found.setdefault(describe(plan), []).append(op)
    return found


def missing_credentials(operations: Iterable[Operation], security_schemes: Mapping[str, Any],
                        settings: CredentialsSettings, *, label: str = "upstream",
                        static_headers: Iterable[str] = ()) -> list[Problem]:
    """Operations whose security requirement no configured credential meets (for `openapi-mcp check`).

    Also reports credentials named after a scheme the spec does not define. `static_headers` are
    the names `upstream.headers` sets (an API key or Authorization sent that way counts as met).

    Raises:
        ConfigError: a credential does not fit its scheme's type.
    """
    compiler = SchemeCompiler(settings, security_schemes, label=label, static_headers=static_headers)
    problems = [Problem(f"{label}.credentials.{name}", "the spec defines no security scheme of that name, so "
                        "it is never sent") for name in compiler.unused_credentials()]
    for op in operations:
        plan = compiler.plan(op.security)
        if not plan.is_satisfiable:
            problems.append(Problem(op.pointer, f"{op.method} {op.path} cannot be called: no upstream credentials "
                                    f"for its security requirement ({describe(plan)})"))
    return problems
