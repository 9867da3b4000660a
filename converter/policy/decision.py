"""Who may see and call which tool: per-tool OAuth scopes plus the access rules (`acl:`).

One decision serves `tools/list` filtering and `tools/call` guarding, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from converter.auth.principal import Principal
from converter.models import Operation
from converter.policy.acl import Acl

OAUTH_SCHEME_TYPES = ("oauth2", "openIdConnect")


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
    """Scope requirements per tool, plus scopes every request needs and scope implications."""

    tool_scopes: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)
    required_scopes: frozenset[str] = frozenset()
    implied: Mapping[str, frozenset[str]] = field(default_factory=dict)  # scope -> scopes it grants
    acl: Acl | None = None

    @property
    def is_open(self) -> bool:
        """True when every tool is visible and callable for everyone (no scopes, no rules)."""
        return not self.tool_scopes and self.acl is None

    def may_call(self, tool: str, principal: Principal) -> bool:
        """Scopes aside (the auth layer answers those with 403), do the access rules allow the call?"""
        return self.acl is None or self.acl.decide("tools", "call", tool, principal)

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

    def missing_scopes(
        self, tool: str, principal: Principal, *, scopes: frozenset[str] | None = None
    ) -> frozenset[str]:
        """Scopes the principal lacks for `tool`: empty when allowed.

        With several acceptable sets, the one needing the fewest extra scopes is named, so a
        step-up challenge asks for as little as possible.
        """
        have = self.effective_scopes(principal) if scopes is None else scopes
        alternatives = self.tool_scopes.get(tool, ())
        if not alternatives:
            return frozenset()
        best = min((alt - have for alt in alternatives), key=len)
        return best

    def needed_scopes(self, tool: str, principal: Principal) -> frozenset[str]:
        """All scopes the operation needs, for the `scope` of a 403 challenge (MCP 2026-07-28)."""
        have = self.effective_scopes(principal)
        alternatives = self.tool_scopes.get(tool, ())
        if not alternatives:
            return self.required_scopes
        best = min(alternatives, key=lambda alt: len(alt - have))
        return best | self.required_scopes

    def visible(self, names: Iterable[str], principal: Principal) -> list[str]:
        """The tools among `names` the principal may see in `tools/list`, in order."""
        have = self.effective_scopes(principal)
        acl = self.acl
        return [name for name in names if not self.missing_scopes(name, principal, scopes=have)
                and (acl is None or acl.decide("tools", "list", name, principal))]

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
    overrides: Mapping[str, Sequence[str]] = {},
    required_scopes: Sequence[str] = (),
    implied: Mapping[str, Sequence[str]] = {},
    acl: Acl | None = None,
) -> Policy:
    """Per-tool scopes from each operation's `security`, replaced by `overrides` where given."""
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
        implied={k: frozenset(v) for k, v in implied.items()},
        acl=acl,
    )
