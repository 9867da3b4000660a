"""The pooled HTTP client of one upstream, and sending with a deadline and a body cap."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from converter.errors import UpstreamError
from converter.invoke.request import HttpRequest

DEFAULT_MAX_RESPONSE_BYTES = 1_000_000


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

    The default transport is aiohttp behind httpx's API (`httpx-aiohttp`): measured here it
    costs far less CPU per call than httpx's own transport, which also degrades at high
    concurrency (see bench/README.md).
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._transport = transport
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Upstream:
        limits = httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=self._max_connections)
        timeout = httpx.Timeout(self.timeout)
        if self._transport is not None:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=timeout, follow_redirects=False)
        else:
            from httpx_aiohttp import HttpxAiohttpClient

            self._client = HttpxAiohttpClient(timeout=timeout, limits=limits, follow_redirects=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, request: HttpRequest) -> UpstreamResponse:
        """Send `request`; the whole exchange (connect to last byte) must finish within the timeout.

        Raises:
            UpstreamError: cannot connect, timed out, or the connection broke mid-response.
        """
        client = self._client
        if client is None:
            raise RuntimeError("Upstream used outside its `async with` block")
        kwargs: dict[str, Any] = {"headers": request.headers}
        if request.content is not None:
            kwargs["content"] = request.content
        if request.files is not None or request.data is not None:
            kwargs["data"] = request.data or {}
            if request.files:
                kwargs["files"] = request.files
        started = time.perf_counter()
        where = f"{request.method} {request.url.split('?', 1)[0]}"
        try:
            with anyio.fail_after(self.timeout):
                http_request = client.build_request(request.method, request.url, **kwargs)
                response = await client.send(http_request, stream=True)
                try:
                    body, truncated = await self._read(response)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise UpstreamError(f"{where} timed out after {self.timeout:g} s", method=request.method, url=request.url) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"{where} timed out after {self.timeout:g} s", method=request.method, url=request.url) from exc
        except httpx.ConnectError as exc:
            raise UpstreamError(f"{where} failed: cannot connect ({_reason(exc)})", method=request.method, url=request.url) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{where} failed: {_reason(exc)}", method=request.method, url=request.url) from exc
        return UpstreamResponse(
            status=response.status_code,
            reason=response.reason_phrase,
            content_type=response.headers.get("content-type", ""),
            body=body,
            truncated=truncated,
            elapsed=time.perf_counter() - started,
            url=request.url,
        )

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        cap = self.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True
        return b"".join(chunks), False


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
