"""Argument fuzzing (issue 6, part 2): generated arguments, valid and invalid, for every tool of
several documents, called through the catalog against the echo mock (which validates each request
with openapi-core and echoes what it understood).

Properties, for every generated call:
- no exception escapes `Catalog.call_tool`, and no result is an internal error;
- an invalid argument set (one mutation of a valid one: a required argument missing, an unknown
  argument, a value of the wrong type, a 200 KB string, lists nested 200 deep) never reaches the
  upstream and is a tool error `Invalid arguments for tool ... at $...` naming the argument;
- a valid argument set produces one request, for the tool's own operation, that openapi-core
  accepts (the echo answers 200), with plain string path/query values and JSON bodies arriving
  unchanged; or, only where HTTP cannot carry the value (a path segment that is empty, `.` or `..`;
  a header value that is not ASCII or holds CR/LF/NUL; a list item or object entry holding its own
  delimiter where it cannot be escaped: headers, spaceDelimited and pipeDelimited queries), a tool
  error saying so before anything is sent.

Valid values come from a small generator for the JSON Schema subset our input schemas use (types
and type lists, enum/const, properties/required, items/minItems, string lengths, patterns, formats,
base64 files, numeric bounds, recursive `$defs`): hypothesis-jsonschema 0.23.1 fails on every schema
here (AttributeError against current hypothesis, and it refuses recursive references).

The generator leaves out the few values the check cannot judge (see `_forbidden`: each names the
test that pins what happens to them instead). The bugs the fuzzing found are pinned by the
deterministic tests at the end of this file. Hypothesis draws new examples on every run (no
example database); a failure prints the blob that reproduces it.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import jsonschema
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mock_api
from converter.catalog import Catalog, build_catalog
from converter.config import load_settings
from converter.tools import ToolPlan

SPECS: Final = Path(__file__).parent / "specs"
DOCUMENTS: Final = {
    "marketplace": mock_api.SPEC_PATH,
    "styles": SPECS / "styles.yaml",
    "collisions": SPECS / "collisions.yaml",
    "multipart": SPECS / "multipart.yaml",
    "recursive": SPECS / "recursive.yaml",
    "openapi31": SPECS / "openapi31.yaml",
}
VALID_EXAMPLES: Final = 150
INVALID_EXAMPLES: Final = 120
MAX_DEPTH: Final = 3  # recursive schemas: below this, only what is required
HUGE: Final = 200_000
FUZZ_SETTINGS: Final = settings(
    max_examples=VALID_EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# The only tool errors a schema-valid argument set may get: values HTTP cannot carry in that place.
UNPLACEABLE: Final = re.compile(
    r"^\w+: argument '[^']+' must (not be empty, '\.' or '\.\.' \(it is a path segment\)"
    r"|be ASCII without CR, LF or NUL \(it is sent as the header '[^']+'\)"
    r"|not contain '[ ,=|]' inside (an item|a key or value) \(it separates the parts of the "
    r"(header|\w+ query parameter) '[^']+' and cannot be escaped there\))$"
)


# -- the upstream ---------------------------------------------------------------------------------


@dataclass
class Echo:
    """The echo mock of one document; counts what reaches it and keeps every (status, JSON) answer."""

    document: Path
    answers: list[tuple[int, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = mock_api.create_echo_app(self.document)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, chunks = 0, []

        async def record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.answers.append((status, json.loads(b"".join(chunks) or b"null")))


@dataclass
class Target:
    catalog: Catalog
    echo: Echo
    portal: BlockingPortal

    @property
    def names(self) -> list[str]:
        return [plan.name for plan in self.catalog.plans]

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool, int]:
        """Call the tool; return (text of the result, is_error, how many requests reached the echo)."""
        before = len(self.echo.answers)
        result = self.portal.call(self.catalog.call_tool, name, arguments)
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        return text, bool(result.is_error), len(self.echo.answers) - before


@contextmanager
def open_targets() -> Iterator[dict[str, Target]]:
    """One catalog per document, each calling its own echo mock in process, all on one event loop."""
    with start_blocking_portal("asyncio") as portal, ExitStack() as stack:
        found: dict[str, Target] = {}
        for name, document in DOCUMENTS.items():
            echo = Echo(document)
            settings_ = load_settings(None, spec=str(document), upstream_url="http://echo.test")
            catalog = build_catalog(settings_, transport=httpx.ASGITransport(app=echo))
            stack.enter_context(portal.wrap_async_context_manager(catalog))
            found[name] = Target(catalog, echo, portal)
        yield found


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    with open_targets() as found:
        yield found


# -- a generator for the JSON Schema subset of our input schemas -----------------------------------

TEXT: Final = st.text(max_size=24)
JSON_SCALARS: Final = (st.none() | st.booleans() | st.integers() | TEXT
                       | st.floats(allow_nan=False, allow_infinity=False))


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target = defs[schema["$ref"].removeprefix("#/$defs/")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return list(declared)
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return ["string", "integer", "number", "boolean", "null", "object", "array"]


def values(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0, where: str | None = None,
           forbid: str = "") -> st.SearchStrategy[Any]:
    """Values valid against `schema` (formats included: openapi-core checks uuid and uri).

    `where` is the location of the argument (query, header, cookie, path, body_field, body) and
    `forbid` the characters its strings leave out (see `_forbidden`).
    """
    schema = _resolve(schema, defs)
    if isinstance(schema.get("anyOf"), list) and "type" not in schema:  # a nullable value: one branch or the other
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return st.one_of([values({**rest, **branch}, defs, depth, where, forbid) for branch in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    return st.one_of([_typed(t, schema, defs, depth, where, forbid) for t in _types(schema)])


def _typed(kind: str, schema: dict[str, Any], defs: dict[str, Any], depth: int, where: str | None, forbid: str
           ) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        return st.integers(min_value=low, max_value=schema.get("maximum"))
    if kind == "number":
        low = schema.get("minimum")
        return st.floats(min_value=low, max_value=schema.get("maximum"), allow_nan=False, allow_infinity=False) \
            | st.integers(min_value=None if low is None else math.ceil(low), max_value=schema.get("maximum"))
    if kind == "string":
        return _string(schema, where, forbid)
    parameter = where in ("query", "header", "cookie")
    if kind == "array":
        # test_empty_list_parameters_are_omitted
        low = max(schema.get("minItems", 0), 1 if parameter else 0)
        high = low if depth >= MAX_DEPTH else low + 3
        items = values(schema.get("items", {}), defs, depth + 1, where, forbid)
        return st.lists(items, min_size=low, max_size=high)
    if kind == "object":
        found = _object(schema, defs, depth, where, forbid)
        return found.filter(bool) if parameter else found  # test_empty_object_parameters_are_omitted
    raise AssertionError(f"type {kind!r} is not generated")


def _string(schema: dict[str, Any], where: str | None, forbid: str) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 24)
    if where == "query":
        low = max(low, 1)  # test_an_empty_query_value_is_not_sent_without_allow_empty_value
    if schema.get("contentEncoding") == "base64":
        # an empty file as the whole body: openapi-core takes a 0-byte body for a missing one
        files = st.binary(min_size=1 if where == "body" else 0, max_size=48)
        return files.map(lambda b: base64.b64encode(b).decode())
    fmt = schema.get("format")
    if fmt == "uuid":
        return st.uuids().map(str)
    if fmt == "uri":
        return st.sampled_from(["https://example.com", "https://ada.dev/about?lang=en#top", "mailto:ada@example.com",
                                "urn:isbn:0451450523"])
    if "pattern" in schema:
        pattern = schema["pattern"]
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    size = {"min_size": low, "max_size": min(high, low + 24)}
    text = st.text(**size)
    if where == "header":  # mostly what a header can carry (the rest is refused before sending)
        ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), **size)
        text = ascii_text | ascii_text | text
    return text.filter(lambda s: not any(c in s for c in forbid)) if forbid else text


def _object(schema: dict[str, Any], defs: dict[str, Any], depth: int, where: str | None, forbid: str
            ) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = [key for key in schema.get("required", []) if key in properties]
    optional = [] if depth >= MAX_DEPTH else [key for key in properties if key not in required]
    fixed = st.fixed_dictionaries(
        {key: values(properties[key], defs, depth + 1, where, forbid) for key in required},
        optional={key: values(properties[key], defs, depth + 1, where, forbid) for key in optional})
    extra = schema.get("additionalProperties", True)
    if extra is False or properties or depth >= MAX_DEPTH:
        return fixed
    more = st.dictionaries(TEXT, JSON_SCALARS if extra is True else values(extra, defs, depth + 1, where, forbid),
                           max_size=3)
    return st.tuples(more, fixed).map(lambda pair: {**pair[0], **pair[1]})


def _forbidden(plan: ToolPlan, argument: str, location: str | None) -> str:
    """Characters left out of an argument's strings, and why."""
    param = plan.request.params.get(argument)
    if param is None:
        return ""
    if location != "query":
        return ""
    if param.allow_reserved:
        return "&#+"  # test_allow_reserved_does_not_let_a_value_add_parameters_or_cut_the_url (test_hostile)
    # The converter percent-encodes ',' inside items (RFC 6570), so the raw query is unambiguous;
    # openapi-core splits the value after decoding it, so the mock would see two items. (Delimiters
    # that cannot be escaped are refused: test_an_item_containing_its_delimiter_is_not_sent_ambiguously.)
    if param.style == "form" and not param.explode:
        return ","
    return ""


def arguments(plan: ToolPlan) -> st.SearchStrategy[dict[str, Any]]:
    """Valid argument sets for the tool; each argument is generated for the location it goes to.

    A top-level `anyOf` (a required form body whose fields are all optional: at least one of them)
    is met by drawing one of its branches and giving what that branch requires.
    """
    schema = plan.input_schema
    defs, properties, required = schema.get("$defs", {}), schema["properties"], schema.get("required", [])
    located = {slot.argument: slot.location for slot in plan.request.slots}

    def argument(key: str, narrowed: dict[str, Any]) -> st.SearchStrategy[Any]:
        where = located.get(key)
        return values({**properties[key], **narrowed.get(key, {})}, defs, 1, where, _forbidden(plan, key, where))

    def meeting(branch: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        needed = [*required, *(key for key in branch.get("required", []) if key not in required)]
        narrowed = branch.get("properties", {})
        optional = [key for key in properties if key not in needed]
        return st.fixed_dictionaries({key: argument(key, narrowed) for key in needed},
                                     optional={key: argument(key, narrowed) for key in optional})

    return st.one_of([meeting(branch) for branch in schema.get("anyOf", [{}])])


# -- invalid argument sets: one mutation of a valid one -------------------------------------------


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


WRONG_VALUES: Final = st.sampled_from(["", "text", 0, -1, 7, 2.5, True, None, [], ["a"], {}, {"k": "v"}]) \
    | st.just("x" * HUGE) | st.just(_deep(200)) | st.just({"a": {"b": {"c": _deep(50)}}})


@dataclass(frozen=True)
class Mutation:
    kind: str  # missing | extra | wrong
    key: str
    arguments: dict[str, Any]


@st.composite
def mutations(draw: st.DrawFn, plan: ToolPlan) -> Mutation:
    schema = plan.input_schema
    defs = schema.get("$defs", {})
    valid = draw(arguments(plan))
    kinds = ["extra", *(["missing"] if schema.get("required") else []), *(["wrong"] if schema["properties"] else [])]
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        key = draw(st.sampled_from(schema["required"]))
        return Mutation(kind, key, {k: v for k, v in valid.items() if k != key})
    if kind == "extra":
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in schema["properties"])
                   | st.sampled_from(["__proto__", "body", "Authorization", "../admin", "x" * 300]).filter(
                       lambda k: k not in schema["properties"]))
        return Mutation(kind, key, {**valid, key: draw(WRONG_VALUES | JSON_SCALARS)})
    key = draw(st.sampled_from(sorted(schema["properties"])))
    checker = jsonschema.Draft202012Validator({**schema["properties"][key], "$defs": defs})
    wrong = draw(WRONG_VALUES.filter(lambda v: not checker.is_valid(v)))
    return Mutation(kind, key, {**valid, key: wrong})


# -- the properties -------------------------------------------------------------------------------


def _names_argument(text: str, key: str) -> bool:
    if len(key) > 200:  # a huge name is quoted as an excerpt (messages are cut at 300 characters)
        key = key[:100]
        return key in text
    return f"$.{key}" in text or f"$[{key!r}]" in text or f"{key!r}" in text


def round_trip(plan: ToolPlan, arguments: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where in the echo, expected value) for the values the echo mock must show unchanged:
    plain strings in simple/form path and query parameters, and JSON bodies."""
    expected: list[tuple[str, Any]] = []
    defs = plan.input_schema.get("$defs", {})
    body: dict[str, Any] = {}
    json_body = (plan.request.body_media_type or "").split(";")[0] == "application/json"
    for slot in plan.request.slots:
        if slot.argument not in arguments:
            continue
        value = arguments[slot.argument]
        if slot.location == "body_field":
            body[slot.name] = value
        elif slot.location == "body":
            body = value
        elif slot.location in ("path", "query"):
            param = plan.request.params[slot.argument]
            schema = _resolve(plan.input_schema["properties"][slot.argument], defs)
            if schema.get("type") == "string" and "format" not in schema and param.style in ("simple", "form"):
                expected.append((f"parameters.{slot.location}.{slot.name}", value))
    if json_body and (body or plan.request.body_required):
        expected.append(("body", body))
    return expected


def _at(echo: Any, where: str) -> Any:
    for key in where.split(".", 2):
        echo = echo[key]
    return echo


@pytest.mark.parametrize("document", list(DOCUMENTS))
def test_valid_arguments_produce_requests_openapi_core_accepts(document: str, targets: dict[str, Target]) -> None:
    target = targets[document]
    counts = {"calls": 0, "reached": 0}

    @FUZZ_SETTINGS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        plan = target.catalog.plan(data.draw(st.sampled_from(target.names), label="tool"))
        assert plan is not None
        args = data.draw(arguments(plan), label="arguments")
        text, is_error, sent = target.call(plan.name, args)
        counts["calls"] += 1
        assert not text.startswith("Internal error"), text
        if sent == 0:
            assert is_error and UNPLACEABLE.match(text), f"{plan.name}({args!r}) was not sent: {text}"
            return
        counts["reached"] += 1
        assert sent == 1
        entry = target.echo.app.state.request_log.entries()[-1]
        assert (entry["operation"]["method"], entry["operation"]["path"]) == (plan.method, plan.path), entry
        status, echo = target.echo.answers[-1]
        if re.search(r"%0[AD]", entry["raw_path"], re.IGNORECASE):
            # A CR or LF in a path value is sent percent-encoded and matches the operation, but the
            # mock cannot go further: Starlette drops CR/LF from the decoded path (so its route
            # answers 404) and openapi-core's label/matrix parsers do not match them.
            return
        assert entry["validation"]["outcome"] == "valid", f"openapi-core refused {plan.name}({args!r}): {entry}"
        assert status == 200, f"the echo mock answered {status} to {plan.name}({args!r}): {echo}"
        for where, value in round_trip(plan, args):
            got = _at(echo, where)
            assert got == value, f"{plan.name}({args!r}): the upstream got {where} = {got!r}"

    check()
    assert counts["reached"] >= counts["calls"] * 0.5, f"only {counts['reached']} of {counts['calls']} reached it"


@pytest.mark.parametrize("document", list(DOCUMENTS))
def test_invalid_arguments_never_reach_the_upstream_and_name_the_argument(
        document: str, targets: dict[str, Target]) -> None:
    target = targets[document]

    @settings(FUZZ_SETTINGS, max_examples=INVALID_EXAMPLES)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        plan = target.catalog.plan(data.draw(st.sampled_from(target.names), label="tool"))
        assert plan is not None
        mutation = data.draw(mutations(plan), label="mutation")
        text, is_error, sent = target.call(plan.name, mutation.arguments)
        assert sent == 0, f"{mutation} reached the upstream"
        assert is_error
        assert text.startswith(f"Invalid arguments for tool {plan.name!r} at $"), text[:300]
        assert _names_argument(text, mutation.key), (mutation.kind, mutation.key, text[:300])

    check()


# -- what the fuzzing found: each bug pinned with the smallest call that shows it -------------------


def _sent(target: Target, name: str, arguments: dict[str, Any]) -> tuple[str, int, dict[str, Any], Any]:
    """Call; return (result text, requests sent, the echo's log entry, its answer) of the last request."""
    text, _, sent = target.call(name, arguments)
    entry = target.echo.app.state.request_log.entries()[-1] if sent else {}
    return text, sent, entry, target.echo.answers[-1][1] if sent else None


INTEGRAL_FLOATS = [
    ("multipart", "updateDocument", {"folderId": "f", "documentId": 3.0, "title": "t"}, "path"),
    ("openapi31", "updateProfile", {"handle": "ada", "since": 5.0, "schemaVersion": 2, "displayName": "A"}, "query"),
    ("styles", "searchProducts", {"session": "s", "ids": [1.0, 2]}, "query array"),
    ("marketplace", "createOrder", {"userId": "u1", "item": "x", "quantity": 2.0, "price": 1}, "JSON body"),
    ("multipart", "uploadDocument", {"folderId": "f", "file": "", "title": "t", "pages": 2.0}, "multipart field"),
]


@pytest.mark.parametrize(("document", "tool", "arguments", "where"), INTEGRAL_FLOATS,
                         ids=[w for *_, w in INTEGRAL_FLOATS])
def test_an_integral_float_for_an_integer_argument_is_sent_as_an_integer(
        document: str, tool: str, arguments: dict[str, Any], where: str, targets: dict[str, Target]) -> None:
    text, sent, entry, _ = _sent(targets[document], tool, arguments)
    assert sent == 1, text
    assert entry["validation"]["outcome"] == "valid", entry["validation"]["errors"]


@pytest.mark.parametrize("argument", ["ids", "sizes", "colors", "X-Feature-Flags"])
def test_empty_list_parameters_are_omitted(argument: str, targets: dict[str, Target]) -> None:
    text, sent, entry, echo = _sent(targets["styles"], "searchProducts", {"session": "s", argument: []})
    assert sent == 1, text
    assert entry["validation"]["outcome"] == "valid", entry["validation"]["errors"]
    assert argument not in echo["parameters"]["query"] and argument not in echo["parameters"]["header"], echo


@pytest.mark.parametrize("argument", ["X-Client", "page"])
def test_empty_object_parameters_are_omitted(argument: str, targets: dict[str, Target]) -> None:
    text, sent, entry, _ = _sent(targets["styles"], "searchProducts", {"session": "s", argument: {}})
    assert sent == 1, text
    assert entry["validation"]["outcome"] == "valid", entry["validation"]["errors"]
    assert argument.lower() not in entry["headers"] and f"{argument}=" not in entry["query"], entry


@pytest.mark.parametrize(("document", "tool", "arguments", "argument"), [
    ("marketplace", "listUsers", {"id": ""}, "id"),
    ("marketplace", "listOrdersByUser", {"userid": ""}, "userid"),
    ("styles", "searchProducts", {"session": "s", "return_to": ""}, "return_to"),
])
def test_an_empty_query_value_is_not_sent_without_allow_empty_value(
        document: str, tool: str, arguments: dict[str, Any], argument: str, targets: dict[str, Target]) -> None:
    text, sent, entry, _ = _sent(targets[document], tool, arguments)
    if sent == 0:
        assert text.startswith(f"Invalid arguments for tool {tool!r} at $.{argument}: "), text
    else:
        assert entry["validation"]["outcome"] == "valid", entry["validation"]["errors"]


# Header values are not percent-encoded, so ['a,b', 'c'] would arrive as ['a', 'b', 'c'] and
# {'name': 'a=b'} would be refused by openapi-core; a spaceDelimited item 'a b' is sent as a%20b, the
# same bytes as the delimiter; a pipeDelimited item 'a|b' is sent as a%7Cb, which is what most HTTP
# stacks turn the '|' delimiter into. OAS 3.1.1 leaves such collisions to the user: they are refused.
@pytest.mark.parametrize(("argument", "value"), [
    ("X-Feature-Flags", ["a,b", "c"]), ("X-Client", {"name": "a,b"}), ("X-Client", {"name": "a=b"}),
    ("X-Client", {"a,b": "web"}), ("sizes", ["extra large", "S"]), ("colors", ["blue|black", "red"])])
def test_an_item_containing_its_delimiter_is_not_sent_ambiguously(
        argument: str, value: Any, targets: dict[str, Target]) -> None:
    text, sent, entry, echo = _sent(targets["styles"], "searchProducts", {"session": "s", argument: value})
    if sent == 0:
        assert f"argument {argument!r}" in text, text
    else:
        assert entry["validation"]["outcome"] == "valid", entry["validation"]["errors"]
        assert {**echo["parameters"]["header"], **echo["parameters"]["query"]}[argument] == value


def test_a_multipart_body_with_only_optional_fields_is_described_by_the_input_schema(
        targets: dict[str, Target]) -> None:
    target = targets["multipart"]
    plan = target.catalog.plan("updateDocument")
    assert plan is not None
    arguments = {"folderId": "f", "documentId": 1}
    text, is_error, sent = target.call("updateDocument", arguments)
    schema_accepts = jsonschema.Draft202012Validator(plan.input_schema).is_valid(arguments)
    assert not schema_accepts or (sent == 1 and not is_error), text
    jsonschema.Draft202012Validator.check_schema(plan.input_schema)
    for name in ("title", "file"):
        text, is_error, sent = target.call("updateDocument", {**arguments, name: ""})
        assert (sent, is_error) == (1, False), text
