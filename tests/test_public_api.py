from __future__ import annotations

import subprocess
import sys

import pytest

import converter


def test_all_names_resolve_and_are_listed() -> None:
    for name in converter.__all__:
        assert getattr(converter, name) is not None
        assert name in dir(converter)
    assert converter.load_spec.__module__ == "converter.spec.convert"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        converter.nope  # noqa: B018


def test_importing_the_package_stays_light() -> None:
    # `openapi-mcp` pauses the GC before the heavy imports (converter.entry): the package itself must not pull them.
    code = "import sys, converter, converter.entry; print(sorted(m for m in ('mcp', 'httpx', 'yaml', 'converter.spec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
