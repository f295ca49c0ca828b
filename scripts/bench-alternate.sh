#!/bin/bash
# Compares builds of the platform by running the webhook and agent-turn benchmarks against each
# in turn, alternating the order every round, on a fresh database per run (BENCHMARKS.md).
# Each build is a directory holding `custodian`, `webhook_load` and `agent_turn` from
# `cargo build --release --bin custodian --bench webhook_load --bench agent_turn`
# (the benches are target/release/deps/<name>-<hash>).
#
#   scripts/bench-alternate.sh ROUNDS "webhook agent" "/path/build-a /path/build-b"
#
# Other builds on the machine (rustc, cargo, the linker) are paused while it measures and go on
# when it ends. Results are appended to bench-results.txt.
set -u
ROUNDS=${1:-3}
KINDS=${2:-"webhook agent"}
OUT=bench-results.txt
run() { # build kind
  local b=$1 kind=$2 db=custodian_bench_$(basename $1 | tr -c "a-z0-9_\n" _)
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
  local worker=true; [ "$kind" = webhook ] && worker=false
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db BIND_ADDR=127.0.0.1:8090 API_CLIENT_RPS=100000 API_TENANT_RPS=100000 \
    LOGIN_IP_BURST=1000000 ACTIONS_ALLOW_PRIVATE=true WORKER_ENABLED=$worker WHATSAPP_GRAPH_URL=http://127.0.0.1:8091 \
    $b/custodian serve > /tmp/bench-server-$(basename $b).log 2>&1 &
  local pid=$!
  for i in $(seq 1 100); do curl -sf http://127.0.0.1:8090/readyz >/dev/null && break; sleep 0.3; done
  # builds of other work go to the back while measuring
  # other work's builds pause while measuring (and go on afterwards, see the trap)
  pause_builds
  if [ "$kind" = webhook ]; then
    r=$($b/webhook_load --url http://127.0.0.1:8090 --seconds 20 --concurrency 32 --senders 1000 --warmup 3 2>&1 | grep "webhook ingestion" | tr '\n' ' ')
  else
    r=$($b/agent_turn --url http://127.0.0.1:8090 --turns 500 2>&1 | grep -A4 "agent turn overhead" | tr '\n' ' ')
  fi
  echo "$(date +%T) $(basename $b) $kind load=$(cut -d' ' -f1 /proc/loadavg) :: $r" | tee -a $OUT
  kill $pid; wait $pid 2>/dev/null
}
pause_builds() { for p in $(pgrep -x rustc; pgrep -x cargo; pgrep -x cc; pgrep -x ld; pgrep -f "ld.lld|collect2"); do kill -STOP $p 2>/dev/null; done; }
resume_builds() { for p in $(pgrep -x rustc; pgrep -x cargo; pgrep -x cc; pgrep -x ld; pgrep -f "ld.lld|collect2"); do kill -CONT $p 2>/dev/null; done; }
trap resume_builds EXIT
BUILDS=${3:?"name the build directories"}
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then order="$BUILDS"; else order=$(echo $BUILDS | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for k in $KINDS; do for b in $order; do run $b $k; done; done
done
