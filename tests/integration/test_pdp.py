"""converter.policy.pdp against a real AuthZEN PDP (tests/integration/pdp_server.py: Cedar over relationship tuples).

Both presets allow and deny per user and tool; lists go in one batch request; every failure of
the PDP (down, slow, 500, garbage, a decision that is not a JSON boolean, a short batch) is a
denial reported as `error`; the cache is bounded, expires, and is never shared across subjects;
concurrent identical questions make one request; AM's documented request and answer round-trip
exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from converter.auth.principal import Principal
from converter.policy.pdp import Pdp, PdpQuestion, PdpSettings, RoundTrip
from tests.integration.services import PDP_CLIENT, PdpServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def user(sub: str | None, client_id: str | None = "cursor", **claims: Any) -> Principal:
    all_claims = {**({"sub": sub} if sub else {}), **claims}
    return Principal(subject=sub, client_id=client_id, claims=all_claims, is_authenticated=True)


def call(who: Principal, tool: str, arguments: dict[str, Any] | None = None) -> PdpQuestion:
    return PdpQuestion(who, "tools", "tools/call", tool, arguments)


def listing(who: Principal, tool: str) -> PdpQuestion:
    return PdpQuestion(who, "tools", "tools/list", tool)


def settings(server: PdpServer, **overrides: Any) -> PdpSettings:
    values: dict[str, Any] = {"url": server.url, "client_id": PDP_CLIENT[0], "client_secret": PDP_CLIENT[1],
                              "timeout": 2.0}
    values.update(overrides)
    return PdpSettings.model_validate(values)


@asynccontextmanager
async def pdp_client(server: PdpServer, **overrides: Any) -> AsyncIterator[Pdp]:
    clock = overrides.pop("clock", time.monotonic)
    on_round_trip = overrides.pop("on_round_trip", None)
    pdp = Pdp(settings(server, **overrides), clock=clock, on_round_trip=on_round_trip)
    try:
        yield pdp
    finally:
        await pdp.aclose()


async def test_gravitee_am_preset_allows_and_denies_per_user_and_tool(pdp_server: PdpServer) -> None:
    async with pdp_client(pdp_server) as pdp:
        alice, bob = user("alice"), user("bob")
        assert (await pdp.decide(call(alice, "get_weather"))).outcome == "allow"
        assert (await pdp.decide(call(bob, "get_weather"))).outcome == "deny"
        assert (await pdp.decide(call(bob, "list_orders"))).outcome == "allow"
        assert (await pdp.decide(call(alice, "delete_order"))).outcome == "deny"
    sent = pdp_server.requests()
    assert [r["auth"] for r in sent] == ["basic"] * 4
    assert sent[0]["body"] == {"subject": {"type": "user", "id": "alice"}, "resource": {"type": "tool", "id": "get_weather"},
                               "action": {"name": "can_access"}}
    assert all(r["request_id"] for r in sent) and len({r["request_id"] for r in sent}) == 4


async def test_the_exact_request_and_answer_gravitee_am_documents(pdp_server: PdpServer) -> None:
    # AM 4.10 "AuthZen" guide: the example request and response, byte for byte in meaning.
    pdp_server.mode("am_example")
    async with pdp_client(pdp_server) as pdp:
        decision = await pdp.decide(call(user("user123"), "get_weather"), request_id="req123")
    assert decision.outcome == "allow"
    assert decision.context == {"reason": "User has admin role", "expires_at": "2024-12-31T23:59:59Z"}
    assert decision.request_id == "req123"
    (sent,) = pdp_server.requests()
    assert sent["body"] == {"subject": {"type": "user", "id": "user123"},
                            "resource": {"type": "tool", "id": "get_weather"},
                            "action": {"name": "can_access"}}
    assert sent["path"] == "/demo/access/v1/evaluation"
    assert sent["auth"] == "basic" and sent["request_id"] == "req123"
    assert sent["content_type"] == "application/json"


async def test_coaz_preset_sends_the_mcp_method_and_the_agent(pdp_server: PdpServer) -> None:
    async with pdp_client(pdp_server, preset="coaz-mcp") as pdp:
        carol, dave = user("carol"), user("dave")
        assert (await pdp.decide(listing(carol, "delete_order"))).outcome == "allow"  # viewer: sees it
        assert (await pdp.decide(call(carol, "delete_order"))).outcome == "deny"  # ... but cannot call it
        assert (await pdp.decide(call(dave, "delete_order"))).outcome == "allow"  # admin through group:ops
        assert (await pdp.decide(call(user("alice"), "get_weather"))).outcome == "allow"
        assert (await pdp.decide(call(user("alice", client_id="blocked-agent"), "get_weather"))).outcome == "deny"
    bodies = [r["body"] for r in pdp_server.requests()]
    assert bodies[1] == {"subject": {"type": "identity", "id": "carol"},
                         "resource": {"type": "tool", "id": "delete_order"},
                         "action": {"name": "tools/call"}, "context": {"agent": "cursor"}}
    assert bodies[0]["action"] == {"name": "tools/list"}


@pytest.mark.parametrize("preset", ["gravitee-am", "coaz-mcp"])
async def test_resources_and_prompts_are_asked_with_their_own_types(pdp_server: PdpServer, preset: str) -> None:
    async with pdp_client(pdp_server, preset=preset) as pdp:
        alice, bob = user("alice"), user("bob")
        read = PdpQuestion(alice, "resources", "resources/read", "file:///reports/q1.txt")
        assert (await pdp.decide(read)).outcome == "allow"
        assert (await pdp.decide(PdpQuestion(bob, "resources", "resources/read", "file:///reports/q1.txt"))).outcome == "deny"
        assert (await pdp.decide(PdpQuestion(alice, "prompts", "prompts/get", "summarize"))).outcome == "allow"
    types = [r["body"]["resource"]["type"] for r in pdp_server.requests()]
    assert types == ["resource", "resource", "prompt"]


async def test_a_list_is_decided_in_one_batch_request_then_from_the_cache(pdp_server: PdpServer) -> None:
    tools = ["get_weather", "list_orders", "delete_order", "get_weather", "unknown_tool"]
    trips: list[RoundTrip] = []
    async with pdp_client(pdp_server, preset="coaz-mcp", on_round_trip=trips.append) as pdp:
        alice = user("alice")
        decisions = await pdp.decide_many([listing(alice, t) for t in tools], request_id="list-1")
        assert [(t.kind, t.items, t.ok, t.status, t.request_id) for t in trips] == [("batch", 4, True, 200, "list-1")]
        assert [d.outcome for d in decisions] == ["allow", "allow", "deny", "allow", "deny"]
        (sent,) = pdp_server.requests()
        assert sent["path"] == "/demo/access/v1/evaluations"
        body = sent["body"]
        assert body["options"] == {"evaluations_semantic": "execute_all"}
        assert body["subject"] == {"type": "identity", "id": "alice"} and body["action"] == {"name": "tools/list"}
        assert body["context"] == {"agent": "cursor"}
        assert body["evaluations"] == [{"resource": {"type": "tool", "id": t}}
                                       for t in ["get_weather", "list_orders", "delete_order", "unknown_tool"]]
        again = await pdp.decide_many([listing(alice, t) for t in tools])
        assert [d.outcome for d in again] == [d.outcome for d in decisions] and all(d.cached for d in again)
        assert len(pdp_server.requests()) == 1


async def test_a_pdp_without_the_batch_endpoint_is_asked_item_by_item(pdp_server: PdpServer) -> None:
    pdp_server.mode("no_batch")
    tools = ["get_weather", "list_orders", "delete_order"]
    async with pdp_client(pdp_server, cache_ttl=0) as pdp:
        decisions = await pdp.decide_many([call(user("alice"), t) for t in tools])
        assert [d.outcome for d in decisions] == ["allow", "allow", "deny"]
        await pdp.decide_many([call(user("bob"), t) for t in tools])
        assert pdp.stats.healthy
    paths = [r["path"].rsplit("/", 1)[1] for r in pdp_server.requests()]
    assert paths == ["evaluations"] + ["evaluation"] * 6  # the batch endpoint is tried once only


def _down_url(free_port: Callable[[], int]) -> str:
    return f"http://127.0.0.1:{free_port()}/demo/access/v1/evaluation"


@pytest.mark.parametrize("mode, reason", [
    ("down", "the PDP could not be reached (ConnectError)"),
    ("slow", "the PDP did not answer within 0.3 s"),
    ("error500", "the PDP answered HTTP 500"),
    ("garbage", "the PDP answered with invalid JSON"),
    ("string", "the PDP's answer has no boolean 'decision'"),
])
async def test_every_pdp_failure_denies_and_is_reported_as_an_error(
        pdp_server: PdpServer, free_port: Callable[[], int], mode: str, reason: str) -> None:
    overrides: dict[str, Any] = {"timeout": 0.3}
    if mode == "down":
        overrides["url"] = _down_url(free_port)
    else:
        pdp_server.mode(mode, delay=1.5)
    async with pdp_client(pdp_server, **overrides) as pdp:
        started = time.monotonic()
        single = await pdp.decide(call(user("alice"), "get_weather"))
        batch = await pdp.decide_many([call(user("alice"), t) for t in ("get_weather", "list_orders")])
        took = time.monotonic() - started
        assert single.outcome == "error" and not single.allowed and single.reason == reason
        assert [d.outcome for d in batch] == ["error", "error"]
        assert took < 0.3 * 2 + 0.5  # bounded by the timeout, never a hang
        assert not pdp.stats.healthy and pdp.stats.last_error == reason
        assert pdp.stats.decisions["error"] == 3 and len(pdp.cache) == 0  # errors are never cached
        if mode != "down":
            pdp_server.mode("ok")
            assert (await pdp.decide(call(user("alice"), "get_weather"))).outcome == "allow"
            assert pdp.stats.healthy


async def test_a_batch_answer_with_missing_evaluations_denies_all_of_them(pdp_server: PdpServer) -> None:
    pdp_server.mode("short_batch")
    async with pdp_client(pdp_server) as pdp:
        decisions = await pdp.decide_many([call(user("alice"), t) for t in ("get_weather", "list_orders")])
    assert [d.outcome for d in decisions] == ["error", "error"]
    assert decisions[0].reason == "the PDP's batch answer has 1 evaluations for 2 questions"


async def test_cached_decisions_expire_after_cache_ttl(pdp_server: PdpServer) -> None:
    now = [1000.0]
    async with pdp_client(pdp_server, cache_ttl=60, clock=lambda: now[0]) as pdp:
        alice = user("alice")
        assert (await pdp.decide(call(alice, "get_weather"))).outcome == "allow"
        pdp_server.tuples([])  # alice loses the permission at the PDP
        now[0] += 59
        cached = await pdp.decide(call(alice, "get_weather"))
        assert cached.outcome == "allow" and cached.cached
        now[0] += 2
        assert (await pdp.decide(call(alice, "get_weather"))).outcome == "deny"
    assert len(pdp_server.requests()) == 2


async def test_the_cache_is_bounded_and_never_shared_across_subjects(pdp_server: PdpServer) -> None:
    async with pdp_client(pdp_server, cache_size=3) as pdp:
        alice, bob = user("alice"), user("bob")
        assert (await pdp.decide(call(alice, "get_weather"))).outcome == "allow"
        bobs = await pdp.decide(call(bob, "get_weather"))  # same tool, other subject: asked, not served
        assert bobs.outcome == "deny" and not bobs.cached
        for tool in ("t1", "t2", "t3", "t4"):
            await pdp.decide(call(alice, tool))
        assert len(pdp.cache) == 3 and pdp.cache.evictions == 3
    assert len(pdp_server.requests()) == 6


async def test_concurrent_identical_questions_share_one_request(pdp_server: PdpServer) -> None:
    pdp_server.mode("slow", delay=0.2)
    async with pdp_client(pdp_server) as pdp:
        decisions = await asyncio.gather(*(pdp.decide(call(user("alice"), "get_weather")) for _ in range(20)))
        assert {d.outcome for d in decisions} == {"allow"}
        assert pdp.stats.shared == 19
    assert len(pdp_server.requests()) == 1


async def test_a_caller_that_goes_away_does_not_cancel_the_request_others_wait_for(pdp_server: PdpServer) -> None:
    pdp_server.mode("slow", delay=0.2)
    async with pdp_client(pdp_server) as pdp:
        first = asyncio.ensure_future(pdp.decide(call(user("alice"), "get_weather")))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pdp.decide(call(user("alice"), "get_weather")))
        await asyncio.sleep(0.01)
        first.cancel()
        assert (await second).outcome == "allow"
    assert len(pdp_server.requests()) == 1


@pytest.mark.parametrize("method, seen", [("client_secret_basic", "basic"), ("client_secret_post", "post"),
                                          ("bearer", "bearer")])
async def test_client_authentication_methods(pdp_server: PdpServer, method: str, seen: str) -> None:
    async with pdp_client(pdp_server, client_auth_method=method) as pdp:
        assert (await pdp.decide(call(user("alice"), "get_weather"))).outcome == "allow"
    (sent,) = pdp_server.requests()
    assert sent["auth"] == seen
    assert "client_secret" not in sent["body"]  # the PDP took it out; it is never part of the question


@pytest.mark.parametrize("overrides", [{"client_secret": "wrong"}, {"client_auth_method": "none"}])
async def test_a_pdp_refusing_our_credentials_denies_as_an_error(pdp_server: PdpServer,
                                                                 overrides: dict[str, Any]) -> None:
    async with pdp_client(pdp_server, **overrides) as pdp:
        decision = await pdp.decide(call(user("alice"), "get_weather"))
    assert decision.outcome == "error" and decision.reason == "the PDP answered HTTP 401"


async def test_client_credentials_tokens_are_asked_about_as_clients_never_as_users(pdp_server: PdpServer) -> None:
    async with pdp_client(pdp_server) as pdp:
        service = Principal(client_id="svc-reports", is_authenticated=True)
        assert (await pdp.decide(call(service, "list_orders"))).outcome == "allow"
        impostor = Principal(client_id="alice", is_authenticated=True)  # a client named like a user
        assert (await pdp.decide(call(impostor, "get_weather"))).outcome == "deny"
        nobody = await pdp.decide(call(Principal(), "get_weather"))
        assert nobody.outcome == "deny" and nobody.reason == "the request has no identity to ask the PDP about"
    bodies = [r["body"]["subject"] for r in pdp_server.requests()]
    assert bodies == [{"type": "client", "id": "svc-reports"}, {"type": "client", "id": "alice"}]


async def test_subject_claim_and_properties_from_claims(pdp_server: PdpServer) -> None:
    overrides = {"subject_claim": "preferred_username", "properties": {"claims": {"roles": "realm_access.roles"}}}
    async with pdp_client(pdp_server, **overrides) as pdp:
        admin = user("f81d4fae", preferred_username="zed", realm_access={"roles": ["admin", "user"]})
        assert (await pdp.decide(call(admin, "anything"))).outcome == "allow"
        alice = user("0b1c", preferred_username="alice")
        assert (await pdp.decide(call(alice, "get_weather"))).outcome == "allow"
    first = pdp_server.requests()[0]["body"]["subject"]
    assert first == {"type": "user", "id": "zed", "properties": {"roles": ["admin", "user"]}}


async def test_tool_arguments_are_sent_only_when_opted_in(pdp_server: PdpServer) -> None:
    alice = user("alice")
    async with pdp_client(pdp_server, preset="coaz-mcp") as pdp:
        assert (await pdp.decide(call(alice, "get_weather", {"city": "Mordor"}))).outcome == "allow"
    async with pdp_client(pdp_server, preset="coaz-mcp", properties={"arguments": ["city"]}) as pdp:
        assert (await pdp.decide(call(alice, "get_weather", {"city": "Mordor", "secret": "x"}))).outcome == "deny"
        assert (await pdp.decide(call(alice, "get_weather", {"city": "Paris"}))).outcome == "allow"
    bodies = [r["body"]["resource"] for r in pdp_server.requests()]
    assert bodies[0] == {"type": "tool", "id": "get_weather"}
    assert bodies[1] == {"type": "tool", "id": "get_weather", "properties": {"city": "Mordor"}}
