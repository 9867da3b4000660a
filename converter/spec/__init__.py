"""Load an API description (Swagger 2.0, OpenAPI 3.0.x or 3.1.x) into `Operation`s.

`load_spec` reads a file or URL; `spec_from_document` takes an already parsed document. Both
live in `converter.spec.convert` and are imported on first use, so that `converter.spec.load`
(reading files) does not pull in the converter (a server started from the compiled-tools
cache never runs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["load_spec", "spec_from_document"]

if TYPE_CHECKING:
    from converter.spec.convert import load_spec, spec_from_document


def __getattr__(name: str) -> Any:
    if name in __all__:
        from converter.spec import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'converter.spec' has no attribute {name!r}")
