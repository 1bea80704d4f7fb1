#!/usr/bin/env node
// The chat protocol, reply by reply, through Node's `ws` client: the same flow as chat_flow.py.
//
// Usage: node chat_flow.mjs ws://HOST:PORT/ [--compression deflate|none] [--expect-extensions VALUE|none]
//
// `--compression` is the client's `perMessageDeflate` option: `deflate` (the default, as in `ws`) is
// `perMessageDeflate: true`, `none` is `false`. With `--expect-extensions`, every client checks the server's
// `Sec-WebSocket-Extensions` answer (exactly VALUE, or absent for `none`), `ws.extensions`, and what arrived
// compressed: the long room message (over 1 kB, so `ws` compresses it too) must arrive compressed (RSV1)
// if and only if an extension was negotiated, and no message under 64 bytes (the server's default
// `WEBSOCKET_DEFLATE_MIN_SIZE`) may arrive compressed. The RSV1 bits are read by a second listener on the
// socket's data, which parses the server's (unmasked) frame headers.
//
// Three clients: a and b share room `general`; a, b and c share room `side`. Every wait has a deadline;
// any mismatch exits 1 with the expected and actual message. Absence ("c never sees the general message")
// is checked without sleeping: right after the message to `general` the same sender sends to `side`, and
// c's next message must be that one, since the server forwards one sender's broadcasts in order.

import WebSocket from "ws";

const WELCOME = "welcome to Vix WebSocket chat";
const RECV_DEADLINE_MS = 5000;
const TOTAL_DEADLINE_MS = 30000;
// The server's default WEBSOCKET_DEFLATE_MIN_SIZE: shorter messages are never compressed.
const DEFLATE_MIN_SIZE = 64;
// Over 1 kB (ws compresses from 1024 bytes) and repetitive, so it shrinks.
const LONG_TEXT =
  "a message long enough to be compressed: " + "the quick brown fox jumps over the lazy dog; ".repeat(24);

/** Parses the server's frames from the raw socket data and records, per message, whether its first frame
 * carried RSV1. */
class FrameTap {
  constructor() {
    this.pending = Buffer.alloc(0);
    this.rsv1 = [];
  }

  push(chunk) {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (;;) {
      const buf = this.pending;
      if (buf.length < 2) return;
      let len = buf[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        offset = 10;
      }
      if (buf[1] & 0x80) offset += 4;
      if (buf.length < offset + len) return;
      const opcode = buf[0] & 0x0f;
      if (opcode === 0x1 || opcode === 0x2) this.rsv1.push((buf[0] & 0x40) !== 0);
      this.pending = buf.subarray(offset + len);
    }
  }
}

class Mismatch extends Error {}

const join = (room) =>
  JSON.stringify({ type: "room.join", payload: room === undefined ? {} : { room } });
const leave = (room) => JSON.stringify({ type: "room.leave", payload: { room } });
const chat = (room, text) =>
  JSON.stringify({
    type: "chat.message",
    payload: room === undefined ? { text } : { room, text },
  });

/** One connection whose incoming text messages queue up until a test step takes them. */
class Client {
  constructor(name, url, options) {
    this.name = name;
    this.options = options;
    this.queue = [];
    this.waiter = null;
    this.ended = null;
    this.answer = null;
    this.tap = new FrameTap();
    this.ws = new WebSocket(url, { perMessageDeflate: options.compression === "deflate" });
    let socket = null;
    this.ws.on("upgrade", (response) => {
      // Every Sec-WebSocket-Extensions line, as sent (Node would join repeated lines with ", ").
      this.answer = [];
      for (let i = 0; i < response.rawHeaders.length; i += 2) {
        if (response.rawHeaders[i].toLowerCase() === "sec-websocket-extensions") {
          this.answer.push(response.rawHeaders[i + 1]);
        }
      }
      socket = response.socket;
    });
    // `open` is emitted right after ws attaches its own data listener and puts back the bytes that came
    // with the handshake's answer, before any of them is read: this listener sees every frame too.
    this.ws.on("open", () => socket.on("data", (chunk) => this.tap.push(chunk)));
    this.ws.on("message", (data, isBinary) => {
      this.push(isBinary ? { error: `binary message ${data.toString("hex")}` } : { text: data.toString() });
    });
    this.ws.on("close", (code, reason) => {
      this.ended = `connection closed (${code} ${reason})`;
      this.push({ error: this.ended });
    });
    this.ws.on("error", (err) => this.push({ error: `socket error: ${err.message}` }));
  }

  push(item) {
    if (this.waiter) {
      const resolve = this.waiter;
      this.waiter = null;
      resolve(item);
    } else {
      this.queue.push(item);
    }
  }

  next() {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve({ error: `nothing within ${RECV_DEADLINE_MS} ms` });
      }, RECV_DEADLINE_MS);
      this.waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }

  get deflate() {
    return this.ws.extensions === "permessage-deflate";
  }

  /** Checks the handshake's answer and the negotiated extension against --expect-extensions. */
  checkNegotiation() {
    console.log(
      `${this.name}: Sec-WebSocket-Extensions: ${JSON.stringify(this.answer)}, ws.extensions ${JSON.stringify(this.ws.extensions)}`,
    );
    const value = this.options.expectExtensions;
    if (value === undefined) return;
    const expected = value === "none" ? [] : [value];
    if (JSON.stringify(this.answer) !== JSON.stringify(expected)) {
      throw new Mismatch(
        `${this.name}: Sec-WebSocket-Extensions: expected ${JSON.stringify(expected)}, got ${JSON.stringify(this.answer)}`,
      );
    }
    const extensions = value === "none" ? "" : "permessage-deflate";
    if (this.ws.extensions !== extensions) {
      throw new Mismatch(
        `${this.name}: ws.extensions: expected ${JSON.stringify(extensions)}, got ${JSON.stringify(this.ws.extensions)}`,
      );
    }
  }

  /** The next message must be `expected`; with --expect-extensions, also compressed or not as `compressed`
   * says (undefined: only the minimum-size rule applies). */
  async expect(expected, compressed) {
    const got = await this.next();
    if (got.text !== expected) {
      throw new Mismatch(
        `${this.name}: expected ${JSON.stringify(expected)}, got ${got.error ?? JSON.stringify(got.text)}`,
      );
    }
    const wasCompressed = this.tap.rsv1.shift();
    if (wasCompressed === undefined) {
      throw new Mismatch(`${this.name}: the frame tap saw no frame for ${JSON.stringify(got.text)}`);
    }
    if (this.options.expectExtensions !== undefined) {
      const size = Buffer.byteLength(got.text);
      if (size < DEFLATE_MIN_SIZE && wasCompressed) {
        throw new Mismatch(`${this.name}: ${JSON.stringify(got.text)} (${size} bytes) arrived compressed`);
      }
      if (compressed !== undefined && wasCompressed !== compressed) {
        throw new Mismatch(
          `${this.name}: ${JSON.stringify(got.text.slice(0, 40))}... (${size} bytes) arrived ${wasCompressed ? "compressed" : "plain"}`,
        );
      }
    }
    console.log(`${this.name} <- ${got.text.slice(0, 100)}${wasCompressed ? " [compressed]" : ""}`);
  }

  send(text) {
    console.log(`${this.name} -> ${text}`);
    this.ws.send(text);
  }

  async roundtrip(text, expected) {
    this.send(text);
    await this.expect(expected);
  }

  close() {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, RECV_DEADLINE_MS);
      this.ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(1000);
    });
  }
}

async function openClient(url, name, options) {
  const client = new Client(name, url, options);
  await client.expect(WELCOME);
  client.checkNegotiation();
  return client;
}

async function flow(url, options) {
  const a = await openClient(url, "a", options);
  const b = await openClient(url, "b", options);
  const c = await openClient(url, "c", options);

  for (const client of [a, b, c]) await client.roundtrip("ping", "pong");

  // A join without a room means `general`.
  await a.roundtrip(join(), "joined room: general");
  await a.roundtrip(join("side"), "joined room: side");
  await b.roundtrip(join("general"), "joined room: general");
  await b.roundtrip(join("side"), "joined room: side");
  await c.roundtrip(join("side"), "joined room: side");

  // Both members of general get the broadcast, the sender included; c (not a member) does not.
  a.send(chat("general", "Hello everyone"));
  await a.expect("room general: Hello everyone");
  await b.expect("room general: Hello everyone");
  // A long message: ws compresses it if deflate was negotiated, the server inflates it, and both members
  // get it compressed if and only if they negotiated deflate.
  a.send(chat("general", LONG_TEXT));
  for (const client of [a, b]) await client.expect(`room general: ${LONG_TEXT}`, client.deflate);
  a.send(chat("side", "sync 1"));
  for (const client of [a, b, c]) await client.expect("room side: sync 1");

  // After leaving general, b gets nothing more from it.
  await b.roundtrip(leave("general"), "left room: general");
  a.send(chat("general", "after leave"));
  await a.expect("room general: after leave");
  a.send(chat("side", "sync 2"));
  for (const client of [a, b, c]) await client.expect("room side: sync 2");

  // A chat message without a room goes to general.
  await a.roundtrip(chat(undefined, "default room"), "room general: default room");

  // Refusals and unknown types are answered to the sender only.
  await a.roundtrip(chat("general", ""), "message rejected: empty text");
  await a.roundtrip(
    JSON.stringify({ type: "presence.update", payload: {} }),
    "unknown message type: presence.update",
  );
  await c.roundtrip("ping", "pong");

  await Promise.all([a, b, c].map((client) => client.close()));
}

/** The URL and the options, or null on a usage error. */
function parseArgs(args) {
  const options = { compression: "deflate", expectExtensions: undefined };
  let url;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--compression" && ["deflate", "none"].includes(args[i + 1])) {
      options.compression = args[++i];
    } else if (args[i] === "--expect-extensions" && i + 1 < args.length) {
      options.expectExtensions = args[++i];
    } else if (url === undefined && !args[i].startsWith("--")) {
      url = args[i];
    } else {
      return null;
    }
  }
  return url === undefined ? null : { url, options };
}

async function main() {
  const parsed = parseArgs(process.argv.slice(2));
  if (!parsed) {
    console.error(
      "usage: node chat_flow.mjs ws://HOST:PORT/ [--compression deflate|none] [--expect-extensions VALUE|none]",
    );
    return 2;
  }
  const { url, options } = parsed;
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`flow not done within ${TOTAL_DEADLINE_MS} ms`)), TOTAL_DEADLINE_MS);
  });
  try {
    await Promise.race([flow(url, options), deadline]);
  } catch (err) {
    console.error(`FAIL: ${err.message}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
  console.log("chat_flow.mjs: all replies as expected");
  return 0;
}

process.exit(await main());
