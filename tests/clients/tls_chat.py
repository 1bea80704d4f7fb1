"""Two Python `websockets` clients chat over wss:// through a TLS-terminating proxy (tests/proxy.rs runs it
against deploy/nginx.conf). The proxy's certificate is a test's self-signed one, so it is not verified.

Usage: python3 tls_chat.py wss://HOST:PORT/
Exits 0 when both get the welcome, join `proxy`, and both see each other's message once; 1 otherwise.
"""
import asyncio
import ssl
import sys

import websockets

DEADLINE = 10


async def expect(ws, wanted):
    got = await asyncio.wait_for(ws.recv(), DEADLINE)
    if got != wanted:
        raise SystemExit(f"expected {wanted!r}, got {got!r}")


async def main(url):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    join = '{"type":"room.join","payload":{"room":"proxy"}}'
    async with websockets.connect(url, ssl=context) as a, websockets.connect(url, ssl=context) as b:
        for ws in (a, b):
            await expect(ws, "welcome to Vix WebSocket chat")
            await ws.send(join)
            await expect(ws, "joined room: proxy")
        await a.send('{"type":"chat.message","payload":{"room":"proxy","text":"through nginx"}}')
        for ws in (a, b):
            await expect(ws, "room proxy: through nginx")
        await b.send("ping")
        await expect(b, "pong")
    print("chat through the proxy: ok")


asyncio.run(main(sys.argv[1]))
