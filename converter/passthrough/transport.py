"""The HTTP side of the passthrough: what makes a proxied request cheap, and what failed, by type.

The SDK client (converter.passthrough.source) owns the upstream session: handshake, lists, pings, the GET
stream of notifications. Two things here make calls cheaper than through it (bench/passthrough.py):

* `SessionTransport`, the SDK client's HTTP transport, keeps connections alive: the SDK closes a
  POST's event stream as soon as the JSON-RPC answer arrived, a few bytes before the end of the
  body, which would cost one TCP connection per call. It also notes the session id the upstream
  gave, for the direct calls.
* `DirectCalls` sends the requests made for a caller (`tools/call`, `tasks/*`, reads, prompts,
  completions, subscriptions) itself, on that session, over a pooled aiohttp client (the one the
  OpenAPI upstreams use): one POST, the answer read from JSON or SSE (`httpx2.EventSource`, the
  SSE parser of the HTTP stack the SDK uses), the upstream's progress and log messages passed on
  as they come. A request the upstream makes of the client on that stream (sampling,
  elicitation, roots) goes to the calling client when `mcp_upstream.relay` allows it, and is
  answered "method not found" otherwise.

Bodies are decoded in bounded steps (converter.bodies): only `gzip, deflate` are asked for, a JSON
answer may be at most MAX_EVENT_BYTES decoded, and an event stream may not go that far without an
event boundary. Redirects are never followed (the configured credentials must not go where one
points): a 3xx is a LinkError.

Failures are typed: `MCPError` is only ever the upstream's own JSON-RPC error answer;
`SessionGoneError` says the upstream no longer knows the session (it restarted, nothing was
done); `LinkError` says the exchange failed below JSON-RPC (connection, stream, garbage).
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Protocol, cast

import anyio
import httpx2
import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.bodies import ACCEPT_ENCODING, BodyDecodingError, BoundedBody, Decoder, LayerFullError
from converter.errors import ConverterError, UpstreamError

DRAIN_SECONDS: Final = 0.05
MAX_EVENT_BYTES: Final = 32 * 1024 * 1024  # one SSE event (a large tool result fits; a runaway does not)
DRAIN_BYTES: Final = 1024 * 1024  # what is read of a stream after its answer, to keep the connection


class LinkError(ConverterError):
    """The exchange with the upstream failed below JSON-RPC: refused or dropped connection, a
    broken or oversized event stream, an answer that is not JSON-RPC."""


class SessionGoneError(LinkError):
    """The upstream answered 404/400 to a request on our session: it no longer knows the session
    (it restarted) and did nothing with the request, so sending it again once reconnected is safe."""


class ProgressRelay(Protocol):
    """Passes an upstream's progress notification on to the calling client."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None: ...


# Asks the calling client a request the upstream made during the call: (method, params) -> result.
RequestRelay = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
# Passes a notification the upstream sent on the call's stream (notifications/message, ...) on: (method, params).
NotificationRelay = Callable[[str, dict[str, Any]], Awaitable[None]]


@asynccontextmanager
async def tapped(transport: AbstractAsyncContextManager[Any], look: Callable[[Any], None]) -> AsyncIterator[Any]:
    """The SDK client's transport, with `look` shown each message it reads before the SDK does.

    The SDK drops notifications its protocol version does not define (2025-11-25's
    `notifications/tasks/status` among them); this is where the passthrough still sees them.
    """
    async with transport as (read_stream, write_stream):
        yield _Tap(read_stream, look), write_stream


class _Tap:
    """A read stream passing each item to `look` first (the dispatcher duck-types its streams)."""

    def __init__(self, inner: Any, look: Callable[[Any], None]) -> None:
        self._inner = inner
        self._look = look

    @property
    def last_context(self) -> Any:  # the sender's contextvars, as the SDK's own stream keeps them
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        item = await self._inner.receive()
        self._look(item)
        return item

    def __aiter__(self) -> _Tap:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Tap:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SessionTransport(httpx2.AsyncBaseTransport):
    """httpx2 transport for the SDK client: connections survive the SDK's early close of an SSE
    answer (the rest of the body is read for a moment first), and the session id is noted.

    Bodies are decoded here, in bounded steps (converter.bodies), and reach the SDK decoded (no
    Content-Encoding left for httpx2, whose decoders inflate a whole chunk at once).
    """

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.session_id: str | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["accept-encoding"] = ACCEPT_ENCODING
        response = await self._inner.handle_async_request(request)
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_id = session_id
        if isinstance(response.stream, httpx2.AsyncByteStream):
            stream: httpx2.AsyncByteStream = response.stream
            if request.method == "POST":
                stream = _DrainOnClose(stream)
            try:
                decoder = Decoder(",".join(response.headers.get_list("content-encoding")))
            except BodyDecodingError as exc:
                await stream.aclose()
                raise httpx2.DecodingError(str(exc), request=request) from exc
            events = response.headers.get("content-type", "").startswith("text/event-stream")
            response.stream = _Bounded(stream, decoder, events, request)
            for name in ("content-encoding", "content-length"):
                if name in response.headers:
                    del response.headers[name]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _DrainOnClose(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        self._parts = inner.__aiter__()  # held here: closing the reader's generator must not close it

    async def __aiter__(self) -> Any:
        while True:
            try:
                part = await self._parts.__anext__()
            except StopAsyncIteration:
                return
            yield part

    async def aclose(self) -> None:
        try:
            with anyio.move_on_after(DRAIN_SECONDS):
                while True:
                    await self._parts.__anext__()
        except StopAsyncIteration:
            pass  # the body ended: the connection goes back to the pool
        except Exception:  # noqa: BLE001, S110 - a broken body just closes the connection
            pass
        finally:
            await self._parts.aclose()  # type: ignore[attr-defined]
            await self._inner.aclose()


class _Bounded(httpx2.AsyncByteStream):
    """A response body decoded in bounded pieces, refused past MAX_EVENT_BYTES (see SessionTransport)."""

    def __init__(self, inner: httpx2.AsyncByteStream, decoder: Decoder, events: bool, request: httpx2.Request) -> None:
        self._inner, self._decoder, self._events, self._request = inner, decoder, events, request
        self._pending = 0  # decoded bytes since the last event boundary (or in all, for JSON)

    async def __aiter__(self) -> Any:
        async for raw in self._inner:
            try:
                for piece in self._decoder.feed(raw):
                    self._count(piece)
                    yield piece
            except (BodyDecodingError, LayerFullError) as exc:
                raise httpx2.DecodingError(f"the MCP upstream's answer cannot be read ({exc})",
                                           request=self._request) from exc
        try:
            self._decoder.check_complete()
        except BodyDecodingError as exc:
            raise httpx2.DecodingError(str(exc), request=self._request) from exc

    def _count(self, piece: bytes) -> None:
        end = max(piece.rfind(b"\n\n"), piece.rfind(b"\r\n\r\n")) if self._events else -1
        self._pending = len(piece) - end if end >= 0 else self._pending + len(piece)
        if self._pending > MAX_EVENT_BYTES:
            what = "an event of its stream" if self._events else "its answer"
            raise httpx2.DecodingError(f"the MCP upstream sent {what} larger than {MAX_EVENT_BYTES} bytes",
                                       request=self._request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TooLargeError(Exception):
    """The upstream's answer (or one event of it) is over MAX_EVENT_BYTES: the link is fine, the answer is not."""


class _TextBody:
    """What `httpx2.EventSource` reads of a response (headers, text chunks), over an aiohttp one,
    decoded in bounded pieces (EventSource bounds each event at MAX_EVENT_BYTES)."""

    request = None

    def __init__(self, response: Any, decoder: Decoder) -> None:
        self.headers = response.headers
        self._content = response.content
        self._decoder = decoder

    async def aiter_text(self) -> AsyncIterator[str]:
        text = codecs.getincrementaldecoder("utf-8")()  # strict: a broken stream is a LinkError
        pending = 0  # decoded bytes since the last event boundary
        async for raw in self._content.iter_any():
            for piece in self._decoder.feed(raw):
                end = max(piece.rfind(b"\n\n"), piece.rfind(b"\r\n\r\n"))
                pending = len(piece) - end if end >= 0 else pending + len(piece)
                if pending > MAX_EVENT_BYTES:
                    raise _TooLargeError("an event larger than")
                if decoded := text.decode(piece):
                    yield decoded
        self._decoder.check_complete()
        if tail := text.decode(b"", final=True):
            yield tail


class DirectCalls:
    """JSON-RPC requests on an upstream session, straight over aiohttp (see the module docstring)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        import aiohttp

        self.url = url
        self._ids = itertools.count(1)
        self._session = aiohttp.ClientSession(
            headers={**headers, "content-type": "application/json", "accept": "application/json, text/event-stream",
                     "accept-encoding": ACCEPT_ENCODING},
            auto_decompress=False,  # decoded by converter.bodies, in bounded steps
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def call_tool(self, session_id: str | None, version: str, name: str, arguments: Mapping[str, Any],
                        progress: ProgressRelay | None,
                        extra_headers: Mapping[str, str] | None = None,
                        ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None) -> types.CallToolResult:
        """Raises: MCPError (the upstream's JSON-RPC error), SessionGoneError, LinkError."""
        result = await self.request(session_id, version, "tools/call", {"name": name, "arguments": dict(arguments)},
                                    progress=progress, extra_headers=extra_headers, ask=ask, notify=notify)
        return types.CallToolResult.model_validate(result, by_name=False)

    async def request(self, session_id: str | None, version: str, method: str, params: dict[str, Any], *,
                      progress: ProgressRelay | None = None,
                      extra_headers: Mapping[str, str] | None = None,
                      ask: RequestRelay | None = None,
                      notify: NotificationRelay | None = None) -> dict[str, Any]:
        """Send `method` on the session and return its JSON-RPC `result` object, as sent.

        Raises:
            MCPError: the upstream answered with a JSON-RPC error.
            SessionGoneError: the upstream no longer knows the session (HTTP 404 or 400).
            LinkError: the exchange failed (connection, stream, an answer that is not JSON-RPC).
        """
        import aiohttp

        request_id = f"openapi-mcp-{next(self._ids)}"
        if progress is not None:
            params = {**params, "_meta": {**params.get("_meta", {}), "progressToken": request_id}}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        # The caller's claim headers (claim_to_header), then the session's own, which they cannot replace.
        headers = {**(extra_headers or {}), "mcp-protocol-version": version}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        try:
            # Redirects are never followed: the configured credentials must not go where one points.
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if response.status in (400, 404) and session_id is not None:
                    raise SessionGoneError(f"the upstream answered HTTP {response.status} on session {session_id!r}")
                if 300 <= response.status < 400:
                    raise UpstreamError(f"the MCP upstream {self.url} answered {method} with HTTP {response.status} "
                                        f"(a redirect to {response.headers.get('location', '')!r}); redirects are not "
                                        "followed", method=method, url=self.url)
                encoding = ",".join(response.headers.getall("content-encoding", ()))
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("text/event-stream"):
                    answer = await self._read_events(response, Decoder(encoding), request_id, session_id, version,
                                                     progress, ask, notify)
                    # The server ends the stream right after the answer: read to the end so that the
                    # connection is kept for the next call (aiohttp closes one released mid-body).
                    with anyio.move_on_after(DRAIN_SECONDS):
                        await _drain(response)
                else:
                    whole = BoundedBody(encoding, MAX_EVENT_BYTES)
                    async for chunk in response.content.iter_any():
                        if not whole.add(chunk):
                            raise _TooLargeError("more than")
                    answer = json.loads(whole.finish())
        # The answer is unusable, the link is not broken: a tool error, no reconnect.
        except _TooLargeError as exc:
            raise UpstreamError(f"the MCP upstream {self.url} answered {method} with {exc} {MAX_EVENT_BYTES} bytes",
                                method=method, url=self.url) from None
        except BodyDecodingError as exc:
            raise UpstreamError(f"the MCP upstream {self.url} answered {method} with a body that cannot be read "
                                f"({exc})", method=method, url=self.url) from exc
        except (aiohttp.ClientError, httpx2.SSEError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise LinkError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise LinkError("the upstream's answer is not a JSON-RPC response" if answer is not None
                            else "the upstream's event stream ended without an answer")
        if "error" in answer:
            try:
                error = types.ErrorData.model_validate(answer["error"])
            except ValueError as exc:
                raise LinkError("the upstream's JSON-RPC error is malformed") from exc
            raise MCPError.from_error_data(error)
        result = answer["result"]
        if not isinstance(result, dict):
            raise LinkError("the upstream's JSON-RPC result is not an object")
        return cast(dict[str, Any], result)

    async def _read_events(self, response: Any, decoder: Decoder, request_id: str, session_id: str | None,
                           version: str, progress: ProgressRelay | None, ask: RequestRelay | None,
                           notify: NotificationRelay | None) -> Any:
        events = httpx2.EventSource(cast(httpx2.Response, _TextBody(response, decoder)),
                                    max_event_size=MAX_EVENT_BYTES)
        async for event in events:
            if not event.data.strip():
                continue  # a priming event (an id for resumption, no message)
            message = json.loads(event.data)
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return message
            await self._on_message(message, request_id, session_id, version, progress, ask, notify)
        return None  # the stream ended without the answer

    async def _on_message(self, message: Any, request_id: str, session_id: str | None, version: str,
                          progress: ProgressRelay | None, ask: RequestRelay | None,
                          notify: NotificationRelay | None) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            return
        method: str = message["method"]
        raw_params = message.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if "id" not in message:  # a notification about this request
            if method == "notifications/progress":
                if progress is not None and params.get("progressToken") == request_id:
                    await progress(float(params.get("progress", 0)), params.get("total"), params.get("message"))
            elif notify is not None:
                await notify(method, params)
            return
        # A request to the client: ask the caller, if we may.
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            if ask is None:
                raise MCPError(types.METHOD_NOT_FOUND, "Method not found")
            reply["result"] = await ask(method, params)
        except MCPError as exc:
            reply["error"] = exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)
        headers = {"mcp-protocol-version": version}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        async with self._session.post(self.url, data=json.dumps(reply), headers=headers, allow_redirects=False):
            pass


async def _drain(response: Any) -> None:
    """Read (and drop) what is left of a body, up to DRAIN_BYTES: enough for the end of an event stream."""
    left = DRAIN_BYTES
    async for chunk in response.content.iter_any():
        left -= len(chunk)
        if left <= 0:
            return
