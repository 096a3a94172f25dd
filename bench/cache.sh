#!/usr/bin/env bash
# The context cache (`serve --context-cache-mib`) against the same service
# without it and the echo server, on 127.0.0.1 only: one fresh redis-server
# (persistence off), two `journey serve` on it (one with the cache, one
# without), the echo server; seeds a population, then for BENCH_REPS
# repetitions interleaves context reads through each and the echo at c16
# and c1, and prints medians and ratios. Every step is bounded in time;
# everything started here is stopped by the EXIT trap.
#
# The reads go to random customers of the hot set (BENCH_HOT, all seeded
# ones by default), as an assistant's conversations do: each run warms the
# cache first (BENCH_WARMUP seconds), and the cache re-reads a context 30 s
# after it read it, so a run measures hits and the re-reads of that age.
#
# Settings (environment): JOURNEY_BIN, BENCH_CUSTOMERS (10000), BENCH_HOT
# (BENCH_CUSTOMERS), BENCH_REPS (3), BENCH_DURATION (3), BENCH_WARMUP (4),
# BENCH_CACHE_MIB (512), BENCH_WORKER_THREADS (1), BENCH_THREADS (1),
# BENCH_REDIS_CONF (deploy/redis-journey.conf), BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${JOURNEY_BIN:-${CARGO_TARGET_DIR:-target}/release/journey}
CUSTOMERS=${BENCH_CUSTOMERS:-10000}
HOT=${BENCH_HOT:-$CUSTOMERS}
REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-4}
CACHE_MIB=${BENCH_CACHE_MIB:-512}
WORKERS=${BENCH_WORKER_THREADS:-1}
THREADS=${BENCH_THREADS:-1}
OUT=${BENCH_OUT:-$(mktemp -d -t journey-cache.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
require redis-server redis-cli jq timeout

start_redis

serve() { # name more-args... (sets SERVED_PID and SERVED)
  local name=$1 port; shift
  port=$(free_port)
  RUST_LOG=info "$BIN" serve --listen "127.0.0.1:$port" --worker-threads "$WORKERS" \
    --store "redis://127.0.0.1:$REDIS_PORT/0" "$@" 2>"$OUT/$name.log" >/dev/null &
  SERVED_PID=$!
  PIDS+=("$SERVED_PID")
  SERVED=127.0.0.1:$port
}
serve cached --context-cache-mib "$CACHE_MIB"
CACHED_PID=$SERVED_PID CACHED=$SERVED
serve plain
PLAIN_PID=$SERVED_PID PLAIN=$SERVED
wait_for "journey serve (cache)" grep -q "invalidation listener subscribed" "$OUT/cached.log"
wait_for "journey serve" grep -q "journey server started" "$OUT/plain.log"
"$BIN" bench echo-server --listen 127.0.0.1:0 --worker-threads "$WORKERS" >"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
wait_for "echo server" grep -q "listening on" "$OUT/echo.log"
ECHO=$(sed -n 's/.*listening on //p' "$OUT/echo.log" | head -1)

echo "# journey bench cache: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), nproc $(nproc)"
echo "# cached $CACHED (pid $CACHED_PID, --context-cache-mib $CACHE_MIB), plain $PLAIN (pid $PLAIN_PID), echo $ECHO, redis $REDIS_PORT; hot set $HOT of $CUSTOMERS"
echo "# raw results in $OUT; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" bench seed --target "$PLAIN" --customers "$CUSTOMERS" --events-per-customer 50 | tee "$OUT/seed.txt"

run() { # name scenario concurrency target pids
  local name=$1 scenario=$2 conc=$3 target=$4 pids=$5
  timeout $(( DURATION + WARMUP + 30 )) "$BIN" bench run --target "$target" --scenario "$scenario" \
    -c "$conc" --duration "$DURATION" --warmup "$WARMUP" --customers "$HOT" --pids "$pids" \
    --threads "$THREADS" --json >"$OUT/$name.json"
  jq -r --arg n "$name" '"  \($n): \(.rps|floor) rps, p50 \(.p50_us) µs, p99 \(.p99_us) µs, errors \(.errors)"' "$OUT/$name.json"
}
redis_calls() { redis-cli -p "$REDIS_PORT" info commandstats | sed -n 's/^cmdstat_zrevrange:calls=\([0-9]*\),.*/\1/p'; }

for rep in $(seq "$REPS"); do
  echo "## repetition $rep of $REPS"
  before=$(redis_calls)
  run "cached_c16_$rep" context 16 "$CACHED" "$CACHED_PID,$REDIS_PID"
  echo "$(( $(redis_calls) - before ))" >"$OUT/cached_c16_$rep.reads"
  run "plain_c16_$rep" context 16 "$PLAIN" "$PLAIN_PID,$REDIS_PID"
  run "echo_c16_$rep" echo 16 "$ECHO" "$ECHO_PID"
  run "cached_c1_$rep" context 1 "$CACHED" "$CACHED_PID,$REDIS_PID"
  run "plain_c1_$rep" context 1 "$PLAIN" "$PLAIN_PID,$REDIS_PID"
  run "echo_c1_$rep" echo 1 "$ECHO" "$ECHO_PID"
done

m() { for f in $OUT/$1; do jq -r "$2" "$f"; done | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "nan"; else printf "%.2f", a / b }'; }
C16=$(m "cached_c16_*.json" .rps); P16=$(m "plain_c16_*.json" .rps); E16=$(m "echo_c16_*.json" .rps)
C1=$(m "cached_c1_*.json" .p50_us); P1=$(m "plain_c1_*.json" .p50_us); E1=$(m "echo_c1_*.json" .p50_us)
CCPU=$(m "cached_c16_*.json" ".cpu_us_per_rpc.\"$CACHED_PID\""); PCPU=$(m "plain_c16_*.json" ".cpu_us_per_rpc.\"$PLAIN_PID\"")
ECPU=$(m "echo_c16_*.json" ".cpu_us_per_rpc.\"$ECHO_PID\"")
REQS=$(m "cached_c16_*.json" .requests)
READS=$(cat "$OUT"/cached_c16_*.reads | median)
echo
echo "| measure | cached | plain | echo | cached / echo | plain / echo |"
echo "|---|---|---|---|---|---|"
echo "| context c16 (rps) | ${C16%.*} | ${P16%.*} | ${E16%.*} | $(ratio "$C16" "$E16") | $(ratio "$P16" "$E16") |"
echo "| context p50 c1 (µs) | $C1 | $P1 | $E1 | $(ratio "$C1" "$E1") | $(ratio "$P1" "$E1") |"
echo "| service CPU per call c16 (µs) | $(printf %.1f "$CCPU") | $(printf %.1f "$PCPU") | $(printf %.1f "$ECPU") | $(ratio "$CCPU" "$ECPU") | $(ratio "$PCPU" "$ECPU") |"
echo
echo "context reads that reached Redis in a cached c16 run, warm-up included: median $READS, for $(printf %.0f "$REQS") calls measured"
