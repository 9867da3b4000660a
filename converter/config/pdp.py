"""The `pdp:` config block: where the AuthZEN policy decision point is and how to ask it.

Keys (PRODUCT.md, issue 14):

```yaml
pdp:
  url: https://am.example.com/demo/access/v1/evaluation   # the single-evaluation endpoint
  batch_url: ...                   # default: url with /evaluation -> /evaluations
  batch: true                      # false: never use the batch endpoint (one request per item)
  client_id: mcp-server
  client_secret: "${PDP_SECRET}"
  client_auth_method: client_secret_basic   # | client_secret_post | bearer | none
  timeout: 2                       # seconds for the whole answer
  preset: gravitee-am              # | coaz-mcp
  action: can_access               # default per preset (coaz-mcp: the MCP method)
  subject_type: user               # default per preset (coaz-mcp: identity)
  subject_claim: sub               # dotted claim path; falls back to client_id
  cache_ttl: 60                    # seconds a decision is reused; 0: no cache
  cache_size: 10000                # decisions kept at most (least recently used dropped)
  properties:
    claims: {roles: realm_access.roles}    # subject.properties.roles <- the claim
    arguments: [city]                      # opt-in: resource.properties.city <- the tool argument ("*": all)
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from converter.config.base import ConfigModel, http_url

Preset = Literal["gravitee-am", "coaz-mcp"]
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "bearer", "none"]


class PdpProperties(ConfigModel):
    """What goes into `subject.properties` (from claims) and `resource.properties` (from arguments)."""

    claims: dict[str, str] = Field(default_factory=dict)  # property name -> dotted claim path
    # Tool arguments are the caller's input: sent only when named here (or "*" for every argument).
    arguments: list[str] | Literal["*"] = Field(default_factory=list)


class PdpSettings(ConfigModel):
    """An AuthZEN 1.0 evaluation endpoint (Gravitee AM, OpenFGA, Cerbos, Keycloak, any PDP)."""

    url: str
    batch_url: str | None = None
    batch: bool = True
    client_auth_method: ClientAuthMethod = "client_secret_basic"  # AM expects HTTP Basic
    client_id: str | None = Field(default=None, validate_default=True)
    client_secret: SecretStr | None = Field(default=None, validate_default=True)  # for `bearer`: the token itself
    timeout: float = Field(default=2.0, gt=0, le=60)
    preset: Preset = "gravitee-am"
    action: str | None = Field(default=None, min_length=1)
    subject_type: str | None = Field(default=None, min_length=1)
    subject_claim: str = Field(default="sub", min_length=1)
    cache_ttl: float = Field(default=60, ge=0)
    cache_size: int = Field(default=10_000, ge=1, le=10_000_000)
    max_batch: int = Field(default=200, ge=1, le=10_000)  # items per batch request; longer lists are split
    properties: PdpProperties = Field(default_factory=PdpProperties)

    @field_validator("url", "batch_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("client_auth_method")
        if not value and method in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"is needed for client_auth_method {method}")
        return value

    @field_validator("client_secret")
    @classmethod
    def _client_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        method = info.data.get("client_auth_method")
        if value is None and method in ("client_secret_basic", "client_secret_post", "bearer"):
            what = " (the token to send)" if method == "bearer" else ""
            raise ValueError(f"is needed for client_auth_method {method}{what}")
        return value

    @property
    def evaluations_url(self) -> str:
        """The batch endpoint (AuthZEN 1.0 §7): given, or the evaluation URL with an `s`."""
        if self.batch_url is not None:
            return self.batch_url
        base, _, query = self.url.partition("?")
        if base.endswith("/evaluation"):
            base += "s"
        elif not base.endswith("/evaluations"):
            base = base.rstrip("/") + "/evaluations"
        return base + ("?" + query if query else "")

    @property
    def action_name(self) -> str | None:
        """The fixed action name, or None for "the MCP method" (coaz-mcp)."""
        if self.action is not None:
            return self.action
        return "can_access" if self.preset == "gravitee-am" else None

    @property
    def subject_type_name(self) -> str:
        if self.subject_type is not None:
            return self.subject_type
        return "user" if self.preset == "gravitee-am" else "identity"
