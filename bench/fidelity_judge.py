"""The upstream of the request-fidelity judge: it validates every request it receives.

`Judge` is an ASGI app served on 127.0.0.1 (bench/fidelity_worker.py runs it under uvicorn in a
thread). Before each tool call the worker tells it which operation of the ORIGINAL document the
call is meant for and with which arguments (`expect`); every request that then arrives is judged:

1. **matched**: the method is the operation's, and the raw request target fits the operation's
   path key: literal characters as written (or percent-encoded), each `{variable}` one encoded
   value without `/`, `?` or `#`. A path key may carry a query string (`/forecast?city={city}`,
   invalid OpenAPI but common): its pairs must then be in the query, once each. A `#...` suffix
   (AWS's `/#X-Amz-Target=...` disambiguation) is never sent, so it is dropped; a key with a
   `{variable}` after `#` cannot be called at all.
2. **accepted**: openapi-core (mock_api.validation, with its documented QUIRK workarounds)
   validates the request against that very operation (`RequestValidator.validate_as`:
   parameters, styles, body, media type; security requirements aside), and no query key is
   left that the operation does not declare.
3. **values**: each scalar argument placed in the path, the query or a header arrives as given
   (decoded once: a double-encoded `%2F` or a `+` read as a space is caught here, where a
   string-typed schema would let it pass).

The answer is always 200 `{}`: the judge looks at requests, not at what a converter does with the
response. Security requirements are not checked (the converters are not given credentials).
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from starlette.datastructures import Headers
from starlette.requests import Request

from converter.spec.pattern import portable_pattern
from mock_api.validation import RequestValidator

_VAR: Final = re.compile(r"{([^{}]+)}")
# RFC 3986 pchar minus pct-encoded, plus "/": what a path may carry unencoded
_PCHAR: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/")
_ENCODED_SEGMENT: Final = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+?"  # lazy: `{id}{ext}`
_CUT: Final = 300


def _cut(text: str, size: int = _CUT) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _literal(text: str) -> str:
    """A regex for literal path text: each character as is (when a path may carry it) or encoded."""
    out = []
    for char in text:
        encoded = "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        pattern = "".join(f"%(?i:{e[1:]})" for e in re.findall(r"%..", encoded))
        out.append(f"(?:{re.escape(char)}|{pattern})" if char in _PCHAR else pattern)
    return "".join(out)


@dataclass(frozen=True)
class Template:
    """A path key, compiled for matching raw request targets."""

    key: str
    path: re.Pattern[str]
    path_vars: tuple[str, ...]
    query: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...]  # name, decoded value regex, its vars
    unsendable: str | None = None

    @classmethod
    def of(cls, key: str) -> Template:
        path_key, _, fragment = key.partition("#")
        unsendable = None
        if _VAR.search(fragment):
            unsendable = f"the path key {key!r} has a parameter after '#' (a URL fragment is never sent)"
        path_part, _, query_part = path_key.partition("?")
        pattern, names, pos = [], [], 0
        for match in _VAR.finditer(path_part):
            pattern.append(_literal(path_part[pos:match.start()]))
            pattern.append(f"({_ENCODED_SEGMENT})")
            names.append(match.group(1))
            pos = match.end()
        pattern.append(_literal(path_part[pos:]))
        query = []
        for pair in filter(None, query_part.split("&")):
            name, _, value = pair.partition("=")
            value_pattern, value_vars, pos = [], [], 0
            for match in _VAR.finditer(value):
                value_pattern.append(re.escape(unquote(value[pos:match.start()])))
                value_pattern.append("(.*?)")
                value_vars.append(match.group(1))
                pos = match.end()
            value_pattern.append(re.escape(unquote(value[pos:])))
            query.append((unquote(name), re.compile("".join(value_pattern), re.DOTALL), tuple(value_vars)))
        return cls(key, re.compile("".join(pattern)), tuple(names), tuple(query), unsendable)

    def match(self, raw_path: str, query: list[tuple[str, str]], expected: Mapping[str, str] = {}
              ) -> tuple[dict[str, str] | None, str | None]:
        """(decoded template values, None) when the target fits, else (None, why not).

        Adjacent variables (`/profiles/{id}{ext}`) can split a path more than one way: the split
        that gives each variable its `expected` value (when the target allows it) is taken.
        """
        if self.unsendable:
            return None, self.unsendable
        found = self._guided(raw_path, expected) or self.path.fullmatch(raw_path)
        if found is None:
            return None, f"the path {_cut(raw_path, 160)!r} does not fit the path key {_cut(self.key, 160)!r}"
        values = {name: unquote(raw) for name, raw in zip(self.path_vars, found.groups(), strict=False)}
        for name, value_pattern, names in self.query:
            sent = [v for k, v in query if k == name]
            if len(sent) != 1:
                return None, f"the path key's query pair {name!r} is sent {len(sent)} times"
            fit = value_pattern.fullmatch(sent[0])
            if fit is None:
                return None, f"the path key's query pair {name!r} has the value {_cut(sent[0], 80)!r}"
            values.update(zip(names, fit.groups(), strict=False))
        return values, None

    def _guided(self, raw_path: str, expected: Mapping[str, str]) -> re.Match[str] | None:
        if len(self.path_vars) < 2 or not any(name in expected for name in self.path_vars):
            return None
        path_part = self.key.partition("#")[0].partition("?")[0]
        pattern, pos = [], 0
        for match in _VAR.finditer(path_part):
            pattern.append(_literal(path_part[pos:match.start()]))
            name = match.group(1)
            pattern.append(f"({_literal(expected[name])})" if expected.get(name) else f"({_ENCODED_SEGMENT})")
            pos = match.end()
        pattern.append(_literal(path_part[pos:]))
        return re.fullmatch("".join(pattern), raw_path)

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(name for name, _, _ in self.query)


@dataclass(frozen=True)
class Wire:
    """Where a tool argument goes: location (path/query/header/cookie/body...) and wire name."""

    location: str
    name: str
    style: str = ""
    explode: bool = False


@dataclass
class Expectation:
    """What the next call is meant to send."""

    method: str
    key: str
    arguments: Mapping[str, Any]
    wires: Mapping[str, Wire]


@dataclass
class Received:
    """One request as it arrived, with the judge's verdict."""

    method: str
    target: str
    content_type: str | None
    body: str
    matched: bool = False
    accepted: bool = False
    errors: list[str] = field(default_factory=list)
    notes: frozenset[str] = frozenset()  # what a second look found (see Judge._second_look)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "content_type": self.content_type, "body": self.body,
                "matched": self.matched, "accepted": self.accepted, "errors": self.errors}


def scalar_text(value: Any) -> str | None:
    """How a scalar argument reads once decoded, or None for values not compared."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def _same_number(sent: str, value: Any) -> bool:
    try:
        return float(sent) == float(value)
    except ValueError:
        return False


_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES: Final = ("items", "not", "additionalProperties", "contains", "propertyNames", "if", "then", "else",
                         "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_SCHEMA_MAPS: Final = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


def _strip_schema(schema: Any, seen: set[int], document: dict[str, Any]) -> None:
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    schema.pop("default", None)
    properties = schema.get("properties")
    if isinstance(schema.get("required"), list) and isinstance(properties, dict):
        # OAS 3.0.3: a readOnly property in `required` is required in responses only; openapi-core
        # still demands it in a request when the readOnly sits behind a $ref
        read_only = {name for name, prop in properties.items()
                     if isinstance(_local(document, prop), dict) and _local(document, prop).get("readOnly") is True}
        schema["required"] = [name for name in schema["required"] if name not in read_only]
    for key in _SCHEMA_LISTS:
        for sub in schema.get(key) if isinstance(schema.get(key), list) else ():
            _strip_schema(sub, seen, document)
    for key in _SCHEMA_VALUES:
        _strip_schema(schema.get(key), seen, document)
    for key in _SCHEMA_MAPS:
        for sub in schema.get(key).values() if isinstance(schema.get(key), dict) else ():
            _strip_schema(sub, seen, document)


def without_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the document whose schemas have no `default` and no readOnly names in `required`.

    openapi-core fills in the default of every absent parameter and property and then validates
    it: `default: null` on a non-nullable string, a string default on an array, a default under
    `readOnly` ("Tried to write read-only property") all fail requests that never sent the value.
    What a request leaves out is the server's to fill in; a judge of requests has no use for it.
    """
    doc = copy.deepcopy(document)
    seen: set[int] = set()
    components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
    for schema in (components.get("schemas") or {}).values() if isinstance(components.get("schemas"), dict) else ():
        _strip_schema(schema, seen, doc)

    def parameters(group: Any) -> None:
        for param in group.values() if isinstance(group, dict) else group if isinstance(group, list) else ():
            if isinstance(param, dict):
                _strip_schema(param.get("schema"), seen, doc)
                for media in (param.get("content") or {}).values() if isinstance(param.get("content"), dict) else ():
                    _strip_schema(media.get("schema") if isinstance(media, dict) else None, seen, doc)

    def bodies(group: Any) -> None:
        for body in group.values() if isinstance(group, dict) else ():
            content = body.get("content") if isinstance(body, dict) else None
            for media in content.values() if isinstance(content, dict) else ():
                _strip_schema(media.get("schema") if isinstance(media, dict) else None, seen, doc)

    parameters(components.get("parameters"))
    bodies(components.get("requestBodies"))
    for item in (doc.get("paths") or {}).values() if isinstance(doc.get("paths"), dict) else ():
        if not isinstance(item, dict):
            continue
        parameters(item.get("parameters"))
        for method, op in item.items():
            if isinstance(op, dict) and method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                parameters(op.get("parameters"))
                bodies({"body": op.get("requestBody")})
    return doc


def _mentions(node: Any, key: str) -> bool:
    """Does `key` appear as a key anywhere in `node`?"""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                return True
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return False


def _without(node: Any, key: str) -> Any:
    """A copy of `node` with `key` removed from every mapping."""
    if isinstance(node, dict):
        return {k: _without(v, key) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_without(v, key) for v in node]
    return node


def _local(document: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s."""
    for _ in range(32):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return node
        node = document
        for token in ref[2:].split("/"):
            token = unquote(token).replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]  # DigitalOcean points into `allOf/0`
            else:
                node = node.get(token) if isinstance(node, dict) else None
    return node


class Judge:
    """The ASGI upstream; `load` a document, `expect` a call, read `received` afterwards."""

    def __init__(self) -> None:
        self._validator: RequestValidator | None = None
        self._document: dict[str, Any] = {}
        self._facts: dict[tuple[str, str], frozenset[str]] = {}
        self._templates: dict[str, Template] = {}
        self._lock = threading.Lock()
        self.expected: Expectation | None = None
        self.received: list[Received] = []

    def load(self, document: dict[str, Any], *, source: str, base_uri: str) -> None:
        """Judge requests against `document` from now on (a copy without schema defaults)."""
        self._document = document
        self._source, self._base_uri = source, base_uri
        self._plain: RequestValidator | None = None
        self._has_discriminator = _mentions(document, "discriminator")
        document = without_defaults(document)
        self._validator = RequestValidator(document, source=source, base_uri=base_uri, strict=False,
                                           check_document=False)
        self._templates = {}
        self._facts: dict[tuple[str, str], frozenset[str]] = {}
        self._sibling_facts: list[str] | None = None

    def _ref_siblings(self) -> list[str]:
        """Properties whose schema is a `$ref` with a `type` beside it that the target does not have (OAS 3.0:
        ignored; openapi-core applies it)."""
        if self._sibling_facts is not None:
            return self._sibling_facts
        found: set[str] = set()
        if str(self._document.get("openapi", "")).startswith("3.0"):
            stack: list[Any] = [self._document.get("components"), self._document.get("paths")]
            while stack:
                node = stack.pop()
                if isinstance(node, list):
                    stack.extend(node)
                    continue
                if not isinstance(node, dict):
                    continue
                properties = node.get("properties")
                for name, prop in properties.items() if isinstance(properties, dict) else ():
                    if isinstance(prop, dict) and "$ref" in prop and "type" in prop:
                        target = _local(self._document, {"$ref": prop["$ref"]})
                        if isinstance(target, dict) and target.get("type") != prop["type"]:
                            found.add(f"ref-sibling:{name}")
                stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        self._sibling_facts = sorted(found)
        return self._sibling_facts

    def facts(self, method: str, key: str) -> frozenset[str]:
        """What the judge knows about an operation that bears on its limits (bench/fidelity_limits.py)."""
        found = self._facts.get((method, key))
        if found is None:
            found = self._facts[method, key] = frozenset(self._find_facts(method.lower(), key) + self._ref_siblings())
        return found

    def _find_facts(self, method: str, key: str) -> list[str]:
        item = _local(self._document, (self._document.get("paths") or {}).get(key))
        operation = _local(self._document, item.get(method)) if isinstance(item, dict) else None
        if not isinstance(operation, dict):
            return []
        facts = []
        params = [_local(self._document, p) for p in [*(item.get("parameters") or []),
                                                      *(operation.get("parameters") or [])]]
        query = {str(p.get("name")): p for p in params if isinstance(p, dict) and p.get("in") == "query"}
        owner = {name: name for name in query}
        exploded = []
        for name, param in query.items():  # an exploded object's properties are query keys of their own
            schema = _local(self._document, param.get("schema"))
            if param.get("style", "form") != "form" or param.get("explode", True) is not True \
                    or not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
                continue
            exploded.append(name)
            for prop in schema["properties"]:
                other = owner.setdefault(prop, name)
                if other != name:
                    facts += [f"clash:{name}", f"clash:{other}"]
        if facts:  # openapi-core reads every exploded object from the whole query: a clash confuses them all
            facts += [f"clash:{name}" for name in exploded]
        for param in params:
            if not isinstance(param, dict):
                continue
            schema = _local(self._document, param.get("schema"))
            if param.get("style") == "deepObject" and not (isinstance(schema, dict) and schema.get("type") == "object"):
                facts.append(f"deepObject-not-object:{param.get('name')}")
            elif param.get("style") == "deepObject" and param.get("explode") is not True:
                facts.append(f"deepObject-not-object:{param.get('name')}")  # explode false: soundcloud.com's `bpm`
            if self._nests(schema):
                facts.append(f"nested:{param.get('name')}")
            items = _local(self._document, schema.get("items")) if isinstance(schema, dict) else None
            if any(isinstance(node, dict) and isinstance(node.get("pattern"), str)
                   and portable_pattern(node["pattern"])[0] is None for node in (schema, items)):
                facts.append(f"unportable-pattern:{param.get('name')}")
            if isinstance(schema, dict) and "type" not in schema and ("anyOf" in schema or "oneOf" in schema):
                facts.append(f"composite:{param.get('name')}")
                if param.get("in") == "query" and param.get("style", "form") == "form" and param.get("explode", True):
                    for alternative in [*(schema.get("anyOf") or []), *(schema.get("oneOf") or [])]:
                        alternative = _local(self._document, alternative)
                        if isinstance(alternative, dict) and isinstance(alternative.get("properties"), dict):
                            facts += [f"composite-key:{key}" for key in alternative["properties"]]
            elif isinstance(schema, dict) and "type" not in schema and "$ref" not in schema:
                facts.append(f"untyped:{param.get('name')}")
            alternatives = [schema, *[_local(self._document, s) for key in ("anyOf", "oneOf")
                                      for s in (schema.get(key) or [] if isinstance(schema, dict) else [])]]
            if any(isinstance(a, dict) and a.get("readOnly") is True for a in alternatives):
                facts.append(f"readonly:{param.get('name')}")
        body = _local(self._document, operation.get("requestBody"))
        content = body.get("content") if isinstance(body, dict) else None
        for media_type, media in content.items() if isinstance(content, dict) else ():
            if media_type.split(";")[0].strip().lower() not in ("application/x-www-form-urlencoded",
                                                                "multipart/form-data"):
                continue
            schema = _local(self._document, media.get("schema") if isinstance(media, dict) else None)
            encoding = media.get("encoding") if isinstance(media, dict) and isinstance(media.get("encoding"), dict) else {}
            properties = schema.get("properties") if isinstance(schema, dict) else None
            for field_name, rule in encoding.items():
                field_schema = _local(self._document, (properties or {}).get(field_name))
                if isinstance(rule, dict) and rule.get("style") == "deepObject" and not (
                        isinstance(field_schema, dict) and field_schema.get("type") == "object"):
                    facts.append("deepObject-not-object-body")  # Stripe's form `expand`: a list
            if media_type.startswith("application/x-www-form-urlencoded") and isinstance(properties, dict):
                facts += [f"nested-field:{name}" for name, sub in properties.items() if self._nests(_local(self._document, sub))]
            if isinstance(schema, dict) and isinstance(schema.get("required"), list):
                declared = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
                facts += [f"undeclared:{name}" for name in schema["required"] if name not in declared]
                if media_type.startswith("application/x-www-form-urlencoded"):
                    for name in schema["required"]:  # style form, explode true: the object's own pairs only
                        field = _local(self._document, declared.get(name))
                        rule = encoding.get(name) if isinstance(encoding.get(name), dict) else {}
                        if isinstance(field, dict) and field.get("type") == "object" \
                                and not field.get("properties") and rule.get("explode", True) is not False \
                                and rule.get("style", "form") == "form":
                            facts.append(f"free-object-field:{name}")
        return facts

    def _nests(self, schema: Any) -> bool:
        """A list of objects or lists, or an object holding objects or lists: no OpenAPI style serializes it."""
        def kind(node: Any) -> str | None:
            node = _local(self._document, node)
            for _ in range(8):  # AWS wraps items as allOf [$ref, {xml: ...}]
                if isinstance(node, dict) and "type" not in node and isinstance(node.get("allOf"), list) \
                        and node["allOf"]:
                    node = _local(self._document, node["allOf"][0])
            declared = node.get("type") if isinstance(node, dict) else None
            if declared is None and isinstance(node, dict) and isinstance(node.get("properties"), dict):
                return "object"
            return declared if isinstance(declared, str) else None

        if not isinstance(schema, dict):
            return False
        if kind(schema) == "array":
            return kind(schema.get("items")) in ("object", "array")
        if kind(schema) == "object":
            properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            return any(kind(prop) in ("object", "array") for prop in properties.values())
        return False

    def expect(self, expectation: Expectation | None) -> None:
        with self._lock:
            self.expected = expectation
            self.received = []

    def _second_look(self, request: Request, body: bytes, key: str, values: dict[str, str], template: Template,
                     errors: list[str]) -> frozenset[str]:
        """When the body fails and the document has a `discriminator`, judge it again without any: openapi-core
        picks the schema by the discriminator, where JSON Schema's oneOf/anyOf accepts the body as it is."""
        if not self._has_discriminator or not any(e.startswith("Request body validation error") for e in errors):
            return frozenset()
        if self._plain is None:
            self._plain = RequestValidator(without_defaults(_without(self._document, "discriminator")),
                                           source=self._source, base_uri=self._base_uri, strict=False,
                                           check_document=False)
        again = self._plain.validate_as(request, body, key, values, template.query_names)
        return frozenset({"discriminator-only"}) if again.status == "valid" else frozenset()

    def template(self, key: str) -> Template:
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = Template.of(key)
        return found

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            self._judge(Request(scope), body)
        finally:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})

    def _judge(self, request: Request, body: bytes) -> None:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0]
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        received = Received(
            method=request.method, target=_cut(raw_path + ("?" + query_string if query_string else "")),
            content_type=request.headers.get("content-type"), body=_cut(body.decode("utf-8", "replace"), 200),
        )
        with self._lock:
            expected = self.expected
            self.received.append(received)
        if expected is None or self._validator is None:
            received.errors.append("a request arrived while no call was expected")
            return
        if request.method.upper() != expected.method.upper():
            received.errors.append(f"method {request.method} instead of {expected.method}")
            return
        query = parse_qsl(query_string, keep_blank_values=True)
        template = self.template(expected.key)
        expected_values = {
            wire.name: text for argument, wire in expected.wires.items()
            if wire.location == "path" and wire.style != "content"
            and (text := scalar_text(expected.arguments.get(argument))) is not None
        }
        values, why = template.match(raw_path, query, expected_values)
        if values is None:
            received.errors.append(f"not matched: {why}")
            return
        received.matched = True
        outcome = self._validator.validate_as(request, body, expected.key, values, template.query_names)
        if outcome.status != "valid":
            received.errors.extend(outcome.errors or [f"openapi-core: {outcome.status}"])
            received.notes = self._second_look(request, body, expected.key, values, template, outcome.errors)
        received.errors.extend(_value_errors(expected, values, query, request.headers))
        received.accepted = not received.errors


def _value_errors(expected: Expectation, values: Mapping[str, str], query: list[tuple[str, str]],
                  headers: Headers) -> list[str]:
    """Scalar path/query/header arguments must arrive exactly as given (decoded once)."""
    errors = []
    for argument, value in expected.arguments.items():
        wire = expected.wires.get(argument)
        want = scalar_text(value) if not isinstance(value, float) else None
        if wire is None or (want is None and not isinstance(value, float)):
            continue
        if wire.location == "path" and wire.style in ("", "simple"):
            sent: list[str] = [values[wire.name]] if wire.name in values else []
        elif wire.location == "query" and wire.style in ("", "form"):
            sent = [v for k, v in query if k == wire.name]
        elif wire.location == "header" and wire.style != "content":
            sent = [headers[wire.name]] if wire.name in headers else []
        else:
            continue
        if not sent and want == "" and wire.location == "query":
            continue  # "" for an optional query parameter means "not given" (OAS: allowEmptyValue is false unless set)
        if not sent:
            errors.append(f"value: argument {argument!r} ({wire.location} {wire.name!r}) is not sent")
        elif len(sent) > 1:
            errors.append(f"value: argument {argument!r} ({wire.location} {wire.name!r}) is sent {len(sent)} times")
        elif isinstance(value, float):
            if not _same_number(sent[0], value):
                errors.append(f"value: argument {argument!r} ({wire.location} {wire.name!r}) arrives as "
                              f"{_cut(sent[0], 80)!r}, not {value!r}")
        elif sent[0] != want:
            errors.append(f"value: argument {argument!r} ({wire.location} {wire.name!r}) arrives as "
                          f"{_cut(sent[0], 80)!r}, not {_cut(str(want), 80)!r}")
    return errors


__all__ = ["Expectation", "Judge", "Received", "Template", "Wire", "scalar_text"]
