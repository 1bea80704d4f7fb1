//! The chat app's words, in both dialects: the seed's plain text for clients that asked for no
//! subprotocol, JSON events for `roomcast.v1` clients.
//!
//! [`ChatReplies`] renders what the library sends on the app's behalf (publications, acks, join answers,
//! presence); [`Refusal`] is every refusal with its stable JSON `code` and its plain line; the rest are the
//! replies the app sends itself.
//!
//! It must not decide anything: what to refuse and what to send is [`super`]'s.

use roomcast::{
    Ack, Joined, Member, MemberChange, Presence, Publication, PublishFailure, RoomReplies,
    SessionId,
};
use serde_json::{json, Map, Value};

use super::{MAX_ROOM_LEN, SUBPROTOCOL};

/// Why a request was refused. The session lives on.
#[derive(Debug)]
pub enum Refusal {
    /// Text that tries to be an event but is not one.
    InvalidEvent(String),
    /// A payload field of the wrong type or out of bounds.
    InvalidPayload(String),
    /// A room name that is empty, too long or deceptive.
    InvalidRoom,
    /// The session is in as many rooms as it may be.
    RoomLimit(usize),
    /// The token does not allow the room.
    RoomDenied(String),
    /// A message without text.
    EmptyText,
    /// Posting in (or asking about) a room the session is not in.
    NotMember(String),
    /// Leaving a room the session is not in.
    NotInRoom(String),
    /// An event type the app does not know.
    UnknownType(String),
    /// Over the session's rate limits (`WEBSOCKET_RATE_LIMIT_*`).
    RateLimited,
    /// A message the cluster could not publish (its Redis unreachable); sending it again may work.
    Unavailable(String),
}

impl Refusal {
    /// The stable code a `roomcast.v1` client branches on.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidEvent(_) => "invalid_event",
            Refusal::InvalidPayload(_) => "invalid_payload",
            Refusal::InvalidRoom => "invalid_room",
            Refusal::RoomLimit(_) => "room_limit",
            Refusal::RoomDenied(_) => "room_denied",
            Refusal::EmptyText => "empty_text",
            Refusal::NotMember(_) | Refusal::NotInRoom(_) => "not_member",
            Refusal::UnknownType(_) => "unknown_type",
            Refusal::RateLimited => "rate_limited",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    /// The seed's line for it (or the app's own, in the seed's style, where the seed has none).
    pub fn plain(&self) -> String {
        match self {
            Refusal::InvalidEvent(why) => format!("invalid event: {why}"),
            Refusal::InvalidPayload(why) => format!("invalid payload: {why}"),
            Refusal::InvalidRoom => format!(
                "invalid room: a room name is 1 to {MAX_ROOM_LEN} bytes without control, \
                 bidirectional or zero-width characters"
            ),
            Refusal::RoomLimit(max) => {
                format!("room limit reached: a session can be in at most {max} rooms")
            }
            Refusal::RoomDenied(room) => format!("room denied: {room}"),
            Refusal::EmptyText => "message rejected: empty text".to_owned(),
            Refusal::NotMember(room) => format!("message rejected: not a member of {room}"),
            Refusal::NotInRoom(room) => format!("not in room: {room}"),
            Refusal::UnknownType(kind) => format!("unknown message type: {kind}"),
            Refusal::RateLimited => "message rejected: rate limit".to_owned(),
            Refusal::Unavailable(room) => {
                format!("message not sent to room {room}: the cluster is unavailable, try again")
            }
        }
    }
}

/// `{"type": kind, "ref": reference, "payload": payload}`, without `ref` when the request had none.
fn event(kind: &str, reference: Option<&str>, payload: Value) -> String {
    let mut event = Map::new();
    event.insert("type".into(), kind.into());
    if let Some(reference) = reference {
        event.insert("ref".into(), reference.into());
    }
    event.insert("payload".into(), payload);
    Value::Object(event).to_string()
}

/// What a `roomcast.v1` client gets first.
pub fn welcome(session: SessionId) -> String {
    event("welcome", None, json!({ "session": session.to_string() }))
}

/// A `roomcast.v1` client's answer to `room.leave`.
pub fn left(reference: Option<&str>, room: &str) -> String {
    event("room.left", reference, json!({ "room": room }))
}

/// A `roomcast.v1` client's answer to a refused request.
pub fn error(reference: Option<&str>, refusal: &Refusal) -> String {
    let message = refusal.plain();
    event(
        "error",
        reference,
        json!({ "code": refusal.code(), "message": message }),
    )
}

/// How the library's room replies read in the chat app.
pub struct ChatReplies {
    /// Plain-text room messages name their sender (`room R: U: T`) when sessions are authenticated.
    pub names_senders: bool,
}

/// A member in `room.presence` and presence events: its session and user, and with the cluster the node
/// of a member connected to another one (a session id names a session on its own node only).
fn member_json(member: &Member) -> Value {
    let mut json = json!({ "session": member.session.to_string(), "user": member.user });
    if let Some(node) = &member.node {
        json["node"] = json!(node);
    }
    json
}

fn json_dialect(subprotocol: Option<&str>) -> bool {
    subprotocol == Some(SUBPROTOCOL)
}

fn publication_json(p: &Publication) -> Value {
    json!({ "offset": p.offset, "text": p.text, "from": p.from, "ts": p.ts })
}

impl RoomReplies for ChatReplies {
    fn publication(
        &self,
        subprotocol: Option<&str>,
        room: &str,
        epoch: &str,
        p: &Publication,
    ) -> Option<String> {
        Some(if json_dialect(subprotocol) {
            event(
                "chat.message",
                None,
                json!({
                    "room": room, "text": p.text, "from": p.from,
                    "offset": p.offset, "epoch": epoch, "ts": p.ts,
                }),
            )
        } else if self.names_senders {
            format!("room {room}: {}: {}", p.from, p.text)
        } else {
            format!("room {room}: {}", p.text)
        })
    }

    fn ack(&self, subprotocol: Option<&str>, ack: &Ack) -> Option<String> {
        json_dialect(subprotocol).then(|| {
            event(
                "ack",
                ack.tag.as_deref(),
                json!({ "room": ack.room, "offset": ack.offset, "epoch": ack.epoch, "duplicate": ack.duplicate }),
            )
        })
    }

    fn joined(&self, subprotocol: Option<&str>, joined: &Joined) -> Option<String> {
        Some(if json_dialect(subprotocol) {
            let publications: Vec<Value> = joined
                .publications
                .iter()
                .map(|p| publication_json(p))
                .collect();
            event(
                "room.joined",
                joined.tag.as_deref(),
                json!({
                    "room": joined.room,
                    "offset": joined.position.offset,
                    "epoch": joined.position.epoch,
                    "recovered": joined.recovered,
                    "publications": publications,
                }),
            )
        } else {
            format!("joined room: {}", joined.room)
        })
    }

    fn presence(&self, subprotocol: Option<&str>, presence: &Presence) -> Option<String> {
        Some(if json_dialect(subprotocol) {
            let members: Vec<Value> = presence.members.iter().map(member_json).collect();
            event(
                "room.presence",
                presence.tag.as_deref(),
                json!({ "room": presence.room, "count": members.len(), "members": members }),
            )
        } else {
            let users: Vec<&str> = presence.members.iter().map(|m| m.user.as_str()).collect();
            format!(
                "presence {}: {} members: {}",
                presence.room,
                users.len(),
                users.join(", ")
            )
        })
    }

    fn member_change(&self, subprotocol: Option<&str>, change: &MemberChange) -> Option<String> {
        json_dialect(subprotocol).then(|| {
            let kind = if change.joined {
                "room.member_joined"
            } else {
                "room.member_left"
            };
            let mut payload = member_json(&change.member);
            payload["room"] = json!(change.room);
            event(kind, None, payload)
        })
    }

    fn publish_failed(
        &self,
        subprotocol: Option<&str>,
        failure: &PublishFailure,
    ) -> Option<String> {
        let refusal = Refusal::Unavailable(failure.room.clone());
        Some(if json_dialect(subprotocol) {
            error(failure.tag.as_deref(), &refusal)
        } else {
            refusal.plain()
        })
    }
}
