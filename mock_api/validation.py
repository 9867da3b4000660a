"""Shared openapi-core glue: load a document once, then validate and unmarshal each request.

`RequestValidator` is built once per app from an OpenAPI 3.x document and answers, for each
incoming request, which operation it targets, whether it conforms, and the unmarshalled
parameters and body. openapi-core 0.23 needs some help for that; each workaround is marked
`QUIRK` where it is made:

1. Servers: absolute `servers` URLs only match requests sent to that very host and port, so
   a mock on a random port matches nothing (`ServerNotFound`). The validation copy of the
   document keeps only the path part of each server URL and adds `/`.
2. Security requirements are checked as part of unmarshalling and fail the whole request
   when credentials are absent; a mock must not demand them (the converter never forwards
   the client's token), so the validation copy drops `security`.
3. `spaceDelimited` splits on the literal text `%20`, but query values arrive decoded.
4. `multipart/form-data`: the stock parser (stdlib `email`) loses file names, text parts
   of integer/number/boolean properties are never cast (`'3' is not of type 'integer'`) and
   an absent array property turns into `[]`. We parse multipart ourselves and give such
   properties an explicit `encoding` (form style), which openapi-core does cast.
5. Path parameters are matched against the decoded path, so an encoded `/` (`%2F`) in a
   value splits it; we match the raw path and decode the values ourselves.
6. Query parameters the operation does not declare are silently ignored, which hides a
   wrongly serialized parameter (e.g. `filter=...` instead of `filter[minPrice]=...`);
   we report them as errors. Exploded form objects (`?lat=1&lon=2` for `point`) are looked
   up under their own name, and label/matrix path values under `.name` / `;name`: we add
   those keys. A type list (`[integer, "null"]`) in a parameter schema crashes it; the
   validation copy keeps the one non-null type.
7. OpenAPI 3.1+: binary values (uploaded files, octet-stream bodies) are `bytes`, which the
   JSON Schema 2020-12 type checker refuses as `string` (3.0's validator makes an exception
   for `format: binary`), and untyped schemas unmarshal them to None. We validate 3.1+
   documents with a type checker that counts bytes as strings.
8. Content-Type parameters are split on every `;` and `=`, so a quoted value containing
   either (legal, e.g. a multipart boundary with `=`) raises a bare ValueError; we pass on only
   the parameters it can parse. Anything else openapi-core raises becomes a validation error.
9. Deprecation warnings (`allowEmptyValue`, `deprecated: true`) are emitted on every request;
   we record them in the outcome instead of letting them reach the caller.
10. A `format` it does not know (`format: string`, `format: uri`, ...) fails the whole request
   with `Formatter not found` (openapi-core issue 515), where OpenAPI says an unknown format
   is to be ignored; every format the document uses that openapi-core knows neither to check
   nor to unmarshal gets an unmarshaller that keeps the value as it is.
11. `pattern`s are compiled by Python's `re`, which stops at ECMA-262 syntax real documents use
   (`\\p{L}`, `[\\w-.]`) with a crash for the whole request: patterns go through the `regex`
   module instead (ECMA-like), and one that neither compiles is left unchecked.
12. Header parameters named Accept, Content-Type or Authorization are validated (and, when
   required, demanded), where OAS 3.x §4.8.12.1 says their definitions SHALL be ignored; the
   validation copy leaves them out.
13. Only `application/json` and `application/vnd.api+json` bodies are parsed as JSON; any other
   JSON media type (`application/merge-patch+json`, `application/json-patch+json`, vendor
   `+json` types) reaches the schema as bytes, which no object schema accepts. Every JSON media
   type the document names is given the JSON deserializer.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from functools import lru_cache
from typing import Any, Final, Literal
from urllib.parse import quote, unquote

import regex
from jsonschema import TypeChecker
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from jsonschema_path import SchemaPath
from openapi_core import Config, OpenAPI
from openapi_core.casting.schemas import oas30_types_caster, oas31_types_caster
from openapi_core.casting.schemas.factories import SchemaCastersFactory
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.exceptions import DeserializeError
from openapi_core.deserializing.media_types.exceptions import MediaTypeDeserializeError
from openapi_core.deserializing.styles import StyleDeserializersFactory, style_deserializers
from openapi_core.schema.parameters import get_style_and_explode
from openapi_core.templating.paths.exceptions import OperationNotFound, PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.unmarshalling.request.datatypes import RequestUnmarshalResult
from openapi_core.unmarshalling.schemas import (
    oas30_format_unmarshallers,
    oas30_types_unmarshaller,
    oas31_format_unmarshallers,
    oas31_types_unmarshaller,
)
from openapi_core.unmarshalling.schemas.factories import SchemaUnmarshallersFactory
from openapi_core.validation.request.exceptions import MissingRequestBodyError, RequestBodyValidationError
from openapi_core.validation.schemas.factories import SchemaValidatorsFactory
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, OAS31Validator, OAS32Validator
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

from mock_api.document import DocumentError, JsonObject, validation_copy
from mock_api.multipart import multipart_loads

Status = Literal["valid", "invalid", "no-path", "no-method"]

_MAX_MESSAGE: Final = 240


@dataclass(frozen=True)
class Operation:
    """The operation a request was matched to."""

    method: str
    path: str
    operation_id: str | None

    def to_json(self) -> JsonObject:
        """Return the operation as the JSON the mock reports."""
        return {"method": self.method, "path": self.path, "operationId": self.operation_id}


@dataclass
class ValidationOutcome:
    """What validating one request found; `parameters` and `body` are openapi-core's values."""

    status: Status
    operation: Operation | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    body: Any = None


def _space_delimited_loads(explode: bool, name: str, schema_type: str, location: Mapping[str, Any]) -> Any:
    """Split a spaceDelimited value on spaces: query values arrive decoded (QUIRK 3)."""
    if explode or schema_type not in ("array", "object"):
        raise ValueError("spaceDelimited applies only to arrays and objects with explode false")
    items = location[name].split(" ")
    if schema_type == "array":
        return items
    return dict(zip(items[0::2], items[1::2], strict=False))


_KEPT_TAIL: Final = 80  # the verdict of a long message is at its end: "{...} is not of type 'string'"


def _short(text: str) -> str:
    """Cut a message to a readable length (values such as uploaded files can be huge): the middle
    goes, since a validator quotes the value first and says what is wrong with it last."""
    if len(text) <= _MAX_MESSAGE:
        return text
    return text[: _MAX_MESSAGE - _KEPT_TAIL - 3] + "..." + text[-_KEPT_TAIL:]


def describe_error(exc: BaseException) -> str:
    """Turn an openapi-core error into one readable message, schema errors with their JSON path."""
    cause = exc.__cause__
    details: list[str] = []
    for error in getattr(cause, "schema_errors", None) or ():
        where = getattr(error, "json_path", "$")
        details.append(_short(error.message) + ("" if where == "$" else f" (at {where})"))
    if not details and isinstance(cause, MediaTypeDeserializeError):
        details.append(f"the body cannot be decoded as {cause.mimetype}")
    elif not details and type(cause) is DeserializeError and len(cause.args) == 2:
        details.append(f"the value does not follow the {cause.args[0]!r} style")  # args: style, name
    elif not details and cause is not None:
        details.append(_short(str(cause)))
    # the body errors' own str() repeats the whole (possibly huge) body value
    is_body_error = isinstance(exc, RequestBodyValidationError) and not isinstance(
        exc, MissingRequestBodyError
    )
    head = "Request body validation error" if is_body_error else _short(str(exc))
    return head + (": " + "; ".join(details) if details else "")


def _is_string_or_bytes(checker: TypeChecker, instance: Any) -> bool:
    return isinstance(instance, (str, bytes))


def _formats(node: Any, found: set[str], depth: int = 0) -> set[str]:
    """Every `format` string used anywhere in the document."""
    if depth > 200:
        return found
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            found.add(node["format"])
        for value in node.values():
            if isinstance(value, (dict, list)):
                _formats(value, found, depth + 1)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                _formats(value, found, depth + 1)
    return found


_KNOWN_FORMATS: Final = frozenset(
    [*OAS30ReadValidator.FORMAT_CHECKER.checkers, *OAS31Validator.FORMAT_CHECKER.checkers,
     *oas30_format_unmarshallers, *oas31_format_unmarshallers]
)


def _as_is(value: Any) -> Any:
    return value


def _json_loads(value: bytes, **parameters: str) -> Any:
    return json.loads(value)


def _json_media_types(document: JsonObject) -> set[str]:
    """The JSON media types (QUIRK 13) of every request body of the document, without parameters."""
    found: set[str] = set()
    bodies = [*((document.get("components") or {}).get("requestBodies") or {}).values()]
    for item in (document.get("paths") or {}).values():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = item.get(method) if isinstance(item, dict) else None
            if isinstance(operation, dict):
                bodies.append(operation.get("requestBody"))
    for body in bodies:
        content = body.get("content") if isinstance(body, dict) else None
        for media_type in content if isinstance(content, dict) else ():
            essence = str(media_type).split(";", 1)[0].strip().lower()
            if essence.endswith("+json") or essence.endswith("/json"):
                found.add(essence)
    return found


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """`pattern` in ECMA-262 style through the `regex` module (QUIRK 11)."""
    if not validator.is_type(instance, "string"):
        return
    try:
        compiled = _compiled_pattern(pattern)
    except regex.error:
        return  # neither dialect compiles it: the keyword is left unchecked rather than crash
    if not compiled.search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=4096)
def _compiled_pattern(pattern: str) -> Any:
    return regex.compile(pattern)


def _config(version: str, document: JsonObject) -> Config:
    """Return the openapi-core configuration for this OpenAPI version (QUIRKs 3, 4, 7, 10, 11)."""
    if version.startswith("3.0"):
        # the stock 3.0 write-side classes, with the `pattern` keyword replaced
        validator_cls = extend(OAS30WriteValidator, {"pattern": _ecma_pattern})  # type: ignore[no-untyped-call]
        format_checker = OAS30WriteValidator.FORMAT_CHECKER
        types_caster, types_unmarshaller, format_unmarshallers = (
            oas30_types_caster, oas30_types_unmarshaller, oas30_format_unmarshallers)
    else:
        base = OAS31Validator if version.startswith("3.1") else OAS32Validator
        # types-jsonschema leaves `extend` untyped
        validator_cls = extend(base, {"pattern": _ecma_pattern},  # type: ignore[no-untyped-call]
                               type_checker=base.TYPE_CHECKER.redefine("string", _is_string_or_bytes))
        format_checker = OAS30ReadValidator.FORMAT_CHECKER  # as openapi-core's own 3.1 factory does
        types_caster, types_unmarshaller, format_unmarshallers = (
            oas31_types_caster, oas31_types_unmarshaller, oas31_format_unmarshallers)
    # plain factories: the dialect-aware defaults would look the stock classes up again
    validators = SchemaValidatorsFactory(validator_cls, format_checker=format_checker)
    casters = SchemaCastersFactory(validators, types_caster)
    schema_factories: JsonObject = {
        "schema_validators_factory": validators,
        "schema_casters_factory": casters,
        "schema_unmarshallers_factory": SchemaUnmarshallersFactory(
            validators, types_unmarshaller, format_unmarshallers=format_unmarshallers
        ),
    }
    return Config(
        style_deserializers_factory=StyleDeserializersFactory(
            casters, style_deserializers={**style_deserializers, "spaceDelimited": _space_delimited_loads}
        ),
        extra_media_type_deserializers={
            **{name: _json_loads for name in _json_media_types(document)},
            "multipart/form-data": multipart_loads,
        },
        extra_format_unmarshallers={name: _as_is for name in _formats(document, set()) - _KNOWN_FORMATS},
        **schema_factories,
    )


def _parsable_content_type(header: str) -> str:
    """Rebuild a Content-Type with only the parameters openapi-core can split (QUIRK 8)."""
    message = Message()
    message["content-type"] = header
    kept = [
        f"{name.lower()}={value}"
        for name, value in (message.get_params() or [])[1:]
        if isinstance(value, str) and value and not set(value) & set(';="')
    ]
    return "; ".join([header.split(";", 1)[0].strip(), *kept])


@dataclass(frozen=True)
class _ParameterRules:
    """What `validate` needs to know about one operation's parameters (QUIRK 6), built once."""

    query_names: frozenset[str]
    deep_prefixes: tuple[str, ...]
    is_open_query: bool  # an exploded form object takes any key, so nothing is unexpected
    form_objects: tuple[tuple[str, frozenset[str] | None], ...]  # name, properties (None: open)
    path_aliases: tuple[tuple[str, str], ...]  # name, "." (label) or ";" (matrix)

    @classmethod
    def of(cls, operation: SchemaPath, path_item: SchemaPath, *,
           credentials: frozenset[str] = frozenset()) -> _ParameterRules:
        """Read the rules from the operation's and path item's parameters ($refs resolved);
        `credentials` are query names the security schemes declare (API keys), expected too."""
        names: set[str] = set(credentials)
        prefixes: list[str] = []
        objects: list[tuple[str, frozenset[str] | None]] = []
        aliases: list[tuple[str, str]] = []
        params = [*path_item.get("parameters", []), *operation.get("parameters", [])]
        for param in params:
            name, where = (param / "name").read_str(), (param / "in").read_str()
            style, explode = get_style_and_explode(param)
            schema = param.get("schema")
            schema_type = (schema / "type").read_value() if schema is not None and "type" in schema else None
            if where == "path" and style in ("label", "matrix"):
                aliases.append((name, "." if style == "label" else ";"))
            if where != "query":
                continue
            if style == "deepObject":
                prefixes.append(name + "[")
            elif style == "form" and explode and schema_type == "object" and schema is not None:
                closed = (
                    "additionalProperties" in schema
                    and (schema / "additionalProperties").read_value() is False
                )
                properties = frozenset(schema.get("properties", {}).keys()) if closed else None
                objects.append((name, properties))
                names.update(properties or ())
            else:
                names.add(name)
        is_open = any(properties is None for _, properties in objects)
        return cls(frozenset(names), tuple(prefixes), is_open, tuple(objects), tuple(aliases))

    def unexpected(self, query: ImmutableMultiDict[str, str]) -> list[str]:
        """Report query keys that no declared parameter accounts for."""
        if self.is_open_query:
            return []
        declared = ", ".join(sorted([*self.query_names, *(p + "...]" for p in self.deep_prefixes)]))
        return [
            f"Unexpected query parameter: {key} (declared: {declared or 'none'})"
            for key in dict.fromkeys(query.keys())
            if key not in self.query_names and not key.startswith(self.deep_prefixes)
        ]

    def query_for_openapi_core(self, query: ImmutableMultiDict[str, str]) -> ImmutableMultiDict[str, str]:
        """Add each exploded form object under its own name, as openapi-core looks it up."""
        if not self.form_objects:
            return query
        items = list(query.multi_items())
        for name, properties in self.form_objects:
            pairs = [
                f"{key}={value}"
                for key, value in query.multi_items()
                if (key in properties if properties is not None else key not in self.query_names)
                and not key.startswith(self.deep_prefixes)
            ]
            if pairs and name not in query:
                items.append((name, "&".join(pairs)))
        return ImmutableMultiDict(items)

    def path_for_openapi_core(self, values: dict[str, str]) -> dict[str, str]:
        """Add label/matrix values under the `.name` / `;name` keys openapi-core reads."""
        for name, prefix in self.path_aliases:
            if name in values:
                values[prefix + name] = values[prefix + name + "*"] = values[name]
        return values


@dataclass
class _OpenAPIRequest:
    """An openapi-core `Request` built from a Starlette request (no `name`: not a webhook)."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str


class RequestValidator:
    """Validates requests against one OpenAPI 3.x document, loaded once."""

    def __init__(
        self, document: JsonObject, *, source: str = "<document>", base_uri: str = "", strict: bool = True,
        check_document: bool = True,
    ) -> None:
        """Check the document and prepare openapi-core.

        Args:
            document: the OpenAPI 3.x document, as loaded.
            source: where it came from, for messages.
            base_uri: the document's URI, against which `$ref`s to other files resolve.
            strict: refuse a document that openapi-spec-validator rejects; when False, such a
                document is used anyway (real-world documents often have duplicate operationIds
                and the like) and the problem is kept in `problems`.
            check_document: False skips openapi-spec-validator altogether (seconds on a large
                document; a judge that only validates requests does not need it).

        Raises:
            DocumentError: the document is not usable.
        """
        self.document = document
        self.source = source
        self.problems: list[str] = []
        self._doc = validation_copy(document)
        config = _config(str(document.get("openapi", "")), document)
        if not check_document:
            config.spec_validator_cls = None  # type: ignore[assignment]  # None: openapi-core skips the check
        try:
            self._openapi = OpenAPI.from_dict(self._doc, config=config, base_uri=base_uri)
        except Exception as exc:  # openapi-spec-validator raises many types; name the file
            problem = f"{source}: not a valid OpenAPI document: {_short(str(exc))}"
            if strict:
                raise DocumentError(problem) from exc
            self.problems.append(problem)
            config.spec_validator_cls = None  # type: ignore[assignment]  # None: openapi-core skips the check
            try:
                self._openapi = OpenAPI.from_dict(self._doc, config=config, base_uri=base_uri)
            except Exception as exc:
                raise DocumentError(problem) from exc
        self._finder = APICallPathFinder(self._openapi.spec, base_url=None)
        self._rules: dict[tuple[str, str], _ParameterRules] = {}
        # QUIRK 2 drops `security`, but an API key sent in the query is still declared (QUIRK 6).
        schemes = (document.get("components") or {}).get("securitySchemes") or {}
        self._query_keys = frozenset(
            str(s["name"]) for s in schemes.values()
            if isinstance(s, dict) and s.get("type") == "apiKey" and s.get("in") == "query" and s.get("name")
        )
        self._path_items: dict[str, SchemaPath] | None = None

    def __repr__(self) -> str:
        return f"RequestValidator(source={self.source!r})"

    def validate(self, request: Request, body: bytes) -> ValidationOutcome:
        """Match the request to an operation, then validate and unmarshal it."""
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?")[0] if raw_path else quote(request.url.path)
        method = request.method.lower()
        try:
            found = self._finder.find(method, "http://mock" + path)
        except OperationNotFound:
            return ValidationOutcome("no-method")
        except PathError:
            return ValidationOutcome("no-path")
        path_values = {name: unquote(value) for name, value in (found.path_result.variables or {}).items()}
        return self._check(request, body, path, method, found.path_result.pattern, found.operation, found.path,
                           path_values)

    def validate_as(
        self, request: Request, body: bytes, template: str, path_values: dict[str, str],
        extra_query_names: frozenset[str] = frozenset(),
    ) -> ValidationOutcome:
        """Validate the request as a call of the operation at `paths[template]` (its method).

        For a judge that knows which operation a request is meant for and has matched the
        path itself (`path_values`, decoded): openapi-core's own path finder is not asked, so
        path keys it cannot match (a query string or a fragment in the key) can be judged too.
        `extra_query_names` are query keys the path key itself carries (not unexpected).
        """
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?")[0] if raw_path else quote(request.url.path)
        method = request.method.lower()
        if self._path_items is None:  # `spec / key` reads a '#' in a key as a URI fragment
            self._path_items = dict((self._openapi.spec / "paths").str_items())
        path_item = self._path_items.get(template)
        if path_item is None:
            return ValidationOutcome("no-path")
        if method not in path_item:
            return ValidationOutcome("no-method")
        return self._check(request, body, path, method, template, path_item / method, path_item, path_values,
                           extra_query_names)

    def _check(
        self, request: Request, body: bytes, path: str, method: str, template: str, operation_path: SchemaPath,
        path_item: SchemaPath, path_values: dict[str, str], extra_query_names: frozenset[str] = frozenset(),
    ) -> ValidationOutcome:
        operation = Operation(request.method.upper(), template, (operation_path / "operationId").read_str(None))
        rules = self._rules.get((template, method))
        if rules is None:
            rules = self._rules[template, method] = _ParameterRules.of(operation_path, path_item,
                                                                       credentials=self._query_keys)
        openapi_request = _OpenAPIRequest(
            host_url="http://mock",
            path=path,
            method=method,
            parameters=RequestParameters(
                query=rules.query_for_openapi_core(request.query_params),
                header=request.headers,
                cookie=request.cookies,
                path=rules.path_for_openapi_core(path_values),  # QUIRK 5: openapi-core keeps these
            ),
            body=body,
            content_type=_parsable_content_type(
                request.headers.get("content-type", "application/octet-stream")
            ),
        )
        with warnings.catch_warnings(record=True) as caught:  # QUIRK 9
            warnings.simplefilter("always")
            try:
                # the finder's work is done (validate) or not wanted (validate_as)
                unmarshaller: Any = self._openapi.request_unmarshaller
                result = unmarshaller._unmarshal(openapi_request, operation_path, path_item)
                failures = [describe_error(error) for error in result.errors]
            except Exception as exc:  # noqa: BLE001 - QUIRK 8: an openapi-core bug must not become a 500
                result = RequestUnmarshalResult(errors=[])
                failures = [_short(f"openapi-core failed on this request: {type(exc).__name__}: {exc}")]
        query: ImmutableMultiDict[str, str] = request.query_params
        if extra_query_names:
            query = ImmutableMultiDict([(k, v) for k, v in query.multi_items() if k not in extra_query_names])
        errors = rules.unexpected(query) + failures
        return ValidationOutcome(
            status="invalid" if errors else "valid",
            operation=operation,
            errors=errors,
            warnings=[str(warning.message) for warning in caught],
            parameters={
                "path": dict(result.parameters.path),
                "query": dict(result.parameters.query),
                "header": dict(result.parameters.header),
                "cookie": dict(result.parameters.cookie),
            },
            body=result.body,
        )


__all__ = [
    "Operation",
    "RequestValidator",
    "ValidationOutcome",
    "describe_error",
]
