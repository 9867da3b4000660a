"""MCP list pagination: opaque cursors over a list answer built in full.

A cursor carries the offset of the next page and a fingerprint of the names in the list it
was cut from. A cursor from another list (the caller's visible tools changed, an MCP upstream's
list changed, or it was made up) is refused with -32602, as the MCP spec asks for an invalid
cursor, rather than silently skipping or repeating items.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import MCPError


class Pager:
    """Cuts `{..., key: [items]}` answers into pages of `size` items (None: one page, no cursors)."""

    def __init__(self, size: int | None) -> None:
        self.size = size

    def page(self, answer: Mapping[str, Any], key: str, cursor: Any) -> Mapping[str, Any]:
        """The page of `answer` that `cursor` (None: the first) points at, with its nextCursor.

        Raises:
            MCPError: -32602 for a cursor this server did not give out for this list.
        """
        items: Sequence[Mapping[str, Any]] = answer[key]
        if self.size is None:
            if cursor is not None:
                raise _invalid()
            return answer
        fingerprint = _fingerprint(items)
        offset = 0 if cursor is None else _offset(cursor, fingerprint, len(items))
        end = offset + self.size
        if offset == 0 and end >= len(items):
            return answer
        page = {**answer, key: items[offset:end]}
        if end < len(items):
            page["nextCursor"] = _encode(end, fingerprint)
        else:
            page.pop("nextCursor", None)
        return page


def _fingerprint(items: Sequence[Mapping[str, Any]]) -> str:
    names = "\0".join(str(item.get("name", "")) for item in items)
    return hashlib.blake2b(names.encode(), digest_size=6).hexdigest()


def _encode(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{fingerprint}".encode()).decode().rstrip("=")


def _offset(cursor: Any, fingerprint: str, count: int) -> int:
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise _invalid()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        offset_text, seen = raw.split(":", 1)
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid() from None
    if seen != fingerprint or not 0 < offset < count:
        raise _invalid()
    return offset


def _invalid() -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message="Invalid cursor: it was not given out for this list "
                    "(the list may have changed); list again without a cursor")
