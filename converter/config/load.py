"""`load_settings`: the YAML file (if any), `${ENV}`, the command-line flags, validated once.

Errors name the file and the key at fault, every one of them at once. Kong's `ai-mcp-proxy` /
`ai-mcp-oauth2` configuration is read as ours first (converter.config.kong)."""

from __future__ import annotations

import logging
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from converter.config.file import read_config_file
from converter.config.kong import translate
from converter.config.settings import Settings
from converter.errors import ConfigError

log = logging.getLogger("openapi_mcp")

MILLISECONDS_LOOK: Final = 1000  # an upstream timeout of this many seconds or more was meant in ms


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Read the YAML config (if any), substitute `${ENV}`, apply CLI overrides and validate.

    Args:
        config_file: path of the YAML file, or None.
        overrides: CLI values; `None` means "not given". Keys: spec, upstream_url, host, port,
            path, transport, page_size, workers, strict, read_only, mode, no_cache, watch.

    Raises:
        ConfigError: the file cannot be read or keys are wrong; the message names each problem
            with its key (one per line when there are several).
    """
    raw: dict[str, Any] = {}
    source = config_file or "<command line>"
    if config_file is not None:
        raw = read_config_file(config_file)
    kong = translate(raw)
    for note in kong.notes:
        log.info("%s: Kong configuration: %s", source, note)
    raw = _apply_overrides(kong.raw, overrides)
    problems = list(kong.problems)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [(_key(error), _message(error)) for error in exc.errors()]
        raise _error(source, problems) from exc
    settings = settings.model_copy(update={"config_file": config_file})
    problems += _check_supported(settings)
    if problems:
        raise _error(source, problems)
    _warn_about_units(settings, source)
    return settings


def _key(error: ErrorDetails) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


def _message(error: ErrorDetails) -> str:
    return "unknown key" if error["type"] == "extra_forbidden" else error["msg"]


def _error(source: str, problems: list[tuple[str, str]]) -> ConfigError:
    """One error naming every problem with its key."""
    said = [f"{key}: {message}" if key else message for key, message in problems]  # "": about no one key
    first = problems[0][0] or "spec"
    if len(problems) == 1:
        return ConfigError(f"{source}: {said[0]}", key=first, source=source)
    lines = "".join(f"\n  {line}" for line in said)
    return ConfigError(f"{source}: {len(problems)} problems:{lines}", key=first, source=source)


def _warn_about_units(settings: Settings, source: str) -> None:
    """Timeouts are seconds here; Kong's are milliseconds, and a pasted 60000 means a minute."""
    timeouts = [("upstream.timeout", settings.upstream.timeout)]
    if settings.mcp_upstream is not None:
        timeouts.append(("mcp_upstream.timeout", settings.mcp_upstream.timeout))
    for i, entry in enumerate(settings.sources):
        timeouts.append((f"sources[{i}].upstream.timeout", entry.upstream.timeout))
        if entry.mcp_upstream is not None:
            timeouts.append((f"sources[{i}].mcp_upstream.timeout", entry.mcp_upstream.timeout))
    for key, seconds in timeouts:
        if seconds >= MILLISECONDS_LOOK:
            log.warning("%s: %s: %g is in seconds (%.1f hours); if you meant milliseconds (as Kong), write %g",
                        source, key, seconds, seconds / 3600, seconds / 1000)


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    if overrides.get("spec") is not None:
        raw["spec"] = overrides["spec"]
    if overrides.get("upstream_url") is not None:
        raw["upstream"] = {**(raw.get("upstream") or {}), "url": overrides["upstream_url"]}
    server = dict(raw.get("server") or {})
    for key in ("host", "port", "path", "transport", "page_size", "workers"):
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
    if overrides.get("watch"):
        raw["reload"] = {**(raw.get("reload") or {}), "watch": True}
    return raw


def _check_supported(settings: Settings) -> list[tuple[str, str]]:
    """What validates but cannot be served as asked, by key."""
    problems: list[tuple[str, str]] = []
    if settings.server.workers > 1 and settings.server.transport == "stdio":
        problems.append(("server.workers", "stdio is one process: workers apply to the http transport only"))
    if settings.server.workers > 1 and settings.server.stateless:
        problems.append(("server.workers", "with server.stateless every worker serves every request already: "
                                           "leave workers at 1, or run replicas"))
    # Fail closed: a config that asks for protection we do not provide must not start unprotected.
    auth = settings.auth
    if auth is not None:
        if (auth.introspection_endpoint is None) == (auth.jwks_uri is None):
            problems.append(("auth", "give exactly one of introspection_endpoint and jwks_uri"))
        if auth.introspection_endpoint is not None:
            if not auth.client_id:
                problems.append(("auth.client_id", "is needed to call the introspection endpoint"))
            secret = auth.client_private_key if auth.client_auth_method == "private_key_jwt" else auth.client_secret
            if secret is None:
                key = "client_private_key" if auth.client_auth_method == "private_key_jwt" else "client_secret"
                problems.append((f"auth.{key}", f"is needed for {auth.client_auth_method}"))
        configured = {name.lower() for block in (settings.upstream, settings.mcp_upstream,
                                                 *(e.upstream for e in settings.sources),
                                                 *(e.mcp_upstream for e in settings.sources))
                      if block is not None for name in block.headers}
        for i, mapping in enumerate(auth.claim_to_header):
            if mapping.header.lower() in configured:  # a claim must not replace a configured credential
                problems.append((f"auth.claim_to_header[{i}].header",
                                 f"{mapping.header!r} is a header upstream.headers (or mcp_upstream.headers) sets; "
                                 "map the claim to another header"))
        if settings.server.transport == "stdio":
            problems.append(("auth", "applies to the HTTP transport only; stdio carries no bearer tokens (remove "
                                     "auth: or serve over http)"))
    upstreams = [("upstream", settings.upstream)] if settings.spec is not None or settings.tools else []
    upstreams += [(f"sources[{i}].upstream", entry.upstream) for i, entry in enumerate(settings.sources)
                  if entry.mcp_upstream is None]
    for where, upstream in upstreams:
        exchange = upstream.exchanges_caller_token
        if exchange is not None and auth is None:
            # Every call would fail: without auth: no call carries a verified token to exchange.
            problems.append((f"{where}.{exchange}", "exchanges the caller's token, so it needs auth: (the caller's "
                                                    "verified token is the subject token); use client_credentials "
                                                    "for the gateway's own token"))
    for i, entry in enumerate(settings.sources):
        kinds = [key for key, given in (("spec", entry.spec is not None), ("tools", bool(entry.tools)),
                                        ("mcp_upstream", entry.mcp_upstream is not None)) if given]
        if not kinds or (entry.mcp_upstream is not None and len(kinds) > 1):
            problems.append((f"sources[{i}]", "give either spec: (and/or tools:) or mcp_upstream:, not "
                                              f"{' and '.join(kinds) or 'neither'}"))
    proxied = settings.mcp_upstream is not None or any(e.mcp_upstream is not None for e in settings.sources)
    if settings.read_only and proxied:  # an MCP server's tools have no HTTP method to tell safe ones by
        problems.append(("read_only", "applies to OpenAPI operations only; an MCP upstream's tools cannot be "
                                      "limited to safe methods (remove read_only or the MCP upstream)"))
    if settings.mode == "dynamic" and proxied:  # converter.catalog.dynamic searches operations; proxied tools have none
        problems.append(("mode", "dynamic serves OpenAPI operations only; an MCP upstream needs mode: tools"))
    if settings.pdp is not None and settings.auth is None:
        # Fail closed, and say so: without tokens there is no subject to ask the PDP about.
        problems.append(("pdp", "needs auth: (the decision service is asked about the token's subject)"))
    if settings.spec is None and not settings.tools and settings.mcp_upstream is None and not settings.sources:
        problems.append(("", "nothing to serve: give a SPEC (path or URL), `spec:`, `tools:`, `mcp_upstream:` "
                                 "or `sources:`"))
    if not settings.server.path.startswith("/"):
        problems.append(("server.path", "must start with '/'"))
    return problems
