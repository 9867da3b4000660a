"""Per-caller and whole-server limits on stateful MCP sessions, in front of the SDK's session manager.

The SDK (mcp 2.3) caps its session table as a whole (`max_sessions`: a plain 503 once full) and
ends a session after `session_idle_timeout` seconds without a request in flight (an open GET stream
counts as one). It has no per-caller cap, so one client that re-initializes in a loop fills the
table for everyone. `SessionLimits` wraps the streamable-HTTP app and keeps its own table of who
holds which session, mirroring the SDK's idle rule:

- over `max_sessions_per_principal`, the caller's own least recently active *idle* session is ended
  (a DELETE through the session manager's public entry, with the owner's credentials), so a client
  that re-initializes in a loop keeps working and holds at most its cap; the evicted session's ID
  answers 404, and MCP clients start a new session on 404. When every session of the caller has a
  request in flight (a stream open), the new one is refused: 429 with `Retry-After`.
- with `max_sessions` open, a new session is refused: 503 with `Retry-After` (the time until the
  oldest idle session expires). One caller never ends another caller's sessions.
- a session leaves the table when its DELETE succeeds, when it answers 404 (ended on the SDK's
  side), or when it has been idle for `session_idle_timeout` (the SDK ends it at that moment too).

The principal is the verified token identity (issuer, client id, subject: the SDK's session
binding) or, with auth off, the client address (IPv6: its /64). 2026-07-28 requests (a
`MCP-Protocol-Version` outside the handshake versions) are sessionless and pass straight through;
so does everything in stateless mode, where this layer is not installed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext, authorization_context
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from converter.auth.layer import PRINCIPAL_KEY
from converter.auth.principal import Principal
from converter.config.server import ServerSettings
from converter.server.addresses import client_key
from converter.telemetry.sinks import Metrics

log = logging.getLogger("openapi_mcp.sessions")

BUSY_RETRY_AFTER: Final = 30  # seconds: when every session in the way has a request in flight
EVICT_TIMEOUT: Final = 5.0  # seconds an evicting DELETE may take
_SESSION_HEADER: Final = b"mcp-session-id"
_VERSION_HEADER: Final = b"mcp-protocol-version"
_KEPT_HEADERS: Final = (b"host", b"origin")  # what the SDK's DNS-rebinding check reads on the evicting DELETE
_SERVER_ERROR: Final = -32000  # JSON-RPC: implementation-defined server error


class SessionManager(Protocol):
    """The SDK's `StreamableHTTPSessionManager`, as far as eviction uses it (its public entry)."""

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@dataclass(eq=False)
class Session:
    """One stateful session (or one being opened) in the table."""

    key: Hashable  # whose cap it counts against
    owner: AuthorizationContext | None  # the SDK's binding: only the owner's requests reach the session
    user: Any = field(repr=False)  # scope["user"] of the request that opened it (for the evicting DELETE)
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    session_id: str | None = None
    in_flight: int = 1
    idle_since: float = 0.0


@dataclass(frozen=True)
class Refusal:
    status: int  # 429: this caller's cap; 503: the whole server
    reason: str  # metric label: principal_limit | server_limit
    retry_after: int
    message: str


class SessionTable:
    """Who holds which session; pruned lazily with the SDK's idle rule, so no timers are needed."""

    def __init__(self, *, max_sessions: int, per_principal: int | None, idle_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.per_principal = per_principal
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._all: dict[Session, None] = {}
        self._by_id: dict[str, Session] = {}
        self._by_key: dict[Hashable, dict[Session, None]] = {}  # each in order of going idle (oldest first)
        self._idle: dict[Session, None] = {}  # in order of idle_since (oldest first)

    def __len__(self) -> int:
        self.prune()
        return len(self._all)

    def count(self, key: Hashable) -> int:
        self.prune()
        return len(self._by_key.get(key, ()))

    def admit(self, key: Hashable, owner: AuthorizationContext | None, user: Any,
              headers: tuple[tuple[bytes, bytes], ...]) -> tuple[Session | None, Session | Refusal]:
        """Room for a new session of `key`: (a session of its own to end first or None, the new one), or a refusal."""
        self.prune()
        victim = None
        mine = self._by_key.get(key, {})
        if self.per_principal is not None and len(mine) >= self.per_principal:
            victim = next((s for s in mine if s.in_flight == 0 and s.session_id is not None), None)
            if victim is None:
                return None, Refusal(429, "principal_limit", BUSY_RETRY_AFTER,
                                     f"Too many open sessions for this caller ({self.per_principal}, all in use); "
                                     "end one (HTTP DELETE) or retry later")
            self.remove(victim)
        elif len(self._all) >= self.max_sessions:
            return None, Refusal(503, "server_limit", self._retry_after(),
                                 f"The server has its maximum of {self.max_sessions} open sessions; retry later")
        return victim, self._add(Session(key, owner, user, headers))

    def adopt(self, key: Hashable, owner: AuthorizationContext | None, user: Any,
              headers: tuple[tuple[bytes, bytes], ...], session_id: str) -> None:
        """The SDK served a session this table had already forgotten: count it again, idle from now."""
        session = self._add(Session(key, owner, user, headers))
        self.opened(session, session_id)
        self.end(session)

    def _add(self, session: Session) -> Session:
        self._all[session] = None
        self._by_key.setdefault(session.key, {})[session] = None
        return session

    def opened(self, session: Session, session_id: str) -> None:
        """The opening request was answered with this ID: the session is established."""
        stale = self._by_id.get(session_id)
        if stale is not None and stale is not session:
            self.remove(stale)  # one entry per session, whatever order the requests end in
        session.session_id = session_id
        self._by_id[session_id] = session

    def begin(self, session_id: str, owner: AuthorizationContext | None) -> Session | None:
        """A request for `session_id` that the SDK will hand to that session (same owner)."""
        self.prune()
        session = self._by_id.get(session_id)
        if session is None or session.owner != owner:
            return None
        session.in_flight += 1
        self._idle.pop(session, None)
        return session

    def end(self, session: Session) -> None:
        """A request of `session` is over; with none left in flight its idle time starts."""
        session.in_flight -= 1
        if session.in_flight or session not in self._all:
            return
        session.idle_since = self._clock()
        mine = self._by_key[session.key]
        del mine[session]
        mine[session] = None  # now the most recently active of its caller's sessions
        self._idle[session] = None

    def knows(self, session_id: str) -> bool:
        return session_id in self._by_id

    def remove(self, session: Session) -> None:
        self._all.pop(session, None)
        self._idle.pop(session, None)
        if session.session_id is not None and self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]
        mine = self._by_key.get(session.key)
        if mine is not None:
            mine.pop(session, None)
            if not mine:
                del self._by_key[session.key]

    def prune(self) -> None:
        """Forget sessions idle for `idle_timeout`: the SDK has ended them by now (its clock started first)."""
        now = self._clock()
        while self._idle:
            oldest = next(iter(self._idle))
            if oldest.idle_since + self.idle_timeout > now:
                break
            self.remove(oldest)

    def _retry_after(self) -> int:
        if not self._idle:
            return BUSY_RETRY_AFTER
        oldest = next(iter(self._idle))
        return max(1, math.ceil(oldest.idle_since + self.idle_timeout - self._clock()))


def principal_key(scope: Scope) -> Hashable:
    """The verified token identity, or (auth off, or anonymous) the client's address."""
    principal = scope.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal) and principal.is_authenticated:
        return ("token", principal.issuer, principal.client_id, principal.subject)
    client = scope.get("client")
    return ("address", client_key(client[0] if client else None))


class SessionLimits:
    """ASGI layer on the MCP path, inside the auth layer (it reads the principal) and outside the SDK."""

    def __init__(self, app: ASGIApp, *, table: SessionTable, manager: SessionManager, mcp_path: str,
                 metrics: Metrics | None = None) -> None:
        self.app = app
        self.table = table
        self.manager = manager
        self.mcp_path = mcp_path.rstrip("/") or "/"
        self.metrics = metrics
        if metrics is not None:
            metrics.sessions_open.set_function(lambda: len(table))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") != self.mcp_path:
            await self.app(scope, receive, send)
            return
        session_id = version = None
        for name, value in scope["headers"]:
            if name == _SESSION_HEADER:
                session_id = bytes(value).decode("latin-1")
            elif name == _VERSION_HEADER:
                version = bytes(value).decode("latin-1")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self.app(scope, receive, send)  # the SDK serves these sessionless (or refuses the version)
            return
        user = scope.get("user")
        owner = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if session_id is None:
            if scope["method"] != "POST":  # only a POST (an initialize) can open a session; the SDK refuses the rest
                await self.app(scope, receive, send)
                return
            await self._open(scope, receive, send, owner)
        else:
            await self._use(scope, receive, send, session_id, owner)

    async def _open(self, scope: Scope, receive: Receive, send: Send, owner: AuthorizationContext | None) -> None:
        """A request without a session ID: the SDK opens a session for it (kept if it answers < 400)."""
        victim, admitted = self.table.admit(principal_key(scope), owner, scope.get("user"), _kept(scope))
        if isinstance(admitted, Refusal):
            log.warning("refused a new MCP session (%s): %s", admitted.reason, admitted.message)
            if self.metrics is not None:
                self.metrics.sessions_refused.labels(admitted.reason).inc()
            await _refuse(send, admitted)
            return
        if victim is not None:
            await self._evict(victim)

        def started(status: int, session_id: str | None) -> None:
            # Recorded as the answer goes out, not when the app returns: a client may use the session
            # before then, and that request must find it here (else it is counted twice).
            if status < 400 and session_id:
                self.table.opened(admitted, session_id)

        answer = _Answer(send, started)
        try:
            await self.app(scope, receive, answer)
        finally:
            if admitted.session_id is not None:
                self.table.end(admitted)
            else:
                self.table.remove(admitted)

    async def _use(self, scope: Scope, receive: Receive, send: Send, session_id: str,
                   owner: AuthorizationContext | None) -> None:
        session = self.table.begin(session_id, owner)
        deleting = scope["method"] == "DELETE"

        def started(status: int, _: str | None) -> None:
            # Ended (DELETE), or already gone on the SDK's side: forgotten as the client learns it, so
            # the session it opens next finds the slot free.
            if session is not None and (status == 404 or (deleting and status < 300)):
                self.table.remove(session)

        answer = _Answer(send, started)
        try:
            await self.app(scope, receive, answer)
        finally:
            if session is not None:
                self.table.end(session)
            elif (answer.status is not None and answer.status < 400 and not deleting
                  and not self.table.knows(session_id)):
                # Served by the SDK, so it is open there: the two tables never drift apart for long.
                self.table.adopt(principal_key(scope), owner, scope.get("user"), _kept(scope), session_id)

    async def _evict(self, victim: Session) -> None:
        """End the caller's own idle session as its client would: DELETE, with the owner's credentials."""
        assert victim.session_id is not None
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "DELETE", "scheme": "http", "path": self.mcp_path, "raw_path": self.mcp_path.encode(),
            "root_path": "", "query_string": b"", "client": None, "server": None, "state": {},
            "headers": [(_SESSION_HEADER, victim.session_id.encode("latin-1")), *victim.headers],
        }
        if victim.user is not None:
            scope["user"] = victim.user
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        status: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        with anyio.CancelScope(shield=True), anyio.move_on_after(EVICT_TIMEOUT):
            await self.manager.handle_request(scope, receive, send)
        log.info("ended the caller's least recently used idle MCP session to make room (%s)",
                 status[0] if status else "no answer")
        if self.metrics is not None:
            self.metrics.sessions_evicted.inc()


def _kept(scope: Scope) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k, v) for k, v in scope["headers"] if k in _KEPT_HEADERS)


def with_session_limits(mcp_app: ASGIApp, manager: SessionManager, server: ServerSettings,
                        metrics: Metrics | None) -> ASGIApp:
    """`mcp_app` behind the `server:` session limits; as it is in stateless mode (no sessions there)."""
    if server.stateless:
        return mcp_app
    table = SessionTable(max_sessions=server.max_sessions, per_principal=server.max_sessions_per_principal,
                         idle_timeout=server.session_idle_timeout)
    return SessionLimits(mcp_app, table=table, manager=manager, mcp_path=server.path, metrics=metrics)


class _Answer:
    """A `send` that notes the response status, and tells `on_start` the status and `Mcp-Session-Id`
    before the client can see them."""

    def __init__(self, send: Send, on_start: Callable[[int, str | None], None]) -> None:
        self._send = send
        self._on_start = on_start
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            session_id = None
            for name, value in message.get("headers", ()):
                if name.lower() == _SESSION_HEADER:
                    session_id = bytes(value).decode("latin-1")
            self._on_start(self.status, session_id)
        await self._send(message)


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None,
                       "error": {"code": _SERVER_ERROR, "message": refusal.message}}).encode()
    await send({"type": "http.response.start", "status": refusal.status, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", str(refusal.retry_after).encode()),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
