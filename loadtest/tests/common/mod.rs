//! The in-process chat server every scenario test runs against: roomcast as a library, answering with the
//! seed's replies (the same words as the app in `src/app/`), on loopback with free ports.
//!
//! A variant with one reply deliberately wrong (`pang` for `ping`) lets a test prove that smoke notices,
//! and one with permessage-deflate on serves the `--deflate` runs.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use loadtest::{RunOptions, Scenario};
use roomcast::{Config, RunningServer, Server, Session};
use serde_json::{Map, Value};

/// What the server answers to the raw text `ping`.
#[derive(Clone, Copy)]
pub enum Pong {
    /// `pong`, as the seed does.
    Right,
    /// `pang`: a server a smoke run must fail.
    Wrong,
}

/// Starts the chat server on 127.0.0.1 with free ports and `shards` WebSocket shards, deflate off.
pub fn start_chat(shards: usize, pong: Pong) -> RunningServer {
    start(shards, pong, false)
}

/// The chat server with permessage-deflate on (`WEBSOCKET_ENABLE_DEFLATE=true`), as `run-suite.sh` starts
/// it for the deflate runs.
pub fn start_deflate_chat(shards: usize) -> RunningServer {
    start(shards, Pong::Right, true)
}

fn start(shards: usize, pong: Pong, deflate: bool) -> RunningServer {
    let shards = shards.to_string();
    let pairs: HashMap<&str, &str> = [
        ("WEBSOCKET_HOST", "127.0.0.1"),
        ("WEBSOCKET_PORT", "0"),
        ("SERVER_HOST", "127.0.0.1"),
        ("SERVER_PORT", "0"),
        ("SERVER_IO_THREADS", shards.as_str()),
        ("SERVER_BENCH_MODE", "true"),
        (
            "WEBSOCKET_ENABLE_DEFLATE",
            if deflate { "true" } else { "false" },
        ),
        // The scenarios measure fan-out; a publisher's limits would only measure the limits.
        ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(|key| pairs.get(key).map(|v| v.to_string()))
        .expect("test configuration is valid");
    Server::new(config)
        .on_open(|session| session.send_text("welcome to Vix WebSocket chat"))
        .on_message(move |session, text| {
            if text.trim() == "ping" {
                session.send_text(match pong {
                    Pong::Right => "pong",
                    Pong::Wrong => "pang",
                });
            }
        })
        .on_typed_message(on_event)
        .start()
        .expect("the in-process chat server starts")
}

fn on_event(session: &Session, kind: &str, payload: &Map<String, Value>) {
    let field = |key: &str| payload.get(key).and_then(Value::as_str).unwrap_or("");
    let room = match field("room") {
        "" => "general",
        room => room,
    };
    match kind {
        "room.join" => {
            session.join_room(room).expect("no authorization hook");
            session.send_text(&format!("joined room: {room}"));
        }
        "room.leave" => {
            session.leave_room(room);
            session.send_text(&format!("left room: {room}"));
        }
        "chat.message" => match field("text") {
            "" => session.send_text("message rejected: empty text"),
            text => session.broadcast_text_to_room(room, &format!("room {room}: {text}")),
        },
        other => session.send_text(&format!("unknown message type: {other}")),
    }
}

/// Run options for `server`: short deadlines so a broken run fails fast.
pub fn options(server: &RunningServer) -> RunOptions {
    options_at(server.websocket_addr())
}

/// Run options for a chat server listening at `addr` (the peers of `tests/peer.rs`), with the same
/// short deadlines.
pub fn options_at(addr: SocketAddr) -> RunOptions {
    let mut options = RunOptions::new(&format!("ws://{addr}/"));
    options.setup_timeout = Duration::from_secs(20);
    options.drain_timeout = Duration::from_secs(5);
    options
}

/// The churn run both servers are tested with: 20 clients in 2 rooms at 5 messages a second, 4 of them
/// leaving and rejoining, for 1.5 s.
pub fn small_churn() -> Scenario {
    Scenario::Churn {
        clients: 20,
        rooms: 2,
        rate: 5.0,
        churners: 4,
        duration: Duration::from_millis(1500),
        size: 50,
    }
}
