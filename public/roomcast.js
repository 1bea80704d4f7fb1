// roomcast.js: a browser client for roomcast's `roomcast.v1` dialect. An ES module with no dependencies
// and no build step: `import { RoomcastClient } from "/roomcast.js"`.
//
//   const client = new RoomcastClient("ws://host:9090/");        // or an async function returning the URL
//   client.addEventListener("message", (e) => show(e.detail));   // {room, offset, epoch, text, from, ts}
//   client.addEventListener("reset", (e) => clear(e.detail.room));
//   client.connect();
//   await client.join("general");
//   await client.send("general", "Hello");                       // resolves with the server's ack
//
// Events (CustomEvent, data in `detail`):
//   state    {state, attempt?, delay?}  connecting | open | reconnecting | closed
//   welcome  {session}                  each (re)connection's session id
//   reset    {room, epoch}              forget what was shown for the room: history follows as messages
//   joined   {room, epoch, offset, recovered, history}   before the `history` messages it brings
//   message  {room, offset, epoch, text, from, ts, history}   each offset of an epoch exactly once, in order
//   gap      {room, expected, got, epoch}   the server skipped offsets; the client rejoins to fill them
//   outbox   {size}                     messages sent but not acknowledged yet
//   error    {code, message}            an error no pending request claims (e.g. rate_limited)
//   room.member_joined / room.member_left / ...: any other server event, its payload as detail

const PROTOCOL = "roomcast.v1";

export class RoomcastClient extends EventTarget {
  #url;
  #opts;
  #ws = null;
  #conn = 0; // connection generation: tells "sent on this connection" from "sent on a dead one"
  #attempt = 0;
  #cut = false; // the last connection was closed by the server with 1008 (a policy: its rate limit)
  #timer = null;
  #heartbeat = null;
  #awaitingPong = false;
  #nextRef = 0;
  #pending = new Map(); // ref -> {kind, room, id, resolve, reject}
  #rooms = new Map(); // room -> {epoch, offset, joined, asked, waiters}
  #outbox = new Map(); // message id -> {room, text, id, conn, resolve, reject}, in send order

  state = "closed";
  session = null;

  /** `url`: a ws:// URL, or a function (possibly async) returning one, called before every attempt, so a
   * page can ask its server where the WebSocket listener is each time it comes back. */
  constructor(url, { minDelay = 10, maxDelay = 5000, heartbeatMs = 30000, connectTimeoutMs = 10000 } = {}) {
    super();
    this.#url = url;
    this.#opts = { minDelay, maxDelay, heartbeatMs, connectTimeoutMs };
  }

  /** The extensions the server agreed to on the current socket ("" when none or not connected). */
  get extensions() { return this.#ws?.extensions ?? ""; }
  /** The subprotocol agreed on the current socket ("" when none or not connected). */
  get protocol() { return this.#ws?.protocol ?? ""; }
  /** Rooms this client is in (or rejoining after a reconnect). */
  get rooms() { return [...this.#rooms.keys()]; }
  /** Messages handed to send() whose ack has not arrived. */
  get outboxSize() { return this.#outbox.size; }

  connect() {
    if (this.state !== "closed") return;
    this.#setState("connecting");
    this.#open();
  }

  /** Closes for good: nothing reconnects, and every promise still waiting is rejected with "closed". */
  close() {
    this.#setState("closed");
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000);
    this.#dropConnection("closed");
    for (const m of this.#outbox.values()) m.reject(fail("closed"));
    for (const r of this.#rooms.values()) r.waiters.forEach((w) => w.reject(fail("closed")));
    this.#outbox.clear();
    this.#rooms.clear();
  }

  /** Joins `room` (shows its history through `reset` + `message`); kept across reconnects until leave(). */
  join(room) {
    let r = this.#rooms.get(room);
    if (r?.joined) return Promise.resolve({ room, epoch: r.epoch, offset: r.offset, recovered: true });
    if (!r) this.#rooms.set(room, (r = { epoch: null, offset: 0, joined: false, asked: false, waiters: [] }));
    const promise = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }));
    if (this.state === "open" && !r.asked) this.#askJoin(room, r);
    return promise;
  }

  /** Leaves `room` at once (its messages stop being emitted, it is not rejoined, its unsent messages are
   * rejected). Resolves on `room.left`, or when the connection drops, which ends every membership. */
  leave(room) {
    const r = this.#rooms.get(room);
    this.#rooms.delete(room);
    r?.waiters.forEach((w) => w.reject(fail("left")));
    this.#dropOutbox(room, fail("left"));
    if (this.state !== "open") return Promise.resolve({ room });
    return this.#request("room.leave", { room }, { kind: "leave", room });
  }

  /** Who is in `room`: {room, count, members}. Not retried: rejects with "disconnected" if the socket drops. */
  presence(room) {
    if (this.state !== "open") return Promise.reject(fail("disconnected"));
    return this.#request("room.presence", { room }, { kind: "presence", room });
  }

  /** Publishes `text` in `room`. Survives reconnects: resent with the same id until acknowledged, and the
   * server publishes an id once, so it appears exactly once. Resolves with the ack {room, offset, epoch,
   * duplicate}; rejects with the server's error code (e.g. "empty_text"). */
  send(room, text) {
    if (!this.#rooms.has(room)) return Promise.reject(fail("not_member"));
    const id = newId();
    return new Promise((resolve, reject) => {
      const m = { room, text, id, conn: -1, resolve, reject };
      this.#outbox.set(id, m);
      this.#emit("outbox", { size: this.#outbox.size });
      if (this.state === "open" && this.#rooms.get(room).joined) this.#transmit(m);
    });
  }

  // ---- connection ----

  async #open() {
    const conn = ++this.#conn;
    let ws;
    try {
      const url = typeof this.#url === "function" ? await this.#url() : this.#url;
      if (conn !== this.#conn || this.state === "closed") return;
      ws = this.#ws = new WebSocket(url, PROTOCOL);
    } catch (err) {
      // The URL lookup itself failed (e.g. the HTTP side is down too): same as a failed connect.
      if (conn === this.#conn && this.state !== "closed") this.#retry();
      return;
    }
    // A connect that hangs (a listener that never answers) must not stall reconnection forever.
    const hung = setTimeout(() => this.#lost(ws), this.#opts.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(hung);
      if (ws !== this.#ws) return;
      if (ws.protocol !== PROTOCOL) console.warn(`roomcast: server agreed to ${JSON.stringify(ws.protocol)}`);
      // phoenix.js-style, a successful open resets the backoff; except after the server cut us for breaking
      // its rate limit (1008): starting over at 10 ms, the outbox resent at once would be cut again and again.
      if (!this.#cut) this.#attempt = 0;
      this.#setState("open");
      this.#startHeartbeat(ws);
      for (const [room, r] of this.#rooms) this.#askJoin(room, r);
    };
    ws.onmessage = (e) => ws === this.#ws && this.#receive(e.data);
    ws.onclose = (e) => {
      clearTimeout(hung);
      if (ws === this.#ws) this.#cut = e.code === 1008;
      this.#lost(ws);
    };
  }

  /** `ws` is gone (closed, or given up on: a close handshake with a dead peer can take long, so a hung
   * connect or a missed pong does not wait for it). Later events of that socket are ignored. */
  #lost(ws) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    ws.close();
    this.#dropConnection("disconnected");
    if (this.state !== "closed") this.#retry();
  }

  /** Exponential backoff with full jitter: a uniformly random delay in [0, min(max, min*2^attempt)), so
   * that a restarted server is not hit by every client at the same instant. */
  #retry() {
    const cap = Math.min(this.#opts.maxDelay, this.#opts.minDelay * 2 ** this.#attempt);
    const delay = Math.floor(Math.random() * cap);
    this.#attempt += 1;
    this.#setState("reconnecting", { attempt: this.#attempt, delay });
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  /** What a dead connection takes with it: every membership and every reply still owed. Joins and chat
   * messages are redone on the next connection; leave resolves (the server dropped us anyway);
   * presence is a question about a moment that has passed, so it rejects. */
  #dropConnection(reason) {
    clearInterval(this.#heartbeat);
    for (const r of this.#rooms.values()) r.joined = r.asked = false;
    for (const p of this.#pending.values()) {
      if (p.kind === "leave") p.resolve({ room: p.room });
      else if (p.kind === "presence") p.reject(fail(reason));
    }
    this.#pending.clear();
  }

  /** The server answers the raw text `ping` with `pong`; no pong by the next beat means a dead peer
   * (a half-open TCP connection never fires `close` by itself). */
  #startHeartbeat(ws) {
    if (!this.#opts.heartbeatMs) return;
    this.#awaitingPong = false;
    this.#heartbeat = setInterval(() => {
      if (this.#awaitingPong) return this.#lost(ws);
      this.#awaitingPong = true;
      ws.send("ping");
    }, this.#opts.heartbeatMs);
  }

  // ---- requests and replies ----

  #request(type, payload, pending) {
    const ref = String(++this.#nextRef);
    return new Promise((resolve, reject) => {
      this.#pending.set(ref, { ...pending, resolve, reject });
      this.#ws.send(JSON.stringify({ type, ref, payload }));
    });
  }

  #askJoin(room, r) {
    r.asked = true;
    const ref = String(++this.#nextRef);
    this.#pending.set(ref, { kind: "join", room });
    // `since` is the last message this client emitted for the room, so the server sends only what came after.
    const since = r.epoch === null ? undefined : { offset: r.offset, epoch: r.epoch };
    this.#ws.send(JSON.stringify({ type: "room.join", ref, payload: { room, since } }));
  }

  #transmit(m) {
    m.conn = this.#conn;
    const ref = String(++this.#nextRef);
    this.#pending.set(ref, { kind: "chat", id: m.id });
    this.#ws.send(JSON.stringify({ type: "chat.message", ref, payload: { room: m.room, text: m.text, id: m.id } }));
  }

  /** Rejects every unacked message of `room`: it can no longer be posted there. */
  #dropOutbox(room, error) {
    for (const m of this.#outbox.values()) if (m.room === room) this.#settle(m.id, null, error);
  }

  #settle(id, value, error) {
    const m = this.#outbox.get(id);
    if (!m) return; // acked already, through an earlier copy of it
    this.#outbox.delete(id);
    error ? m.reject(error) : m.resolve(value);
    this.#emit("outbox", { size: this.#outbox.size });
  }

  #receive(data) {
    if (data === "pong") return void (this.#awaitingPong = false);
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return console.warn("roomcast: not JSON:", data);
    }
    const p = msg.payload ?? {};
    const pending = msg.ref === undefined ? undefined : this.#pending.get(msg.ref);
    if (pending) this.#pending.delete(msg.ref);
    switch (msg.type) {
      case "welcome":
        this.session = p.session;
        return this.#emit("welcome", p);
      case "room.joined":
        return this.#joined(p);
      case "chat.message":
        return this.#live(p);
      case "ack":
        if (pending) this.#settle(pending.id, p);
        return this.#emit("ack", p);
      case "room.left":
      case "room.presence":
        return pending ? pending.resolve(p) : this.#emit(msg.type, p);
      case "error":
        return this.#error(pending, p);
      default:
        return this.#emit(msg.type, p);
    }
  }

  #error(pending, p) {
    const err = Object.assign(fail(p.code), { detail: p.message });
    if (pending?.kind === "chat") return this.#settle(pending.id, null, err);
    if (pending?.kind === "join") {
      const r = this.#rooms.get(pending.room);
      this.#rooms.delete(pending.room);
      this.#dropOutbox(pending.room, err);
      return r?.waiters.forEach((w) => w.reject(err));
    }
    if (pending) return pending.reject(err);
    // The rate limiter refuses before the message is read, so its error carries no ref and names no
    // message: resend every unacked one of this connection a little later (ids make that safe).
    if (p.code === "rate_limited") {
      setTimeout(() => {
        if (this.state !== "open") return;
        for (const m of this.#outbox.values()) if (m.conn === this.#conn) this.#transmit(m);
      }, 1000);
    }
    this.#emit("error", p);
  }

  #joined(p) {
    const r = this.#rooms.get(p.room);
    if (!r) return; // left while the join was on its way
    if (!p.recovered || r.epoch !== p.epoch) {
      // Not a continuation of what was shown: the app must forget the room and redraw from this history.
      r.epoch = p.epoch;
      r.offset = 0;
      this.#emit("reset", { room: p.room, epoch: p.epoch });
    }
    r.joined = true;
    const publications = p.publications ?? [];
    this.#emit("joined", { room: p.room, epoch: p.epoch, offset: p.offset, recovered: p.recovered, history: publications.length });
    for (const pub of publications) {
      if (p.recovered && pub.offset > r.offset + 1) this.#emit("gap", { room: p.room, expected: r.offset + 1, got: pub.offset, epoch: p.epoch });
      this.#deliver(p.room, r, { ...pub, room: p.room, epoch: p.epoch, history: true });
    }
    r.offset = Math.max(r.offset, p.offset);
    r.waiters.splice(0).forEach((w) => w.resolve(p));
    // Only now are this room's unacked messages resent: after the recovery, so their echo comes after it.
    for (const m of this.#outbox.values()) if (m.room === p.room && m.conn !== this.#conn) this.#transmit(m);
  }

  #live(p) {
    const r = this.#rooms.get(p.room);
    // Before room.joined (a rejoin in flight) everything is in the coming recovery; after leave() it is unwanted.
    if (!r?.joined) return;
    if (p.epoch === r.epoch && p.offset <= r.offset) return; // seen already (recovery and live overlap)
    if (p.epoch !== r.epoch || p.offset !== r.offset + 1) {
      // Never skip silently: say so, and let a rejoin with `since` fill the hole (or reset the room).
      this.#emit("gap", { room: p.room, expected: r.offset + 1, got: p.offset, epoch: p.epoch });
      r.joined = false;
      return this.#askJoin(p.room, r);
    }
    this.#deliver(p.room, r, { ...p, history: false });
  }

  #deliver(room, r, pub) {
    if (pub.offset <= r.offset) return;
    r.offset = pub.offset;
    this.#emit("message", { room, offset: pub.offset, epoch: pub.epoch, text: pub.text, from: pub.from, ts: pub.ts, history: pub.history });
  }

  #setState(state, extra = {}) {
    this.state = state;
    this.#emit("state", { state, ...extra });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Promises reject with an Error whose `code` is the server's error code, or one of the client's own:
 * "disconnected", "closed", "left", "not_member". */
const fail = (code) => Object.assign(new Error(code), { code });

/** A message id unique per sender. crypto.randomUUID exists only in secure contexts (https, localhost);
 * a page served over plain http from another host gets one built from getRandomValues instead. */
function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
