#!/usr/bin/env bash
# Starts the platform with a demo tenant on the embedded default: no DATABASE_URL, so the
# server runs its own PostgreSQL + pgvector under ./var; no LLM key, so the agent uses the
# offline responder. The demo owner's credentials are printed on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-postgres.sh
# As root the embedded database runs as the `postgres` user (PostgreSQL refuses root), and
# that user must reach ./var. A clone under a private directory (/root/...) is out of its
# reach, so the data goes to /var/lib/custodian instead.
if [ "$(id -u)" -eq 0 ] && [ -z "${CUSTODIAN_DATA_DIR:-}${DATABASE_URL:-}" ] &&
  ! runuser -u postgres -- test -x "$PWD" 2>/dev/null; then
  export CUSTODIAN_DATA_DIR=/var/lib/custodian
  echo "demo: the postgres user cannot reach $PWD; keeping the data in $CUSTODIAN_DATA_DIR"
fi
export SQLX_OFFLINE=true
exec cargo run --quiet -- serve --demo "$@"
