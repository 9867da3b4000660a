"""Plain, frozen records for the intermediate form between parsing and building.

Loading turns a document into `Operation`s (one per HTTP operation, `$ref`s resolved, schemas
already converted to JSON Schema 2020-12 with references pointing at `#/$defs/<key>`).
Tool building and request building read only these records, never the raw document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, TypeAlias, TypeVar

JsonSchema: TypeAlias = dict[str, Any]
HttpMethod: TypeAlias = Literal["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"]
Location: TypeAlias = Literal["path", "query", "header", "cookie"]
SlotLocation: TypeAlias = Literal["path", "query", "header", "cookie", "body", "body_field"]

HTTP_METHODS: Final[tuple[str, ...]] = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Never taken from tool arguments (converter.tools.plan leaves such parameters
# out; converter.config refuses them as claim_to_header targets): the framing and
# hop-by-hop headers of RFC 9110 §7.6.1 / RFC 9112, and the negotiation this server owns because it
# decodes the answer (Accept-Encoding, see converter.bodies).
SERVER_OWNED_HEADERS: Final = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "upgrade", "expect", "proxy-authorization", "proxy-authenticate", "content-encoding",  # accept-encoding: request.py
    "http2-settings",
})


_T = TypeVar("_T")


def compact_pickle(cls: type[_T]) -> type[_T]:
    """Pickle a slots dataclass as (class, field values).

    Unpickling then runs the generated `__init__`, about 3x faster than the `__setstate__`
    dataclasses add to slots classes (it looks `fields()` up again for every object); a cached
    GitHub catalog holds ~12,000 of these (converter.tools.cache).
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def __reduce__(self: Any) -> tuple[Any, tuple[Any, ...]]:  # noqa: N807 - the pickle protocol's method
        return cls, tuple(getattr(self, name) for name in names)

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


@compact_pickle
@dataclass(frozen=True, slots=True)
class Parameter:
    """One OpenAPI parameter, with its serialization settings made explicit."""

    name: str
    location: Location
    schema: JsonSchema
    required: bool = False
    description: str | None = None
    style: str = "form"
    explode: bool = True
    allow_reserved: bool = False
    content_type: str | None = None  # set when the parameter uses `content` instead of `schema`


@compact_pickle
@dataclass(frozen=True, slots=True)
class RequestBody:
    """The request body of an operation, for the one media type we will send."""

    media_type: str
    schema: JsonSchema
    required: bool = False
    description: str | None = None
    # multipart/form: property name -> explicit contentType from the `encoding` object
    encoding: Mapping[str, str] = field(default_factory=dict)


@compact_pickle
@dataclass(frozen=True, slots=True)
class Response:
    """The success response an operation documents (first 2xx, else `default`)."""

    status: str
    media_type: str | None
    schema: JsonSchema | None
    description: str | None = None


@compact_pickle
@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP operation of the API, ready to be turned into a tool."""

    method: str  # upper case
    path: str
    pointer: str  # JSON Pointer of the operation in its document, for messages
    operation_id: str | None = None
    summary: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    request_body: RequestBody | None = None
    response: Response | None = None
    # Alternatives of {scheme name: scopes}; None = no `security` given anywhere.
    security: tuple[Mapping[str, tuple[str, ...]], ...] | None = None
    deprecated: bool = False
    mcp_name: str | None = None  # x-mcp-name
    base_url: str | None = None  # operation- or path-level `servers`, resolved

    def __repr__(self) -> str:
        return f"Operation(method={self.method!r}, path={self.path!r}, operation_id={self.operation_id!r})"


@compact_pickle
@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the document that could not be used, with where and why."""

    pointer: str
    message: str
    fatal: bool = False  # True: the operation at `pointer` was skipped
    # True: a routine fix (an operationId made into a valid tool name): counted, not listed one by one
    routine: bool = False

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}"


@compact_pickle
@dataclass(frozen=True, slots=True)
class Spec:
    """A loaded API description: its operations plus the schemas they reference."""

    title: str
    version: str
    source: str
    operations: tuple[Operation, ...]
    # Converted schemas referenced as #/$defs/<key>: request-side (readOnly properties removed)
    # and response-side (writeOnly properties removed) variants live in separate namespaces.
    input_defs: Mapping[str, JsonSchema]
    output_defs: Mapping[str, JsonSchema]
    servers: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    security_schemes: Mapping[str, Any] = field(default_factory=dict)
    openapi_version: str = "3.0.3"


@compact_pickle
@dataclass(frozen=True, slots=True)
class Slot:
    """Where one tool argument goes in the HTTP request."""

    argument: str  # the property name in inputSchema
    location: SlotLocation
    name: str  # the wire name: parameter name or body property name
