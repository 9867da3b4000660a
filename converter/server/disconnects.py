"""What to do when a request's client goes away, told by our uvicorn protocol (converter.server.connections).

An ASGI application learns of a gone client only by reading `receive()` until `http.disconnect`,
which needs a task doing nothing else. The protocol knows at once (`connection_lost`), so it
puts a `Disconnect` in each request's scope (`DISCONNECT_KEY`) and fires it then; a layer that
wants to stop work for a gone client adds a callback. Scopes made elsewhere (tests calling the
app directly, other servers) have none: `of(scope)` is None there, and nothing changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.types import Scope

DISCONNECT_KEY: Final = "openapi_mcp.disconnect"


class Disconnect:
    """Callbacks to run once, when the request's client is gone before its response is complete."""

    __slots__ = ("_callbacks", "fired")

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[], None]] = {}
        self.fired = False

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` at the disconnect; returns what removes it again."""
        key = id(callback)
        self._callbacks[key] = callback

        def remove() -> None:
            self._callbacks.pop(key, None)

        return remove

    def fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        callbacks, self._callbacks = list(self._callbacks.values()), {}
        for callback in callbacks:
            callback()


def of(scope: Scope | Mapping[str, Any]) -> Disconnect | None:
    found = scope.get(DISCONNECT_KEY)
    return found if isinstance(found, Disconnect) else None


async def cancelled_at(gone: Disconnect, work: Awaitable[None]) -> None:
    """Await `work` in this task, cancelling it if the client goes first; that cancel ends quietly
    (there is no one left to answer). Any other cancel (a shutdown) goes through."""
    task = asyncio.current_task()
    assert task is not None  # uvicorn runs on asyncio
    ours = False

    def cancel() -> None:
        nonlocal ours
        ours = True
        task.cancel()

    remove = gone.add(cancel)
    try:
        await work
    except asyncio.CancelledError:
        if not ours or task.uncancel() > 0:
            raise
    finally:
        remove()
