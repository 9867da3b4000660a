#!/usr/bin/env bash
# The test command: `make test` or `bash scripts/test.sh [pytest args...]`, from any directory.
#
# Sets up what the tests need on a fresh clone (python3, node and npm are the only
# prerequisites), then runs pytest from the repository root, so test paths given as arguments
# are relative to the root:
#   - .venv: created with `python3 -m venv` when missing; `pip install -e '.[test]'` runs again
#     only when pyproject.toml changed since the last successful install (stamp in .venv);
#   - tests/node/node_modules (the Inspector CLI, mcp-remote, oidc-provider, server-everything,
#     playwright-core):
#     `npm ci` (or `npm install` without a lock file) when missing or when package.json or
#     package-lock.json changed since the last successful install (stamp in node_modules).
#   - Debian's `chromium` (for the browser test of the traffic page): `apt-get install chromium`
#     when /usr/bin/chromium is missing and we are root; skipped when it is there.
#   - Debian's `redis-server` (shared rate-limit counters and state across replicas): likewise,
#     `apt-get install redis-server` when /usr/bin/redis-server is missing and we are root. The
#     tests start their own servers on free loopback ports; the package's service is not used.
# Exits with pytest's code; "no tests collected" (pytest's 5) counts as a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'test.sh: %s\n' "$*" >&2; }

setup_venv() {
    local stamp=.venv/.openapi-mcp-pyproject.stamp
    if [[ ! -x .venv/bin/python ]]; then
        say "creating .venv with $(command -v python3)"
        python3 -m venv .venv
    fi
    if ! cmp -s pyproject.toml "$stamp"; then
        say "installing the package and its test dependencies into .venv (pyproject.toml changed)"
        .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
        cp pyproject.toml "$stamp"
    fi
    # Bytecode for our modules, written even where PYTHONDONTWRITEBYTECODE is set (only stale files).
    .venv/bin/python -m compileall -q converter mock_api >/dev/null
}

setup_node() {
    local dir=tests/node stamp=tests/node/node_modules/.openapi-mcp-lock.stamp
    command -v npm >/dev/null || { say "npm is required (tests/node holds the Node.js MCP peers)"; exit 2; }
    if [[ -d $dir/node_modules ]] && cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | cmp -s - "$stamp"; then
        return
    fi
    if [[ -f $dir/package-lock.json ]]; then
        say "npm ci in $dir"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
        say "npm install in $dir (no package-lock.json yet)"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
    cat "$dir/package.json" "$dir/package-lock.json" > "$stamp"
}

setup_chromium() {
    # tests/integration/test_dashboard_browser.py drives Debian's Chromium; it fails (never skips) without it.
    [[ -x /usr/bin/chromium ]] && return
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will fail"
        return
    fi
    local log started=$SECONDS
    log="$(mktemp)"
    say "installing Debian's chromium for the browser test (apt-get)"
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >"$log" 2>&1; then
        say "chromium installed in $((SECONDS - started)) s"
    else
        say "apt-get install chromium failed; the browser test will fail. Last lines:"
        tail -n 20 "$log" >&2
    fi
    rm -f "$log"
}

setup_redis() {
    # tests/integration/services.py starts redis-server itself; it fails (never skips) without it.
    [[ -x /usr/bin/redis-server ]] && return
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "redis-server is missing and cannot be installed here (needs root and apt-get): the Redis tests will fail"
        return
    fi
    local log started=$SECONDS policy=/usr/sbin/policy-rc.d added_policy=""
    log="$(mktemp)"
    say "installing Debian's redis-server for the rate-limit and shared-state tests (apt-get)"
    # The package would start its own service on port 6379; the tests need none. A policy-rc.d
    # that answers 101 ("action forbidden") stops that, and is removed again if we added it.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
        >"$log" 2>&1; then
        say "redis-server installed in $((SECONDS - started)) s"
    else
        say "apt-get install redis-server failed; the Redis tests will fail. Last lines:"
        tail -n 20 "$log" >&2
    fi
    [[ -n $added_policy ]] && rm -f "$policy"
    rm -f "$log"
}

setup_venv
setup_node
setup_chromium
setup_redis

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    say "pytest collected no tests; that counts as a failure"
fi
exit "$status"
