#!/usr/bin/env bash
# `make lock`: resolve requirements/dev.lock again from pyproject.toml (the package, its test, otel
# and lint extras) and requirements/build.in, pinned with hashes for every platform, with uv.
# Run it when you change a dependency in pyproject.toml, or on purpose to take new releases
# (`make test-latest` first shows what they would break). Commit the lock change on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UV_VERSION=0.13.9   # the resolver is pinned too, so the same inputs give the same lock
tools="${XDG_CACHE_HOME:-$HOME/.cache}/openapi-mcp/lock-tools-$UV_VERSION"
if [[ ! -x $tools/bin/uv ]]; then
    printf 'lock.sh: installing uv %s into %s\n' "$UV_VERSION" "$tools" >&2
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# --universal: one lock for Linux, macOS and Windows; --python-version: the oldest Python we support.
"$tools/bin/uv" pip compile pyproject.toml requirements/build.in \
    --extra test --extra otel --extra lint \
    --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "make lock" \
    --quiet --output-file requirements/dev.lock "$@"
printf 'lock.sh: wrote requirements/dev.lock (%s packages)\n' "$(grep -c '^[a-z0-9].*==' requirements/dev.lock)" >&2
