"""Sessions whose `tools/call` and `tools/list` skip the SDK's per-request stream plumbing.

In a stateful session with JSON answers, the SDK (mcp 2.3) carries each request through a chain of
in-memory streams: the transport validates the whole message with pydantic and writes it to the
session's read stream; the session's dispatcher reads it, spawns a task for it in the session's task
group, and writes the answer to the write stream; a router task reads that and hands it to a
per-request stream the HTTP request is waiting on. That plumbing is a quarter of the server's CPU
per call (README "Performance"), and none of it is needed for a request that is answered in the body of
its own POST.

`DirectTransport` is the SDK's transport with one change: a POST that is exactly one JSON-RPC
`tools/call` or `tools/list` request, on a session whose server task is running, is handed to the
session's own `ServerRunner` in the HTTP request's task. So everything a request is checked and
shaped by is the SDK's, run the same way: the DNS-rebinding and content checks, the session ID and
idle timer (`handle_request`), the method's params validation, the initialize gate, the server
middleware (telemetry, the list cache), the per-version result sieve, the error mapping, and the
JSON answer with its headers. The request is registered with the session's dispatcher while it
runs, so a `notifications/cancelled` for it cancels it as it would the SDK's own (one that landed
on another replica too: converter.server.cancel_relay); it is then answered `Request cancelled`,
as the SDK's transport answers a cancelled request on the 2025 wire.
Anything else (another method, a batch, a body the quick check is unsure of, a session with an
event store) goes the SDK's way, untouched. `server.direct_calls: false` turns this off.

In a session with SSE answers (the default when fronting MCP servers) the direct answer is
deferred (converter.server.deferred_sse): registered as the request's stream, it becomes an event
stream at the call's first progress, log message or request to the client, written as the SDK
writes them, and is one JSON body when the call had nothing to stream.

In stateless mode (`server.stateless`) the SDK makes, for every request, a transport, its streams,
a dispatcher and a server task, and tears them down again. `DirectSessionManager` reads a JSON POST's
body first: one direct request is answered in the request's task by a runner of its own, on a
connection made as the SDK's stateless path makes it (born ready at the header's protocol version,
no way back to the client for requests), through an unconnected `DirectTransport` that runs the same
security checks first; anything else goes the SDK's way with the body handed to it again.

`DirectSessionManager` makes its sessions with this transport and runs their server task itself (as
the SDK's `run_server` does), so the transport can reach the session's runner and dispatcher.

This leans on private parts of mcp 2.3: the transport's `_handle_post_request`, `_message_metadata`,
`_create_json_response` and `_request_streams`, the dispatcher's `_in_flight` table, `_write`,
`_transport_builder` and its context class, and the manager's `_admit_session` / `_serve_opening_request` /
`_handle_stateless_request` and `_lifespan_state`.
tests/test_direct_calls.py and tests/test_deferred_sse.py exercise each (byte-equal answers,
cancellation, the idle timer, the same messages as the SDK's streams), so
`make test-latest` fails on an SDK that changes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any, Protocol, cast
from uuid import uuid4

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    REQUEST_CANCELLED,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import OnNotifyIntercept, coerce_request_id
from mcp.shared.jsonrpc_dispatcher import (
    JSONRPCDispatcher,
    _InFlight,
    _JSONRPCDispatchContext,
    handler_exception_to_error_data,
    progress_token_from_params,
)
from mcp.shared.transport_context import TransportContext
from mcp_types import DEFAULT_NEGOTIATED_VERSION, ErrorData, JSONRPCError, JSONRPCResponse
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from converter.asgi import header, replay
from converter.server import disconnects
from converter.server.answer_relay import AnsweringDispatcher
from converter.server.deferred_sse import DeferredAnswer
from converter.server.direct_requests import NOWHERE, DirectRequest, direct_request, no_back_channel, takes_json

log = logging.getLogger("openapi_mcp.sessions")

class SessionRelaying(Protocol):
    """Sees each session while its server task runs, to relay what lands on another replica than the
    one it concerns (converter.server.cancel_relay, converter.server.answer_relay); may give a
    notification intercept."""

    def watching(self, session_id: str,
                 dispatcher: JSONRPCDispatcher[Any]) -> AbstractContextManager[OnNotifyIntercept | None]: ...


def _intercepting(intercepts: list[OnNotifyIntercept]) -> OnNotifyIntercept | None:
    """One notification intercept running each of `intercepts` (consumed when one consumes it)."""
    if len(intercepts) <= 1:
        return intercepts[0] if intercepts else None

    def intercept(method: str, params: Mapping[str, Any] | None) -> bool:
        return any([each(method, params) for each in intercepts])  # a list: every one runs

    return intercept


class _DirectDispatcher(AnsweringDispatcher):
    """The session's dispatcher, counting what it writes for a direct call whose answer is deferred
    (converter.server.deferred_sse: the answer waits for all of it before the result; the answer is
    the request's stream in the transport's table)."""

    transport: DirectTransport | None = None

    async def _write(self, message: Any, metadata: Any = None) -> None:
        related = getattr(metadata, "related_request_id", None)
        if related is not None and self.transport is not None:
            sink: Any = self.transport._request_streams.get(str(related), (None,))[0]
            if isinstance(sink, DeferredAnswer):
                sink.expected += 1
        await super()._write(message, metadata)


class _TaskCanceller:
    """Stands in for the dispatcher's cancel scope of a request: `notifications/cancelled` calls
    `cancel()`, which cancels the HTTP request's task natively (as `asyncio.timeout` does, balanced
    by `uncancel`), instead of an anyio CancelScope entered and left on every call."""

    __slots__ = ("cancelled", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.task.cancel()


class DirectTransport(StreamableHTTPServerTransport):
    """The SDK's transport, answering `tools/call` and `tools/list` directly (see the module docstring)."""

    # Set by the session's server task while it runs, and only where direct answers apply (JSON
    # answers, no event store to keep them in): None, every request goes the SDK's way.
    runner: ServerRunner[Any] | None = None
    dispatcher: JSONRPCDispatcher[TransportContext] | None = None
    on_direct: Callable[[], None] | None = None  # counts the requests answered directly
    # A stateless request's own transport (never connected): the request its POST was found to be.
    preparsed: DirectRequest | None = None

    async def _handle_post_request(self, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
        runner, dispatcher = self.runner, self.dispatcher
        found = self.preparsed if self.preparsed is not None else await self._direct(request)
        if found is None or runner is None or dispatcher is None or (
                not self.is_json_response_enabled and str(found[0]) in self._request_streams):
            # (an ID in flight here already goes the SDK's way too)
            await super()._handle_post_request(scope, request, receive, send)
            return
        request_id, method, params = found
        answer: JSONRPCResponse | JSONRPCError | None
        if self.is_json_response_enabled:
            answer = await self._answer(runner, dispatcher, request, request_id, method, params)
        else:
            answer = await self._deferred_answer(send, runner, dispatcher, request, request_id, method, params)
        if self.on_direct is not None:
            self.on_direct()
        if answer is not None:  # None: it went out as an event stream
            await self._create_json_response(answer)(scope, receive, send)

    async def _deferred_answer(self, send: Send, runner: ServerRunner[Any],
                               dispatcher: JSONRPCDispatcher[TransportContext], request: Request,
                               request_id: int | str, method: str,
                               params: Mapping[str, Any] | None) -> JSONRPCResponse | JSONRPCError | None:
        """SSE answers: JSON unless the call has something to stream (converter.server.deferred_sse);
        None when the answer went out as an event stream."""
        key = str(request_id)
        deferred = DeferredAnswer(send, {MCP_SESSION_ID_HEADER: self.mcp_session_id} if self.mcp_session_id else {})
        # The router puts the request's messages here, and `_DirectDispatcher` counts them.
        streams = cast(dict[str, Any], self._request_streams)
        streams[key] = (deferred, deferred)
        try:
            answer = await self._answer(runner, dispatcher, request, request_id, method, params)
            await deferred.drain()
            streamed = await deferred.finish(answer)
        except BaseException:
            deferred.abandon()
            raise
        finally:
            if streams.get(key, (None, None))[0] is deferred:
                del streams[key]
        return None if streamed else answer

    async def _direct(self, request: Request) -> DirectRequest | None:
        """The direct request a POST of this session is, or None (the SDK's way)."""
        if (self.runner is None or not self.mcp_session_id
                or request.headers.get(MCP_SESSION_ID_HEADER) != self.mcp_session_id
                or not takes_json(request, sse=not self.is_json_response_enabled)):
            return None
        try:
            body = await request.body()  # kept on `request`: the SDK's path reads the same body again
        except (ClientDisconnect, RuntimeError):  # a client gone mid-body: the SDK's path answers it as always
            return None
        return direct_request(body)

    async def _answer(self, runner: ServerRunner[Any], dispatcher: JSONRPCDispatcher[TransportContext],
                      request: Request, request_id: int | str, method: str,
                      params: Mapping[str, Any] | None) -> JSONRPCResponse | JSONRPCError:
        """What the session's dispatcher would write for this request (its `_handle_request`), in this task."""
        metadata = self._message_metadata(request)
        dctx = _JSONRPCDispatchContext(transport=dispatcher._transport_builder(metadata), _dispatcher=dispatcher,
                                       _request_id=request_id, message_metadata=metadata,
                                       _progress_token=progress_token_from_params(params))
        task = asyncio.current_task()
        assert task is not None  # uvicorn (and the tests) run on asyncio
        canceller = _TaskCanceller(task)
        key = coerce_request_id(request_id)
        # notifications/cancelled finds it here, sets `cancel_requested` and calls `cancel()`
        dispatcher._in_flight[key] = _InFlight(scope=cast(anyio.CancelScope, canceller), dctx=dctx)
        answer: JSONRPCResponse | JSONRPCError | None = None
        try:
            try:
                result = await runner.on_request(dctx, method, params)
            finally:
                dctx.close()
                if (entry := dispatcher._in_flight.get(key)) is not None and entry.dctx is dctx:
                    del dispatcher._in_flight[key]
            if not dctx.cancel_requested.is_set():
                answer = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=result)
        except asyncio.CancelledError:
            if not canceller.cancelled or task.uncancel() > 0:
                raise  # not (only) the client's cancel: the request itself is being cancelled (shutdown)
            canceller.cancelled = False
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:
                log.exception("handler for %r raised", method)
                error = ErrorData(code=0, message=str(exc))  # the SDK dispatcher's catch-all, for the same wire
            if not dctx.cancel_requested.is_set():
                answer = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
        if canceller.cancelled:  # the handler swallowed the cancel: take it back, this task goes on
            task.uncancel()
        if answer is None:  # cancelled by the client: the 2025 wire still ends the request
            answer = JSONRPCError(jsonrpc="2.0", id=request_id,
                                  error=ErrorData(code=REQUEST_CANCELLED, message="Request cancelled"))
        return answer


class DirectSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, with `DirectTransport` sessions whose server task it runs itself."""

    def __init__(self, app: Any, *, direct: bool = True, relays: Sequence[SessionRelaying] = (),
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.direct = direct
        self.relays = tuple(relays)  # `redis:` with sealed sessions: cancels and answers that land elsewhere
        self.direct_answers = 0  # requests its sessions answered directly (the tests read it)

    def _count_direct(self) -> None:
        self.direct_answers += 1

    async def _handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As the SDK's; but a 2026-07-28 POST answered as JSON is cancelled when its client goes, as
        one answered as SSE is (the SDK watches for the disconnect only there). In that era closing
        the request is how a client cancels it: there is no session to send `notifications/cancelled` on."""
        gone = disconnects.of(scope) if self.json_response and scope["method"] == "POST" else None
        version = header(scope, b"mcp-protocol-version") if gone is not None else None
        if gone is None or version is None or version in HANDSHAKE_PROTOCOL_VERSIONS:
            await super()._handle_request(scope, receive, send)
            return
        await disconnects.cancelled_at(gone, super()._handle_request(scope, receive, send))

    async def _handle_stateless_request(self, protocol_version_hint: str | None, scope: Scope, receive: Receive,
                                        send: Send) -> None:
        """As the SDK's, but a POST that is one direct request is answered by a runner of its own in
        this task: no streams, no server task (the SDK's path makes both for every request)."""
        request = Request(scope, receive)
        if not (self.direct and self.json_response) or request.method != "POST" or not takes_json(request):
            await super()._handle_stateless_request(protocol_version_hint, scope, receive, send)
            return
        try:
            body = await request.body()
        except ClientDisconnect:  # a client gone mid-body: the SDK's path answers it as always
            await super()._handle_stateless_request(protocol_version_hint, scope, receive, send)
            return
        replayed = replay(body, receive)  # the SDK's path, and the transport below, read it again
        found = direct_request(body)
        if found is None:
            await super()._handle_stateless_request(protocol_version_hint, scope, replayed, send)
            return
        transport = DirectTransport(mcp_session_id=None, is_json_response_enabled=True, event_store=None,
                                    security_settings=self.security_settings)
        # As the SDK's stateless server: born ready at the header's version, no way back to the client
        # for requests; notifications scoped to the request have no wire in JSON-answer mode.
        connection = Connection.from_envelope(protocol_version_hint or DEFAULT_NEGOTIATED_VERSION, None, None)
        transport.dispatcher = JSONRPCDispatcher(NOWHERE, NOWHERE, inline_methods=frozenset({"initialize"}),
                                                 transport_builder=no_back_channel)
        transport.runner = ServerRunner(self.app, connection, self._lifespan_state)
        transport.preparsed, transport.on_direct = found, self._count_direct
        try:
            await transport.handle_request(scope, replayed, send)  # the security checks first, as the SDK's
        finally:
            await aclose_shielded(connection)

    def _new_transport(self, session_id: str) -> DirectTransport:
        transport = DirectTransport(
            mcp_session_id=session_id, is_json_response_enabled=self.json_response, event_store=self.event_store,
            security_settings=self.security_settings, retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout)
        transport.on_direct = self._count_direct
        return transport

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        """The SDK's admission (the session limit, the owner), with a `DirectTransport`."""
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return None
        session_id = uuid4().hex
        transport = self._new_transport(session_id)
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport
        log.debug("new session %s…", session_id[:12])
        return transport

    async def _serve_opening_request(self, http_transport: StreamableHTTPServerTransport, scope: Scope,
                                     receive: Receive, send: Send) -> None:
        """As the SDK's: the session's server task, then its opening request; a session whose
        opening request fails is discarded again."""
        session_id = http_transport.mcp_session_id
        assert session_id is not None and isinstance(http_transport, DirectTransport)
        established = False
        try:
            task_group: Any = self._task_group  # typed None in the SDK; set while run() is active
            await task_group.start(self._serve_session, http_transport, None, None)
            status: list[int] = []

            async def noting(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            await http_transport.handle_request(scope, receive, noting)
            established = bool(status) and status[0] < 400
        finally:
            if not established:
                await self._discard_session(session_id, http_transport)

    async def _serve_session(self, transport: DirectTransport, version: str | None,
                             restore: Callable[[Connection], None] | None, *,
                             task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """A session's server task, as the SDK's `run_server` (`serve_loop`, `serve_connection`): the
        dispatcher and runner made here are handed to the transport for its direct answers.

        Args:
            version: the protocol version already negotiated (a rebuilt session), else None.
            restore: sets a connection up past its handshake (a rebuilt session), else None.
        """
        session_id = transport.mcp_session_id
        assert session_id is not None
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            try:
                idle_scope = transport.idle_scope or anyio.CancelScope()
                with idle_scope:
                    dispatcher = _DirectDispatcher(read_stream, write_stream,
                                                   inline_methods=frozenset({"initialize"}))
                    dispatcher.transport = transport
                    connection = Connection.for_loop(dispatcher, session_id=session_id, protocol_version_hint=version)
                    if restore is not None:
                        restore(connection)
                    runner = ServerRunner(self.app, connection, self._lifespan_state)
                    if self.direct and self.event_store is None:  # JSON answers, or SSE ones deferred
                        transport.runner, transport.dispatcher = runner, dispatcher
                    try:
                        with ExitStack() as watched:
                            intercepts = [found for relay in self.relays
                                          if (found := watched.enter_context(relay.watching(session_id, dispatcher)))]
                            await dispatcher.run(runner.on_request, runner.on_notify, _intercepting(intercepts))
                    finally:
                        transport.runner = transport.dispatcher = None
                        await aclose_shielded(connection)
                if idle_scope.cancelled_caught:
                    log.info("session %s… idle timeout", session_id[:12])
            except Exception:
                log.exception("session %s… crashed", session_id[:12])
            finally:
                await self._discard_session(session_id, transport)
