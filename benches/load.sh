#!/usr/bin/env bash
# HTTP load benchmark of tenet-server against a bare hyper server.
#
# Builds both in release mode, starts each on loopback, loads it with wrk
# and prints requests per second, p50 and p99 latency for each scenario,
# with the throughput as a ratio to the bare server measured in the same
# run. The bare server also runs with `--key-check`, the key check that
# no server of /protected can skip, and the report gives warm
# /protected as a ratio to it too: the cost of everything else that
# tenet-server does per request. With Postgres, it also runs `pgbench -S`
# at each concurrency of the Postgres-only scenario. With Redis, it
# measures `/protected` with a tenant rate limit decided in Redis, as a
# ratio to the same server without limits and to `redis-benchmark` of the
# limiter's script. Paired rounds then measure the bare server and the
# headline scenarios one after the other, several times, and the report
# gives the median of each round's ratios. Then it prints
# the server's idle resident memory and runs `cache_rss` for the memory per
# cached key. The bare server runs once more at the end, and the report
# shows how far its rate moved during the run.
#
# Every run is bounded by DURATION, and every server started here is
# stopped on exit. Traffic goes to 127.0.0.1 only; the script refuses
# Postgres or Redis URLs on other hosts.
#
# Settings (environment variables):
#   DURATION=10          seconds of each measured wrk or pgbench run
#   WARMUP=3             seconds of the unmeasured wrk run before each one
#   THREADS=1            wrk threads. One, as in the reference setup
#                        (`wrk -t1 -c32`): wrk shares the two cores with
#                        the server, and a second wrk thread takes CPU time
#                        that the server under test would otherwise get.
#   CONNECTIONS=32       wrk connections for the HTTP scenarios
#   PG_CONNECTIONS=8     wrk connections of the Postgres-only scenario and
#                        pgbench clients (-c), with 2 pgbench threads (-j).
#                        Both also run at CONNECTIONS, the concurrency of
#                        the other scenarios.
#   PORT=18480           tenet-server's port; the bare server uses PORT+1
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432
#                        Postgres server without a database; the script
#                        creates and drops the databases tenet_bench (for
#                        pgbench) and tenet_bench_server. Set it empty to
#                        skip the Postgres scenarios.
#   BENCH_PG_ADMIN_DB=postgres  database to connect to for CREATE DATABASE
#   BENCH_REDIS_URL=redis://127.0.0.1:6379
#                        Redis for the Postgres and Redis scenario, under a
#                        key prefix of this run that is deleted afterwards.
#                        Set it empty to skip that scenario.
#   RSS_KEYS=1000000     cached keys for the memory measurement; 0 skips it
#   ROUNDS=3             paired rounds of the headline scenarios (see
#                        "Paired rounds" below); 0 skips them
#
# Usage: benches/load.sh   (from anywhere inside the repository)

set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
PG_CONNECTIONS=${PG_CONNECTIONS:-8}
PORT=${PORT:-18480}
BENCH_PG_URL=${BENCH_PG_URL-postgres://postgres@127.0.0.1:5432}
BENCH_PG_ADMIN_DB=${BENCH_PG_ADMIN_DB:-postgres}
BENCH_REDIS_URL=${BENCH_REDIS_URL-redis://127.0.0.1:6379}
RSS_KEYS=${RSS_KEYS:-1000000}
ROUNDS=${ROUNDS:-3}

PGBENCH_DB=tenet_bench
SERVER_DB=tenet_bench_server
BARE_PORT=$((PORT + 1))
HOST=127.0.0.1

fail() {
    echo "load.sh: $*" >&2
    exit 1
}

note() {
    echo "load.sh: $*" >&2
}

# --- Tools -----------------------------------------------------------------

command -v wrk >/dev/null || fail "wrk is missing; install it with: apt-get install wrk"
for tool in cargo curl jq python3 ss; do
    command -v "$tool" >/dev/null || fail "$tool is missing; install it and run again"
done

# The servers started here take their settings from this script alone. A
# TENET_* variable of the caller's shell, such as TENET_DATABASE_URL, would
# point them at another store, and RUST_LOG would change their log lines.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(TENET_|RUST_LOG$)' || true)

# Returns success when a URL's host is a loopback address.
is_loopback_url() {
    local rest=${1#*://}
    rest=${rest#*@}
    case "$rest" in
        127.*|localhost|localhost[:/]*|"[::1]"*) return 0 ;;
        *) return 1 ;;
    esac
}

if [[ -n "$BENCH_PG_URL" ]]; then
    is_loopback_url "$BENCH_PG_URL" ||
        fail "BENCH_PG_URL must point at a loopback address (127.0.0.1, localhost or [::1])"
    if ! command -v psql >/dev/null || ! command -v pgbench >/dev/null; then
        note "psql or pgbench is missing (apt-get install postgresql-client); skipping Postgres"
        BENCH_PG_URL=
    elif ! psql "$BENCH_PG_URL/$BENCH_PG_ADMIN_DB" -Atqc 'SELECT 1' >/dev/null 2>&1; then
        note "cannot connect to $BENCH_PG_URL/$BENCH_PG_ADMIN_DB; skipping Postgres"
        BENCH_PG_URL=
    fi
fi
if [[ -n "$BENCH_REDIS_URL" ]]; then
    is_loopback_url "$BENCH_REDIS_URL" ||
        fail "BENCH_REDIS_URL must point at a loopback address (127.0.0.1, localhost or [::1])"
    if ! command -v redis-cli >/dev/null; then
        note "redis-cli is missing (apt-get install redis-tools); skipping Redis"
        BENCH_REDIS_URL=
    elif [[ "$(redis-cli -u "$BENCH_REDIS_URL" PING 2>/dev/null)" != PONG ]]; then
        note "Redis at $BENCH_REDIS_URL does not answer PING; skipping Redis"
        BENCH_REDIS_URL=
    fi
fi

for port in "$PORT" "$BARE_PORT"; do
    if [[ -n "$(ss -ltnH "sport = :$port")" ]]; then
        fail "port $port is in use; set PORT to a free port (PORT and PORT+1 are used)"
    fi
done

# --- Build -----------------------------------------------------------------

cd "$(dirname "$0")/.."
note "building tenet-server and the benchmark binaries in release mode"
cargo build --release --quiet -p tenet-server -p tenet-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
TENET_BIN=$target_dir/release/tenet-server
BARE_BIN=$target_dir/release/bare
RSS_BIN=$target_dir/release/cache_rss

HELP=$("$TENET_BIN" --help)
has_flag() {
    grep -q -- "$1[ =<]" <<<"$HELP"
}

# --- Run state and cleanup -------------------------------------------------

umask 077
WORK=$(mktemp -d -t tenet-load.XXXXXX)
REDIS_PREFIX="tenet-bench-$$-$RANDOM:"
SERVER_PID=
STOP_SIGNAL=
CREATED_DBS=()
# Keeps psql quiet about "does not exist, skipping" notices.
export PGOPTIONS='-c client_min_messages=warning'

# Stops the running server with STOP_SIGNAL and waits at most 10 s.
# tenet-server gets SIGINT, which skips its drain delay. The bare server
# gets SIGTERM, because background jobs of a script ignore SIGINT.
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill "-$STOP_SIGNAL" "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        note "process $SERVER_PID did not stop within 10 s; killing it"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    stop_server
    for db in "${CREATED_DBS[@]}"; do
        psql "$BENCH_PG_URL/$BENCH_PG_ADMIN_DB" -Atqc "DROP DATABASE IF EXISTS $db" >/dev/null ||
            note "cannot drop database $db; drop it by hand"
    done
    if [[ -n "$BENCH_REDIS_URL" ]]; then
        redis-cli -u "$BENCH_REDIS_URL" --scan --pattern "$REDIS_PREFIX*" |
            xargs -r -n 500 redis-cli -u "$BENCH_REDIS_URL" DEL >/dev/null ||
            note "cannot delete the Redis keys under $REDIS_PREFIX"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random_secret() {
    head -c 32 /dev/urandom | base64 | tr -d '\n/+='
}

# Secrets of this run: passed to tenet-server through its environment and
# to curl and wrk through files in $WORK, never on a command line.
PEPPER=$(random_secret)
ADMIN_TOKEN=$(random_secret)
printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN" >"$WORK/admin.header"

create_database() {
    psql "$BENCH_PG_URL/$BENCH_PG_ADMIN_DB" -Atqc "DROP DATABASE IF EXISTS $1" >/dev/null
    psql "$BENCH_PG_URL/$BENCH_PG_ADMIN_DB" -Atqc "CREATE DATABASE $1" >/dev/null
    CREATED_DBS+=("$1")
}

# Waits up to 10 s for a 200 from URL (or a 401 when READY is 401). On a
# failure it shows the end of ERROR_FILE, the server's standard error,
# because the cleanup deletes that file.
# Usage: wait_ready URL ERROR_FILE [READY]
wait_ready() {
    local code
    for _ in $(seq 100); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null || true)
        if [[ "$code" == 200 || ("$code" == 401 && "${3:-}" == 401) ]]; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null ||
            fail "the server exited at start: $(tail -n 5 "$2")"
        sleep 0.1
    done
    fail "no 200 from $1 within 10 s; its standard error: $(tail -n 5 "$2")"
}

resident_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Starts tenet-server on $PORT with a fresh data directory; extra
# arguments are passed on. Log lines go to /dev/null, errors to a file.
start_tenet() {
    local name=$1
    shift
    local data="$WORK/$name-data"
    TENET_KEY_PEPPER=$PEPPER TENET_ADMIN_TOKEN=$ADMIN_TOKEN \
        "$TENET_BIN" --listen "$HOST:$PORT" --data-dir "$data" "$@" \
        >/dev/null 2>"$WORK/$name.err" &
    SERVER_PID=$!
    STOP_SIGNAL=INT
    wait_ready "http://$HOST:$PORT/healthz" "$WORK/$name.err"
}

# Starts the bare server with ARGS after its address.
start_bare() {
    "$BARE_BIN" "$HOST:$BARE_PORT" "$@" >/dev/null 2>"$WORK/bare.err" &
    SERVER_PID=$!
    STOP_SIGNAL=TERM
    local ready=200
    if [[ "${1:-}" == --key-check ]]; then
        # Without a key, the key check returns 401.
        ready=401
    fi
    wait_ready "http://$HOST:$BARE_PORT/" "$WORK/bare.err" "$ready"
}

# Issues a key over the API and writes a wrk script that sends it, and
# the key alone to valid.key for the bare server's key check.
issue_key_script() {
    local base="http://$HOST:$PORT" tenant
    tenant=$(curl -fsS --max-time 10 -H @"$WORK/admin.header" \
        -H 'Content-Type: application/json' -d '{"name":"Bench"}' "$base/tenants" |
        jq -r .id) || fail "creating a tenant failed"
    curl -fsS --max-time 10 -H @"$WORK/admin.header" -X POST "$base/tenants/$tenant/keys" \
        >"$WORK/issued.json" || fail "issuing a key to tenant $tenant failed"
    jq -r .api_key "$WORK/issued.json" >"$WORK/valid.key"
    jq -r '"wrk.headers[\"X-API-Key\"] = \"" + .api_key + "\""' "$WORK/issued.json" \
        >"$WORK/valid.lua"
    rm -f "$WORK/issued.json"
    TENANT_ID=$tenant
}

# Gives the tenant of the last issue_key_script a rate limit far above any
# load this machine can offer, so that every request passes but each one
# runs the limiter's decision.
set_unreachable_tenant_limit() {
    curl -fsS --max-time 10 -H @"$WORK/admin.header" -H 'Content-Type: application/json' \
        -X PUT -d '{"limit": {"rate": 1000000, "period_seconds": 1, "burst": 1000000}}' \
        "http://$HOST:$PORT/tenants/$TENANT_ID/limits" >/dev/null ||
        fail "setting the limits of tenant $TENANT_ID failed"
}

# Runs redis-benchmark on the limiter's decision script (copied from
# tenet-core/src/ratelimit/redis.rs) with one key, as the server runs it
# for a tenant limit, and prints the requests per second.
benchmark_limit_script() {
    local source=tenet-core/src/ratelimit/redis.rs script sha rest host port
    script=$(awk '/^const DECIDE_SCRIPT: &str = r"$/ { on = 1; next }
        on && /^";$/ { exit } on { print }' "$source")
    [[ -n "$script" ]] || fail "cannot find DECIDE_SCRIPT in $source"
    sha=$(redis-cli -u "$BENCH_REDIS_URL" SCRIPT LOAD "$script")
    rest=${BENCH_REDIS_URL#*://}
    rest=${rest#*@}
    rest=${rest%%/*}
    host=${rest%:*}
    port=${rest##*:}
    [[ "$port" == "$rest" ]] && port=6379
    # ARGV: consume, then the interval (1 µs) and tolerance (1 s) of a
    # limit of 1,000,000 per second with a burst of 1,000,000, not shadow.
    timeout 600 redis-benchmark -h "$host" -p "$port" -c "$CONNECTIONS" -n 300000 -q \
        EVALSHA "$sha" 1 "${REDIS_PREFIX}bench:limit" 1 1 1000000 0 |
        tr '\r' '\n' |
        sed -n 's/.*[^0-9.]\([0-9][0-9.]*\) requests per second.*/\1/p' | tail -n 1
}

# Writes a wrk script with a well-formed key that was never issued:
# 32 random bytes and their CRC-32 in URL-safe base64, after `tnt_`.
unknown_key_script() {
    python3 - >"$WORK/unknown.lua" <<'EOF'
import base64, os, zlib
secret = os.urandom(32)
text = lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")
key = "tnt_" + text(secret) + text(zlib.crc32(secret).to_bytes(4, "big"))
print('wrk.headers["X-API-Key"] = "%s"' % key)
EOF
}

# --- Measurement -----------------------------------------------------------

RESULTS=()
WARM_RPS=
FLOOR_RPS=
declare -A BARE_RPS=()
LAST_RPS=
# Concurrencies of the Postgres-only scenario and pgbench, and the
# requests/s of that scenario at each.
PG_LEVELS=("$PG_CONNECTIONS")
if [[ "$PG_CONNECTIONS" != "$CONNECTIONS" ]]; then
    PG_LEVELS+=("$CONNECTIONS")
fi
declare -A PG_ONLY_RPS=()

# Runs wrk against URL with SCRIPT (or none) at CONNECTIONS and records
# one result row. EXPECT is 2xx or non-2xx: the responses every request
# must get.
measure() {
    local label=$1 url=$2 script=$3 connections=$4 expect=$5
    local args=(-t "$THREADS" -c "$connections" --latency)
    if [[ -n "$script" ]]; then
        args+=(-s "$script")
    fi

    timeout 600 wrk "${args[@]}" -d "${WARMUP}s" "$url" >/dev/null
    local out="$WORK/wrk-${#RESULTS[@]}.txt"
    timeout 600 wrk "${args[@]}" -d "${DURATION}s" "$url" >"$out"

    local rps p50 p99 requests non2xx errors
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    requests=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    errors=$(grep -m1 'Socket errors:' "$out" || true)
    non2xx=${non2xx:-0}
    if [[ "$expect" == 2xx && "$non2xx" != 0 ]]; then
        note "$label: $non2xx of $requests responses were not 2xx"
    elif [[ "$expect" == non-2xx && "$non2xx" != "$requests" ]]; then
        note "$label: only $non2xx of $requests responses were errors"
    fi
    if [[ -n "$errors" ]]; then
        note "$label: wrk reported $errors"
    fi

    # The first run at each connection count is the bare server's.
    if [[ -z "${BARE_RPS[$connections]:-}" ]]; then
        BARE_RPS[$connections]=$rps
    fi
    local ratio
    ratio=$(awk -v rps="$rps" -v bare="${BARE_RPS[$connections]}" \
        'BEGIN { printf "%.2f", rps / bare }')
    LAST_RPS=$rps
    RESULTS+=("$(printf '%-44s %11s %9s %9s %8s  -c %s' \
        "$label" "$rps" "$p50" "$p99" "$ratio" "$connections")")
    echo "${RESULTS[-1]}" >&2
}

# Runs wrk against URL with SCRIPT (or none) at CONNECTIONS, after the
# warm-up, and prints the requests per second. Every response must be 2xx.
rate() {
    local url=$1 script=$2
    local args=(-t "$THREADS" -c "$CONNECTIONS")
    if [[ -n "$script" ]]; then
        args+=(-s "$script")
    fi
    timeout 600 wrk "${args[@]}" -d "${WARMUP}s" "$url" >/dev/null
    local out="$WORK/rate.txt"
    timeout 600 wrk "${args[@]}" -d "${DURATION}s" "$url" >"$out"
    if grep -q 'Non-2xx or 3xx responses:\|Socket errors:' "$out"; then
        note "$url: $(grep -m1 'Non-2xx or 3xx responses:\|Socket errors:' "$out")"
    fi
    awk '/^Requests\/sec:/ { print $2 }' "$out"
}

note "date: $(date -u '+%Y-%m-%d %H:%M UTC'); nproc: $(nproc);" \
    "CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
note "wrk -t $THREADS, ${WARMUP}s warm-up then ${DURATION}s measured per scenario"

start_bare
measure "bare hyper hello world" "http://$HOST:$BARE_PORT/" "" "$CONNECTIONS" 2xx
if [[ "$PG_CONNECTIONS" != "$CONNECTIONS" ]]; then
    measure "bare hyper hello world, -c $PG_CONNECTIONS" "http://$HOST:$BARE_PORT/" "" \
        "$PG_CONNECTIONS" 2xx
fi
stop_server

PROTECTED="http://$HOST:$PORT/protected"
unknown_key_script

# The unknown-key scenarios measure key verification. The limit of failed
# authentications would return 429 once the one load-generator address
# used its burst, so it is off on the servers that run them.
NO_AUTH_FAILURE_LIMIT=()
if has_flag --auth-failure-rate; then
    NO_AUTH_FAILURE_LIMIT=(--auth-failure-rate 0)
fi

if has_flag --cache-capacity; then
    start_tenet sqlite-cached "${NO_AUTH_FAILURE_LIMIT[@]}"
    IDLE_KIB=$(resident_kib "$SERVER_PID")
    measure "/healthz (no key check)" "http://$HOST:$PORT/healthz" "" "$CONNECTIONS" 2xx
    issue_key_script
    measure "/protected valid key, warm cache (SQLite)" "$PROTECTED" "$WORK/valid.lua" \
        "$CONNECTIONS" 2xx
    WARM_RPS=$LAST_RPS
    measure "/protected unknown key, cached miss" "$PROTECTED" "$WORK/unknown.lua" \
        "$CONNECTIONS" non-2xx
    LOADED_KIB=$(resident_kib "$SERVER_PID")
    stop_server

    # The minimum work of any server of /protected: the bare server with
    # the key check of the criterion floor and the same JSON body.
    start_bare --key-check "$WORK/valid.key"
    measure "bare hyper + key check floor" "http://$HOST:$BARE_PORT/protected" \
        "$WORK/valid.lua" "$CONNECTIONS" 2xx
    FLOOR_RPS=$LAST_RPS
    stop_server

    # The same warm path without the per-request log line, which shows
    # what that line costs.
    RUST_LOG=warn start_tenet sqlite-quiet
    issue_key_script
    measure "/protected valid key, warm, RUST_LOG=warn" "$PROTECTED" "$WORK/valid.lua" \
        "$CONNECTIONS" 2xx
    stop_server

    if has_flag --access-log-sample; then
        start_tenet sqlite-sampled --access-log-sample 100
        issue_key_script
        measure "/protected valid key, warm, --access-log-sample 100" "$PROTECTED" \
            "$WORK/valid.lua" "$CONNECTIONS" 2xx
        stop_server
    fi

    start_tenet sqlite-uncached --cache-capacity 0
    issue_key_script
    measure "/protected valid key, SQLite, cache off" "$PROTECTED" "$WORK/valid.lua" \
        "$CONNECTIONS" 2xx
    stop_server
else
    note "tenet-server has no --cache-capacity flag: it runs without a cache," \
        "so the warm-cache scenarios are skipped"
    start_tenet sqlite "${NO_AUTH_FAILURE_LIMIT[@]}"
    IDLE_KIB=$(resident_kib "$SERVER_PID")
    measure "/healthz (no key check)" "http://$HOST:$PORT/healthz" "" "$CONNECTIONS" 2xx
    issue_key_script
    measure "/protected valid key, SQLite, no cache" "$PROTECTED" "$WORK/valid.lua" \
        "$CONNECTIONS" 2xx
    measure "/protected unknown key, SQLite, no cache" "$PROTECTED" "$WORK/unknown.lua" \
        "$CONNECTIONS" non-2xx
    LOADED_KIB=$(resident_kib "$SERVER_PID")
    stop_server
fi

declare -A PGBENCH_TPS=()
declare -A PGBENCH_LATENCY=()
UNLIMITED_RPS=
LIMITED_RPS=
SCRIPT_RPS=
TENANT_ID=
if [[ -z "$BENCH_PG_URL" ]]; then
    note "Postgres scenarios skipped"
elif ! has_flag --database-url || ! has_flag --cache-capacity; then
    note "tenet-server has no --database-url or --cache-capacity flag; Postgres scenarios skipped"
else
    create_database "$SERVER_DB"
    start_tenet postgres --database-url "$BENCH_PG_URL/$SERVER_DB" --cache-capacity 0
    issue_key_script
    for connections in "${PG_LEVELS[@]}"; do
        measure "/protected valid key, Postgres, cache off" "$PROTECTED" "$WORK/valid.lua" \
            "$connections" 2xx
        PG_ONLY_RPS[$connections]=$LAST_RPS
    done
    stop_server

    if [[ -z "$BENCH_REDIS_URL" ]]; then
        note "Postgres and Redis scenario skipped"
    elif ! has_flag --redis-url || ! has_flag --redis-key-prefix; then
        note "tenet-server has no --redis-url or --redis-key-prefix flag; Redis scenario skipped"
    else
        start_tenet postgres-redis --database-url "$BENCH_PG_URL/$SERVER_DB" \
            --redis-url "$BENCH_REDIS_URL" --redis-key-prefix "$REDIS_PREFIX"
        issue_key_script
        measure "/protected valid key, Postgres+Redis, warm" "$PROTECTED" "$WORK/valid.lua" \
            "$CONNECTIONS" 2xx
        UNLIMITED_RPS=$LAST_RPS
        if has_flag --limit-refresh; then
            set_unreachable_tenant_limit
            measure "/protected Postgres+Redis, warm, Redis rate limit" "$PROTECTED" \
                "$WORK/valid.lua" "$CONNECTIONS" 2xx
            LIMITED_RPS=$LAST_RPS
        fi
        stop_server
        if [[ -n "$LIMITED_RPS" ]] && command -v redis-benchmark >/dev/null; then
            SCRIPT_RPS=$(benchmark_limit_script)
            note "redis-benchmark -c $CONNECTIONS EVALSHA of the limit script: $SCRIPT_RPS requests/s"
        fi
    fi
fi

if [[ -n "$BENCH_PG_URL" ]]; then
    create_database "$PGBENCH_DB"
    pgbench -q -i -s 1 "$BENCH_PG_URL/$PGBENCH_DB" >/dev/null 2>&1
    for connections in "${PG_LEVELS[@]}"; do
        timeout 600 pgbench -S -M prepared -c "$connections" -j 2 -T "$DURATION" -n \
            "$BENCH_PG_URL/$PGBENCH_DB" >"$WORK/pgbench.txt" 2>&1
        PGBENCH_TPS[$connections]=$(awk '/^tps = / { print $3; exit }' "$WORK/pgbench.txt")
        latency=$(awk '/^latency average/ { print $4, $5 }' "$WORK/pgbench.txt")
        PGBENCH_LATENCY[$connections]=$latency
        note "pgbench -S -M prepared -c $connections -j 2 -T $DURATION:" \
            "${PGBENCH_TPS[$connections]} tps, average latency $latency"
    done
fi

# --- Paired rounds ---------------------------------------------------------
#
# On a shared machine the bare server's rate moves by a tenth between runs
# a few minutes apart, and every ratio above moves with it. Each round
# measures these between two runs of the bare server: warm /protected,
# the key check floor, warm /protected on Postgres and Redis (when both
# are set) and warm /protected with one access line in 100. Each rate is
# a ratio to the mean of the two bare runs, and the report gives the
# median and the range of each ratio over the rounds.
ROUND_NAMES=("bare hyper + key check floor" "/protected warm (SQLite)")
ROUND_PG_REDIS=
if [[ -n "$BENCH_PG_URL" && -n "$BENCH_REDIS_URL" ]] && has_flag --database-url &&
    has_flag --redis-url && has_flag --redis-key-prefix; then
    ROUND_PG_REDIS=${#ROUND_NAMES[@]}
    ROUND_NAMES+=("/protected warm (Postgres+Redis)")
    [[ " ${CREATED_DBS[*]} " == *" $SERVER_DB "* ]] || create_database "$SERVER_DB"
fi
ROUND_SAMPLED=
if has_flag --access-log-sample; then
    ROUND_SAMPLED=${#ROUND_NAMES[@]}
    ROUND_NAMES+=("/protected warm, 1 access line in 100")
fi
declare -A ROUND_RATIOS=()
# Measures the bare server and records its rate in BARE_ROUND_RPS.
bare_round() {
    start_bare
    BARE_ROUND_RPS+=("$(rate "http://$HOST:$BARE_PORT/" "")")
    stop_server
}
BARE_ROUND_RPS=()
declare -A ROUND_RPS=()
if [[ "$ROUNDS" -gt 0 ]] && has_flag --cache-capacity; then
    note "paired rounds: $ROUNDS"
    bare_round
    for round in $(seq "$ROUNDS"); do
        start_tenet "round-$round"
        issue_key_script
        ROUND_RPS[1,$round]=$(rate "$PROTECTED" "$WORK/valid.lua")
        stop_server

        start_bare --key-check "$WORK/valid.key"
        ROUND_RPS[0,$round]=$(rate "http://$HOST:$BARE_PORT/" "$WORK/valid.lua")
        stop_server

        if [[ -n "$ROUND_PG_REDIS" ]]; then
            start_tenet "round-$round-pg-redis" --database-url "$BENCH_PG_URL/$SERVER_DB" \
                --redis-url "$BENCH_REDIS_URL" --redis-key-prefix "$REDIS_PREFIX"
            issue_key_script
            ROUND_RPS[$ROUND_PG_REDIS,$round]=$(rate "$PROTECTED" "$WORK/valid.lua")
            stop_server
        fi

        if [[ -n "$ROUND_SAMPLED" ]]; then
            start_tenet "round-$round-sampled" --access-log-sample 100
            issue_key_script
            ROUND_RPS[$ROUND_SAMPLED,$round]=$(rate "$PROTECTED" "$WORK/valid.lua")
            stop_server
        fi
        bare_round

        # The round's bare rate is the mean of the runs before and after it.
        bare_rps=$(awk -v a="${BARE_ROUND_RPS[$((round - 1))]}" -v b="${BARE_ROUND_RPS[$round]}" \
            'BEGIN { printf "%.2f", (a + b) / 2 }')
        line="round $round: bare $bare_rps/s"
        for i in "${!ROUND_NAMES[@]}"; do
            ratio=$(awk -v rps="${ROUND_RPS[$i,$round]}" -v bare="$bare_rps" \
                'BEGIN { printf "%.2f", rps / bare }')
            ROUND_RATIOS[$i]+="$ratio "
            line+=", ${ROUND_NAMES[$i]} $ratio"
        done
        note "$line"
    done
fi

# The bare server once more, at the end: a rate far from the first one
# means the host's load changed during the run, and the ratios with it.
start_bare
measure "bare hyper hello world, at the end" "http://$HOST:$BARE_PORT/" "" "$CONNECTIONS" 2xx
BARE_END_RPS=$LAST_RPS
stop_server

# --- Report ----------------------------------------------------------------

echo
echo "date $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc)," \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "wrk -t $THREADS -d ${DURATION}s --latency (after a ${WARMUP}s warm-up);" \
    "ratio = requests/s over the bare server's at the same connection count"
printf '%-44s %11s %9s %9s %8s  %s\n' scenario requests/s p50 p99 ratio connections
printf '%s\n' "${RESULTS[@]}"
for connections in "${PG_LEVELS[@]}"; do
    tps=${PGBENCH_TPS[$connections]:-}
    [[ -n "$tps" ]] || continue
    echo "pgbench -S -M prepared -c $connections -j 2: $tps tps" \
        "(average latency ${PGBENCH_LATENCY[$connections]})"
    if [[ -n "${PG_ONLY_RPS[$connections]:-}" ]]; then
        awk -v rps="${PG_ONLY_RPS[$connections]}" -v tps="$tps" -v c="$connections" \
            'BEGIN { printf "Postgres, cache off, -c %s: %.2f of pgbench -S tps\n", c, rps / tps }'
    fi
done
if [[ -n "$LIMITED_RPS" ]]; then
    awk -v limited="$LIMITED_RPS" -v unlimited="$UNLIMITED_RPS" \
        'BEGIN { printf "Redis rate limit: %.2f of the same server without limits\n", limited / unlimited }'
fi
if [[ -n "$SCRIPT_RPS" ]]; then
    awk -v limited="$LIMITED_RPS" -v script="$SCRIPT_RPS" \
        'BEGIN { printf "Redis rate limit: %.2f of redis-benchmark EVALSHA of the limit script (%s/s)\n", limited / script, script }'
fi
awk -v first="${BARE_RPS[$CONNECTIONS]}" -v last="$BARE_END_RPS" 'BEGIN {
    drift = last / first
    printf "bare server at the end: %.2f of its first rate", drift
    if (drift < 0.9 || drift > 1.1) printf "; the host load changed, so rerun on a quieter machine"
    printf "\n"
}'
if [[ -n "${ROUND_RATIOS[0]:-}" ]]; then
    echo "paired rounds ($ROUNDS; ratio to the mean of the bare runs before and after each):"
    for i in "${!ROUND_NAMES[@]}"; do
        # shellcheck disable=SC2086 # the ratios are space-separated numbers
        printf '%s\n' ${ROUND_RATIOS[$i]} | sort -n | awk -v name="${ROUND_NAMES[$i]}" '
            { ratio[NR] = $1 }
            END {
                median = NR % 2 ? ratio[(NR + 1) / 2] : (ratio[NR / 2] + ratio[NR / 2 + 1]) / 2
                printf "  %-40s median %.2f (%.2f to %.2f)\n", name, median, ratio[1], ratio[NR]
            }'
    done
fi
if [[ -n "$FLOOR_RPS" ]]; then
    awk -v warm="$WARM_RPS" -v floor="$FLOOR_RPS" \
        'BEGIN { printf "warm /protected: %.2f of the bare server with the key check floor\n", warm / floor }'
fi
echo "tenet-server VmRSS: $((IDLE_KIB / 1024)) MiB idle, $((LOADED_KIB / 1024)) MiB after load"

if [[ "$RSS_KEYS" != 0 ]]; then
    echo "cache_rss $RSS_KEYS:"
    "$RSS_BIN" "$RSS_KEYS"
fi
