#!/usr/bin/env bash
# Lint, type-check and test: bootstrap, then ruff, mypy and pytest.
#
# All three run even if one fails; the exit status is non-zero if any failed, if pytest
# collected no test (its exit status 5), or if no redis-server binary exists: the
# Redis-backed tests must fail, never skip, so ORCH_TEST_REQUIRE_REDIS=1 is exported.
# Arguments are passed to pytest (e.g. scripts/test.sh -k dag).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCH_LOG_TAG="test"
cd "$ORCH_ROOT"

bash scripts/bootstrap.sh

export PATH="$ORCH_VENV/bin:$PATH"
export ORCH_TEST_REQUIRE_REDIS=1
# The web UI's browser tests (tests/browser) need Debian's chromium, which bootstrap.sh
# installs when run as root: once it is here they must fail, never skip.  Without it they
# skip, and the last lines name each one (tests/browser/conftest.py writes the report).
if [[ -x /usr/bin/chromium ]]; then
    export ORCH_TEST_REQUIRE_BROWSER=1
fi
# As root, bootstrap.sh installs iproute2: the many-hosts test (network namespaces) must
# then run, never skip (tests/integration/test_hosts.py).
if [[ "$(id -u)" -eq 0 ]]; then
    export ORCH_TEST_REQUIRE_HOSTS=1
fi
skip_report="$(mktemp)"
trap 'rm -f "$skip_report"' EXIT
export ORCH_TEST_SKIP_REPORT="$skip_report"
failed=()

if ! redis_bin="$("$ORCH_VENV/bin/python" -m orchestrator.dev.localredis --which)"; then
    orch_log "FAIL: no redis-server binary (not on PATH, none shipped by the dev extra)"
    failed+=("redis-server")
fi

orch_log "ruff check ."
"$ORCH_VENV/bin/ruff" check . || failed+=("ruff")

mypy_targets=()
for pkg in orchestrator workers; do
    # Skip a package that does not exist yet, or has no Python file yet (mypy would error).
    if [[ -d "$pkg" ]] && [[ -n "$(find "$pkg" -name '*.py' -print -quit)" ]]; then
        mypy_targets+=("$pkg")
    fi
done
if ((${#mypy_targets[@]})); then
    orch_log "mypy ${mypy_targets[*]}"
    "$ORCH_VENV/bin/mypy" "${mypy_targets[@]}" || failed+=("mypy")
else
    orch_log "mypy: no package to check yet (orchestrator/, workers/)"
fi

# The whole suite runs in ORCH_TEST_PROCESSES processes (default 3), a test file per
# process at a time (module fixtures start their stacks once), then the tests marked
# `serial` in this process (schemathesis' items share one node id: pytest-xdist would run
# one of them and report the rest as nothing). Arguments run as given, in one pass.
# Three on two cores: the tests mostly wait on real workers, leases and timers (load
# average 1.7-1.9 meanwhile); on 2026-12-07 the first pass took 11 min 56 s in three
# processes against 15 min 55 s in two, the same 1,316 tests green.
pytest_status=0
processes="${ORCH_TEST_PROCESSES:-3}"
if (($# == 0)) && [[ "$processes" != "1" ]]; then
    orch_log "pytest -q -p no:cacheprovider -n $processes --dist loadfile -m 'not serial' (redis-server: ${redis_bin:-none})"
    "$ORCH_VENV/bin/pytest" -q -p no:cacheprovider -n "$processes" --dist loadfile \
        -m "not serial" || pytest_status=$?
    orch_log "pytest -q -p no:cacheprovider -m serial"
    serial_status=0
    "$ORCH_VENV/bin/pytest" -q -p no:cacheprovider -m serial || serial_status=$?
    if ((pytest_status == 0)); then pytest_status=$serial_status; fi
else
    orch_log "pytest -q -p no:cacheprovider $* (redis-server: ${redis_bin:-none})"
    "$ORCH_VENV/bin/pytest" -q -p no:cacheprovider "$@" || pytest_status=$?
fi
case "$pytest_status" in
    0) ;;
    5) orch_log "FAIL: pytest collected no test"; failed+=("pytest (no tests)") ;;
    *) failed+=("pytest (exit $pytest_status)") ;;
esac

if [[ -s "$skip_report" ]]; then
    orch_log "SKIPPED browser tests (no Chromium: apt-get install chromium, as root):"
    while read -r skipped; do orch_log "  skipped: $skipped"; done <"$skip_report"
fi
if ((${#failed[@]})); then
    orch_log "FAILED: ${failed[*]}"
    exit 1
fi
orch_log "all checks passed"
