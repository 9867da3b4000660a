"""Access rules: compile errors name the rule; decisions; the same rules on a converted OpenAPI server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

import mock_api
from converter import ConfigError
from converter.auth.principal import Principal
from converter.catalog import build_catalog
from converter.config import load_settings
from converter.policy import Policy
from converter.policy.acl import compile_acl
from converter.server.app import build_server

ADMIN = Principal(subject="ann", claims={"realm_access": {"roles": ["admin", "user"]}}, is_authenticated=True)
USER = Principal(subject="bob", claims={"realm_access": {"roles": ["user"]}}, is_authenticated=True)
ANON = Principal()


@pytest.mark.parametrize(("rules", "message"), [
    ([{"features": ["tool"]}], "acl.rules[0].features: must be a non-empty list of tools, resources, prompts, not ['tool']"),
    ([{"features": ["tools"], "operations": ["read"]}],
     "acl.rules[0].operations: must be a non-empty list of call, list (for tools), not ['read']"),
    ([{}, {"name": {"type": "regex", "pattern": "("}}], "acl.rules[1].name.pattern: is not a valid regular expression"),
    ([{"when": "claims.("}], "acl.rules[0].when: is not valid CEL: Failed to parse expression 'claims.('"),
    ([{"effect": "maybe"}], "acl.rules[0].effect: must be allow or deny, not 'maybe'"),
    ([{"nme": {}}], "acl.rules[0].nme: unknown key"),
])
def test_bad_rules_are_config_errors_naming_the_rule(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        compile_acl({"rules": rules}, source="cfg.yaml")
    assert str(exc.value).startswith(f"cfg.yaml: {message}")


def test_decisions_deny_wins_and_nothing_matching_denies() -> None:
    acl = compile_acl({"rules": [
        {"features": ["tools"], "name": {"type": "glob", "pattern": "get*"}},
        {"features": ["tools"], "operations": ["call"], "name": {"type": "literal", "pattern": "getSecret"},
         "effect": "deny", "when": "!('admin' in claims.realm_access.roles)"},
        {"features": ["prompts"], "operations": ["get"], "name": {"type": "regex", "pattern": "sum(mary|up)"}},
    ]})
    assert acl.decide("tools", "call", "getUser", USER)
    assert not acl.decide("tools", "call", "getSecret", USER)
    assert acl.decide("tools", "call", "getSecret", ADMIN)
    assert not acl.decide("tools", "call", "deleteUser", ADMIN)  # no rule matches: implicit deny
    assert acl.decide("prompts", "get", "summary", ANON) and not acl.decide("prompts", "get", "summaryX", ANON)
    assert not acl.decide("prompts", "list", "summary", ANON)
    assert not compile_acl({"rules": []}).decide("tools", "list", "x", ADMIN)


def test_a_failing_condition_fails_closed() -> None:
    acl = compile_acl({"rules": [
        {"when": "claims.level > 3"},  # no `level` claim: cannot be evaluated -> this allow does not match
        {"effect": "deny", "name": {"type": "literal", "pattern": "x"}, "when": "claims.level > 3"},
    ]})
    assert not acl.decide("tools", "call", "y", USER)
    assert not acl.decide("tools", "call", "x", USER)


def test_audit_log_names_rule_subject_and_effect(caplog: pytest.LogCaptureFixture) -> None:
    acl = compile_acl({"audit": True, "rules": [{"name": {"type": "literal", "pattern": "a"}}]})
    with caplog.at_level(logging.INFO, logger="openapi_mcp.audit"):
        acl.decide("tools", "call", "a", USER)
        acl.decide("tools", "call", "b", USER)
    entries = [json.loads(r.message) for r in caplog.records]
    assert entries == [
        {"rule": 0, "effect": "allow", "feature": "tools", "operation": "call", "name": "a", "subject": "bob",
         "client_id": None},
        {"rule": None, "effect": "deny", "feature": "tools", "operation": "call", "name": "b", "subject": "bob",
         "client_id": None},
    ]


# -- on a converted OpenAPI server, through the SDK client ------------------------------------------

def catalog_with(tmp_path: Path, acl: dict[str, Any]):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"spec": str(mock_api.SPEC_PATH), "upstream": {"url": "http://mock.test"},
                                  "acl": acl, "telemetry": {"access_log": "off"}}))
    return build_catalog(load_settings(str(config)), transport=httpx.ASGITransport(app=mock_api.create_app()))



@pytest.mark.anyio
async def test_empty_acl_hides_everything_but_clients_still_connect(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path, {"rules": []})
    async with catalog, Client(build_server(catalog)) as client:
        assert (await client.list_tools()).tools == []
        with pytest.raises(MCPError, match="Unknown tool: 'getUser'"):
            await client.call_tool("getUser", {"userId": "u1"})


@pytest.mark.anyio
async def test_list_only_rule_shows_everything_and_refuses_every_call(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path, {"rules": [{"features": ["tools"], "operations": ["list"]}]})
    async with catalog, Client(build_server(catalog)) as client:
        assert len((await client.list_tools()).tools) == 10
        for name in ("getUser", "listUsers"):
            with pytest.raises(MCPError) as exc:
                await client.call_tool(name, {"userId": "u1"} if name == "getUser" else {})
            assert (exc.value.code, exc.value.message) == (-32602, f"Unknown tool: {name!r}")  # same as unknown


@pytest.mark.anyio
async def test_literal_rule_exposes_exactly_one_tool(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path, {"rules": [{"name": {"type": "literal", "pattern": "getUser"}}]})
    async with catalog, Client(build_server(catalog)) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["getUser"]
        assert not (await client.call_tool("getUser", {"userId": "u1"})).is_error
        with pytest.raises(MCPError):
            await client.call_tool("listUsers", {})


@pytest.mark.anyio
async def test_when_rule_on_roles_differs_between_two_callers(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path, {"rules": [
        {"name": {"type": "glob", "pattern": "list*"}},
        {"name": {"type": "regex", "pattern": "(create|update|delete)Order"},
         "when": "'admin' in claims.realm_access.roles"},
    ]})
    async with catalog:
        admin = [t.name for t in (await catalog.visible_tools(ADMIN))]
        user = [t.name for t in (await catalog.visible_tools(USER))]
        assert set(admin) - set(user) == {"createOrder", "updateOrder", "deleteOrder"}
        assert "listUsers" in user and "getUser" not in user
        created = await catalog.call_tool("createOrder", {"userId": "u1", "item": "x", "quantity": 1, "price": 1}, ADMIN)
        assert not created.is_error
        with pytest.raises(MCPError):
            await catalog.call_tool("createOrder", {"userId": "u1", "item": "x", "quantity": 1, "price": 1}, USER)


def test_the_decision_cache_is_bounded_whatever_names_clients_send() -> None:
    """Issue 12, item 5: names are client input (resource URIs); the cache keeps few and short ones."""
    from converter.policy.acl import MAX_CACHED_DECISIONS, MAX_CACHED_NAME

    acl = compile_acl({"rules": [{"features": ["resources"], "name": {"type": "glob", "pattern": "demo://*"}}]})
    caller = Principal(subject="mallory")
    for i in range(300):
        assert acl.decide("resources", "read", f"demo://{i}/" + "x" * 1_000_000, caller)
    assert not acl._decisions[caller]  # names longer than MAX_CACHED_NAME are decided, never kept
    for i in range(MAX_CACHED_DECISIONS + 500):
        assert acl.decide("resources", "read", f"demo://{i}", caller)
    kept = acl._decisions[caller]
    assert len(kept) == MAX_CACHED_DECISIONS
    assert max(len(name) for _, _, name in kept) <= MAX_CACHED_NAME


@pytest.mark.parametrize(("value", "effect", "allowed"), [
    ("true", "deny", False), (1, "deny", False), ("false", "deny", False), (None, "deny", False),
    ("true", "allow", False), (True, "allow", True), (False, "deny", True),
])
def test_a_condition_that_is_not_a_boolean_counts_against_the_caller(value, effect, allowed) -> None:
    """Issue 12, item 4: `claims.suspended` as the string "true" (a Keycloak attribute mapper) or 1
    must not make a deny rule let the caller through; an allow rule does not match either."""
    rules = [{"features": ["tools"], "effect": effect, "when": "claims.suspended"}]
    if effect == "deny":
        rules.insert(0, {"features": ["tools"]})
    acl = compile_acl({"rules": rules})
    caller = Principal(subject="s", claims={"suspended": value})
    assert acl.decide("tools", "call", "t", caller) is allowed


@pytest.mark.parametrize("when", ["'true'", "1", "subject", "scopes", "claims"])
def test_a_condition_known_not_to_be_a_boolean_is_refused_at_startup(when: str) -> None:
    with pytest.raises(ConfigError, match=r"acl\.rules\[0\]\.when: gives \w+ .*, not true or false"):
        compile_acl({"rules": [{"when": when}]})


@pytest.mark.anyio
async def test_the_rules_are_asked_before_the_scopes_so_a_hidden_tool_is_never_named() -> None:
    """A caller lacking a tool's scopes gets a step-up (missing_scopes) only for a tool the rules
    let it know; for a hidden one the decision is plain HIDDEN, which the auth layer never names."""
    acl = compile_acl({"rules": [{"features": ["tools"], "name": {"type": "literal", "pattern": "createOrder"},
                                  "when": "'admin' in claims.realm_access.roles"}]})
    policy = Policy(tool_scopes={"createOrder": (frozenset({"mcp:admin"}),)}, acl=acl)
    hidden = await policy.decide(USER, "tools", "call", "createOrder")
    step_up = await policy.decide(ADMIN, "tools", "call", "createOrder")
    assert hidden.hidden and hidden.missing_scopes == frozenset()
    assert not step_up.allowed and step_up.missing_scopes == frozenset({"mcp:admin"})
