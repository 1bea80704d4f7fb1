//! roomcast: a realtime WebSocket server for Linux, thread-per-core on glommio (io_uring).
//!
//! A library for chat, notifications, presence, live dashboards and collaboration: connection callbacks,
//! sessions, rooms that span every core, typed JSON events, and an HTTP side (static files, JSON routes)
//! under one lifecycle. The `roomcast` binary is the chat app built on it (`src/main.rs`, `src/app/`).
//!
//! # Example
//!
//! ```no_run
//! use roomcast::{Config, Server};
//!
//! let running = Server::new(Config::default())
//!     .on_open(|session| session.send_text("welcome"))
//!     .on_message(|session, text| {
//!         if text == "ping" {
//!             session.send_text("pong");
//!         }
//!     })
//!     .on_typed_message(|session, kind, payload| match kind {
//!         "room.join" => {
//!             let room = payload.get("room").and_then(|r| r.as_str()).unwrap_or("general");
//!             match session.join_room(room) {
//!                 Ok(()) => session.send_text(&format!("joined room: {room}")),
//!                 Err(denied) => session.send_text(&denied.to_string()),
//!             }
//!         }
//!         "chat.message" => {
//!             let text = payload.get("text").and_then(|t| t.as_str()).unwrap_or("");
//!             session.broadcast_text_to_room("general", text);
//!         }
//!         other => session.send_text(&format!("unknown message type: {other}")),
//!     })
//!     .json_route("/api/health", |_| serde_json::json!({ "ok": true }))
//!     .start()
//!     .expect("the server starts");
//! println!("websocket on {}", running.websocket_addr());
//! running.stop();
//! ```
//!
//! # Raw text or typed event
//!
//! A text message that is a JSON object with a string `type` and, if present, an object `payload` goes to
//! `on_typed_message(session, type, payload)` (an absent payload is `{}`); any other text, including JSON
//! that is not such an object, goes to `on_message`. [`TypedMessage::parse`] applies the same rule and
//! says why a text is not an event, for replying to clients that got it wrong. An event may carry a
//! string `ref` for its reply to echo: `on_event(session, event)` gets the whole [`TypedMessage`], ref
//! included, and takes the place of `on_typed_message` when registered. Binary messages go to
//! `on_binary`.
//!
//! # Architecture: where everything lives
//!
//! ```text
//!  accept ──► handshake ──► frames ──► messages ──► dispatch ──► rooms ──► outbound writes
//!  shard::acceptor  ws::handshake  ws::codec  connection  dispatch  shard + room + shard::mesh  outbound
//! ```
//!
//! Modules, in the order a message meets them; each imports only modules further down this list (plus
//! `config` and `error`, which everything may use), so there is no import loop:
//!
//! - `server`: [`Server`] (callbacks, routes, start), [`RunningServer`] (addresses, stop),
//!   [`ServerHandle`] (broadcast, publish, presence, the shards' counts, and shut down from any thread).
//! - `shutdown`: the one shutdown sequence of every executor: stop accepting, close, bounded drain of a
//!   glommio gate, exit.
//! - `http`: the HTTP shard (hyper): the server API for backends (`API_KEY`), `/metrics` and `/api/stats`
//!   gathered from the shards, JSON routes and traversal-safe static files; a summary log line.
//! - `shard::executor`: starting glommio executors (the io_uring probe, CPU affinity), and a WebSocket
//!   shard's tasks: inbox, sweep, accept. `shard::acceptor`: `SO_REUSEPORT` listeners, one per shard.
//! - `connection`: one session's task: handshake, read, decode, write, close handshake; reports errors.
//! - `admission`: who may upgrade: the origin allowlist and the connection budgets (503 past them).
//! - `auth`: the types of the application's authentication hook (401/403 before the upgrade, or an
//!   identity for the session) and room authorization hook.
//! - `ws::handshake`: the RFC 6455 upgrade. `ws::extensions`: the permessage-deflate offers and the one
//!   answer. `ws::codec`: frame decoding (limits, fragments, UTF-8, unmasking in place, compressed
//!   messages inflated). `ws::deflate`: compressing and inflating (RFC 7692) with one deflater and one
//!   inflater per shard. `ws::encode`: server frames, encoded once per message.
//! - `rate_limit`: per-session token buckets (messages and bytes a second) that the connection applies
//!   before dispatch.
//! - `dispatch`: raw text versus typed event. `handler`: the registered callbacks. `envelope`: what a
//!   typed event is (`type`, `ref`, `payload`) and how text is read as one.
//! - `session`: [`Session`], the handle callbacks receive (send, close, join, leave, broadcast).
//! - `shard`: the state one core owns behind methods: its sessions, its rooms, the read buffer of its
//!   handshakes, its deflater and inflater, its clock and the sweep. `shard::ring`: the shard's own io_uring ring (a multishot receive
//!   per session into provided buffers, the writer's sends). `shard::writer`: every session a turn queued
//!   frames for, written in one submission. `shard::mesh`: crossbeam inboxes between shards; a post wakes
//!   a sleeping shard through glommio, without polling.
//! - `shard::home`: the shard as the home of rooms: each room's one order, its offsets, its history in
//!   memory and presence; publications wait there for the store before they go out.
//! - `history`: a room's log (offsets, epoch, newest publications, ids for idempotent publishing,
//!   recovery). `history::store`: the fjall store under `DATA_DIR`, written by a thread of its own.
//! - `cluster`: several nodes through Redis (`CLUSTER_REDIS_URL`): what a node asks of Redis and is told
//!   back, and rooms' key names. `cluster::bridge`: the one thread that talks to Redis (fred on a
//!   current-thread tokio runtime); a room's home shard mirrors its stream while it has members here.
//! - `replies`: [`RoomReplies`], how the application words publications, acks, join answers and
//!   presence for each subprotocol, rendered on the home shard.
//! - `room`: a shard's local room membership (joining, then member) and fan-out.
//! - `session_state`: one session as its shard sees it (queue, lifecycle, liveness, rooms joined).
//! - `lifecycle`: the session's lifecycle enum: the close handshake's states and transitions.
//! - `outbound`: a session's bounded queue of shared frames, written many per syscall.
//! - `metrics`: what a shard counts (plain integers of its own) and a scrape's two renderings, Prometheus
//!   text and JSON; it imports no other module of the crate.
//! - [`config`]: every `.env` key ([`KEYS`]), its default and its validation. [`error`]: start-up,
//!   configuration, protocol and session errors.
//!
//! Sessions never move between shards, and shard state is never shared: a broadcast is fanned out by its
//! room's home shard, delivered to local members and posted once to each other shard as its encoded frames
//! (per subprotocol, the plain one and, compressed once, the permessage-deflate one), shared read-only.
//!
//! # Room streams
//!
//! [`Session::publish`] puts a message in a room's stream: the room's home shard gives it the next offset
//! and, with [`Server::keep_history`], keeps it (in memory and in the store) before every member gets it,
//! rendered by the application's [`RoomReplies`]. [`Session::join_room_with`] with a
//! [`StreamPosition`] recovers what a returning client missed, with no gap and no duplicate against the
//! live stream that follows.
#![deny(missing_docs)]

mod admission;
mod auth;
mod cluster;
pub mod config;
mod connection;
mod dispatch;
mod envelope;
pub mod error;
mod handler;
mod history;
mod http;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
mod lifecycle;
mod metrics;
mod outbound;
mod rate_limit;
mod replies;
mod room;
mod server;
mod session;
mod session_state;
mod shard;
mod shutdown;
mod ws;

pub use auth::{AuthRefusal, Identity, RoomDenied, UpgradeRequest};
pub use config::{
    AllowedOrigins, ApiSettings, AuthSettings, Bucket, ClusterSettings, Config, ConfigSource,
    HistoryFsync, KeyDoc, LoadedConfig, LogFormat, LogSettings, MetricsSettings, Origin,
    RateLimits, RoomSettings, UnknownKey, KEYS,
};
pub use envelope::{EnvelopeError, TypedMessage};
pub use error::{ConfigError, ProtocolError, SessionError, StartError};
pub use history::{JoinOptions, Publication, PublishOptions, StreamPosition};
pub use http::{HttpContext, JsonRoute};
pub use metrics::{ClusterStats, DeflateStats};
pub use replies::{Ack, Joined, Member, MemberChange, Presence, PublishFailure, RoomReplies};
pub use server::{RunningServer, Server, ServerHandle};
pub use session::Session;
pub use session_state::SessionId;
