#!/usr/bin/env python3
"""The `roomcast.v1` JSON dialect, reply by reply, through the Python `websockets` client.

Usage: v1_flow.py ws://HOST:PORT/

One room of its own (`v1-py-<random>`, so the flow runs against any server, history or not):
  1. client a asks for the subprotocol `roomcast.v1` and the server must agree to it; `welcome` names a's
     session; raw `ping` gets the raw `pong`;
  2. a joins with a ref: `room.joined` with that ref, `recovered: false`, no publications (a new room);
  3. a sends a chat message with a ref and an id: a gets the `chat.message` (from a's session, offset 1) and
     the `ack` with that ref and offset, `duplicate: false`;
  4. a resends the same id under a new ref: `ack` with the first offset and `duplicate: true`, and no
     second `chat.message`: a marker message sent right after must be the next `chat.message` a gets (the
     server handles one session's requests in order);
  5. an empty text gets `error` `empty_text` with its ref;
  6. client b joins: `room.presence` says 2 members, a and b;
  7. a disconnects, b publishes 3 messages, a comes back on a new connection and joins with `since` =
     the last (offset, epoch) it saw: `recovered: true` and exactly those 3, in order.
Every wait has a deadline; exits 0 on success, 1 with the expected and actual message otherwise.
"""

import asyncio
import json
import secrets
import sys

from websockets.asyncio.client import connect

PROTOCOL = "roomcast.v1"
RECV_DEADLINE = 5.0
TOTAL_DEADLINE = 30.0


class Mismatch(Exception):
    pass


def check(ok, what, got):
    if not ok:
        raise Mismatch(f"{what}; got {got!r}")


class Client:
    """One connection; `next()` is the next message, parsed when JSON, with a deadline."""

    def __init__(self, name, ws):
        self.name, self.ws = name, ws

    @classmethod
    async def open(cls, name, url):
        ws = await asyncio.wait_for(connect(url, subprotocols=[PROTOCOL]), RECV_DEADLINE)
        check(ws.subprotocol == PROTOCOL, f"{name}: the server must agree to {PROTOCOL}", ws.subprotocol)
        client = cls(name, ws)
        welcome = await client.next()
        check(welcome.get("type") == "welcome" and isinstance(welcome["payload"].get("session"), str),
              f"{name}: first a welcome with a session", welcome)
        client.session = welcome["payload"]["session"]
        print(f"{name}: {PROTOCOL} agreed, session {client.session}")
        return client

    async def send(self, kind, payload, ref=None):
        event = {"type": kind, "payload": payload}
        if ref is not None:
            event["ref"] = ref
        await self.ws.send(json.dumps(event))

    async def next(self, raw=False):
        try:
            text = await asyncio.wait_for(self.ws.recv(), RECV_DEADLINE)
        except asyncio.TimeoutError:
            raise Mismatch(f"{self.name}: nothing arrived within {RECV_DEADLINE} s") from None
        return text if raw else json.loads(text)

    async def expect(self, kind, ref=None):
        msg = await self.next()
        check(msg.get("type") == kind and msg.get("ref") == ref, f"{self.name}: expected {kind} with ref {ref!r}", msg)
        return msg["payload"]

    async def until_ack(self, ref):
        """Every message up to and including the ack with `ref`: (chat.messages, ack payload)."""
        chats = []
        while True:
            msg = await self.next()
            if msg.get("type") == "ack" and msg.get("ref") == ref:
                return chats, msg["payload"]
            check(msg.get("type") == "chat.message", f"{self.name}: only chat.message before ack {ref}", msg)
            chats.append(msg["payload"])


async def flow(url):
    room = "v1-py-" + secrets.token_hex(4)

    # 1. subprotocol, welcome, ping.
    a = await Client.open("a", url)
    await a.ws.send("ping")
    pong = await a.next(raw=True)
    check(pong == "pong", "a: ping answered with pong", pong)

    # 2. join with a ref.
    await a.send("room.join", {"room": room}, ref="j1")
    joined = await a.expect("room.joined", ref="j1")
    check(joined["room"] == room and joined["recovered"] is False and joined["publications"] == []
          and joined["offset"] == 0 and isinstance(joined["epoch"], str),
          "a: a new room's join: recovered false, offset 0, no publications", joined)
    epoch = joined["epoch"]
    print(f"a: joined {room}, epoch {epoch}")

    # 3. a chat message with a ref and an id: the broadcast, then the ack.
    await a.send("chat.message", {"room": room, "text": "first", "id": "msg-1"}, ref="m1")
    chats, ack = await a.until_ack("m1")
    check(len(chats) == 1, "a: its own message once before the ack", chats)
    check(chats[0] == {"room": room, "text": "first", "from": a.session, "offset": 1, "epoch": epoch,
                       "ts": chats[0].get("ts")} and isinstance(chats[0]["ts"], int),
          "a: chat.message first, from a, offset 1", chats[0])
    check(ack == {"room": room, "offset": 1, "epoch": epoch, "duplicate": False}, "a: ack m1 at offset 1", ack)
    print("a: chat.message #1 and ack m1 (offset 1)")

    # 4. the same id again: acknowledged as a duplicate, not published; the marker comes next.
    await a.send("chat.message", {"room": room, "text": "first", "id": "msg-1"}, ref="m2")
    chats, ack = await a.until_ack("m2")
    check(chats == [], "a: no chat.message for a duplicate", chats)
    check(ack == {"room": room, "offset": 1, "epoch": epoch, "duplicate": True},
          "a: ack m2 duplicate at the first offset", ack)
    await a.send("chat.message", {"room": room, "text": "marker", "id": "msg-2"}, ref="m3")
    chats, ack = await a.until_ack("m3")
    check([(c["text"], c["offset"]) for c in chats] == [("marker", 2)],
          "a: the marker (offset 2) is the next chat.message, the duplicate never published", chats)
    check(ack["offset"] == 2 and ack["duplicate"] is False, "a: ack m3 at offset 2", ack)
    print("a: resend of msg-1 acked duplicate at offset 1, not published; marker at offset 2")

    # 5. an error with its ref.
    await a.send("chat.message", {"room": room, "text": ""}, ref="e1")
    error = await a.expect("error", ref="e1")
    check(error.get("code") == "empty_text" and isinstance(error.get("message"), str), "a: empty_text", error)
    print("a: empty text refused with empty_text (ref e1)")

    # 6. presence with two members.
    b = await Client.open("b", url)
    await b.send("room.join", {"room": room}, ref="jb")
    joined_b = await b.expect("room.joined", ref="jb")
    check([p["text"] for p in joined_b["publications"]] == ["first", "marker"],
          "b: the room's history on join", joined_b)
    await a.send("room.presence", {"room": room}, ref="p1")
    presence = await a.expect("room.presence", ref="p1")
    sessions = sorted(m["session"] for m in presence["members"])
    check(presence["room"] == room and presence["count"] == 2 and sessions == sorted([a.session, b.session]),
          "a: presence: 2 members, a and b", presence)
    print(f"a: presence count 2 ({', '.join(sessions)})")

    # 7. a leaves by disconnecting, misses 3 messages, and recovers exactly them.
    last = (2, epoch)
    await a.ws.close()
    texts = [f"missed {i}" for i in (1, 2, 3)]
    for i, text in enumerate(texts):
        await b.send("chat.message", {"room": room, "text": text, "id": f"b-{i}"}, ref=f"b{i}")
        _, ack = await b.until_ack(f"b{i}")
        check(ack["offset"] == 3 + i, f"b: ack b{i} at offset {3 + i}", ack)
    a2 = await Client.open("a again", url)
    await a2.send("room.join", {"room": room, "since": {"offset": last[0], "epoch": last[1]}}, ref="j2")
    rejoined = await a2.expect("room.joined", ref="j2")
    got = [(p["offset"], p["text"], p["from"]) for p in rejoined["publications"]]
    check(rejoined["recovered"] is True and rejoined["epoch"] == epoch and rejoined["offset"] == 5
          and got == [(3 + i, t, b.session) for i, t in enumerate(texts)],
          "a again: recovered true with exactly the 3 missed messages (offsets 3-5)", rejoined)
    print("a again: recovered true, exactly the 3 missed messages (offsets 3, 4, 5)")
    await a2.ws.close()
    await b.ws.close()


async def main():
    if len(sys.argv) != 2:
        print("usage: v1_flow.py ws://HOST:PORT/", file=sys.stderr)
        return 2
    try:
        await asyncio.wait_for(flow(sys.argv[1]), TOTAL_DEADLINE)
    except Mismatch as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print(f"FAIL: the flow took over {TOTAL_DEADLINE} s", file=sys.stderr)
        return 1
    except Exception as err:  # a refused connection, a closed socket, JSON that is not: all failures
        print(f"FAIL: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print("v1_flow.py: the roomcast.v1 flow passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
