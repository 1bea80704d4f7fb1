//! The chat app of the seed, on roomcast's public API only, in two dialects.
//!
//! A client that asks for no subprotocol gets the seed's plain-text replies, word for word. A client that
//! asks for [`SUBPROTOCOL`] (`roomcast.v1`) gets every reply as a JSON event (`welcome`, `room.joined`
//! with the room's offset, epoch and history, `chat.message`, `ack`, `room.left`, `room.presence`,
//! `error` with a stable `code`), and a request's `ref` comes back in its reply ([`replies`] words both).
//!
//! Events: `room.join` (`payload.room`, default `general`; `payload.since` `{offset, epoch}` to recover
//! what was missed), `room.leave`, `chat.message` (`payload.room`, `payload.text`, `payload.id` for a
//! retry that must not publish twice), `room.presence`, and the raw text `ping`. What the seed leaves
//! open is answered with a reply that says what was wrong, and the session lives on: a payload field of
//! the wrong JSON type, text that tries to be an event but is not one, and a room name that is empty,
//! longer than [`MAX_ROOM_LEN`] bytes or contains control, bidirectional or zero-width characters. A
//! session joins at most [`MAX_ROOMS_PER_SESSION`] rooms: every room a client joins costs server memory,
//! so joins must not be unbounded. Only a member posts in a room, or asks who is in it.
//!
//! Messages are publications of the library's room streams (history on, [`roomcast::Server::keep_history`]):
//! numbered per room, kept, recovered by a client that comes back with `since`.
//!
//! With `AUTH_SECRET` set, a client must bring a token ([`token`]) in `?token=`: without one, or with one
//! that is forged or expired, the upgrade gets 401. The token's room patterns decide joins (`room denied:
//! R`), and room messages name the sender: `room R: U: T`. Without it the app is open, as in the seed.

pub mod replies;
pub mod token;

use std::sync::Arc;

use replies::{ChatReplies, Refusal};
use roomcast::{
    AuthRefusal, Config, EnvelopeError, JoinOptions, PublishOptions, Server, Session,
    StreamPosition, TypedMessage,
};
use serde_json::{json, Map, Value};
use token::Tokens;

/// The subprotocol of the JSON dialect.
pub const SUBPROTOCOL: &str = "roomcast.v1";

/// The longest client message id (`payload.id`) accepted, in bytes: the room's history keeps it.
pub const MAX_ID_LEN: usize = 128;

/// The longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// The most rooms one session may be in at once.
pub const MAX_ROOMS_PER_SESSION: usize = 64;

/// The chat server: the seed's WebSocket handlers and HTTP routes on `config`, with token
/// authentication when `AUTH_SECRET` is set.
pub fn chat_server(config: Config) -> Server {
    let secret = config.auth.secret.clone();
    let recovery_max = config.rooms.recovery_max;
    let replies = ChatReplies {
        names_senders: secret.is_some(),
    };
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
        .subprotocols([SUBPROTOCOL])
        .room_replies(replies)
        .keep_history()
        .on_open(|session| {
            if speaks_json(session) {
                session.send_text(&replies::welcome(session.id()));
            } else {
                session.send_text("welcome to Vix WebSocket chat");
            }
        })
        .on_error(
            |session, error| tracing::debug!(session = %session.id(), %error, "chat session error"),
        )
        .on_message(on_raw_text)
        .on_rate_limited(|session, text| {
            // The refused request's ref, so the client knows which one to send again.
            let event = text.and_then(|text| TypedMessage::parse(text).ok());
            let reference = event.as_ref().and_then(|e| e.reference.as_deref());
            refuse(session, reference, &Refusal::RateLimited)
        })
        .on_event(move |session, event| {
            if let Err(refusal) = on_event(session, event, recovery_max) {
                refuse(session, event.reference.as_deref(), &refusal);
            }
        })
        .json_route(
            "/api/health",
            |_| json!({ "ok": true, "service": "websocket-chat" }),
        )
        // The page connects to the WebSocket port of the host it was served from, whatever it is.
        .json_route(
            "/api/websocket",
            |ctx| json!({ "port": ctx.websocket_addr().port() }),
        )
        // With CLUSTER_REDIS_URL: what this node's bridge to Redis counted (`{"cluster": null}` without).
        .json_route("/api/cluster", |ctx| {
            json!({ "cluster": ctx.server().cluster_stats().map(|s| json!({
                "received": s.received,
                "published": s.published,
                "unavailable": s.unavailable,
                "gap_filled": s.gap_filled,
                "linked": s.linked,
            })) })
        })
}

/// Whether `session` asked for the JSON dialect.
fn speaks_json(session: &Session) -> bool {
    session.subprotocol() == Some(SUBPROTOCOL)
}

fn refuse(session: &Session, reference: Option<&str>, refusal: &Refusal) {
    if speaks_json(session) {
        session.send_text(&replies::error(reference, refusal));
    } else {
        session.send_text(&refusal.plain());
    }
}

fn on_raw_text(session: &Session, text: &str) {
    // Line-oriented clients (websocat, as in the seed's terminal session) send the line's newline too.
    if text.trim() == "ping" {
        session.send_text("pong");
        return;
    }
    match TypedMessage::parse(text) {
        // Plain text, or JSON that is not an object: say what the chat understands.
        Err(EnvelopeError::NotAnObject) => refuse(
            session,
            None,
            &Refusal::InvalidEvent(format!(
                "{}: send ping, or an event such as {}",
                EnvelopeError::NotAnObject,
                r#"{"type":"room.join","payload":{"room":"general"}}"#
            )),
        ),
        Err(reason) => refuse(session, None, &Refusal::InvalidEvent(reason.to_string())),
        // Events go to `on_event`; this one arrived raw only if the library's rule changed.
        Ok(_) => tracing::debug!(session = %session.id(), "typed event seen as raw text; ignored"),
    }
}

fn on_event(session: &Session, event: &TypedMessage, recovery_max: usize) -> Result<(), Refusal> {
    let payload = &event.payload;
    let reference = event.reference.clone();
    let json = speaks_json(session);
    match event.kind.as_str() {
        "room.join" => {
            let room = room_field(payload)?;
            let since = since_field(payload)?;
            if !session.is_member(&room) && session.room_count() >= MAX_ROOMS_PER_SESSION {
                return Err(Refusal::RoomLimit(MAX_ROOMS_PER_SESSION));
            }
            let options = JoinOptions {
                since,
                // A JSON client shows the room's history on join; the seed's clients get only its reply.
                latest: if json { recovery_max } else { 0 },
                tag: reference,
            };
            session
                .join_room_with(&room, options)
                .map_err(|denied| Refusal::RoomDenied(denied.room))
        }
        "room.leave" => {
            let room = room_field(payload)?;
            if !session.is_member(&room) {
                return Err(Refusal::NotInRoom(room));
            }
            session.leave_room(&room);
            session.send_text(&if json {
                replies::left(reference.as_deref(), &room)
            } else {
                format!("left room: {room}")
            });
            Ok(())
        }
        "chat.message" => {
            let room = room_field(payload)?;
            let text = string_field(payload, "text")?.unwrap_or_default();
            let id = string_field(payload, "id")?;
            if text.trim().is_empty() {
                return Err(Refusal::EmptyText);
            }
            if id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > MAX_ID_LEN)
            {
                return Err(Refusal::InvalidPayload(format!(
                    "`id` must be 1 to {MAX_ID_LEN} bytes"
                )));
            }
            if !session.is_member(&room) {
                // Only members speak in a room: otherwise anyone could post into any room unseen.
                return Err(Refusal::NotMember(room));
            }
            let options = PublishOptions { id, tag: reference };
            session.publish(&room, &text, options);
            Ok(())
        }
        "room.presence" => {
            let room = room_field(payload)?;
            if !session.is_member(&room) {
                return Err(Refusal::NotMember(room));
            }
            session.request_presence(&room, reference);
            Ok(())
        }
        other => Err(Refusal::UnknownType(other.to_owned())),
    }
}

/// `payload.since`: absent, or `{offset, epoch}` where a client left off.
fn since_field(payload: &Map<String, Value>) -> Result<Option<StreamPosition>, Refusal> {
    let since = match payload.get("since") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(since)) => since,
        Some(_) => return Err(Refusal::InvalidPayload("`since` must be an object".into())),
    };
    match (
        since.get("offset").and_then(Value::as_u64),
        since.get("epoch"),
    ) {
        (Some(offset), Some(Value::String(epoch))) => Ok(Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })),
        _ => Err(Refusal::InvalidPayload(
            "`since` must hold `offset` (a whole number) and `epoch` (a string)".into(),
        )),
    }
}

/// `payload.room`, `general` when absent; refused when it is not a usable room name.
fn room_field(payload: &Map<String, Value>) -> Result<String, Refusal> {
    let room = string_field(payload, "room")?.unwrap_or_else(|| "general".to_owned());
    if room.is_empty() || room.len() > MAX_ROOM_LEN || room.chars().any(is_deceptive) {
        return Err(Refusal::InvalidRoom);
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

/// A string field of the payload: `None` when absent or null, refused when of another JSON type.
fn string_field(payload: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::InvalidPayload(format!("`{key}` must be a string"))),
    }
}
