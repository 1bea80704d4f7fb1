#!/usr/bin/env bash
# The one command that regenerates loadtest/metrics-results.md: what the metrics cost on the message path
# (README, "Seeing inside"; issue 13), on and off in one run.
#   Three set-ups of roomcast, each one node of 2 shards (release build, the shipped .env plus
#   SERVER_BENCH_MODE=true, the rate limits and the per-address cap off, a fresh DATA_DIR each start):
#     before  the build just before the shards counted anything ($BEFORE, default a986517), built in a
#             worktree under target/: the counters themselves, off;
#     off     this build with METRICS_ENABLED=false: the shards count, nothing reads it;
#     on      this build, with /metrics and /api/stats each scraped every second over one keep-alive
#             connection while the load runs (a Prometheus scraping every 15 s asks 15 times less).
#   Each set-up runs `saturate` (1,000 members of one room, 100 B, a window of 32, 10 s) and `rooms` (2,000
#   clients, 200 rooms, 2 msg/s each, 10 s) on fresh processes, interleaved over $ROUNDS rounds (default
#   3) so that the shared machine's drift hits all three alike.
# Ports 9090 and 8080 must be free. Exit status 0 when every run passed (nothing lost, repeated or out of
# order).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
before_rev=${BEFORE:-a986517}
out=loadtest/metrics-results.md
json=target/metrics-suite.jsonl
: >"$json"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -p roomcast -p loadtest
loadtest=./target/release/loadtest
before_tree=target/metrics-suite-before
if [ ! -d "$before_tree" ]; then
    git worktree add --detach "$before_tree" "$before_rev"
fi
(cd "$before_tree" && cargo build --release -p roomcast --target-dir ../metrics-suite-before-target)
before_bin=target/metrics-suite-before-target/release/roomcast
history_size=$(sed -n 's/^HISTORY_SIZE=//p' .env)

pid=
scraper=
dir=
stop() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    if [ -n "$scraper" ]; then stop "$scraper"; scraper=; fi
    if [ -n "$pid" ]; then stop "$pid"; pid=; fi
    if [ -n "$dir" ]; then rm -rf -- "$dir"; dir=; fi
}
trap stop_server EXIT

wait_listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "roomcast exited" >&2; exit 1; }
        sleep 0.2
    done
    echo "roomcast did not listen on $1 within 20 s" >&2
    exit 1
}

# server SETUP: starts the set-up's roomcast (and, for `on`, the scraper).
server() {
    local binary=./target/release/roomcast metrics=true
    case $1 in
        before) binary=$before_bin ;;
        off) metrics=false ;;
    esac
    dir=$(mktemp -d -t roomcast-metrics-suite.XXXXXX)
    env WEBSOCKET_PORT=9090 SERVER_PORT=8080 SERVER_IO_THREADS=2 METRICS_ENABLED=$metrics \
        WEBSOCKET_HOST=127.0.0.1 SERVER_HOST=127.0.0.1 SERVER_BENCH_MODE=true LOG_STATS_INTERVAL_SEC=0 \
        WEBSOCKET_RATE_LIMIT_MESSAGES=0 WEBSOCKET_RATE_LIMIT_BYTES=0 WEBSOCKET_MAX_CONNECTIONS_PER_IP=0 \
        HISTORY_SIZE="$history_size" DATA_DIR="$dir" \
        "$binary" >"target/metrics-suite-$1.log" 2>&1 &
    pid=$!
    wait_listening 9090
    wait_listening 8080
    if [ "$1" = on ]; then
        # One keep-alive connection, as Prometheus keeps one: what is measured is roomcast answering, not
        # a process started per request. Bounded: it ends with the server (or stop_server), and each
        # request has a deadline.
        python3 - "$pid" <<'PY' &
import http.client, os, sys, time
server = int(sys.argv[1])
connection = http.client.HTTPConnection("127.0.0.1", 8080, timeout=2)
while True:
    try:
        os.kill(server, 0)
    except OSError:
        break
    for path in ("/metrics", "/api/stats"):
        try:
            connection.request("GET", path)
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", 8080, timeout=2)
    time.sleep(1)
PY
        scraper=$!
    fi
}

status=0
run() {
    local setup=$1 round=$2 scenario=$3
    shift 3
    local log="target/metrics-suite-$setup-$round-$scenario.log" line
    line=$("$loadtest" --quiet --threads "$(nproc)" --url ws://127.0.0.1:9090/ --server-pid "$pid" \
        "$scenario" "$@" 2>"$log") || status=1
    line=$(head -1 <<<"$line")
    if [[ $line != "{"* ]]; then
        echo "$setup round $round $scenario: no report (see $log)" >&2
        line='{"scenario":"'"$scenario"'","passed":false,"no_report":true}'
        status=1
    fi
    echo "$line" | python3 -c '
import json, sys
report = json.loads(sys.stdin.read())
report["setup"], report["round"] = sys.argv[1], int(sys.argv[2])
print(json.dumps(report))' "$setup" "$round" >>"$json"
    echo "$setup round $round $scenario: $(tail -1 "$json" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("passed", r["passed"], "eff %.0f" % (r.get("server") or {}).get("deliveries_per_cpu_second", 0))')" >&2
}

for round in $(seq 1 "$rounds"); do
    for setup in before off on; do
        for scenario in saturate rooms; do
            server "$setup"
            case $scenario in
                saturate) run "$setup" "$round" saturate --members 1000 --size 100 --window 32 --duration 10 ;;
                rooms) run "$setup" "$round" rooms --clients 2000 --rooms 200 --rate 2 --duration 10 ;;
            esac
            stop_server
        done
    done
done

python3 - "$json" "$out" "$(date -u +%Y-%m-%d)" "$(nproc)" "$before_rev" <<'PY' || status=1
import json, sys
from statistics import median

path, out, day, cores, before_rev = sys.argv[1:]
runs = [json.loads(line) for line in open(path) if line.strip()]
labels = {
    "before": f"before the counters ({before_rev})",
    "off": "counters, `METRICS_ENABLED=false`",
    "on": "counters, scraped every second",
}
rows = []
for r in runs:
    if r.get("no_report") or not r.get("server"):
        rows.append(f"| {r['scenario']} | {labels[r['setup']]} | {r['round']} | no report (see target/) | | | | |")
        continue
    s, lat = r["server"], r["latency_us"]
    rows.append(
        f"| {r['scenario']} | {labels[r['setup']]} | {r['round']} | {s['deliveries_per_cpu_second'] / 1000:.0f} K "
        f"| {s['cpu_share'] * 100:.0f} % | {r['deliveries_per_second']:.0f} "
        f"| {lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f} ms "
        f"| {r['lost']} / {r['duplicated']} / {r['out_of_order']} |"
    )

def med(setup, scenario, read):
    values = [read(r) for r in runs if r["setup"] == setup and r["scenario"] == scenario and r.get("server")]
    return median(values) if values else float("nan")

with open(out, "w") as f:
    f.write(f"# What the metrics cost ({day}, {cores} cores, `loadtest/metrics-suite.sh`)\n\n")
    f.write("Every row is one run on fresh processes (one node, 2 shards); the set-ups are interleaved by round.\n")
    f.write("`eff` is deliveries per server CPU-second. Only ratios within this file mean anything: the machine\n")
    f.write("is shared.\n\n")
    f.write("| scenario | set-up | round | eff | server CPU | deliveries/s | p50 / p99 | lost / dup / out of order |\n")
    f.write("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    f.write("\n".join(rows) + "\n\n")
    f.write("Medians, as ratios:\n\n")
    f.write("| scenario | eff, on / off | eff, off / before | eff, on / before | deliveries/s, on / off |\n")
    f.write("| --- | --- | --- | --- | --- |\n")
    eff = lambda r: r["server"]["deliveries_per_cpu_second"]
    rate = lambda r: r["deliveries_per_second"]
    for scenario in ("saturate", "rooms"):
        on, off, before = (med(s, scenario, eff) for s in ("on", "off", "before"))
        f.write(f"| {scenario} | {on / off:.3f}× | {off / before:.3f}× | {on / before:.3f}× "
                f"| {med('on', scenario, rate) / med('off', scenario, rate):.3f}× |\n")
ok = all(r["passed"] and r.get("lost") == 0 and r.get("duplicated") == 0 and r.get("out_of_order") == 0
         for r in runs)
sys.exit(0 if ok else 1)
PY

echo "results: $out" >&2
exit "$status"
