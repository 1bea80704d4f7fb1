//! The chat app's replies, word for word, through the real binary: the welcome, `pong`, joining and
//! leaving, room messages to every member (the sender too) and to no one else, the `general` default, and
//! each refusal (empty text, unknown type, text that is not quite an event, payload fields of the wrong
//! type, unusable room names, a 65th room). After every refusal the session lives on and still answers
//! `ping`.

mod common;

use std::net::TcpStream;

use common::{connect, recv_text, send_text, spawn_app, App};
use roomcast::TypedMessage;
use tungstenite::WebSocket;

const WELCOME: &str = "welcome to Vix WebSocket chat";
const INVALID_ROOM: &str = "invalid room: a room name is 1 to 64 bytes without control, \
    bidirectional or zero-width characters";

/// A client that has read the welcome.
fn client(app: &App) -> WebSocket<TcpStream> {
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), WELCOME);
    ws
}

/// Sends `request`, expects `reply` as the next message, then checks the session still answers `ping`.
fn expect_reply(ws: &mut WebSocket<TcpStream>, request: &str, reply: &str) {
    send_text(ws, request);
    assert_eq!(recv_text(ws), reply, "reply to {request}");
    send_text(ws, "ping");
    assert_eq!(recv_text(ws), "pong", "ping after {request}");
}

fn event(kind: &str, payload: &str) -> String {
    format!(r#"{{"type":"{kind}","payload":{payload}}}"#)
}

#[test]
fn welcome_and_pong() {
    let app = spawn_app(&[]);
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), WELCOME);
    for _ in 0..3 {
        send_text(&mut ws, "ping");
        assert_eq!(recv_text(&mut ws), "pong");
    }
}

#[test]
fn room_messages_reach_every_member_including_the_sender_and_no_one_else() {
    let app = spawn_app(&[]);
    let mut alice = client(&app);
    let mut bob = client(&app);
    let mut outsider = client(&app);
    expect_reply(
        &mut alice,
        &event("room.join", r#"{"room":"R"}"#),
        "joined room: R",
    );
    expect_reply(
        &mut bob,
        &event("room.join", r#"{"room":"R"}"#),
        "joined room: R",
    );

    send_text(
        &mut alice,
        &event("chat.message", r#"{"room":"R","text":"T"}"#),
    );
    assert_eq!(recv_text(&mut alice), "room R: T", "the sender");
    assert_eq!(recv_text(&mut bob), "room R: T", "the other member");
    // Both members have it, so it was delivered; the outsider's pong must come first.
    send_text(&mut outsider, "ping");
    assert_eq!(recv_text(&mut outsider), "pong", "the non-member");

    expect_reply(
        &mut bob,
        &event("room.leave", r#"{"room":"R"}"#),
        "left room: R",
    );
    send_text(
        &mut alice,
        &event("chat.message", r#"{"room":"R","text":"U"}"#),
    );
    assert_eq!(recv_text(&mut alice), "room R: U");
    send_text(&mut bob, "ping");
    assert_eq!(recv_text(&mut bob), "pong", "a member that left");
}

#[test]
fn a_missing_room_means_general() {
    let app = spawn_app(&[]);
    let mut ws = client(&app);
    expect_reply(&mut ws, &event("room.join", "{}"), "joined room: general");
    expect_reply(&mut ws, r#"{"type":"room.join"}"#, "joined room: general");
    send_text(&mut ws, &event("chat.message", r#"{"text":"hi"}"#));
    assert_eq!(recv_text(&mut ws), "room general: hi");
    expect_reply(
        &mut ws,
        &event("room.leave", r#"{"room":null}"#),
        "left room: general",
    );
}

#[test]
fn refusals_name_what_was_wrong_and_the_session_lives_on() {
    let app = spawn_app(&[]);
    let mut ws = client(&app);
    let not_events = [r#"{"type":"#, r#"{"payload":{}}"#];
    for text in not_events {
        let why = TypedMessage::parse(text).expect_err("not an event");
        expect_reply(&mut ws, text, &format!("invalid event: {why}"));
    }
    let cases = [
        (
            event("chat.message", r#"{"room":"general","text":""}"#),
            "message rejected: empty text",
        ),
        (
            event("chat.message", r#"{"room":"general"}"#),
            "message rejected: empty text",
        ),
        (
            event("typing.start", "{}"),
            "unknown message type: typing.start",
        ),
        (
            event("room.join", r#"{"room":5}"#),
            "invalid payload: `room` must be a string",
        ),
        (
            event("chat.message", r#"{"room":"general","text":5}"#),
            "invalid payload: `text` must be a string",
        ),
        (
            event("chat.message", r#"{"room":"general","text":"not joined"}"#),
            "message rejected: not a member of general",
        ),
        (
            event("room.leave", r#"{"room":"never-joined"}"#),
            "not in room: never-joined",
        ),
    ];
    for (request, reply) in &cases {
        expect_reply(&mut ws, request, reply);
    }
    // Plain text and JSON that is not an object are not ignored: the reply says what the chat takes.
    let not_an_object = "invalid event: not a JSON object: send ping, or an event such as \
                         {\"type\":\"room.join\",\"payload\":{\"room\":\"general\"}}";
    for text in ["hello", "[1,2]", "\"just a string\"", "42", "pong"] {
        expect_reply(&mut ws, text, not_an_object);
    }
    // Whitespace is no message.
    expect_reply(
        &mut ws,
        &event("room.join", r#"{"room":"blank"}"#),
        "joined room: blank",
    );
    for text in [" ", "\\n\\t "] {
        let request = event(
            "chat.message",
            &format!(r#"{{"room":"blank","text":"{text}"}}"#),
        );
        expect_reply(&mut ws, &request, "message rejected: empty text");
    }
}

#[test]
fn unusable_room_names_are_refused_and_64_bytes_is_accepted() {
    let app = spawn_app(&[]);
    let mut ws = client(&app);
    let too_long = "r".repeat(65);
    let deceptive = [
        "admin\u{202E}txt",
        "gen\u{200B}eral",
        "iso\u{2066}late",
        "\u{FEFF}general",
    ];
    let plain = ["", too_long.as_str(), "tab\there", "new\nline", "nul\u{0}"];
    for room in plain.into_iter().chain(deceptive) {
        let payload = serde_json::json!({ "room": room }).to_string();
        expect_reply(&mut ws, &event("room.join", &payload), INVALID_ROOM);
        expect_reply(&mut ws, &event("room.leave", &payload), INVALID_ROOM);
        let message = serde_json::json!({ "room": room, "text": "x" }).to_string();
        expect_reply(&mut ws, &event("chat.message", &message), INVALID_ROOM);
    }
    let longest = "r".repeat(64);
    let payload = serde_json::json!({ "room": longest }).to_string();
    expect_reply(
        &mut ws,
        &event("room.join", &payload),
        &format!("joined room: {longest}"),
    );
    // Multi-byte names count bytes: 32 two-byte characters are 64 bytes, 33 are 66.
    let fits = "é".repeat(32);
    let payload = serde_json::json!({ "room": fits }).to_string();
    expect_reply(
        &mut ws,
        &event("room.join", &payload),
        &format!("joined room: {fits}"),
    );
    let payload = serde_json::json!({ "room": "é".repeat(33) }).to_string();
    expect_reply(&mut ws, &event("room.join", &payload), INVALID_ROOM);
}

#[test]
fn a_session_joins_at_most_64_rooms() {
    let app = spawn_app(&[]);
    let mut ws = client(&app);
    for i in 0..64 {
        send_text(
            &mut ws,
            &event("room.join", &format!(r#"{{"room":"r{i}"}}"#)),
        );
        assert_eq!(recv_text(&mut ws), format!("joined room: r{i}"));
    }
    let limit = "room limit reached: a session can be in at most 64 rooms";
    expect_reply(
        &mut ws,
        &event("room.join", r#"{"room":"one-too-many"}"#),
        limit,
    );
    // Joining a room it is already in is no new room.
    expect_reply(
        &mut ws,
        &event("room.join", r#"{"room":"r7"}"#),
        "joined room: r7",
    );
    // Leaving one makes room for another.
    expect_reply(
        &mut ws,
        &event("room.leave", r#"{"room":"r7"}"#),
        "left room: r7",
    );
    expect_reply(
        &mut ws,
        &event("room.join", r#"{"room":"one-too-many"}"#),
        "joined room: one-too-many",
    );
}
