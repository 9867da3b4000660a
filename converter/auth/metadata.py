"""RFC 9728 protected resource metadata, served with the MCP SDK's model and handler.

The document is served at the root well-known URL and at the path-inserted ones (for the
`resource` path and for the MCP path: clients build either), with CORS for browser clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.routes import cors_middleware
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.routing import Route

from converter.config import AuthSettings

PRM_PATH = "/.well-known/oauth-protected-resource"


def metadata_url(auth: AuthSettings) -> str:
    """Where a 401 challenge points (`resource_metadata`): the path-inserted URL of `resource`."""
    resource = urlsplit(auth.resource)
    return f"{resource.scheme}://{resource.netloc}{PRM_PATH}{resource.path.rstrip('/')}"


def metadata_routes(auth: AuthSettings, *, scopes: Sequence[str], mcp_path: str) -> list[Route]:
    """The metadata document at every URL a client may build for this resource.

    `scopes` are advertised as `scopes_supported` unless `auth.scopes_supported` says otherwise;
    `offline_access` never is (MCP 2026-07-28: SHOULD NOT).
    """
    advertised = auth.scopes_supported if auth.scopes_supported is not None else list(scopes)
    supported: list[str] | None = [s for s in advertised if s != "offline_access"]
    if not supported and auth.scopes_supported is None:
        # No scope anywhere in the config: `[]` would tell clients to ask for none (and realms then
        # refuse the login); without the field they fall back to the authorization server's list.
        supported = None
    document = ProtectedResourceMetadata.model_validate({  # from strings: the model keeps an empty path empty
        "resource": auth.resource,
        "authorization_servers": auth.authorization_servers,
        "scopes_supported": supported,
        "resource_name": auth.resource_name,
        "resource_documentation": auth.resource_documentation,
    })
    endpoint = cors_middleware(ProtectedResourceMetadataHandler(document).handle, ["GET", "OPTIONS"])
    resource_path = urlsplit(auth.resource).path.rstrip("/")
    paths = dict.fromkeys([PRM_PATH, PRM_PATH + resource_path, PRM_PATH + (mcp_path.rstrip("/") or "")])
    return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in paths]
