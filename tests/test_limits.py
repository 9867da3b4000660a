"""converter.policy.limits with in-memory counters and an injected clock (no sleeps)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from converter.policy.limits import LimitRule, LimitsSettings, MemoryBackend, RateLimiter, identity_of
from converter.policy.limits.window import Count, retry_after

pytestmark = pytest.mark.anyio

T0 = 6000.0  # a multiple of 60: the start of a fixed window


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(*rules: dict[str, Any], clock: Clock | None = None, **kwargs: Any) -> RateLimiter:
    return RateLimiter([LimitRule.model_validate(r) for r in rules], clock=clock or Clock(), **kwargs)



async def test_the_limit_is_hit_at_the_configured_count_for_one_subject_only() -> None:
    rl = limiter({"tools": ["get*"], "per": "subject", "requests": 3, "window": 60})
    assert [(await rl.check("alice", "get_users")).allowed for _ in range(4)] == [True, True, True, False]
    assert all([(await rl.check("bob", "get_users")).allowed for _ in range(3)])
    assert (await rl.check("alice", "post_users")).allowed  # not covered by the rule
    assert rl.stats.limited == {"3 requests per 60 s per subject for get*": 1}


async def test_a_refusal_names_the_rule_and_when_to_retry() -> None:
    clock = Clock()
    rl = limiter({"tools": ["get*"], "requests": 3, "window": 60}, clock=clock)
    for _ in range(3):
        await rl.check("alice", "get_users")
    verdict = await rl.check("alice", "get_users")
    assert not verdict.allowed and verdict.rule is not None
    # three requests in this window weigh 3 x (60 - e) / 60 in the next one: 2 (room for one) at e = 20
    assert verdict.retry_after == pytest.approx(80.0)
    assert verdict.retry_after_header == "80"
    assert verdict.message("get_users") == ("Rate limit reached for calls to 'get_users' "
                                            "(3 requests per 60 s per subject for get*); retry in 80 s")
    clock.now = T0 + 79.9
    assert not (await rl.check("alice", "get_users")).allowed
    clock.now = T0 + 80.1
    assert (await rl.check("alice", "get_users")).allowed


async def test_counters_expire_with_the_window() -> None:
    clock = Clock()
    rl = limiter({"requests": 2, "window": 10}, clock=clock)
    assert [(await rl.check("alice")).allowed for _ in range(3)] == [True, True, False]
    clock.now += 20  # two windows later nothing of the old ones is left
    assert [(await rl.check("alice")).allowed for _ in range(3)] == [True, True, False]


async def test_the_previous_window_still_counts_in_proportion() -> None:
    clock = Clock()
    rl = limiter({"requests": 10, "window": 10}, clock=clock)
    assert all([(await rl.check("a")).allowed for _ in range(10)])
    clock.now = T0 + 15  # half of the previous window overlaps: 10 x 0.5 = 5 still count
    assert [(await rl.check("a")).allowed for _ in range(6)] == [True] * 5 + [False]


async def test_every_rule_applies_and_a_refusal_counts_against_none() -> None:
    rl = limiter({"per": "subject", "requests": 5, "window": 60},
                 {"tools": ["search"], "per": "tool", "requests": 2, "window": 60})
    assert [(await rl.check("alice", "search")).allowed for _ in range(3)] == [True, True, False]
    refused = await rl.check("bob", "search")  # the tool's budget is shared by everyone
    assert not refused.allowed and refused.rule is not None and refused.rule.per == "tool"
    # alice used 2 of her 5 (the refused call was not counted): 3 more of anything else
    assert [(await rl.check("alice", "other")).allowed for _ in range(4)] == [True, True, True, False]


async def test_the_most_distant_retry_wins_when_several_rules_refuse() -> None:
    rl = limiter({"requests": 1, "window": 10}, {"requests": 1, "window": 100})
    await rl.check("a")
    verdict = await rl.check("a")
    assert verdict.rule is not None and verdict.rule.window == 100


async def test_subject_tool_global_and_tool_scopes() -> None:
    rl = limiter({"per": "subject_tool", "requests": 1, "window": 60})
    assert (await rl.check("a", "x")).allowed and (await rl.check("a", "y")).allowed
    assert not (await rl.check("a", "x")).allowed and (await rl.check("b", "x")).allowed
    everyone = limiter({"per": "global", "requests": 2, "window": 60})
    assert [(await everyone.check(who, t)).allowed for who, t in [("a", "x"), ("b", "y"), ("c", "z")]] == \
        [True, True, False]


async def test_a_rule_without_tools_covers_requests_that_are_not_tool_calls() -> None:
    rl = limiter({"requests": 1, "window": 60}, {"tools": ["*"], "requests": 100, "window": 60})
    assert (await rl.check("a", None)).allowed  # e.g. tools/list
    verdict = await rl.check("a", None)
    assert not verdict.allowed and verdict.message() .startswith("Rate limit reached for requests (")


async def test_a_quota_is_a_long_window() -> None:
    clock = Clock(86400.0 * 100)
    rl = limiter({"tools": ["create_order"], "requests": 5, "window": 86400, "name": "daily-orders"}, clock=clock)
    assert [(await rl.check("a", "create_order")).allowed for _ in range(6)] == [True] * 5 + [False]
    clock.now += 3600
    verdict = await rl.check("a", "create_order")
    assert not verdict.allowed and verdict.message("create_order").startswith(
        "Rate limit reached for calls to 'create_order' (daily-orders); retry in ")
    clock.now += 2 * 86400
    assert (await rl.check("a", "create_order")).allowed


async def test_in_memory_counters_are_bounded() -> None:
    backend = MemoryBackend(max_keys=10)
    rl = limiter({"requests": 1, "window": 60}, backend=backend)
    for i in range(25):
        await rl.check(f"user-{i}")
    assert len(backend) == 10


def test_the_identity_is_the_token_not_the_session() -> None:
    one = identity_of(subject="alice", client_id="cursor", issuer="https://as", address="10.0.0.1", is_authenticated=True)
    other_address = identity_of(subject="alice", client_id="vscode", issuer="https://as", address="10.0.0.2",
                                is_authenticated=True)
    assert one == other_address  # a new session, client or address: the same subject, the same counters
    assert identity_of(subject=None, client_id="svc", issuer="https://as", address=None, is_authenticated=True) != \
        identity_of(subject="svc", client_id=None, issuer="https://as", address=None, is_authenticated=True)
    anonymous = identity_of(subject=None, client_id=None, issuer=None, address="10.0.0.1", is_authenticated=False)
    assert anonymous != one and anonymous == identity_of(subject="x", client_id=None, issuer=None,
                                                         address="10.0.0.1", is_authenticated=False)


def test_retry_after_is_zero_when_nothing_blocks() -> None:
    assert retry_after(Count(0, 0, False), T0, 60, 3) == 0.0


@pytest.mark.parametrize("rule, message", [
    ({"requests": 0, "window": 60}, "requests: Input should be greater than 0"),
    ({"requests": 1, "window": 0}, "window: Input should be greater than 0"),
    ({"requests": 1, "window": 60, "per": "session"}, "per: Input should be 'subject', 'subject_tool', 'tool' or 'global'"),
    ({"requests": 1, "window": 60, "tools": []}, "tools: List should have at least 1 item after validation, not 0"),
    ({"requests": 1, "window": 60, "tool": ["x"]}, "tool: Extra inputs are not permitted"),
])
def test_bad_rules_are_refused_with_the_key(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        LimitsSettings.model_validate([rule])
    error = exc.value.errors()[0]
    assert f"{error['loc'][-1]}: {error['msg']}" == message


def test_rule_ids_are_stable_and_change_with_the_rule() -> None:
    a = LimitRule(tools=["get*"], requests=3, window=60)
    assert a.rule_id == LimitRule(tools=["get*"], requests=3, window=60.0).rule_id
    assert a.rule_id != LimitRule(tools=["get*"], requests=4, window=60).rule_id
