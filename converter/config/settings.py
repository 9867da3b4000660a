"""One validated `Settings` object, read once at startup from YAML, `${ENV}` and CLI flags.

Errors name the file and the key at fault. Secrets are kept as `SecretStr` and never printed.
"""

from __future__ import annotations

import ipaddress
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
from converter.models import SERVER_OWNED_HEADERS

# `read_only: true` excludes every method that is not safe (RFC 9110 §9.2.1): GET, HEAD, OPTIONS stay.
UNSAFE_METHODS: Final[tuple[str, ...]] = ("POST", "PUT", "PATCH", "DELETE", "TRACE")


MIN_SESSION_KEY_LENGTH: Final = 32  # characters of a `server.session_keys` entry (openssl rand -base64 32: 44)


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


class TelemetrySettings(ConfigModel):
    """Access log and metrics (issue: traffic visibility)."""

    access_log: str = "stderr"  # stderr | stdout | off | a file path (JSON lines)
    log_payloads: bool = False  # arguments and results in the access log, secrets redacted
    metrics: bool = True  # Prometheus text format at metrics_path
    metrics_path: str = "/metrics"
    traces: bool = False  # OpenTelemetry: OTLP/HTTP exporter set by the standard OTEL_* variables
    dashboard: bool = True  # the live traffic page at dashboard_path (its data guarded like MCP when auth: is on)
    dashboard_path: str = "/dashboard"
    # With auth: on, a token with all of these sees every caller's traffic on the dashboard; any
    # other token sees its own requests only. Empty: everyone sees only their own.
    dashboard_scopes: list[str] = Field(default_factory=list)

    @field_validator("access_log", mode="before")
    @classmethod
    def _access_log(cls, value: Any) -> Any:
        if value is False:  # `access_log: false` means off
            return "off"
        if isinstance(value, str) and value.strip().lower() in ("stderr", "stdout", "off"):
            return value.strip().lower()  # a keyword in any case (`Off` is not a file named Off)
        if value is True:
            raise ValueError("must be stderr, stdout, off or a file path, not true")
        return value


class ServerSettings(ConfigModel):
    """How this server listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    path: str = "/mcp"
    transport: Literal["http", "stdio"] = "http"
    json_response: bool = True
    stateless: bool = False
    # tools/call and tools/list answered in the POST's own task by the session's SDK runner, past the
    # SDK's stream plumbing (converter.server.direct_calls); false: every request the SDK's way.
    direct_calls: bool = True
    # Processes serving the one listening socket (converter.serve.serve_workers): with more than one,
    # session IDs are sealed (a key made at start when session_keys is empty), so any worker serves any session.
    workers: int = Field(default=1, ge=1, le=64)
    page_size: int | None = Field(default=None, ge=1)  # tools/list items per page (MCP cursors); None: all at once
    # Sessions (converter.server.sessions); the MCP SDK's own defaults (10,000 sessions idle for up
    # to 30 min) let one client fill the table. None for a per-caller cap: no cap.
    max_sessions: int = Field(default=1000, ge=1)
    max_sessions_per_principal: int | None = Field(default=50, ge=1)
    session_idle_timeout: float = Field(default=600, gt=0, le=86400)  # seconds without a request in flight
    # Sessions any replica can serve (converter.server.shared_sessions): session IDs sealed with the
    # first key, opened with any (rotation); every replica needs the same list. Empty: the SDK's
    # random IDs, a session lives in the process that opened it.
    session_keys: list[SecretStr] = Field(default_factory=list)
    session_lifetime: float = Field(default=86400, gt=0, le=30 * 86400)  # seconds a sealed session ID is valid
    # Connections (converter.server.connections): every phase of reading a request is bounded.
    max_connections: int = Field(default=1000, ge=1)  # lowered at start to fit the open-file limit
    max_connections_per_client: int | None = Field(default=256, ge=1)  # per client address (IPv6: per /64)
    header_timeout: float = Field(default=10, gt=0, le=3600)  # seconds for a whole request head
    body_timeout: float = Field(default=30, gt=0, le=3600)  # seconds for a whole request body
    keep_alive_timeout: float = Field(default=5, gt=0, le=3600)  # seconds an idle connection is kept
    send_timeout: float = Field(default=60, gt=0, le=3600)  # seconds a client may leave its response unread
    max_header_bytes: int = Field(default=65536, ge=1024)  # request line plus headers
    # The URL clients use when a proxy is in front (TLS, another host, port or path): auth.resource
    # is checked against it instead of the listener (converter.config.checks).
    public_url: str | None = None
    # DNS-rebinding check (the MCP transport and the dashboard's data): Host values (`name`,
    # `name:port`, `name:*`) and Origin values (`https://name`, `http://name:*`) accepted besides
    # the loopback ones; set on any listener, it turns the check on there too.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDR networks):
    # the client address then is the forwarded one (per-caller caps, rate limits, logs). None:
    # uvicorn's default, $FORWARDED_ALLOW_IPS or loopback only; [] believes nobody.
    trusted_proxies: list[str] | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8, ::1); "
                                 "'*' is not accepted: every client could then choose its own address") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or "/" in host or any(c.isspace() for c in host) or host.startswith("*"):
                raise ValueError(f"{host!r} is not a Host value: give name, name:port or name:* (no scheme, no path)")
        return [host.lower() for host in value]

    @field_validator("allowed_origins")
    @classmethod
    def _allowed_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not origin.startswith(("http://", "https://")) or origin.rstrip("/").count("/") != 2:
                raise ValueError(f"{origin!r} is not an Origin: give scheme://name[:port] (no path)")
        return [origin.rstrip("/") for origin in value]

    @field_validator("session_keys")
    @classmethod
    def _session_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            if len(key.get_secret_value()) < MIN_SESSION_KEY_LENGTH:
                raise ValueError(f"key {index} is too short: session keys need at least {MIN_SESSION_KEY_LENGTH} "
                                 "characters (e.g. `openssl rand -base64 32`)")
        return value


class RedisSettings(ConfigModel):
    """Shared state across replicas (`redis:`): rate-limit counters, token verdicts, ended sessions,
    list-change announcements, cancellations of calls running on another replica."""

    url: SecretStr  # redis://[user:password@]host:port/db, rediss:// for TLS; may hold a password
    key_prefix: str = Field(default="openapi-mcp:", max_length=100)
    timeout: float = Field(default=0.5, gt=0, le=30)  # seconds per Redis round trip; then local fallback

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class ReloadSettings(ConfigModel):
    """Live reload (converter.catalog.reload): SIGHUP always reloads; `watch` adds the triggers below."""

    # Watch the config file, the spec files and the files they reference ($ref), and poll URL specs.
    watch: bool = False
    interval: float = Field(default=300, ge=1, le=86400)  # seconds between conditional GETs of a URL spec


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
