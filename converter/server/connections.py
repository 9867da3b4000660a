"""Bounds on every phase of an HTTP/1.1 connection: uvicorn's httptools protocol with timers.

uvicorn (0.55) closes a connection only after `timeout_keep_alive` once a response is complete: a
connection that sends nothing, half a request head, or a body slower than promised stays open for
good, and its file descriptor with it. `limit_concurrency` does not help: it counts such
connections and answers 503 to everyone once they fill it. `guarded_protocol` adds what is missing:

- `max_connections` (whole server) and `max_connections_per_client` (per address, IPv6 per /64):
  a connection beyond either makes room by closing the *stalest waiting* connection (of the server,
  or of that client): one idle between requests, or one whose head or body is still awaited, the
  one that has sent nothing for longest. Connections serving a request are never closed for room;
  when all of them are, the new connection is answered 503 and closed before anything is read. So
  the process never runs out of file descriptors, connections that only wait cannot keep anyone
  out, and one client cannot hold every slot with requests in flight;
- `header_timeout`: the whole request head must arrive within it of the accept, else 408 and close
  (a connection that sends nothing included); a later request on a kept-alive connection, within it
  of its first byte (between requests, uvicorn's keep-alive timeout applies);
- `body_timeout`: from the end of the head, the whole body must arrive in time (time in which this
  server stopped reading, because the application or an earlier pipelined request is not ready for
  it, does not count), else 408 (when no response was started) and close;
- `send_timeout`: a client that leaves its response unread (the socket's buffer full) that long is
  cut off;
- `max_header_bytes`: a longer request line plus headers is 431 and close.

And a graceful drain on shutdown (SIGTERM) that never races a client or a balancer: uvicorn
closes every idle kept-alive connection at once, and a request that a balancer (nginx's upstream
keepalive pool) sent on one at that moment is lost after it was sent, so the balancer cannot send
it to another replica (a POST is not retried once sent) and answers 502. Here a draining
connection stays open until the client closes it or its keep-alive timeout ends it, as it would
without a shutdown (the balancer's idle timeout should be the shorter one), and a request that
still arrives on it is served with `Connection: close`: every connection then ends after a whole
response or by the client's own choice. New connections are refused (uvicorn closes the
listening socket), and a balancer sends those requests elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from converter.server import disconnects
from converter.server.addresses import client_key
from converter.telemetry.sinks import Metrics

log = logging.getLogger("openapi_mcp.connections")

_HEAD, _BODY, _APP, _IDLE = "head", "body", "app", "idle"  # what the connection is waiting for from the client
_LOG_EVERY: Final = 10.0  # seconds: at most one warning per reason in this time (an attack must not flood the log)


@dataclass(frozen=True)
class ConnectionLimits:
    """The `server:` connection limits (seconds, counts, bytes)."""

    max_connections: int
    max_connections_per_client: int | None
    header_timeout: float
    body_timeout: float
    send_timeout: float
    max_header_bytes: int


class _HeadTooLargeError(Exception):
    """Raised from a parser callback; httptools turns it into the parse error uvicorn answers."""


def _canned(status: int, phrase: str, text: str, *extra: str) -> bytes:
    body = text.encode()
    head = [f"HTTP/1.1 {status} {phrase}", "content-type: text/plain; charset=utf-8",
            f"content-length: {len(body)}", "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_BUSY: Final = _canned(503, "Service Unavailable", "Too many connections; retry later", "retry-after: 5")
_TIMEOUT: Final = _canned(408, "Request Timeout", "The request did not arrive in time")
_TOO_LARGE: Final = _canned(431, "Request Header Fields Too Large", "The request head is too large")


class _Throttle:
    """Log one warning per reason per `_LOG_EVERY` seconds, with the number left unsaid."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, reason: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -_LOG_EVERY) < _LOG_EVERY:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        self._last[reason] = now
        quiet = self._quiet.pop(reason, 0)
        log.warning("%s%s", message, f" ({quiet} more since the last warning)" if quiet else "")


def guarded_protocol(limits: ConnectionLimits, metrics: Metrics | None = None) -> type[HttpToolsProtocol]:
    """A subclass of uvicorn's httptools protocol enforcing `limits`; one per server (it holds the counts)."""
    per_client: dict[str, dict[Any, None]] = {}  # client key -> its open connections
    throttle = _Throttle()

    def closed(reason: str, message: str) -> None:
        throttle.warn(reason, message)
        if metrics is not None:
            metrics.connections_closed.labels(reason).inc()

    class GuardedProtocol(HttpToolsProtocol):
        _key: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _phase = _HEAD
        _since = 0.0  # loop time the phase began
        # Bytes of the head being received, so partial heads are bounded too: at least (the head began in
        # an earlier piece of data, all of this one is head) and at most (it began somewhere in this one).
        _head_at_least = 0
        _head_at_most = 0
        _began = False  # a request began in the piece of data being parsed
        _ended = False  # a request ended in it
        _running: Any = None  # the request being answered (with pipelining, not always the newest)
        _measure = False  # this piece of data could complete a head larger than max_header_bytes
        _too_large = False

        _last_byte = 0.0  # loop time the client last sent something (or connected)
        _draining = False  # the server is shutting down: every response closes its connection

        def shutdown(self) -> None:
            """Drain (see the module docstring): an idle connection is left to its client and its
            keep-alive timeout; a request being answered closes the connection after its response."""
            self._draining = True
            cycle: Any = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
            # else idle, or a head awaited: uvicorn's keep-alive timer or header_timeout ends it

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._since = self._last_byte = self.loop.time()
            self._key = key = client_key(self.client[0] if self.client else None)
            mine = per_client.setdefault(key, {})
            mine[self] = None
            if metrics is not None:
                metrics.connections_open.inc()
            cap = limits.max_connections_per_client
            if cap is not None and len(mine) > cap and not self._make_room(
                    mine, "client_full", f"{key} has {cap} connections open (server.max_connections_per_client)"):
                return
            if len(self.connections) > limits.max_connections and not self._make_room(
                    self.connections, "server_full", f"{limits.max_connections} connections are open "
                    "(server.max_connections)"):
                return
            # Bounded from the start: a client that sends nothing at all is closed too.
            self._timer = self.loop.call_at(self._since + limits.header_timeout, self._expired)

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self._timer, self._write_timer):
                if timer is not None:
                    timer.cancel()
            if self._key is not None:
                mine = per_client.get(self._key, {})
                mine.pop(self, None)
                if not mine:
                    per_client.pop(self._key, None)
                self._key = None
                if metrics is not None:
                    metrics.connections_open.dec()
            # uvicorn tells only the newest request that the client is gone; with pipelined requests the
            # one being answered is an older one, which would then write to the closed transport.
            running: Any = self._running
            if running is not None and running is not self.cycle and not running.response_complete:
                running.disconnected = True
                running.message_event.set()
            for cycle in (running, self.cycle):  # and whoever asked to hear of it (converter.server.disconnects)
                if cycle is not None and not cycle.response_complete and (gone := disconnects.of(cycle.scope)):
                    gone.fire()
            super().connection_lost(exc)

        # -- reading: head, body, then the application's turn ------------------------------------
        # A timer is armed only when a phase outlasts the data that started it: a request that
        # arrives in one piece (most do) costs no timer at all.

        def data_received(self, data: bytes) -> None:
            self._last_byte = self.loop.time()
            if self._phase == _IDLE:  # a new request on a kept-alive connection
                self._enter(_HEAD)
            # Only a piece that could hold a head too large needs the head measured (most never do).
            self._measure = self._head_at_most + len(data) > limits.max_header_bytes
            self._began = self._ended = False
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self._phase == _HEAD:
                if self._began:  # all of this piece is the new head, unless an earlier request ended in it
                    self._head_at_most = len(data)
                    self._head_at_least = 0 if self._ended else len(data)
                else:
                    self._head_at_least += len(data)
                    self._head_at_most += len(data)
                if self._head_at_least > limits.max_header_bytes:
                    self._close(_TOO_LARGE, "head_too_large", "closed a connection whose request head passed "
                                f"{limits.max_header_bytes} bytes (server.max_header_bytes)")
                    return
            if self._phase in (_HEAD, _BODY) and self._timer is None:
                timeout = limits.header_timeout if self._phase == _HEAD else limits.body_timeout
                self._timer = self.loop.call_at(self._since + timeout, self._expired)

        def on_message_begin(self) -> None:
            if self._phase != _HEAD:  # a pipelined request begins while the previous one is served
                self._enter(_HEAD)
            self._began = True
            self._head_at_least = self._head_at_most = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            if self._measure and len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) > \
                    limits.max_header_bytes:
                self._too_large = True
                raise _HeadTooLargeError  # httptools makes it a parse error; uvicorn answers it (send_400_response)
            queued = len(self.pipeline)
            self.scope[disconnects.DISCONNECT_KEY] = disconnects.Disconnect()  # type: ignore[typeddict-unknown-key]
            super().on_headers_complete()
            if self._draining:  # answered, then closed: the client learns it from the response
                cycle: Any = self.cycle
                cycle.keep_alive = False
            if len(self.pipeline) == queued:  # started at once, not queued behind a request being answered
                self._running = self.cycle
            self._enter(_BODY)

        def on_message_complete(self) -> None:
            self._ended = True
            super().on_message_complete()
            self._enter(_APP)

        def on_response_complete(self) -> None:
            queued = bool(self.pipeline)
            following = self.pipeline[-1][0] if queued else None  # the request uvicorn starts next, if any
            super().on_response_complete()
            if following is not None and (not self.pipeline or self.pipeline[-1][0] is not following):
                self._running = following
            if self._phase == _APP and not queued:
                self._phase = _IDLE  # uvicorn's keep-alive timer runs from here

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._close(_TOO_LARGE, "head_too_large", "closed a connection whose request head passed "
                            f"{limits.max_header_bytes} bytes (server.max_header_bytes)")
                return
            super().send_400_response(msg)

        # -- writing: a client that does not read --------------------------------------------------

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.send_timeout, self._send_expired)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        # -- helpers --------------------------------------------------------------------------------

        def _enter(self, phase: str) -> None:
            self._phase = phase
            self._since = self._last_byte  # phases begin while data arrives: now, to the loop's clock
            self._head_at_least = self._head_at_most = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._phase == _HEAD:
                self._close(_TIMEOUT, "header_timeout", "closed a connection whose request head did not arrive "
                            f"within {limits.header_timeout:g} s (server.header_timeout)")
            elif self._phase == _BODY:
                if self.flow.read_paused:  # this server is not reading (yet): not the client's delay
                    self._timer = self.loop.call_later(limits.body_timeout, self._expired)
                    return
                self._close(_TIMEOUT, "body_timeout", "closed a connection whose request body did not arrive "
                            f"within {limits.body_timeout:g} s (server.body_timeout)")

        def _send_expired(self) -> None:
            self._write_timer = None
            if not self.transport.is_closing():
                closed("send_timeout", "cut off a client that left its response unread for "
                       f"{limits.send_timeout:g} s (server.send_timeout)")
                self.transport.abort()  # close() would wait for the buffer the client does not read

        def _close(self, answer: bytes, reason: str, message: str) -> None:
            """Close the connection, answering `answer` first when no other response is under way on it."""
            closed(reason, message)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            cycle: Any = self.cycle
            if self._phase == _BODY:  # this request's own answer, if nothing is being answered on the connection
                if cycle is not None and not cycle.response_started and self._alone():
                    cycle.disconnected = True  # the application sees a disconnect; its answer must not follow ours
                    cycle.message_event.set()
                    self.transport.write(answer)
            elif self._phase == _HEAD and (cycle is None or cycle.response_complete):  # nothing else is answered
                self.transport.write(answer)
            self.transport.close()  # (idle between requests: closed without a word, as keep-alive ends)

        def _waiting(self) -> bool:
            """Only waiting for the client: idle between requests, or its head or body not all here
            (a body this server is not reading yet, or a head queued behind a request being
            served, is not the client's wait)."""
            if self.transport.is_closing():
                return False
            if self._phase == _IDLE:
                return True
            if self._phase == _HEAD:
                cycle: Any = self.cycle
                return cycle is None or cycle.response_complete
            return self._phase == _BODY and not self.flow.read_paused and self._alone()

        def _alone(self) -> bool:
            """No older (pipelined) request is being answered on this connection."""
            running: Any = self._running
            return running is None or running is self.cycle or running.response_complete

        def _make_room(self, among: Any, reason: str, why: str) -> bool:
            """Close the stalest waiting connection in `among` for this new one; if none, refuse this one."""
            stalest = min((c for c in among if c is not self and c._waiting()), key=lambda c: c._last_byte,
                          default=None)
            if stalest is None:
                closed(reason, f"refused a connection: {why}, all serving requests")
                self.transport.write(_BUSY)
                self.transport.close()
                return False
            stalest._close(_BUSY, "evicted", f"closed the connection that waited longest to make room: {why}")
            return True

    return GuardedProtocol
