"""Resources, resource templates, prompts and completions of the MCP sources, behind the access rules.

`Passthrough` merges what the upstream MCP servers list (prompt names carry their source's
prefix; resource URIs are never renamed) and answers the MCP requests for them: lists are
filtered by the `acl:` rules (features `resources` and `prompts`), and reading, getting or
completing something hidden answers exactly like something that does not exist (`-32602`,
SEP-2164's code for an unknown resource). `register_handlers` adds the handlers to the SDK
server for the features some source provides; `Downstream` remembers the connected clients so
that an upstream `list_changed` can be passed on to them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Final, TypeVar

import mcp.types as types
from mcp.shared.exceptions import MCPError

from converter.auth.principal import Principal
from converter.errors import ConfigError, UpstreamError
from converter.passthrough.source import MCPUpstreamSource
from converter.policy import Policy
from converter.policy.decision import Feature
from converter.telemetry.record import current_record

log = logging.getLogger("openapi_mcp")

NOTIFY_SECONDS: Final = 2.0  # per downstream connection; a stuck client must not stall the others
_EXPANSIONS: Final = {"": "[^/?#]*", "+": ".*", "#": "(#.*)?", "?": r"(\?.*)?", "&": "(&.*)?", ".": r"(\..*)?",
                      "/": "(/.*)?", ";": "(;.*)?"}
_EXPRESSION = re.compile(r"\{([+#./;?&]?)[^}]*\}")


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can expand to (loosely: any value per variable)."""
    parts, pos = [], 0
    for match in _EXPRESSION.finditer(template):
        parts += [re.escape(template[pos:match.start()]), _EXPANSIONS[match.group(1)]]
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


class Passthrough:
    """The merged resources, templates and prompts of the MCP sources, and the requests on them."""

    def __init__(self, sources: Sequence[MCPUpstreamSource], policy: Policy) -> None:
        self.sources = list(sources)
        self.policy = policy
        self.prompts: dict[str, MCPUpstreamSource] = {}
        self.resources: list[tuple[types.Resource, MCPUpstreamSource]] = []
        self.templates: list[tuple[types.ResourceTemplate, MCPUpstreamSource, re.Pattern[str]]] = []
        self._uris: dict[str, MCPUpstreamSource] = {}

    def provides(self, feature: str) -> bool:
        """Whether some source serves `feature` (resources, prompts, completions); unknown counts as yes."""
        return any(s.capabilities is None or getattr(s.capabilities, feature) is not None for s in self.sources)

    def merge(self, *, strict: bool) -> None:
        """Rebuild the merged view from the sources' current lists (first source wins a repeated name)."""
        prompts: dict[str, MCPUpstreamSource] = {}
        uris: dict[str, MCPUpstreamSource] = {}
        resources, templates, clashes = [], [], []
        for source in self.sources:
            for name in source.prompts:
                if name in prompts:
                    message = (f"prompt name {name!r} is served by two sources: {prompts[name].describe()} and "
                               f"{source.describe()}; give one of them a `prefix:`")
                    if strict:
                        raise ConfigError(message, key="sources")
                    clashes.append(message)
                    continue
                prompts[name] = source
            for resource in source.resources:
                if resource.uri not in uris:
                    uris[resource.uri] = source
                    resources.append((resource, source))
            templates += [(t, source, template_regex(t.uri_template)) for t in source.templates]
        if clashes:
            more = f" (and {len(clashes) - 1} more such names)" if len(clashes) > 1 else ""
            log.error("%s%s; only the first source's prompt is served", clashes[0], more)
        self.prompts, self._uris, self.resources, self.templates = prompts, uris, resources, templates

    async def _allows(self, feature: Feature, operation: str, name: str, principal: Principal) -> bool:
        return (await self.policy.decide(principal, feature, operation, name)).allowed

    # -- lists --------------------------------------------------------------------------------

    async def list_resources(self, principal: Principal) -> list[types.Resource]:
        visible = set(await self.policy.visible(principal, "resources", (r.uri for r, _ in self.resources)))
        return [r for r, _ in self.resources if r.uri in visible]

    async def list_templates(self, principal: Principal) -> list[types.ResourceTemplate]:
        return [t for t, _, _ in self.templates if await self._allows("resources", "templates", t.uri_template,
                                                                       principal)]

    async def list_prompts(self, principal: Principal) -> list[types.Prompt]:
        visible = set(await self.policy.visible(principal, "prompts", self.prompts))
        return [source.prompts[name][0] for name, source in self.prompts.items() if name in visible]

    # -- requests -----------------------------------------------------------------------------

    async def source_of(self, uri: str, principal: Principal, operation: str) -> MCPUpstreamSource:
        """The source serving `uri`, if the access rules let `principal` do `operation` on it.

        Only what is listed, or matches a listed template, counts: anything else (hidden or not)
        gets the same answer without asking an upstream, whose own words could tell them apart.

        Raises:
            MCPError: -32602 "Unknown resource" for an unknown or hidden URI.
        """
        source = self._uris.get(uri) or next((s for _, s, rx in self.templates if rx.fullmatch(uri)), None)
        if source is None or not await self._allows("resources", operation, uri, principal):
            _denied(source is not None)
            raise _unknown_resource(uri)
        return source

    async def read_resource(self, uri: str, principal: Principal) -> types.ReadResourceResult:
        """Raises: MCPError -32602 for an unknown or hidden resource, or the upstream's error."""
        source = await self.source_of(uri, principal, "read")
        try:
            return await relay(source, "resources/read", source.read_resource(uri))
        except MCPError as exc:
            if exc.code == types.INVALID_PARAMS:  # the upstream's "not found" (SEP-2164), in our words
                raise _unknown_resource(uri) from exc
            raise

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None,
                         principal: Principal) -> types.GetPromptResult:
        """Raises: MCPError -32602 for an unknown or hidden prompt, or the upstream's error."""
        source = self.prompts.get(name)
        if source is None or not await self._allows("prompts", "get", name, principal):
            _denied(source is not None)
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {name!r}")
        return await relay(source, "prompts/get", source.get_prompt(name, arguments))

    async def complete(self, params: types.CompleteRequestParams, principal: Principal) -> types.CompleteResult:
        """Completions follow visibility: a prompt that cannot be got, or a template that cannot be
        listed, has none (answered like an unknown one)."""
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            source = self.prompts.get(ref.name)
            if source is None or not await self._allows("prompts", "get", ref.name, principal):
                _denied(source is not None)
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {ref.name!r}")
        else:
            source = next((s for t, s, _ in self.templates if t.uri_template == ref.uri), None)
            if source is None or not await self._allows("resources", "templates", ref.uri, principal):
                _denied(source is not None)
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource template: {ref.uri!r}")
        return await relay(source, "completion/complete", source.complete(ref, params.argument, params.context))


def _unknown_resource(uri: str) -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri!r}")


def _denied(hidden: bool) -> None:
    record = current_record.get()
    if record is not None and hidden:
        record.acl_denied = True


_T = TypeVar("_T")


async def relay(source: MCPUpstreamSource, method: str, request: Awaitable[_T]) -> _T:
    """Await an upstream request; its failure to answer becomes an internal error that says why."""
    record = current_record.get()
    started = time.perf_counter()
    try:
        return await request
    except UpstreamError as exc:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from exc
    finally:
        if record is not None:
            record.upstream_method, record.upstream_url = method, source.url
            record.upstream_ms = round((time.perf_counter() - started) * 1000, 3)
