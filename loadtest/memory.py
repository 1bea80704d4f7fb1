#!/usr/bin/env python3
"""Memory under abuse: what a running roomcast's RSS does when clients misbehave, and after they leave.

Two scenarios against a server on loopback (its pid is needed to read /proc/PID/status):

  unfinished  N clients each start a fragmented binary message of SIZE bytes and never finish it, then
              all leave. Reports RSS before, at the peak, and after they left, and how many were cut by
              WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD.
  stalled     R readers join a room and never read; one publisher broadcasts TOTAL bytes to it in
              messages of SIZE bytes. Reports RSS before, at the peak, and after, and how many readers
              the slow-consumer rule cut.

Start the server with the rate limits and the per-address cap off for the publisher and the clients:
  WEBSOCKET_RATE_LIMIT_MESSAGES=0 WEBSOCKET_RATE_LIMIT_BYTES=0 WEBSOCKET_MAX_CONNECTIONS_PER_IP=0 \
      SERVER_BENCH_MODE=true target/release/roomcast &
  python3 loadtest/memory.py --pid $! unfinished --clients 8000 --size 60000
  python3 loadtest/memory.py --pid $! stalled --readers 100 --total 104857600 --size 60000

Only 127.0.0.0/8 targets are accepted; every step is bounded in time, and the script ends by itself.
Needs Python `websockets` (tests/run installs it) and `ulimit -n` above the client count.
"""

import argparse
import asyncio
import json
import sys
import time

import websockets


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def settle(pid, seconds):
    """RSS after `seconds` of quiet: long enough for the server to see every close and free what it held."""
    await asyncio.sleep(seconds)
    return rss_bytes(pid)


async def unfinished(args):
    before = rss_bytes(args.pid)
    peak = before
    release = asyncio.Event()

    async def start_holding():
        ws = await websockets.connect(args.url, max_size=None, open_timeout=30, ping_interval=None)
        await ws.recv()  # the welcome

        async def fragments():
            yield b"x" * args.size
            await release.wait()  # never finished: the message stays half-received until we leave

        return ws, asyncio.create_task(ws.send(fragments()))

    started = time.monotonic()
    sessions = []
    # In batches, so that no upgrade waits on the others long enough to hit SERVER_REQUEST_TIMEOUT.
    for batch in range(0, args.clients, 200):
        count = min(200, args.clients - batch)
        sessions.extend(await asyncio.gather(*(start_holding() for _ in range(count))))
        peak = max(peak, rss_bytes(args.pid))
    # Let the server read every first fragment; the budget cuts sessions as they arrive.
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        peak = max(peak, rss_bytes(args.pid))
        await asyncio.sleep(0.1)
    cut = sum(1 for ws, _ in sessions if ws.close_code == 1008)
    release.set()
    for ws, sender in sessions:
        sender.cancel()
        ws.transport.abort()
    after = await settle(args.pid, args.settle)
    return {
        "scenario": "unfinished",
        "clients": args.clients,
        "size": args.size,
        "cut_by_budget": cut,
        "rss_before": before,
        "rss_peak": peak,
        "rss_after": after,
        "seconds": round(time.monotonic() - started, 1),
    }


async def stalled(args):
    before = rss_bytes(args.pid)
    readers = []
    for _ in range(args.readers):
        # A small receive buffer and no reading: the server's queue for it fills up.
        ws = await websockets.connect(args.url, max_size=None, max_queue=1, ping_interval=None,
                                      open_timeout=30)
        await ws.recv()
        await ws.send(json.dumps({"type": "room.join", "payload": {"room": "stalled"}}))
        assert await ws.recv() == "joined room: stalled"
        readers.append(ws)
    publisher = await websockets.connect(args.url, max_size=None, ping_interval=None, open_timeout=30)
    await publisher.recv()
    await publisher.send(json.dumps({"type": "room.join", "payload": {"room": "stalled"}}))
    await publisher.recv()
    text = "y" * (args.size - 64)
    message = json.dumps({"type": "chat.message", "payload": {"room": "stalled", "text": text}})
    peak = before
    sent = 0
    started = time.monotonic()

    async def drain_own():
        # The publisher reads its own copies, so only the stalled readers are slow.
        try:
            async for _ in publisher:
                pass
        except websockets.ConnectionClosed:
            pass

    reading = asyncio.create_task(drain_own())
    while sent < args.total and time.monotonic() - started < args.limit:
        await publisher.send(message)
        sent += len(message)
        if sent % (len(message) * 64) < len(message):
            peak = max(peak, rss_bytes(args.pid))
    peak = max(peak, rss_bytes(args.pid))

    async def close_code(ws):
        # Read on now: a reader the server cut finds its close frame behind what was queued before it.
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            return ws.close_code

    codes = await asyncio.gather(
        *(asyncio.wait_for(close_code(ws), args.settle) for ws in readers), return_exceptions=True
    )
    cut = sum(1 for code in codes if code == 1008)
    for ws in readers:
        ws.transport.abort()
    reading.cancel()
    publisher.transport.abort()
    after = await settle(args.pid, args.settle)
    return {
        "scenario": "stalled",
        "readers": args.readers,
        "bytes_sent_per_reader": sent,
        "size": args.size,
        "readers_cut_1008": cut,
        "rss_before": before,
        "rss_peak": peak,
        "rss_after": after,
        "seconds": round(time.monotonic() - started, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:9090/")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of quiet before the last RSS")
    sub = parser.add_subparsers(dest="scenario", required=True)
    u = sub.add_parser("unfinished")
    u.add_argument("--clients", type=int, default=8000)
    u.add_argument("--size", type=int, default=60000)
    u.add_argument("--hold", type=float, default=3.0, help="seconds the messages are held once all started")
    s = sub.add_parser("stalled")
    s.add_argument("--readers", type=int, default=100)
    s.add_argument("--total", type=int, default=100 << 20, help="bytes broadcast to each reader")
    s.add_argument("--size", type=int, default=60000)
    s.add_argument("--limit", type=float, default=120.0, help="seconds the publisher may take at most")
    args = parser.parse_args()
    host = args.url.split("//", 1)[1].split(":", 1)[0].strip("[]")
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit(f"only loopback targets: {args.url}")
    report = asyncio.run(unfinished(args) if args.scenario == "unfinished" else stalled(args))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
