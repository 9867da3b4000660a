#!/usr/bin/env bash
# `make demo` or `bash scripts/demo.sh [--port 8000] [--mock-port 3000]`, from any directory:
# sets up .venv like scripts/test.sh (the locked versions; no Node.js needed), then runs
# `openapi-mcp demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv
compile_sources

exec "$VENV/bin/openapi-mcp" demo "$@"
