"""The `auth:` block: the OAuth 2 resource server (key names follow Kong's ai-mcp-oauth2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from converter.config.base import HEADER_NAME, ConfigModel, http_url
from converter.models import SERVER_OWNED_HEADERS


class ClaimHeader(ConfigModel):
    """Send a claim of the caller's token upstream as a header (Kong `claim_to_header`)."""

    claim: str  # dotted path into the claims: `sub`, `realm_access.roles`
    header: str

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not HEADER_NAME.match(value) or value.lower() in SERVER_OWNED_HEADERS | {"authorization", "cookie"}:
            raise ValueError(f"{value!r} cannot be used as a claim header")
        return value


class AuthSettings(ConfigModel):
    """OAuth 2 resource server (PRODUCT.md `auth:`; key names follow Kong's ai-mcp-oauth2)."""

    resource: str
    authorization_servers: list[str] = Field(min_length=1)
    introspection_endpoint: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = "client_secret_basic"
    client_private_key: SecretStr | None = None  # PEM, for private_key_jwt
    client_key_id: str | None = None
    jwks_uri: str | None = None
    issuer: str | None = None  # expected `iss`; defaults to the first authorization server
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                                           "ES256", "ES384", "ES512", "EdDSA"])
    leeway: int = Field(default=30, ge=0, le=600)
    required_scopes: list[str] = Field(default_factory=list)
    scopes_supported: list[str] | None = None
    tool_scopes: dict[str, list[str]] = Field(default_factory=dict)  # per-tool override of the spec's scopes
    scope_implies: dict[str, list[str]] = Field(default_factory=dict)  # e.g. {"mcp:admin": ["mcp:tools"]}
    claim_to_header: list[ClaimHeader] = Field(default_factory=list)
    insecure_relaxed_audience_validation: bool = False
    cache_ttl: float = Field(default=300, ge=0)  # seconds an introspection result is reused (never past exp)
    inactive_cache_ttl: float = Field(default=10, ge=0)
    jwks_refetch_interval: float = Field(default=10, ge=0)  # at most one refetch per interval on unknown kid
    timeout: float = Field(default=5, gt=0)  # seconds, per call to the authorization server
    resource_name: str | None = None
    resource_documentation: str | None = None

    @field_validator("resource", "introspection_endpoint", "jwks_uri", "resource_documentation")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        unsafe = [alg for alg in value if alg.lower() == "none" or alg.upper().startswith("HS")]
        if unsafe:
            raise ValueError(f"{unsafe[0]!r} is not allowed: only asymmetric signatures can be checked with a JWKS")
        return value

    @property
    def expected_issuer(self) -> str:
        return self.issuer or self.authorization_servers[0]
