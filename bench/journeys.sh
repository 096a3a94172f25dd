#!/usr/bin/env bash
# What following journeys costs an append, on 127.0.0.1 only: one fresh
# redis-server (persistence off), two `journey serve` on it (the built-in
# journeys, and none: an empty definitions file), a seeded population (a
# part of it for each variant), then
# BENCH_REPS repetitions interleaving AppendEvent at c16 through each and
# the raw append script (`journey bench run --redis`, which sends the same
# script call without the journey write set). Prints each run, then the
# medians: throughput against the raw script, and CPU µs per append of
# each server and of Redis. Everything started here is stopped on exit.
#
# Settings (environment): JOURNEY_BIN, BENCH_CUSTOMERS (10000),
# BENCH_EVENTS_PER_CUSTOMER (50), BENCH_REPS (3), BENCH_DURATION (3),
# BENCH_WARMUP (1), BENCH_CONCURRENCY (16), BENCH_REDIS_CONF, BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${JOURNEY_BIN:-${CARGO_TARGET_DIR:-target}/release/journey}
CUSTOMERS=${BENCH_CUSTOMERS:-10000}
EVENTS=${BENCH_EVENTS_PER_CUSTOMER:-50}
REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
OUT=${BENCH_OUT:-$(mktemp -d -t journey-journeys.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
require redis-server redis-cli jq timeout

start_redis
: >"$OUT/no-journeys.toml"
serve() { # name more-args... (sets SERVED_PID and SERVED)
  local name=$1 port; shift
  port=$(free_port)
  "$BIN" serve --listen "127.0.0.1:$port" --worker-threads 1 \
    --store "redis://127.0.0.1:$REDIS_PORT/0" "$@" 2>"$OUT/$name.log" >/dev/null &
  SERVED_PID=$!
  PIDS+=("$SERVED_PID")
  SERVED=127.0.0.1:$port
  wait_for "journey serve ($name)" grep -q "journey server started" "$OUT/$name.log"
}
serve journeys
WITH_PID=$SERVED_PID WITH=$SERVED
serve none --journeys "$OUT/no-journeys.toml"
WITHOUT_PID=$SERVED_PID WITHOUT=$SERVED

echo "# journey bench journeys: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), nproc $(nproc)"
# Seeded through the server that follows journeys, so it holds their states:
# three times the population, one part per variant (`--first-customer`),
# so that each variant's appends grow only its own customers, as much as
# the others' do theirs, and no run appends to the customers another run
# measures next.
timeout 900 "$BIN" bench seed --target "$WITH" --customers $(( 3 * CUSTOMERS )) --events-per-customer "$EVENTS" >/dev/null

run() { # name pid-of-server-or-empty part run-args...
  local name=$1 pid=$2 part=$3 pids; shift 3
  pids=${pid:+$pid,}$REDIS_PID
  timeout $(( DURATION + WARMUP + 60 )) "$BIN" bench run "$@" --scenario append -c "$CONCURRENCY" \
    --duration "$DURATION" --warmup "$WARMUP" --customers "$CUSTOMERS" --first-customer $(( part * CUSTOMERS )) \
    --pids "$pids" --json >"$OUT/$name.json"
  jq -r --arg n "$name" --arg s "$pid" --arg r "$REDIS_PID" \
    '"  \($n): \(.rps|floor) rps, errors \(.errors), CPU µs per append: server \(if $s == "" then "-" else (.cpu_us_per_rpc[$s]|floor) end), Redis \(.cpu_us_per_rpc[$r]|floor)"' "$OUT/$name.json"
}
for rep in $(seq "$REPS"); do
  echo "## repetition $rep of $REPS"
  run "journeys_$rep" "$WITH_PID" 0 --target "$WITH"
  run "none_$rep" "$WITHOUT_PID" 1 --target "$WITHOUT"
  run "raw_$rep" "" 2 --redis "redis://127.0.0.1:$REDIS_PORT/0"
done

med() { # file-prefix jq-expression [printf format]
  for rep in $(seq "$REPS"); do jq -r "$2" "$OUT/$1_$rep.json"; done | median | awk -v f="${3:-%.1f}" '{ printf f, $1 }'
}
ratio() { # prefix
  for rep in $(seq "$REPS"); do
    echo "$(jq .rps "$OUT/$1_$rep.json") $(jq .rps "$OUT/raw_$rep.json")" | awk '{ printf "%.3f\n", $1 / $2 }'
  done | median
}
echo
echo "## medians of $REPS repetitions (AppendEvent c$CONCURRENCY, ${DURATION} s each)"
echo
echo "| | rps | vs raw script (per repetition, median) | server CPU µs | Redis CPU µs |"
echo "|---|---|---|---|---|"
echo "| built-in journeys | $(med journeys .rps %.0f) | $(ratio journeys) | $(med journeys ".cpu_us_per_rpc[\"$WITH_PID\"]") | $(med journeys ".cpu_us_per_rpc[\"$REDIS_PID\"]") |"
echo "| no journeys | $(med none .rps %.0f) | $(ratio none) | $(med none ".cpu_us_per_rpc[\"$WITHOUT_PID\"]") | $(med none ".cpu_us_per_rpc[\"$REDIS_PID\"]") |"
echo "| raw append script | $(med raw .rps %.0f) | 1 | - | $(med raw ".cpu_us_per_rpc[\"$REDIS_PID\"]") |"
echo
echo "raw results in $OUT"
