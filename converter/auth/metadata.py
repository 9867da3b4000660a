"""RFC 9728 protected resource metadata, served with the MCP SDK's model and handler.

The document is served at the root well-known URL and at the path-inserted ones (for the
`resource` path and for the MCP path: clients build either). Browser clients read it across
origins through the app's CORS layer (converter.asgi.BrowserCORS, in front of every path when
`auth:` is set); a second CORS layer here would only repeat its headers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.routing import Route, request_response
from starlette.types import Receive, Scope, Send

from converter.config import AuthSettings

PRM_PATH = "/.well-known/oauth-protected-resource"


def metadata_url(auth: AuthSettings) -> str:
    """Where a 401 challenge points (`resource_metadata`): the path-inserted URL of `resource`."""
    resource = urlsplit(auth.resource)
    return f"{resource.scheme}://{resource.netloc}{PRM_PATH}{resource.path.rstrip('/')}"


def metadata_routes(auth: AuthSettings | Callable[[], AuthSettings], *,
                    scopes: Sequence[str] | Callable[[], Sequence[str]], mcp_path: str) -> list[Route]:
    """The metadata document at every URL a client may build for this resource.

    `scopes` are advertised as `scopes_supported` unless `auth.scopes_supported` says otherwise;
    `offline_access` never is (MCP 2026-07-28: SHOULD NOT). Either may be given as what gives
    it now (a live reload changes the scopes): the document follows.
    """
    auth_of = auth if callable(auth) else (lambda: auth)
    scopes_of = scopes if callable(scopes) else (lambda: scopes)
    endpoint = _Following(auth_of, scopes_of)
    resource_path = urlsplit(auth_of().resource).path.rstrip("/")
    paths = dict.fromkeys([PRM_PATH, PRM_PATH + resource_path, PRM_PATH + (mcp_path.rstrip("/") or "")])
    return [Route(path, endpoint=endpoint, methods=["GET", "OPTIONS"]) for path in paths]


class _Following:
    """An ASGI app serving the document for the settings and scopes of now (built once per change)."""

    def __init__(self, auth_of: Callable[[], AuthSettings], scopes_of: Callable[[], Sequence[str]]) -> None:
        self._auth_of = auth_of
        self._scopes_of = scopes_of
        self._built: tuple[tuple[int, tuple[str, ...]], Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = self._auth_of()
        key = (id(auth), tuple(self._scopes_of()))
        if self._built is None or self._built[0] != key:
            self._built = (key, _document_endpoint(auth, key[1]))
        await self._built[1](scope, receive, send)


def _document_endpoint(auth: AuthSettings, scopes: Sequence[str]) -> Any:
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
    return request_response(ProtectedResourceMetadataHandler(document).handle)
