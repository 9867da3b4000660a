"""What a fresh interpreter imports: the package stays light, and a warm start (compiled-tools cache)
skips the converter and the libraries nothing uses yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import openapi

pytestmark = pytest.mark.integration


def _write(path: Path, paths: dict[str, Any], **extra: Any) -> Path:
    path.write_text(json.dumps(openapi(paths, **extra)))
    return path


def _get(op_id: str, **extra: Any) -> dict[str, Any]:
    return {"get": {"operationId": op_id, "responses": {"200": {"description": "ok"}}, **extra}}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_importing_the_package_stays_light() -> None:
    # `openapi-mcp` pauses the GC before the heavy imports (converter.entry): the package itself must not pull them.
    code = "import sys, converter, converter.entry; print(sorted(m for m in ('mcp', 'httpx', 'yaml', 'converter.spec') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_warm_start_skips_the_converter_and_unused_libraries(tmp_path: Path, cache_dir: Path) -> None:
    """What a server started from the cache imports: not the converter, not the HTTP client
    (first call), not python-jsonschema (first bad argument), not YAML or JOSE (not configured)."""
    import subprocess
    import sys

    spec = _write(tmp_path / "api.json", {"/a": _get("getA")})
    code = f"""
import sys
from converter.config import load_settings
from converter.server.app import create_app
settings = load_settings(None, spec={str(spec)!r}, upstream_url="http://127.0.0.1:9")
create_app(settings)
print(sorted(m for m in ("converter.spec.convert", "aiohttp", "httpx", "jsonschema", "yaml", "joserfc", "regex")
             if m in sys.modules))
"""
    env = {**os.environ, "OPENAPI_MCP_CACHE_DIR": str(cache_dir)}
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "converter.spec.convert" in cold
    assert warm.strip() == "[]"
