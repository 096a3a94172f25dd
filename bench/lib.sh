# Shared by the bench scripts (sourced, not run): their prerequisites, the
# processes they start stopped on exit, free loopback ports, waiting for a
# process to come up, a fresh redis-server, and medians. Needs OUT (where
# logs go) set by the script.

PIDS=()
# Stops every process started (kept in PIDS), and forgets them.
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port. Another process could take it before we bind it;
# the start-up checks then fail loudly rather than measure the wrong thing.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

# Polls a command until it succeeds, for up to WAIT_SECONDS (10).
wait_for() {
  local what=$1; shift
  for _ in $(seq $(( ${WAIT_SECONDS:-10} * 10 ))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$(basename "$0"): $what did not come up; logs in $OUT" >&2
  exit 1
}

# Exits with a clear message unless every tool named is installed and the
# journey binary is at $BIN.
require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool is required" >&2; exit 1; }
  done
  [[ -x $BIN ]] || {
    echo "$(basename "$0"): no binary at $BIN: run 'cargo build --release' (set JOURNEY_BIN or CARGO_TARGET_DIR if it is elsewhere)" >&2
    exit 1
  }
}

# Starts a fresh redis-server on a free loopback port with persistence off
# and BENCH_REDIS_CONF's settings (deploy/redis-journey.conf; '' for
# Redis's defaults); sets REDIS_CONF, REDIS_PORT and REDIS_PID.
start_redis() {
  REDIS_CONF=${BENCH_REDIS_CONF-deploy/redis-journey.conf}
  REDIS_PORT=$(free_port)
  # The settings file first: the command-line options after it win.
  redis-server ${REDIS_CONF:+"$REDIS_CONF"} --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_for redis-server redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
}

# The median of the numbers on stdin, one per line ("nan" for none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
