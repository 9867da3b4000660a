#!/usr/bin/env bash
# The test command: `make test` or `bash scripts/test.sh [pytest args...]`, from any directory.
#
# Sets up what the tests need on a fresh clone (python3, node and npm are the only
# prerequisites), then runs pytest from the repository root, so test paths given as arguments
# are relative to the root:
#   - .venv: exactly the versions in requirements/dev.lock (hashes checked) plus the project,
#     made again from scratch when the lock or pyproject.toml changed (scripts/venv.sh);
#     OPENAPI_MCP_LATEST=1 installs the newest releases instead (`make test-latest`);
#   - tests/node/node_modules (the Inspector CLI, mcp-remote, oidc-provider, server-everything,
#     playwright-core):
#     `npm ci` (exactly package-lock.json) when missing or when package.json or package-lock.json
#     changed since the last successful install (stamp in node_modules).
#   - Debian packages the tests run for real, each installed with apt-get only when its program
#     is missing and we are root: `chromium` (the browser test of the traffic page) and
#     `redis-server` (rate limits and state shared across replicas) and `nginx-light` (the load
#     balancer of the scale-out test). The tests start their own
#     servers on free loopback ports; packaged services are kept from starting.
# Then `ruff check` and `mypy` (strict on converter/), and pytest; any finding or failing test
# fails the command. Exits non-zero on the first that fails; "no tests collected" (pytest's 5)
# counts as a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'test.sh: %s\n' "$*" >&2; }

# shellcheck source=scripts/venv.sh
source scripts/venv.sh

setup_node() {
    local dir=tests/node stamp=tests/node/node_modules/.openapi-mcp-lock.stamp
    command -v npm >/dev/null || { say "npm is required (tests/node holds the Node.js MCP peers)"; exit 2; }
    if [[ -d $dir/node_modules ]] && cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | cmp -s - "$stamp"; then
        return
    fi
    # npm ci installs exactly package-lock.json (integrity hashes checked) and fails if it is missing
    # or out of step with package.json.
    say "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cat "$dir/package.json" "$dir/package-lock.json" > "$stamp"
}

setup_debian_package() {  # PROGRAM PACKAGE WHAT-NEEDS-IT
    local program=$1 package=$2 why=$3
    [[ -x $program ]] && return
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "$program is missing and cannot be installed here (needs root and apt-get): $why will fail"
        return
    fi
    local log started=$SECONDS policy=/usr/sbin/policy-rc.d added_policy=""
    log="$(mktemp)"
    say "installing Debian's $package for $why (apt-get)"
    # A package with a service would start it (redis on 6379); the tests need none. A policy-rc.d
    # that answers 101 ("action forbidden") stops that, and is removed again if we added it.
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package"; } \
        >"$log" 2>&1; then
        say "$package installed in $((SECONDS - started)) s"
    else
        say "apt-get install $package failed; $why will fail. Last lines:"
        tail -n 20 "$log" >&2
    fi
    if [[ -n $added_policy ]]; then rm -f "$policy"; fi
    rm -f "$log"
}

lint() {
    local started=$SECONDS
    "$VENV/bin/ruff" check --quiet . || { say "ruff found problems (above)"; exit 1; }
    "$VENV/bin/mypy" || { say "mypy found problems (above)"; exit 1; }
    say "ruff and mypy: clean ($((SECONDS - started)) s)"
}

ensure_venv
compile_sources
setup_node
setup_debian_package /usr/bin/chromium chromium "the dashboard's browser test"
setup_debian_package /usr/bin/redis-server redis-server "the Redis tests"
setup_debian_package /usr/sbin/nginx nginx-light "the scale-out test (nginx round robin over replicas)"
[[ ${OPENAPI_MCP_SKIP_LINT:-} == 1 ]] || lint

status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    say "pytest collected no tests; that counts as a failure"
fi
exit "$status"
