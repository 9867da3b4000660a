"""The blocks that say how the process serves, whatever it serves: `server:` (the listener,
sessions, connections), `telemetry:`, `redis:` (state shared by replicas) and `reload:`."""

from __future__ import annotations

import ipaddress
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, field_validator

from converter.config.base import ConfigModel, http_url

MIN_SESSION_KEY_LENGTH: Final = 32  # characters of a `server.session_keys` entry (openssl rand -base64 32: 44)


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
