#!/usr/bin/env bash
# Measures the performance targets bench/compare.sh does not: the open loop
# at half the mix's maximum (beside the echo server and the raw Redis calls at the same rate), the
# service's memory with 1,000 connections open, Redis memory per stored
# event, and the context's cost against how
# many events a customer has and how many customers there are (10,000 or
# 1,000,000 of 5 events: ~3.7 GB in Redis, ~2 minutes of seeding; skip with
# BENCH_MILLION=0). 127.0.0.1 only; each step starts its own
# redis-server (deploy/redis-journey.conf, no persistence) and `journey
# serve`, and stops them; every load step is bounded in time.
#
# Settings (environment): JOURNEY_BIN (default ${CARGO_TARGET_DIR:-target}/release/journey),
# BENCH_REPS (3), BENCH_MILLION (1), BENCH_OUT (a new temp dir). Needs redis-server, redis-cli, jq, bc.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${JOURNEY_BIN:-${CARGO_TARGET_DIR:-target}/release/journey}
REPS=${BENCH_REPS:-3}
OUT=${BENCH_OUT:-$(mktemp -d -t journey-targets.XXXXXX)}
CONF=deploy/redis-journey.conf
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
require redis-server redis-cli jq bc timeout

# Starts a fresh redis-server and a service on it: sets REDIS_PORT,
# REDIS_PID, SERVE_PID, T (the service's address).
start() {
  REDIS_PORT=$(free_port)
  redis-server "$CONF" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_for redis-server redis-cli -p "$REDIS_PORT" ping
  local port
  port=$(free_port)
  RUST_LOG=info "$BIN" serve --listen "127.0.0.1:$port" --worker-threads 1 \
    --store "redis://127.0.0.1:$REDIS_PORT/0" 2>"$OUT/serve.log" >/dev/null &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  wait_for "journey serve" grep -q "journey server started" "$OUT/serve.log"
  T=127.0.0.1:$port
}
stop() { cleanup; }
run() { timeout 60 "$BIN" bench run --target "$T" "$@" --json; }

echo "# journey bench targets: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), nproc $(nproc)"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "## open loop: the mix at half its closed-loop maximum; the echo server and the raw Redis calls at the same rate"
start
# The baseline: the gRPC stack alone at the same arrival rate, on the
# service's runtime (1 worker), sharing the cores as the service does.
"$BIN" bench echo-server --listen 127.0.0.1:0 --worker-threads 1 >"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
wait_for "echo server" grep -q "listening on" "$OUT/echo.log"
ECHO=$(sed -n 's/.*listening on //p' "$OUT/echo.log" | head -1)
"$BIN" bench seed --target "$T" --customers 10000 --events-per-customer 50
open_loop() { # --target ADDR | --redis URL, rate, pids, scenario
  local report
  report=$(timeout 60 "$BIN" bench run "$1" "$2" --scenario "$5" -c 32 --rate "$3" --duration 8 --pids "$4" --json)
  # cpu and wait: µs per call of each process (the load generator is
  # `bench`); wait is the time its threads were runnable but waited for a
  # core: the scheduler's share of the latency.
  jq -c '{rps: (.rps|floor), p50_us, p90_us, p99_us, p999_us, errors, not_sent: (.errors_by_code.NOT_SENT // 0),
    cpu_us: (.cpu_us_per_rpc | map_values(if . == null then null else floor end)),
    wait_us: (.wait_us_per_rpc | map_values(if . == null then null else floor end))}' <<<"$report"
  # The percentiles are of the calls that succeeded: a run with failed or
  # unsent calls understates its latency, and is no figure for a target.
  if [[ $(jq .errors <<<"$report") != 0 ]]; then
    echo "  WARNING: failed or unsent calls (the percentiles leave them out): $(jq -c .errors_by_code <<<"$report")" >&2
  fi
}
for rep in $(seq "$REPS"); do
  max=$(run --scenario mix -c 16 --duration 4 | jq .rps)
  rate=$(echo "$max / 2" | bc)
  echo "closed loop c16: $max rps; open loop at $rate rps:"
  echo "  mix:  $(open_loop --target "$T" "$rate" "$SERVE_PID,$REDIS_PID" mix)"
  echo "  echo: $(open_loop --target "$ECHO" "$rate" "$ECHO_PID" echo)"
  # The floor: the mix's own Redis calls, without the service.
  echo "  raw:  $(open_loop --redis "redis://127.0.0.1:$REDIS_PORT/0" "$rate" "$REDIS_PID" mix)"
done

echo "## service memory with 1,000 connections open"
(ulimit -n 8192; timeout 120 "$BIN" bench connections --target "$T" --count 1000 --pids "$SERVE_PID")
stop

echo "## Redis memory per stored event"
start
before=$(redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
"$BIN" bench seed --target "$T" --customers 2000 --events-per-customer 50
after=$(redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
echo "used_memory per seeded event: $(( (after - before) / 100000 )) B"
# The mean encoded size of the events held by the first 100 customers.
redis-cli -p "$REDIS_PORT" eval "local n, s = 0, 0
  for i = 0, 99 do
    for _, m in ipairs(redis.call('ZRANGE', 'journey:{bench-c' .. string.format('%012d', i) .. '}:tl', 0, -1)) do
      n = n + 1; s = s + #m
    end
  end
  return {n, s}" 0 | paste -sd' ' | awk '{ printf "mean encoded event: %.1f B over %d events\n", $2 / $1, $1 }'
key='journey:{bench-c000000000007}'
for suffix in tl ids sum contacts cids idents jny; do
  echo "$suffix: $(redis-cli -p "$REDIS_PORT" memory usage "$key:$suffix" samples 0) B ($(redis-cli -p "$REDIS_PORT" object encoding "$key:$suffix"))"
done
echo "events: $(redis-cli -p "$REDIS_PORT" zcard "$key:tl"), contacts: $(redis-cli -p "$REDIS_PORT" zcard "$key:contacts")"
stop

echo "## the context against how many events a customer has (300 customers)"
for n in 50 1000 50 1000; do
  start
  "$BIN" bench seed --target "$T" --customers 300 --events-per-customer "$n" >/dev/null
  for c in 1 16; do
    echo "$n events, c$c: $(run --scenario context -c "$c" --duration 3 --customers 300 --pids "$SERVE_PID,$REDIS_PID" \
      | jq -c --arg r "$REDIS_PID" '{rps: (.rps|floor), p50_us, p99_us, redis_cpu_us: (.cpu_us_per_rpc[$r]|floor)}')"
  done
  stop
done
if [[ ${BENCH_MILLION:-1} != 0 ]]; then
  echo "## the context against how many customers there are (5 events each)"
  for n in 10000 1000000; do
    start
    "$BIN" bench seed --target "$T" --customers "$n" --events-per-customer 5 --concurrency 8 | tail -1
    echo "Redis used_memory: $(redis-cli -p "$REDIS_PORT" info memory | sed -n 's/^used_memory_human:\(.*\)\r/\1/p')"
    for c in 1 16 1 16; do
      echo "$n customers, c$c: $(run --scenario context -c "$c" --duration 3 --customers "$n" --pids "$SERVE_PID,$REDIS_PID" \
        | jq -c --arg r "$REDIS_PID" '{rps: (.rps|floor), p50_us, p99_us, redis_cpu_us: (.cpu_us_per_rpc[$r]|floor)}')"
    done
    stop
  done
fi
echo "# done $(date -u +%FT%TZ)"
