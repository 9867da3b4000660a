"""A direct answer in a session with SSE answers: JSON unless the call has something to stream.

With SSE answers (the default when fronting MCP servers, so an upstream's progress reaches the
client during a call), the SDK answers every POST with an event stream fed through the session's
streams: a response task, a writer task and a memory stream per request, and the result encoded
for the stream. Most calls send nothing before their result. A client of the 2025 transport must
accept either answer to a POST (JSON or an event stream), so `DeferredAnswer` defers the choice,
as the SDK's 2026-07-28 entry does:

- registered as the request's stream, it receives what the session's router has for that request
  (progress, log messages, requests the server makes of the client during the call: sampling,
  elicitation, roots); the first such message commits the answer to an event stream and each is
  written as an event, as the SDK writes them;
- a call silent for `KEEPALIVE_SECONDS` commits too and is pinged every `KEEPALIVE_SECONDS`, as the
  SDK's stream is, so a proxy's idle timeout does not cut it;
- at the end the result is the last event of a committed stream, or else one JSON body.

The router calls in from its own task, so the result, made in the request's task, could overtake
the last messages of the call still on their way: the session's dispatcher counts what it writes
for this request (`expected`), and `finish` first waits until all of it has arrived. Writes are
serialised by a lock, a message after the end is dropped (as for an SDK stream already closed),
and a client gone mid-stream breaks only this answer, never the router. Used only without an
event store (nothing to resume from).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCError, JSONRPCResponse
from sse_starlette.event import ServerSentEvent
from starlette.types import Send

log = logging.getLogger("openapi_mcp.sessions")

KEEPALIVE_SECONDS: Final = 15.0  # sse_starlette's ping interval, which the SDK's streams use
DRAIN_SECONDS: Final = 30.0  # how long the result waits for the call's last messages (a stuck router)
_SSE_HEADERS: Final = ((b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
                       (b"content-type", b"text/event-stream; charset=utf-8"), (b"x-accel-buffering", b"no"))


class DeferredAnswer:
    """One POST's answer: an event stream from its first message to stream, else JSON (module docstring)."""

    def __init__(self, send: Send, extra_headers: Mapping[str, str]) -> None:
        self._send = send
        self._extra_headers = extra_headers  # encoded only if the answer becomes a stream
        self._lock = asyncio.Lock()
        self.streaming = False
        self._ended = False
        self._broken = False
        self._keepalive: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            KEEPALIVE_SECONDS, self._silent)
        self._pinger: asyncio.Task[None] | None = None
        self.expected = 0  # messages for this request the session's dispatcher has written
        self._received = 0
        self._arrived = asyncio.Event()

    async def send(self, item: EventMessage) -> None:
        """What the session's router has for this request (it calls this as a stream's `send`)."""
        try:
            await self._write(_event(item.message))
        finally:
            self._received += 1
            self._arrived.set()

    async def drain(self) -> None:
        """Wait until every message written for this request has arrived (see the module docstring)."""
        while self._received < self.expected:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), DRAIN_SECONDS)
            except TimeoutError:
                log.warning("%d message(s) of a call never reached its answer", self.expected - self._received)
                return

    async def aclose(self) -> None:  # the SDK's clean-up closes the request's streams
        return None

    def abandon(self) -> None:
        """The call ended without an answer (the request itself cancelled): nothing more is written."""
        self._stop_keepalive()
        self._ended = True

    async def finish(self, answer: JSONRPCResponse | JSONRPCError) -> bool:
        """End the answer with the result; False when nothing was streamed (the caller answers JSON)."""
        self._stop_keepalive()
        async with self._lock:
            self._ended = True
            if not self.streaming:
                return False
            if not self._broken:
                try:
                    await self._send({"type": "http.response.body", "body": _event(answer), "more_body": False})
                except Exception:  # noqa: BLE001 - the client left: nothing more to tell it
                    log.debug("the client left before the end of its event stream")
            return True

    async def _write(self, chunk: bytes) -> None:
        async with self._lock:
            if self._ended or self._broken:
                return  # after the end (or a client gone): dropped, as for an SDK stream already closed
            try:
                if not self.streaming:
                    self.streaming = True
                    headers = [*_SSE_HEADERS, *((k.lower().encode("latin-1"), v.encode("latin-1"))
                                                for k, v in self._extra_headers.items())]
                    await self._send({"type": "http.response.start", "status": 200, "headers": headers})
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception:  # noqa: BLE001 - never into the router: it serves the whole session
                self._broken = True
                log.debug("the client left during its event stream")

    def _silent(self) -> None:
        self._keepalive = None
        self._pinger = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        while not self._ended and not self._broken:
            comment = ServerSentEvent(comment=f"ping - {datetime.now(UTC)}").encode()
            await self._write(comment)
            await asyncio.sleep(KEEPALIVE_SECONDS)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None


def _event(message: Any) -> bytes:
    """One message as the SDK's streams write it (`_create_event_data`, no event ID without a store)."""
    return ServerSentEvent(data=message.model_dump_json(by_alias=True, exclude_unset=True), event="message").encode()
