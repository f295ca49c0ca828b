#!/usr/bin/env bash
# Starts the platform with a demo tenant on the embedded default: no DATABASE_URL, so the
# server runs its own PostgreSQL + pgvector under ./var; no LLM key, so the agent uses the
# offline responder. The demo owner's credentials are printed on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-postgres.sh
export SQLX_OFFLINE=true
exec cargo run --quiet -- serve --demo "$@"
