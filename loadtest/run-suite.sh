#!/usr/bin/env bash
# The one command that regenerates loadtest/results.md: roomcast and the comparison peer
# (loadtest/peers/tokio-chat) measured in one run, then the ratios.
#   Builds roomcast, loadtest and tokio-chat (release). roomcast runs with the shipped .env plus
#   WEBSOCKET_ENABLE_DEFLATE=false, SERVER_BENCH_MODE=true, the rate limits and the per-address cap off,
#   HISTORY_SIZE=0 (the peer keeps no history, so history would be a cost only one side pays) and a fresh
#   DATA_DIR=$(mktemp -d) per start (no run reads another's history); tokio-chat runs with
#   --port 9091 --threads $(nproc). Only one server is up at a time. In order:
#   1. three rounds, each roomcast (2 shards) then tokio-chat, each on a fresh process: round 1 the standard
#      suite (idle connections right after start-up), rounds 2 and 3 the throughput runs (saturate 100 B,
#      saturate 1 KiB, rooms); interleaved so that the shared machine's drift hits both servers alike;
#   2. one more roomcast throughput set with history on (the .env's HISTORY_SIZE), to keep its cost visible;
#   3. the 19,000 held connections, against a fresh roomcast, then a fresh tokio-chat;
#   4. roomcast with one shard, the throughput runs three times (members all on one shard versus spread
#      over both);
#   5. the permessage-deflate twins (idle connections, saturate 100 B and 1 KiB), three times, each against
#      a fresh two-shard roomcast with WEBSOCKET_ENABLE_DEFLATE=true;
#   6. `loadtest compare`: roomcast's runs of 1 and 3 against tokio-chat's, ratios of medians against
#      issue 11's targets, appended to results.md;
#   7. `loadtest wake-cost`: what one cross-core wake-up costs this machine, appended to results.md.
# Each set's JSON lines (one report per run) are kept in target/suite-*.jsonl; compare reads two of them.
#
# Usage: loadtest/run-suite.sh [--quick]      (--quick: small sizes, one round: checks the harness and
# this script, not the servers)
# Ports 9090 and 9091 must be free. Exit status: 0 when every run passed and the comparison was written.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)

# 19,000 held connections need as many descriptors in the server and in the harness.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -p roomcast -p loadtest -p tokio-chat
loadtest=./target/release/loadtest
out=loadtest/results.md
# Quick sizes say nothing about the servers: their table must not replace the real one.
[ ${#quick[@]} -gt 0 ] && out=target/results-quick.md
# One file per server configuration: a report line does not say which server it measured.
json_roomcast=target/suite-roomcast.jsonl        # 2 shards, history off: compared with the peer
json_peer=target/suite-tokio-chat.jsonl
json_history=target/suite-roomcast-history.jsonl
json_one_shard=target/suite-roomcast-1-shard.jsonl
json_deflate=target/suite-roomcast-deflate.jsonl
for f in "$json_roomcast" "$json_peer" "$json_history" "$json_one_shard" "$json_deflate"; do
    : >"$f"
done

pid=
url=
data_dir=
stop_server() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
    if [ -n "$data_dir" ]; then
        rm -rf -- "$data_dir"
        data_dir=
    fi
}
trap stop_server EXIT

# wait_listening PORT NAME LOG: until the server just started (pid) accepts connections on PORT.
wait_listening() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "$2 exited; see $3" >&2; exit 1; }
        sleep 0.2
    done
    echo "$2 did not listen on $1 within 20 s" >&2
    exit 1
}

# refuse_busy PORT: a server already listening there would be measured in place of ours.
refuse_busy() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "port $1 is in use: stop whatever listens there first" >&2
        exit 1
    fi
}

# start_roomcast SHARDS [DEFLATE] [HISTORY_SIZE]: DEFLATE (default false) is WEBSOCKET_ENABLE_DEFLATE,
# HISTORY_SIZE defaults to 0.
start_roomcast() {
    local deflate="${2:-false}" history="${3:-0}"
    local log="target/roomcast-suite-$1-deflate-$deflate-history-$history.log"
    refuse_busy 9090
    data_dir=$(mktemp -d -t roomcast-suite.XXXXXX)
    # Rate limits off: the suite measures fan-out, and one publisher sends far more than a chat user would;
    # no per-address cap: every harness connection comes from 127.0.0.1.
    WEBSOCKET_ENABLE_DEFLATE="$deflate" SERVER_BENCH_MODE=true SERVER_IO_THREADS="$1" \
        WEBSOCKET_RATE_LIMIT_MESSAGES=0 WEBSOCKET_RATE_LIMIT_BYTES=0 WEBSOCKET_MAX_CONNECTIONS_PER_IP=0 \
        HISTORY_SIZE="$history" DATA_DIR="$data_dir" \
        ./target/release/roomcast >"$log" 2>&1 &
    pid=$!
    url=ws://127.0.0.1:9090/
    wait_listening 9090 roomcast "$log"
}

start_peer() {
    local log=target/tokio-chat-suite.log
    refuse_busy 9091
    ./target/release/tokio-chat --port 9091 --threads "$(nproc)" >"$log" 2>&1 &
    pid=$!
    url=ws://127.0.0.1:9091/
    wait_listening 9091 tokio-chat "$log"
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

# measure JSON SUITE-ARGS...: the suite against the server just started; its JSON lines (stdout) are also
# added to JSON.
measure() {
    local json=$1
    shift
    "$loadtest" --quiet "${threads[@]}" --url "$url" --server-pid "$pid" suite "${quick[@]}" "$@" |
        tee -a "$json" || status=1
}

# 1. Round 1 is the whole suite on fresh servers, so `conns, idle` is the first load after start-up and
# its RSS per connection is exact (memory freed by an earlier run stays in the server's allocator).
for i in $(seq 1 "$repeats"); do
    if [ "$i" = 1 ]; then
        set_args=() out_args=(--out "$out")
        roomcast_label="roomcast, 2 shards" peer_label="tokio-chat"
    else
        set_args=(--set throughput) out_args=(--out "$out" --append)
        roomcast_label="roomcast, 2 shards, run $i" peer_label="tokio-chat, run $i"
    fi
    start_roomcast 2
    measure "$json_roomcast" "${set_args[@]}" --label "$roomcast_label" "${out_args[@]}"
    stop_server
    start_peer
    measure "$json_peer" "${set_args[@]}" --label "$peer_label" --out "$out" --append
    stop_server
done

# 2. What history costs: the shipped HISTORY_SIZE, once; not compared with the peer.
history_size=$(sed -n 's/^HISTORY_SIZE=//p' .env)
start_roomcast 2 false "$history_size"
measure "$json_history" --set throughput --label "roomcast, 2 shards, HISTORY_SIZE=$history_size" \
    --out "$out" --append
stop_server

# 3. 19,000 held connections on a server of their own, for the same reason as `conns, idle`.
start_roomcast 2
measure "$json_roomcast" --set held --label "roomcast, 2 shards, fresh" --out "$out" --append
stop_server
start_peer
measure "$json_peer" --set held --label "tokio-chat, fresh" --out "$out" --append
stop_server

# 4. One shard: every member of a room on the same shard.
start_roomcast 1
for i in $(seq 1 "$repeats"); do
    measure "$json_one_shard" --set throughput --label "roomcast, 1 shard, run $i" --out "$out" --append
done
stop_server

# 5. permessage-deflate: the deflate twins (`idle-10k-deflate`, `saturate-100B-deflate`,
# `saturate-1KiB-deflate`; same parameters as `conns, idle` and the two `saturate` runs) offer it and fail
# if the server does not accept it, so they run against WEBSOCKET_ENABLE_DEFLATE=true. Their plain
# counterparts above ran against WEBSOCKET_ENABLE_DEFLATE=false, not against this server with the client
# not offering: the fair "off" baseline is a server that does not compress at all. Each repeat gets a
# fresh server, so each idle run is the first after start-up and its RSS per connection is exact.
for i in $(seq 1 "$repeats"); do
    start_roomcast 2 true
    measure "$json_deflate" --set deflate --label "roomcast, 2 shards, deflate, run $i" --out "$out" --append
    stop_server
done

# 6. The ratios, from the JSON lines of 1 and 3: both servers, the same scenarios.
"$loadtest" compare --ours "$json_roomcast" --peer "$json_peer" --out "$out" --append || status=1

# 7. What this machine charges for one cross-core wake-up, no server running: the rooms rows' "CPU per
# sleep" is read against it.
if wake=$("$loadtest" wake-cost); then
    {
        echo
        echo "## This machine: one cross-core wake-up"
        echo
        echo "\`loadtest wake-cost\` (two threads pinned to two cores pass a token through eventfds, each"
        echo "blocking in \`read\`; CPU of both per wake-up), measured after the runs above: \`$wake\`"
    } >>"$out"
else
    status=1
fi

echo "results: $out" >&2
exit "$status"
