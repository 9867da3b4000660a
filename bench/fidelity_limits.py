"""What the request-fidelity judge cannot judge, and how failures are sorted into kinds.

Every call whose verdict is not "accepted" gets a *kind* (the outcome and its first reason, with
the values taken out, so that one defect is one line of the report). A kind that comes from the
judge itself and not from the converter under test is a *judge limit*: the call is listed apart
and left out of the percentage. Each limit below says why it is one; a failure that matches none
of them counts against the converter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class JudgeLimit:
    """A class of verdicts that says something about the judge, not about the converter."""

    name: str
    why: str
    applies: Callable[[str, Sequence[str]], bool]  # (outcome, details) -> excluded?


def _any(pattern: str) -> Callable[[str, Sequence[str]], bool]:
    compiled = re.compile(pattern)
    return lambda outcome, details: outcome == "rejected" and bool(details) and all(
        compiled.search(d) for d in details)


JUDGE_LIMITS: Final[tuple[JudgeLimit, ...]] = ()


def limit_of(outcome: str, details: Sequence[str]) -> str | None:
    """The name of the judge limit a failed verdict falls under, or None (a converter failure)."""
    for limit in JUDGE_LIMITS:
        if limit.applies(outcome, details):
            return limit.name
    return None


_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER: Final = re.compile(r"\b\d+(?:\.\d+)?\b")


def kind_of(outcome: str, details: Sequence[str]) -> str:
    """One line per defect class: the outcome and its first reason, values blanked out."""
    first = details[0] if details else ""
    text = _NUMBER.sub("N", _QUOTED.sub("'…'", first))
    text = re.sub(r"(parameter( error)?: )[\w\-.\[\]]+", r"\1…", text)
    return f"{outcome}: {text}"[:140]


__all__ = ["JUDGE_LIMITS", "JudgeLimit", "kind_of", "limit_of"]
