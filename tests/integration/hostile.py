"""Hostile HTTP servers on loopback for the hardening tests (issue 12): raw asyncio, in a thread.

`RawServer` reads each HTTP/1.1 request (method, path, query, headers, body) and hands it to
`answer`, which writes whatever bytes it likes: a lying Content-Length, stacked encodings, a
redirect to another origin. Every request is recorded in `requests`, so a test can assert that a
server was never reached (the target of a refused redirect) or what it was sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qs

MB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "
    body: bytes


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 run by its own asyncio loop in a thread of the test process.

    `answer(request, writer)` writes the response and returns False when the connection must not
    be reused. Subclasses override it, or pass `routes` (path -> answer).
    """

    name = "raw-server"

    def __init__(self, routes: dict[str, Answer] | None = None) -> None:
        self.routes = dict(routes or {})
        self.requests: list[Request] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._server: asyncio.Server | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the {self.name} server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, limit=4 * MB))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after the other on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        key = name.strip().lower()
                        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
                body = await self._body(reader, headers)
                path, _, query = target.partition("?")
                request = Request(method, path, {k: v[0] for k, v in parse_qs(query).items()}, headers, body)
                self.requests.append(request)
                if not await self.answer(request, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # (a cancelled handler must end quietly: asyncio logs one that raises)
        finally:
            writer.close()

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", ""):
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(parts)
                parts.append(data[:-2])
        length = int(headers.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        route = self.routes.get(request.path)
        if route is None:
            return await send(writer, 404, b'{"error": "no such endpoint"}')
        return await route(request, writer)


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
            308: "Permanent Redirect", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


async def send(writer: asyncio.StreamWriter, status: int, body: bytes, *, content_type: str = "application/json",
               headers: dict[str, str] | None = None) -> bool:
    """Write a complete response with an honest Content-Length; the connection stays usable."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}", f"content-type: {content_type}",
             f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    return True


def redirect(status: int, location: str) -> Answer:
    """An answer that redirects to `location` (absolute or relative, as given)."""
    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        return await send(writer, status, b"", content_type="text/plain", headers={"location": location})
    return answer


def page(body: bytes | str | Any, *, content_type: str = "application/json", status: int = 200) -> Answer:
    """An answer with a fixed body (a str is UTF-8; anything else but bytes is JSON)."""
    import json

    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
        return await send(writer, status, data, content_type=content_type)
    return answer
