"""Sessions any replica can serve: the SDK's session manager, taught to rebuild a session from its ID.

The SDK (mcp 2.3) keeps each stateful session in the memory of the process that answered its
`initialize`; any other process answers `404 Session not found`, so N replicas behind a
round-robin balancer lose the session on the first request that lands elsewhere (and the SDK
client never re-initializes by itself). `SharedSessionManager` keeps the SDK's manager and
transport, and changes two things when `server.session_keys` is set:

- the ID handed out on `initialize` is a sealed `converter.server.session_ids` document (the
  client's initialize params, the bound principal's digest, an expiry) instead of a random UUID;
- a request for an ID this process does not hold is opened with the keys; when it is genuine,
  unexpired, not ended, and the request's principal is the one it is bound to, the session is
  rebuilt here: a transport with that ID and a server task whose `Connection` is already past the
  handshake (the negotiated version and the client's capabilities and info restored), exactly as
  the replica that ran `initialize` holds it. Otherwise: the SDK's 404, as for an unknown session.

So a replica that has never seen a session serves it after one AES-GCM open (a few microseconds,
no network round trip), and keeps serving it from memory until it has been idle for
`session_idle_timeout` (then it is rebuilt again on its next request). A session ended with
DELETE is remembered as ended until it would have expired: in this process, and in Redis when
`redis:` is set (converter.server.ended_sessions), so no replica rebuilds it.

What a rebuilt session does not carry over is what lives only in the memory of the replica that
ran it: resource subscriptions (not offered with sealed sessions). With `redis:`, its
`logging/setLevel` is shared (converter.passthrough.log_levels), and list changes
(converter.server.announcements), `notifications/cancelled` for a call running elsewhere
(converter.server.cancel_relay) and the client's answers to requests the server sent it during a
call (sampling, elicitation, roots relayed from an upstream: converter.server.answer_relay) are
relayed to the replica they concern. README "Running several replicas" lists them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any, Final, Protocol

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext, authorization_context
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import InitializeRequestParams
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from converter.config.server import ServerSettings
from converter.server.direct_calls import DirectSessionManager, SessionRelaying
from converter.server.ended_sessions import LocalEndedSessions
from converter.server.session_ids import SessionSealer, same_owner

log = logging.getLogger("openapi_mcp.sessions")

_SESSION_HEADER: Final = b"mcp-session-id"
ENDED_CHECK_INTERVAL: Final = 1.0  # seconds: how soon a DELETE on one replica ends the session on the others
_MAX_OPENING_BODY: Final = 1 << 20  # bytes of an opening request read to seal its params (the SDK caps bodies too)
_MINTED: ContextVar[tuple[str, float] | None] = ContextVar("openapi_mcp_minted_session", default=None)


class EndedSessions(Protocol):
    """Sessions ended with DELETE, until they would have expired (shared across replicas with Redis)."""

    async def add(self, session_id: str, expires_at: float) -> None: ...

    async def has(self, session_id: str) -> bool: ...


class SharedSessionManager(DirectSessionManager):
    """The SDK's session manager with sealed, rebuildable session IDs (see the module docstring)."""

    def __init__(self, app: Any, *, sealer: SessionSealer, ended: EndedSessions | None = None,
                 clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.sealer = sealer
        self.ended: EndedSessions = ended if ended is not None else LocalEndedSessions(clock)
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._checked: dict[str, float] = {}  # when each held session was last looked up in the shared ended set
        self.rebuilt = 0  # sessions this process rebuilt from their IDs (the tests read it)
        self.on_rebuilt: Callable[[], None] | None = None  # the metric

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = next((bytes(v).decode("latin-1") for k, v in scope["headers"] if k == _SESSION_HEADER), None)
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if session_id is None:
            if scope["method"] != "POST":
                await super()._handle_stateful_request(scope, receive, send)
                return
            receive, minted = await self._mint(receive, requestor)
            token = _MINTED.set(minted)
            try:
                await super()._handle_stateful_request(scope, receive, send)
            finally:
                _MINTED.reset(token)
            return
        if session_id in self._server_instances:
            expires_at = self._expiry.get(session_id)
            if expires_at is not None and expires_at <= self._clock():
                log.info("session %s… reached server.session_lifetime; the client must initialize again",
                         session_id[:12])
                await self._discard_session(session_id, self._server_instances[session_id])
            elif await self._ended_elsewhere(session_id):
                log.info("session %s… was ended on another replica", session_id[:12])
                await self._discard_session(session_id, self._server_instances[session_id])
        elif not await self._rebuild(session_id, requestor):
            await super()._handle_stateful_request(scope, receive, send)  # the SDK's 404 (or 503 when full)
            return
        if scope["method"] != "DELETE":
            await super()._handle_stateful_request(scope, receive, send)
            return
        status: list[int] = []

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await super()._handle_stateful_request(scope, receive, noting)
        if status and status[0] < 300:
            await self.ended.add(session_id, self._expiry_of(session_id))

    async def _ended_elsewhere(self, session_id: str) -> bool:
        """A session held here that another replica ended (shared ended sessions), looked up at most
        once per ENDED_CHECK_INTERVAL per session, so a DELETE reaches every replica within it."""
        if not getattr(self.ended, "is_shared", False):
            return False
        now = self._clock()
        if now - self._checked.get(session_id, float("-inf")) < ENDED_CHECK_INTERVAL:
            return False
        self._checked[session_id] = now
        return await self.ended.has(session_id)

    def _expiry_of(self, session_id: str) -> float:
        sealed = self.sealer.open(session_id)
        return sealed.expires_at if sealed is not None else self._clock() + self.sealer.lifetime

    async def _mint(self, receive: Receive,
                    requestor: AuthorizationContext | None) -> tuple[Receive, tuple[str, float] | None]:
        """Read the opening request (an `initialize`, or the SDK refuses it) and seal its params into an ID."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > _MAX_OPENING_BODY:
                break
        replay = iter(messages)

        async def replaying() -> Message:
            for message in replay:
                return message
            return await receive()

        minted = None
        if size <= _MAX_OPENING_BODY and all(m["type"] == "http.request" for m in messages) \
                and not messages[-1].get("more_body", False):
            params = _initialize_params(b"".join(m.get("body", b"") for m in messages))
            if params is not None:
                minted = self.sealer.seal(params, requestor)
        return replaying, minted

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        minted = _MINTED.get()
        if transport is None or minted is None or transport.mcp_session_id is None:
            return transport
        random_id, (session_id, expires_at) = transport.mcp_session_id, minted
        self._server_instances[session_id] = self._server_instances.pop(random_id)
        if random_id in self._session_owners:
            self._session_owners[session_id] = self._session_owners.pop(random_id)
        transport.mcp_session_id = session_id  # read by the transport for every answer's Mcp-Session-Id
        self._expiry[session_id] = expires_at
        return transport

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self._expiry.pop(session_id, None)
        self._checked.pop(session_id, None)
        await super()._discard_session(session_id, transport)

    async def _rebuild(self, session_id: str, requestor: AuthorizationContext | None) -> bool:
        """Serve `session_id` here if it is a genuine, live session of this requestor (see the module docstring)."""
        sealed = self.sealer.open(session_id)
        if sealed is None or not same_owner(sealed, requestor):
            return False
        try:
            init, negotiated = ServerRunner._negotiate_initialize(sealed.params)
        except ValidationError:
            return False
        if await self.ended.has(session_id):
            return False
        task_group: Any = self._task_group  # typed None in the SDK; set while run() is active
        assert task_group is not None
        async with self._session_creation_lock:
            if session_id in self._server_instances:
                return True  # rebuilt meanwhile by a concurrent request (a GET stream and a POST)
            if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
                return False
            transport = self._new_transport(session_id)
            # Connected before it is registered: a concurrent request that finds the session (calls
            # the client has in flight, landing on this replica together) must find it ready to serve.
            await task_group.start(self._serve_session, transport, negotiated, partial(_past_handshake, init))
            if transport.is_terminated:
                return False
            self._server_instances[session_id] = transport
            if requestor is not None:
                self._session_owners[session_id] = requestor
            self._expiry[session_id] = sealed.expires_at
        self.rebuilt += 1
        if self.on_rebuilt is not None:
            self.on_rebuilt()
        log.debug("rebuilt session %s… from its ID", session_id[:12])
        return True


def _past_handshake(init: InitializeRequestParams, connection: Connection) -> None:
    """A rebuilt session's connection, as the handshake left it on the replica that ran `initialize`."""
    connection.client_params = init  # the handshake's commit (ServerRunner._on_request)
    connection.initialized.set()  # notifications/initialized came long ago, elsewhere


def _initialize_params(body: bytes) -> dict[str, Any] | None:
    """The params of a JSON-RPC `initialize` request in `body`, or None (not one: the SDK answers it)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return None
    params = message.get("params")
    return params if isinstance(params, dict) else None


def build_session_manager(server: Any, settings: ServerSettings, *, json_response: bool,
                          security: TransportSecuritySettings | None, ended: EndedSessions | None = None,
                          relays: Sequence[SessionRelaying] = ()) -> StreamableHTTPSessionManager:
    """The session manager for `server:`: sealed, shared IDs when `session_keys` is set, else in-process
    ones. `ended` and `relays` (`redis:`) serve sealed sessions only: another session lives in
    one process, so nothing about it needs telling the others."""
    common: dict[str, Any] = {
        "json_response": json_response, "stateless": settings.stateless, "security_settings": security,
        "session_idle_timeout": settings.session_idle_timeout, "max_sessions": settings.max_sessions,
        "direct": settings.direct_calls,
    }
    if not settings.session_keys or settings.stateless:
        return DirectSessionManager(server, **common)
    sealer = SessionSealer([key.get_secret_value() for key in settings.session_keys],
                           lifetime=settings.session_lifetime)
    return SharedSessionManager(server, sealer=sealer, ended=ended, relays=relays, **common)
