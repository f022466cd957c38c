# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; it defines functions and the
# variables ORCH_ROOT and ORCH_VENV, and changes nothing else.

ORCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORCH_VENV="$ORCH_ROOT/.venv"
ORCH_MIN_PYTHON="3.11"

# log MSG...: a progress line on stderr, so that a command's own stdout stays clean.
orch_log() { printf '[%s] %s\n' "${ORCH_LOG_TAG:-orchestrator}" "$*" >&2; }

# die MSG...: print an error and exit 1.
orch_die() { printf '[%s] ERROR: %s\n' "${ORCH_LOG_TAG:-orchestrator}" "$*" >&2; exit 1; }

# orch_python_ok PYTHON: true if PYTHON runs and is at least $ORCH_MIN_PYTHON.
# (A pyenv shim for a version that is not selected exists on PATH but fails to run.)
orch_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

# orch_find_python: print the first python >= 3.11 among python3.11, python3.12,
# python3.13, python3; fail with the versions that were seen if there is none.
orch_find_python() {
    local candidate path seen=""
    for candidate in python3.11 python3.12 python3.13 python3; do
        path="$(command -v "$candidate" 2>/dev/null)" || continue
        if orch_python_ok "$path"; then
            "$path" -c 'import sys; print(sys.executable)'  # the real one, not a pyenv shim
            return 0
        fi
        seen+=" $candidate=$("$path" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unusable)"
    done
    orch_die "Python >= $ORCH_MIN_PYTHON is required but none was found" \
        "(looked for python3.11, python3.12, python3.13, python3;${seen:- none on PATH})." \
        "Install Python $ORCH_MIN_PYTHON or newer and run this again."
}

# orch_path_without_venv: print $PATH minus the project's .venv/bin, so that looking up a
# system binary does not find our own symlink.
orch_path_without_venv() {
    local entry out=""
    local IFS=:
    for entry in $PATH; do
        [[ "$entry" == "$ORCH_VENV/bin" ]] && continue
        out+="${out:+:}$entry"
    done
    printf '%s\n' "$out"
}

# orch_system_redis_server: print the redis-server on PATH (outside .venv), if any.
orch_system_redis_server() {
    local path_without_venv
    path_without_venv="$(orch_path_without_venv)"
    PATH="$path_without_venv" type -P redis-server
}

# orch_shipped_redis_server: print the server binary shipped by the dev extra, if any.
orch_shipped_redis_server() {
    (cd "$ORCH_ROOT" && "$ORCH_VENV/bin/python" -m orchestrator.dev.localredis --shipped)
}
