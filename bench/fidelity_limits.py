"""What the request-fidelity judge cannot judge, and how failures are sorted into kinds.

Every call whose verdict is not "accepted" gets a *kind* (the outcome and its first reason, with
the values taken out, so that one defect is one line of the report). A kind that comes from the
judge itself and not from the converter under test is a *judge limit*: the call is listed apart
and left out of the percentage. Each limit below says why it is one; a failure that matches none
of them counts against the converter.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from converter.spec.pattern import portable_pattern  # what `check` says of a pattern


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
             or re.match(r"Unexpected query parameter: (.+?) \(declared: ", d) for d in verdict.details]
    bodies = [d == "Request body validation error: the value does not follow the 'deepObject' style"
              for d in verdict.details]
    return verdict.outcome == "rejected" and bool(names) and all(
        (m is not None and f"deepObject-not-object:{m.group(1)}" in verdict.facts)
        or (body and "deepObject-not-object-body" in verdict.facts) for m, body in zip(names, bodies, strict=True))


def _untyped(verdict: Verdict) -> bool:
    """Every reason is a parameter whose schema has no `type` that fails an enum (openapi-core did not cast it)."""
    names = [re.match(r"^Invalid (?:path|query|header|cookie) parameter: ([^:]+): '.*' is not one of \[", d)
             for d in verdict.details]
    return verdict.outcome == "rejected" and bool(names) and all(
        m is not None and f"untyped:{m.group(1)}" in verdict.facts for m in names)


def _composite_keys(verdict: Verdict) -> bool:
    """Every reason is a query key that an exploded object alternative of a composite parameter puts there."""
    names = [re.match(r"^Unexpected query parameter: (.+?) \(declared: ", d) for d in verdict.details]
    return verdict.outcome == "rejected" and bool(names) and all(
        m is not None and f"composite-key:{m.group(1)}" in verdict.facts for m in names)


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

_BODY: Final = "Request body validation error: "
_STRING: Final = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_MISMATCH: Final = re.compile(rf"(?:{_STRING}) does not match (?P<pattern>{_STRING})(?: \(at [^)]*\))?(?:; |$)")
_READ_ONLY: Final = re.compile(
    r"Tried to write read-only property with (?:.*? \(at (?P<at>\$[^)]*)\)|[^;]*?)(?:; |$)")


_PARAMETER_MISMATCH: Final = re.compile(
    rf"^Invalid (?:path|query|header|cookie) parameter: (?P<name>[^:]+): (?:{_STRING}) does not match ")


def _errors(detail: str, pattern: re.Pattern[str]) -> Iterator[re.Match[str]] | None:
    """The body errors of one reason, each a match of `pattern`, or None when one is something else."""
    if not detail.startswith(_BODY):
        return None
    text, pos, found = detail[len(_BODY):], 0, []
    while pos < len(text):
        match = pattern.match(text, pos)
        if match is None:
            return None
        found.append(match)
        pos = match.end()
    return iter(found) if found else None


def _unportable_patterns(verdict: Verdict) -> bool:
    """Every reason is a string that fails a `pattern` openapi-mcp leaves out of the tool (and `check` names)."""
    if verdict.outcome != "rejected" or not verdict.details:
        return False
    for detail in verdict.details:
        parameter = _PARAMETER_MISMATCH.match(detail)  # its message may be cut: the judge's facts tell
        if parameter is not None and f"unportable-pattern:{parameter.group('name')}" in verdict.facts:
            continue
        matches = _errors(detail, _MISMATCH)
        if matches is None:
            return False
        for match in matches:
            pattern = ast.literal_eval(match.group("pattern"))
            if not isinstance(pattern, str) or portable_pattern(pattern)[0] is not None:
                return False
    return True


_PARAMETER_READ_ONLY: Final = re.compile(
    r"^Invalid (?:path|query|header|cookie) parameter: (?P<name>[^:]+): (?:Tried to write read-only property with "
    r".*|.* is not valid under any of the given schemas)$")


def _read_only_outside_properties(verdict: Verdict) -> bool:
    """Every reason is openapi-core's readOnly check on an array item (a path ending in `[N]`) or on a
    parameter whose schema (or an alternative of it) is readOnly."""
    if verdict.outcome != "rejected" or not verdict.details:
        return False
    for detail in verdict.details:
        parameter = _PARAMETER_READ_ONLY.match(detail)
        if parameter is not None and f"readonly:{parameter.group('name')}" in verdict.facts:
            continue
        matches = _errors(detail, _READ_ONLY)
        if matches is None or not all(m.group("at") is None or m.group("at").endswith("]") for m in matches):
            return False
    return True


_COMPOSITE: Final = re.compile(r"^Invalid (?:path|query|header|cookie) parameter: (?P<name>[^:]+): .* is not valid "
                               r"under any of the given schemas$")


def _composite_parameters(verdict: Verdict) -> bool:
    """Every reason is a parameter with an anyOf/oneOf schema (no `type`) that openapi-core found valid under none."""
    if verdict.outcome != "rejected" or not verdict.details:
        return False
    return all((m := _COMPOSITE.match(d)) is not None and f"composite:{m.group('name')}" in verdict.facts
               for d in verdict.details)


_REQUIRED: Final = re.compile(r"'(?P<name>(?:[^'\\]|\\.)*)' is a required property(?: \(at [^)]*\))?(?:; |$)")


_NOT_OF_TYPE: Final = re.compile(rf"(?:{_STRING}|\S.*?) is not of type '\w+' \(at (?P<at>\$[^)]*)\)(?:; |$)")


def _last_property(at: str) -> str:
    """`$.a.b[2]` -> `b`: the property an error's JSON path ends in."""
    return re.sub(r"\[\d+\]$", "", at).rsplit(".", 1)[-1]


def _ref_siblings(verdict: Verdict) -> bool:
    """Every reason is a type error at a property whose schema is a `$ref` with a contradicting `type` beside it."""
    if verdict.outcome != "rejected" or not verdict.details:
        return False
    for detail in verdict.details:
        matches = _errors(detail, _NOT_OF_TYPE)
        if matches is None or not all(f"ref-sibling:{_last_property(m.group('at'))}" in verdict.facts
                                      for m in matches):
            return False
    return True


def _missing_form_fields(verdict: Verdict, fact: str, media_types: tuple[str, ...]) -> bool:
    """Every reason is a required form field found missing, each one the judge knows as `fact:<name>`."""
    if verdict.outcome != "rejected" or not verdict.details or _essence(verdict) not in media_types:
        return False
    for detail in verdict.details:
        matches = _errors(detail, _REQUIRED)
        if matches is None or not all(f"{fact}:{m.group('name')}" in verdict.facts for m in matches):
            return False
    return True


def _undeclared_form_fields(verdict: Verdict) -> bool:
    """Every reason is a form field missing that the body schema requires without a property for it."""
    return _missing_form_fields(verdict, "undeclared", ("application/x-www-form-urlencoded", "multipart/form-data"))


def _free_object_fields(verdict: Verdict) -> bool:
    """Every reason is a required urlencoded field that is an object with no `properties`, exploded."""
    return _missing_form_fields(verdict, "free-object-field", ("application/x-www-form-urlencoded",))


_MEDIA_NOT_FOUND: Final = re.compile(r"^Request body validation error: Content for the following mimetype not found: "
                                     r"(?P<sent>[^.]+)\. Valid mimetypes: (?P<keys>\[.*\])$")


def _malformed_media_key(verdict: Verdict) -> bool:
    """openapi-core found no media type for the body, and the document's keys for it have a parameter that
    is not name=value, whose essence is the one sent."""
    if verdict.outcome != "rejected" or len(verdict.details) != 1:
        return False
    match = _MEDIA_NOT_FOUND.match(verdict.details[0])
    if match is None:
        return False
    keys = ast.literal_eval(match.group("keys"))
    sent = match.group("sent").strip()

    def spaced(text: str) -> str:  # mock_api's QUIRK 8 rebuilds the Content-Type as `type; name=value`
        return "; ".join(part.strip() for part in text.split(";")).lower()

    return any(isinstance(k, str) and (k.strip() == "" or spaced(k) == spaced(sent) or (
        k.split(";", 1)[0].strip() == sent and any("=" not in p for p in k.split(";")[1:]))) for k in keys)


_CRASHES: Final = (
    "openapi-core failed on this request: RecursionError: maximum recursion depth exceeded",
    "openapi-core failed on this request: TypeError: first argument must be a string or compiled pattern",
    "openapi-core failed on this request: UnknownType: Unknown type",
)


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
        "no OpenAPI serialization (form field)",
        "the same for a field of an urlencoded body (salesloft.com's `custom_fields`, a list of objects): "
        "OAS 3.x §4.8.14.4 encodes such fields with the parameter styles, which have no form for it; "
        "openapi-core fails to cast the JSON text openapi-mcp sends there",
        lambda v: _essence(v) == "application/x-www-form-urlencoded" and any(f.startswith("nested-field:")
                                                                              for f in v.facts)
        and _all(v, r"^Request body validation error: Failed to cast value to (object|array) type: "),
    ),
    JudgeLimit(
        "no OpenAPI serialization (refused)",
        "the same for a header: JSON text of nested values holds the `,` that separates a header object's "
        "parts, so openapi-mcp refuses the call with a message naming the argument (cloudmersive.com's "
        "`formTemplateDefinition`) rather than send a value that splits",
        lambda v: v.outcome == "refused" and bool(v.details) and bool(
            m := re.search(r"argument '([^']+)' must not contain '.' inside a key or value", v.details[0]))
        and f"nested:{m.group(1)}" in v.facts,
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
        "openapi-core cannot read a deepObject parameter (or form body field) whose schema is not a plain object "
        "(an anyOf or oneOf of an object and a string; Stripe's `expand`, a list: OAS defines deepObject for "
        "objects only) or that does not say `explode: true` (soundcloud.com's `bpm`; the style table has "
        "deepObject with explode only), and fails the request even when the parameter is absent",
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
    JudgeLimit(
        "pattern with no common reading",
        "the document's `pattern` is not a regular expression every dialect reads alike: Java's class "
        "intersection (AWS autoscaling-plans' `[\\p{Print}&&[^|:/]]+`, which ECMA-262 reads as a class followed "
        "by `]+`) or every metacharacter escaped (AWS identitystore's `\\(\\?!\\(\\?i\\)...\\p\\{L\\}`, "
        "invalid with the `u` flag, literal text without it), or written for a dialect that reads `{,2}` "
        "as a repetition (ijenko.net's query `functionalities`; ECMA-262 reads it as text); openapi-mcp "
        "leaves it out of the tool schema and `check` names it, and the judge reads it one way only (the `regex` module), refusing the values its "
        "authors meant",
        _unportable_patterns,
    ),
    JudgeLimit(
        "readOnly outside properties",
        "openapi-core refuses a readOnly schema anywhere in a request: array items (apideck.com's "
        "`image_ids: {items: {$ref: Id}}`, `Id` readOnly) and parameters (GitHub's `alert_number`, a $ref to "
        "a readOnly response property; DigitalOcean's `ssh_key_identifier`, an anyOf of two), where OAS 3.0.3 "
        "makes readOnly relevant for properties only: the ids a client refers to are its to send (intellifi.nl "
        "marks a whole request body readOnly)",
        _read_only_outside_properties,
    ),
    JudgeLimit(
        "composite parameter",
        "openapi-core deserializes a parameter by its schema's `type`; with an anyOf/oneOf and no `type` "
        "(PeerTube's `licenceOneOf`: an id or a list of ids, explode false) it validates the raw text "
        "(`399,274`) against each alternative, and none is a string",
        _composite_parameters,
    ),
    JudgeLimit(
        "$ref siblings",
        "openapi-core applies the keywords written beside a `$ref`, which OAS 3.0.3 says SHALL be ignored: "
        "just-eat.co.uk's `collection: {$ref: ServiceTimesCollection, type: object}` points at a list, so every "
        "request that sends the list the `$ref` describes is refused (openapi-mcp follows the `$ref`)",
        _ref_siblings,
    ),
    JudgeLimit(
        "untyped parameter",
        "openapi-core casts a parameter's text by its schema's `type`; with none (nexmo.com's `delivered`: "
        "`enum: [true, false, 0, 1]`), 'true' stays a string and an enum of booleans and numbers refuses it",
        _untyped,
    ),
    JudgeLimit(
        "composite exploded object",
        "an exploded form parameter whose schema is an anyOf/oneOf with an object alternative (PandaScore's "
        "`page`: a number or `{number, size}`) puts that object's keys in the query; openapi-core, reading by "
        "`type`, does not know them and calls them unexpected",
        _composite_keys,
    ),
    JudgeLimit(
        "form field without a property",
        "openapi-core reads into a form body only the fields its schema's `properties` declare; a field only "
        "`required` names (Eqivo's `ConferenceName`) is dropped from the request it reads, then found missing "
        "(openapi-mcp sends it: the document requires it)",
        _undeclared_form_fields,
    ),
    JudgeLimit(
        "free-form object form field",
        "a required urlencoded field is an object with no `properties` (salesloft.com's `recording`: "
        "`{type: object}`), sent as OAS 3.x §4.8.14.4 says (style form, explode: its own key=value pairs, "
        "no pair named after the field); openapi-core reassembles an exploded object only from declared "
        "properties, so it finds the field missing whatever the request holds",
        _free_object_fields,
    ),
    JudgeLimit(
        "malformed media type key",
        "the document's media type has a parameter that is not name=value (anchore.io's `text/plain; utf-8`, "
        "RFC 9110 §8.3.1), or is empty (spoonacular.com's `''`), or has no space after its `;` (xtrf.eu's "
        "`application/json;charset=UTF-8`, sent as written, which the judge's Content-Type parsing respells "
        "`application/json; charset=UTF-8`): openapi-core matches no Content-Type to it (openapi-mcp sends the "
        "document's media type, its well-formed part, or JSON)",
        _malformed_media_key,
    ),
    JudgeLimit(
        "object under a text media type",
        "openapi-core reads a text/* body as a string, so an object or array schema there fails every request "
        "(Azure ContentModerator's text/plain `{type: object, format: file}`; openapi-mcp sends such bodies "
        "as JSON text and says so in `check`)",
        lambda v: _essence(v).startswith("text/") and "xml" not in _essence(v)
        and _all(v, r"^Request body validation error: '.*' is not of type '(object|array)'$"),
    ),
    JudgeLimit(
        "framing header parameter",
        "the document declares a header that frames the message as a parameter (Azure Data Lake's required "
        "`Transfer-Encoding: chunked`): the HTTP client frames each request itself (RFC 9112 §6; a body with "
        "Content-Length is as valid), so openapi-mcp leaves such parameters out and `check` says why; other "
        "reasons must be the bytes-body kind",
        lambda v: v.outcome == "rejected" and bool(v.details) and any(
            re.match(r"^Missing required header parameter: (?i:transfer-encoding|content-length)$", d)
            for d in v.details) and all(
            re.match(r"^Missing required header parameter: (?i:transfer-encoding|content-length)$", d)
            or re.match(r"^Request body validation error: b['\"]", d) for d in v.details),
    ),
    JudgeLimit(
        "openapi-core crashes",
        "openapi-core raises instead of judging: RecursionError on apple.com sirikit-cloud-media's recursive "
        "bodies (at a recursion limit of 20,000 as at 1,000: it does not end), TypeError on a `pattern` that "
        "is not a string (api.video's `pattern: 0`, which openapi-mcp ignores with a warning in `check`), "
        "UnknownType on a `type` that is no JSON type (codat.io, ignored with a warning too)",
        lambda v: v.outcome == "rejected" and bool(v.details) and all(d.startswith(_CRASHES) for d in v.details),
    ),
)


def limit_of(verdict: Verdict) -> str | None:
    """The name of the judge limit a failed verdict falls under, or None (a converter failure).

    A verdict with several reasons falls under a limit when one limit covers them all, or when each
    reason on its own falls under one (then the first reason's limit names it).
    """
    for limit in JUDGE_LIMITS:
        if limit.applies(verdict):
            return limit.name
    if len(verdict.details) < 2:
        return None
    names = [limit_of(Verdict(verdict.outcome, [detail], verdict.content_type, verdict.facts))
             for detail in verdict.details]
    return names[0] if all(names) else None


_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER: Final = re.compile(r"\b\d+(?:\.\d+)?\b")


def kind_of(outcome: str, details: Sequence[str]) -> str:
    """One line per defect class: the outcome and its first reason, values blanked out."""
    first = details[0] if details else ""
    text = _NUMBER.sub("N", _QUOTED.sub("'…'", first))
    text = re.sub(r"(parameter( error)?: )[\w\-.\[\]]+", r"\1…", text)
    return f"{outcome}: {text}"[:140]


__all__ = ["JUDGE_LIMITS", "JudgeLimit", "Verdict", "kind_of", "limit_of"]
