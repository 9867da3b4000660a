"""Access rules for tools, resources and prompts (PRODUCT.md `acl:`), with CEL conditions.

A request is allowed when at least one rule allows it and no rule denies it; deny wins, and
nothing matching means deny (an `acl:` block with no rules denies everything). Without an
`acl:` block everything is allowed. Conditions are CEL (the language Kubernetes, Envoy and
agentgateway use for such rules), compiled once at startup by the `common-expression-language`
package (cel-rust): ~7 µs per evaluation here against ~200 µs for the pure-Python cel-python.
A condition that cannot be evaluated counts against the caller: an allow rule does not match,
a deny rule does (fail closed).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from weakref import WeakKeyDictionary

from converter.auth.principal import Principal
from converter.errors import ConfigError

audit_log = logging.getLogger("openapi_mcp.audit")
log = logging.getLogger("openapi_mcp.acl")

Feature = Literal["tools", "resources", "prompts"]
OPERATIONS: dict[str, tuple[str, ...]] = {
    "tools": ("list", "call"),
    "resources": ("list", "read", "templates", "subscribe"),
    "prompts": ("list", "get"),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    index: int
    features: frozenset[str]
    operations: frozenset[str]
    name_type: str
    pattern: str
    effect: str
    when: Any  # a compiled cel.Program, or None
    _regex: Any = None
    when_text: str = ""

    def matches_target(self, feature: str, operation: str, name: str) -> bool:
        if feature not in self.features or operation not in self.operations:
            return False
        if self.name_type == "any":
            return True
        if self.name_type == "literal":
            return name == self.pattern
        return self._regex.fullmatch(name) is not None  # glob patterns are compiled to regexes too

    def condition(self, context: Any) -> bool:
        """Does the condition hold? One that cannot be evaluated (an error, or a value that is not
        true or false, such as the string "true" a Keycloak mapper emits) counts against the
        caller: an allow rule does not match, a deny rule does."""
        if self.when is None:
            return True
        try:
            value = self.when.execute(context)
        except Exception as exc:  # noqa: BLE001 - a failing condition is a failed check, never a crash
            _warn_once(self, f"cannot be evaluated ({_first_line(exc)})")
            return self.effect == "deny"
        if isinstance(value, bool):
            return value
        _warn_once(self, f"gave {type(value).__name__} {_short(value)}, not true or false")
        return self.effect == "deny"


MAX_CACHED_DECISIONS: Final = 1024  # per caller
MAX_CACHED_NAME: Final = 256  # characters; longer names are decided every time (rules are cheap)
_WARNED: set[tuple[int, str]] = set()
_MAX_WARNED = 1000


def _warn_once(rule: Rule, problem: str) -> None:
    """A condition that fails does so for many requests: say it once per rule and kind of failure."""
    key = (rule.index, problem.split(" (", 1)[0][:40])
    if key in _WARNED or len(_WARNED) >= _MAX_WARNED:
        return
    _WARNED.add(key)
    log.warning("acl.rules[%d].when %r %s; counted as %s (fail closed)", rule.index, rule.when_text, problem,
                "matching (deny)" if rule.effect == "deny" else "not matching")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# What a condition sees when checked at startup: every variable, with empty values of its type.
_PROBE_CONTEXT: Final = {"claims": {}, "subject": "", "client_id": "", "scopes": [], "authenticated": False,
                         "name": "", "feature": "tools", "operation": "call",
                         "request": {"feature": "tools", "operation": "call", "name": ""}}


class Acl:
    """The compiled rule set; `decide` answers allow/deny for one feature/operation/name."""

    def __init__(self, rules: Sequence[Rule], *, audit: bool = False) -> None:
        self.rules = tuple(rules)
        self.audit = audit
        # Per caller (weakly: they live as long as the verifier's token cache keeps them): the CEL
        # variables converted once (~24 µs), and the decisions already made (rules are static).
        self._contexts: WeakKeyDictionary[Principal, Any] = WeakKeyDictionary()
        self._decisions: WeakKeyDictionary[Principal, dict[tuple[str, str, str], tuple[int | None, bool]]] = \
            WeakKeyDictionary()

    def decide(self, feature: str, operation: str, name: str, principal: Principal) -> bool:
        key = (feature, operation, name)
        decisions = self._decisions.get(principal)
        if decisions is None:
            decisions = self._decisions[principal] = {}
        found = decisions.get(key)
        if found is None:
            found = self._evaluate(feature, operation, name, principal)
            # Names come from clients (any resource URI a template matches): only short ones are
            # kept, and at most MAX_CACHED_DECISIONS per caller, oldest out first.
            if len(name) <= MAX_CACHED_NAME:
                if len(decisions) >= MAX_CACHED_DECISIONS:
                    del decisions[next(iter(decisions))]
                decisions[key] = found
        rule, allowed = found
        self._audit(rule, "allow" if allowed else "deny", feature, operation, name, principal)
        return allowed

    def _evaluate(self, feature: str, operation: str, name: str, principal: Principal) -> tuple[int | None, bool]:
        context: Any = None
        allowed_by: int | None = None
        for rule in self.rules:
            if not rule.matches_target(feature, operation, name):
                continue
            if context is None and rule.when is not None:
                context = self._context(principal)
                request = {"feature": feature, "operation": operation, "name": name}
                context.update({"name": name, "feature": feature, "operation": operation, "request": request})
            if not rule.condition(context):
                continue
            if rule.effect == "deny":
                return rule.index, False
            if allowed_by is None:
                allowed_by = rule.index
        return allowed_by, allowed_by is not None

    def _context(self, principal: Principal) -> Any:
        context = self._contexts.get(principal)
        if context is None:
            import cel

            context = cel.Context()
            context.update({
                "claims": dict(principal.claims),
                "subject": principal.subject or "",
                "client_id": principal.client_id or "",
                "scopes": sorted(principal.scopes),
                "authenticated": principal.is_authenticated,
            })
            self._contexts[principal] = context
        return context

    def _audit(self, rule: int | None, effect: str, feature: str, operation: str, name: str,
               principal: Principal) -> None:
        if self.audit:
            audit_log.info(json.dumps({"rule": rule, "effect": effect, "feature": feature, "operation": operation,
                                       "name": name, "subject": principal.subject, "client_id": principal.client_id}))


def compile_acl(raw: Mapping[str, Any], *, source: str = "<config>") -> Acl:
    """Compile the `acl:` block.

    Raises:
        ConfigError: naming the rule (`acl.rules[2].when`) and what is wrong with it.
    """
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"{source}: acl.rules: must be a list", key="acl.rules", source=source)
    unknown = set(raw) - {"rules", "audit"}
    if unknown:
        raise ConfigError(f"{source}: acl.{sorted(unknown)[0]}: unknown key", key="acl", source=source)
    rules = [_rule(i, r, source) for i, r in enumerate(rules_raw)]
    audit = raw.get("audit", False)
    if isinstance(audit, str) and audit.lower() in _FLAGS:  # YAML 1.2 reads `audit: yes` as text
        audit = _FLAGS[audit.lower()]
    if not isinstance(audit, bool):
        raise ConfigError(f"{source}: acl.audit: must be true or false, not {audit!r}", key="acl.audit", source=source)
    return Acl(rules, audit=audit)


_FLAGS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _rule(index: int, raw: Any, source: str) -> Rule:
    where = f"acl.rules[{index}]"

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{source}: {where}{'.' + key if key else ''}: {message}", key=f"{where}.{key}", source=source
        )

    if not isinstance(raw, Mapping):
        raise fail("", "must be a mapping")
    unknown = set(raw) - {"features", "operations", "name", "when", "effect"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown key")
    features = raw.get("features", list(OPERATIONS))
    if not isinstance(features, list) or not features or any(f not in OPERATIONS for f in features):
        raise fail("features", f"must be a non-empty list of {', '.join(OPERATIONS)}, not {features!r}")
    valid_ops = {op for f in features for op in OPERATIONS[f]}
    operations = raw.get("operations", sorted(valid_ops))
    if not isinstance(operations, list) or not operations or any(op not in valid_ops for op in operations):
        raise fail("operations", f"must be a non-empty list of {', '.join(sorted(valid_ops))} "
                                 f"(for {', '.join(features)}), not {operations!r}")
    name = raw.get("name", {"type": "any"})
    if not isinstance(name, Mapping) or name.get("type", "any") not in ("any", "literal", "glob", "regex"):
        raise fail("name", "must be {type: any | literal | glob | regex, pattern: ...}")
    name_type, pattern = name.get("type", "any"), name.get("pattern", "")
    if name_type != "any" and (not isinstance(pattern, str) or not pattern):
        raise fail("name.pattern", f"is needed for type {name_type}")
    compiled_regex = re.compile(fnmatch.translate(pattern)) if name_type == "glob" else None
    if name_type == "regex":
        try:
            compiled_regex = re.compile(pattern)
        except re.error as exc:
            raise fail("name.pattern", f"is not a valid regular expression: {exc}") from exc
    effect = raw.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise fail("effect", f"must be allow or deny, not {effect!r}")
    when = raw.get("when")
    program = None
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            raise fail("when", "must be a CEL expression")
        import cel  # imported on first use: the package pulls in prompt_toolkit (~170 ms at startup)

        try:
            program = cel.compile(when)
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise fail("when", f"is not valid CEL: {first}") from exc
        _check_result_type(program, fail)
    return Rule(index, frozenset(features), frozenset(operations), name_type, pattern, effect, program, compiled_regex,
                when_text=when or "")


def _check_result_type(program: Any, fail: Any) -> None:
    """Refuse a condition whose value is known not to be a boolean without any caller (`'true'`,
    `subject`, `scopes`): it would never mean what it says. One that depends on claims is checked
    per request (`Rule.condition`)."""
    import cel

    context = cel.Context()
    context.update(dict(_PROBE_CONTEXT))
    try:
        value = program.execute(context)
    except Exception:  # noqa: BLE001 - depends on what callers bring: checked per request
        return
    if not isinstance(value, bool):
        raise fail("when", f"gives {type(value).__name__} {_short(value)}, not true or false; compare it "
                           "(e.g. claims.suspended == \"true\") or test membership ('admin' in claims.roles)")
