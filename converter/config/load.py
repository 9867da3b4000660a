"""`load_settings`: the YAML file (if any), `${ENV}`, the command-line flags, validated once.

Errors name the file and the key at fault."""

from __future__ import annotations

from typing import Any

from pydantic import (
    ValidationError,
)

from converter.config.file import read_config_file
from converter.config.settings import Settings
from converter.errors import ConfigError


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
    upstreams = [("upstream", settings.upstream)] if settings.spec is not None or settings.tools else []
    upstreams += [(f"sources[{i}].upstream", entry.upstream) for i, entry in enumerate(settings.sources)
                  if entry.mcp_upstream is None]
    for where, upstream in upstreams:
        exchange = upstream.exchanges_caller_token
        if exchange is not None and auth is None:
            # Every call would fail: without auth: no call carries a verified token to exchange.
            raise ConfigError(f"{source}: {where}.{exchange}: exchanges the caller's token, so it needs auth: "
                              "(the caller's verified token is the subject token); use client_credentials for "
                              "the gateway's own token", key=f"{where}.{exchange}", source=source)
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
    if settings.mode == "dynamic" and proxied:  # converter.catalog.dynamic searches operations; proxied tools have none
        raise ConfigError(f"{source}: mode: dynamic serves OpenAPI operations only; an MCP upstream needs "
                          "mode: tools", key="mode", source=source)
    if settings.spec is None and not settings.tools and settings.mcp_upstream is None and not settings.sources:
        raise ConfigError(f"{source}: nothing to serve: give a SPEC (path or URL), `spec:`, `tools:`, "
                          "`mcp_upstream:` or `sources:`", key="spec", source=source)
    if not settings.server.path.startswith("/"):
        raise ConfigError(f"{source}: server.path: must start with '/'", key="server.path", source=source)
