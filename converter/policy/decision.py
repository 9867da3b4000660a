"""The one access decision: per-tool OAuth scopes plus the access rules (`acl:`), for every caller.

`Policy.decide` answers one request and `Policy.visible` a whole list, with the same rules, so a
list never shows what a call would refuse and a hidden name answers exactly like an unknown one.
The auth layer asks it before a `tools/call` reaches the MCP transport (to send the RFC 6750
step-up challenge), the catalog before it routes a call, the passthrough view for resources and
prompts, dynamic mode per operation. Later layers (a decision service, rate limits) plug in here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from converter.auth.principal import Principal
from converter.models import Operation
from converter.policy.acl import Acl
from converter.telemetry.record import current_record

if TYPE_CHECKING:
    from converter.policy.pdp import Pdp  # httpx: imported only when pdp: is configured

OAUTH_SCHEME_TYPES = ("oauth2", "openIdConnect")
Feature = Literal["tools", "resources", "prompts"]
# (feature, operation) -> the MCP method, as the decision service is told it (COAZ: the action).
_METHODS: Final = {("tools", "list"): "tools/list", ("tools", "call"): "tools/call",
                   ("resources", "list"): "resources/list", ("resources", "read"): "resources/read",
                   ("resources", "templates"): "resources/templates/list",
                   ("resources", "subscribe"): "resources/subscribe",
                   ("prompts", "list"): "prompts/list", ("prompts", "get"): "prompts/get"}


def _method(feature: str, operation: str) -> str:
    return _METHODS.get((feature, operation), f"{feature}/{operation}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one feature/operation/name.

    `allowed` is the verdict. When it is False, `missing_scopes` tells the two refusals apart:
    non-empty means the access rules would allow it and only the token's scopes are short (the
    auth layer answers 403 `insufficient_scope` naming `needed_scopes`, so the client can step
    up); empty means the caller may not know the name exists (answered like an unknown name).
    """

    allowed: bool
    missing_scopes: frozenset[str] = frozenset()
    needed_scopes: frozenset[str] = frozenset()

    @property
    def hidden(self) -> bool:
        """Refused, and the caller may not learn that the name exists."""
        return not self.allowed and not self.missing_scopes


ALLOWED = Decision(allowed=True)
HIDDEN = Decision(allowed=False)


def operation_scopes(op: Operation, security_schemes: Mapping[str, object]) -> tuple[frozenset[str], ...]:
    """The OAuth scope sets an operation's `security` accepts (any one suffices).

    Only oauth2/openIdConnect schemes count: other schemes (API keys, basic) are the upstream's
    credentials, which this server supplies from its config. An alternative without OAuth
    schemes therefore asks nothing of the MCP client. `()` means no requirement.
    """
    if not op.security:
        return ()
    alternatives: list[frozenset[str]] = []
    for requirement in op.security:
        scopes: set[str] = set()
        for name, names in requirement.items():
            scheme = security_schemes.get(name)
            if isinstance(scheme, Mapping) and scheme.get("type") in OAUTH_SCHEME_TYPES:
                scopes.update(names)
        if not scopes:
            return ()  # this alternative needs no token scope, so the operation needs none
        alternatives.append(frozenset(scopes))
    return tuple(alternatives)


@dataclass(frozen=True, slots=True)
class Policy:
    """Scope requirements per tool, scopes every request needs, scope implications, access rules."""

    tool_scopes: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)
    required_scopes: frozenset[str] = frozenset()
    implied: Mapping[str, frozenset[str]] = field(default_factory=dict)  # scope -> scopes it grants
    acl: Acl | None = None
    pdp: Pdp | None = None  # the decision service (pdp:): asked after the rules, for what they allow

    @property
    def is_open(self) -> bool:
        """True when every name is visible and callable for everyone (no scopes, rules or PDP)."""
        return not self.tool_scopes and self.acl is None and self.pdp is None

    async def decide(self, principal: Principal, feature: Feature, operation: str, name: str,
                     arguments: Mapping[str, Any] | None = None) -> Decision:
        """May `principal` do `operation` (list, call, read, get, ...) on the `feature` named `name`?

        The rules first, then the decision service, then the scopes: a name the rules or the PDP
        refuse is hidden whatever the token's scopes, so a step-up challenge never tells a caller
        about a tool it may not know of, and stepping up is only asked for where it would help.
        """
        have = self.effective_scopes(principal)
        decision = self._local(principal, feature, operation, name, have)
        if decision.hidden or self.pdp is None:
            return decision
        from converter.policy.pdp import PdpQuestion

        asked = await self.pdp.decide(PdpQuestion(principal, feature, _method(feature, operation), name, arguments))
        record = current_record.get()
        if record is not None and operation != "list":
            record.pdp = asked.outcome
        return decision if asked.allowed else HIDDEN

    async def visible(self, principal: Principal, feature: Feature, names: Iterable[str]) -> list[str]:
        """The names among `names` that `principal` may see listed, in order (one PDP batch request)."""
        if self.is_open:
            return list(names)
        have = self.effective_scopes(principal)
        shown = [name for name in names if self._local(principal, feature, "list", name, have).allowed]
        if self.pdp is None or not shown:
            return shown
        from converter.policy.pdp import PdpQuestion

        method = _method(feature, "list")
        answers = await self.pdp.decide_many([PdpQuestion(principal, feature, method, name) for name in shown])
        return [name for name, answer in zip(shown, answers, strict=True) if answer.allowed]

    def _local(self, principal: Principal, feature: Feature, operation: str, name: str,
               have: frozenset[str]) -> Decision:
        """The rules and the scopes (no network)."""
        if self.acl is not None and not self.acl.decide(feature, operation, name, principal):
            return HIDDEN
        if feature != "tools":
            return ALLOWED
        missing = self._missing(name, have)
        if not missing:
            return ALLOWED
        if operation == "list":
            return HIDDEN  # a tool the token cannot call is not listed
        return Decision(allowed=False, missing_scopes=missing, needed_scopes=self._needed(name, have))

    def missing_required(self, principal: Principal) -> frozenset[str]:
        """The scopes every request needs (auth.required_scopes) that the token lacks."""
        return self.required_scopes - self.effective_scopes(principal) if self.required_scopes else frozenset()

    def effective_scopes(self, principal: Principal) -> frozenset[str]:
        """The token's scopes plus everything they imply (MCP: account for scope hierarchies)."""
        if not self.implied:
            return principal.scopes
        granted = set(principal.scopes)
        todo = list(granted)
        while todo:
            for implied in self.implied.get(todo.pop(), ()):
                if implied not in granted:
                    granted.add(implied)
                    todo.append(implied)
        return frozenset(granted)

    def _missing(self, tool: str, have: frozenset[str]) -> frozenset[str]:
        """Scopes `have` lacks for `tool` (empty: enough). With several acceptable sets, the one
        needing the fewest extra scopes is named, so a step-up asks for as little as possible."""
        alternatives = self.tool_scopes.get(tool, ())
        if not alternatives:
            return frozenset()
        return min((alt - have for alt in alternatives), key=len)

    def _needed(self, tool: str, have: frozenset[str]) -> frozenset[str]:
        """All scopes the operation needs, for the `scope` of a 403 challenge (MCP 2026-07-28)."""
        alternatives = self.tool_scopes.get(tool, ())
        if not alternatives:
            return self.required_scopes
        return min(alternatives, key=lambda alt: len(alt - have)) | self.required_scopes

    def all_scopes(self) -> list[str]:
        """Every scope the policy mentions, for `scopes_supported`."""
        scopes = set(self.required_scopes)
        for alternatives in self.tool_scopes.values():
            for alt in alternatives:
                scopes |= alt
        return sorted(scopes - {"offline_access"})


def build_policy(
    tool_ops: Sequence[tuple[str, Operation, Mapping[str, object]]],
    *,
    overrides: Mapping[str, Sequence[str]] | None = None,
    required_scopes: Sequence[str] = (),
    implied: Mapping[str, Sequence[str]] | None = None,
    acl: Acl | None = None,
    pdp: Pdp | None = None,
) -> Policy:
    """Per-tool scopes from each operation's `security`, replaced by `overrides` where given."""
    overrides = overrides or {}
    tool_scopes: dict[str, tuple[frozenset[str], ...]] = {}
    for name, op, schemes in tool_ops:
        if name in overrides:
            scopes = frozenset(overrides[name])
            tool_scopes[name] = (scopes,) if scopes else ()
        else:
            tool_scopes[name] = operation_scopes(op, schemes)
    return Policy(
        tool_scopes={k: v for k, v in tool_scopes.items() if v},
        required_scopes=frozenset(required_scopes),
        implied={k: frozenset(v) for k, v in (implied or {}).items()},
        acl=acl,
        pdp=pdp,
    )
