#!/usr/bin/env bash
# Instructions per request of tenet-server and the bare hyper server,
# counted by callgrind.
#
# On two shared cores, wall-clock throughput moves by tens of percent
# between runs. An instruction count of the same binary and requests
# moves by about one percent, whatever else the machine runs. This script
# runs each server under `valgrind --tool=callgrind`, loads it with wrk on
# loopback, and divides the instructions counted during the measured run
# by the requests wrk completed. It reports the bare server, the bare
# server with `--key-check` (the key check of /protected and nothing
# else), `/healthz` and warm `/protected` on the default SQLite store, each
# also as a ratio to the bare server.
#
# valgrind runs the server about 50 times slower and on one thread at a
# time, so the figures are instruction counts only; the request rates
# under valgrind mean nothing.
#
# Settings (environment variables):
#   DURATION=3     seconds of each measured wrk run (after 2 s unmeasured)
#   CONNECTIONS=4  wrk connections
#   PORT=18580     tenet-server's port; the bare server uses PORT+1
#   KEEP=DIR       also copy each callgrind profile to DIR, for
#                  `callgrind_annotate DIR/protected.out`
#
# Usage: benches/instructions.sh   (from anywhere inside the repository)

set -euo pipefail

DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-4}
PORT=${PORT:-18580}
BARE_PORT=$((PORT + 1))
HOST=127.0.0.1

fail() {
    echo "instructions.sh: $*" >&2
    exit 1
}

for tool in valgrind callgrind_control wrk cargo curl jq ss; do
    command -v "$tool" >/dev/null ||
        fail "$tool is missing; install it (valgrind and wrk are Debian packages)"
done

# The servers started here take their settings from this script alone. A
# TENET_* variable of the caller's shell, such as TENET_DATABASE_URL, would
# point them at another store, and RUST_LOG would change their log lines.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep -E '^(TENET_|RUST_LOG$)' || true)

for port in "$PORT" "$BARE_PORT"; do
    if [[ -n "$(ss -ltnH "sport = :$port")" ]]; then
        fail "port $port is in use; set PORT to a free port (PORT and PORT+1 are used)"
    fi
done

# KEEP may be relative to the caller's directory, which the cd below leaves.
if [[ -n "${KEEP:-}" ]]; then
    mkdir -p "$KEEP" || fail "cannot create the KEEP directory $KEEP"
    KEEP=$(cd "$KEEP" && pwd)
fi

cd "$(dirname "$0")/.."
echo "instructions.sh: building tenet-server and the bare server in release mode" >&2
cargo build --release --quiet -p tenet-server -p tenet-benches --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

umask 077
WORK=$(mktemp -d -t tenet-instructions.XXXXXX)
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random_secret() {
    head -c 32 /dev/urandom | base64 | tr -d '\n/+='
}
PEPPER=$(random_secret)
ADMIN_TOKEN=$(random_secret)
printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN" >"$WORK/admin.header"

# Waits up to 60 s (valgrind starts slowly) for a 200 from URL, requested
# with the curl arguments that follow ERROR_FILE. On a failure it shows the
# end of ERROR_FILE, the server's standard error, because the cleanup
# deletes that file.
# Usage: wait_ready URL ERROR_FILE [CURL_ARGUMENT...]
wait_ready() {
    local url=$1 errors=$2
    shift 2
    for _ in $(seq 300); do
        curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null ||
            fail "the server exited at start: $(tail -n 5 "$errors")"
        sleep 0.2
    done
    fail "no 200 from $url within 60 s; its standard error: $(tail -n 5 "$errors")"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# Counts the instructions of one wrk run against URL; prints
# instructions per request. An optional third argument is a wrk script.
measure() {
    local name=$1 url=$2 script=${3:-} output requests instructions
    wrk -t1 -c"$CONNECTIONS" -d2s ${script:+-s "$script"} "$url" >/dev/null
    callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
    output=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" ${script:+-s "$script"} "$url")
    rm -f "$WORK"/callgrind.out.*
    callgrind_control --dump "$SERVER_PID" >/dev/null 2>&1
    sleep 0.5
    requests=$(awk '/requests in/ { print $1 }' <<<"$output")
    instructions=$(cat "$WORK"/callgrind.out.* | awk '/^totals:/ { total += $2 } END { print total }')
    [[ -n "$requests" && "$requests" -gt 0 ]] || fail "wrk completed no request on $url"
    if [[ -n "${KEEP:-}" ]]; then
        cat "$WORK"/callgrind.out.* >"$KEEP/$name.out"
    fi
    echo $((instructions / requests))
}

valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$target_dir/release/bare" "$HOST:$BARE_PORT" >/dev/null 2>"$WORK/bare.err" &
SERVER_PID=$!
wait_ready "http://$HOST:$BARE_PORT/" "$WORK/bare.err"
bare=$(measure bare "http://$HOST:$BARE_PORT/")
stop_server

TENET_KEY_PEPPER=$PEPPER TENET_ADMIN_TOKEN=$ADMIN_TOKEN \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$target_dir/release/tenet-server" --listen "$HOST:$PORT" --data-dir "$WORK/data" \
    >/dev/null 2>"$WORK/tenet.err" &
SERVER_PID=$!
wait_ready "http://$HOST:$PORT/healthz" "$WORK/tenet.err"
tenant=$(curl -fsS --max-time 10 -H @"$WORK/admin.header" -H 'Content-Type: application/json' \
    -d '{"name":"Bench"}' "http://$HOST:$PORT/tenants" | jq -r .id) ||
    fail "creating a tenant failed"
curl -fsS --max-time 10 -H @"$WORK/admin.header" -X POST "http://$HOST:$PORT/tenants/$tenant/keys" \
    >"$WORK/issued.json" || fail "issuing a key failed"
jq -r .api_key "$WORK/issued.json" >"$WORK/valid.key"
jq -r '"wrk.headers[\"X-API-Key\"] = \"" + .api_key + "\""' "$WORK/issued.json" >"$WORK/valid.lua"
rm -f "$WORK/issued.json"
healthz=$(measure healthz "http://$HOST:$PORT/healthz")
protected=$(measure protected "http://$HOST:$PORT/protected" "$WORK/valid.lua")
stop_server

# The bare server with the key check that /protected cannot skip (see
# src/bin/bare.rs). Without a key it returns 401, so readiness is checked
# with the key.
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$target_dir/release/bare" "$HOST:$BARE_PORT" --key-check "$WORK/valid.key" \
    >/dev/null 2>"$WORK/floor.err" &
SERVER_PID=$!
{ printf 'X-API-Key: '; cat "$WORK/valid.key"; } >"$WORK/key.header"
wait_ready "http://$HOST:$BARE_PORT/" "$WORK/floor.err" -H @"$WORK/key.header"
floor=$(measure floor "http://$HOST:$BARE_PORT/" "$WORK/valid.lua")
stop_server

printf '%-36s %12s %8s\n' scenario instructions ratio
printf '%-36s %12d %8s\n' "bare hyper hello world" "$bare" 1
for row in "bare hyper + key check floor:$floor" "/healthz:$healthz" \
    "/protected valid key, warm cache:$protected"; do
    name=${row%:*}
    value=${row##*:}
    printf '%-36s %12d %8.2f\n' "$name" "$value" "$(awk -v value="$value" -v bare="$bare" 'BEGIN { print value / bare }')"
done
