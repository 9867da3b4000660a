"""openapi-mcp: serve OpenAPI operations as MCP tools, guarded like an API gateway."""

from __future__ import annotations

from converter.errors import ArgumentError, ConfigError, ConverterError, SpecError, UpstreamError
from converter.models import Operation, Parameter, Problem, RequestBody, Response, Spec
from converter.spec import load_spec, spec_from_document

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ConfigError",
    "ConverterError",
    "Operation",
    "Parameter",
    "Problem",
    "RequestBody",
    "Response",
    "Spec",
    "SpecError",
    "UpstreamError",
    "__version__",
    "load_spec",
    "spec_from_document",
]
