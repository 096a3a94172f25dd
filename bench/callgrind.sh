#!/usr/bin/env bash
# Instructions per RPC of the service (and of the echo server), counted by
# valgrind's callgrind: unlike time on a shared machine, the count is the
# same from one run to the next, so it tells whether a change made a call
# cheaper. 127.0.0.1 only; everything started here is stopped on exit.
#
# usage: bench/callgrind.sh [SCENARIO...]   (default: context append check echo)
# Settings (environment): JOURNEY_BIN, BENCH_CUSTOMERS (2000), BENCH_OUT,
# BENCH_SERVE_ARGS (more flags for the measured `journey serve`, e.g.
# --context-cache-mib 64).
# The service runs under callgrind (~50x slower); the load generator, not
# instrumented, sends 4 calls at a time for 8 s; counting covers only that
# window (callgrind_control switches it on and off), and is divided by the
# calls that succeeded in it.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${JOURNEY_BIN:-${CARGO_TARGET_DIR:-target}/release/journey}
CUSTOMERS=${BENCH_CUSTOMERS:-2000}
OUT=${BENCH_OUT:-$(mktemp -d -t journey-callgrind.XXXXXX)}
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(context append check echo)
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
require redis-server redis-cli valgrind callgrind_control jq
WAIT_SECONDS=30

# Counts instructions of the process PID while `journey bench run ARGS...`
# runs, and prints them per successful call.
measure() { # name pid run-args...
  local name=$1 pid=$2; shift 2
  # Warm-up: connections, caches, lazy statics.
  "$BIN" bench run "$@" -c 4 --duration 3 --warmup 0 >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local calls
  calls=$("$BIN" bench run "$@" -c 4 --duration 8 --warmup 0 --json | jq '.requests - .errors')
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  local ir
  ir=$(cat "$OUT/$name".callgrind.* 2>/dev/null | sed -n 's/^totals: //p' | sort -n | tail -1)
  echo "$name: $calls calls, $ir instructions, $(( ir / calls )) per call"
}

REDIS_PORT=$(free_port)
redis-server deploy/redis-journey.conf --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$OUT" --logfile "$OUT/redis.log" &
PIDS+=("$!")
wait_for redis-server redis-cli -p "$REDIS_PORT" ping
STORE="redis://127.0.0.1:$REDIS_PORT/0"

echo "# journey callgrind: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for scenario in "${SCENARIOS[@]}"; do
  port=$(free_port)
  if [[ $scenario == echo ]]; then
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/echo.callgrind.%p" \
      "$BIN" bench echo-server --worker-threads 1 --listen "127.0.0.1:$port" >"$OUT/echo.log" 2>"$OUT/echo.vg.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for "echo server" grep -q "listening on" "$OUT/echo.log"
    measure echo "$pid" --target "127.0.0.1:$port" --scenario echo
  else
    # A fresh population for each scenario, seeded through an ordinary
    # server (under callgrind seeding would take minutes).
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    "$BIN" serve --listen "127.0.0.1:$port" --worker-threads 1 --store "$STORE" >/dev/null 2>"$OUT/seed.log" &
    seeder=$!
    wait_for "seeding server" grep -q "journey server started" "$OUT/seed.log"
    "$BIN" bench seed --target "127.0.0.1:$port" --customers "$CUSTOMERS" --events-per-customer 50 >/dev/null
    kill "$seeder"; wait "$seeder" 2>/dev/null || true
    port=$(free_port)
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$scenario.callgrind.%p" \
      "$BIN" serve --listen "127.0.0.1:$port" --worker-threads 1 --store "$STORE" ${BENCH_SERVE_ARGS:-} \
      >/dev/null 2>"$OUT/$scenario.vg.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for "journey serve under callgrind" grep -q "journey server started" "$OUT/$scenario.vg.log"
    measure "$scenario" "$pid" --target "127.0.0.1:$port" --scenario "$scenario" --customers "$CUSTOMERS"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
echo "# profiles: callgrind_annotate --inclusive=yes $OUT/<scenario>.callgrind.<pid>.1"
