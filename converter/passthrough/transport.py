"""The HTTP side of the passthrough: what makes a proxied `tools/call` cheap.

The SDK client (converter.passthrough.source) owns the upstream session: handshake, lists, pings, the GET
stream of notifications. Two things here make calls cheaper than through it (bench/passthrough.py):

* `SessionTransport`, the SDK client's HTTP transport, keeps connections alive: the SDK closes a
  POST's event stream as soon as the JSON-RPC answer arrived, a few bytes before the end of the
  body, which would cost one TCP connection per call. It also notes the session id the upstream
  gave, for the direct calls.
* `DirectCalls` sends `tools/call` itself, on that session, over a pooled aiohttp client (the
  one the OpenAPI upstreams use): one POST, the answer read from JSON or SSE, the upstream's
  progress passed on as it comes. A request the upstream makes of the client on that stream
  (sampling, elicitation, roots) goes to the calling client when `mcp_upstream.relay` allows
  it, and is answered "method not found" otherwise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import anyio
import httpx2
import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.bodies import ACCEPT_ENCODING, BodyDecodingError, BoundedBody, Decoder, LayerFullError
from converter.errors import UpstreamError

DRAIN_SECONDS: Final = 0.05
MAX_EVENT_BYTES: Final = 32 * 1024 * 1024  # one SSE event (a large tool result fits; a runaway does not)
# What the SDK reports for the same failures, so that converter.passthrough.source handles both paths alike.
SESSION_GONE: Final = "Session terminated"
CONNECTION_FAILED: Final = "Connection closed"

class ProgressRelay(Protocol):
    """Passes an upstream's progress notification on to the calling client."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None: ...


# Asks the calling client a request the upstream made during the call: (method, params) -> result.
RequestRelay = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class SessionTransport(httpx2.AsyncBaseTransport):
    """httpx2 transport for the SDK client: connections survive the SDK's early close of an SSE
    answer (the rest of the body is read for a moment first), and the session id is noted.

    Bodies are decoded here, in bounded steps (converter.bodies), and reach the SDK undecoded-free
    (no Content-Encoding left for httpx2, whose decoders inflate a whole chunk at once): a JSON
    answer may be at most MAX_EVENT_BYTES decoded, an event stream may not go that far without an
    event boundary. The client (converter.passthrough.source) never follows redirects.
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


class DirectCalls:
    """`tools/call` on an upstream session, straight over aiohttp (see the module docstring)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        import aiohttp

        self.url = url
        self._ids = itertools.count(1)
        self._session = aiohttp.ClientSession(
            headers={**headers, "content-type": "application/json", "accept": "application/json, text/event-stream",
                     "accept-encoding": ACCEPT_ENCODING},
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,  # decoded by converter.bodies, in bounded steps
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def call_tool(self, session_id: str, version: str, name: str, arguments: Mapping[str, Any],
                        progress: ProgressRelay | None,
                        extra_headers: Mapping[str, str] | None = None,
                        ask: RequestRelay | None = None) -> types.CallToolResult:
        """Raises: MCPError: the upstream's JSON-RPC error, or the SDK's words for a failed exchange."""
        import aiohttp

        request_id = f"openapi-mcp-{next(self._ids)}"
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments)}
        if progress is not None:
            params["_meta"] = {"progressToken": request_id}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})
        # The caller's claim headers (claim_to_header), then the session's own, which they cannot replace.
        headers = {**(extra_headers or {}), "mcp-session-id": session_id, "mcp-protocol-version": version}
        try:
            # Redirects are never followed: the configured credentials must not go where one points.
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                if response.status in (400, 404):  # the upstream no longer knows the session
                    raise MCPError(types.INVALID_REQUEST, SESSION_GONE)
                if 300 <= response.status < 400:
                    raise UpstreamError(f"the MCP upstream {self.url} answered tools/call with HTTP {response.status} "
                                        f"(a redirect to {response.headers.get('location', '')!r}); redirects are "
                                        "not followed", method="tools/call", url=self.url)
                encoding = ",".join(response.headers.getall("content-encoding", ()))
                content_type = response.headers.get("content-type", "")
                if content_type.startswith("text/event-stream"):
                    answer = await self._read_events(response, Decoder(encoding), request_id, session_id, version,
                                                     progress, ask)
                    # The server ends the stream right after the answer: read to the end so that the
                    # connection is kept for the next call (aiohttp closes one released mid-body).
                    with anyio.move_on_after(DRAIN_SECONDS):
                        await _drain(response)
                else:
                    whole = BoundedBody(encoding, MAX_EVENT_BYTES)
                    async for chunk in response.content.iter_any():
                        if not whole.add(chunk):
                            raise UpstreamError(f"the MCP upstream {self.url} answered tools/call with more than "
                                                f"{MAX_EVENT_BYTES} bytes", method="tools/call", url=self.url)
                    answer = json.loads(whole.finish())
        except BodyDecodingError as exc:
            raise UpstreamError(f"the MCP upstream {self.url} answered tools/call with a body that cannot be read "
                                f"({exc})", method="tools/call", url=self.url) from exc
        except (aiohttp.ClientError, ValueError, UnicodeDecodeError) as exc:
            raise MCPError(types.CONNECTION_CLOSED, CONNECTION_FAILED) from exc
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise MCPError(types.CONNECTION_CLOSED, CONNECTION_FAILED)
        if "error" in answer:
            raise MCPError.from_error_data(types.ErrorData.model_validate(answer["error"]))
        return types.CallToolResult.model_validate(answer["result"], by_name=False)

    async def _read_events(self, response: Any, decoder: Decoder, request_id: str, session_id: str, version: str,
                           progress: ProgressRelay | None, ask: RequestRelay | None) -> Any:
        buffer, data, searched = b"", [], 0
        async for raw in response.content.iter_any():
            for chunk in decoder.feed(raw):  # decoded in bounded pieces
                buffer += chunk
                while (end := buffer.find(b"\n", searched)) >= 0:
                    line, buffer, searched = buffer[:end].rstrip(b"\r"), buffer[end + 1:], 0
                    if line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" "))
                    elif not line and data:
                        payload, data = b"\n".join(data), []
                        if not payload.strip():
                            continue  # a priming event (an id for resumption, no message)
                        message = json.loads(payload)
                        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                            return message
                        await self._on_message(message, request_id, session_id, version, progress, ask)
                searched = len(buffer)  # a long line is searched once, not again with every piece
                if len(buffer) + sum(map(len, data)) > MAX_EVENT_BYTES:
                    raise UpstreamError(f"the MCP upstream {self.url} answered tools/call with an event larger "
                                        f"than {MAX_EVENT_BYTES} bytes", method="tools/call", url=self.url)
        return None  # the stream ended without the answer

    async def _on_message(self, message: Any, request_id: str, session_id: str, version: str,
                          progress: ProgressRelay | None, ask: RequestRelay | None) -> None:
        if not isinstance(message, dict):
            return
        raw_params = message.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if message.get("method") == "notifications/progress" and progress is not None \
                and params.get("progressToken") == request_id:
            await progress(float(params.get("progress", 0)), params.get("total"), params.get("message"))
        elif "method" in message and "id" in message:  # a request to the client: ask the caller, if we may
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
            try:
                if ask is None:
                    raise MCPError(types.METHOD_NOT_FOUND, "Method not found")
                reply["result"] = await ask(str(message["method"]), params)
            except MCPError as exc:
                reply["error"] = exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)
            async with self._session.post(self.url, data=json.dumps(reply), allow_redirects=False,
                                          headers={"mcp-session-id": session_id, "mcp-protocol-version": version}):
                pass


DRAIN_BYTES: Final = 1024 * 1024


async def _drain(response: Any) -> None:
    """Read (and drop) what is left of a body, up to DRAIN_BYTES: enough for the end of an event stream."""
    left = DRAIN_BYTES
    async for chunk in response.content.iter_any():
        left -= len(chunk)
        if left <= 0:
            return
