"""The link to one upstream MCP server: the direct calls on one connected session, and which
failures of it are the link's (one log line, then reconnect) rather than bugs of ours."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
import httpx2
import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.passthrough.transport import DirectCalls, LinkError, NotificationRelay, ProgressRelay, RequestRelay

# What a lost or refused link raises while connecting or watching: logged in one line, then reconnect.
# Anything else is a bug of ours and is logged with its traceback (then reconnect all the same).
LINK_FAILURES: Final = (OSError, TimeoutError, MCPError, httpx2.HTTPError, LinkError, anyio.BrokenResourceError,
                         anyio.ClosedResourceError, anyio.EndOfStream)



@dataclass(frozen=True, slots=True)
class Link:
    """The direct calls on one connected upstream session."""

    calls: DirectCalls
    session_id: str | None
    version: str

    def request(self, method: str, params: dict[str, Any], *, headers: Mapping[str, str] | None = None,
                progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                notify: NotificationRelay | None = None) -> Awaitable[dict[str, Any]]:
        return self.calls.request(self.session_id, self.version, method, params, progress=progress,
                                  extra_headers=headers, ask=ask, notify=notify)


def is_link_failure(exc: BaseException) -> bool:
    """A lost, refused or broken link (worth one log line), as opposed to a bug of ours."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_link_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, LINK_FAILURES)


def short_reason(exc: BaseException) -> str:
    """One short line for a log: the innermost cause of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def declared_callbacks(relay: frozenset[str]) -> dict[str, Any]:
    """Client callbacks that make the SDK declare the relayed capabilities to the upstream.

    Requests that arrive during a direct call are passed to the caller (DirectCalls); these
    callbacks only see the rest (outside a call, on the GET stream), which have no caller to go to.
    """

    async def unrouted(context: Any, params: Any = None) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST,
                               message="openapi-mcp passes this request on only during a tools/call")

    names = {"sampling": "sampling_callback", "elicitation": "elicitation_callback", "roots": "list_roots_callback"}
    return {names[kind]: unrouted for kind in relay}
