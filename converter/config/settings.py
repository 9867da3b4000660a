"""One validated `Settings` object, read once at startup from YAML, `${ENV}` and CLI flags.

Errors name the file and the key at fault. Secrets are kept as `SecretStr` and never printed.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from converter.config.auth import AuthSettings
from converter.config.base import HEADER_NAME, ConfigModel, http_url
from converter.config.credentials import (
    CredentialsSettings,
    OAuthCredential,
    SchemeCredential,
    UpstreamAuthSettings,
    auth_header,
    check_scheme_credentials,
)
from converter.config.limits import LimitRule
from converter.config.pdp import PdpSettings
from converter.config.responses import ResponseSettings
from converter.config.server import RedisSettings, ReloadSettings, ServerSettings, TelemetrySettings
from converter.models import SERVER_OWNED_HEADERS

# `read_only: true` excludes every method that is not safe (RFC 9110 §9.2.1): GET, HEAD, OPTIONS stay.
UNSAFE_METHODS: Final[tuple[str, ...]] = ("POST", "PUT", "PATCH", "DELETE", "TRACE")


class UpstreamSettings(ConfigModel):
    """Where calls go and how (PRODUCT.md `upstream:`)."""

    url: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_response_bytes: int = Field(default=1_000_000, gt=0)
    # The upstream API's own credentials (converter.credentials): the token every call carries
    # (RFC 8693 exchange of the caller's token, or client credentials), and the credentials of
    # the spec's securitySchemes by name. The caller's token is never sent as it is.
    auth: UpstreamAuthSettings | None = None
    credentials: dict[str, SchemeCredential] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return _check_headers(value)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_scheme_credentials(value)

    @model_validator(mode="after")
    def _one_source_per_header(self) -> UpstreamSettings:
        header = auth_header(self.auth)
        if header is not None and header.lower() in {name.lower() for name in self.headers}:
            # Which one would win is not something a reader of the config should have to know.
            raise ValueError(f"upstream.headers and upstream.auth both set the {header} header; remove one")
        return self

    @property
    def exchanges_caller_token(self) -> str | None:
        """The key of a token exchange configured here ("auth.token_exchange"), or None."""
        if self.auth is not None and self.auth.token_exchange is not None:
            return "auth.token_exchange"
        for name, credential in self.credentials.items():
            if isinstance(credential, OAuthCredential) and credential.token_exchange is not None:
                return f"credentials.{name}.token_exchange"
        return None

    @property
    def has_credentials(self) -> bool:
        """True when `auth` or `credentials` is given (the credentials layer is on)."""
        return self.auth is not None or bool(self.credentials)

    def credentials_settings(self) -> CredentialsSettings:
        return CredentialsSettings(auth=self.auth, credentials=self.credentials)


def _check_headers(value: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for name, text in value.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if re.search(r"[\r\n\x00]", text.get_secret_value()):
            raise ValueError(f"the value of {name!r} contains CR, LF or NUL")
        if name.lower() in SERVER_OWNED_HEADERS - {"accept-encoding"}:  # `identity` may be asked for
            raise ValueError(f"the {name} header cannot be set (HTTP framing: the server sets it)")
    return value


class McpUpstreamSettings(ConfigModel):
    """An existing MCP server fronted over streamable HTTP (PRODUCT.md `mcp_upstream:`)."""

    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # the upstream's credentials (never the client's)
    timeout: float = Field(default=60.0, gt=0)  # seconds, per request to the upstream
    # Requests the upstream may make of the client during a tool call, passed on to the calling
    # client (converter.passthrough.request_relay); declared to the upstream only when listed here.
    relay: list[Literal["sampling", "elicitation", "roots"]] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return _check_headers(value)


def _url_to_mapping(value: Any) -> Any:
    """`mcp_upstream: URL` is short for `mcp_upstream: {url: URL}`."""
    return {"url": value} if isinstance(value, str) else value


class SelectionSettings(ConfigModel):
    """include:/exclude: filters."""

    tags: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class InlineTool(ConfigModel):
    """One Kong `ai-mcp-proxy`-style tool definition."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    description: str | None = None
    method: Literal[
        "GET",
        "PUT",
        "POST",
        "DELETE",
        "PATCH",
        "HEAD",
        "OPTIONS",
        "get",
        "put",
        "post",
        "delete",
        "patch",
        "head",
        "options",
    ]
    path: str
    parameters: list[dict[str, Any]] = Field(default_factory=list)
    request_body: dict[str, Any] | None = Field(default=None, alias="requestBody")
    responses: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', not {value!r}")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameter_flags(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_flags(p, _PARAMETER_FLAGS, f"parameters[{i}]") for i, p in enumerate(value)]

    @field_validator("request_body")
    @classmethod
    def _body_flags(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _flags(value, ("required",), "requestBody")


_PARAMETER_FLAGS: Final = ("required", "deprecated", "allowEmptyValue", "explode", "allowReserved")
_FLAG_WORDS: Final = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _flags(node: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """The OpenAPI booleans of an inline tool as booleans: the config is YAML 1.2, where
    `required: yes` is text (converter.config.file); anything else but a boolean is refused."""
    fixed = dict(node)
    for key in keys:
        value = fixed.get(key)
        if isinstance(value, str) and value.lower() in _FLAG_WORDS:
            fixed[key] = _FLAG_WORDS[value.lower()]
        elif key in fixed and not isinstance(value, bool):
            raise ValueError(f"{where}.{key} must be true or false, not {value!r}")
    return fixed


class SourceSettings(ConfigModel):
    """One entry of `sources:`: an OpenAPI spec (or inline tools) with its upstream, or an MCP server."""

    spec: str | None = None
    tools: list[InlineTool] = Field(default_factory=list)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    include: SelectionSettings = Field(default_factory=SelectionSettings)
    exclude: SelectionSettings = Field(default_factory=SelectionSettings)
    mcp_upstream: McpUpstreamSettings | None = None
    prefix: str = Field(default="", max_length=40, pattern=r"^[A-Za-z0-9_-]*$")  # tool and prompt names

    @field_validator("mcp_upstream", mode="before")
    @classmethod
    def _mcp_upstream(cls, value: Any) -> Any:
        return _url_to_mapping(value)


class Settings(ConfigModel):
    """Everything the server needs, validated."""

    spec: str | None = None
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    include: SelectionSettings = Field(default_factory=SelectionSettings)
    exclude: SelectionSettings = Field(default_factory=SelectionSettings)
    tools: list[InlineTool] = Field(default_factory=list)
    server: ServerSettings = Field(default_factory=ServerSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    strict: bool = False
    auth: AuthSettings | None = None
    acl: dict[str, Any] | None = None
    mcp_upstream: McpUpstreamSettings | None = None
    sources: list[SourceSettings] = Field(default_factory=list)  # aggregation: more specs and MCP servers
    read_only: bool = False  # only GET/HEAD/OPTIONS operations become tools (added to exclude.methods)
    mode: Literal["tools", "dynamic"] = "tools"  # dynamic: search/describe/call meta-tools (converter.catalog.dynamic)
    cache: bool = True  # keep compiled tools on disk (converter.tools.cache); --no-cache turns it off
    responses: ResponseSettings = Field(default_factory=ResponseSettings)  # converter.config.responses
    pdp: PdpSettings | None = None  # AuthZEN decision service (converter.policy.pdp); needs auth:
    limits: list[LimitRule] = Field(default_factory=list)  # rate limits and quotas (converter.policy.limits)
    redis: RedisSettings | None = None  # shared counters across replicas
    reload: ReloadSettings = Field(default_factory=ReloadSettings)  # live reload triggers
    config_file: str | None = Field(default=None, exclude=True)

    @field_validator("mcp_upstream", mode="before")
    @classmethod
    def _mcp_upstream(cls, value: Any) -> Any:
        return _url_to_mapping(value)

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, data: Any) -> Any:
        # Through the exclude machinery, so it composes with include: (include) minus (unsafe methods).
        if not isinstance(data, dict) or not _is_true(data.get("read_only")):
            return data
        data = _exclude_unsafe(data)
        if isinstance(data.get("sources"), list):
            data["sources"] = [_exclude_unsafe(entry) for entry in data["sources"]]
        return data


def _exclude_unsafe(block: Any) -> Any:
    """`block` (the top level or a `sources:` entry) with UNSAFE_METHODS added to its exclude.methods."""
    if isinstance(block, SourceSettings):
        block = block.model_dump()
    if not isinstance(block, dict):
        return block  # validation names the bad value
    exclude = block.get("exclude") or {}
    if isinstance(exclude, SelectionSettings):
        exclude = exclude.model_dump()
    methods = (exclude.get("methods") or []) if isinstance(exclude, dict) else None
    if not isinstance(methods, list):
        return block
    have = {str(m).upper() for m in methods}
    return {**block, "exclude": {**exclude, "methods": [*methods, *(m for m in UNSAFE_METHODS if m not in have)]}}


def _is_true(value: Any) -> bool:
    """Would pydantic read `value` as True? (`${READ_ONLY}` arrives as the string 'true'.)"""
    try:
        return TypeAdapter(bool).validate_python(value) is True
    except ValidationError:
        return False  # validation reports the bad value with its key
