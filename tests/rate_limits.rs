//! Per-sender rate limits through the chat app (`WEBSOCKET_RATE_LIMIT_MESSAGES=5`, `..._BURST=10`): a
//! client that floods a room is refused (`message rejected: rate limit`) and then closed with 1008 "rate
//! limit", whether it is a member or not, while 100 readers in the room stay connected and receive every
//! message that was admitted, in order, and nothing else.

mod common;

use std::net::TcpStream;

use common::{connect, recv_text, send_text, spawn_app, try_recv_text, App, NotText};
use tungstenite::{Message, WebSocket};

const WELCOME: &str = "welcome to Vix WebSocket chat";
const REFUSED: &str = "message rejected: rate limit";
const READERS: usize = 100;
const FLOOD: usize = 200;
const LIMITS: [(&str, &str); 2] = [
    ("WEBSOCKET_RATE_LIMIT_MESSAGES", "5"),
    ("WEBSOCKET_RATE_LIMIT_BURST", "10"),
];

fn event(kind: &str, payload: &serde_json::Value) -> String {
    serde_json::json!({ "type": kind, "payload": payload }).to_string()
}

/// A client that has read the welcome and, if `room` is given, joined it.
fn client(app: &App, room: Option<&str>) -> WebSocket<TcpStream> {
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), WELCOME);
    if let Some(room) = room {
        send_text(
            &mut ws,
            &event("room.join", &serde_json::json!({ "room": room })),
        );
        assert_eq!(recv_text(&mut ws), format!("joined room: {room}"));
    }
    ws
}

/// Sends `FLOOD` chat messages to `room` without reading, then reads everything until the close, which
/// must be 1008 "rate limit"; returns the texts the flooder got back before it.
fn flood_until_cut(ws: &mut WebSocket<TcpStream>, room: &str) -> Vec<String> {
    for n in 0..FLOOD {
        let message = event(
            "chat.message",
            &serde_json::json!({ "room": room, "text": format!("m{n}") }),
        );
        // The server may close us mid-flood: a write after its close frame arrived is refused, which ends
        // the flood as the server meant it to.
        if ws.send(Message::text(message)).is_err() {
            break;
        }
    }
    let mut texts = Vec::new();
    loop {
        match try_recv_text(ws) {
            Ok(text) => texts.push(text),
            Err(NotText::Close(Some(frame))) => {
                let close = (u16::from(frame.code), frame.reason.as_str());
                assert_eq!(close, (1008, "rate limit"), "{texts:?}");
                return texts;
            }
            Err(other) => {
                panic!("expected texts then a close frame, got {other:?} after {texts:?}")
            }
        }
    }
}

/// What every reader received before a marker that the first reader publishes in `room` once the flood
/// is over; all readers must have received the same. A room's messages pass through its home shard, and
/// reach members only after the history store has them, in the order taken: the marker comes after every
/// admitted flood message.
fn readers_got(readers: &mut [WebSocket<TcpStream>], room: &str) -> Vec<String> {
    let marker = format!("room {room}: marker");
    send_text(
        &mut readers[0],
        &event(
            "chat.message",
            &serde_json::json!({ "room": room, "text": "marker" }),
        ),
    );
    let mut first: Option<Vec<String>> = None;
    for (i, reader) in readers.iter_mut().enumerate() {
        let mut got = Vec::new();
        loop {
            let text = recv_text(reader);
            if text == marker {
                break;
            }
            got.push(text);
        }
        match &first {
            Some(first) => assert_eq!(&got, first, "reader {i}"),
            None => first = Some(got),
        }
    }
    first.unwrap_or_default()
}

#[test]
fn a_member_flooding_its_room_is_refused_then_closed_while_its_readers_get_every_admitted_message()
{
    let app = spawn_app(&LIMITS);
    let mut readers: Vec<_> = (0..READERS).map(|_| client(&app, Some("flood"))).collect();
    let mut flooder = client(&app, Some("flood"));

    let texts = flood_until_cut(&mut flooder, "flood");
    // The flooder may see some of its own admitted messages before its close (they reach members once
    // stored), and is refused the rest.
    let refused = texts.iter().filter(|t| *t == REFUSED).count();
    assert!(
        texts
            .iter()
            .all(|t| t == REFUSED || t.starts_with("room flood: m")),
        "{texts:?}"
    );
    assert!(refused >= 10, "{refused} refusals");
    // The burst (10, one spent on the join) is admitted; the limit refuses the rest and, past another
    // burst of refusals, cuts the sender. Every reader gets exactly the admitted ones, in order.
    let admitted = readers_got(&mut readers, "flood");
    assert!((9..FLOOD / 2).contains(&admitted.len()), "{admitted:?}");
    for (n, text) in admitted.iter().enumerate() {
        assert_eq!(
            text,
            &format!("room flood: m{n}"),
            "admitted in order, none skipped"
        );
    }
}

#[test]
fn a_non_member_flooding_a_room_is_refused_then_closed_and_its_readers_get_nothing() {
    let app = spawn_app(&LIMITS);
    let mut readers: Vec<_> = (0..READERS).map(|_| client(&app, Some("flood"))).collect();
    let mut flooder = client(&app, None);

    let texts = flood_until_cut(&mut flooder, "flood");
    let not_member = "message rejected: not a member of flood";
    assert!(
        texts.iter().all(|t| t == not_member || t == REFUSED),
        "{:?}",
        texts
    );
    assert!(texts.iter().any(|t| t == not_member));
    assert!(texts.iter().any(|t| t == REFUSED));
    assert_eq!(readers_got(&mut readers, "flood"), Vec::<String>::new());
}

#[test]
fn a_client_within_the_limits_is_never_refused() {
    let app = spawn_app(&LIMITS);
    let mut ws = client(&app, Some("calm"));
    // Nine messages fit the burst left after the join; each is answered before the next is sent.
    for n in 0..9 {
        let message = event(
            "chat.message",
            &serde_json::json!({ "room": "calm", "text": format!("c{n}") }),
        );
        send_text(&mut ws, &message);
        assert_eq!(recv_text(&mut ws), format!("room calm: c{n}"));
    }
}
