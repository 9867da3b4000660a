"""`Mcp-Param-*` header checks of 2026-07-28 `tools/call`s, without a `tools/list` per call.

The SDK checks a modern `tools/call`'s `Mcp-Param-*` headers against the `x-mcp-header`
annotations of the called tool's input schema. Unless `Server.get_tool_input_schema` is set, it
finds that schema by running the server's own `tools/list` (the middleware, the access rules, the
list cache, the result copied) for every call with arguments, and searching the answer: a quarter
of such a call's server CPU (in process, alternating: 388 against 290 µs a call with the marketplace
spec, 397 against 307 with GitHub's). Only an annotated schema can fail that check, and OpenAPI
tools never carry one (the spec converter drops every `x-` key), so `HeaderSchemas` sets the
lookup to answer from the served tools:

- no served tool is annotated (every OpenAPI catalog): None for every name, as the SDK's own
  lookup amounts to (nothing can be checked), at the cost of a dict lookup;
- some are (an upstream MCP server's tools), and every caller sees every tool: their schemas;
- some are, and a tool may be hidden from a caller (scopes, access rules, a decision service): no
  lookup, so the SDK finds the schema in the caller's own `tools/list` as before (a hidden tool's
  schema must not answer for it: the caller would learn it exists).

Kept current on each live reload and each change of the tool list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mcp.server import Server

from converter.catalog.served import ServedCatalog

ANNOTATION: Final = "x-mcp-header"  # mcp.shared.inbound.X_MCP_HEADER_KEY


class HeaderSchemas:
    """Keeps `server.get_tool_input_schema` right for what `catalog` serves (see the module docstring)."""

    def __init__(self, server: Server[Any], catalog: ServedCatalog) -> None:
        self._server, self._catalog = server, catalog
        self._annotated: dict[str, Mapping[str, Any]] = {}
        self._seen: Any = None  # the tool list the table was made from

    @classmethod
    def install(cls, server: Server[Any], catalog: ServedCatalog) -> HeaderSchemas:
        schemas = cls(server, catalog)
        schemas.refresh()
        catalog.listeners.append(schemas.changed)
        on_swap = getattr(catalog, "on_swap", None)  # a live catalog: its reloads
        if on_swap is not None:
            on_swap.append(lambda _new: schemas.refresh())
        return schemas

    def refresh(self) -> None:
        """Read the served tools again (every source's: an MCP source's come and go) and set the lookup."""
        listed = self._catalog.list_result
        self._annotated = {tool.name: tool.input_schema for tool in listed.tools if annotated(tool.input_schema)}
        self._seen = listed
        hidden = self._annotated and not self._catalog.policy.is_open
        self._server.get_tool_input_schema = None if hidden else self.lookup

    def lookup(self, name: str) -> Mapping[str, Any] | None:
        if self._catalog.list_result is not self._seen:  # changed unannounced (every change is announced)
            self.refresh()
            if self._server.get_tool_input_schema is None:
                return None  # a tool may be hidden now: the SDK looks up from the next call on
        return self._annotated.get(name)

    async def changed(self, kinds: frozenset[str]) -> None:
        if "tools" in kinds:
            self.refresh()


def annotated(schema: Any) -> bool:
    """Whether an `x-mcp-header` key is anywhere in `schema` (a superset of the positions the SDK reads)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ANNOTATION in node:
                return True
            stack.extend(value for value in node.values() if isinstance(value, dict | list))
        elif isinstance(node, list):
            stack.extend(value for value in node if isinstance(value, dict | list))
    return False
