"""Huge APIs (issue 7): `--read-only`, the token-cost line and dynamic mode, on GitHub's spec.

GitHub's REST description comes from npm `@octokit/openapi` (pinned in tests/node/package.json,
installed by scripts/test.sh). The upstream is a `httpx.MockTransport` that records requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from converter.auth.principal import Principal
from converter.catalog import Catalog, build_catalog
from converter.catalog.dynamic import CALL, DESCRIBE, MODE_META_KEY, SEARCH, DynamicCatalog, build_served_catalog
from converter.cli import main
from converter.config import Settings, load_settings
from converter.errors import ConfigError
from converter.server.app import build_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / "tests/node/node_modules/@octokit/openapi/generated/api.github.com.json"
MARKETPLACE = str(ROOT / "specs" / "marketplace.yaml")
LIST_ISSUES = "issues_list-for-repo"  # operationId issues/list-for-repo, as a tool name



def github_spec() -> str:
    if not GITHUB.is_file():
        pytest.fail(f"GitHub's OpenAPI description is missing: {GITHUB} (npm @octokit/openapi, pinned in "
                    "tests/node/package.json); run `bash scripts/test.sh`, which installs tests/node")
    return str(GITHUB)


class Recorder:
    """A fake api.github.com: answers `[]` and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json=[])


@pytest.fixture(scope="module")
def github() -> Iterator[tuple[Catalog, Recorder]]:
    recorder = Recorder()
    yield build_catalog(Settings(spec=github_spec()), transport=recorder.transport), recorder


@pytest.fixture(scope="module")
def guarded() -> Catalog:
    """GitHub with per-tool scopes: listing a repository's issues needs `issues:read`."""
    auth = {"resource": "http://127.0.0.1:8000/mcp", "authorization_servers": ["http://127.0.0.1:9/realms/t"],
            "tool_scopes": {LIST_ISSUES: ["issues:read"], "issues_create": ["issues:write"]}}
    return build_catalog(Settings.model_validate({"spec": github_spec(), "auth": auth}),
                         transport=httpx.MockTransport(lambda request: httpx.Response(200, json=[])))


def data(result: Any) -> Any:
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def names(found: dict[str, Any]) -> list[str]:
    return [op["name"] for op in found["operations"]]


@pytest.mark.anyio
async def test_an_agent_goes_from_a_task_to_the_right_call_with_the_meta_tools_only(github) -> None:
    catalog, recorder = github
    dynamic = DynamicCatalog(catalog)
    async with dynamic, Client(build_server(dynamic)) as client:
        listed = (await client.list_tools()).tools
        assert [tool.name for tool in listed] == [SEARCH, DESCRIBE, CALL]
        assert all(tool.meta == {MODE_META_KEY: "dynamic"} for tool in listed)

        found = data(await client.call_tool(SEARCH, {"query": "list issues repository"}))
        assert LIST_ISSUES in names(found)[:3], names(found)
        assert len(found["operations"]) == 10 and found["total"] > 10  # bounded: 10 by default
        hit = found["operations"][names(found).index(LIST_ISSUES)]
        assert hit == {"name": LIST_ISSUES, "method": "GET", "path": "/repos/{owner}/{repo}/issues",
                       "summary": "List repository issues"}

        described = data(await client.call_tool(DESCRIBE, {"name": LIST_ISSUES}))
        schema = described["inputSchema"]
        assert {"owner", "repo", "state"} <= set(schema["properties"])
        assert {"owner", "repo"} <= set(schema["required"])
        assert "open" in json.dumps(schema["properties"]["state"])
        assert (described["method"], described["path"], described["readOnly"]) == (
            "GET", "/repos/{owner}/{repo}/issues", True)

        recorder.requests.clear()
        arguments = {"owner": "octo", "repo": "hello", "state": "open"}
        result = await client.call_tool(CALL, {"name": LIST_ISSUES, "arguments": arguments})
    assert not result.is_error, result.content
    [request] = recorder.requests
    assert (request.method, request.url.host) == ("GET", "api.github.com")
    assert request.url.path == "/repos/octo/hello/issues"
    assert dict(request.url.params) == {"state": "open"}


@pytest.mark.anyio
async def test_call_operation_answers_exactly_like_the_tool_in_normal_mode(github) -> None:
    catalog, recorder = github
    dynamic = DynamicCatalog(catalog)
    async with dynamic:
        for arguments in ({"owner": "octo", "repo": "hello", "state": "opened"}, {"owner": "octo"},
                          {"owner": "octo", "repo": "hello", "state": "open", "page": "two"}):
            normal = await catalog.call_tool(LIST_ISSUES, arguments)
            through = await dynamic.call_tool(CALL, {"name": LIST_ISSUES, "arguments": arguments})
            assert normal.is_error and through == normal
            assert normal.content[0].text.startswith(f"Invalid arguments for tool {LIST_ISSUES!r} at $")
        recorder.requests.clear()
        arguments = {"owner": "octo", "repo": "hello", "state": "closed", "per_page": 5}
        assert await dynamic.call_tool(CALL, {"name": LIST_ISSUES, "arguments": arguments}) == \
            await catalog.call_tool(LIST_ISSUES, arguments)
        # The spec's operationId works as well as the tool name.
        by_id = await dynamic.call_tool(CALL, {"name": "issues/list-for-repo", "arguments": arguments})
        assert not by_id.is_error
    assert len(recorder.requests) == 3 and recorder.requests[0].url == recorder.requests[1].url


@pytest.mark.anyio
async def test_meta_tool_arguments_are_checked_and_unknown_names_are_tool_errors(github) -> None:
    dynamic = DynamicCatalog(github[0])
    bad = await dynamic.call_tool(SEARCH, {"query": "issues", "limit": 51})
    assert bad.is_error and bad.content[0].text == (
        "Invalid arguments for tool 'search_operations' at $.limit: 51 is greater than the maximum of 50")
    bad = await dynamic.call_tool(CALL, {"operation": LIST_ISSUES})
    assert bad.is_error and bad.content[0].text.startswith("Invalid arguments for tool 'call_operation' at $")
    unknown = await dynamic.call_tool(DESCRIBE, {"name": "issues_list-for-nothing"})
    assert unknown.is_error and unknown.content[0].text == (
        "Unknown operation: 'issues_list-for-nothing'; search_operations lists the operations you can call")
    assert len(data(await dynamic.call_tool(SEARCH, {"query": "list", "limit": 50}))["operations"]) == 50
    with pytest.raises(MCPError) as exc:
        await dynamic.call_tool(LIST_ISSUES, {})  # operations are not tools in dynamic mode
    assert (exc.value.error.code, exc.value.error.message) == (-32602, f"Unknown tool: {LIST_ISSUES!r}")


@pytest.mark.anyio
async def test_a_tag_narrows_the_search_and_alone_lists_that_tag(github) -> None:
    dynamic = DynamicCatalog(github[0])
    plans = {plan.name: plan for plan in dynamic.operations}
    in_tag = data(await dynamic.call_tool(SEARCH, {"query": "list", "tag": "Gists", "limit": 50}))
    assert in_tag["operations"] and all("gists" in plans[n].operation.tags for n in names(in_tag))
    alone = data(await dynamic.call_tool(SEARCH, {"query": "", "tag": "gists", "limit": 50}))
    gists = [plan.name for plan in dynamic.operations if "gists" in plan.operation.tags]
    assert names(alone) == gists[:50] and alone["total"] == len(gists)
    nothing = await dynamic.call_tool(SEARCH, {"query": " "})
    assert nothing.is_error and nothing.content[0].text == (
        "Invalid arguments for tool 'search_operations': give a query, a tag or both")


@pytest.mark.anyio
async def test_hidden_operations_are_not_found_described_or_called(guarded) -> None:
    dynamic = DynamicCatalog(guarded)
    reader = Principal(subject="r", scopes=frozenset({"issues:read"}), is_authenticated=True)
    query = {"query": "list issues repository"}
    async with dynamic, Client(build_server(dynamic)) as client:  # in process: the anonymous principal
        assert [t.name for t in (await client.list_tools()).tools] == [SEARCH, DESCRIBE, CALL]
        found = data(await client.call_tool(SEARCH, query))
        assert LIST_ISSUES not in names(found) and found["operations"]
        hidden = await client.call_tool(DESCRIBE, {"name": LIST_ISSUES})
        missing = await client.call_tool(DESCRIBE, {"name": "issues_list-for-nowhere"})
        assert hidden.is_error and hidden.content[0].text == missing.content[0].text.replace(
            "issues_list-for-nowhere", LIST_ISSUES)
        arguments = {"owner": "octo", "repo": "hello"}
        hidden = await client.call_tool(CALL, {"name": LIST_ISSUES, "arguments": arguments})
        missing = await client.call_tool(CALL, {"name": "issues_list-for-nowhere", "arguments": arguments})
        assert hidden.is_error and hidden.content[0].text == missing.content[0].text.replace(
            "issues_list-for-nowhere", LIST_ISSUES)
        alias = await client.call_tool(CALL, {"name": "issues/list-for-repo", "arguments": arguments})
        assert alias.is_error and "Unknown operation: 'issues/list-for-repo'" in alias.content[0].text
        # The normal mode hides it the same way.
        assert LIST_ISSUES not in {t.name for t in (await guarded.visible_tools(Principal())) or []}
        # With the scope, the same operation is found, described and called.
        assert LIST_ISSUES in names(data(await dynamic.call_tool(SEARCH, query, reader)))[:3]
        assert data(await dynamic.call_tool(DESCRIBE, {"name": LIST_ISSUES}, reader))["name"] == LIST_ISSUES
        called = await dynamic.call_tool(CALL, {"name": LIST_ISSUES, "arguments": arguments}, reader)
        assert not called.is_error


@pytest.mark.anyio
async def test_access_rules_apply_per_operation(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"spec: {MARKETPLACE}\nupstream: {{url: http://mock.test}}\nmode: dynamic\n"
                      "acl: {rules: [{name: {type: glob, pattern: 'get*'}}]}\n")
    dynamic = build_served_catalog(load_settings(str(config)), transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json={"id": "u1", "name": "Ann"})))
    assert isinstance(dynamic, DynamicCatalog)
    found = data(await dynamic.call_tool(SEARCH, {"query": "user", "limit": 50}))
    assert names(found) and all(name.startswith("get") for name in names(found))
    async with dynamic:
        refused = await dynamic.call_tool(CALL, {"name": "listUsers", "arguments": {}})
    assert refused.is_error and refused.content[0].text.startswith("Unknown operation: 'listUsers'")


def test_read_only_keeps_only_safe_methods_and_composes_with_include() -> None:
    catalog = build_catalog(Settings(spec=github_spec(), read_only=True), require_upstream=False)
    assert len(catalog.plans) == 639 and {plan.method for plan in catalog.plans} == {"GET"}
    settings = load_settings(None, spec=MARKETPLACE, read_only=True, mode="dynamic")
    assert settings.read_only and settings.mode == "dynamic"
    assert settings.exclude.methods == ["POST", "PUT", "PATCH", "DELETE", "TRACE"]
    narrowed = Settings.model_validate({"spec": MARKETPLACE, "read_only": "true",
                                        "include": {"tags": ["orders"]}, "exclude": {"methods": ["head"]}})
    plans = build_catalog(narrowed, require_upstream=False).plans
    assert plans and {(p.method, "orders" in p.operation.tags) for p in plans} == {("GET", True)}
    aggregated = Settings.model_validate({"read_only": True,
                                          "sources": [{"spec": MARKETPLACE, "prefix": "m_"}]})
    plans = build_catalog(aggregated, require_upstream=False).plans
    assert len(plans) == 7 and {p.method for p in plans} == {"GET"}  # every OpenAPI source, not only spec:


def test_tools_command_prints_the_token_cost_and_read_only_cuts_it(capsys) -> None:
    assert main(["tools", MARKETPLACE]) == 0
    every = capsys.readouterr().out.splitlines()[-1]
    assert every.startswith("10 tools; tools/list is ") and every.endswith(" tokens)")
    assert main(["tools", MARKETPLACE, "--read-only"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("7 tools; tools/list is ")
    assert main(["tools", MARKETPLACE, "--mode", "dynamic"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == ("10 operations behind 3 meta-tools (dynamic mode: search_operations, "
                       "describe_operation, call_operation)")
    assert out[-1].startswith("tools/list is ") and "; with --mode tools it would be " in out[-1]
    assert main(["tools", MARKETPLACE, "--mode", "dynamic", "--json"]) == 0
    served = json.loads(capsys.readouterr().out)  # pure JSON: the served tools and nothing else
    assert [tool["name"] for tool in served] == [SEARCH, DESCRIBE, CALL]
    assert served[2]["annotations"]["readOnlyHint"] is False


@pytest.mark.parametrize(("setting", "message"), [
    ("read_only: true", "c.yaml: read_only: applies to OpenAPI operations only; an MCP upstream's tools "
                        "cannot be limited to safe methods (remove read_only or the MCP upstream)"),
    ("mode: dynamic", "c.yaml: mode: dynamic serves OpenAPI operations only; an MCP upstream needs "
                      "mode: tools"),
])
def test_read_only_and_dynamic_mode_refuse_an_mcp_upstream(tmp_path: Path, setting: str, message: str,
                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(f"spec: {MARKETPLACE}\nmcp_upstream: http://127.0.0.1:9/mcp\n{setting}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings("c.yaml")
    assert str(exc.value) == message
    with pytest.raises(ConfigError):  # built without load_settings, the catalog refuses too
        build_served_catalog(Settings(mcp_upstream="http://127.0.0.1:9/mcp", mode="dynamic"))
