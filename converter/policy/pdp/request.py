"""One question for the PDP, and its AuthZEN 1.0 evaluation body per preset.

`gravitee-am` (Gravitee AM's documented shape, what its OpenFGA engine checks):

    {"subject": {"type": "user", "id": "alice"},
     "resource": {"type": "tool", "id": "get_weather"},
     "action": {"name": "can_access"}}

`coaz-mcp` (the OpenID AuthZEN MCP profile draft): the user is the subject, the agent (OAuth
client) is the context, the action is the MCP method:

    {"subject": {"type": "identity", "id": "alice"},
     "resource": {"type": "tool", "id": "get_weather"},
     "action": {"name": "tools/call"},
     "context": {"agent": "cursor"}}

The subject id comes from `subject_claim` (default `sub`). A token without it (a
client-credentials token of an IdP that sets no `sub`) is asked about as
`{"type": "client", "id": <client_id>}`: never as a user, so a client cannot pick a client_id
that names a user and inherit that user's permissions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from converter.auth.principal import claim_value
from converter.config.pdp import PdpSettings

Feature = Literal["tools", "resources", "prompts"]
Outcome = Literal["allow", "deny", "error"]
Evaluation = dict[str, Any]

RESOURCE_TYPES: Final[Mapping[str, str]] = {"tools": "tool", "resources": "resource", "prompts": "prompt"}
CLIENT_SUBJECT_TYPE: Final = "client"


class Identity(Protocol):
    """What the PDP needs of a caller: `converter.auth.principal.Principal` fits."""

    @property
    def subject(self) -> str | None: ...

    @property
    def client_id(self) -> str | None: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PdpQuestion:
    """May `identity` do `method` on the `feature` item called `name` (with these `arguments`)?"""

    identity: Identity
    feature: Feature
    method: str  # the MCP method: tools/call, tools/list, resources/read, prompts/get, ...
    name: str  # tool or prompt name, resource URI
    arguments: Mapping[str, Any] | None = None

    def __repr__(self) -> str:  # never the claims or arguments: they may hold personal data
        return f"PdpQuestion(subject={self.identity.subject!r}, method={self.method!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True)
class Decision:
    """The PDP's answer. Only `allow` lets a request through; `error` is a denial for a reason of ours."""

    outcome: Outcome
    reason: str | None = None  # error: what failed; deny: the PDP's context.reason, if it gave one
    context: Mapping[str, Any] | None = field(default=None, compare=False)  # the PDP's response context
    cached: bool = False
    request_id: str | None = None  # the X-Request-ID of the PDP call that decided

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        text = str(value)
        return text or None
    return None


def subject_of(settings: PdpSettings, identity: Identity) -> tuple[str, str] | None:
    """(type, id) of the AuthZEN subject, or None when the caller has no identity (auth off)."""
    sid = _text(claim_value(identity.claims, settings.subject_claim))
    if sid is None and settings.subject_claim == "sub":
        sid = _text(identity.subject)
    if sid is not None:
        return settings.subject_type_name, sid
    client_id = _text(identity.client_id) or _text(identity.claims.get("client_id"))
    if client_id is not None:
        return CLIENT_SUBJECT_TYPE, client_id
    return None


def build_evaluation(settings: PdpSettings, question: PdpQuestion) -> Evaluation | None:
    """The AuthZEN evaluation body for `question`, or None when there is nobody to ask about."""
    who = subject_of(settings, question.identity)
    if who is None:
        return None
    subject: dict[str, Any] = {"type": who[0], "id": who[1]}
    claims = question.identity.claims
    props = {name: value for name, path in settings.properties.claims.items()
             if (value := claim_value(claims, path)) is not None}
    if props:
        subject["properties"] = props
    resource: dict[str, Any] = {"type": RESOURCE_TYPES[question.feature], "id": question.name}
    wanted = settings.properties.arguments
    if wanted and question.arguments:
        args = dict(question.arguments) if wanted == "*" else {k: question.arguments[k] for k in wanted
                                                                if k in question.arguments}
        if args:
            resource["properties"] = args
    evaluation: Evaluation = {"subject": subject, "resource": resource,
                              "action": {"name": settings.action_name or question.method}}
    if settings.preset == "coaz-mcp":
        agent = _text(question.identity.client_id)
        if agent is not None:
            evaluation["context"] = {"agent": agent}
    return evaluation


def canonical(evaluation: Evaluation) -> bytes:
    """The evaluation as canonical JSON: what is sent and what the cache key is made of."""
    return json.dumps(evaluation, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def cache_key(body: bytes) -> bytes:
    """16 bytes naming one exact question (subject, action, resource, context): never shared across subjects.

    A digest rather than the body, so a cached decision costs the same whatever the arguments weigh.
    """
    return hashlib.blake2b(body, digest_size=16).digest()
