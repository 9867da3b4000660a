"""The ASGI auth layer in front of the MCP endpoint (MCP authorization spec, RFC 6750, RFC 9728).

- (RFC 9728 metadata and CORS are served outside it: converter.auth.metadata, Starlette's
  CORSMiddleware.)
- Every request to the MCP path (and to `guarded_paths`: the dashboard's data) needs
  `Authorization: Bearer <token>`; the answer otherwise is 401 with
  `WWW-Authenticate: Bearer resource_metadata="...", scope="..."` (no `error` when no
  credentials were sent, RFC 6750 §3.1), 400 `invalid_request` for malformed credentials or a
  token in the query string, 401 `invalid_token`, 403 `insufficient_scope` naming every scope the
  operation needs, or 503 when the authorization server cannot answer (fail closed).
- A token that names neither a subject nor a client is refused (401): sessions are bound to
  that identity, and such tokens would share one.
- `tools/call` of a tool whose scopes the token lacks is refused here with 403 (unless the access
  rules hide that tool: then it answers like an unknown tool, later); the tool name
  comes from the `Mcp-Name` header (2026-07-28 clients) or from the JSON-RPC body, read once
  and replayed to the transport.
- The verified principal goes into the ASGI scope (`PRINCIPAL_KEY`) and, for the SDK's session
  binding, `scope["user"]`; the client's `Authorization` header goes no further.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl
from weakref import WeakKeyDictionary

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Receive, Scope, Send

from converter.asgi import peek_rpc, respond
from converter.auth.metadata import metadata_url
from converter.auth.principal import ANONYMOUS, AuthServerUnavailableError, InvalidTokenError, Principal
from converter.config import AuthSettings
from converter.policy import Policy
from converter.telemetry.record import RECORD_KEY

if TYPE_CHECKING:
    from converter.auth.introspection import TokenCache

log = logging.getLogger("openapi_mcp.auth")

PRINCIPAL_KEY = "openapi_mcp.principal"
TOKEN_KEY = "openapi_mcp.bearer_token"  # for token exchange only; the Authorization header itself is removed
# Browser clients (the Inspector's web UI) send and read these across origins (Starlette's CORSMiddleware).
CORS_ALLOW_HEADERS = ("authorization", "content-type", "accept", "mcp-session-id", "mcp-protocol-version",
                      "last-event-id", "mcp-method", "mcp-name")
CORS_EXPOSE_HEADERS = ("www-authenticate", "mcp-session-id", "mcp-protocol-version")
_PARSE_ERROR = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
    "code": -32700, "message": "Parse error: the request is nested too deeply"}}).encode()


class TokenVerifier(Protocol):
    """What the auth layer needs of a verifier (introspection or JWT): a verdict per token, a
    cache whose hit and miss counts /metrics shows, and a way to close its client."""

    async def verify(self, token: str) -> Principal: ...
    async def aclose(self) -> None: ...
    @property
    def cache(self) -> TokenCache: ...


class AuthLayer:
    """ASGI middleware guarding `mcp_path` (and `guarded_paths`, e.g. the dashboard's data);
    everything else passes through. CORS and the RFC 9728 metadata routes are outside it
    (Starlette's CORSMiddleware, converter.auth.metadata)."""

    def __init__(self, app: ASGIApp, *, settings: AuthSettings, verifier: TokenVerifier,
                 policy: Policy | Callable[[], Policy], mcp_path: str, guarded_paths: Iterable[str] = ()) -> None:
        """`policy`: or what gives the policy served now (a live reload replaces it)."""
        self.app = app
        self.settings = settings
        self.verifier = verifier
        self._policy_of: Callable[[], Policy] = policy if callable(policy) else (lambda: policy)
        self.mcp_path = mcp_path.rstrip("/") or "/"
        self.guarded_paths = frozenset(p.rstrip("/") or "/" for p in guarded_paths)
        self.metadata_url = metadata_url(settings)
        self._users: WeakKeyDictionary[Principal, AuthenticatedUser] = WeakKeyDictionary()

    @property
    def policy(self) -> Policy:
        return self._policy_of()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        if path == self.mcp_path or path in self.guarded_paths:
            await self._guard(scope, receive, send, mcp=path == self.mcp_path)
            return
        await self.app(scope, receive, send)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, *, mcp: bool) -> None:
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        query = scope.get("query_string", b"")
        if query and any(k == "access_token" for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)):
            await self._challenge(send, 400, "invalid_request", "Access tokens are not accepted in the query string")
            return
        if not values:
            _denied(scope, "missing_token")
            await self._challenge(send, 401, None, None)
            return
        if len(values) > 1:
            await self._challenge(send, 400, "invalid_request", "Send exactly one Authorization header")
            return
        scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            await self._challenge(send, 400, "invalid_request", "Use the Bearer authorization scheme")
            return
        try:
            principal = await self.verifier.verify(token)
            if not principal.subject and not principal.client_id:
                # Sessions are bound to (client, issuer, subject): a token naming neither would share
                # one binding with every other such token, so another caller could use its sessions.
                raise InvalidTokenError("The token names neither a subject (sub) nor a client (client_id)")
        except InvalidTokenError as exc:
            _denied(scope, "invalid_token")
            await self._challenge(send, 401, "invalid_token", str(exc))
            return
        except AuthServerUnavailableError as exc:
            _denied(scope, "auth_server_unavailable")
            await respond(send, 503, json.dumps({"error": "temporarily_unavailable",
                                                  "error_description": str(exc)}).encode(),
                           {"content-type": "application/json", "retry-after": "5"})
            return
        policy = self.policy  # once: a reload between two checks must not mix two policies
        if policy.missing_required(principal):
            _denied(scope, "insufficient_scope")
            await self._challenge(send, 403, "insufficient_scope", "The access token lacks required scopes",
                                  scopes=policy.required_scopes)
            return
        if mcp and scope["method"] == "POST" and policy.tool_scopes:  # only per-tool scopes need the name
            peek, receive = await peek_rpc(scope, receive)
            if peek.too_large:
                await respond(send, 413, b'{"error": "request body too large"}', {"content-type": "application/json"})
                return
            if peek.too_deep:  # nested past what can be read: no call can be checked, none goes through
                await respond(send, 400, _PARSE_ERROR, {"content-type": "application/json"})
                return
            for tool in peek.tools:
                decision = await policy.decide(principal, "tools", "call", tool)
                if decision.missing_scopes:  # allowed but for the scopes: step up (a hidden tool is not named)
                    _denied(scope, "insufficient_scope")
                    await self._challenge(send, 403, "insufficient_scope",
                                          f"Calling tool {_ascii(tool)} needs more scopes",
                                          scopes=decision.needed_scopes)
                    return
        scope[PRINCIPAL_KEY] = principal
        scope[TOKEN_KEY] = token
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
        await self.app(scope, receive, send)

    async def _challenge(self, send: Send, status: int, error: str | None, description: str | None, *,
                         scopes: Iterable[str] | None = None) -> None:
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
        await respond(send, status, body, {"content-type": "application/json",
                                            "www-authenticate": "Bearer " + ", ".join(params)})


def _denied(scope: Scope, reason: str) -> None:
    record = scope.get(RECORD_KEY)
    if record is not None:
        record.auth_failure = reason


def _ascii(text: str) -> str:
    """RFC 6750 §3: error_description is a quoted string of printable ASCII without `"` or `\\`."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in text)


def principal_of(ctx: Any) -> Principal:
    """The caller the auth layer verified for this request; anonymous on stdio or with auth off."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    principal = scope.get(PRINCIPAL_KEY) if isinstance(scope, dict) else None
    return principal if isinstance(principal, Principal) else ANONYMOUS
