# Sourced by scripts/test.sh, scripts/demo.sh and bench/run.sh: `ensure_venv` makes the project's
# Python environment, exactly the versions in requirements/dev.lock plus the project itself
# (editable), so a fresh clone gets what CI got. Not meant to be run on its own.
#
#   OPENAPI_MCP_VENV=DIR     where the venv lives (default .venv)
#   OPENAPI_MCP_LATEST=1     ignore the lock: newest releases allowed by pyproject.toml (make test-latest)
#
# The venv is rebuilt from scratch whenever the lock or pyproject.toml changed since it was made
# (a stamp inside it records their digest), so no package the lock dropped stays behind.

LOCK=requirements/dev.lock
VENV="${OPENAPI_MCP_VENV:-.venv}"

_venv_say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

_venv_python3() {
    local py
    py="$(command -v python3)" || { _venv_say "python3 (3.11 or newer) is required"; exit 2; }
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        _venv_say "python3 is $("$py" -V 2>&1); openapi-mcp needs Python 3.11 or newer"
        exit 2
    fi
    printf '%s' "$py"
}

ensure_venv() {
    local stamp="$VENV/.openapi-mcp-env.stamp" want py pip_quiet=(-q --disable-pip-version-check)
    if [[ ${OPENAPI_MCP_LATEST:-} == 1 ]]; then
        want="latest"
    else
        want="$(cat "$LOCK" pyproject.toml | cksum)"
    fi
    if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    py="$(_venv_python3)"
    if [[ -e $VENV ]]; then
        _venv_say "$LOCK or pyproject.toml changed since $VENV was made: making it again"
        rm -rf "$VENV"
    fi
    _venv_say "creating $VENV with $("$py" -V 2>&1)"
    "$py" -m venv "$VENV"
    if [[ $want == latest ]]; then
        _venv_say "installing the newest releases pyproject.toml allows (not the lock)"
        "$VENV/bin/python" -m pip install "${pip_quiet[@]}" --upgrade pip setuptools
        "$VENV/bin/python" -m pip install "${pip_quiet[@]}" --upgrade -e '.[test,otel,lint]'
    else
        _venv_say "installing the locked versions ($LOCK, hashes checked)"
        "$VENV/bin/python" -m pip install "${pip_quiet[@]}" --require-hashes --no-deps -r "$LOCK"
        # The project itself, against what the lock installed (setuptools is in the lock too).
        "$VENV/bin/python" -m pip install "${pip_quiet[@]}" --no-deps --no-build-isolation -e .
    fi
    "$VENV/bin/python" -m pip check >/dev/null || {
        _venv_say "the installed packages do not fit together (pip check):"
        "$VENV/bin/python" -m pip check >&2
        exit 2
    }
    printf '%s' "$want" > "$stamp"
}

# Bytecode for our modules, written even where PYTHONDONTWRITEBYTECODE is set (only stale files).
compile_sources() {
    "$VENV/bin/python" -m compileall -q converter mock_api >/dev/null
}
