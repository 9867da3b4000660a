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
#   - Debian's `chromium` (for the browser test of the traffic page): `apt-get install chromium`
#     when /usr/bin/chromium is missing and we are root; skipped when it is there.
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

lint() {
    local started=$SECONDS
    "$VENV/bin/ruff" check --quiet . || { say "ruff found problems (above)"; exit 1; }
    "$VENV/bin/mypy" || { say "mypy found problems (above)"; exit 1; }
    say "ruff and mypy: clean ($((SECONDS - started)) s)"
}

ensure_venv
compile_sources
setup_node
setup_chromium
[[ ${OPENAPI_MCP_SKIP_LINT:-} == 1 ]] || lint

status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
    say "pytest collected no tests; that counts as a failure"
fi
exit "$status"
