#!/usr/bin/env bash
# Bring up the local stack and run the demo workflow: bootstrap, then `orchestrator demo`.
# Arguments are passed to `orchestrator demo`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ORCH_ROOT"

bash scripts/bootstrap.sh

# .venv/bin first: it holds the redis-server link when PATH has no redis-server.
export PATH="$ORCH_VENV/bin:$PATH"
exec "$ORCH_VENV/bin/orchestrator" demo "$@"
