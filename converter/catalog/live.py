"""`LiveCatalog`: the served catalog, replaced in one step while serving (a live reload).

The server reads everything it serves through this one object. A reload builds the next catalog
beside the running one (converter.catalog.reload) and hands it to `swap`: the parts it adds are
opened first, then it becomes current in one assignment. Every request reads the current catalog
once when it starts, so a call already in flight finishes on the catalog it started on, and every
request after the swap sees the new one. A replaced catalog is kept until its last request has
ended; then the parts no other catalog uses (an upstream client whose settings changed, a decision
service client, ...) are closed. The parts both share (converter.catalog.reuse) stay open.

Changes of the served lists (a reload, an MCP server's `list_changed`) are announced to the
server's listeners through `announce`, the one place that tells clients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Set
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp.types as types

from converter.auth.principal import ANONYMOUS, Principal
from converter.catalog.catalog import Catalog, open_part
from converter.catalog.dynamic import DynamicCatalog
from converter.catalog.served import NO_CONTEXT, CallContext, CatalogListener, ServedTool
from converter.credentials.upstream import UpstreamCredentials
from converter.models import Problem
from converter.passthrough.source import MCPUpstreamSource
from converter.passthrough.transport import NotificationRelay, ProgressRelay, RequestRelay
from converter.passthrough.view import Passthrough
from converter.policy import Policy
from converter.policy.limits import RateLimiter

log = logging.getLogger("openapi_mcp")

Served = Catalog | DynamicCatalog

# Closing a replaced catalog's parts must finish even when the request that ended it was cancelled.
_CLOSE_SECONDS = 10.0


class _LiveNames(Set[str]):
    """The current catalog's tool names, whichever catalog is current (metrics label only these)."""

    def __init__(self, live: LiveCatalog) -> None:
        self._live = live

    def __contains__(self, name: object) -> bool:
        return name in self._live.current.tool_names

    def __iter__(self) -> Iterator[str]:
        return iter(self._live.current.tool_names)

    def __len__(self) -> int:
        return len(self._live.current.tool_names)


class LiveCatalog:
    """What the server serves: the current catalog, replaceable while serving (a `ServedCatalog`)."""

    def __init__(self, catalog: Served) -> None:
        self._current = catalog
        self.generation = 0  # how many times the catalog was replaced (list caches key on it)
        self.listeners: list[CatalogListener] = []  # told when a served list changes
        self.stop_streams: list[Callable[[], None]] = []  # called first on shutdown
        self.on_swap: list[Callable[[Served], None]] = []  # told of each new catalog (metrics hooks)
        self._names = _LiveNames(self)
        self._busy: dict[int, int] = {}  # id(catalog) -> requests in flight on it
        self._retired: list[Served] = []  # replaced, kept while requests are in flight on them
        self._open: dict[int, AsyncExitStack] = {}  # id(part) -> what closes it
        self._parts: dict[int, list[int]] = {}  # id(catalog) -> ids of its parts
        self._attach(catalog)

    def __repr__(self) -> str:
        return f"LiveCatalog(generation={self.generation}, current={self._current!r})"

    @property
    def current(self) -> Served:
        return self._current

    @property
    def retired(self) -> int:
        """How many replaced catalogs still have requests in flight."""
        return len(self._retired)

    # -- replacing ----------------------------------------------------------------------------

    async def swap(self, catalog: Served) -> Served:
        """Open what `catalog` adds, make it current in one step, and return the one it replaced
        (closed once its last request in flight has ended).

        Raises:
            Exception: opening one of its new parts failed; nothing was replaced then.
        """
        opened: list[int] = []
        try:
            for part in catalog.resources():
                if id(part) not in self._open:
                    await self._open_part(part)
                    opened.append(id(part))
        except BaseException:
            for key in opened:
                await self._close_part(key)
            raise
        old, self._current = self._current, catalog
        self.generation += 1
        self._parts[id(catalog)] = [id(part) for part in catalog.resources()]
        old.detach()
        self._attach(catalog)
        self._retired.append(old)
        for hook in list(self.on_swap):
            hook(catalog)
        await self._release()
        return old

    def _attach(self, catalog: Served) -> None:
        async def changed(kinds: frozenset[str]) -> None:
            if catalog is self._current:  # a replaced catalog's MCP sources speak through the new one
                await self.announce(kinds)

        catalog.listeners.append(changed)

    async def announce(self, kinds: frozenset[str]) -> None:
        """Tell every listener that the lists named in `kinds` ("tools", "prompts", "resources",
        "templates") changed: the one place a change of what is served is announced.

        The server's listener sends `notifications/*/list_changed` to handshake-era sessions and
        publishes the event to 2026-07-28 `subscriptions/listen` streams. Announcing to other
        replicas (Redis) is a listener added here too; a replica that hears of another's change
        calls `announce` for its own clients.
        """
        for listener in list(self.listeners):
            try:
                await listener(kinds)
            except Exception:  # one listener's failure must not keep the others uninformed
                log.exception("announcing a change of %s failed", ", ".join(sorted(kinds)))

    async def _open_part(self, part: Any) -> None:
        stack = AsyncExitStack()
        await open_part(stack, part)
        self._open[id(part)] = stack

    async def _close_part(self, key: int) -> None:
        stack = self._open.pop(key, None)
        if stack is not None:
            try:
                await stack.aclose()
            except Exception as exc:  # noqa: BLE001 - closing a pool we no longer use must not fail a request
                log.warning("closing a replaced upstream connection failed: %s: %s", type(exc).__name__, exc)

    async def _release(self) -> None:
        """Forget the replaced catalogs with nothing in flight, and close the parts nothing uses."""
        self._retired = [c for c in self._retired if self._busy.get(id(c))]
        needed = {key for c in (self._current, *self._retired) for key in self._parts.get(id(c), ())}
        for catalog in list(self._parts):
            if catalog != id(self._current) and all(catalog != id(c) for c in self._retired):
                del self._parts[catalog]
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_SECONDS):
            for key in [key for key in self._open if key not in needed]:
                await self._close_part(key)

    def _enter(self) -> Served:
        catalog = self._current
        self._busy[id(catalog)] = self._busy.get(id(catalog), 0) + 1
        return catalog

    async def _leave(self, catalog: Served) -> None:
        left = self._busy[id(catalog)] - 1
        if left:
            self._busy[id(catalog)] = left
            return
        del self._busy[id(catalog)]
        if catalog is not self._current:
            await self._release()

    # -- what is served (ServedCatalog) ------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._current.policy

    @property
    def limiter(self) -> RateLimiter | None:
        return self._current.limiter

    @property
    def problems(self) -> list[Problem]:
        return self._current.problems

    @property
    def served_tools(self) -> list[Any]:
        served: list[ServedTool] = list(self._current.served_tools)
        return served

    @property
    def tool_names(self) -> Set[str]:
        return self._names

    @property
    def list_result(self) -> types.ListToolsResult:
        return self._current.list_result

    @property
    def list_can_change(self) -> bool:
        return self._current.list_can_change

    @property
    def passthrough(self) -> Passthrough | None:
        return self._current.passthrough

    @property
    def upstream_credentials(self) -> list[UpstreamCredentials]:
        return self._current.upstream_credentials

    async def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        catalog = self._enter()  # the decision service may be asked: its client must stay open
        try:
            return await catalog.visible_tools(principal)
        finally:
            await self._leave(catalog)

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None, principal: Principal = ANONYMOUS, *,
                        progress: ProgressRelay | None = None, ask: RequestRelay | None = None,
                        notify: NotificationRelay | None = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Call tool `name` on the current catalog; the call finishes there even if it is replaced.

        Raises:
            MCPError: as `Catalog.call_tool`.
        """
        catalog = self._enter()
        try:
            return await catalog.call_tool(name, arguments, principal, progress=progress, ask=ask, notify=notify,
                                           context=context)
        finally:
            await self._leave(catalog)

    async def proxied_route(self, name: str, principal: Principal) -> tuple[MCPUpstreamSource | None,
                                                                             dict[str, str]]:
        return await self._current.proxied_route(name, principal)

    async def probe(self) -> dict[str, str]:
        catalog = self._enter()
        try:
            return await catalog.probe()
        finally:
            await self._leave(catalog)

    async def __aenter__(self) -> LiveCatalog:
        catalog = self._current
        try:
            for part in catalog.resources():
                if id(part) not in self._open:
                    await self._open_part(part)
        except BaseException:
            await self.__aexit__()
            raise
        self._parts[id(catalog)] = [id(part) for part in catalog.resources()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._retired.clear()
        self._parts.clear()
        for key in reversed(list(self._open)):
            await self._close_part(key)
