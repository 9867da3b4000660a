"""The config of the upstream API's own credentials: `upstream.auth` and `upstream.credentials`.

The models live here, with the other settings; converter.credentials uses them.

```yaml
upstream:
  url: https://api.example.com
  auth:                       # the token every call carries (one of the two)
    token_exchange: {token_endpoint: URL, client_id: gw, client_secret: "${S}", audience: api, scopes: [read]}
    client_credentials: {token_endpoint: URL, client_id: gw, client_secret: "${S}", scopes: [read]}
  credentials:                # by the names of the spec's securitySchemes
    api_key: "${KEY}"                                  # apiKey, http bearer (a static token)
    basic: {username: me, password: "${PASSWORD}"}     # http basic
    oauth: {client_credentials: {...}}                 # oauth2 / openIdConnect / http bearer
```

Leaf names follow Kong's ai-mcp-oauth2 `token_exchange` (token_endpoint, client_auth, client_id,
client_secret, subject_token_type, requested_token_type, scopes, cache.ttl); Kong's nested
`request:` block is accepted too. Secrets are `SecretStr`: never in repr, str or logs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AliasChoices,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from converter.config.base import HEADER_NAME, ConfigModel

ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPES: Final = {
    "access_token": ACCESS_TOKEN_TYPE,
    "jwt": "urn:ietf:params:oauth:token-type:jwt",
    "id_token": "urn:ietf:params:oauth:token-type:id_token",
    "refresh_token": "urn:ietf:params:oauth:token-type:refresh_token",
}
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "cookie", "transfer-encoding", "connection"})

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


def _token_type(value: str) -> str:
    """`access_token` is short for `urn:ietf:params:oauth:token-type:access_token` (RFC 8693 §3)."""
    value = TOKEN_TYPES.get(value, value)
    if not value.startswith("urn:"):
        raise ValueError(f"{value!r} is not a token type; use a URN or one of {', '.join(TOKEN_TYPES)}")
    return value


def _as_list(value: Any) -> Any:
    """A single string where a list is expected (`audience: api`, `scopes: "read write"`)."""
    if isinstance(value, str):
        return value.split()
    return value


def _check_header(value: str) -> str:
    if not HEADER_NAME.match(value) or value.lower() in _FORBIDDEN_HEADERS:
        raise ValueError(f"{value!r} cannot carry a credential (not a header name, or a reserved header)")
    return value


class TokenClientSettings(ConfigModel):
    """How this server authenticates at a token endpoint, and what it asks for."""

    token_endpoint: str = Field(validation_alias=AliasChoices("token_endpoint", "token_url"))
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_auth: ClientAuthMethod = "client_secret_basic"
    client_private_key: SecretStr | None = None  # PEM or JWK (JSON), for private_key_jwt
    client_key_id: str | None = None  # the `kid` of client_private_key, when the AS needs it
    client_assertion_alg: str | None = None  # default: RS256 for RSA keys, ES256/ES384/ES512 for EC, EdDSA
    scopes: list[str] = Field(default_factory=list)
    audience: list[str] = Field(default_factory=list)  # RFC 8693 `audience`: logical names
    resource: list[str] = Field(default_factory=list)  # RFC 8707 / 8693 `resource`: absolute URIs
    timeout: float = Field(default=5.0, gt=0, le=120)  # seconds for one whole token request
    header: str = "Authorization"  # where the token goes: `Authorization: Bearer <t>`, else the raw token

    @field_validator("token_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, not {value!r}")
        return value

    @field_validator("scopes", "audience", "resource", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return _check_header(value)

    @model_validator(mode="after")
    def _auth(self) -> TokenClientSettings:
        if self.client_auth == "private_key_jwt":
            if self.client_private_key is None:
                raise ValueError("client_private_key is needed for client_auth private_key_jwt")
        elif self.client_secret is None:
            raise ValueError(f"client_secret is needed for client_auth {self.client_auth}")
        return self


class ClientCredentialsSettings(TokenClientSettings):
    """The gateway's own token (RFC 6749 §4.4), shared by every caller."""

    refresh_leeway: float = Field(default=30.0, ge=0)  # fetch a new token this long before expiry
    ttl: float = Field(default=300.0, gt=0)  # lifetime assumed when the answer has no expires_in


class ExchangeCacheSettings(ConfigModel):
    """Kong `token_exchange.cache`."""

    enabled: bool = True
    ttl: float = Field(default=300.0, gt=0)  # lifetime assumed when the answer has no expires_in
    max_entries: int = Field(default=10_000, ge=1)
    leeway: float = Field(default=10.0, ge=0)  # stop reusing a token this long before it expires


class TokenExchangeSettings(TokenClientSettings):
    """RFC 8693: the caller's (already validated) token becomes one meant for the upstream."""

    subject_token_type: str = ACCESS_TOKEN_TYPE
    requested_token_type: str = ACCESS_TOKEN_TYPE
    # `client_credentials`: send the gateway's own token as actor_token (RFC 8693 §2.1 delegation);
    # it is fetched with `actor` if given, else with this exchange's own client and endpoint.
    actor_token_source: Literal["none", "client_credentials"] = "none"
    actor_token_type: str = ACCESS_TOKEN_TYPE
    actor: ClientCredentialsSettings | None = None
    cache: ExchangeCacheSettings = Field(default_factory=ExchangeCacheSettings)

    @model_validator(mode="before")
    @classmethod
    def _kong_request_block(cls, data: Any) -> Any:
        # Kong nests the request parameters under `request:`; accept that layout as it is.
        if isinstance(data, dict) and isinstance(data.get("request"), dict):
            data = {**data}
            request = data.pop("request")
            clash = sorted(set(request) & set(data))
            if clash:
                raise ValueError(f"{clash[0]!r} is given both in request: and beside it")
            data.update(request)
        return data

    @field_validator("subject_token_type", "requested_token_type", "actor_token_type")
    @classmethod
    def _types(cls, value: str) -> str:
        return _token_type(value)

    def actor_settings(self) -> ClientCredentialsSettings | None:
        """Where the actor token comes from, or None without one."""
        if self.actor_token_source == "none":
            return None
        if self.actor is not None:
            return self.actor
        own = self.model_dump(include=set(TokenClientSettings.model_fields))
        # The actor token is the gateway's own: no audience/resource/scopes of the exchange.
        own.update(scopes=[], audience=[], resource=[])
        return ClientCredentialsSettings.model_validate(own)


class UpstreamAuthSettings(ConfigModel):
    """`upstream.auth`: the token every call to this upstream carries (exactly one kind)."""

    token_exchange: TokenExchangeSettings | None = None
    client_credentials: ClientCredentialsSettings | None = None

    @model_validator(mode="after")
    def _one(self) -> UpstreamAuthSettings:
        if (self.token_exchange is None) == (self.client_credentials is None):
            raise ValueError("give exactly one of token_exchange and client_credentials")
        return self


class BasicCredential(ConfigModel):
    """For an `http` `basic` scheme."""

    username: str
    password: SecretStr

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a basic-auth username cannot contain ':' (RFC 7617 §2)")
        return value


class OAuthCredential(ConfigModel):
    """For an `oauth2`, `openIdConnect` or `http` `bearer` scheme: where its token comes from."""

    token_exchange: TokenExchangeSettings | None = None
    client_credentials: ClientCredentialsSettings | None = None
    token: SecretStr | None = None  # a static token

    @model_validator(mode="after")
    def _one(self) -> OAuthCredential:
        given = [self.token_exchange, self.client_credentials, self.token]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of token_exchange, client_credentials and token")
        return self


def _credential_kind(value: Any) -> str:
    if isinstance(value, BasicCredential) or (isinstance(value, dict) and "username" in value):
        return "basic"
    if isinstance(value, (OAuthCredential, dict)):
        return "oauth"
    return "secret"  # a string; anything else is refused as "not a valid string"


SchemeCredential = Annotated[
    Annotated[SecretStr, Tag("secret")] | Annotated[BasicCredential, Tag("basic")]
    | Annotated[OAuthCredential, Tag("oauth")],
    Discriminator(_credential_kind),
]
"""A string (API key, static bearer token, or `user:password` for basic), {username, password},
or {token_exchange | client_credentials | token}."""


def check_scheme_credentials(value: dict[str, Any]) -> dict[str, Any]:
    """A string credential goes into a header, query or cookie as it is: no CR, LF or NUL."""
    for name, credential in value.items():
        if isinstance(credential, SecretStr) and re.search(r"[\r\n\x00]", credential.get_secret_value()):
            raise ValueError(f"the credential for {name!r} contains CR, LF or NUL")
    return value


def auth_header(auth: UpstreamAuthSettings | None) -> str | None:
    """The header `upstream.auth`'s token goes in, or None without `upstream.auth`."""
    if auth is None:
        return None
    source = auth.token_exchange or auth.client_credentials
    return None if source is None else source.header


class CredentialsSettings(ConfigModel):
    """`upstream.auth` and `upstream.credentials` of one OpenAPI source, validated together."""

    auth: UpstreamAuthSettings | None = None
    credentials: dict[str, SchemeCredential] = Field(default_factory=dict)

    @field_validator("credentials")
    @classmethod
    def _no_control_characters(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_scheme_credentials(value)
