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
class Verdict:
    """What a limit looks at: the outcome, its reasons, and what the judge knows of the request."""

    outcome: str
    details: Sequence[str]
    content_type: str | None = None  # of the request that reached the judge
    facts: frozenset[str] = frozenset()  # what the judge found in the operation (Judge.facts)


@dataclass(frozen=True)
class JudgeLimit:
    """A class of verdicts that says something about the judge, not about the converter."""

    name: str
    why: str
    applies: Callable[[Verdict], bool]


def _all(verdict: Verdict, pattern: str) -> bool:
    return verdict.outcome == "rejected" and bool(verdict.details) and all(
        re.search(pattern, d) for d in verdict.details)


def _essence(verdict: Verdict) -> str:
    return (verdict.content_type or "").split(";", 1)[0].strip().lower()


def _deep_object(verdict: Verdict) -> bool:
    names = [re.match(r"Query parameter error: (.+?): the value does not follow the 'deepObject' style", d)
             for d in verdict.details]
    return verdict.outcome == "rejected" and bool(names) and all(
        m is not None and f"deepObject-not-object:{m.group(1)}" in verdict.facts for m in names)


_PARAMETER_ERROR: Final = re.compile(
    r"^(?:(?:Invalid|Missing required) (?:query|header|path|cookie) parameter|"
    r"(?:Query|Header|Path|Cookie) parameter error): ([^:]+?)(?:: |$)|^value: argument '[^']*' \(\w+ '([^']+)'\)")


def _names_only(verdict: Verdict, *facts: str) -> bool:
    """Every reason is about a parameter the judge found one of `facts` of (and one at least)."""
    if verdict.outcome != "rejected" or not verdict.details:
        return False
    names = [_PARAMETER_ERROR.match(d) for d in verdict.details]
    return all(m is not None and any(f"{fact}:{m.group(1) or m.group(2)}" in verdict.facts for fact in facts)
               for m in names)


JUDGE_LIMITS: Final[tuple[JudgeLimit, ...]] = (
    JudgeLimit(
        "XML body",
        "openapi-core does not read XML: a text/xml body reaches the schema as bytes, an application/xml one "
        "as an XML element, and no object schema accepts either (openapi-mcp sends such bodies as JSON text "
        "and says so in `check`)",
        lambda v: ("xml" in _essence(v)) and _all(v, r"^Request body validation error"),
    ),
    JudgeLimit(
        "body read as bytes",
        "openapi-core parses JSON, form, multipart and plain-text bodies only, choosing by the document's media "
        "type; under any other (application/octet-stream, `*/*`, application/x-yaml, text/csv, ...) the body "
        "reaches the schema as bytes, "
        "which only `format: binary` accepts: an object, array or base64 string schema there fails every "
        "request (for objects openapi-mcp sends JSON text and says so in `check`)",
        lambda v: _all(v, r"^Request body validation error: b['\"]"),  # a bytes value: openapi-core did not parse it
    ),
    JudgeLimit(
        "no OpenAPI serialization",
        "the document puts a list of objects, a list of lists or an object of objects in a parameter (AWS's "
        "query `Tags`): OAS 3.x §4.8.12.4 serializes primitives, lists of them and flat objects only, so no "
        "request can carry it as the document says (openapi-mcp sends those values as JSON text and says so in "
        "`check` for each such parameter)",
        lambda v: _names_only(v, "nested"),
    ),
    JudgeLimit(
        "exploded keys clash",
        "the document explodes an object parameter into query keys that another parameter uses too (sinao.app's "
        "`movements` has a `type`, and so does the query): no request tells them apart (openapi-mcp says so in "
        "`check`); reasons about the other parameters must be of this or the previous kind",
        lambda v: _names_only(v, "clash", "nested") and any(f.startswith("clash:") for f in v.facts),
    ),
    JudgeLimit(
        "time format",
        "openapi-core's `time` format refuses times with an offset (`20:38:45Z`), which JSON Schema 2020-12 and "
        "RFC 3339 require; the tool's schema is 2020-12, so its valid values fail the judge",
        lambda v: _all(v, r"is not a 'time'"),
    ),
    JudgeLimit(
        "deepObject not an object",
        "openapi-core cannot read a deepObject parameter whose schema is not a plain object (an anyOf or oneOf "
        "of an object and a string), and fails the request even when the parameter is absent",
        _deep_object,
    ),
    JudgeLimit(
        "discriminator",
        "openapi-core enforces `discriminator` beyond JSON Schema: the property must be present even where the "
        "schema does not require it, its value must name a schema of the document (Azure documents name "
        "x-ms-discriminator-value instead), and the schema it names is the only one tried; the judge checks "
        "such a body again against the document without `discriminator`, and only a body that then passes "
        "is listed here",
        lambda v: "discriminator-only" in v.facts,
    ),
)


def limit_of(verdict: Verdict) -> str | None:
    """The name of the judge limit a failed verdict falls under, or None (a converter failure)."""
    for limit in JUDGE_LIMITS:
        if limit.applies(verdict):
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


__all__ = ["JUDGE_LIMITS", "JudgeLimit", "Verdict", "kind_of", "limit_of"]
