#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL + pgvector.
# With TEST_DATABASE_URL (a superuser URL) the tests use that server; otherwise they start a
# private cluster under target/tmp/test-pg, fresh for every run, and this script stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-postgres.sh
# The browser tests drive Chromium: they fail, never skip, without it.
bash scripts/install-browser.sh

# The build needs no database: SQL is checked against the committed .sqlx data.
export SQLX_OFFLINE=true

test_pg="$PWD/target/tmp/test-pg"
stop_test_pg() {
  [ -f "$test_pg/postmaster.pid" ] || return 0
  local pg_ctl
  pg_ctl="$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)"
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$pg_ctl" -D "$test_pg" stop -m fast >/dev/null 2>&1 || true
  else
    "$pg_ctl" -D "$test_pg" stop -m fast >/dev/null 2>&1 || true
  fi
}
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  stop_test_pg
  rm -rf "$test_pg"
  trap stop_test_pg EXIT
fi

log="$(mktemp)"
status=0
cargo test --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# The API contract: schemathesis against a live server, and a generated client's round trip
# (README, "API"). Its `test result:` line joins the count below.
if [ "$#" -eq 0 ]; then
  bash scripts/contract-test.sh 2>&1 | tee -a "$log" || status=$?
fi
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
