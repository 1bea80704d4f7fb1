#!/usr/bin/env bash
# The one command that regenerates loadtest/cluster-results.md: what sharing rooms through Redis costs,
# with it on and off in one run (README, "Running several nodes"; issue 12).
#   Starts a redis-server of its own on 127.0.0.1:$REDIS_PORT (default 6395; no persistence, so that its
#   disk does not show in its CPU) and, in turn, three set-ups of roomcast (release build, the shipped .env
#   plus SERVER_BENCH_MODE=true, the rate limits and the per-address cap off, HISTORY_SIZE from the .env, a
#   fresh DATA_DIR each start):
#     one    one node, 2 shards, no Redis (history in the embedded store);
#     redis  one node, 2 shards, CLUSTER_REDIS_URL set;
#     two    two nodes of one shard each (the same two cores), both through Redis; the harness spreads
#            every room's members over both (--also-url), so each publication crosses nodes;
#     two-unbatched  the same with CLUSTER_PUBLISH_BATCH_US=0 (the bridge's publish batching off).
#   Each set-up runs `rooms` (2,000 clients, 200 rooms, 2 msg/s each, 10 s) and `saturate` (1,000 members
#   of one room, 100 B, a window of 32, 10 s), on fresh processes, interleaved over $ROUNDS rounds
#   (default 2) so that the shared machine's drift hits all three alike. Server CPU is the sum over the
#   set-up's nodes; Redis's CPU is read from /proc over the same run.
# Ports 9090, 9190, 8080, 8180 and $REDIS_PORT must be free. Exit status 0 when every run passed (nothing
# lost, repeated or out of order).
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=${REDIS_PORT:-6395}
rounds=${ROUNDS:-2}
out=loadtest/cluster-results.md
json=target/cluster-suite.jsonl
: >"$json"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install redis-server python3)" >&2; exit 1; }
done

cargo build --release -p roomcast -p loadtest
loadtest=./target/release/loadtest
history_size=$(sed -n 's/^HISTORY_SIZE=//p' .env)

pids=()
dirs=()
redis_pid=
# stop PID: SIGTERM, then SIGKILL if it has not ended within 10 s.
stop() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_nodes() {
    for pid in ${pids[@]+"${pids[@]}"}; do stop "$pid"; done
    pids=()
    for dir in ${dirs[@]+"${dirs[@]}"}; do rm -rf -- "$dir"; done
    dirs=()
}
stop_all() {
    stop_nodes
    if [ -n "$redis_pid" ]; then stop "$redis_pid"; fi
}
trap stop_all EXIT

# free PORT: a server already listening there would be measured in place of ours.
free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "port $1 is in use: stop whatever listens there first" >&2
        exit 1
    fi
}

# wait_listening PORT PID WHAT
wait_listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "$3 exited" >&2; exit 1; }
        sleep 0.2
    done
    echo "$3 did not listen on $1 within 20 s" >&2
    exit 1
}

free "$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >target/cluster-suite-redis.log 2>&1 &
redis_pid=$!
wait_listening "$redis_port" "$redis_pid" redis-server

# node WS_PORT HTTP_PORT SHARDS [REDIS_URL]: starts one roomcast node.
node() {
    free "$1"
    free "$2"
    local dir
    dir=$(mktemp -d -t roomcast-cluster-suite.XXXXXX)
    dirs+=("$dir")
    env ${4:+CLUSTER_REDIS_URL=$4} ${publish_batch:+CLUSTER_PUBLISH_BATCH_US=$publish_batch} WEBSOCKET_PORT="$1" SERVER_PORT="$2" SERVER_IO_THREADS="$3" \
        WEBSOCKET_HOST=127.0.0.1 SERVER_HOST=127.0.0.1 SERVER_BENCH_MODE=true \
        WEBSOCKET_RATE_LIMIT_MESSAGES=0 WEBSOCKET_RATE_LIMIT_BYTES=0 WEBSOCKET_MAX_CONNECTIONS_PER_IP=0 \
        HISTORY_SIZE="$history_size" DATA_DIR="$dir" \
        ./target/release/roomcast >"target/cluster-suite-node-$1.log" 2>&1 &
    pids+=($!)
    wait_listening "$1" "$!" "roomcast on $1"
}

# ticks PID: the process's user + system CPU, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

status=0
# run SETUP ROUND SCENARIO ARGS...: one run against the nodes up now; adds a JSON line with the set-up,
# the round and Redis's CPU share to $json.
run() {
    local setup=$1 round=$2 scenario=$3
    shift 3
    local targets=(--url ws://127.0.0.1:9090/ --server-pid "${pids[0]}")
    if [ "${#pids[@]}" -gt 1 ]; then
        targets+=(--also-url ws://127.0.0.1:9190/ --also-server-pid "${pids[1]}")
    fi
    local before start line
    before=$(ticks "$redis_pid")
    start=$(date +%s.%N)
    local log="target/cluster-suite-$setup-$round-$scenario.log"
    line=$("$loadtest" --quiet --threads "$(nproc)" "${targets[@]}" "$scenario" "$@" 2>"$log") || status=1
    line=$(head -1 <<<"$line")
    if [[ $line != "{"* ]]; then
        # No report: the run could not be made. The table says so rather than the suite stopping here.
        echo "$setup round $round $scenario: no report (see $log)" >&2
        line='{"scenario":"'"$scenario"'","passed":false,"no_report":true}'
        status=1
    fi
    local redis_share
    redis_share=$(echo "$(ticks "$redis_pid") $before $start $(date +%s.%N) $(getconf CLK_TCK)" |
        awk '{ printf "%.4f", ($1 - $2) / $5 / ($4 - $3) }')
    echo "$line" | python3 -c '
import json, sys
report = json.loads(sys.stdin.read())
report["setup"], report["round"], report["redis_cpu_share"] = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
print(json.dumps(report))' "$setup" "$round" "$redis_share" >>"$json"
    echo "$setup round $round $scenario: $(tail -1 "$json" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
eff = (r.get("server") or {}).get("deliveries_per_cpu_second", 0)
print("passed", r["passed"], "eff %.0f" % eff, "redis CPU %.2f" % r["redis_cpu_share"])')" >&2
}

for round in $(seq 1 "$rounds"); do
    for setup in one redis two two-unbatched; do
        for scenario in rooms saturate; do
            publish_batch=
            case $setup in
                one) node 9090 8080 2 ;;
                redis) node 9090 8080 2 "redis://127.0.0.1:$redis_port" ;;
                two | two-unbatched)
                    [ "$setup" = two-unbatched ] && publish_batch=0
                    node 9090 8080 1 "redis://127.0.0.1:$redis_port"
                    node 9190 8180 1 "redis://127.0.0.1:$redis_port"
                    ;;
            esac
            case $scenario in
                rooms) run "$setup" "$round" rooms --clients 2000 --rooms 200 --rate 2 --duration 10 ;;
                saturate) run "$setup" "$round" saturate --members 1000 --size 100 --window 32 --duration 10 ;;
            esac
            stop_nodes
            # Keys of the last run would be read back by the next one's rooms.
            redis-cli -p "$redis_port" flushall >/dev/null
        done
    done
done

python3 - "$json" "$out" "$(date -u +%Y-%m-%d)" "$(nproc)" <<'PY' || status=1
import json, sys
from statistics import median

path, out, day, cores = sys.argv[1:]
runs = [json.loads(line) for line in open(path) if line.strip()]
labels = {
    "one": "one node, 2 shards, no Redis",
    "redis": "one node, 2 shards, Redis",
    "two": "two nodes × 1 shard, Redis",
    "two-unbatched": "two nodes × 1 shard, Redis, `CLUSTER_PUBLISH_BATCH_US=0`",
}
rows = []
for r in runs:
    if r.get("no_report") or not r.get("server"):
        rows.append(f"| {r['scenario']} | {labels[r['setup']]} | {r['round']} | no report (see target/) | | | | | |")
        continue
    s = r["server"]
    lat = r["latency_us"]
    rows.append(
        f"| {r['scenario']} | {labels[r['setup']]} | {r['round']} | {s['deliveries_per_cpu_second'] / 1000:.0f} K "
        f"| {s['cpu_share'] * 100:.0f} % | {r['redis_cpu_share'] * 100:.0f} % | {r['deliveries_per_second']:.0f} "
        f"| {lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f} ms "
        f"| {r['lost']} / {r['duplicated']} / {r['out_of_order']} |"
    )

def eff(setup, scenario):
    values = [r["server"]["deliveries_per_cpu_second"] for r in runs
              if r["setup"] == setup and r["scenario"] == scenario and r.get("server")]
    return median(values) if values else float("nan")

with open(out, "w") as f:
    f.write(f"# What sharing rooms through Redis costs ({day}, {cores} cores, `loadtest/cluster-suite.sh`)\n\n")
    f.write("Every row is one run on fresh processes; the set-ups are interleaved by round. `eff` is deliveries per\n")
    f.write("server CPU-second (the sum over the set-up's nodes), Redis CPU is the share of one core its process\n")
    f.write("used over the same run. Only ratios within this file mean anything: the machine is shared.\n\n")
    f.write("| scenario | set-up | round | eff | server CPU | Redis CPU | deliveries/s | p50 / p99 | lost / dup / out of order |\n")
    f.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    f.write("\n".join(rows) + "\n\n")
    f.write("Medians of eff, as ratios:\n\n")
    f.write("| scenario | Redis on / off, one node | two nodes / one node with Redis | two nodes / one node without Redis | publish batching on / off, two nodes |\n")
    f.write("| --- | --- | --- | --- | --- |\n")
    for scenario in ("rooms", "saturate"):
        one, redis, two = eff("one", scenario), eff("redis", scenario), eff("two", scenario)
        unbatched = eff("two-unbatched", scenario)
        f.write(f"| {scenario} | {redis / one:.2f}× | {two / redis:.2f}× | {two / one:.2f}× | {two / unbatched:.2f}× |\n")
ok = all(r["passed"] and r.get("lost") == 0 and r.get("duplicated") == 0 and r.get("out_of_order") == 0
         for r in runs)
sys.exit(0 if ok else 1)
PY

echo "results: $out" >&2
exit "$status"
