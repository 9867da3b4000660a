"""A bounded, expiring map from one exact PDP question to its decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from converter.expiring import ExpiringLRU
from converter.policy.pdp.request import Decision


class DecisionCache(ExpiringLRU[bytes, Decision]):
    """At most `max_entries` decisions, each kept `ttl` seconds (`clock`: monotonic seconds).

    Keys are `request.cache_key` digests of the whole evaluation body, subject included, so a
    decision about one subject is never served to another. Least recently used entries go first.
    Only real answers are stored: an error is never cached, the next request asks again.
    """

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        super().__init__(max_entries, clock=clock)
        self._ttl = ttl

    def keep(self, key: bytes, decision: Decision) -> None:
        """Store a real answer for the configured time, marked `cached`."""
        if decision.outcome != "error":
            self.put(key, replace(decision, cached=True), self._ttl)
