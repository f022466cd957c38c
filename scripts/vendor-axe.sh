#!/usr/bin/env bash
# Re-vendor axe-core (the accessibility checker the browser tests run in the page) from
# the npm registry, exactly as tests/browser/vendor/package-lock.json pins it: axe.min.js
# and its licence are copied next to the lock file and committed, so running the tests
# needs no Node toolchain. Needs node and npm; run it only to change the version.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCH_LOG_TAG=vendor-axe
vendor="$ORCH_ROOT/tests/browser/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$vendor/package.json" "$work/"
[[ -f "$vendor/package-lock.json" ]] && cp "$vendor/package-lock.json" "$work/"
if [[ -f "$work/package-lock.json" ]]; then
    (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
else
    (cd "$work" && npm install --ignore-scripts --no-audit --no-fund >/dev/null)
    cp "$work/package-lock.json" "$vendor/"
fi
cp "$work/node_modules/axe-core/axe.min.js" "$vendor/axe.min.js"
cp "$work/node_modules/axe-core/LICENSE" "$vendor/axe-core.LICENSE"
orch_log "vendored axe-core $(node -p "require('$work/node_modules/axe-core/package.json').version")"
