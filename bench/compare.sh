#!/usr/bin/env bash
# Measures journey against its baselines on this machine, on 127.0.0.1 only:
# a fresh redis-server (persistence off), `journey serve` on it and the echo
# server; seeds a population, then for BENCH_REPS repetitions interleaves
# the service's scenarios with their baselines (echo server; raw Redis:
# redis-benchmark's ZREVRANGE and contact-index read, and `journey bench run
# --redis`, the store's own pipelines and append script calls) and
# prints the medians and the ratios the performance targets use.
#
# Every load step is bounded in time; every process started here is stopped
# by the EXIT trap. See BENCHMARKS.md for what each figure means.
#
# Settings (environment):
#   JOURNEY_BIN                 the binary (default: ${CARGO_TARGET_DIR:-target}/release/journey)
#   BENCH_SERVE_ARGS            more flags for `journey serve` (e.g. --journeys FILE)
#   BENCH_CUSTOMERS             seeded customers (10000)
#   BENCH_EVENTS_PER_CUSTOMER   seeded events each (50)
#   BENCH_REPS                  interleaved repetitions (3)
#   BENCH_DURATION              measured seconds of each journey run (3)
#   BENCH_WARMUP                warm-up seconds before each journey run (1)
#   BENCH_CONCURRENCY           concurrency of the c16 steps (16)
#   BENCH_BATCH_CONCURRENCY     AppendEvents batches in flight (4)
#   BENCH_REDIS_REQUESTS        requests of each redis-benchmark step (100000)
#   BENCH_REDIS_TIMEOUT         seconds before a redis-benchmark step is cut (20)
#   BENCH_OUT                   where the raw results go (a new temp dir)
#   BENCH_WORKER_THREADS        the service's and the echo server's --worker-threads
#                               (1: leaves Redis and the load generator a core on a
#                               2-core machine; both the same, so the echo stays a
#                               like-for-like ceiling)
#   BENCH_THREADS               the load generator's --threads (1, as redis-benchmark)
#   BENCH_REDIS_CONF            settings file for the redis-server started here
#                               (deploy/redis-journey.conf, the recommended
#                               settings; '' for Redis's defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${JOURNEY_BIN:-${CARGO_TARGET_DIR:-target}/release/journey}
CUSTOMERS=${BENCH_CUSTOMERS:-10000}
EVENTS=${BENCH_EVENTS_PER_CUSTOMER:-50}
REPS=${BENCH_REPS:-3}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
CONC=${BENCH_CONCURRENCY:-16}
BATCH_CONC=${BENCH_BATCH_CONCURRENCY:-4}
REDIS_N=${BENCH_REDIS_REQUESTS:-100000}
REDIS_TIMEOUT=${BENCH_REDIS_TIMEOUT:-20}
OUT=${BENCH_OUT:-$(mktemp -d -t journey-bench.XXXXXX)}
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
. bench/lib.sh
require redis-server redis-cli redis-benchmark jq timeout

start_redis

JOURNEY_PORT=$(free_port)
WORKERS=${BENCH_WORKER_THREADS:-1}
THREADS=${BENCH_THREADS:-1}
RUST_LOG=info "$BIN" serve --listen "127.0.0.1:$JOURNEY_PORT" --worker-threads "$WORKERS" \
  --store "redis://127.0.0.1:$REDIS_PORT/0" ${BENCH_SERVE_ARGS:-} 2>"$OUT/serve.log" >/dev/null &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait_for "journey serve" grep -q "journey server started" "$OUT/serve.log"

"$BIN" bench echo-server --listen 127.0.0.1:0 --worker-threads "$WORKERS" >"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
wait_for "echo server" grep -q "listening on" "$OUT/echo.log"
ECHO_ADDR=$(sed -n 's/.*listening on //p' "$OUT/echo.log" | head -1)
TARGET=127.0.0.1:$JOURNEY_PORT

echo "# journey bench compare: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), nproc $(nproc)"
echo "# redis 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, settings: ${REDIS_CONF:-defaults}), journey $TARGET (pid $SERVE_PID), echo $ECHO_ADDR (pid $ECHO_PID)"
echo "# raw results in $OUT; load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these cores skews every figure)"
# Three times the population: the reads draw the first CUSTOMERS, the
# service's appends the next, the raw appends the last, so every
# repetition's reads see the seeded data (50 events a customer), and each
# append run grows only its own customers, as much as the other does its
# own (the raw baseline no longer appends to what the service's run just
# grew).
"$BIN" bench seed --target "$TARGET" --customers $(( 3 * CUSTOMERS )) \
  --events-per-customer "$EVENTS" | tee "$OUT/seed.txt"

NOW_US=$(( $(date +%s) * 1000000 ))
CUTOFF_US=$(( NOW_US - 30 * 86400 * 1000000 ))
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

journey_run() { # name scenario concurrency (--target ADDR | --redis URL) pids [first-customer]
  local name=$1 scenario=$2 conc=$3 how=$4 where=$5 pids=$6 first=${7:-0}
  timeout $(( ${DURATION%.*} + ${WARMUP%.*} + 30 )) "$BIN" bench run "$how" "$where" \
    --scenario "$scenario" -c "$conc" --duration "$DURATION" --warmup "$WARMUP" \
    --customers "$CUSTOMERS" --first-customer "$first" --pids "$pids" --threads "$THREADS" \
    --json >"$OUT/$name.json"
  jq -r --arg n "$name" '"  \($n): \(.rps|floor) rps, \(.events_per_s|floor) events/s, p50 \(.p50_us) µs, p99 \(.p99_us) µs, errors \(.errors)"' "$OUT/$name.json"
  if [[ $(jq .errors "$OUT/$name.json") != 0 ]]; then
    echo "  WARNING: $name had errors: $(jq -c .errors_by_code "$OUT/$name.json")" >&2
  fi
}

redis_run() { # name redis-benchmark-args...
  local name=$1; shift
  timeout "$REDIS_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONC" \
    -n "$REDIS_N" -r "$CUSTOMERS" --csv "$@" >"$OUT/$name.csv"
  # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
  tail -1 "$OUT/$name.csv" | tr -d '"' | cut -d, -f2,5 \
    | awk -F, -v n="$name" '{ printf "  %s: %d rps, p50 %d µs\n", n, $1, $2 * 1000 }'
}

# Two kinds of raw baseline, both over random seeded customers (their ids
# are what redis-benchmark's -r draws, see population::customer_id):
# - redis-benchmark with the one command a read needs most;
# - `journey bench run --redis`: the very pipelines (and append script
#   calls) the Redis store sends for each RPC, one connection per task like
#   redis-benchmark, with no service in between.
for rep in $(seq "$REPS"); do
  echo "## repetition $rep of $REPS"
  journey_run "context_c${CONC}_$rep" context "$CONC" --target "$TARGET" "$SERVE_PID,$REDIS_PID"
  journey_run "echo_c${CONC}_$rep" echo "$CONC" --target "$ECHO_ADDR" "$ECHO_PID"
  redis_run "zrevrange_$rep" ZREVRANGE 'journey:{bench-c__rand_int__}:tl' 0 49
  journey_run "raw_context_c${CONC}_$rep" context "$CONC" --redis "$REDIS_URL" "$REDIS_PID"
  journey_run "append_c${CONC}_$rep" append "$CONC" --target "$TARGET" "$SERVE_PID,$REDIS_PID" "$CUSTOMERS"
  journey_run "raw_append_c${CONC}_$rep" append "$CONC" --redis "$REDIS_URL" "$REDIS_PID" $(( 2 * CUSTOMERS ))
  journey_run "context_c1_$rep" context 1 --target "$TARGET" "$SERVE_PID,$REDIS_PID"
  journey_run "echo_c1_$rep" echo 1 --target "$ECHO_ADDR" "$ECHO_PID"
  journey_run "append_batch_c${BATCH_CONC}_$rep" append-batch "$BATCH_CONC" --target "$TARGET" "$SERVE_PID,$REDIS_PID" "$CUSTOMERS"
  journey_run "raw_append_batch_c${BATCH_CONC}_$rep" append-batch "$BATCH_CONC" --redis "$REDIS_URL" "$REDIS_PID" $(( 2 * CUSTOMERS ))
  journey_run "check_c${CONC}_$rep" check "$CONC" --target "$TARGET" "$SERVE_PID,$REDIS_PID"
  journey_run "raw_check_c${CONC}_$rep" check "$CONC" --redis "$REDIS_URL" "$REDIS_PID"
  redis_run "contacts_raw_$rep" ZRANGEBYSCORE 'journey:{bench-c__rand_int__}:contacts' "$CUTOFF_US" +inf
done

# Medians over the repetitions, and the ratios the targets are stated in.
json_median() { # file-glob jq-filter
  for f in $OUT/$1; do jq -r "$2" "$f"; done | median
}
csv_median() { # file-glob
  for f in $OUT/$1; do tail -1 "$f" | tr -d '"' | cut -d, -f2; done | median
}
CTX16=$(json_median "context_c${CONC}_*.json" .rps)
ECHO16=$(json_median "echo_c${CONC}_*.json" .rps)
ZREV=$(csv_median "zrevrange_*.csv")
RAW_CTX16=$(json_median "raw_context_c${CONC}_*.json" .rps)
CTX1_P50=$(json_median "context_c1_*.json" .p50_us)
ECHO1_P50=$(json_median "echo_c1_*.json" .p50_us)
CTX_CPU=$(json_median "context_c${CONC}_*.json" ".cpu_us_per_rpc[\"$SERVE_PID\"]")
CTX_REDIS_CPU=$(json_median "context_c${CONC}_*.json" ".cpu_us_per_rpc[\"$REDIS_PID\"]")
RAW_CTX_REDIS_CPU=$(json_median "raw_context_c${CONC}_*.json" ".cpu_us_per_rpc[\"$REDIS_PID\"]")
CTX_BENCH_CPU=$(json_median "context_c${CONC}_*.json" ".cpu_us_per_rpc.bench")
ECHO_CPU=$(json_median "echo_c${CONC}_*.json" ".cpu_us_per_rpc[\"$ECHO_PID\"]")
APPEND16=$(json_median "append_c${CONC}_*.json" .rps)
RAW_APPEND16=$(json_median "raw_append_c${CONC}_*.json" .rps)
APPEND_CPU=$(json_median "append_c${CONC}_*.json" ".cpu_us_per_rpc[\"$SERVE_PID\"]")
APPEND_REDIS_CPU=$(json_median "append_c${CONC}_*.json" ".cpu_us_per_rpc[\"$REDIS_PID\"]")
RAW_APPEND_REDIS_CPU=$(json_median "raw_append_c${CONC}_*.json" ".cpu_us_per_rpc[\"$REDIS_PID\"]")
BATCH_EPS=$(json_median "append_batch_c${BATCH_CONC}_*.json" .events_per_s)
RAW_BATCH_EPS=$(json_median "raw_append_batch_c${BATCH_CONC}_*.json" .events_per_s)
BATCH_RPS=$(json_median "append_batch_c${BATCH_CONC}_*.json" .rps)
CHECK16=$(json_median "check_c${CONC}_*.json" .rps)
RAW_CHECK16=$(json_median "raw_check_c${CONC}_*.json" .rps)
CONTACTS_RAW=$(csv_median "contacts_raw_*.csv")
ERRORS=$(for f in "$OUT"/*.json; do jq .errors "$f"; done | awk '{ s += $1 } END { print s + 0 }')

# One repetition's figure: a JSON run's (jq filter) or a CSV's rps.
rep_value() { # file jq-filter (ignored for .csv)
  case $1 in
    *.csv) tail -1 "$1" | tr -d '"' | cut -d, -f2 ;;
    *) jq -r "$2" "$1" ;;
  esac
}
# The median over the repetitions of each one's own ratio: the runs of a
# repetition are interleaved with their baselines, a pairing that the
# ratio of the two medians (which may come from different repetitions)
# ignores. The status is decided on it.
paired_ratio() { # target-stem target-ext target-filter baseline-stem baseline-ext baseline-filter
  for rep in $(seq "$REPS"); do
    local t b
    t=$(rep_value "$OUT/${1}_$rep.$2" "$3")
    b=$(rep_value "$OUT/${4}_$rep.$5" "$6")
    awk -v t="$t" -v b="$b" 'BEGIN { if (b > 0) print t / b }'
  done | median
}

row() { # name measured baseline op goal unit paired-ratio: the goal is on measured / baseline
  awk -v n="$1" -v m="$2" -v b="$3" -v op="$4" -v g="$5" -v u="$6" -v p="$7" 'BEGIN {
    r = (b > 0) ? m / b : 0
    # No paired ratio (every baseline failed): no status, whatever awk
    # makes of "nan".
    known = (p != "nan" && p != "")
    p += 0
    met = (op == ">=") ? (p >= g) : (p <= g)
    status = (g == "") ? "-" : (!known ? "n/a" : (met ? "met" : "missed"))
    goal = (g == "") ? "-" : op " " g
    printf "| %s | %.1f %s | %.1f %s | %.3f | %.3f | %s | %s |\n", n, m, u, b, u, r, p, goal, status
  }'
}
abs_row() { # name measured op goal unit: the goal is on the measured figure itself
  awk -v n="$1" -v m="$2" -v op="$3" -v g="$4" -v u="$5" 'BEGIN {
    met = (op == ">=") ? (m >= g) : (m <= g)
    printf "| %s | %.0f %s | - | - | - | %s %s | %s |\n", n, m, u, op, g, met ? "met" : "missed"
  }'
}
echo
echo "## medians of $REPS repetitions ($DURATION s each after $WARMUP s warm-up; redis-benchmark $REDIS_N requests)"
echo
echo "| target | journey | baseline | ratio of the medians | median of the paired ratios | goal | status (on the paired ratios) |"
echo "|---|---|---|---|---|---|---|"
row "context c$CONC vs echo c$CONC (rps)" "$CTX16" "$ECHO16" ">=" 0.7 rps \
  "$(paired_ratio "context_c$CONC" json .rps "echo_c$CONC" json .rps)"
row "context c$CONC vs raw ZREVRANGE 0 49 c$CONC (rps)" "$CTX16" "$ZREV" ">=" 0.4 rps \
  "$(paired_ratio "context_c$CONC" json .rps zrevrange csv "")"
row "context c$CONC vs raw context pipeline c$CONC (rps)" "$CTX16" "$RAW_CTX16" ">=" "" rps \
  "$(paired_ratio "context_c$CONC" json .rps "raw_context_c$CONC" json .rps)"
row "context c1 p50 vs echo c1 p50" "$CTX1_P50" "$ECHO1_P50" "<=" 1.3 µs \
  "$(paired_ratio context_c1 json .p50_us echo_c1 json .p50_us)"
row "service CPU per context vs echo CPU per RPC" "$CTX_CPU" "$ECHO_CPU" "<=" 1.25 µs \
  "$(paired_ratio "context_c$CONC" json ".cpu_us_per_rpc[\"$SERVE_PID\"]" "echo_c$CONC" json ".cpu_us_per_rpc[\"$ECHO_PID\"]")"
row "AppendEvent c$CONC vs raw append script c$CONC (rps)" "$APPEND16" "$RAW_APPEND16" ">=" 0.6 rps \
  "$(paired_ratio "append_c$CONC" json .rps "raw_append_c$CONC" json .rps)"
abs_row "AppendEvents of 100, c$BATCH_CONC" "$BATCH_EPS" ">=" 100000 "events/s"
row "AppendEvents of 100 vs raw append script, batches of 100, c$BATCH_CONC (events/s)" "$BATCH_EPS" "$RAW_BATCH_EPS" ">=" "" "events/s" \
  "$(paired_ratio "append_batch_c$BATCH_CONC" json .events_per_s "raw_append_batch_c$BATCH_CONC" json .events_per_s)"
row "CheckContactFrequency c$CONC vs raw check pipeline c$CONC (rps)" "$CHECK16" "$RAW_CHECK16" ">=" 0.4 rps \
  "$(paired_ratio "check_c$CONC" json .rps "raw_check_c$CONC" json .rps)"
row "CheckContactFrequency c$CONC vs raw contact-index read c$CONC (rps)" "$CHECK16" "$CONTACTS_RAW" ">=" "" rps \
  "$(paired_ratio "check_c$CONC" json .rps contacts_raw csv "")"
echo
printf 'other medians: AppendEvents %.0f batches/s; Redis CPU µs per context: %.1f (raw pipeline %.1f); load generator CPU µs per context %.1f; service CPU µs per AppendEvent %.1f; Redis CPU µs per append: %.1f (raw script call %.1f)\n' \
  "$BATCH_RPS" "$CTX_REDIS_CPU" "$RAW_CTX_REDIS_CPU" "$CTX_BENCH_CPU" "$APPEND_CPU" "$APPEND_REDIS_CPU" "$RAW_APPEND_REDIS_CPU"
echo "raw baselines: random seeded customers; redis-benchmark -c $CONC -r $CUSTOMERS; journey bench run --redis: one connection per task; the service's appends to the next $CUSTOMERS seeded customers, the raw ones to the $CUSTOMERS after"
if [[ $ERRORS != 0 ]]; then
  echo "WARNING: $ERRORS failed calls in the journey runs (see errors_by_code in $OUT/*.json)" >&2
fi
