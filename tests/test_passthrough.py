"""The catalog over MCP sources without a network: lists merged under prefixes, filtered by the
access rules, collisions named, and a request to an upstream that is down answered at once.

(tests/integration/test_passthrough.py runs the same against server-everything.)
"""

from __future__ import annotations

import logging

import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from converter import ConfigError
from converter.auth.principal import ANONYMOUS
from converter.catalog import Catalog
from converter.catalog.proxied import ProxiedSource
from converter.config import McpUpstreamSettings
from converter.passthrough import template_regex
from converter.passthrough.source import MCPUpstreamSource
from converter.policy.acl import compile_acl

pytestmark = pytest.mark.anyio



def source(url: str, *, prefix: str = "", label: str = "mcp_upstream", tools: tuple[str, ...] = (),
           prompts: tuple[str, ...] = (), resources: tuple[str, ...] = (),
           templates: tuple[str, ...] = ()) -> MCPUpstreamSource:
    """A source whose lists are filled as if it had connected (it has not)."""
    made = MCPUpstreamSource(McpUpstreamSettings(url=url), prefix=prefix, label=label)
    made.tools = {prefix + n: (types.Tool(name=prefix + n, input_schema={"type": "object"}), n) for n in tools}
    made.prompts = {prefix + n: (types.Prompt(name=prefix + n), n) for n in prompts}
    made.resources = [types.Resource(name=u.rsplit("/", 1)[-1], uri=u) for u in resources]
    made.templates = [types.ResourceTemplate(name=t, uri_template=t) for t in templates]
    return made


def catalog_of(*sources: MCPUpstreamSource, **kwargs: object) -> Catalog:
    return Catalog([ProxiedSource(s) for s in sources], **kwargs)  # type: ignore[arg-type]


def test_template_regex_matches_what_the_template_expands_to() -> None:
    simple = template_regex("demo://resource/dynamic/text/{resourceId}")
    assert simple.fullmatch("demo://resource/dynamic/text/7")
    assert not simple.fullmatch("demo://resource/dynamic/text/7/more")
    assert template_regex("file:///{+path}").fullmatch("file:///a/b/c.txt")
    assert template_regex("api://items{?page,size}").fullmatch("api://items?page=2")
    assert template_regex("api://items{?page,size}").fullmatch("api://items")
    assert not template_regex("a.b://{x}").fullmatch("aXb://1")  # literal parts are escaped


async def test_prefixed_names_and_untouched_uris_are_merged_in_source_order() -> None:
    first = source("http://a/mcp", label="sources[0]", prefix="a_", tools=("echo",), prompts=("hello",),
                   resources=("demo://x",))
    second = source("http://b/mcp", label="sources[1]", prefix="b_", tools=("echo",), prompts=("hello",),
                    resources=("demo://x", "demo://y"))
    catalog = catalog_of(first, second)
    assert [t.name for t in catalog.list_result.tools] == ["a_echo", "b_echo"]
    assert [p.name for p in (await catalog.passthrough.list_prompts(ANONYMOUS))] == ["a_hello", "b_hello"]
    # A URI listed by two sources is served (and read) by the first.
    assert [r.uri for r in (await catalog.passthrough.list_resources(ANONYMOUS))] == ["demo://x", "demo://y"]


def test_a_tool_or_prompt_served_twice_is_an_error_naming_both_sources() -> None:
    first, second = source("http://a/mcp", label="sources[0]"), source("http://b/mcp", label="sources[1]")
    catalog = catalog_of(first, second)  # lists are empty until connected (`preflight` fills them)
    first.tools = second.tools = {"echo": (types.Tool(name="echo", input_schema={"type": "object"}), "echo")}
    with pytest.raises(ConfigError) as exc:
        catalog.check_collisions()
    assert str(exc.value) == ("tool name 'echo' is served by two sources: sources[0] (mcp_upstream http://a/mcp) "
                              "and sources[1] (mcp_upstream http://b/mcp); give one of them a `prefix:` "
                              "(or rename the tool)")
    with pytest.raises(ConfigError, match=r"^prompt name 'p' is served by two sources: sources\[0\]"):
        catalog_of(source("http://a/mcp", label="sources[0]", prompts=("p",)),
                   source("http://b/mcp", label="sources[1]", prompts=("p",)))


async def test_a_collision_appearing_while_serving_keeps_the_first_and_logs_once(
        caplog: pytest.LogCaptureFixture) -> None:
    first, second = source("http://a/mcp", label="sources[0]", tools=("echo",)), source("http://b/mcp", label="sources[1]")
    catalog = catalog_of(first, second)
    second.tools = {"echo": (types.Tool(name="echo", input_schema={"type": "object"}), "echo"),
                    "sum": (types.Tool(name="sum", input_schema={"type": "object"}), "sum")}
    with caplog.at_level(logging.ERROR, logger="openapi_mcp"):
        await second.listeners[0](second, frozenset({"tools"}))
    assert sorted(catalog.tool_names) == ["echo", "sum"]
    assert catalog.revision == 1
    assert [r.message for r in caplog.records] == [
        "tool name 'echo' is served by two sources: sources[0] (mcp_upstream http://a/mcp) and sources[1] "
        "(mcp_upstream http://b/mcp); give one of them a `prefix:` (or rename the tool); only the first "
        "source's tool is served"]


async def test_access_rules_filter_every_feature_and_hidden_answers_like_unknown() -> None:
    acl = compile_acl({"rules": [
        {"features": ["tools"], "name": {"type": "literal", "pattern": "echo"}},
        {"features": ["resources"], "operations": ["list", "read"], "name": {"type": "glob", "pattern": "demo://pub/*"}},
        {"features": ["prompts"], "operations": ["list"]},
    ]})
    upstream = source("http://a/mcp", tools=("echo", "secret"), prompts=("hello",),
                      resources=("demo://pub/a", "demo://private/b"), templates=("demo://t/{id}",))
    catalog = catalog_of(upstream, acl=acl)
    passthrough = catalog.passthrough
    assert [t.name for t in (await catalog.visible_tools(ANONYMOUS)) or []] == ["echo"]
    assert [r.uri for r in (await passthrough.list_resources(ANONYMOUS))] == ["demo://pub/a"]
    assert (await passthrough.list_templates(ANONYMOUS)) == []
    assert [p.name for p in (await passthrough.list_prompts(ANONYMOUS))] == ["hello"]
    for uri in ("demo://private/b", "demo://t/1", "demo://nowhere"):  # hidden, hidden template, unknown
        with pytest.raises(MCPError) as exc:
            await passthrough.read_resource(uri, ANONYMOUS)
        assert (exc.value.code, exc.value.message) == (-32602, f"Unknown resource: {uri!r}")
    for name in ("hello", "nope"):  # listed but not gettable, unknown
        with pytest.raises(MCPError) as exc:
            await passthrough.get_prompt(name, None, ANONYMOUS)
        assert (exc.value.code, exc.value.message) == (-32602, f"Unknown prompt: {name!r}")
    for name in ("secret", "nope"):
        with pytest.raises(MCPError) as exc:
            await catalog.call_tool(name, {}, ANONYMOUS)
        assert exc.value.message == f"Unknown tool: {name!r}"


async def test_an_upstream_that_is_not_connected_answers_at_once() -> None:
    catalog = catalog_of(source("http://127.0.0.1:9/mcp", tools=("echo",), resources=("demo://a",)))
    result = await catalog.call_tool("echo", {"message": "x"})
    assert result.is_error
    assert result.content[0].text == ("mcp_upstream http://127.0.0.1:9/mcp is not connected (reconnecting); "  # type: ignore[union-attr]
                                      "try again shortly")
    with pytest.raises(MCPError) as exc:
        await catalog.passthrough.read_resource("demo://a", ANONYMOUS)
    assert exc.value.code == types.INTERNAL_ERROR


def test_the_task_table_binds_tasks_to_their_owner_and_forgets_them_by_age_and_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from converter.passthrough import tasks as tasks_module
    from converter.passthrough.tasks import TaskTable

    now = [1000.0]
    table = TaskTable(clock=lambda: now[0])
    upstream = source("http://a/mcp")
    alice, bob = ("token", "iss", "alice", "cli"), ("token", "iss", "bob", "cli")
    task = table.add(upstream, "up-1", "research", alice, ttl_ms=60_000)
    assert task.task_id != "up-1" and len(task.task_id) == 32
    assert table.find(task.task_id, alice) is task
    assert table.find(task.task_id, bob) is None and table.owned(bob) == []  # someone else's: unknown
    now[0] += 61
    assert table.find(task.task_id, alice) is None  # past its ttl
    monkeypatch.setattr(tasks_module, "MAX_TASKS", 3)
    made = [table.add(upstream, f"up-{i}", "research", alice, ttl_ms=None) for i in range(5)]
    assert len(table) == 3 and [t.task_id for t in table.owned(alice)] == [t.task_id for t in made[2:]]
