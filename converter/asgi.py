"""Small ASGI helpers the HTTP layers share: headers, plain answers, one look at a JSON-RPC POST, CORS.

`peek_rpc` reads the body of a POST once, notes which methods (and tools) it calls, and hands on
a `receive` that replays the body, so the next layer and the MCP transport read it as sent. The
result is kept in the scope: the auth layer and the rate limits ask the same question, and the
body is parsed once (DESIGN.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES: Final = 4 * 1024 * 1024  # the SDK's own limit for a POST to the MCP endpoint
RPC_KEY: Final = "openapi_mcp.rpc"


@dataclass(frozen=True, slots=True)
class RpcPeek:
    """What a POST asks for: its JSON-RPC methods and, for `tools/call`, the tool names."""

    methods: tuple[str, ...]
    tools: tuple[str, ...]
    too_large: bool = False  # over MAX_BODY_BYTES: answer 413
    too_deep: bool = False  # nested past what can be parsed: answer a JSON-RPC parse error

    @property
    def only_tool_calls(self) -> bool:
        return bool(self.methods) and all(method == "tools/call" for method in self.methods)


async def peek_rpc(scope: Scope, receive: Receive) -> tuple[RpcPeek, Receive]:
    """The methods a POST calls, and the `receive` to hand on (it replays what was read)."""
    found = scope.get(RPC_KEY)
    if isinstance(found, RpcPeek):
        return found, receive
    method = header(scope, b"mcp-method")
    if method is not None:  # 2026-07-28 clients name it in headers (the SDK refuses a body that disagrees)
        name = header(scope, b"mcp-name")
        peek = RpcPeek((method,), (name,) if method == "tools/call" and name is not None else ())
        if method != "tools/call" or name is not None:
            scope[RPC_KEY] = peek
            return peek, receive
    body, too_large = await read_body(receive)
    peek = RpcPeek((), (), too_large=True) if too_large else _parse(body)
    scope[RPC_KEY] = peek
    return peek, replay(body, receive)


def _parse(body: bytes) -> RpcPeek:
    try:
        message = json.loads(body)
    except ValueError:
        return RpcPeek((), ())  # the transport answers malformed JSON itself
    except RecursionError:
        return RpcPeek((), (), too_deep=True)
    messages = message if isinstance(message, list) else [message]
    methods: list[str] = []
    tools: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("method"), str):
            continue
        methods.append(m["method"])
        params = m.get("params")
        if m["method"] == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
            tools.append(params["name"])
    return RpcPeek(tuple(methods), tuple(tools))


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, or (b"", True) when it is over MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` first, then whatever `receive` gives."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class PathShortcut:
    """Requests for exactly `path` go straight to `target`; any other request to `app`.

    Put in front of a Starlette router whose only match for `path` is `target` (its routes are
    tried in turn, with regular expressions, and a mount adds a second app with its own
    middleware), it saves that walk on every MCP request: 3% of a call's CPU.
    """

    def __init__(self, app: ASGIApp, *, path: str, target: ASGIApp) -> None:
        self.app = app
        self.path = path
        self.target = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.target(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class BrowserCORS(CORSMiddleware):
    """Starlette's CORS, past which a POST or DELETE without `Origin` goes untouched.

    Such a request is no browser's cross-origin call, and its answer is never cached, so the
    `Vary: Origin` Starlette adds to every answer (for caches) has nothing to do there; skipping
    the wrapped `send` saves a few microseconds on every MCP call. Everything else (preflights,
    requests with an `Origin`, GETs that a cache may keep) is Starlette's own.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in _UNCACHED
                and not any(key == b"origin" for key, _ in scope["headers"])):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


_UNCACHED: Final = frozenset({"POST", "DELETE"})
