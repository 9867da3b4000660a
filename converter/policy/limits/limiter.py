"""`RateLimiter.check(identity, tool)`: every rule that covers the request must allow it.

Counted per authenticated identity (or client address), never per MCP session, so a client
that re-initializes keeps its counters. The verdict names the rule that refused and when to
retry, for the 429 `Retry-After` header and the tool error the model reads.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from converter.config.limits import LimitRule
from converter.policy.limits.window import Backend, Counter, MemoryBackend, retry_after


@dataclass(frozen=True, slots=True)
class LimitVerdict:
    """Allowed, or the rule that refused and the seconds until a retry can pass."""

    allowed: bool
    rule: LimitRule | None = None
    retry_after: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """RFC 9110 §10.2.3 `Retry-After`: whole seconds, at least 1 when refused."""
        return str(max(1, math.ceil(self.retry_after))) if not self.allowed else "0"

    def message(self, tool: str | None = None) -> str:
        """What the caller (a model, in a tool error) is told."""
        if self.allowed or self.rule is None:
            return "allowed"
        what = f"calls to {tool!r}" if tool else "requests"
        return (f"Rate limit reached for {what} ({self.rule.label}); "
                f"retry in {self.retry_after_header} s")


ALLOWED = LimitVerdict(True)


def identity_of(*, subject: str | None, client_id: str | None, issuer: str | None, address: str | None,
                is_authenticated: bool) -> str:
    """The counting identity: the token's issuer + subject (or client), else the client address."""
    if is_authenticated and (subject or client_id):
        return f"sub\x00{issuer or ''}\x00{subject or ''}\x00{'' if subject else client_id}"
    return f"addr\x00{address or 'unknown'}"


@dataclass(slots=True)
class LimiterStats:
    checks: int = 0
    limited: dict[str, int] = field(default_factory=dict)  # rule label -> requests refused


class RateLimiter:
    """Applies `rules` with counters in `backend` (in memory when not given); `clock`: wall seconds."""

    def __init__(self, rules: Sequence[LimitRule], *, backend: Backend | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = tuple(rules)
        self.backend = backend if backend is not None else MemoryBackend()
        self._clock = clock
        self.stats = LimiterStats()

    def __repr__(self) -> str:
        return f"RateLimiter(rules={len(self.rules)}, backend={self.backend!r})"

    async def check(self, identity: str, tool: str | None = None) -> LimitVerdict:
        """Count this request against every rule covering it, or refuse it (and count nothing).

        Args:
            identity: from `identity_of` (the same caller must give the same string).
            tool: the tool being called; None for any other request (rules without `tools` apply).
        """
        self.stats.checks += 1
        rules = [rule for rule in self.rules if rule.covers(tool)]
        if not rules:
            return ALLOWED
        counters = [Counter(_key(rule, identity, tool), rule.requests, rule.window) for rule in rules]
        now = self._clock()
        counts = await self.backend.consume(counters, now)
        if not any(c.denied for c in counts):
            return ALLOWED
        worst: tuple[float, LimitRule] | None = None
        for rule, count in zip(rules, counts, strict=False):
            if count.denied:
                wait = retry_after(count, now, rule.window, rule.requests)
                if worst is None or wait > worst[0]:
                    worst = (wait, rule)
        assert worst is not None
        label = worst[1].label
        self.stats.limited[label] = self.stats.limited.get(label, 0) + 1
        return LimitVerdict(False, worst[1], worst[0])

    async def aclose(self) -> None:
        await self.backend.aclose()


def _key(rule: LimitRule, identity: str, tool: str | None) -> str:
    """`{rule id}:{digest of what the rule counts per}`: fixed length, whatever the identity holds."""
    if rule.per == "subject":
        scope = identity
    elif rule.per == "subject_tool":
        scope = f"{identity}\x00{tool or ''}"
    elif rule.per == "tool":
        scope = tool or ""
    else:
        scope = ""
    return f"{rule.rule_id}:{hashlib.blake2b(scope.encode(), digest_size=12).hexdigest()}"

