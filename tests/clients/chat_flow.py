#!/usr/bin/env python3
"""The chat protocol, reply by reply, through the Python `websockets` client.

Usage: chat_flow.py ws://HOST:PORT/ [--compression deflate|none] [--expect-extensions VALUE|none]

`--compression` is the client's permessage-deflate setting: `deflate` (the default, as in `websockets`)
offers it, `none` (`compression=None`) does not. With `--expect-extensions`, every client checks the
server's `Sec-WebSocket-Extensions` answer (exactly VALUE, or absent for `none`) and what arrived compressed:
the long room message (over 1 kB, compressible) must arrive compressed (RSV1) if and only if an extension was
negotiated, and no message under 64 bytes (the server's default `WEBSOCKET_DEFLATE_MIN_SIZE`) may arrive
compressed. The RSV1 bit is read where `websockets` inflates: the negotiated extension's `decode` is wrapped.

Three clients: a and b share room `general`; a, b and c share room `side`. Checks the welcome, ping/pong,
join (with and without a room), broadcast to every member including the sender, no delivery to a
non-member, leave stopping delivery, the empty-text refusal and the unknown-type reply. Every wait has a
deadline; any mismatch exits 1 with the expected and actual message.

Absence ("c never sees the general message") is checked without sleeping: right after the message to
`general`, the same sender sends to `side`, where c is a member; c's next message must be that one. The
server forwards a sender's broadcasts in order, so a wrongly delivered `general` message would come first.
"""

import argparse
import asyncio
import collections
import json
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode

WELCOME = "welcome to Vix WebSocket chat"
RECV_DEADLINE = 5.0
TOTAL_DEADLINE = 30.0
# The server's default WEBSOCKET_DEFLATE_MIN_SIZE: shorter messages are never compressed.
DEFLATE_MIN_SIZE = 64
# Over 1 kB and repetitive, so every permessage-deflate sender compresses it (Node's `ws` only compresses
# from 1024 bytes), and it shrinks.
LONG_TEXT = "a message long enough to be compressed: " + "the quick brown fox jumps over the lazy dog; " * 24


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


class RecordingDeflateFactory(ClientPerMessageDeflateFactory):
    """The offer `websockets` makes by default (`permessage-deflate; client_max_window_bits`), whose
    negotiated extension records the RSV1 bit of each incoming message's first frame in `rsv1`. Installed
    at connect time, so it also sees the messages that arrive with the handshake's answer."""

    def __init__(self, rsv1):
        super().__init__(compress_settings={"memLevel": 5})
        self.rsv1 = rsv1

    def process_response_params(self, params, accepted_extensions):
        extension = super().process_response_params(params, accepted_extensions)
        original = extension.decode
        rsv1 = self.rsv1

        def decode(frame, *, max_size=None):
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                rsv1.append(frame.rsv1)
            return original(frame, max_size=max_size)

        extension.decode = decode
        return extension


class Client:
    def __init__(self, name, ws, rsv1, check_compression):
        self.name = name
        self.ws = ws
        self.check_compression = check_compression
        # RSV1 of each incoming message's first frame, in arrival order; filled as frames are parsed,
        # which is before recv() returns their message.
        self.rsv1 = rsv1

    @property
    def deflate(self):
        return len(self.ws.protocol.extensions) > 0

    async def expect(self, expected, compressed=None):
        """The next message must be `expected`; with --expect-extensions, also compressed or not as
        `compressed` says (None: only the minimum-size rule applies)."""
        try:
            got = await asyncio.wait_for(self.ws.recv(), RECV_DEADLINE)
        except asyncio.TimeoutError:
            raise Mismatch(f"{self.name}: expected {expected!r}, got nothing within {RECV_DEADLINE}s")
        # Without an extension no frame passes through decode, and none may be compressed.
        was_compressed = self.rsv1.popleft() if self.deflate else False
        if got != expected:
            raise Mismatch(f"{self.name}: expected {expected!r}, got {got!r}")
        if self.check_compression:
            size = len(got.encode())
            if size < DEFLATE_MIN_SIZE and was_compressed:
                raise Mismatch(f"{self.name}: {got!r} ({size} bytes) arrived compressed")
            if compressed is not None and was_compressed != compressed:
                state = "compressed" if was_compressed else "plain"
                raise Mismatch(f"{self.name}: {got[:40]!r}... ({size} bytes) arrived {state}")
        print(f"{self.name} <- {got[:100]}{' [compressed]' if was_compressed else ''}")

    async def send(self, text):
        print(f"{self.name} -> {text}")
        await self.ws.send(text)

    async def roundtrip(self, text, expected):
        await self.send(text)
        await self.expect(expected)


async def open_client(url, name, options):
    rsv1 = collections.deque()
    if options.compression == "none":
        settings = {"compression": None}
    else:
        settings = {"compression": "deflate", "extensions": [RecordingDeflateFactory(rsv1)]}
    ws = await asyncio.wait_for(connect(url, open_timeout=RECV_DEADLINE, **settings), RECV_DEADLINE)
    answer = ws.response.headers.get_all("Sec-WebSocket-Extensions")
    print(f"{name}: Sec-WebSocket-Extensions: {answer}, extensions {ws.protocol.extensions}")
    if options.expect_extensions is not None:
        expected = [] if options.expect_extensions == "none" else [options.expect_extensions]
        if answer != expected:
            raise Mismatch(f"{name}: Sec-WebSocket-Extensions: expected {expected}, got {answer}")
        if (len(ws.protocol.extensions) > 0) != (len(expected) > 0):
            raise Mismatch(f"{name}: negotiated extensions {ws.protocol.extensions}, expected {expected}")
    client = Client(name, ws, rsv1, options.expect_extensions is not None)
    await client.expect(WELCOME)
    return client


async def flow(url, options):
    a = await open_client(url, "a", options)
    b = await open_client(url, "b", options)
    c = await open_client(url, "c", options)

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
    # A long message: the client compresses it if deflate was negotiated, the server inflates it, and
    # both members get it compressed if and only if they negotiated deflate.
    await a.send(chat("general", LONG_TEXT))
    for client in (a, b):
        await client.expect(f"room general: {LONG_TEXT}", compressed=client.deflate)
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
    parser = argparse.ArgumentParser(description="The chat protocol through Python websockets.")
    parser.add_argument("url", help="ws://HOST:PORT/")
    parser.add_argument("--compression", choices=["deflate", "none"], default="deflate")
    parser.add_argument(
        "--expect-extensions",
        metavar="VALUE|none",
        help="the exact Sec-WebSocket-Extensions answer expected, or none for no extension",
    )
    options = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(flow(options.url, options), TOTAL_DEADLINE))
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
