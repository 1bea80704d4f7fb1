//! The server API for backends, on the HTTP side (`API_KEY`): what notifications and live dashboards need
//! from the systems behind them, as Centrifugo's HTTP API and Pusher's REST API offer.
//!
//! - `POST /api/publish` with `{"room": R, "text": T}` publishes `T` in `R`'s stream, the same path as a
//!   member's message (offset, history, Redis with the cluster), and answers
//!   `{"room", "offset", "epoch", "duplicate"}`; an optional `"id"` makes a retry publish at most once, and
//!   `"from"` names the publisher (default `server`) and scopes its ids as a signed-in user's are.
//!   `{"room": R, "binary": BASE64}` sends a binary message to the room's members instead (binary messages
//!   have no offset and no history). Either is at most `WEBSOCKET_MAX_MESSAGE_SIZE` bytes, as a member's.
//! - `GET /api/rooms/{room}` answers `{"room", "members", "presence": [{"session", "user", "node"}]}`.
//!
//! Every request needs `Authorization: Bearer <API_KEY>` (401 without it, compared in constant time);
//! with `API_KEY` unset both answer 404, as if they did not exist. Refusals are JSON `{"error": code,
//! "message": text}`. It must not decide what a room does with a publication: the room's home shard does,
//! through [`crate::ServerHandle`].

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::history::PublishOptions;
use crate::server::ServerHandle;
use crate::shard::home::is_room_name;

/// Where publishes are posted.
pub(super) const PUBLISH_PATH: &str = "/api/publish";
/// The prefix of a room's path.
const ROOMS_PREFIX: &str = "/api/rooms/";

/// How long a request waits for the room's home (and, with the cluster, Redis) before it is answered 504:
/// the bridge's own timeouts answer well before this; it bounds what a stuck shard could hold.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Which endpoint of the API a path names, if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `POST /api/publish`.
    Publish,
    /// `GET /api/rooms/{room}`, the room name still percent-encoded.
    Room(String),
}

impl Endpoint {
    /// The endpoint `path` (raw, still percent-encoded) names.
    pub(super) fn of(path: &str) -> Option<Endpoint> {
        if path == PUBLISH_PATH {
            return Some(Endpoint::Publish);
        }
        path.strip_prefix(ROOMS_PREFIX)
            .map(|room| Endpoint::Room(room.to_owned()))
    }
}

/// A publish's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    text: Option<String>,
    binary: Option<String>,
    id: Option<String>,
    from: Option<String>,
}

/// What a publish may carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The largest body read: room for a message of the largest size in its JSON.
    pub(super) body: usize,
    /// `WEBSOCKET_MAX_MESSAGE_SIZE`: what its `text` or decoded `binary` may be, as a member's message.
    pub(super) message: usize,
}

/// Answers an API request; `key` is `API_KEY`.
pub(super) async fn respond<B>(
    server: &ServerHandle,
    key: &str,
    endpoint: Endpoint,
    method: &Method,
    headers: &HeaderMap,
    body: B,
    limits: Limits,
) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let allowed = match endpoint {
        Endpoint::Publish => *method == Method::POST,
        Endpoint::Room(_) => *method == Method::GET,
    };
    if !allowed {
        let allow = match endpoint {
            Endpoint::Publish => "POST",
            Endpoint::Room(_) => "GET",
        };
        let mut response = refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed here; {allow} is"),
        );
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    if !authorized(headers, key) {
        let mut response = refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <API_KEY>",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    match endpoint {
        Endpoint::Publish => {
            let bytes = match Limited::new(body, limits.body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return too_large(limits.message)
                }
                Err(e) => return refusal(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
            };
            publish(server, &bytes, limits.message).await
        }
        Endpoint::Room(room) => match percent_decode_str(&room).decode_utf8() {
            Ok(room) if is_room_name(&room) => room_info(server, &room).await,
            _ => refusal(
                StatusCode::BAD_REQUEST,
                "invalid_room",
                "a room name is 1 to 1024 bytes of UTF-8, percent-encoded in the path",
            ),
        },
    }
}

/// Whether `headers` carry `Authorization: Bearer <key>`, compared in constant time (a byte-by-byte
/// comparison that stopped at the first difference would tell a guesser how much it got right).
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (given, key) = (given.trim().as_bytes(), key.as_bytes());
    given.len() == key.len() && given.iter().zip(key).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// 413: what a publish carried is larger than a member's message may be.
fn too_large(max: usize) -> Response<Full<Bytes>> {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("a message is at most {max} bytes (WEBSOCKET_MAX_MESSAGE_SIZE)"),
    )
}

async fn publish(server: &ServerHandle, body: &[u8], max_message: usize) -> Response<Full<Bytes>> {
    let body: PublishBody = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("expected {{\"room\", \"text\"}} or {{\"room\", \"binary\"}}: {e}"),
            )
        }
    };
    if !is_room_name(&body.room) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_room",
            "a room name is 1 to 1024 bytes",
        );
    }
    match (body.text, body.binary) {
        (Some(text), None) => {
            if text.len() > max_message {
                return too_large(max_message);
            }
            if body
                .id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > 128)
            {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_id",
                    "an id is 1 to 128 bytes",
                );
            }
            let from = body.from.unwrap_or_else(|| "server".to_owned());
            let options = PublishOptions {
                id: body.id,
                tag: None,
            };
            let published = server.publish(&body.room, &from, &text, options);
            match glommio::timer::timeout(ANSWER_WAIT, async { Ok(published.await) }).await {
                Ok(Ok(ack)) => answer(
                    StatusCode::OK,
                    &json!({
                        "room": ack.room,
                        "offset": ack.offset,
                        "epoch": ack.epoch,
                        "duplicate": ack.duplicate,
                    }),
                ),
                Ok(Err(failure)) => refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    failure.code,
                    "not published: send it again (with the same id, it is published at most once)",
                ),
                Err(_) => refusal(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the room did not answer in time; it may have been published (retry with an id)",
                ),
            }
        }
        (None, Some(binary)) => {
            let Ok(data) = base64::engine::general_purpose::STANDARD.decode(binary.as_bytes())
            else {
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_binary",
                    "`binary` must be standard base64",
                );
            };
            if data.len() > max_message {
                return too_large(max_message);
            }
            server.broadcast_binary_to_room(&body.room, &data);
            answer(
                StatusCode::OK,
                &json!({ "room": body.room, "bytes": data.len() }),
            )
        }
        _ => refusal(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "give exactly one of `text` and `binary`",
        ),
    }
}

async fn room_info(server: &ServerHandle, room: &str) -> Response<Full<Bytes>> {
    let asked = server.presence(room);
    match glommio::timer::timeout(ANSWER_WAIT, async { Ok(asked.await) }).await {
        Ok(Some(presence)) => {
            let members: Vec<Value> = presence
                .members
                .iter()
                .map(
                    |m| json!({ "session": m.session.to_string(), "user": m.user, "node": m.node }),
                )
                .collect();
            answer(
                StatusCode::OK,
                &json!({ "room": room, "members": members.len(), "presence": members }),
            )
        }
        Ok(None) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is stopping",
        ),
        Err(_) => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the room did not answer in time",
        ),
    }
}

fn answer(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    super::routes::sized(
        status,
        "application/json",
        Bytes::from(body.to_string()),
        false,
    )
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    answer(status, &json!({ "error": code, "message": message }))
}
