"""The sliding-window counter, and the in-memory counters of one process.

Why a sliding window counter (two fixed windows, the previous one weighted by how much of it
still overlaps the sliding window) and not a token bucket: a rule says "100 per minute" or, as
a quota, "1000 per day", and users read that as "never more than N in any window". A token
bucket of N per W lets a full burst through, then refills continuously, so up to 2N - 1 pass
in one window; a sliding log is exact but keeps one entry per request (a day's quota: millions).
The counter keeps two integers per key, blocks at exactly N in a fresh window, says exactly when
the next request fits (`retry_after`), and maps onto Redis as two INCR-able keys. Its one
approximation: requests of the previous window are assumed spread evenly over it.

A request that is refused is not counted, and a request is counted by every rule that covers
it only when all of them allow it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

MAX_KEYS: Final = 100_000  # in-memory counters kept; the least recently used is dropped (it restarts at 0)


@dataclass(frozen=True, slots=True)
class Counter:
    """One rule's counter for the request being checked."""

    key: str  # storage key without the window number
    limit: int
    window: float


@dataclass(frozen=True, slots=True)
class Count:
    """A counter as it stood before this request: previous and current window, and the verdict."""

    prev: int
    cur: int
    denied: bool


class Backend(Protocol):
    """Where counters live: this process (`MemoryBackend`) or Redis (`RedisBackend`)."""

    async def consume(self, counters: Sequence[Counter], now: float) -> list[Count]:
        """Check every counter; when none is over its limit, add one to each (atomically)."""
        ...

    async def aclose(self) -> None: ...

    @property
    def shared_state(self) -> str | None:
        """`reachable`/`degraded` for a shared store (Redis), None for this process's memory."""
        ...


def position(now: float, window: float) -> tuple[int, float]:
    """(number of the current fixed window, weight of the previous one in the sliding window)."""
    index = math.floor(now / window)
    elapsed = now - index * window
    return index, (window - elapsed) / window


def is_denied(prev: int, cur: int, weight: float, limit: int) -> bool:
    """Would one more request take the sliding estimate over `limit`? (Same expression as the Lua script.)"""
    return prev * weight + cur + 1 > limit


def retry_after(count: Count, now: float, window: float, limit: int) -> float:
    """Seconds until one more request fits, if nothing else is admitted meanwhile."""
    elapsed = now - math.floor(now / window) * window
    need = limit - 1  # the estimate must fall to this for one more request to fit
    if count.cur <= need:
        if count.prev <= 0:
            return 0.0
        # prev * (W - e') / W + cur <= need, within this window
        at = window * (1 - (need - count.cur) / count.prev)
        return max(0.0, at - elapsed)
    # only in the next window, where this window's count becomes the weighted previous one
    at = window * (1 - need / count.cur)
    return (window - elapsed) + max(0.0, at)


class MemoryBackend:
    """Counters in this process: exact and atomic (no await between check and add), bounded in keys."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._windows: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # key -> (index, prev, cur)
        self._max = max_keys

    def __len__(self) -> int:
        return len(self._windows)

    async def consume(self, counters: Sequence[Counter], now: float) -> list[Count]:
        return self.consume_now(counters, now)

    def consume_now(self, counters: Sequence[Counter], now: float) -> list[Count]:
        """`consume` without the coroutine (the Redis backend's fallback calls it directly)."""
        counts: list[Count] = []
        states: list[tuple[int, int, int]] = []
        for counter in counters:
            index, weight = position(now, counter.window)
            prev, cur = self._read(counter.key, index)
            index = max(index, self._windows.get(counter.key, (index, 0, 0))[0])
            counts.append(Count(prev, cur, is_denied(prev, cur, weight, counter.limit)))
            states.append((index, prev, cur))
        if not any(c.denied for c in counts):
            for counter, (index, prev, cur) in zip(counters, states, strict=False):
                self._windows[counter.key] = (index, prev, cur + 1)
                self._windows.move_to_end(counter.key)
            while len(self._windows) > self._max:
                self._windows.popitem(last=False)
        return counts

    def _read(self, key: str, index: int) -> tuple[int, int]:
        state = self._windows.get(key)
        if state is None:
            return 0, 0
        at, prev, cur = state
        if at >= index:  # the same window (or the clock stepped back: keep counting, never reset)
            return prev, cur
        if at == index - 1:
            return cur, 0
        return 0, 0

    @property
    def shared_state(self) -> str | None:
        return None

    async def aclose(self) -> None:
        self._windows.clear()
