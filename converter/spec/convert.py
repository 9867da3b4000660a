"""Convert an API description (Swagger 2.0, OpenAPI 3.0.x or 3.1.x) into `Operation`s.

`load_spec` reads a file or URL; `spec_from_document` takes an already parsed document (used for
inline tool definitions, which are turned into a synthetic OpenAPI document first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converter.errors import SpecError
from converter.models import Operation, Problem, Spec
from converter.spec.load import load_document, read_text
from converter.spec.loops import looping_defs, reached_defs
from converter.spec.operations import OperationBuilder, resolve_servers
from converter.spec.resolve import Resolver
from converter.spec.schema import SchemaConverter


def load_spec(source: str) -> Spec:
    """Read, parse and convert the document at `source` (a path or an http(s) URL).

    Raises:
        SpecError: the document cannot be read, is not OpenAPI/Swagger, or its version is unsupported.
            Operations that cannot be converted do not raise: they are listed in `Spec.problems`.
    """
    doc, uri = load_document(source)
    return spec_from_document(doc, uri, source=source)


def spec_from_document(doc: Any, uri: str, *, source: str, read: Any = read_text) -> Spec:
    """Convert a parsed document whose absolute URI is `uri`."""
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: is not an OpenAPI document (the top level is not an object)", source=source)
    version, doc = _normalise_version(doc, source)
    resolver = Resolver(doc, uri, read=read, prepare=_prepare_external)
    schemas = SchemaConverter(resolver, is_31=version.startswith("3.1"))
    builder = OperationBuilder(doc, resolver, schemas)
    try:
        operations = builder.build_all()
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}", pointer=exc.pointer, source=source) from exc
    operations, loop_problems = _without_looping(operations, schemas.defs)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
    schemes = components.get("securitySchemes")
    return Spec(
        title=str(info.get("title") or "API"),
        version=str(info.get("version") or ""),
        source=source,
        operations=tuple(operations),
        input_defs=schemas.defs["in"],
        output_defs=schemas.defs["out"],
        servers=resolve_servers(doc.get("servers"), uri),
        problems=(*builder.problems, *schemas.problems, *loop_problems),
        security_schemes=schemes if isinstance(schemes, dict) else {},
        openapi_version=version,
    )


def _normalise_version(doc: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    if "openapi" in doc:
        version = str(doc["openapi"])
        if not version.startswith(("3.0", "3.1", "3.2")):
            raise SpecError(
                f"{source}: OpenAPI version {version!r} is not supported; use 2.0, 3.0.x or 3.1.x", source=source
            )
        return version, doc
    if "swagger" in doc:
        if str(doc["swagger"]) != "2.0":
            raise SpecError(f"{source}: Swagger version {doc['swagger']!r} is not supported; use 2.0", source=source)
        from converter.spec.swagger2 import convert_swagger2

        return "2.0", convert_swagger2(doc, source=source)
    raise SpecError(
        f"{source}: is not an OpenAPI document (no 'openapi' or 'swagger' version field)", source=source
    )


def _prepare_external(doc: Any, uri: str) -> Any:
    """Referenced Swagger 2.0 files get the same conversion as the main document."""
    if isinstance(doc, Mapping) and str(doc.get("swagger")) == "2.0":
        from converter.spec.swagger2 import convert_swagger2

        return convert_swagger2(doc, source=uri)
    return doc


def _without_looping(operations: list[Operation], defs: Mapping[Any, Mapping[str, Any]]
                     ) -> tuple[list[Operation], list[Problem]]:
    """Skip the operations whose schemas reach a definition with no base case (converter.spec.loops)."""
    looping = {mode: looping_defs(defs[mode]) for mode in ("in", "out")}
    if not looping["in"] and not looping["out"]:
        return operations, []
    kept: list[Operation] = []
    problems: list[Problem] = []
    for op in operations:
        inputs = [p.schema for p in op.parameters] + ([op.request_body.schema] if op.request_body else [])
        outputs = [op.response.schema] if op.response is not None and op.response.schema is not None else []
        bad = sorted(looping["in"] & reached_defs(inputs, defs["in"])
                     | looping["out"] & reached_defs(outputs, defs["out"]))
        if bad:
            problems.append(Problem(op.pointer, f"$ref loop through schema {bad[0]!r}: it applies to the same value "
                                    "again through allOf/anyOf/oneOf/not, so no value can be checked; skipped",
                                    fatal=True))
        else:
            kept.append(op)
    return kept, problems
