#!/usr/bin/env node
// public/roomcast.js against a scripted fake server, for what the real server should never do or cannot be
// made to do on demand: a gap in offsets, a duplicate live message, a connection lost before an ack, a peer
// that stops answering pings, an error reply.
//
// Usage: node roomcast_client.mjs
//
// Runs the module in Node with `ws` as the global WebSocket. Checks: the first join has no `since` and a
// reset; duplicates (offset <= last) are dropped; a gap makes the client rejoin with `since` = the last
// offset it emitted and drops live messages until the recovery, so it emits 1..6 exactly once; a message
// whose ack never came is resent with the same id after the reconnect, after the rejoin; presence pending
// at a disconnect rejects with "disconnected"; an `error` reply rejects with its code; a silent peer is
// dropped by the heartbeat. Every wait has a deadline; exit 0 on success, 1 otherwise.

import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import WebSocket, { WebSocketServer } from "ws";

globalThis.WebSocket = WebSocket;
const here = dirname(fileURLToPath(import.meta.url));
const { RoomcastClient } = await import(pathToFileURL(join(here, "..", "..", "public", "roomcast.js")).href);
const DEADLINE_MS = 5000;

/** The fake server: hands each connection's parsed requests to a queue the test reads. */
const server = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (p) => (p.has("roomcast.v1") ? "roomcast.v1" : false) });
const conns = [];
let onConn = null;
server.on("connection", (ws) => {
  const conn = { ws, inbox: [], wake: null, pongs: true };
  ws.on("message", (data) => {
    const text = data.toString();
    if (text === "ping") return conn.pongs && ws.send("pong");
    conn.inbox.push(JSON.parse(text));
    conn.wake?.();
  });
  ws.send(JSON.stringify({ type: "welcome", payload: { session: `0-${conns.length}` } }));
  conns.push(conn);
  onConn?.(conn);
});
await new Promise((resolve) => server.on("listening", resolve));

const within = (what, promise) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${DEADLINE_MS} ms`)), DEADLINE_MS))]);
const nextConn = () => within("a connection", new Promise((resolve) => (onConn = resolve)));
async function request(conn, type) {
  return within(`a ${type} request`, (async () => {
    for (;;) {
      const i = conn.inbox.findIndex((m) => m.type === type);
      if (i >= 0) return conn.inbox.splice(i, 1)[0];
      await new Promise((resolve) => (conn.wake = resolve));
    }
  })());
}
const send = (conn, type, payload, ref) => conn.ws.send(JSON.stringify({ type, ref, payload }));
const chat = (offset) => ({ room: "r", text: `m${offset}`, from: "0-0", offset, epoch: "E", ts: offset });
const expect = (ok, what, got) => {
  if (!ok) throw new Error(`${what}; got ${JSON.stringify(got)}`);
};

async function flow() {
  const client = new RoomcastClient(`ws://127.0.0.1:${server.address().port}/`, { heartbeatMs: 0 });
  const emitted = [];
  const events = [];
  client.addEventListener("message", (e) => emitted.push(e.detail.offset));
  for (const type of ["reset", "gap", "state"]) client.addEventListener(type, (e) => events.push([type, e.detail]));

  let conn = nextConn();
  client.connect();
  conn = await conn;
  const joined = client.join("r");
  let join = await request(conn, "room.join");
  expect(join.payload.since === undefined, "first join without since", join);
  send(conn, "room.joined", { room: "r", offset: 2, epoch: "E", recovered: false, publications: [chat(1), chat(2)] }, join.ref);
  await within("join promise", joined);
  expect(events.some(([t]) => t === "reset"), "a reset on the first join", events);

  // A duplicate, the next one, then a gap: the client asks again from #3 and drops live #6 meanwhile.
  send(conn, "chat.message", chat(2));
  send(conn, "chat.message", chat(3));
  send(conn, "chat.message", chat(5));
  join = await request(conn, "room.join");
  expect(join.payload.since?.offset === 3 && join.payload.since?.epoch === "E", "a rejoin from #3 after the gap", join);
  send(conn, "chat.message", chat(6));
  send(conn, "room.joined", { room: "r", offset: 6, epoch: "E", recovered: true, publications: [chat(4), chat(5), chat(6)] }, join.ref);
  await within("offset 6", (async () => { while (emitted.at(-1) !== 6) await new Promise((r) => setTimeout(r, 10)); })());
  expect(JSON.stringify(emitted) === "[1,2,3,4,5,6]", "each offset once, in order", emitted);
  expect(events.some(([t, d]) => t === "gap" && d.expected === 4 && d.got === 5), "a gap event", events);

  // An error reply rejects with its code.
  const empty = client.send("r", "");
  const refused = await request(conn, "chat.message");
  send(conn, "error", { code: "empty_text", message: "message rejected: empty text" }, refused.ref);
  const err = await within("empty_text", empty.then(() => null, (e) => e));
  expect(err?.code === "empty_text", "send rejects with empty_text", err);

  // A message sent, the connection lost before its ack, and presence pending: resent with the same id after
  // the rejoin; presence rejected.
  const sent = client.send("r", "hello");
  const first = await request(conn, "chat.message");
  const presence = client.presence("r").then(() => "resolved", (e) => e.message);
  await request(conn, "room.presence");
  const reconnected = nextConn();
  conn.ws.terminate();
  expect((await within("presence", presence)) === "disconnected", "presence rejects on disconnect", presence);
  conn = await reconnected;
  join = await request(conn, "room.join");
  expect(join.payload.since?.offset === 6, "the rejoin after a reconnect from #6", join);
  expect(conn.inbox.length === 0, "nothing resent before the rejoin's answer", conn.inbox);
  send(conn, "room.joined", { room: "r", offset: 6, epoch: "E", recovered: true, publications: [] }, join.ref);
  const again = await request(conn, "chat.message");
  expect(again.payload.id === first.payload.id && again.payload.text === "hello", "resent with the same id", [first, again]);
  send(conn, "ack", { room: "r", offset: 7, epoch: "E", duplicate: true }, again.ref);
  const ack = await within("the resent message's ack", sent);
  expect(ack.offset === 7 && client.outboxSize === 0, "send resolves with the ack", ack);
  expect(events.filter(([t, d]) => t === "state" && d.state === "reconnecting").length === 1, "one reconnecting state", events);
  client.close();

  // A peer that stops answering pings is dropped by the heartbeat.
  const beating = new RoomcastClient(`ws://127.0.0.1:${server.address().port}/`, { heartbeatMs: 100 });
  const states = [];
  beating.addEventListener("state", (e) => states.push(e.detail.state));
  conn = nextConn();
  beating.connect();
  conn = await conn;
  await new Promise((r) => setTimeout(r, 350)); // pongs answered: stays open
  expect(!states.includes("reconnecting"), "no drop while pongs come", states);
  conn.pongs = false;
  await within("a drop on missing pongs", nextConn());
  expect(states.includes("reconnecting"), "reconnecting after missing pongs", states);
  beating.close();
}

try {
  await flow();
  console.log("roomcast_client.mjs: the client keeps each offset once, in order, and resends what was not acked");
  server.close();
  process.exit(0);
} catch (err) {
  console.error(`FAIL: ${err.message}`);
  process.exit(1);
}
