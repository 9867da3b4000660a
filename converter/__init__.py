"""openapi-mcp: serve OpenAPI operations as MCP tools, guarded like an API gateway.

The public names are imported on first use (PEP 562), so that `openapi-mcp` can pause the
garbage collector before the heavy imports start (see `converter.entry`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from converter.version import __version__

_WHERE = {
    "ArgumentError": "converter.errors",
    "ConfigError": "converter.errors",
    "ConverterError": "converter.errors",
    "SpecError": "converter.errors",
    "UpstreamError": "converter.errors",
    "Operation": "converter.models",
    "Parameter": "converter.models",
    "Problem": "converter.models",
    "RequestBody": "converter.models",
    "Response": "converter.models",
    "Spec": "converter.models",
    "load_spec": "converter.spec.convert",
    "spec_from_document": "converter.spec.convert",
}

__all__ = [  # noqa: RUF022 - the names of _WHERE, in its order, then the version
    "ArgumentError", "ConfigError", "ConverterError", "SpecError", "UpstreamError",
    "Operation", "Parameter", "Problem", "RequestBody", "Response", "Spec",
    "load_spec", "spec_from_document", "__version__",
]

if TYPE_CHECKING:
    from converter.errors import ArgumentError as ArgumentError
    from converter.errors import ConfigError as ConfigError
    from converter.errors import ConverterError as ConverterError
    from converter.errors import SpecError as SpecError
    from converter.errors import UpstreamError as UpstreamError
    from converter.models import Operation as Operation
    from converter.models import Parameter as Parameter
    from converter.models import Problem as Problem
    from converter.models import RequestBody as RequestBody
    from converter.models import Response as Response
    from converter.models import Spec as Spec
    from converter.spec import load_spec as load_spec
    from converter.spec import spec_from_document as spec_from_document


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'converter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
