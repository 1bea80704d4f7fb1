#!/usr/bin/env python3
"""The chat protocol, reply by reply, through the Python `websockets` client.

Usage: chat_flow.py ws://HOST:PORT/

Three clients: a and b share room `general`; a, b and c share room `side`. Checks the welcome, ping/pong,
join (with and without a room), broadcast to every member including the sender, no delivery to a
non-member, leave stopping delivery, the empty-text refusal and the unknown-type reply. Every wait has a
deadline; any mismatch exits 1 with the expected and actual message.

Absence ("c never sees the general message") is checked without sleeping: right after the message to
`general`, the same sender sends to `side`, where c is a member; c's next message must be that one. The
server forwards a sender's broadcasts in order, so a wrongly delivered `general` message would come first.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

WELCOME = "welcome to Vix WebSocket chat"
RECV_DEADLINE = 5.0
TOTAL_DEADLINE = 30.0


class Mismatch(Exception):
    pass


def join(room=None):
    payload = {} if room is None else {"room": room}
    return json.dumps({"type": "room.join", "payload": payload})


def leave(room):
    return json.dumps({"type": "room.leave", "payload": {"room": room}})


def chat(room, text):
    payload = {"text": text} if room is None else {"room": room, "text": text}
    return json.dumps({"type": "chat.message", "payload": payload})


class Client:
    def __init__(self, name, ws):
        self.name = name
        self.ws = ws

    async def expect(self, expected):
        try:
            got = await asyncio.wait_for(self.ws.recv(), RECV_DEADLINE)
        except asyncio.TimeoutError:
            raise Mismatch(f"{self.name}: expected {expected!r}, got nothing within {RECV_DEADLINE}s")
        if got != expected:
            raise Mismatch(f"{self.name}: expected {expected!r}, got {got!r}")
        print(f"{self.name} <- {got}")

    async def send(self, text):
        print(f"{self.name} -> {text}")
        await self.ws.send(text)

    async def roundtrip(self, text, expected):
        await self.send(text)
        await self.expect(expected)


async def open_client(url, name):
    ws = await asyncio.wait_for(connect(url, open_timeout=RECV_DEADLINE), RECV_DEADLINE)
    client = Client(name, ws)
    await client.expect(WELCOME)
    return client


async def flow(url):
    a = await open_client(url, "a")
    b = await open_client(url, "b")
    c = await open_client(url, "c")

    for client in (a, b, c):
        await client.roundtrip("ping", "pong")

    # A join without a room means `general`.
    await a.roundtrip(join(), "joined room: general")
    await a.roundtrip(join("side"), "joined room: side")
    await b.roundtrip(join("general"), "joined room: general")
    await b.roundtrip(join("side"), "joined room: side")
    await c.roundtrip(join("side"), "joined room: side")

    # Both members of general get the broadcast, the sender included; c (not a member) does not.
    await a.send(chat("general", "Hello everyone"))
    await a.expect("room general: Hello everyone")
    await b.expect("room general: Hello everyone")
    await a.send(chat("side", "sync 1"))
    for client in (a, b, c):
        await client.expect("room side: sync 1")

    # After leaving general, b gets nothing more from it.
    await b.roundtrip(leave("general"), "left room: general")
    await a.send(chat("general", "after leave"))
    await a.expect("room general: after leave")
    await a.send(chat("side", "sync 2"))
    for client in (a, b, c):
        await client.expect("room side: sync 2")

    # A chat message without a room goes to general.
    await a.roundtrip(chat(None, "default room"), "room general: default room")

    # Refusals and unknown types are answered to the sender only.
    await a.roundtrip(chat("general", ""), "message rejected: empty text")
    await a.roundtrip(
        json.dumps({"type": "presence.update", "payload": {}}),
        "unknown message type: presence.update",
    )
    await c.roundtrip("ping", "pong")

    for client in (a, b, c):
        await asyncio.wait_for(client.ws.close(), RECV_DEADLINE)


def main():
    if len(sys.argv) != 2:
        print("usage: chat_flow.py ws://HOST:PORT/", file=sys.stderr)
        return 2
    try:
        asyncio.run(asyncio.wait_for(flow(sys.argv[1]), TOTAL_DEADLINE))
    except Mismatch as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a refused connection, a close frame instead of a message, the total deadline
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("chat_flow.py: all replies as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
