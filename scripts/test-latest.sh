#!/usr/bin/env bash
# `make test-latest`: the test command against the newest releases that pyproject.toml allows,
# in a throwaway venv (the lock and .venv are left alone), to see drift on purpose. When it
# passes, `make lock` takes those releases; when it fails, the lock keeps you on what works.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
OPENAPI_MCP_VENV="$tmp/venv" OPENAPI_MCP_LATEST=1 bash scripts/test.sh "$@"
