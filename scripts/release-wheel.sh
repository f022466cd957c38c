#!/usr/bin/env bash
# Build the wheel of a release (a git ref) into tests/data/releases/, for the rolling-upgrade
# tests (tests/integration/test_upgrade.py), which install it beside the working tree.
#
#   scripts/release-wheel.sh <ref>      e.g. scripts/release-wheel.sh 5e496fa
#
# At each release, build the previous one's wheel and delete the older wheel: the tests
# always pair this tree with exactly one previous release (docs/operations.md, Upgrades).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ORCH_LOG_TAG="release-wheel"
cd "$ORCH_ROOT"
ref="${1:?usage: scripts/release-wheel.sh <git ref of the previous release>}"
bash scripts/bootstrap.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git archive "$ref" | tar -x -C "$work"
"$ORCH_VENV/bin/python" -m pip wheel --no-deps -q -w tests/data/releases "$work"
orch_log "built: $(ls tests/data/releases)"
