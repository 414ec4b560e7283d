#!/usr/bin/env bash
# A/B of warm-cache `/protected`, with CPU time per request.
#
# Runs each given tenet-server binary in turn, ROUNDS times, alternating,
# on the default SQLite store with one issued key, and loads it with
# `wrk -t 1 -c $CONNECTIONS` for WARMUP unmeasured and DURATION measured
# seconds. Each round also runs the bare hyper server (`bare`, built from
# benches/) under the same load. For each run it prints requests/s and the
# server process's CPU time (utime + stime, from /proc) per request.
#
# Throughput on two shared cores moves by several percent between runs,
# and more when the host's load changes, as the server shares the cores
# with wrk. CPU time per request moves less, because it counts only the
# server's own work, so it shows a change of a few percent that
# throughput hides. The medians at the end give each binary as a ratio to
# the first one and to the bare server.
#
# /proc counts CPU time in clock ticks (10 ms where `getconf CLK_TCK` is
# 100): about 0.1% of what a server uses in a 10 s run.
#
# Settings (environment variables):
#   ROUNDS=3         rounds; each runs the bare server and every binary once
#   DURATION=10      seconds of each measured wrk run
#   WARMUP=3         seconds of the unmeasured wrk run before each one
#   CONNECTIONS=32   wrk connections
#   PORT=18600       the servers' port on 127.0.0.1
#   BARE=PATH        the bare server; default: built here in release mode
#
# Usage: benches/warm_cpu.sh BINARY [BINARY...]
#   e.g. benches/warm_cpu.sh /tmp/before/tenet-server target/release/tenet-server

set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-18600}
BASE="http://127.0.0.1:$PORT"

fail() {
    echo "warm_cpu.sh: $*" >&2
    exit 1
}

(($# > 0)) || fail "usage: benches/warm_cpu.sh BINARY [BINARY...]"
((DURATION >= 3)) || fail "DURATION must be at least 3 seconds, got $DURATION"
for binary in "$@"; do
    [[ -x "$binary" ]] || fail "$binary is not an executable file"
done
# Absolute paths, because the build of the bare server runs from the
# repository's root.
binaries=()
for binary in "$@"; do
    binaries+=("$(realpath "$binary")")
done
set -- "${binaries[@]}"
for tool in wrk curl jq ss cargo; do
    command -v "$tool" >/dev/null || fail "$tool is missing; install it and run again"
done
[[ -z "$(ss -ltnH "sport = :$PORT")" ]] || fail "port $PORT is in use; set PORT to a free port"

# The servers take their settings from this script alone: a TENET_*
# variable of the caller's shell could point them at another store.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(TENET_|RUST_LOG$)' || true)

if [[ -z "${BARE:-}" ]]; then
    cd "$(dirname "$0")/.."
    echo "warm_cpu.sh: building the bare server in release mode" >&2
    cargo build --release --quiet -p tenet-benches --bin bare
    BARE="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/bare"
fi
[[ -x "$BARE" ]] || fail "$BARE is not an executable file"

umask 077
WORK=$(mktemp -d -t tenet-warm-cpu.XXXXXX)
SERVER_PID=
TICKS=$(getconf CLK_TCK)

# tenet-server drains on SIGINT; the bare server stops on SIGTERM.
STOP_SIGNAL=INT
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill "-$STOP_SIGNAL" "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

cleanup() {
    stop_server
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

# Prints the CPU time of process $1 in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Waits up to 10 s for any HTTP response from URL $1.
wait_ready() {
    for _ in $(seq 100); do
        if curl -sS -o /dev/null --max-time 1 "$1" 2>/dev/null; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null ||
            fail "the server exited at start: $(tail -n 5 "$WORK/server.err")"
        sleep 0.1
    done
    fail "no answer from $1 within 10 s: $(tail -n 5 "$WORK/server.err")"
}

# Starts tenet-server binary $1 on a fresh data directory, issues a key
# and writes the wrk script that sends it.
start_tenet() {
    rm -rf "$WORK/data"
    TENET_KEY_PEPPER=$PEPPER TENET_ADMIN_TOKEN=$ADMIN_TOKEN "$1" \
        --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
        >/dev/null 2>"$WORK/server.err" &
    SERVER_PID=$!
    STOP_SIGNAL=INT
    wait_ready "$BASE/healthz"

    local tenant
    tenant=$(curl -fsS --max-time 10 -H @"$WORK/admin.header" -H 'Content-Type: application/json' \
        -d '{"name":"Bench"}' "$BASE/tenants" | jq -r .id) || fail "creating a tenant failed"
    curl -fsS --max-time 10 -H @"$WORK/admin.header" -X POST "$BASE/tenants/$tenant/keys" |
        jq -r '"wrk.headers[\"X-API-Key\"] = \"" + .api_key + "\""' >"$WORK/valid.lua" ||
        fail "issuing a key to tenant $tenant failed"
}

start_bare() {
    "$BARE" "127.0.0.1:$PORT" >/dev/null 2>"$WORK/server.err" &
    SERVER_PID=$!
    STOP_SIGNAL=TERM
    wait_ready "$BASE/"
}

# Loads the running server at URL $1 with wrk script $2 (empty for none)
# and prints its result line, labelled $3.
measure() {
    local url=$1 script=$2 label=$3 args=(-t 1 -c "$CONNECTIONS")
    [[ -n "$script" ]] && args+=(-s "$script")
    timeout 600 wrk "${args[@]}" -d "${WARMUP}s" "$url" >/dev/null

    local before after
    before=$(cpu_ticks "$SERVER_PID")
    timeout 600 wrk "${args[@]}" -d "${DURATION}s" "$url" >"$WORK/wrk.txt"
    after=$(cpu_ticks "$SERVER_PID")

    local requests rps non2xx
    requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.txt")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.txt")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.txt")
    [[ -z "$non2xx" ]] || fail "$label: $non2xx responses were not 2xx"
    awk -v label="$label" -v rps="$rps" -v requests="$requests" -v ticks="$TICKS" \
        -v used=$((after - before)) \
        'BEGIN { printf "%-10s %10.0f req/s  server %6.2f us/req\n", label, rps,
                 used * 1e6 / ticks / requests }'
}

echo "date $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc)," \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "wrk -t 1 -c $CONNECTIONS -d ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for index in $(seq "$#"); do
    echo "binary$index: ${!index}"
done

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    start_bare
    measure "$BASE/" "" bare >"$WORK/line"
    stop_server
    tee -a "$WORK/results" <"$WORK/line"

    index=0
    for binary in "$@"; do
        index=$((index + 1))
        # Not in a pipeline, which would run it in a subshell and hide
        # SERVER_PID from the cleanup on exit.
        start_tenet "$binary"
        measure "$BASE/protected" "$WORK/valid.lua" "binary$index" >"$WORK/line"
        stop_server
        tee -a "$WORK/results" <"$WORK/line"
    done
done

echo "medians over $ROUNDS rounds (us/req: server CPU per request):"
for label in bare $(seq -f 'binary%g' "$#"); do
    for field in 2 5; do
        awk -v label="$label" -v field="$field" '$1 == label { print $field }' \
            "$WORK/results" | sort -n |
            awk '{ value[NR] = $1 }
                END { print NR % 2 ? value[(NR + 1) / 2] : (value[NR / 2] + value[NR / 2 + 1]) / 2 }'
    done | paste -sd' ' | awk -v label="$label" '{ print label, $1, $2 }'
done >"$WORK/medians"
awk '{ rps[$1] = $2; cpu[$1] = $3; order[NR] = $1 }
    END {
        for (i = 1; i <= NR; i++) {
            label = order[i]
            printf "%-10s %10.0f req/s (%.2f of bare)  %6.2f us/req (%.2f of binary1, %.2f of bare)\n",
                label, rps[label], rps[label] / rps["bare"], cpu[label],
                cpu[label] / cpu["binary1"], cpu[label] / cpu["bare"]
        }
    }' "$WORK/medians"
