"""What a reload keeps of the running catalog: the parts whose settings did not change.

Building a catalog asks `Parts.take(kind, key, make)` for each long-lived part: a pooled upstream
client, an upstream credential (its token cache), an MCP server's session, the decision service
client (its decision cache), the rate limiter (its counters). The first build makes every part;
a reload's build is handed the running catalog's parts and gets the very same object back for
every key that compares equal (pydantic settings compare by value, secrets included), so pools,
caches and sessions survive; anything else is made anew. Each part is taken at most once per
build, so two blocks with equal settings still get one part each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


class Parts:
    """The long-lived parts one build made or kept, by kind and key."""

    def __init__(self, previous: Parts | None = None) -> None:
        self._previous = list(previous._entries) if previous is not None else []
        self._entries: list[tuple[str, Any, Any]] = []
        self.kept: list[str] = []  # the kinds of the parts taken over from `previous`, for the log

    def __repr__(self) -> str:
        return f"Parts(entries={len(self._entries)}, kept={len(self.kept)})"

    def done(self) -> None:
        """The build is over: the previous build's parts not taken are not kept alive from here."""
        self._previous.clear()

    def take(self, kind: str, key: Any, make: Callable[[], _T]) -> _T:
        """The previous build's `kind` part whose key equals `key`, else `make()`."""
        for i, (old_kind, old_key, value) in enumerate(self._previous):
            if old_kind == kind and _equal(old_key, key):
                del self._previous[i]
                self._entries.append((kind, key, value))
                self.kept.append(kind)
                return value  # type: ignore[no-any-return]
        made = make()
        self._entries.append((kind, key, made))
        return made


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - keys that cannot be compared are different keys
        return False
