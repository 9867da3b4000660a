"""Startup checks that find settings which validate but cannot work together (warnings, not errors)."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from converter.config.settings import Settings

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resource_warnings(settings: Settings) -> list[str]:
    """Why `auth.resource` cannot be the URL clients reach this server at, if it cannot.

    Clients compare the protected-resource metadata's `resource` with the URL they connect to
    and stop on a mismatch ("protected resource does not match"); tokens are issued for
    `resource`. Without `server.public_url`, scheme, host, port and path are compared with the
    listener (the host only when the listener is loopback: any name may reach 0.0.0.0 or a
    specific address); with it, `resource` must be that URL.
    """
    auth = settings.auth
    if auth is None or settings.server.transport != "http":
        return []
    resource = urlsplit(auth.resource)
    server = settings.server
    if server.public_url is not None:
        public = urlsplit(server.public_url)
        if _canonical(resource) != _canonical(public):
            return [f"auth.resource {auth.resource!r} is not server.public_url {server.public_url!r}: clients that "
                    "connect to the public URL will refuse this server's metadata; make them the same URL"]
        return []
    problems: list[str] = []
    if resource.scheme != "http":
        problems.append(f"the scheme is {resource.scheme!r} but this server listens on plain http")
    host = (resource.hostname or "").lower()
    if server.host in _LOOPBACK and host not in _LOOPBACK:
        problems.append(f"the host {host!r} does not reach a listener on {server.host}")
    port = resource.port or (443 if resource.scheme == "https" else 80)
    if server.port != 0 and port != server.port:
        problems.append(f"the port is {port} but this server listens on {server.port}")
    path = resource.path.rstrip("/") or "/"
    if path != (server.path.rstrip("/") or "/"):
        problems.append(f"the path is {path!r} but MCP is served at {server.path!r}")
    if not problems:
        return []
    served = f"http://{_url_host(server.host)}:{server.port}{server.path}"
    return [f"auth.resource {auth.resource!r} cannot be the URL of this server ({served}): {'; '.join(problems)}. "
            "Clients connecting to one will refuse the other's metadata. Set auth.resource to the URL clients "
            "use, and behind a proxy (TLS, another host, port or path) say so with server.public_url"]


def _canonical(parts: SplitResult) -> tuple[str, str, int, str]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80), \
        parts.path.rstrip("/")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
