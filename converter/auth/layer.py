"""The ASGI auth layer in front of the MCP endpoint (MCP authorization spec, RFC 6750, RFC 9728).

- RFC 9728 metadata at `/.well-known/oauth-protected-resource` and the path-inserted URL, no
  token needed, with CORS.
- Every request to the MCP path needs `Authorization: Bearer <token>`; the answer otherwise is
  401 with `WWW-Authenticate: Bearer resource_metadata="...", scope="..."` (no `error` when no
  credentials were sent, RFC 6750 §3.1), 400 `invalid_request` for malformed credentials or a
  token in the query string, 401 `invalid_token`, 403 `insufficient_scope` naming every scope the
  operation needs, or 503 when the authorization server cannot answer (fail closed).
- `tools/call` of a tool whose scopes the token lacks is refused here with 403; the tool name
  comes from the `Mcp-Name` header (2026-07-28 clients) or from the JSON-RPC body, read once
  and replayed to the transport.
- The verified principal goes into the ASGI scope (`PRINCIPAL_KEY`) and, for the SDK's session
  binding, `scope["user"]`; the client's `Authorization` header goes no further.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit
from weakref import WeakKeyDictionary

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from converter.auth.principal import ANONYMOUS, AuthServerUnavailableError, InvalidTokenError, Principal
from converter.config import AuthSettings
from converter.policy import Policy
from converter.telemetry.record import RECORD_KEY

log = logging.getLogger("openapi_mcp.auth")

PRINCIPAL_KEY = "openapi_mcp.principal"
PRM_PATH = "/.well-known/oauth-protected-resource"
MAX_BODY_BYTES = 4 * 1024 * 1024  # the SDK's own limit for a POST to the MCP endpoint
_CORS_ALLOW_HEADERS = ("authorization, content-type, accept, mcp-session-id, mcp-protocol-version, "
                       "last-event-id, mcp-method, mcp-name")
_CORS_EXPOSE_HEADERS = "www-authenticate, mcp-session-id, mcp-protocol-version"


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...
    async def aclose(self) -> None: ...


class AuthLayer:
    """ASGI middleware guarding `mcp_path`; everything else passes through (after CORS)."""

    def __init__(self, app: ASGIApp, *, settings: AuthSettings, verifier: TokenVerifier, policy: Policy,
                 mcp_path: str) -> None:
        self.app = app
        self.settings = settings
        self.verifier = verifier
        self.policy = policy
        self.mcp_path = mcp_path.rstrip("/") or "/"
        resource_path = urlsplit(settings.resource).path.rstrip("/")
        self.prm_paths = {PRM_PATH, PRM_PATH + resource_path, PRM_PATH + self.mcp_path}
        origin = urlsplit(settings.resource)
        self.metadata_url = f"{origin.scheme}://{origin.netloc}{PRM_PATH}{resource_path}"
        self.metadata = self._metadata()
        self._users: WeakKeyDictionary[Principal, AuthenticatedUser] = WeakKeyDictionary()

    def _metadata(self) -> bytes:
        settings = self.settings
        scopes = settings.scopes_supported if settings.scopes_supported is not None else self.policy.all_scopes()
        document: dict[str, Any] = {
            "resource": settings.resource,
            "authorization_servers": settings.authorization_servers,
            "scopes_supported": [s for s in scopes if s != "offline_access"],  # MCP 2026-07-28: SHOULD NOT
            "bearer_methods_supported": ["header"],
        }
        if not document["scopes_supported"] and settings.scopes_supported is None:
            # No scope anywhere in the config: `[]` would tell clients to ask for none (and realms then
            # refuse the login); without the field they fall back to the authorization server's list.
            del document["scopes_supported"]
        if settings.resource_name:
            document["resource_name"] = settings.resource_name
        if settings.resource_documentation:
            document["resource_documentation"] = settings.resource_documentation
        return json.dumps(document).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        origin = _header(scope, b"origin")
        if (path in self.prm_paths or path == self.mcp_path) and method == "OPTIONS" and origin is not None:
            await _respond(send, 204, b"", {}, origin=origin, preflight=True)
            return
        if path in self.prm_paths:
            if method in ("GET", "HEAD"):
                await _respond(send, 200, self.metadata if method == "GET" else b"", {
                    "content-type": "application/json", "cache-control": "public, max-age=3600"}, origin=origin)
            else:
                await _respond(send, 405, b"", {"allow": "GET, HEAD, OPTIONS"}, origin=origin)
            return
        if path != self.mcp_path:
            await self.app(scope, receive, send)
            return
        await self._guard(scope, receive, send, origin)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, origin: str | None) -> None:
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        query = scope.get("query_string", b"").decode("latin-1")
        if any(k == "access_token" for k, _ in parse_qsl(query, keep_blank_values=True)):
            await self._challenge(send, 400, "invalid_request", "Access tokens are not accepted in the query string",
                                  origin)
            return
        if not values:
            _denied(scope, "missing_token")
            await self._challenge(send, 401, None, None, origin)
            return
        if len(values) > 1:
            await self._challenge(send, 400, "invalid_request", "Send exactly one Authorization header", origin)
            return
        scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            await self._challenge(send, 400, "invalid_request", "Use the Bearer authorization scheme", origin)
            return
        try:
            principal = await self.verifier.verify(token)
        except InvalidTokenError as exc:
            _denied(scope, "invalid_token")
            await self._challenge(send, 401, "invalid_token", str(exc), origin)
            return
        except AuthServerUnavailableError as exc:
            _denied(scope, "auth_server_unavailable")
            await _respond(send, 503, json.dumps({"error": "temporarily_unavailable",
                                                  "error_description": str(exc)}).encode(),
                           {"content-type": "application/json", "retry-after": "5"}, origin=origin)
            return
        have = self.policy.effective_scopes(principal)
        missing = self.policy.required_scopes - have
        if missing:
            _denied(scope, "insufficient_scope")
            await self._challenge(send, 403, "insufficient_scope", "The access token lacks required scopes", origin,
                                  scopes=self.policy.required_scopes)
            return
        if scope["method"] == "POST" and self.policy.tool_scopes:  # only per-tool scopes need the tool name
            body, too_large = await _read_body(receive)
            if too_large:
                await _respond(send, 413, b'{"error": "request body too large"}',
                               {"content-type": "application/json"}, origin=origin)
                return
            for tool in _called_tools(scope, body):
                if self.policy.missing_scopes(tool, principal, scopes=have):
                    _denied(scope, "insufficient_scope")
                    await self._challenge(send, 403, "insufficient_scope",
                                          f"Calling tool {_ascii(tool)} needs more scopes", origin,
                                          scopes=self.policy.needed_scopes(tool, principal))
                    return
            receive = _replay(body, receive)
        scope[PRINCIPAL_KEY] = principal
        record = scope.get(RECORD_KEY)
        if record is not None:
            record.subject, record.client_id = principal.subject, principal.client_id
        user = self._users.get(principal)
        if user is None:  # one per cached principal: building the SDK's pydantic models costs per request
            user = self._users[principal] = AuthenticatedUser(AccessToken(
                token="", client_id=principal.client_id or "", scopes=sorted(principal.scopes),
                expires_at=int(principal.expires_at) if principal.expires_at else None, subject=principal.subject,
                claims={"iss": principal.issuer} if principal.issuer else None,
            ))
        scope["user"] = user
        # The client's credentials stop here: nothing below may see or forward them.
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        await self.app(scope, receive, _with_cors(send, origin))

    async def _challenge(self, send: Send, status: int, error: str | None, description: str | None,
                         origin: str | None, *, scopes: Iterable[str] | None = None) -> None:
        params = [f'resource_metadata="{self.metadata_url}"']
        wanted = sorted(self.policy.required_scopes if scopes is None else scopes)
        if wanted:
            params.append(f'scope="{" ".join(wanted)}"')
        if error:
            params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{_ascii(description)}"')
        body = json.dumps({"error": error or "unauthorized", "error_description": description or
                           "An access token is required"}).encode()
        await _respond(send, status, body, {"content-type": "application/json",
                                            "www-authenticate": "Bearer " + ", ".join(params)}, origin=origin)


def _denied(scope: Scope, reason: str) -> None:
    record = scope.get(RECORD_KEY)
    if record is not None:
        record.auth_failure = reason


def _called_tools(scope: Scope, body: bytes) -> list[str]:
    """Names of the tools a POST calls: the Mcp-Name header when present, else the JSON-RPC body."""
    if _header(scope, b"mcp-method") == "tools/call":
        name = _header(scope, b"mcp-name")
        if name is not None:
            return [name]  # the SDK rejects a body that disagrees with these headers (-32020)
    try:
        message = json.loads(body)
    except ValueError:
        return []  # the transport answers malformed JSON itself
    messages = message if isinstance(message, list) else [message]
    return [
        m["params"]["name"] for m in messages
        if isinstance(m, dict) and m.get("method") == "tools/call" and isinstance(m.get("params"), dict)
        and isinstance(m["params"].get("name"), str)
    ]


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_cors(send: Send, origin: str | None) -> Send:
    if origin is None:
        return send

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS.encode()),
                        (b"vary", b"origin")]
            message = {**message, "headers": headers}
        await send(message)

    return cors_send


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str], *, origin: str | None,
                   preflight: bool = False) -> None:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    if origin is not None:
        raw += [(b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS.encode()), (b"vary", b"origin")]
        if preflight:
            raw += [(b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                    (b"access-control-allow-headers", _CORS_ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", b"600")]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _ascii(text: str) -> str:
    """RFC 6750 §3: error_description is a quoted string of printable ASCII without `"` or `\\`."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in text)


def principal_of(ctx: Any) -> Principal:
    """The caller the auth layer verified for this request; anonymous on stdio or with auth off."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    principal = scope.get(PRINCIPAL_KEY) if isinstance(scope, dict) else None
    return principal if isinstance(principal, Principal) else ANONYMOUS
