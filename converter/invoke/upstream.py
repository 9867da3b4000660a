"""The pooled HTTP client of one upstream, and sending with a deadline and a body cap."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from converter.bodies import ACCEPT_ENCODING, BodyDecodingError, BoundedBody
from converter.errors import UpstreamError
from converter.invoke.request import HttpRequest
from converter.telemetry.record import current_record
from converter.version import __version__

if TYPE_CHECKING:
    import httpx

DEFAULT_MAX_RESPONSE_BYTES = 1_000_000
USER_AGENT = f"openapi-mcp/{__version__}"


@dataclass(slots=True)
class UpstreamResponse:
    """What came back, with the body read up to the cap."""

    status: int
    reason: str
    content_type: str
    body: bytes
    truncated: bool
    elapsed: float
    url: str


class Upstream:
    """One pooled client per upstream: created in the server lifespan, closed there.

    Production calls go straight through an `aiohttp.ClientSession`: measured here, httpx's own
    transport costs about 1 ms more per call and degrades at concurrency 32, and httpx's API on
    top of aiohttp still spends ~0.3 ms per call in cookie handling and request models (see
    bench/README.md). An httpx transport can be injected instead (tests: ASGI apps, MockTransport).
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        tracing: bool = False,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        self._max_connections = max_connections
        self.tracing = tracing
        self._client: httpx.AsyncClient | None = None
        self._session: Any = None  # aiohttp.ClientSession, see _aiohttp_session
        self._open = False

    async def __aenter__(self) -> Upstream:
        self._open = True
        if self._transport is not None:
            import httpx

            # Redirects are answers, never followed: a Location elsewhere must not get the
            # configured credentials (SECURITY.md). Only codings we decode in bounded steps are asked for.
            self._client = httpx.AsyncClient(transport=self._transport, timeout=httpx.Timeout(self.timeout),
                                             follow_redirects=False, headers={"accept-encoding": ACCEPT_ENCODING})
        return self

    def _aiohttp_session(self) -> Any:
        """The pooled aiohttp session, made on first use: importing aiohttp is ~0.1 s that a
        starting server (answering initialize and tools/list) does not need yet."""
        if self._session is None:
            if not self._open:
                raise RuntimeError("Upstream used outside its `async with` block")
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30),
                cookie_jar=aiohttp.DummyCookieJar(),  # an upstream must not set state for all users
                # `total` bounds the whole exchange, body included, while the response is open.
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"user-agent": USER_AGENT},
                # Bodies are decoded by converter.bodies, which counts max_response_bytes in decoded
                # bytes and decodes in bounded steps (a gzip bomb costs the cap, not its size).
                auto_decompress=False,
            )
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: HttpRequest) -> UpstreamResponse:
        """Send `request`; the whole exchange (connect to last byte) must finish within the timeout.

        Raises:
            UpstreamError: cannot connect, timed out, or the connection broke mid-response.
        """
        if self.tracing:
            from converter.telemetry.tracing import record_status, upstream_span

            with upstream_span(request.method, request.template, request.url, request.headers) as span:
                response = await (
                    self._send_httpx(request) if self._transport is not None else self._send_aiohttp(request)
                )
                record_status(span, response.status)
        elif self._transport is None:
            response = await self._send_aiohttp(request)
        else:
            response = await self._send_httpx(request)
        record = current_record.get()
        if record is not None:
            record.upstream_method, record.upstream_url = request.method, request.template or None
            record.upstream_status, record.upstream_ms = response.status, round(response.elapsed * 1000, 3)
        return response

    async def reachable(self, base_url: str) -> bool:
        """True when something answers HTTP at `base_url` (any status: the upstream is up)."""
        request = HttpRequest("HEAD", base_url, {"accept": "*/*"})
        try:
            if self._transport is None:
                await self._send_aiohttp(request)
            else:
                await self._send_httpx(request)
        except UpstreamError:
            return False
        return True

    async def _send_httpx(self, request: HttpRequest) -> UpstreamResponse:
        import httpx

        client = self._client
        if client is None:
            raise RuntimeError("Upstream used outside its `async with` block")
        kwargs: dict[str, Any] = {"headers": request.headers}
        if request.content is not None:
            kwargs["content"] = request.content
        started = time.perf_counter()
        where = f"{request.method} {request.url.split('?', 1)[0]}"
        try:
            with anyio.fail_after(self.timeout):
                http_request = client.build_request(request.method, request.url, **kwargs)
                for name in request.skip_defaults:
                    http_request.headers.pop(name, None)
                response = await client.send(http_request, stream=True)
                try:
                    body, truncated = await self._read(response)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise UpstreamError(
                f"{where} timed out after {self.timeout:g} s", method=request.method, url=request.url
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"{where} timed out after {self.timeout:g} s", method=request.method, url=request.url
            ) from exc
        except httpx.ConnectError as exc:
            failure = (f"cannot resolve host {_host(request.url)}" if _from_resolver(exc)
                       else f"cannot connect ({_reason(exc)})")
            raise UpstreamError(f"{where} failed: {failure}", method=request.method, url=request.url) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UpstreamError(f"{where} failed: {_reason(exc)}", method=request.method, url=request.url) from exc
        except BodyDecodingError as exc:
            raise UpstreamError(f"{where} failed: {exc}", method=request.method, url=request.url) from exc
        return UpstreamResponse(
            status=response.status_code,
            reason=response.reason_phrase,
            content_type=response.headers.get("content-type", ""),
            body=body,
            truncated=truncated,
            elapsed=time.perf_counter() - started,
            url=request.url,
        )

    async def _send_aiohttp(self, request: HttpRequest) -> UpstreamResponse:
        import aiohttp
        from yarl import URL

        started = time.perf_counter()
        where = f"{request.method} {request.url.split('?', 1)[0]}"
        try:
            headers = request.headers
            if "accept-encoding" not in request.skip_defaults and not any(k.lower() == "accept-encoding"
                                                                          for k in headers):
                headers = {**headers, "accept-encoding": ACCEPT_ENCODING}  # only what converter.bodies can bound
            async with self._aiohttp_session().request(
                request.method, URL(request.url, encoded=True), headers=headers, data=request.content,
                allow_redirects=False, skip_auto_headers=request.skip_defaults or None,
            ) as response:
                body, truncated = await self._read_aiohttp(response)
        except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
            raise UpstreamError(
                f"{where} timed out after {self.timeout:g} s", method=request.method, url=request.url
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):  # the name, not the connection: say so
                failure = f"cannot resolve host {exc.host}"
            else:
                errno = getattr(exc.os_error, "errno", None)
                failure = f"cannot connect ({os.strerror(errno).lower() if errno else _reason(exc)})"
            raise UpstreamError(f"{where} failed: {failure}", method=request.method, url=request.url) from exc
        except BodyDecodingError as exc:  # before ValueError, its base
            raise UpstreamError(f"{where} failed: {exc}", method=request.method, url=request.url) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"{where} failed: {_reason(exc)}", method=request.method, url=request.url) from exc
        return UpstreamResponse(
            status=response.status,
            reason=response.reason or "",
            content_type=response.headers.get("content-type", ""),
            body=body,
            truncated=truncated,
            elapsed=time.perf_counter() - started,
            url=request.url,
        )

    async def _read_aiohttp(self, response: Any) -> tuple[bytes, bool]:
        cap = self.max_response_bytes
        encoding = ",".join(response.headers.getall("content-encoding", ()))
        length = response.content_length
        if not encoding and length is not None and length <= cap:
            return await response.read(), False  # aiohttp reads exactly `length` bytes: within the cap
        body = BoundedBody(encoding, cap)
        async for chunk in response.content.iter_any():
            if not body.add(chunk):
                break
        return body.finish(), body.truncated

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        # The raw bytes, decoded here: httpx's own decoders inflate a whole chunk at once, unbounded.
        if response.is_stream_consumed:  # made in memory (a MockTransport answer): httpx read and decoded it
            body = BoundedBody(None, self.max_response_bytes)
            body.add(response.content)
            return body.finish(), body.truncated
        body = BoundedBody(response.headers.get("content-encoding"), self.max_response_bytes)
        async for chunk in response.aiter_raw():
            if not body.add(chunk):
                break
        return body.finish(), body.truncated


def _from_resolver(exc: BaseException) -> bool:
    """Whether a connection failed on resolving the host name (socket.gaierror somewhere in its causes)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or url


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
