#!/usr/bin/env bash
# The one command that regenerates loadtest/results.md:
#   builds roomcast and loadtest (release), starts the app with the shipped .env plus
#   WEBSOCKET_ENABLE_DEFLATE=false, SERVER_BENCH_MODE=true, the rate limits and the per-address cap off, runs the standard suite with --server-pid,
#   then restarts it with one shard and repeats the throughput runs (members all on one shard versus
#   spread over both), three times each, then runs the permessage-deflate twins (idle connections,
#   saturate 100 B and 1 KiB) three times, each time against a fresh two-shard server with
#   WEBSOCKET_ENABLE_DEFLATE=true, and stops it.
#
# Usage: loadtest/run-suite.sh [--quick]      (--quick: small sizes, checks the harness, not the server)
# Port 9090 must be free. Exit status: 0 when every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)

# 19,000 held connections need as many descriptors in the server and in the harness.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -p roomcast -p loadtest
loadtest=./target/release/loadtest
url=ws://127.0.0.1:9090/
out=loadtest/results.md

pid=
stop_server() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap stop_server EXIT

# start_server SHARDS [DEFLATE]: DEFLATE (default false) is WEBSOCKET_ENABLE_DEFLATE.
start_server() {
    local deflate="${2:-false}"
    local log="target/roomcast-suite-$1-deflate-$deflate.log"
    # Rate limits off: the suite measures fan-out, and one publisher sends far more than a chat user would;
    # no per-address cap: every harness connection comes from 127.0.0.1.
    WEBSOCKET_ENABLE_DEFLATE="$deflate" SERVER_BENCH_MODE=true SERVER_IO_THREADS="$1" \
        WEBSOCKET_RATE_LIMIT_MESSAGES=0 WEBSOCKET_RATE_LIMIT_BYTES=0 WEBSOCKET_MAX_CONNECTIONS_PER_IP=0 \
        ./target/release/roomcast >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "roomcast exited; see $log" >&2; exit 1; }
        sleep 0.2
    done
    echo "roomcast did not listen on 9090 within 20 s" >&2
    exit 1
}

status=0
# One driver thread per core, as the server has one shard per core. With a single driver thread against
# two shards, three busy threads share two cores, the lone reader lags, and the server sees its bursts
# late and writes fewer frames per sendmsg (2-shard saturate: 2.1-2.9 M deliveries per server CPU-s with
# one driver thread, 3.4-3.7 M with two); against one shard the two settings measure the same.
threads=(--threads "$(nproc)")
# Throughput on a shared 2-core machine varies from run to run (by up to a quarter), so the throughput
# runs are made three times for each server; the table keeps every row.
repeats=3
[ ${#quick[@]} -gt 0 ] && repeats=1

start_server 2
"$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" \
    --label "2 shards" --out "$out" || status=1
for i in $(seq 2 "$repeats"); do
    "$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" --set throughput \
        --label "2 shards, run $i" --out "$out" --append || status=1
done
stop_server

# 19,000 held connections on a server of their own: memory freed by earlier runs would hide their cost.
start_server 2
"$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" --set held \
    --label "2 shards, fresh" --out "$out" --append || status=1
stop_server

start_server 1
for i in $(seq 1 "$repeats"); do
    "$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" --set throughput \
        --label "1 shard, run $i" --out "$out" --append || status=1
done
stop_server

# permessage-deflate: the deflate twins (`idle-10k-deflate`, `saturate-100B-deflate`,
# `saturate-1KiB-deflate`; same parameters as `conns, idle` and the two `saturate` runs) offer it and fail
# if the server does not accept it, so they run against WEBSOCKET_ENABLE_DEFLATE=true. Their plain
# counterparts above ran against WEBSOCKET_ENABLE_DEFLATE=false, not against this server with the client
# not offering: the fair "off" baseline is a server that does not compress at all. Each repeat gets a
# fresh server, so each idle run is the first after start-up and its RSS per connection is exact.
for i in $(seq 1 "$repeats"); do
    start_server 2 true
    "$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" --set deflate \
        --label "2 shards, deflate, run $i" --out "$out" --append || status=1
    stop_server
done

echo "results: $out" >&2
exit "$status"
