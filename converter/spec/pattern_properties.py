"""What a Unicode property escape (`\\p{L}`, `\\P{Nd}`, `\\p{IsAlphabetic}`) or one of Java's POSIX
classes (`\\p{Alpha}`) contains, as converter.spec.pattern needs it: its ASCII members exactly, and
whether it has, and whether it misses, any member from U+0080 up. The `regex` module knows the
Unicode properties; Java's classes are ASCII only, as in Java."""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import regex

# Java's POSIX classes (AWS's Smithy models use them), ASCII-only as in Java: pairs of range ends.
JAVA_POSIX: Final = {
    "Lower": "az", "Upper": "AZ", "ASCII": "\x00\x7f", "Alpha": "azAZ", "Digit": "09", "Alnum": "azAZ09",
    "Punct": "!/:@[`{~", "Graph": "!~", "Print": " ~", "Blank": "  \t\t", "Cntrl": "\x00\x1f\x7f\x7f",
    "XDigit": "09afAF", "Space": "  \t\r",
}


@lru_cache(maxsize=256)
def property_facts(name: str) -> tuple[frozenset[int], bool, bool] | None:
    """ASCII members of a property, whether it has non-ASCII members, whether it misses some;
    None for a name no dialect knows."""
    java = JAVA_POSIX.get(name)
    if java is not None:  # Java's POSIX classes: ASCII only
        members: set[int] = set()
        for low, high in zip(java[::2], java[1::2], strict=True):
            members.update(range(ord(low), ord(high) + 1))
        return frozenset(members), False, True
    compiled = None
    for candidate in (name, name[2:] if name.startswith(("Is", "In")) else None):
        if candidate:
            try:
                compiled = regex.compile(rf"\p{{{candidate}}}")
                break
            except regex.error:
                continue
    if compiled is None:
        return None
    ascii_members = frozenset(cp for cp in range(128) if compiled.match(chr(cp)))
    inverse = regex.compile(rf"\P{{{compiled.pattern[3:-1]}}}")
    return ascii_members, bool(compiled.search(_non_ascii())), bool(inverse.search(_non_ascii()))


@lru_cache(maxsize=1)
def _non_ascii() -> str:
    return "".join(chr(cp) for cp in range(0x80, 0x110000) if not 0xD800 <= cp <= 0xDFFF)


def runs(members: frozenset[int]) -> list[tuple[int, int]]:
    """Runs of consecutive code points."""
    out: list[tuple[int, int]] = []
    for cp in sorted(members):
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out
