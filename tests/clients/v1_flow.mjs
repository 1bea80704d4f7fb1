#!/usr/bin/env node
// The `roomcast.v1` JSON dialect, reply by reply, through Node's `ws` client: the same flow as v1_flow.py.
//
// Usage: node v1_flow.mjs ws://HOST:PORT/
//
// One room of its own (`v1-node-<random>`, so the flow runs against any server, history or not):
//   1. client a asks for the subprotocol `roomcast.v1` and the server must agree to it; `welcome` names a's
//      session; raw `ping` gets the raw `pong`;
//   2. a joins with a ref: `room.joined` with that ref, `recovered: false`, no publications (a new room);
//   3. a sends a chat message with a ref and an id: a gets the `chat.message` (from a's session, offset 1)
//      and the `ack` with that ref and offset, `duplicate: false`;
//   4. a resends the same id under a new ref: `ack` with the first offset and `duplicate: true`, and no
//      second `chat.message`: a marker message sent right after must be the next `chat.message` a gets (the
//      server handles one session's requests in order);
//   5. an empty text gets `error` `empty_text` with its ref;
//   6. client b joins: `room.presence` says 2 members, a and b;
//   7. a disconnects, b publishes 3 messages, a comes back on a new connection and joins with `since` = the
//      last (offset, epoch) it saw: `recovered: true` and exactly those 3, in order.
// Every wait has a deadline; exits 0 on success, 1 with the expected and actual message otherwise.

import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import WebSocket from "ws";

const PROTOCOL = "roomcast.v1";
const RECV_DEADLINE_MS = 5000;
const TOTAL_DEADLINE_MS = 30000;

class Mismatch extends Error {}

function check(ok, what, got) {
  if (!ok) throw new Mismatch(`${what}; got ${JSON.stringify(got)}`);
}

/** One connection whose incoming messages queue up until a step takes them. */
class Client {
  static async open(name, url) {
    const client = new Client();
    client.name = name;
    client.queue = [];
    client.waiter = null;
    client.closed = null;
    const ws = (client.ws = new WebSocket(url, PROTOCOL));
    ws.on("message", (data) => {
      client.queue.push(data.toString());
      client.wake?.();
    });
    ws.on("close", (code) => {
      client.closed = `closed (${code})`;
      client.wake?.();
    });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Mismatch(`${name}: no open within ${RECV_DEADLINE_MS} ms`)), RECV_DEADLINE_MS);
      ws.once("open", () => (clearTimeout(timer), resolve()));
      ws.once("error", (err) => (clearTimeout(timer), reject(new Mismatch(`${name}: ${err.message}`))));
    });
    check(ws.protocol === PROTOCOL, `${name}: the server must agree to ${PROTOCOL}`, ws.protocol);
    const welcome = await client.next();
    check(welcome.type === "welcome" && typeof welcome.payload?.session === "string", `${name}: first a welcome with a session`, welcome);
    client.session = welcome.payload.session;
    console.log(`${name}: ${PROTOCOL} agreed, session ${client.session}`);
    return client;
  }

  send(type, payload, ref) {
    this.ws.send(JSON.stringify(ref === undefined ? { type, payload } : { type, ref, payload }));
  }

  /** The next message (parsed unless `raw`), within the deadline. */
  async next(raw = false) {
    if (this.queue.length === 0) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Mismatch(`${this.name}: nothing arrived within ${RECV_DEADLINE_MS} ms`)), RECV_DEADLINE_MS);
        this.wake = () => (clearTimeout(timer), (this.wake = null), resolve());
        if (this.closed) this.wake();
      });
    }
    if (this.queue.length === 0) throw new Mismatch(`${this.name}: connection ${this.closed} while waiting`);
    const text = this.queue.shift();
    return raw ? text : JSON.parse(text);
  }

  async expect(type, ref) {
    const msg = await this.next();
    check(msg.type === type && msg.ref === ref, `${this.name}: expected ${type} with ref ${ref}`, msg);
    return msg.payload;
  }

  /** Every message up to and including the ack with `ref`: [chat.message payloads, ack payload]. */
  async untilAck(ref) {
    const chats = [];
    for (;;) {
      const msg = await this.next();
      if (msg.type === "ack" && msg.ref === ref) return [chats, msg.payload];
      check(msg.type === "chat.message", `${this.name}: only chat.message before ack ${ref}`, msg);
      chats.push(msg.payload);
    }
  }

  close() {
    this.ws.close();
  }
}

async function flow(url) {
  const room = "v1-node-" + randomBytes(4).toString("hex");

  // 1. subprotocol, welcome, ping.
  const a = await Client.open("a", url);
  a.ws.send("ping");
  const pong = await a.next(true);
  check(pong === "pong", "a: ping answered with pong", pong);

  // 2. join with a ref.
  a.send("room.join", { room }, "j1");
  const joined = await a.expect("room.joined", "j1");
  check(
    joined.room === room && joined.recovered === false && isDeepStrictEqual(joined.publications, []) &&
      joined.offset === 0 && typeof joined.epoch === "string",
    "a: a new room's join: recovered false, offset 0, no publications",
    joined,
  );
  const epoch = joined.epoch;
  console.log(`a: joined ${room}, epoch ${epoch}`);

  // 3. a chat message with a ref and an id: the broadcast, then the ack.
  a.send("chat.message", { room, text: "first", id: "msg-1" }, "m1");
  let [chats, ack] = await a.untilAck("m1");
  check(chats.length === 1, "a: its own message once before the ack", chats);
  check(
    isDeepStrictEqual(chats[0], { room, text: "first", from: a.session, offset: 1, epoch, ts: chats[0].ts }) &&
      Number.isInteger(chats[0].ts),
    "a: chat.message first, from a, offset 1",
    chats[0],
  );
  check(isDeepStrictEqual(ack, { room, offset: 1, epoch, duplicate: false }), "a: ack m1 at offset 1", ack);
  console.log("a: chat.message #1 and ack m1 (offset 1)");

  // 4. the same id again: acknowledged as a duplicate, not published; the marker comes next.
  a.send("chat.message", { room, text: "first", id: "msg-1" }, "m2");
  [chats, ack] = await a.untilAck("m2");
  check(chats.length === 0, "a: no chat.message for a duplicate", chats);
  check(isDeepStrictEqual(ack, { room, offset: 1, epoch, duplicate: true }), "a: ack m2 duplicate at the first offset", ack);
  a.send("chat.message", { room, text: "marker", id: "msg-2" }, "m3");
  [chats, ack] = await a.untilAck("m3");
  check(
    isDeepStrictEqual(chats.map((c) => [c.text, c.offset]), [["marker", 2]]),
    "a: the marker (offset 2) is the next chat.message, the duplicate never published",
    chats,
  );
  check(ack.offset === 2 && ack.duplicate === false, "a: ack m3 at offset 2", ack);
  console.log("a: resend of msg-1 acked duplicate at offset 1, not published; marker at offset 2");

  // 5. an error with its ref.
  a.send("chat.message", { room, text: "" }, "e1");
  const error = await a.expect("error", "e1");
  check(error.code === "empty_text" && typeof error.message === "string", "a: empty_text", error);
  console.log("a: empty text refused with empty_text (ref e1)");

  // 6. presence with two members.
  const b = await Client.open("b", url);
  b.send("room.join", { room }, "jb");
  const joinedB = await b.expect("room.joined", "jb");
  check(
    isDeepStrictEqual(joinedB.publications.map((p) => p.text), ["first", "marker"]),
    "b: the room's history on join",
    joinedB,
  );
  a.send("room.presence", { room }, "p1");
  const presence = await a.expect("room.presence", "p1");
  const sessions = presence.members.map((m) => m.session).sort();
  check(
    presence.room === room && presence.count === 2 && isDeepStrictEqual(sessions, [a.session, b.session].sort()),
    "a: presence: 2 members, a and b",
    presence,
  );
  console.log(`a: presence count 2 (${sessions.join(", ")})`);

  // 7. a leaves by disconnecting, misses 3 messages, and recovers exactly them.
  const last = { offset: 2, epoch };
  a.close();
  const texts = [1, 2, 3].map((i) => `missed ${i}`);
  for (const [i, text] of texts.entries()) {
    b.send("chat.message", { room, text, id: `b-${i}` }, `b${i}`);
    const [, ackB] = await b.untilAck(`b${i}`);
    check(ackB.offset === 3 + i, `b: ack b${i} at offset ${3 + i}`, ackB);
  }
  const a2 = await Client.open("a again", url);
  a2.send("room.join", { room, since: last }, "j2");
  const rejoined = await a2.expect("room.joined", "j2");
  const got = rejoined.publications.map((p) => [p.offset, p.text, p.from]);
  check(
    rejoined.recovered === true && rejoined.epoch === epoch && rejoined.offset === 5 &&
      isDeepStrictEqual(got, texts.map((t, i) => [3 + i, t, b.session])),
    "a again: recovered true with exactly the 3 missed messages (offsets 3-5)",
    rejoined,
  );
  console.log("a again: recovered true, exactly the 3 missed messages (offsets 3, 4, 5)");
  a2.close();
  b.close();
}

async function main() {
  const url = process.argv[2];
  if (!url || process.argv.length !== 3) {
    console.error("usage: node v1_flow.mjs ws://HOST:PORT/");
    return 2;
  }
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Mismatch(`the flow took over ${TOTAL_DEADLINE_MS} ms`)), TOTAL_DEADLINE_MS);
  });
  try {
    await Promise.race([flow(url), deadline]);
  } catch (err) {
    console.error(`FAIL: ${err instanceof Mismatch ? "" : err.name + ": "}${err.message}`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
  console.log("v1_flow.mjs: the roomcast.v1 flow passed");
  return 0;
}

process.exit(await main());
