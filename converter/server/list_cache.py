"""`tools/list` answered from a wire dict built once per protocol version and visible tool set."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final

import mcp.types as types
from mcp.server import ServerRequestContext

from converter.auth.layer import principal_of
from converter.catalog.served import ServedCatalog
from converter.server.paging import Pager

# Set while ListCache asks the SDK for the `tools/list` envelope only (see ListCache).
ENVELOPE_ONLY: ContextVar[bool] = ContextVar("openapi_mcp_envelope_only", default=False)
# Protocol versions whose `tools/list` surface keeps every field our tools carry, so our own dump
# equals the SDK's validated one (tests/test_app.py proves it for each of these versions).
FAST_LIST_VERSIONS: Final = frozenset({"2025-06-18", "2025-11-25", "2026-07-28"})
EMPTY_LIST = types.ListToolsResult(tools=[])
_TRIES = 3  # answers built while a reload replaced the catalog, before the SDK's own path answers


class ListCache:
    """Serves `tools/list` from a wire dict built once per protocol version.

    The SDK validates and re-dumps every result against the protocol surface: for GitHub's
    1,223 tools that is ~1 s of CPU per `tools/list`. The list only changes with the catalog, so
    the answer is built once per version and reused (the runner copies the top level before
    shaping the envelope, so sharing it is safe). For FAST_LIST_VERSIONS even the first answer
    skips the SDK's pass over the tools: the SDK shapes the envelope of an empty list and our
    one-pass dump of the tools goes in it.
    """

    MAX_ENTRIES = 256  # distinct (protocol version, visible tool set) pairs kept

    def __init__(self, catalog: ServedCatalog, *, page_size: int | None = None) -> None:
        self._catalog = catalog
        self._cache: dict[tuple[str, tuple[str, ...] | None], Any] = {}
        self._tools: dict[str, dict[str, Any]] | None = None
        self._pager = Pager(page_size)
        self._generation = catalog.generation

    def wire_tools(self, names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        if self._tools is None:
            self._tools = {served.name: wire_tool(served.tool) for served in self._catalog.served_tools}
        return list(self._tools.values()) if names is None else [self._tools[name] for name in names]

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        if ctx.method != "tools/list":
            return await call_next(ctx)
        cursor = (ctx.params or {}).get("cursor")
        if self._catalog.list_can_change:  # a proxied list changes: the SDK shapes it
            return self._pager.page(await call_next(ctx), "tools", cursor)
        for _ in range(_TRIES):
            self._follow()
            answer = await self._answer(ctx, call_next)
            if self._catalog.generation == self._generation:  # no reload meanwhile: one catalog's list
                return self._pager.page(answer, "tools", cursor)
        return self._pager.page(await call_next(ctx), "tools", cursor)  # reloads in a row: the SDK's path

    def _follow(self) -> None:
        if self._catalog.generation != self._generation:  # a reload replaced the catalog
            self._cache.clear()
            self._tools = None
            self._generation = self._catalog.generation

    async def _answer(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        """The whole list for this caller and protocol version (cached)."""
        visible = await self._catalog.visible_tools(principal_of(ctx))
        if self._catalog.generation != self._generation:
            return None  # the names are of another catalog than the cache's: the caller tries again
        names = None if visible is None else tuple(tool.name for tool in visible)
        key = (ctx.protocol_version, names)
        cached = self._cache.get(key)
        if cached is None:
            if ctx.protocol_version in FAST_LIST_VERSIONS:
                token = ENVELOPE_ONLY.set(True)
                try:
                    envelope = await call_next(ctx)
                finally:
                    ENVELOPE_ONLY.reset(token)
                if self._catalog.generation != self._generation:
                    return None  # replaced meanwhile: `names` are not the new catalog's
                cached = {**envelope, "tools": self.wire_tools(names)}
            else:
                cached = await call_next(ctx)
                if self._catalog.generation != self._generation:
                    return None  # replaced meanwhile: not cached under the old catalog's key
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        return cached


def wire_tool(tool: types.Tool) -> dict[str, Any]:
    """`tool` as `model_dump(by_alias=True, mode="json", exclude_none=True)` gives it, except that
    the schemas are the tool's own dicts rather than deep copies: they are JSON data already (the
    spec loader keeps to JSON's data model), and GitHub's schemas are ~40 MB as Python objects."""
    wire = tool.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"input_schema", "output_schema"})
    shaped: dict[str, Any] = {key: wire.pop(key) for key in ("name", "title", "description") if key in wire}
    shaped["inputSchema"] = tool.input_schema
    if tool.output_schema is not None:
        shaped["outputSchema"] = tool.output_schema
    shaped.update(wire)
    return shaped



