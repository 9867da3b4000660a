"""converter.policy.pdp settings and request shapes; the answers only JSON `true` may turn into an allow.

The PDP itself is real in tests/integration/test_pdp.py; here `httpx.MockTransport` stands in for
it only to feed answers no real PDP gives (numbers, nulls, lists for a decision).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from converter.auth.principal import Principal
from converter.policy.pdp import Pdp, PdpQuestion, PdpSettings, build_evaluation

pytestmark = pytest.mark.anyio

URL = "https://am.example.com/demo/access/v1/evaluation"
ALICE = Principal(subject="alice", client_id="cursor", claims={"sub": "alice"}, is_authenticated=True)



def settings(**values: Any) -> PdpSettings:
    return PdpSettings.model_validate({"url": URL, "client_id": "mcp", "client_secret": "s3cret", **values})


def error_of(values: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        PdpSettings.model_validate(values)
    error = exc.value.errors()[0]
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_settings_defaults_work_with_gravitee_am() -> None:
    s = settings()
    assert (s.preset, s.client_auth_method, s.action_name, s.subject_type_name) == \
        ("gravitee-am", "client_secret_basic", "can_access", "user")
    assert s.evaluations_url == "https://am.example.com/demo/access/v1/evaluations"
    assert settings(preset="coaz-mcp").action_name is None  # the MCP method
    assert settings(preset="coaz-mcp").subject_type_name == "identity"
    assert settings(batch_url="https://pdp/batch").evaluations_url == "https://pdp/batch"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("values, message", [
    ({"url": "am.example.com/x", "client_auth_method": "none"}, "url: Value error, must be an http(s) URL, not 'am.example.com/x'"),
    ({"url": URL}, "client_id: Value error, is needed for client_auth_method client_secret_basic"),
    ({"url": URL, "client_id": "mcp", "client_auth_method": "client_secret_post"},
     "client_secret: Value error, is needed for client_auth_method client_secret_post"),
    ({"url": URL, "client_auth_method": "bearer"},
     "client_secret: Value error, is needed for client_auth_method bearer (the token to send)"),
    ({"url": URL, "client_auth_method": "none", "preset": "opa"}, "preset: Input should be 'gravitee-am' or 'coaz-mcp'"),
    ({"url": URL, "client_auth_method": "none", "cache_tll": 5}, "cache_tll: Extra inputs are not permitted"),
    ({"url": URL, "client_auth_method": "none", "timeout": 0}, "timeout: Input should be greater than 0"),
])
def test_bad_settings_name_the_key(values: dict[str, Any], message: str) -> None:
    assert error_of(values) == message


def test_the_two_presets_shapes() -> None:
    question = PdpQuestion(ALICE, "prompts", "prompts/get", "summarize")
    assert build_evaluation(settings(), question) == {
        "subject": {"type": "user", "id": "alice"}, "resource": {"type": "prompt", "id": "summarize"},
        "action": {"name": "can_access"}}
    assert build_evaluation(settings(preset="coaz-mcp"), question) == {
        "subject": {"type": "identity", "id": "alice"}, "resource": {"type": "prompt", "id": "summarize"},
        "action": {"name": "prompts/get"}, "context": {"agent": "cursor"}}
    assert build_evaluation(settings(action="can_use", subject_type="member"), question) == {
        "subject": {"type": "member", "id": "alice"}, "resource": {"type": "prompt", "id": "summarize"},
        "action": {"name": "can_use"}}


def test_every_argument_when_asked_for_with_a_star() -> None:
    question = PdpQuestion(ALICE, "tools", "tools/call", "t", {"a": 1, "b": [2]})
    evaluation = build_evaluation(settings(properties={"arguments": "*"}), question)
    assert evaluation is not None and evaluation["resource"]["properties"] == {"a": 1, "b": [2]}


@pytest.mark.parametrize("answer", [{"decision": 1}, {"decision": None}, {"decision": "true"}, {"decision": [True]},
                                    {}, [{"decision": True}], {"evaluations": [{"decision": True}]}])
async def test_only_the_json_boolean_true_allows(answer: Any) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=json.dumps(answer).encode()))
    pdp = Pdp(settings(), transport=transport)
    try:
        decision = await pdp.decide(PdpQuestion(ALICE, "tools", "tools/call", "t"))
    finally:
        await pdp.aclose()
    assert decision.outcome == "error" and not decision.allowed


async def test_a_false_decision_carries_the_pdp_reason() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, json={"decision": False, "context": {"reason": "not a reader"}}))
    pdp = Pdp(settings(), transport=transport)
    try:
        decision = await pdp.decide(PdpQuestion(ALICE, "tools", "tools/call", "t"))
    finally:
        await pdp.aclose()
    assert (decision.outcome, decision.reason) == ("deny", "not a reader")
