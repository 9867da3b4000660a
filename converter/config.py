"""One validated `Settings` object, read once at startup from YAML, `${ENV}` and CLI flags.

Errors name the file and the key at fault. Secrets are kept as `SecretStr` and never printed.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from converter.config_file import read_config_file
from converter.errors import ConfigError
from converter.shaping import ResponseSettings

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# `read_only: true` excludes every method that is not safe (RFC 9110 §9.2.1): GET, HEAD, OPTIONS stay.
UNSAFE_METHODS: Final[tuple[str, ...]] = ("POST", "PUT", "PATCH", "DELETE", "TRACE")


_Url = TypeVar("_Url", str, None, "str | None")


def _http_url(value: _Url) -> _Url:
    """Shared check for every URL setting: None passes, anything else must be http(s)."""
    if value is not None and not str(value).startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, not {value!r}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Model):
    """Where calls go and how (PRODUCT.md `upstream:`)."""

    url: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_response_bytes: int = Field(default=1_000_000, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return _check_headers(value)


def _check_headers(value: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if re.search(r"[\r\n\x00]", text.get_secret_value()):
            raise ValueError(f"the value of {name!r} contains CR, LF or NUL")
        if name.lower() == "host":
            raise ValueError("the Host header cannot be set")
    return value


class McpUpstreamSettings(_Model):
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
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return _check_headers(value)


def _url_to_mapping(value: Any) -> Any:
    """`mcp_upstream: URL` is short for `mcp_upstream: {url: URL}`."""
    return {"url": value} if isinstance(value, str) else value


class SelectionSettings(_Model):
    """include:/exclude: filters."""

    tags: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class InlineTool(_Model):
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


class ClaimHeader(_Model):
    """Send a claim of the caller's token upstream as a header (Kong `claim_to_header`)."""

    claim: str  # dotted path into the claims: `sub`, `realm_access.roles`
    header: str

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value) or value.lower() in ("authorization", "host", "content-length", "cookie"):
            raise ValueError(f"{value!r} cannot be used as a claim header")
        return value


class AuthSettings(_Model):
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

    @field_validator("resource", "introspection_endpoint", "jwks_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _http_url(value)

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


class TelemetrySettings(_Model):
    """Access log and metrics (issue: traffic visibility)."""

    access_log: str = "stderr"  # stderr | stdout | off | a file path (JSON lines)
    log_payloads: bool = False  # arguments and results in the access log, secrets redacted
    metrics: bool = True  # Prometheus text format at metrics_path
    metrics_path: str = "/metrics"
    traces: bool = False  # OpenTelemetry: OTLP/HTTP exporter set by the standard OTEL_* variables
    dashboard: bool = True  # the live traffic page at dashboard_path (its data guarded like MCP when auth: is on)
    dashboard_path: str = "/dashboard"


class ServerSettings(_Model):
    """How this server listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    path: str = "/mcp"
    transport: Literal["http", "stdio"] = "http"
    json_response: bool = True
    stateless: bool = False
    page_size: int | None = Field(default=None, ge=1)  # tools/list items per page (MCP cursors); None: all at once


class SourceSettings(_Model):
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


class Settings(_Model):
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
    mode: Literal["tools", "dynamic"] = "tools"  # dynamic: search/describe/call meta-tools (converter.dynamic)
    cache: bool = True  # keep compiled tools on disk (converter.tools.cache); --no-cache turns it off
    responses: ResponseSettings = Field(default_factory=ResponseSettings)  # converter.shaping
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


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Read the YAML config (if any), substitute `${ENV}`, apply CLI overrides and validate.

    Args:
        config_file: path of the YAML file, or None.
        overrides: CLI values; `None` means "not given". Keys: spec, upstream_url, host, port,
            path, transport, page_size, strict, read_only, mode, no_cache.

    Raises:
        ConfigError: the file cannot be read or a key is wrong; the message names both.
    """
    raw: dict[str, Any] = {}
    source = config_file or "<command line>"
    if config_file is not None:
        raw = read_config_file(config_file)
    raw = _apply_overrides(raw, overrides)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {key}: {message}{more}", key=key, source=source) from exc
    settings = settings.model_copy(update={"config_file": config_file})
    _check_supported(settings, source)
    return settings


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    if overrides.get("spec") is not None:
        raw["spec"] = overrides["spec"]
    if overrides.get("upstream_url") is not None:
        raw["upstream"] = {**(raw.get("upstream") or {}), "url": overrides["upstream_url"]}
    server = dict(raw.get("server") or {})
    for key in ("host", "port", "path", "transport", "page_size"):
        if overrides.get(key) is not None:
            server[key] = overrides[key]
    if server:
        raw["server"] = server
    if overrides.get("strict"):
        raw["strict"] = True
    if overrides.get("read_only"):
        raw["read_only"] = True
    if overrides.get("mode") is not None:
        raw["mode"] = overrides["mode"]
    if overrides.get("no_cache"):
        raw["cache"] = False
    return raw


def _check_supported(settings: Settings, source: str) -> None:
    # Fail closed: a config that asks for protection we do not provide must not start unprotected.
    auth = settings.auth
    if auth is not None:
        if (auth.introspection_endpoint is None) == (auth.jwks_uri is None):
            raise ConfigError(f"{source}: auth: give exactly one of introspection_endpoint and jwks_uri",
                              key="auth", source=source)
        if auth.introspection_endpoint is not None:
            if not auth.client_id:
                raise ConfigError(f"{source}: auth.client_id: is needed to call the introspection endpoint",
                                  key="auth.client_id", source=source)
            secret = auth.client_private_key if auth.client_auth_method == "private_key_jwt" else auth.client_secret
            if secret is None:
                key = "client_private_key" if auth.client_auth_method == "private_key_jwt" else "client_secret"
                raise ConfigError(f"{source}: auth.{key}: is needed for {auth.client_auth_method}",
                                  key=f"auth.{key}", source=source)
        if settings.server.transport == "stdio":
            raise ConfigError(f"{source}: auth: applies to the HTTP transport only; stdio carries no bearer "
                              "tokens (remove auth: or serve over http)", key="auth", source=source)
    for i, entry in enumerate(settings.sources):
        kinds = [key for key, given in (("spec", entry.spec is not None), ("tools", bool(entry.tools)),
                                        ("mcp_upstream", entry.mcp_upstream is not None)) if given]
        if not kinds or (entry.mcp_upstream is not None and len(kinds) > 1):
            raise ConfigError(f"{source}: sources[{i}]: give either spec: (and/or tools:) or mcp_upstream:, "
                              f"not {' and '.join(kinds) or 'neither'}", key=f"sources[{i}]", source=source)
    proxied = settings.mcp_upstream is not None or any(e.mcp_upstream is not None for e in settings.sources)
    if settings.read_only and proxied:  # an MCP server's tools have no HTTP method to tell safe ones by
        raise ConfigError(f"{source}: read_only: applies to OpenAPI operations only; an MCP upstream's tools "
                          "cannot be limited to safe methods (remove read_only or the MCP upstream)",
                          key="read_only", source=source)
    if settings.mode == "dynamic" and proxied:  # converter.dynamic searches operations; proxied tools have none
        raise ConfigError(f"{source}: mode: dynamic serves OpenAPI operations only; an MCP upstream needs "
                          "mode: tools", key="mode", source=source)
    if settings.spec is None and not settings.tools and settings.mcp_upstream is None and not settings.sources:
        raise ConfigError(f"{source}: nothing to serve: give a SPEC (path or URL), `spec:`, `tools:`, "
                          "`mcp_upstream:` or `sources:`", key="spec", source=source)
    if not settings.server.path.startswith("/"):
        raise ConfigError(f"{source}: server.path: must start with '/'", key="server.path", source=source)
