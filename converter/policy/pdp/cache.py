"""A bounded, expiring map from one exact PDP question to its decision."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from converter.policy.pdp.request import Decision


class DecisionCache:
    """At most `max_entries` decisions, each kept `ttl` seconds (`clock`: monotonic seconds).

    Keys are `request.cache_key` digests of the whole evaluation body, subject included, so a
    decision about one subject is never served to another. Least recently used entries go first.
    Only real answers are stored: an error is never cached, the next request asks again.
    """

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Decision | None:
        """The decision (marked `cached`), or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: bytes, decision: Decision) -> None:
        if self._ttl <= 0 or decision.outcome == "error":
            return
        self._entries[key] = (self._clock() + self._ttl, replace(decision, cached=True))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
