#!/usr/bin/env bash
# A/B of cache-off `/protected` on Postgres, with CPU time per request.
#
# Runs each given tenet-server binary in turn, ROUNDS times, alternating, as
# load.sh runs its "Postgres, cache off" scenario: a fresh database, one
# issued key, `--cache-capacity 0`, then `wrk -t 2 -c $CONNECTIONS` for
# WARMUP unmeasured and DURATION measured seconds. After each round it runs
# `pgbench -S -M prepared -c $CONNECTIONS -j 2` for the same time.
#
# For each run it prints requests/s and the CPU time (utime + stime) per
# request of the server process, of the Postgres backends of the server's
# database, and of wrk, from /proc. The server and Postgres figures cover
# the measured run less its first and last second, and wrk's all of it.
# It also prints statements per request (transactions of the database in
# pg_stat_database, an estimate) and the share of idle CPU of the whole
# machine, which counts every other process too. The pgbench lines give
# the same CPU split per transaction. At the end it prints the median
# requests/s of each binary and of pgbench, and their ratio.
#
# /proc counts CPU time in clock ticks (10 ms where `getconf CLK_TCK` is
# 100), a fraction of a percent of what each process uses in a 10 s run.
#
# Settings (environment variables):
#   ROUNDS=3         rounds; each runs every binary once, then pgbench
#   DURATION=10      seconds of each measured wrk or pgbench run
#   WARMUP=3         seconds of the unmeasured wrk run before each one
#   CONNECTIONS=8    wrk connections and pgbench clients
#   PORT=18590       the servers' port on 127.0.0.1
#   BENCH_PG_URL=postgres://postgres@127.0.0.1:5432
#                    Postgres server without a database; the script creates
#                    and drops tenet_cpu_server and tenet_cpu_pgbench
#
# Usage: benches/pg_cpu.sh BINARY [BINARY...]
#   e.g. benches/pg_cpu.sh /tmp/before/tenet-server target/release/tenet-server

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-8}
PORT=${PORT:-18590}
BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}

SERVER_DB=tenet_cpu_server
PGBENCH_DB=tenet_cpu_pgbench
BASE="http://127.0.0.1:$PORT"

fail() {
    echo "pg_cpu.sh: $*" >&2
    exit 1
}

(($# > 0)) || fail "usage: benches/pg_cpu.sh BINARY [BINARY...]"
((DURATION >= 3)) || fail "DURATION must be at least 3 seconds, got $DURATION"
for binary in "$@"; do
    [[ -x "$binary" ]] || fail "$binary is not an executable file"
done
[[ -x /usr/bin/time ]] || fail "/usr/bin/time is missing; install it with: apt-get install time"
for tool in wrk curl jq psql pgbench ss; do
    command -v "$tool" >/dev/null || fail "$tool is missing; install it and run again"
done
rest=${BENCH_PG_URL#*://}
rest=${rest#*@}
case "$rest" in
    127.*|localhost|localhost[:/]*|"[::1]"*) ;;
    *) fail "BENCH_PG_URL must point at a loopback address (127.0.0.1, localhost or [::1])" ;;
esac
[[ -z "$(ss -ltnH "sport = :$PORT")" ]] || fail "port $PORT is in use; set PORT to a free port"

umask 077
WORK=$(mktemp -d -t tenet-pg-cpu.XXXXXX)
SERVER_PID=
export PGOPTIONS='-c client_min_messages=warning'
TICKS=$(getconf CLK_TCK)

admin_sql() {
    psql "$BENCH_PG_URL/postgres" -Atqc "$1"
}

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -INT "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    stop_server
    admin_sql "DROP DATABASE IF EXISTS $SERVER_DB WITH (FORCE)" >/dev/null || true
    admin_sql "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random_secret() {
    head -c 32 /dev/urandom | base64 | tr -d '\n/+='
}

# Secrets reach the server through its environment and curl and wrk
# through files in $WORK, never a command line or the output.
PEPPER=$(random_secret)
ADMIN_TOKEN=$(random_secret)
printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN" >"$WORK/admin.header"

# Prints the CPU time of process $1 in clock ticks, or 0 once it is gone.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Prints the pids of the backends of database $1, found by their process
# titles under the OS user postgres.
backend_pids() {
    pgrep -u postgres -f "postgres: .*: [^ ]+ $1 " || true
}

# Prints "PID TICKS" for every backend of database $1.
backend_ticks() {
    local pid
    for pid in $(backend_pids "$1"); do
        echo "$pid $(cpu_ticks "$pid")"
    done
}

# Prints the ticks that the backends of database $1 used since the
# snapshot in file $2. A backend that started since then counts in full.
# NOTE: a backend that exited since then is left out, so the figure is low
# when the server's pool closed connections during the run.
backend_delta() {
    local before=$2
    backend_ticks "$1" | awk -v before="$before" '
        BEGIN { while ((getline line < before) > 0) { split(line, f, " "); start[f[1]] = f[2] } }
        { total += $2 - start[$1] }
        END { print total + 0 }'
}

idle_ticks() {
    awk '/^cpu / { print $5 + $6 }' /proc/stat
}

transactions() {
    admin_sql "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$SERVER_DB'"
}

# Measures binary $1 once and prints its result line, labelled $2.
measure_server() {
    local binary=$1 label=$2
    admin_sql "DROP DATABASE IF EXISTS $SERVER_DB WITH (FORCE)" >/dev/null
    admin_sql "CREATE DATABASE $SERVER_DB" >/dev/null
    rm -rf "$WORK/data"
    TENET_KEY_PEPPER=$PEPPER TENET_ADMIN_TOKEN=$ADMIN_TOKEN "$binary" \
        --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
        --database-url "$BENCH_PG_URL/$SERVER_DB" --cache-capacity 0 \
        >/dev/null 2>"$WORK/server.err" &
    SERVER_PID=$!
    local ready=
    for _ in $(seq 100); do
        if curl -fsS -o /dev/null --max-time 1 "$BASE/healthz" 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    [[ -n "$ready" ]] || fail "$binary did not answer /healthz within 10 s; see $WORK/server.err"

    local tenant
    tenant=$(curl -fsS --max-time 10 -H @"$WORK/admin.header" -H 'Content-Type: application/json' \
        -d '{"name":"Bench"}' "$BASE/tenants" | jq -r .id) || fail "creating a tenant failed"
    curl -fsS --max-time 10 -H @"$WORK/admin.header" -X POST "$BASE/tenants/$tenant/keys" |
        jq -r '"wrk.headers[\"X-API-Key\"] = \"" + .api_key + "\""' >"$WORK/valid.lua" ||
        fail "issuing a key to tenant $tenant failed"

    local wrk_args=(-t 2 -c "$CONNECTIONS" -s "$WORK/valid.lua")
    timeout 600 wrk "${wrk_args[@]}" -d "${WARMUP}s" "$BASE/protected" >/dev/null

    # The CPU readings cover the run less its first and last second, while
    # wrk keeps every connection busy. At the end, wrk closes its
    # connections, the server drops the lookups in flight, and the pool
    # closes a connection whose statement was cut short, so its backend
    # exits and its CPU time can no longer be read.
    local window=$((DURATION - 2)) wrk_pid server0 idle0 xact0 server1 idle1 xact1 postgres
    /usr/bin/time -f '%U %S' -o "$WORK/wrk.time" \
        timeout 600 wrk "${wrk_args[@]}" -d "${DURATION}s" "$BASE/protected" >"$WORK/wrk.txt" &
    wrk_pid=$!
    sleep 1
    backend_ticks "$SERVER_DB" >"$WORK/backends.before"
    # PostgreSQL 15 backends publish their transaction counts at most once
    # a second (PGSTAT_MIN_INTERVAL), so statements per request is an
    # estimate.
    xact0=$(transactions)
    idle0=$(idle_ticks)
    server0=$(cpu_ticks "$SERVER_PID")
    sleep "$window"
    server1=$(cpu_ticks "$SERVER_PID")
    idle1=$(idle_ticks)
    postgres=$(backend_delta "$SERVER_DB" "$WORK/backends.before")
    xact1=$(transactions)
    wait "$wrk_pid" || fail "wrk failed; see $WORK/wrk.txt"
    stop_server

    local requests rps non2xx
    requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.txt")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.txt")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.txt")
    awk -v label="$label" -v rps="$rps" -v requests="$requests" -v ticks="$TICKS" \
        -v window="$window" \
        -v server=$((server1 - server0)) -v postgres="$postgres" \
        -v wrk="$(awk '{ print $1 + $2 }' "$WORK/wrk.time")" \
        -v statements=$((xact1 - xact0)) -v idle=$((idle1 - idle0)) \
        -v cores="$(nproc)" -v non2xx="${non2xx:-0}" \
        'BEGIN {
            # Requests in the window, from the mean rate of the whole run.
            windowed = rps * window
            us = 1e6 / ticks / windowed
            printf "%-12s %10.0f req/s  server %6.2f  postgres %6.2f  wrk %6.2f us/req  " \
                "statements/req %.3f  idle %3.0f%%  non-2xx %s\n", label, rps, server * us,
                postgres * us, wrk * 1e6 / requests, statements / windowed,
                100 * idle / ticks / window / cores, non2xx
        }'
}

measure_pgbench() {
    local pid elapsed
    timeout 600 /usr/bin/time -f '%U %S' -o "$WORK/pgbench.time" \
        pgbench -S -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -n \
        "$BENCH_PG_URL/$PGBENCH_DB" >"$WORK/pgbench.txt" 2>&1 &
    pid=$!
    # The backends exist once pgbench has connected; measure the seconds
    # between 1 s in and 1 s before the end.
    sleep 1
    backend_ticks "$PGBENCH_DB" >"$WORK/pgbench.before"
    elapsed=$((DURATION - 2))
    sleep "$elapsed"
    local postgres
    postgres=$(backend_delta "$PGBENCH_DB" "$WORK/pgbench.before")
    wait "$pid" || fail "pgbench failed; see $WORK/pgbench.txt"
    awk -v tps="$(awk '/^tps = / { print $3; exit }' "$WORK/pgbench.txt")" \
        -v postgres="$postgres" -v ticks="$TICKS" -v elapsed="$elapsed" \
        -v client="$(awk '{ print $1 + $2 }' "$WORK/pgbench.time")" -v seconds="$DURATION" \
        'BEGIN {
            printf "%-12s %10.0f tx/s   postgres %6.2f  pgbench %6.2f us/tx\n", "pgbench", tps,
                postgres * 1e6 / ticks / (tps * elapsed), client * 1e6 / (tps * seconds)
        }'
}

echo "date $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc)," \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "wrk -t 2 -c $CONNECTIONS -d ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"

admin_sql "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)" >/dev/null
admin_sql "CREATE DATABASE $PGBENCH_DB" >/dev/null
pgbench -q -i -s 1 "$BENCH_PG_URL/$PGBENCH_DB" >/dev/null 2>&1 || fail "pgbench -i failed"

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    index=0
    for binary in "$@"; do
        index=$((index + 1))
        # Not in a pipeline, which would run it in a subshell and hide
        # SERVER_PID from the cleanup on exit.
        measure_server "$binary" "binary$index" >"$WORK/line"
        tee -a "$WORK/results" <"$WORK/line"
    done
    measure_pgbench >"$WORK/line"
    tee -a "$WORK/results" <"$WORK/line"
done

echo "medians over $ROUNDS rounds:"
for label in $(seq -f 'binary%g' "$#") pgbench; do
    awk -v label="$label" '$1 == label { print $2 }' "$WORK/results" | sort -n |
        awk -v label="$label" '{ value[NR] = $1 }
            END { m = NR % 2 ? value[(NR + 1) / 2] : (value[NR / 2] + value[NR / 2 + 1]) / 2
                  printf "%-12s %10.0f\n", label, m }'
done | tee "$WORK/medians"
awk '$1 == "pgbench" { tps = $2 } $1 != "pgbench" { rps[$1] = $2 }
    END { for (label in rps) printf "%s / pgbench: %.2f\n", label, rps[label] / tps }' \
    "$WORK/medians" | sort
