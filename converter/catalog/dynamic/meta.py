"""The `DynamicCatalog` and its three meta-tools (`mode: dynamic`).

GitHub's 1,223 tool definitions are 6.8 MB (~1.7 M tokens) and break clients that cap tools at 128. In
this mode `tools/list` shows three tools instead:

- `search_operations`: ranked text search (BM25F) over names, summaries, descriptions, tags and
  paths, optionally within one tag;
- `describe_operation`: one operation's description and full input schema;
- `call_operation`: the call itself, delegated to the wrapped catalog, so arguments are
  validated, sent and mapped exactly as `tools/call` of that tool does in the normal mode.

Scopes and access rules still apply per underlying operation: search and describe show only
what `tools/list` would show the caller in the normal mode, and calling a hidden operation
answers exactly like calling one that does not exist.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from weakref import WeakKeyDictionary

import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.auth.principal import ANONYMOUS, Principal
from converter.catalog.catalog import Catalog, build_catalog
from converter.catalog.dynamic.search import OperationIndex
from converter.catalog.reuse import Parts
from converter.catalog.served import NO_CONTEXT, CallContext, CatalogListener
from converter.config import Settings
from converter.credentials.upstream import UpstreamCredentials
from converter.errors import ConfigError
from converter.invoke.result import error_result
from converter.models import JsonSchema
from converter.tools import ToolPlan
from converter.tools.plan import SchemaCheck

MODE_META_KEY: Final = "openapi-mcp/mode"
SEARCH: Final = "search_operations"
DESCRIBE: Final = "describe_operation"
CALL: Final = "call_operation"
DEFAULT_RESULTS: Final = 10
MAX_RESULTS: Final = 50
_SUMMARY_CHARS = 160
_TAGS_IN_DESCRIPTION = 80
_MESSAGE_CHARS = 300

_SEARCH_INPUT: JsonSchema = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What you want to do, in a few words (e.g. 'list open "
                  "issues of a repository'). Matched against operation names, summaries, descriptions, tags "
                  "and paths. May be empty when `tag` is given."},
        "tag": {"type": "string", "description": "Only operations with this tag."},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "default": DEFAULT_RESULTS,
                  "description": f"How many operations to return, best first (default {DEFAULT_RESULTS})."},
    },
    "required": ["query"],
    "additionalProperties": False,
}
_SEARCH_OUTPUT: JsonSchema = {
    "type": "object",
    "properties": {
        "operations": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "method": {"type": "string"},
                           "path": {"type": "string"}, "summary": {"type": "string"}},
            "required": ["name", "method", "path", "summary"],
        }},
        "total": {"type": "integer", "description": "How many operations matched in all."},
    },
    "required": ["operations", "total"],
}
_NAME = {"type": "string", "description": "The operation's name, as search_operations returned it."}
_DESCRIBE_INPUT: JsonSchema = {
    "type": "object", "properties": {"name": _NAME}, "required": ["name"], "additionalProperties": False,
}
_DESCRIBE_OUTPUT: JsonSchema = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "method": {"type": "string"}, "path": {"type": "string"},
                   "summary": {"type": "string"}, "description": {"type": "string"},
                   "tags": {"type": "array", "items": {"type": "string"}}, "readOnly": {"type": "boolean"},
                   "deprecated": {"type": "boolean"}, "inputSchema": {"type": "object"}},
    "required": ["name", "method", "path", "inputSchema"],
}
_CALL_INPUT: JsonSchema = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "arguments": {"type": "object", "description": "The operation's arguments, as the inputSchema from "
                      "describe_operation says (path, query, header and body parameters by name)."},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class MetaTool:
    """One of the three tools served in dynamic mode (ListCache and telemetry read `.name`, `.tool`)."""

    name: str
    tool: types.Tool
    input_schema: JsonSchema
    check: SchemaCheck

    def __repr__(self) -> str:
        return f"MetaTool(name={self.name!r})"


class DynamicCatalog:
    """Serves search/describe/call meta-tools over the operations of `inner` (a
    `converter.catalog.served.ServedCatalog`). The search index is built once, on the first
    search (0.13 s for GitHub's 1,223 operations).
    """

    generation = 0  # never replaced itself (converter.catalog.live.LiveCatalog is)

    def __init__(self, inner: Catalog) -> None:
        """Raises: ConfigError when `inner` also fronts MCP servers (their tools have no operation)."""
        if inner.mcp_sources:
            # Fail closed: serving fewer tools than configured, silently, is worse than not starting.
            raise ConfigError("mode: dynamic serves OpenAPI operations only; an MCP upstream "
                              "(mcp_upstream: or sources[].mcp_upstream) needs mode: tools", key="mode")
        self.inner = inner
        self._operations: dict[str, ToolPlan] = {plan.name: plan for plan in inner.plans}
        # The model may use the spec's operationId ("issues/list-for-repo") for the tool name.
        by_id: dict[str, list[str]] = {}
        for plan in self._operations.values():
            if plan.operation.operation_id and plan.operation.operation_id not in self._operations:
                by_id.setdefault(plan.operation.operation_id, []).append(plan.name)
        self._aliases = {op_id: names[0] for op_id, names in by_id.items() if len(names) == 1}
        self._index: OperationIndex | None = None
        self._visible: WeakKeyDictionary[Principal, frozenset[str] | None] = WeakKeyDictionary()
        self._meta_tools = _meta_tools(list(self._operations.values()), tags_public=inner.policy.is_open)
        self._by_name = {meta.name: meta for meta in self._meta_tools}
        self.list_result = types.ListToolsResult(tools=[meta.tool for meta in self._meta_tools])
        self.tool_names = frozenset(self._by_name)
        self.listeners: list[CatalogListener] = []  # the meta-tools never change
        self.stop_streams: list[Callable[[], None]] = []
        self.policy = inner.policy  # the auth layer and the dashboard read scopes from it
        self.limiter = inner.limiter  # operations are counted by their own names (inner.call_tool)
        self.problems = inner.problems

    def __repr__(self) -> str:
        return f"DynamicCatalog(operations={len(self._operations)})"

    @property
    def served_tools(self) -> list[MetaTool]:
        """The served tools: the three meta-tools."""
        return list(self._meta_tools)

    @property
    def list_can_change(self) -> bool:
        return False

    @property
    def passthrough(self) -> None:
        return None  # dynamic mode fronts no MCP server

    @property
    def operations(self) -> list[ToolPlan]:
        """The underlying operations (the tools of the normal mode)."""
        return list(self._operations.values())

    @property
    def index(self) -> OperationIndex:
        """The search index, built on first use."""
        if self._index is None:
            self._index = OperationIndex.build(self._operations.values())
        return self._index

    async def visible_tools(self, principal: Principal) -> list[types.Tool] | None:
        """The meta-tools are visible to everyone; what they reveal is filtered per operation."""
        return None

    async def probe(self) -> dict[str, str]:
        return await self.inner.probe()

    async def proxied_route(self, name: str, principal: Principal) -> tuple[None, dict[str, str]]:
        """Dynamic mode fronts no MCP server: no proxied tool, no task."""
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name!r}")

    @property
    def upstream_credentials(self) -> list[UpstreamCredentials]:
        return self.inner.upstream_credentials

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None,
                        principal: Principal = ANONYMOUS, *, progress: Any = None,
                        ask: Any = None, notify: Any = None,
                        context: CallContext = NO_CONTEXT) -> types.CallToolResult:
        """Run meta-tool `name` for `principal` (`progress`, `ask`, `notify`: for proxied tools; this
        mode has none).

        Raises:
            MCPError: -32602 for a name that is not one of the three meta-tools.
        """
        meta = self._by_name.get(name)
        if meta is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name!r}")
        arguments = arguments or {}
        error = meta.check.error(arguments)
        if error is not None:
            where = _cut(error.json_path)
            return error_result(f"Invalid arguments for tool {name!r} at {where}: {_cut(error.message)}")
        if name == SEARCH:
            return await self._search(arguments, principal)
        if name == DESCRIBE:
            return await self._describe(arguments["name"], principal)
        return await self._call(arguments["name"], arguments.get("arguments") or {}, principal, context)

    async def _visible_names(self, principal: Principal) -> frozenset[str] | None:
        """What `tools/list` would show `principal` in the normal mode (None: everything)."""
        try:
            return self._visible[principal]
        except KeyError:
            tools = await self.inner.visible_tools(principal)
            names = None if tools is None else frozenset(tool.name for tool in tools)
            self._visible[principal] = names
            return names

    async def _resolve(self, name: str, principal: Principal) -> ToolPlan | None:
        """The operation `name` (or operationId) if it exists and `principal` may see it."""
        plan = self._operations.get(name) or self._operations.get(self._aliases.get(name, ""))
        if plan is None:
            return None
        visible = await self._visible_names(principal)
        return plan if visible is None or plan.name in visible else None

    async def _search(self, arguments: Mapping[str, Any], principal: Principal) -> types.CallToolResult:
        query: str = arguments["query"]
        tag: str | None = arguments.get("tag")
        limit: int = arguments.get("limit", DEFAULT_RESULTS)
        if not query.strip() and not tag:
            return error_result(f"Invalid arguments for tool {SEARCH!r}: give a query, a tag or both")
        visible = await self._visible_names(principal)
        index = self.index
        wanted = tag.casefold() if tag else None

        def allowed(i: int) -> bool:
            plan = index.plans[i]
            return ((visible is None or plan.name in visible)
                    and (wanted is None or any(t.casefold() == wanted for t in plan.operation.tags)))

        if query.strip():
            matches = [(score, -i) for i, score in index.scores(query).items() if allowed(i)]
            best = [-i for _, i in heapq.nlargest(limit, matches)]
        else:  # a tag alone: its operations in the document's order
            matches = [(0.0, -i) for i in range(len(index.plans)) if allowed(i)]
            best = [-i for _, i in matches[:limit]]
        found = [_summary(index.plans[i]) for i in best]
        return _structured({"operations": found, "total": len(matches)})

    async def _describe(self, name: str, principal: Principal) -> types.CallToolResult:
        plan = await self._resolve(name, principal)
        if plan is None:
            return error_result(_unknown(name))
        op = plan.operation
        described: dict[str, Any] = {"name": plan.name, "method": op.method, "path": op.path}
        if op.summary:
            described["summary"] = op.summary
        described["description"] = plan.tool.description or ""
        if op.tags:
            described["tags"] = list(op.tags)
        described["readOnly"] = op.method in ("GET", "HEAD", "OPTIONS")
        if op.deprecated:
            described["deprecated"] = True
        described["inputSchema"] = plan.tool.input_schema
        return _structured(described)

    async def _call(self, name: str, arguments: Any, principal: Principal,
                    context: CallContext) -> types.CallToolResult:
        target = name if name in self._operations else self._aliases.get(name)
        if target is None:
            return error_result(_unknown(name))
        try:
            # The normal mode's path: scopes and rules, validation, request, result mapping.
            return await self.inner.call_tool(target, arguments, principal, context=context)
        except MCPError as exc:
            if exc.code != types.INVALID_PARAMS:
                raise
            # Unknown and hidden alike; a tool error (not JSON-RPC) so the model can search again.
            return error_result(_unknown(name))

    @property
    def parts(self) -> Parts:
        return self.inner.parts

    def resources(self) -> list[Any]:
        return self.inner.resources()

    def detach(self) -> None:
        self.inner.detach()

    async def __aenter__(self) -> DynamicCatalog:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)


def build_served_catalog(settings: Settings, *, transport: Any = None, require_upstream: bool = True,
                         parts: Parts | None = None) -> Catalog | DynamicCatalog:
    """`build_catalog`, wrapped in a `DynamicCatalog` when `settings.mode` is `dynamic` (`parts`:
    a running catalog's, on a reload: see `build_catalog`)."""
    catalog = build_catalog(settings, transport=transport, require_upstream=require_upstream, parts=parts)
    return DynamicCatalog(catalog) if settings.mode == "dynamic" else catalog


def _cut(text: str) -> str:
    """Messages quote the bad value: a 1 MB query must not come back whole."""
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "...[cut]"


def _unknown(name: str) -> str:
    return f"Unknown operation: {_cut(repr(name))}; search_operations lists the operations you can call"


def _summary(plan: ToolPlan) -> dict[str, str]:
    op = plan.operation
    summary = op.summary or (plan.tool.description or "").strip().split("\n", 1)[0]
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[:_SUMMARY_CHARS - 3] + "..."
    return {"name": plan.name, "method": op.method, "path": op.path, "summary": summary}


def _structured(value: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=value)


def _meta_tools(operations: Sequence[ToolPlan], *, tags_public: bool) -> list[MetaTool]:
    meta = {MODE_META_KEY: "dynamic"}
    tags = sorted({tag for plan in operations for tag in plan.operation.tags})
    tag_hint = ""
    if tags_public and tags:  # with scopes or rules, tag names could hint at hidden operations
        shown = ", ".join(tags[:_TAGS_IN_DESCRIPTION]) + (", ..." if len(tags) > _TAGS_IN_DESCRIPTION else "")
        tag_hint = f" Tags: {shown}."
    read_only = all(plan.method in ("GET", "HEAD", "OPTIONS") for plan in operations)
    specs = [
        (SEARCH, "Search operations",
         "Find the API operation that does what you need. This server exposes a large HTTP API through "
         "three tools: search_operations, then describe_operation for the input schema, then call_operation. "
         f"Returns the best matches (name, method, path, summary), best first.{tag_hint}",
         _SEARCH_INPUT, _SEARCH_OUTPUT,
         types.ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                               open_world_hint=False)),
        (DESCRIBE, "Describe an operation",
         "Show one operation found with search_operations: its description and the JSON Schema of the "
         "arguments call_operation takes for it.",
         _DESCRIBE_INPUT, _DESCRIBE_OUTPUT,
         types.ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                               open_world_hint=False)),
        (CALL, "Call an operation",
         "Call one operation by name with its arguments (see describe_operation). Arguments are checked "
         "against the operation's input schema before the request is sent; the result is the API's answer.",
         _CALL_INPUT, None,
         types.ToolAnnotations(read_only_hint=read_only, destructive_hint=False if read_only else None,
                               open_world_hint=True)),
    ]
    return [MetaTool(name=name, input_schema=schema, check=SchemaCheck(schema), tool=types.Tool(
        name=name, title=title, description=description, input_schema=schema, output_schema=output,
        annotations=annotations, _meta=meta))
        for name, title, description, schema, output, annotations in specs]
