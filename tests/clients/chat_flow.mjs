#!/usr/bin/env node
// The chat protocol, reply by reply, through Node's `ws` client: the same flow as chat_flow.py.
//
// Usage: node chat_flow.mjs ws://HOST:PORT/
//
// Three clients: a and b share room `general`; a, b and c share room `side`. Every wait has a deadline;
// any mismatch exits 1 with the expected and actual message. Absence ("c never sees the general message")
// is checked without sleeping: right after the message to `general` the same sender sends to `side`, and
// c's next message must be that one, since the server forwards one sender's broadcasts in order.

import WebSocket from "ws";

const WELCOME = "welcome to Vix WebSocket chat";
const RECV_DEADLINE_MS = 5000;
const TOTAL_DEADLINE_MS = 30000;

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
  constructor(name, url) {
    this.name = name;
    this.queue = [];
    this.waiter = null;
    this.ended = null;
    this.ws = new WebSocket(url);
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

  async expect(expected) {
    const got = await this.next();
    if (got.text !== expected) {
      throw new Mismatch(
        `${this.name}: expected ${JSON.stringify(expected)}, got ${got.error ?? JSON.stringify(got.text)}`,
      );
    }
    console.log(`${this.name} <- ${got.text}`);
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

async function openClient(url, name) {
  const client = new Client(name, url);
  await client.expect(WELCOME);
  return client;
}

async function flow(url) {
  const a = await openClient(url, "a");
  const b = await openClient(url, "b");
  const c = await openClient(url, "c");

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

async function main() {
  const url = process.argv[2];
  if (!url) {
    console.error("usage: node chat_flow.mjs ws://HOST:PORT/");
    return 2;
  }
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`flow not done within ${TOTAL_DEADLINE_MS} ms`)), TOTAL_DEADLINE_MS);
  });
  try {
    await Promise.race([flow(url), deadline]);
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
