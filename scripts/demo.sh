#!/usr/bin/env bash
# `make demo` or `bash scripts/demo.sh [--port 8000] [--mock-port 3000]`, from any directory:
# sets up .venv like scripts/test.sh (no Node.js needed), then runs `openapi-mcp demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

stamp=.venv/.openapi-mcp-pyproject.stamp
if [[ ! -x .venv/bin/python ]]; then
    printf 'demo.sh: creating .venv with %s\n' "$(command -v python3)" >&2
    python3 -m venv .venv
fi
if ! cmp -s pyproject.toml "$stamp"; then
    printf 'demo.sh: installing the package into .venv (pyproject.toml changed)\n' >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    cp pyproject.toml "$stamp"
fi
.venv/bin/python -m compileall -q converter mock_api >/dev/null  # bytecode, even under PYTHONDONTWRITEBYTECODE

exec .venv/bin/openapi-mcp demo "$@"
