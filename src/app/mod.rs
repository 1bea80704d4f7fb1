//! The chat app of the seed, on roomcast's public API only: its replies are the seed's, word for word.
//!
//! Events: `room.join` and `room.leave` (`payload.room`, default `general`), `chat.message`
//! (`payload.room`, `payload.text`), and the raw text `ping`. What the seed leaves open is answered with a
//! reply that says what was wrong, and the session lives on: a payload field of the wrong JSON type
//! (`invalid payload: ...`), text that tries to be an event but is not one (`invalid event: ...`), and a
//! room name that is empty, longer than [`MAX_ROOM_LEN`] bytes or contains control, bidirectional or
//! zero-width characters (`invalid room: ...`). A session joins at most [`MAX_ROOMS_PER_SESSION`] rooms
//! (`room limit reached: ...`): every room a client joins costs server memory, so joins must not be
//! unbounded. Only a member posts in a room (`message rejected: not a member of R`).
//!
//! With `AUTH_SECRET` set, a client must bring a token ([`token`]) in `?token=`: without one, or with one
//! that is forged or expired, the upgrade gets 401. The token's room patterns decide joins (`room denied:
//! R`), and room messages name the sender: `room R: U: T`. Without it the app is open, as in the seed.

pub mod token;

use std::sync::Arc;

use roomcast::{AuthRefusal, Config, EnvelopeError, Server, Session, TypedMessage};
use serde_json::{json, Map, Value};
use token::Tokens;

/// The longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// The most rooms one session may be in at once.
pub const MAX_ROOMS_PER_SESSION: usize = 64;

/// The chat server: the seed's WebSocket handlers and HTTP routes on `config`, with token
/// authentication when `AUTH_SECRET` is set.
pub fn chat_server(config: Config) -> Server {
    let secret = config.auth.secret.clone();
    let server = Server::new(config);
    let server = match secret {
        None => {
            tracing::info!(
                "AUTH_SECRET is not set: anyone may connect and join any room, as in the seed"
            );
            server
        }
        Some(secret) => {
            let tokens = Arc::new(Tokens::new(&secret));
            server
                .authenticate(move |request| {
                    let token = request.query_param("token").ok_or_else(|| {
                        AuthRefusal::Unauthorized("a token is required: ?token=...".to_owned())
                    })?;
                    tokens
                        .verify(&token)
                        .map(Some)
                        .map_err(AuthRefusal::Unauthorized)
                })
                .authorize_join(token::may_join)
        }
    };
    server
        .on_open(|session| session.send_text("welcome to Vix WebSocket chat"))
        .on_error(
            |session, error| tracing::debug!(session = %session.id(), %error, "chat session error"),
        )
        .on_message(on_raw_text)
        .on_typed_message(on_event)
        .json_route(
            "/api/health",
            |_| json!({ "ok": true, "service": "websocket-chat" }),
        )
        // The page connects to the WebSocket port of the host it was served from, whatever it is.
        .json_route(
            "/api/websocket",
            |ctx| json!({ "port": ctx.websocket_addr().port() }),
        )
}

fn on_raw_text(session: &Session, text: &str) {
    // Line-oriented clients (websocat, as in the seed's terminal session) send the line's newline too.
    if text.trim() == "ping" {
        session.send_text("pong");
        return;
    }
    match TypedMessage::parse(text) {
        Err(EnvelopeError::NotAnObject) | Ok(_) => {
            tracing::debug!(session = %session.id(), "raw message ignored");
        }
        Err(reason) => session.send_text(&format!("invalid event: {reason}")),
    }
}

fn on_event(session: &Session, kind: &str, payload: &Map<String, Value>) {
    let outcome = match kind {
        "room.join" => room_field(payload).and_then(|room| {
            if !session.is_member(&room) && session.room_count() >= MAX_ROOMS_PER_SESSION {
                return Err(format!(
                    "room limit reached: a session can be in at most {MAX_ROOMS_PER_SESSION} rooms"
                ));
            }
            session
                .join_room(&room)
                .map_err(|denied| denied.to_string())?;
            session.send_text(&format!("joined room: {room}"));
            Ok(())
        }),
        "room.leave" => room_field(payload).map(|room| {
            session.leave_room(&room);
            session.send_text(&format!("left room: {room}"));
        }),
        "chat.message" => room_field(payload).and_then(|room| {
            let text = string_field(payload, "text")?.unwrap_or_default();
            if text.is_empty() {
                session.send_text("message rejected: empty text");
            } else if !session.is_member(&room) {
                // Only members speak in a room: otherwise anyone could post into any room unseen.
                session.send_text(&format!("message rejected: not a member of {room}"));
            } else {
                let line = match session.identity() {
                    Some(identity) => format!("room {room}: {}: {text}", identity.user),
                    None => format!("room {room}: {text}"),
                };
                session.broadcast_text_to_room(&room, &line);
            }
            Ok(())
        }),
        other => {
            session.send_text(&format!("unknown message type: {other}"));
            Ok(())
        }
    };
    if let Err(reply) = outcome {
        session.send_text(&reply);
    }
}

/// `payload.room`, `general` when absent; an error reply when it is not a usable room name.
fn room_field(payload: &Map<String, Value>) -> Result<String, String> {
    let room = string_field(payload, "room")?.unwrap_or_else(|| "general".to_owned());
    if room.is_empty() || room.len() > MAX_ROOM_LEN || room.chars().any(is_deceptive) {
        return Err(format!(
            "invalid room: a room name is 1 to {MAX_ROOM_LEN} bytes without control, \
             bidirectional or zero-width characters"
        ));
    }
    Ok(room)
}

/// Characters a room name must not hold: control characters, and the invisible ones that make two names
/// look alike or a name display differently from what it is (bidirectional overrides and isolates, which
/// can reorder the text shown around the name, and zero-width characters).
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' // zero-width space, joiners, left-to-right and right-to-left marks
                | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
                | '\u{2060}'..='\u{2064}' // word joiner and invisible operators
                | '\u{2066}'..='\u{2069}' // bidirectional isolates
                | '\u{061C}' // Arabic letter mark
                | '\u{FEFF}' // zero-width no-break space
        )
}

/// A string field of the payload: `None` when absent or null, an error reply when of another JSON type.
fn string_field(payload: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("invalid payload: `{key}` must be a string")),
    }
}
