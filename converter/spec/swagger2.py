"""Convert a Swagger 2.0 document to OpenAPI 3.0.3, offline and in one pass.

Each 2.0 object becomes its OpenAPI 3.0 counterpart (the choices swagger2openapi also makes). The
input is never mutated: every node of the result is a fresh copy, made once while it is converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NoReturn
from urllib.parse import unquote

OPENAPI_VERSION: Final = "3.0.3"

_JSON: Final = "application/json"
_FORM: Final = "application/x-www-form-urlencoded"
_MULTIPART: Final = "multipart/form-data"
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch")
_IN_BODY: Final = ("body", "formData")  # OAS 2.0 parameters that are the request body in OAS 3.0
# OAS 2.0 parameter/header/items fields that move into the OAS 3.0 `schema`
_SCHEMA_KEYS: Final = frozenset({
    "type", "format", "items", "default", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "enum", "multipleOf",
    "x-nullable",
})
# OAS 2.0 top-level sections -> OAS 3.0 components (parameters apart: body ones -> requestBodies)
_REF_SECTIONS: Final = (
    ("/definitions/", "/components/schemas/"),
    ("/responses/", "/components/responses/"),
    ("/securityDefinitions/", "/components/securitySchemes/"),
)
# OAS 2.0 collectionFormat -> OAS 3.0 (style, explode) in query and formData
_QUERY_STYLES: Final = {
    "csv": ("form", False), "ssv": ("spaceDelimited", False), "pipes": ("pipeDelimited", False),
    "multi": ("form", True),
}
# OAS 3.0 allows only style simple in path and header, which is OAS 2.0 csv
_SIMPLE_STYLES: Final = {"csv": ("simple", False)}
# OAS 2.0 oauth2 flow -> OAS 3.0 flows key and the URLs that flow carries
_OAUTH2_FLOWS: Final = {
    "implicit": ("implicit", ("authorizationUrl",)), "password": ("password", ("tokenUrl",)),
    "application": ("clientCredentials", ("tokenUrl",)),
    "accessCode": ("authorizationCode", ("authorizationUrl", "tokenUrl")),
}

_Entries = dict[Any, tuple[Mapping[str, Any], Mapping[str, Any]]]


def convert_swagger2(doc: Mapping[str, Any], *, source: str = "<spec>") -> dict[str, Any]:
    """Return an OpenAPI 3.0.3 document equivalent to the Swagger 2.0 document `doc`.

    Args:
        doc: the parsed Swagger 2.0 document; it is not modified.
        source: where the document came from, carried by errors.

    Raises:
        SpecError: the document is not Swagger 2.0 or has a part with no OpenAPI 3.0 equivalent.
    """
    # str(): an unquoted YAML `swagger: 2.0` is read as the float 2.0
    if not isinstance(doc, Mapping) or str(doc.get("swagger")) != "2.0":
        got = doc.get("swagger") if isinstance(doc, Mapping) else type(doc).__name__
        message = f"#/swagger: expected a Swagger 2.0 document (swagger: '2.0'), got {got!r}"
        _fail(message, "#/swagger", source)
    return _Converter(doc, source).document()


# Marks a path item or operation that could not be converted; the loader reports and skips it.
ERROR_KEY = "x-openapi-mcp-error"


class _Converter:
    """One conversion: the source document, its global media types and its shared parts."""

    def __init__(self, doc: Mapping[str, Any], source: str) -> None:
        self.doc = doc
        self.source = source
        self.consumes = _media(doc.get("consumes")) or [_JSON]
        self.produces = _media(doc.get("produces")) or [_JSON]
        self.params = {
            name: self.mapping(param, f"#/parameters/{_escape(name)}")
            for name, param in self.mapping(doc.get("parameters"), "#/parameters").items()
        }
        self.responses = self.mapping(doc.get("responses"), "#/responses")

    def document(self) -> dict[str, Any]:
        """Convert the whole document; keys in OAS 3.0 order, extensions last."""
        doc = self.doc
        out: dict[str, Any] = {"openapi": OPENAPI_VERSION}
        out.update({key: _copy(doc[key]) for key in ("info", "externalDocs") if key in doc})
        if servers := self.servers(doc.get("schemes")):
            out["servers"] = servers
        out.update({key: _copy(doc[key]) for key in ("tags", "security") if key in doc})
        paths = self.mapping(doc.get("paths"), "#/paths").items()
        out["paths"] = {
            p: _copy(item) if str(p).startswith("x-") else self.guarded(self.path_item, item, f"#/paths/{_escape(p)}")
            for p, item in paths
        }
        if components := self.components():
            out["components"] = components
        out.update(_extensions(doc))
        return out

    def components(self) -> dict[str, Any]:
        """Build `components` from definitions, parameters, responses and securityDefinitions."""
        definitions = self.mapping(self.doc.get("definitions"), "#/definitions")
        schemes = self.mapping(self.doc.get("securityDefinitions"), "#/securityDefinitions")
        params = self.params
        sections = {
            "schemas": {name: self.schema(schema) for name, schema in definitions.items()},
            "responses": {
                name: self.response(r, self.produces, f"#/responses/{_escape(name)}")
                for name, r in self.responses.items()
            },
            # formData parameters have no component form: they are inlined into each form body
            "parameters": {n: self.parameter(p) for n, p in params.items() if p.get("in") not in _IN_BODY},
            "requestBodies": {
                n: self.request_body(p, self.consumes) for n, p in params.items() if p.get("in") == "body"
            },
            "securitySchemes": {
                name: self.security_scheme(scheme, f"#/securityDefinitions/{_escape(name)}")
                for name, scheme in schemes.items()
            },
        }
        return {key: value for key, value in sections.items() if value}

    def servers(self, schemes: Any) -> list[dict[str, Any]]:
        """Build `servers` from host, basePath and schemes; https when schemes are absent."""
        host = self.doc.get("host")
        base = str(self.doc.get("basePath") or "").rstrip("/")
        if not host:  # OAS 2.0: no host means the document's own host, so a relative URL
            return [{"url": base}] if base else []
        return [{"url": f"{scheme}://{host}{base}"} for scheme in (schemes or ["https"])]

    def path_item(self, item: Any, pointer: str) -> dict[str, Any]:
        """Convert a Path Item; its body and formData parameters move into each operation."""
        item = self.mapping(item, pointer)
        shared = self.entries(item.get("parameters"), f"{pointer}/parameters")
        out: dict[str, Any] = {}
        for key, value in item.items():
            if key == "parameters":
                if params := [self.parameter(r) for r, p in shared.values() if p.get("in") not in _IN_BODY]:
                    out[key] = params
            elif key in _METHODS:
                out[key] = self.guarded(self.operation, value, shared, f"{pointer}/{key}")
            else:
                out[key] = self.ref(value) if key == "$ref" else _copy(value)
        return out

    def guarded(self, convert: Any, *args: Any) -> dict[str, Any]:
        """Convert one path item or operation; a part that cannot be converted is marked, not fatal.

        The loader skips a marked part with a warning naming it (real specs have broken corners;
        users still want the rest).
        """
        from converter.errors import SpecError

        try:
            return convert(*args)  # type: ignore[no-any-return]
        except SpecError as exc:
            return {ERROR_KEY: str(exc)}

    def operation(self, op: Any, shared: _Entries, pointer: str) -> dict[str, Any]:
        """Convert an Operation: body and formData parameters become its requestBody."""
        op = self.mapping(op, pointer)
        consumes = _media(op.get("consumes")) or self.consumes
        produces = _media(op.get("produces")) or self.produces
        own = self.entries(op.get("parameters"), f"{pointer}/parameters")
        merged = {**shared, **own}  # OAS 2.0: an operation parameter overrides the path's (same name and in)
        bodies = [(raw, p) for raw, p in merged.values() if p.get("in") == "body"]
        forms = [p for _, p in merged.values() if p.get("in") == "formData"]
        if len(bodies) > 1 or (bodies and forms):
            _fail(f"{pointer}: has {len(bodies)} body and {len(forms)} formData parameters; OAS 2.0 allows "
                  "at most one body parameter and no formData next to it", pointer, self.source)
        body = None
        if bodies:  # the shared requestBody fits unless this operation consumes other media types
            raw, param = bodies[0]
            is_shared = consumes == self.consumes and _local_name(raw, "/parameters/") in self.params
            body = {"$ref": self.ref(raw["$ref"])} if is_shared else self.request_body(param, consumes)
        elif forms:
            body = self.form_body(forms, consumes)
        out: dict[str, Any] = {}
        for key, value in op.items():
            if key == "responses" and body is not None:
                out["requestBody"] = body  # OAS 3.0 order: parameters, requestBody, responses
            if key == "parameters":
                if params := [self.parameter(raw) for raw, p in own.values() if p.get("in") not in _IN_BODY]:
                    out[key] = params
            elif key == "responses":
                out[key] = {
                    str(code): _copy(r) if str(code).startswith("x-")
                    else self.response(r, produces, f"{pointer}/responses/{code}")
                    for code, r in self.mapping(value, f"{pointer}/responses").items()
                }
            elif key == "schemes":  # OAS 2.0 operation schemes -> OAS 3.0 operation servers
                if value != self.doc.get("schemes") and (servers := self.servers(value)):
                    out["servers"] = servers
            elif key not in ("consumes", "produces"):
                out[key] = _copy(value)
        if body is not None and "requestBody" not in out:
            out["requestBody"] = body
        return out

    def entries(self, params: Any, pointer: str) -> _Entries:
        """Key parameters by (in, name) as (written, resolved); a ref resolved elsewhere keys by itself."""
        if params is None:
            return {}
        if not isinstance(params, list):
            _fail(f"{pointer}: expected a list, got {type(params).__name__}", pointer, self.source)
        out: _Entries = {}
        for index, raw in enumerate(params):
            raw = self.mapping(raw, f"{pointer}/{index}")
            name = _local_name(raw, "/parameters/")
            param = self.params.get(name, raw)
            if "$ref" in param:  # e.g. another file's parameter: stays a reference
                out[param["$ref"]] = (raw, param)
                continue
            if not isinstance(param.get("name"), str) or "in" not in param:
                where = f"#/parameters/{_escape(name)}" if name in self.params else f"{pointer}/{index}"
                _fail(f"{where}: a parameter needs a string name and an in", where, self.source)
            out[(param["in"], param["name"])] = (raw, param)
        return out

    def parameter(self, param: Mapping[str, Any]) -> dict[str, Any]:
        """Convert a non-body Parameter (or a Header): type and constraints move into `schema`."""
        if "$ref" in param:
            return {"$ref": self.ref(param["$ref"])}
        out = {k: _copy(v) for k, v in param.items() if k not in _SCHEMA_KEYS and k != "collectionFormat"}
        out["schema"] = self.schema({k: v for k, v in param.items() if k in _SCHEMA_KEYS})
        out.update(_style(param))
        return out

    def request_body(self, param: Mapping[str, Any], consumes: list[str]) -> dict[str, Any]:
        """Convert a body Parameter to a Request Body with one media type per `consumes` entry."""
        out: dict[str, Any] = {"description": param["description"]} if "description" in param else {}
        out["content"] = {mt: {"schema": self.schema(param.get("schema", {}))} for mt in consumes}
        if "required" in param:
            out["required"] = param["required"]
        if "name" in param:  # no OAS 3.0 field for it; kept the way code generators read it
            out["x-codegen-request-body-name"] = param["name"]
        out.update(_extensions(param))
        return out

    def form_body(self, params: list[Mapping[str, Any]], consumes: list[str]) -> dict[str, Any]:
        """Merge formData Parameters into one Request Body whose schema is an object."""
        properties: dict[str, Any] = {}
        encoding: dict[str, Any] = {}
        for param in params:
            prop = self.schema({k: v for k, v in param.items() if k in _SCHEMA_KEYS})
            properties[param["name"]] = prop
            prop.update({k: _copy(v) for k, v in _extensions(param).items() if k not in _SCHEMA_KEYS})
            if "description" in param:
                prop["description"] = param["description"]
            if style := _style(param):
                encoding[param["name"]] = style
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required := [p["name"] for p in params if p.get("required")]:
            schema["required"] = required
        # OAS 2.0 type file needs multipart; otherwise the form types the operation consumes
        has_file = any(p.get("type") == "file" for p in params)
        media = [_MULTIPART] if has_file else [mt for mt in consumes if mt in (_FORM, _MULTIPART)] or [_FORM]
        content: dict[str, Any] = {}
        for mt in media:
            content[mt] = {"schema": _copy(schema) if content else schema}
            if mt == _FORM and encoding:  # OAS 3.0 encoding style applies to urlencoded bodies only
                content[mt]["encoding"] = encoding
        return {"content": content, "required": True} if required else {"content": content}

    def response(self, response: Any, produces: list[str], pointer: str) -> dict[str, Any]:
        """Convert a Response: schema and examples go into `content`, headers get a schema."""
        response = self.mapping(response, pointer)
        if "$ref" in response:  # a shared response is inlined if the operation produces other types
            name = _local_name(response, "/responses/")
            shared = self.responses.get(name) if produces != self.produces else None
            if not isinstance(shared, Mapping) or "$ref" in shared:
                return {"$ref": self.ref(response["$ref"])}
            response = shared
        out: dict[str, Any] = {"description": _copy(response.get("description", ""))}
        schema = response.get("schema")
        content = {mt: {"schema": self.schema(schema)} for mt in produces} if schema is not None else {}
        examples = response.get("examples")
        for mt, example in examples.items() if isinstance(examples, Mapping) else ():
            # OAS 2.0 examples keyed by MIME type -> OAS 3.0 media type example
            if mt not in content:
                content[mt] = {"schema": self.schema(schema)} if schema is not None else {}
            content[mt]["example"] = _copy(example)
        if content:
            out["content"] = content
        if isinstance(headers := response.get("headers"), Mapping):
            out["headers"] = {name: self.parameter(header) for name, header in headers.items()}
        out.update(_extensions(response))
        return out

    def security_scheme(self, scheme: Any, pointer: str) -> dict[str, Any]:
        """Convert a Security Scheme: basic -> http basic, an oauth2 flow -> OAS 3.0 flows."""
        scheme = self.mapping(scheme, pointer)
        kind = scheme.get("type")
        out: dict[str, Any]
        if kind == "basic":
            out = {"type": "http", "scheme": "basic"}
        elif kind == "apiKey":
            out = {"type": "apiKey", **{k: scheme[k] for k in ("name", "in") if k in scheme}}
        elif kind == "oauth2" and scheme.get("flow") in _OAUTH2_FLOWS:
            flow_name, urls = _OAUTH2_FLOWS[scheme["flow"]]
            flow = {url: scheme[url] for url in urls if url in scheme}
            flow["scopes"] = _copy(scheme.get("scopes") or {})
            out = {"type": "oauth2", "flows": {flow_name: flow}}
        else:
            what = f"oauth2 flow {scheme.get('flow')!r}" if kind == "oauth2" else f"type {kind!r}"
            _fail(f"{pointer}: unknown {what}; OAS 2.0 allows basic, apiKey and oauth2 with flow implicit, "
                  "password, application or accessCode", pointer, self.source)
        out.update({k: _copy(v) for k, v in scheme.items() if k == "description" or k.startswith("x-")})
        return out

    def schema(self, node: Any) -> Any:
        """Copy a Schema Object, rewriting $refs and the keywords OAS 3.0 spells differently."""
        if not isinstance(node, Mapping):
            return _copy(node)  # e.g. additionalProperties: true
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref":
                out[key] = self.ref(value)
            elif key == "properties" and isinstance(value, Mapping):
                out[key] = {name: self.schema(prop) for name, prop in value.items()}
            elif key == "items" and isinstance(value, list):  # tuple items: OAS 3.0's closest form is anyOf
                tuple_items = [self.schema(v) for v in value]
                out[key] = tuple_items[0] if len(tuple_items) == 1 else {"anyOf": tuple_items}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self.schema(value)
            elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                out[key] = [self.schema(v) for v in value]
            elif key == "x-nullable":  # OAS 2.0 vendor x-nullable -> OAS 3.0 nullable
                out["nullable"] = bool(value)
            elif key == "discriminator" and isinstance(value, str):  # OAS 3.0 discriminator is an object
                out[key] = {"propertyName": value}
            elif key == "collectionFormat":  # in a parameter's nested items: no OAS 3.0 equivalent
                out["x-collection-format"] = value
            else:
                out[key] = _copy(value)
        if out.get("type") == "file":  # OAS 2.0 type file -> OAS 3.0 binary string
            out["type"], out["format"] = "string", "binary"
        if "$ref" in out and out.pop("nullable", False):
            # OAS 3.0 ignores the siblings of a $ref, and `nullable` needs a `type` beside it (3.0.3):
            # the way 3.0.3 lets a reference be null is an alternative that is only null.
            out["anyOf"] = [{"$ref": out.pop("$ref")}, {"type": "string", "nullable": True, "enum": [None]}]
        return out

    def ref(self, ref: Any) -> Any:
        """Rewrite a $ref's fragment to its OAS 3.0 components location; the file part is kept."""
        if not isinstance(ref, str):
            return ref
        file, hash_, fragment = ref.partition("#")
        for old, new in _REF_SECTIONS:
            if fragment.startswith(old):
                return f"{file}{hash_}{new}{fragment[len(old):]}"
        if fragment.startswith("/parameters/"):
            name = _local_name({"$ref": ref}, "/parameters/")
            is_body = name in self.params and self.params[name].get("in") == "body"
            section = "requestBodies" if is_body else "parameters"
            return f"{file}#/components/{section}/{fragment[len('/parameters/'):]}"
        return ref

    def mapping(self, value: Any, pointer: str) -> Mapping[str, Any]:
        """Return `value` as a mapping ({} when absent), or raise SpecError naming where it is."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            _fail(f"{pointer}: expected an object, got {type(value).__name__}", pointer, self.source)
        return value


def _style(param: Mapping[str, Any]) -> dict[str, Any]:
    """Map an array's collectionFormat to OAS 3.0 style and explode; {} for non-arrays."""
    if param.get("type") != "array":
        return {}
    fmt = param.get("collectionFormat", "csv")  # OAS 2.0: csv is the default collectionFormat
    known = _QUERY_STYLES if param.get("in") in ("query", "formData") else _SIMPLE_STYLES
    style, explode = known.get(fmt, known["csv"])
    out: dict[str, Any] = {"style": style, "explode": explode}
    if fmt not in known:  # e.g. tsv: no OAS 3.0 equivalent, so the csv style plus the 2.0 value
        out["x-collection-format"] = fmt
    return out


def _local_name(node: Mapping[str, Any], section: str) -> str:
    """Return X for a local `#<section>X` $ref (unescaped), else "" (which names nothing)."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#" + section):
        return ""
    token = ref[len(section) + 1:]
    return "" if "/" in token else unquote(token).replace("~1", "/").replace("~0", "~")


def _media(value: Any) -> list[str]:
    """Return a consumes/produces list as strings ([] when absent)."""
    return [str(v) for v in value] if isinstance(value, list) else []


def _extensions(node: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a node's x-* extensions."""
    return {k: _copy(v) for k, v in node.items() if isinstance(k, str) and k.startswith("x-")}


def _escape(token: Any) -> str:
    """Escape a JSON Pointer token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def _copy(value: Any) -> Any:
    """Copy JSON-like data; a plain recursion is several times faster than copy.deepcopy."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _fail(message: str, pointer: str, source: str) -> NoReturn:
    """Raise SpecError, imported here so that this module needs converter.errors only on failure."""
    from converter.errors import SpecError

    raise SpecError(message, pointer=pointer, source=source)
