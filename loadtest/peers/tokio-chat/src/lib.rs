//! tokio-chat: the comparison peer of `loadtest/run-suite.sh`, the seed's chat protocol served the way
//! a Rust user would write it with tokio and tokio-tungstenite, so roomcast's figures stand next to
//! those of the ordinary design in one run.
//!
//! The design, deliberately the common one, neither tuned nor slowed down:
//! - a tokio multi-thread runtime; one task per connection reads, after
//!   [`WebSocketStream::split()`](tokio_tungstenite::WebSocketStream), and one writer task per
//!   connection owns the sink, fed by an unbounded [`tokio::sync::mpsc`] channel;
//! - rooms are `Arc<Mutex<HashMap<room, HashMap<connection id, sender>>>>` (a std [`Mutex`], never held
//!   across an await);
//! - a broadcast builds one [`Message::Text`] and clones it into every member's channel (its
//!   `Utf8Bytes` is reference-counted, so a clone copies no text);
//! - `TCP_NODELAY` on, as roomcast sets it: replies are small frames that must not wait for Nagle.
//!
//! The protocol is roomcast's chat app (`src/app/`) in the seed's plain dialect, word for word: the
//! welcome text on open, raw `ping` → `pong`, `room.join` → `joined room: R`, `room.leave` →
//! `left room: R`, `chat.message` → `room R: T` to every member of R, the sender included; a missing
//! room is `general`. Refusals: empty text, posting in a room one is not in, an unknown type, malformed
//! JSON and a missing `type`. Other raw text is ignored. Unlike roomcast it has no `roomcast.v1`
//! dialect, no history, no rate limits, no authentication, no presence and no checks of room names or
//! of the number of rooms per connection; JSON of the wrong shape (a field of the wrong type) is
//! refused in serde's words rather than roomcast's.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// What every connection is sent first.
pub const WELCOME: &str = "welcome to Vix WebSocket chat";

/// The room of a request that names none, as in the seed.
const DEFAULT_ROOM: &str = "general";

/// A connection's number, unique for the life of the server.
type ConnId = u64;

/// The sending end of a connection's writer task.
type Outbox = mpsc::UnboundedSender<Message>;

/// A room's members.
type Members = HashMap<ConnId, Outbox>;

/// Every room's members, by room name, shared by all connections.
type Rooms = Arc<Mutex<HashMap<String, Members>>>;

/// Accepts connections on `listener` and serves each on a task of its own; returns when accepting
/// fails.
pub async fn serve(listener: TcpListener) {
    let rooms = Rooms::default();
    let mut next_id: ConnId = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("tokio-chat: accept failed: {e}");
                return;
            }
        };
        next_id += 1;
        tokio::spawn(connection(stream, next_id, Arc::clone(&rooms)));
    }
}

/// One connection's life: upgrade, welcome, requests until the client goes, then out of every room.
async fn connection(stream: TcpStream, id: ConnId, rooms: Rooms) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(websocket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (sink, mut inbound) = websocket.split();
    let (outbox, queued) = mpsc::unbounded_channel();
    tokio::spawn(write_queued(sink, queued));
    let mut session = Session {
        id,
        outbox,
        rooms,
        joined: HashSet::new(),
    };
    session.reply(WELCOME);
    // tungstenite answers pings and the close handshake itself; the stream ends once the close reply
    // is flushed, or on any error.
    while let Some(Ok(message)) = inbound.next().await {
        if let Message::Text(text) = message {
            session.on_text(text.as_str());
        }
    }
    session.leave_all();
}

/// The writer task: sends what is queued for the connection, in order, until the queue's senders are
/// all gone or the socket fails.
async fn write_queued(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut queued: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(message) = queued.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
}

/// A request: `{"type": ..., "payload": {...}}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// Event names are plain words no client escapes, so they are borrowed from the message (an
    /// escaped one is refused as JSON of the wrong shape).
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
}

/// The payload fields the chat events read.
#[derive(Deserialize, Default)]
struct Payload<'a> {
    /// Absent means [`DEFAULT_ROOM`].
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    /// Borrowed unless the client escaped something in it; absent is empty.
    #[serde(borrow, default)]
    text: Cow<'a, str>,
}

/// One connection's side of the chat: its replies and the rooms it is in.
struct Session {
    id: ConnId,
    outbox: Outbox,
    rooms: Rooms,
    /// The rooms this connection is in, kept here so a membership check takes no lock.
    joined: HashSet<String>,
}

impl Session {
    fn on_text(&mut self, text: &str) {
        // Line-oriented clients (websocat) send the line's newline too.
        if text.trim() == "ping" {
            self.reply("pong");
            return;
        }
        // Only text that looks like a JSON object is taken for a request, as roomcast does.
        if !text.trim_start().starts_with('{') {
            return;
        }
        let envelope: Envelope = match serde_json::from_str(text) {
            Ok(envelope) => envelope,
            Err(e) if e.is_data() => return self.reply(format!("invalid event: {e}")),
            Err(e) => return self.reply(format!("invalid event: malformed JSON: {e}")),
        };
        let Some(kind) = envelope.kind else {
            return self.reply("invalid event: `type` must be a string");
        };
        let payload = envelope.payload.unwrap_or_default();
        let room = payload.room.as_deref().unwrap_or(DEFAULT_ROOM);
        match kind {
            "room.join" => self.join(room),
            "room.leave" => self.leave(room),
            "chat.message" if payload.text.is_empty() => {
                self.reply("message rejected: empty text");
            }
            "chat.message" if !self.joined.contains(room) => {
                self.reply(format!("message rejected: not a member of {room}"));
            }
            "chat.message" => self.broadcast(room, &payload.text),
            other => self.reply(format!("unknown message type: {other}")),
        }
    }

    /// Queues `text` for this connection; a connection whose writer is gone has nobody to tell.
    fn reply(&self, text: impl Into<Utf8Bytes>) {
        let _ = self.outbox.send(Message::text(text));
    }

    /// Joins `room` and says so. The reply is queued before the rooms lock is released: a broadcast
    /// to the room in between would otherwise reach this connection ahead of `joined room: R`.
    fn join(&mut self, room: &str) {
        self.joined.insert(room.to_owned());
        let mut rooms = self.lock_rooms();
        rooms
            .entry(room.to_owned())
            .or_default()
            .insert(self.id, self.outbox.clone());
        self.reply(format!("joined room: {room}"));
    }

    /// Leaves `room` (if in it) and says so; nothing of the room is queued after the reply.
    fn leave(&mut self, room: &str) {
        if self.joined.remove(room) {
            remove_member(&mut self.lock_rooms(), room, self.id);
        }
        self.reply(format!("left room: {room}"));
    }

    /// Takes the connection out of every room it is in, and ends the session: with its outbox goes
    /// the last sender of the connection's queue, so the writer task ends too.
    fn leave_all(self) {
        let mut rooms = self.lock_rooms();
        for room in &self.joined {
            remove_member(&mut rooms, room, self.id);
        }
    }

    /// `room R: T` to every member of `room`, this connection included: one message, shared.
    fn broadcast(&self, room: &str, text: &str) {
        let delivery = Message::text(format!("room {room}: {text}"));
        if let Some(members) = self.lock_rooms().get(room) {
            for outbox in members.values() {
                let _ = outbox.send(delivery.clone());
            }
        }
    }

    fn lock_rooms(&self) -> MutexGuard<'_, HashMap<String, Members>> {
        // Nothing panics while holding the lock, so it is never poisoned.
        self.rooms.lock().expect("the rooms lock is not poisoned")
    }
}

/// Takes `id` out of `room`, and the room out of the map once it is empty.
fn remove_member(rooms: &mut HashMap<String, Members>, room: &str, id: ConnId) {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(&id);
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}
