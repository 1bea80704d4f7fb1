//! The callbacks an application registers, seen from a client: binary messages reach `on_binary` and
//! `send_binary` returns them intact; text is routed to `on_typed_message` or `on_message` by the envelope
//! rule; `on_open` and `on_close` run exactly once per session however it ends; and `Session::close`
//! called from a callback delivers its code and reason.

mod common;
mod library;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{recv_close_code, recv_text, send_text};
use library::{start, tcp, RawClient};
use roomcast::RunningServer;
use tungstenite::{Message, WebSocket};

/// How long to wait for an `on_close`.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callback {
    Open(u64),
    Close(u64),
}

/// `on_open` says `open:ID`; binary is echoed with `send_binary`; typed events are answered
/// `typed:KIND:PAYLOAD`, raw text `raw:TEXT`, except `close-me`, which closes with 4000 "bye".
fn server() -> (RunningServer, Receiver<Callback>) {
    let (tx, rx) = mpsc::channel();
    let opened = Mutex::new(tx.clone());
    let closed = Mutex::new(tx);
    let server = start(&[], move |s| {
        s.on_open(move |session| {
            let _ = opened.lock().unwrap().send(Callback::Open(session.id().0));
            session.send_text(&format!("open:{}", session.id().0));
        })
        .on_close(move |session| {
            let _ = closed.lock().unwrap().send(Callback::Close(session.id().0));
        })
        .on_binary(|session, data| session.send_binary(data))
        .on_message(|session, text| {
            if text == "close-me" {
                session.close(4000, "bye");
            } else {
                session.send_text(&format!("raw:{text}"));
            }
        })
        .on_typed_message(|session, kind, payload| {
            let payload = serde_json::to_string(payload).unwrap();
            session.send_text(&format!("typed:{kind}:{payload}"));
        })
    });
    (server, rx)
}

/// A tungstenite client and its session id, from `open:ID`.
fn client(server: &RunningServer) -> (WebSocket<TcpStream>, u64) {
    let addr = server.websocket_addr();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), tcp(addr)).expect("upgrade");
    let hello = recv_text(&mut ws);
    let id = hello
        .strip_prefix("open:")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected open:ID, got {hello:?}"));
    (ws, id)
}

#[test]
fn binary_messages_reach_on_binary_and_send_binary_returns_them() {
    let (server, _) = server();
    let (mut ws, _) = client(&server);
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        ws.send(Message::binary(data.clone())).unwrap();
        match ws.read().expect("the echo") {
            Message::Binary(echo) => assert!(echo[..] == data[..], "{len} bytes came back changed"),
            other => panic!("{len} bytes: expected a binary echo, got {other:?}"),
        }
    }
    // Bytes that are not UTF-8 are fine in a binary message.
    ws.send(Message::binary(vec![0xff, 0xfe, 0x00])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0xff, 0xfe, 0x00]));
}

#[test]
fn text_is_routed_by_the_envelope_rule() {
    let (server, _) = server();
    let (mut ws, _) = client(&server);
    let cases = [
        (r#"{"type":"x","payload":{"a":1}}"#, r#"typed:x:{"a":1}"#),
        (r#"{"type":"x"}"#, "typed:x:{}"),
        (
            r#"  {"payload":{"b":[true]},"type":"y"}"#,
            r#"typed:y:{"b":[true]}"#,
        ),
        (r#"{"type":5}"#, r#"raw:{"type":5}"#),
        (
            r#"{"type":"x","payload":"s"}"#,
            r#"raw:{"type":"x","payload":"s"}"#,
        ),
        (r#"{"type":"#, r#"raw:{"type":"#),
        ("[1]", "raw:[1]"),
        ("hello", "raw:hello"),
    ];
    for (text, reply) in cases {
        send_text(&mut ws, text);
        assert_eq!(recv_text(&mut ws), reply, "for {text}");
    }
}

#[test]
fn session_close_from_a_callback_delivers_its_code_and_reason() {
    let (server, _) = server();
    let (mut ws, _) = client(&server);
    send_text(&mut ws, "close-me");
    match ws.read().expect("a close frame") {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected close 4000, got {other:?}"),
    }
    // tungstenite has replied; the server, having its close answered, ends the connection.
    match ws.read() {
        Ok(other) => panic!("after the close: {other:?}"),
        Err(tungstenite::Error::ConnectionClosed) => {}
        Err(e) => panic!("expected a clean end after the close handshake, got {e}"),
    }
}

#[test]
fn on_open_and_on_close_run_once_per_session_however_it_ends() {
    let (server, events) = server();
    let mut opened = Vec::new();

    // A client close handshake.
    let (mut polite, id) = client(&server);
    opened.push(id);
    polite.close(None).unwrap();
    while polite.read().is_ok() {}

    // A dropped TCP connection.
    let (rude, id) = client(&server);
    opened.push(id);
    drop(rude);

    // A close the application starts.
    let (mut closed_by_app, id) = client(&server);
    opened.push(id);
    send_text(&mut closed_by_app, "close-me");
    assert_eq!(recv_close_code(&mut closed_by_app), 4000);

    // A protocol error (an unmasked frame).
    let mut broken = RawClient::upgrade(server.websocket_addr());
    let hello = broken.expect_text();
    opened.push(hello.strip_prefix("open:").unwrap().parse().unwrap());
    broken.send(&[0x81, 0x01, b'x']);
    assert_eq!(broken.expect_frame().close_code(), Some(1002));
    drop(broken);

    // Wait until every one of them has closed, then stop the server so no callback can still be coming.
    let mut seen = Vec::new();
    let deadline = Instant::now() + CALLBACK_DEADLINE;
    while !opened.iter().all(|id| seen.contains(&Callback::Close(*id))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => seen.push(event),
            Err(_) => panic!("on_close did not run for all of {opened:?}; saw {seen:?}"),
        }
    }
    server.stop();
    seen.extend(events.try_iter());

    let mut counts: HashMap<u64, (usize, usize)> = HashMap::new();
    for event in &seen {
        match event {
            Callback::Open(id) => counts.entry(*id).or_default().0 += 1,
            Callback::Close(id) => counts.entry(*id).or_default().1 += 1,
        }
    }
    for id in &opened {
        assert_eq!(counts.get(id), Some(&(1, 1)), "(opens, closes) of {id}");
    }
    assert_eq!(counts.len(), opened.len(), "callbacks for unknown sessions");
    // Each on_open came before its on_close.
    for id in &opened {
        let open = seen.iter().position(|e| *e == Callback::Open(*id));
        let close = seen.iter().position(|e| *e == Callback::Close(*id));
        assert!(open < close, "on_close before on_open for {id}");
    }
}
