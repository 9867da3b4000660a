"""Kong AI Gateway configuration, read as ours: `ai-mcp-proxy` and `ai-mcp-oauth2` as pasted.

Two shapes are understood: a plugin's `config:` block pasted as the top level of our file
(`mode: conversion-listener`, `tools:`, `server.timeout`), and a decK file (`_format_version`,
`services:` with their `routes:`, and `plugins:` named `ai-mcp-proxy` / `ai-mcp-oauth2`). Kong's
keys that mean what one of ours means are renamed (with a note logged at startup); the ones we
do differently are answered with the exact replacement; the ones that would weaken protection if
ignored (ACL lists, credential passthrough, no TLS verification) are errors, never skipped.

Unnamed tools get the names Kong gives them: `annotations.title` (Kong uses it as the name),
else decK's `openapi2mcp` naming, kebab-case of method and path (`get-marketplace-users`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

KONG_MODES: Final = ("conversion-listener", "passthrough-listener", "conversion-only", "listener")
_DECK_KEYS: Final = ("_format_version", "_transform", "_info", "_konnect", "services", "routes", "plugins")
_PROXY_ACL_KEYS: Final = ("default_acl", "acl_attribute_type", "access_token_claim_field", "consumer_identifier",
                          "include_consumer_groups")
# ai-mcp-oauth2 keys with another name (or unit) here: Kong key -> ours.
_AUTH_RENAMES: Final = {"jwks_endpoint": "jwks_uri", "jwt_claims_leeway": "leeway"}
# ai-mcp-oauth2 keys that change nothing here (what they tune is fixed or automatic), with why.
_AUTH_IGNORED: Final = {
    "metadata_endpoint": "the metadata is served at both RFC 9728 well-known URLs",
    "metadata_discovery_endpoint": "the authorization server is not discovered: give introspection_endpoint or "
                                   "jwks_uri",
    "metadata_discovery_retry": "no discovery",
    "metadata_cache_ttl": "no discovery",
    "jwks_cache_ttl": "the JWKS is refetched on an unknown key id (auth.jwks_refetch_interval)",
    "consumer_by": "there are no Kong consumers; rules read the token's claims (acl: when:)",
    "consumer_claim": "there are no Kong consumers",
    "consumer_groups_claim": "there are no Kong consumer groups",
    "consumer_optional": "there are no Kong consumers",
    "consumer_groups_optional": "there are no Kong consumer groups",
    "credential_claim": "rate-limit identities are not derived here",
    "keepalive": "connections to the authorization server are always pooled",
    "http_version": "HTTP/1.1 is used",
    "introspection_format": "the introspection answer is read as JSON",
    "max_request_body_size": "an MCP request may be up to 4 MiB",
    "client_alg": "client assertions (private_key_jwt) are signed with the key's own algorithm",
}
# ai-mcp-oauth2 keys with no equivalent whose absence would change who gets in: errors.
_AUTH_REFUSED: Final = {
    "upstream_headers": "use auth.claim_to_header with dotted claim paths (realm_access.roles)",
    "passthrough_credentials": "the client's token is never sent upstream (MCP forbids token passthrough)",
    "ssl_verify": "TLS certificates are always verified",
    "tls_client_auth_ssl_verify": "TLS certificates are always verified",
    "tls_client_auth_cert": "mTLS client authentication is not supported; use client_secret_basic, "
                            "client_secret_post or private_key_jwt",
    "tls_client_auth_key": "mTLS client authentication is not supported",
    "mtls_introspection_endpoint": "mTLS client authentication is not supported",
    "client_jwk": "give the private key as PEM in auth.client_private_key (with client_auth_method: private_key_jwt)",
    "headers": "extra introspection headers are not supported",
    "args": "extra introspection parameters are not supported",
    "http_proxy": "set the standard HTTP_PROXY / HTTPS_PROXY / NO_PROXY environment variables",
    "https_proxy": "set the standard HTTPS_PROXY environment variable",
    "http_proxy_authorization": "put the credentials in the HTTP_PROXY URL",
    "https_proxy_authorization": "put the credentials in the HTTPS_PROXY URL",
    "no_proxy": "set the standard NO_PROXY environment variable",
    "token_exchange": "configure upstream.auth.token_exchange (token_endpoint, client_id, client_secret, audience)",
}


@dataclass
class KongTranslation:
    """The configuration in our keys, what was renamed (notes) and what cannot be (problems, by key)."""

    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    is_kong: bool = False


def is_kong(raw: Mapping[str, Any]) -> bool:
    """Whether `raw` is Kong's: a decK file, or an ai-mcp-proxy config (its `mode:` values)."""
    return any(k in raw for k in ("_format_version", "plugins")) or raw.get("mode") in KONG_MODES


def translate(raw: dict[str, Any]) -> KongTranslation:
    """Read Kong's configuration as ours (see the module docstring); anything else is returned as it is."""
    out = KongTranslation(dict(raw))
    if not is_kong(raw):
        return out
    out.is_kong = True
    upstream_url: str | None = None
    if "plugins" in raw or "_format_version" in raw:
        upstream_url = _from_deck(out)
    _proxy_config(out, upstream_url)
    if isinstance(out.raw.get("auth"), dict):
        out.raw["auth"] = _oauth2_config(out, out.raw["auth"])
    return out


def _from_deck(out: KongTranslation) -> str | None:
    """Flatten a decK file: the ai-mcp-proxy config becomes the top level, ai-mcp-oauth2 `auth:`,
    the one service's URL the upstream and its route's first path the MCP path."""
    deck = out.raw
    out.raw = {k: v for k, v in deck.items() if k not in _DECK_KEYS}
    services = _list(deck.get("services"))
    urls = [s["url"] for s in services if isinstance(s, dict) and isinstance(s.get("url"), str)]
    routes = [r for s in services if isinstance(s, dict) for r in _list(s.get("routes")) if isinstance(r, dict)]
    routes += [r for r in _list(deck.get("routes")) if isinstance(r, dict)]
    paths = [p for r in routes for p in _list(r.get("paths")) if isinstance(p, str) and p.startswith("/")]
    if len(urls) > 1:
        out.problems.append(("services", f"{len(urls)} Kong services: one server fronts one upstream here; "
                                         "list the others under sources: (each with its upstream.url)"))
    proxies, oauth = 0, 0
    for i, plugin in enumerate(_list(deck.get("plugins"))):
        name = plugin.get("name") if isinstance(plugin, dict) else None
        config = plugin.get("config") if isinstance(plugin, dict) else None
        if name == "ai-mcp-proxy" and isinstance(config, dict):
            proxies += 1
            if proxies > 1:
                out.problems.append((f"plugins[{i}]", "a second ai-mcp-proxy plugin: serve several APIs from one "
                                                      "server with sources: (one entry each)"))
                continue
            out.raw.update(config)
        elif name == "ai-mcp-oauth2" and isinstance(config, dict):
            oauth += 1
            out.raw["auth"] = dict(config)
        else:
            out.problems.append((f"plugins[{i}]", f"Kong plugin {name!r} has no equivalent here (only ai-mcp-proxy "
                                                  "and ai-mcp-oauth2 are read)"))
    if proxies == 0:
        out.problems.append(("plugins", "no ai-mcp-proxy plugin: nothing to serve"))
    if paths and "server" not in out.raw:
        out.raw["server"] = {}
    if paths and isinstance(out.raw.get("server"), dict):
        out.raw["server"] = {**out.raw["server"], "path": paths[0].rstrip("/") or "/"}
        out.notes.append(f"routes: the route path {paths[0]!r} is the MCP path (server.path)")
    return urls[0] if len(urls) == 1 else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _proxy_config(out: KongTranslation, upstream_url: str | None) -> None:
    raw = out.raw
    mode = raw.get("mode")
    passthrough = mode == "passthrough-listener"
    if mode == "conversion-listener":
        del raw["mode"]
        out.notes.append("mode: conversion-listener is this server's default (tools from REST operations)")
    elif passthrough:
        del raw["mode"]
        if upstream_url is not None and "mcp_upstream" not in raw:
            raw["mcp_upstream"] = {"url": upstream_url}
            upstream_url = None
        elif "mcp_upstream" not in raw:
            out.problems.append(("mode", "passthrough-listener is Kong's passthrough: use mcp_upstream: URL (the MCP "
                                         "server to front) instead of mode:"))
    elif mode in ("conversion-only", "listener"):
        out.problems.append(("mode", f"{mode} (Kong's tagged tool sets) is not needed here: list each API under "
                                     "sources: (spec: or tools:, with its upstream.url and a prefix:) and serve "
                                     "them all from one server"))
    if upstream_url is not None:
        upstream = raw.setdefault("upstream", {})
        if isinstance(upstream, dict):
            upstream.setdefault("url", upstream_url)
    server = raw.get("server")
    if isinstance(server, dict):
        raw["server"] = server = dict(server)
        if "timeout" in server:
            _server_timeout(out, server.pop("timeout"), "mcp_upstream" if passthrough else "upstream")
        if "tag" in server:
            server.pop("tag")
            out.problems.append(("server.tag", "Kong's listener tag is not needed here: list each API under "
                                               "sources: and serve them from one server"))
        if server.pop("forward_client_headers", False) is True:
            out.notes.append("server.forward_client_headers: client headers are never forwarded here; send the "
                             "caller's identity with auth.claim_to_header and fixed ones with upstream.headers")
        if "session" in server:
            server.pop("session")
            out.notes.append("server.session: MCP sessions are kept by this server itself (or none with "
                             "server.stateless: true)")
    logging = raw.pop("logging", None)
    if isinstance(logging, dict):
        telemetry = raw.setdefault("telemetry", {})
        if isinstance(telemetry, dict) and "log_payloads" in logging:
            telemetry.setdefault("log_payloads", logging["log_payloads"])
        if logging.get("log_audits") and isinstance(raw.get("acl"), dict):
            raw["acl"].setdefault("audit", True)
        out.notes.append("logging: every request is in the access log and /metrics already; log_payloads is "
                         "telemetry.log_payloads, log_audits is acl.audit")
    if "max_request_body_size" in raw:
        raw.pop("max_request_body_size")
        out.notes.append("max_request_body_size: an MCP request may be up to 4 MiB here")
    for key in _PROXY_ACL_KEYS:
        if key in raw:
            raw.pop(key)
            out.problems.append((key, "Kong's ACL lists have no direct equivalent: write acl: rules (features, "
                                      "name, and when: conditions on the token's claims)"))
    if isinstance(raw.get("tools"), list):
        raw["tools"] = [_tool(out, i, t) if isinstance(t, dict) else t for i, t in enumerate(raw["tools"])]


def _server_timeout(out: KongTranslation, value: Any, block: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        out.problems.append(("server.timeout", f"Kong's tool-call timeout in milliseconds must be a positive number, "
                                               f"not {value!r}; here it is {block}.timeout (seconds)"))
        return
    seconds = value / 1000
    target = out.raw.setdefault(block, {})
    if isinstance(target, str):  # mcp_upstream: URL
        target = out.raw[block] = {"url": target}
    if not isinstance(target, dict):
        return
    if "timeout" in target and target["timeout"] != seconds:
        out.problems.append(("server.timeout", f"server.timeout is Kong's tool-call timeout in ms ({value!r}); "
                                               f"{block}.timeout: {target['timeout']!r} is set too: keep only "
                                               f"{block}.timeout (seconds)"))
        return
    target["timeout"] = seconds
    out.notes.append(f"server.timeout: {value!r} is Kong's tool-call timeout in milliseconds: read as "
                     f"{block}.timeout: {seconds:g} (seconds)")


def _tool(out: KongTranslation, index: int, tool: dict[str, Any]) -> dict[str, Any]:
    tool = dict(tool)
    annotations = tool.pop("annotations", None)
    title = annotations.get("title") if isinstance(annotations, dict) else None
    if "acl" in tool:
        tool.pop("acl")
        out.problems.append((f"tools[{index}].acl", "Kong's per-tool ACL has no direct equivalent: write an acl: "
                                                    "rule naming the tool (name: {type: literal, pattern: ...})"))
    for key in ("host", "scheme", "headers", "query"):  # Kong's route matching; the upstream URL says it here
        if key in tool:
            tool.pop(key)
            out.notes.append(f"tools[{index}].{key}: not needed (calls go to upstream.url)")
    if not tool.get("name"):
        tool["name"] = _slug(title) if isinstance(title, str) and _slug(title) else kong_tool_name(
            str(tool.get("method", "")), str(tool.get("path", "")))
    return tool


def kong_tool_name(method: str, path: str) -> str:
    """decK `openapi2mcp`'s name for an operation without one: kebab-case of method and path."""
    return _slug(f"{method.lower()}-{path.replace('/', '-')}")


def _slug(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text.replace("_", "-").replace(" ", "-")).lower()
    text = re.sub(r"[^a-z0-9-]", "", text)
    return re.sub(r"-{2,}", "-", text).strip("-")[:64]


def _oauth2_config(out: KongTranslation, auth: dict[str, Any]) -> dict[str, Any]:
    auth = dict(auth)
    for kong_key, ours in _AUTH_RENAMES.items():
        if kong_key in auth:
            auth.setdefault(ours, auth.pop(kong_key))
            out.notes.append(f"auth.{kong_key} is auth.{ours} here")
    if "client_auth" in auth:
        method = auth.pop("client_auth")
        if method in ("client_secret_basic", "client_secret_post", "private_key_jwt"):
            auth.setdefault("client_auth_method", method)
        elif method != "none":
            out.problems.append(("auth.client_auth", f"{method!r} is not supported: use client_auth_method: "
                                                     "client_secret_basic, client_secret_post or private_key_jwt"))
    if "timeout" in auth and isinstance(auth["timeout"], (int, float)) and auth["timeout"] >= 100:
        out.notes.append(f"auth.timeout: {auth['timeout']!r} read as Kong's milliseconds: {auth['timeout'] / 1000:g} s")
        auth["timeout"] = auth["timeout"] / 1000
    if auth.pop("cache_introspection", True) is False:
        auth.setdefault("cache_ttl", 0)
    for key, why in _AUTH_IGNORED.items():
        if key in auth:
            auth.pop(key)
            out.notes.append(f"auth.{key}: not needed ({why})")
    for key, replacement in _AUTH_REFUSED.items():
        if key in auth:
            value = auth.pop(key)
            harmless = (key in ("ssl_verify", "tls_client_auth_ssl_verify") and value is True) or \
                       (key == "passthrough_credentials" and value is False) or \
                       (key == "token_exchange" and isinstance(value, dict) and value.get("enabled") is not True)
            if not harmless:
                out.problems.append((f"auth.{key}", f"not supported: {replacement}"))
    return auth
