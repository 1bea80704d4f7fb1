//! Authentication and room authorization through the chat app: with `AUTH_SECRET` set, an upgrade without
//! a token, with a forged or tampered one, or with an expired one gets 401; a token printed by
//! `roomcast token` connects, joins only rooms its patterns allow (`room denied: R` otherwise) and its
//! messages read `room R: USER: TEXT`. Without `AUTH_SECRET` the app stays open and says so at start-up.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{recv_text, send_text, spawn_app, App, Launch, READ_TIMEOUT};
use tungstenite::WebSocket;

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const WELCOME: &str = "welcome to Vix WebSocket chat";

/// A token from the binary's own `token` subcommand.
fn token(user: &str, rooms: &str, ttl: &str) -> String {
    let (status, output) = Launch::new()
        .envs(&[("AUTH_SECRET", SECRET)])
        .arg("token")
        .arg("--user")
        .arg(user)
        .arg("--rooms")
        .arg(rooms)
        .arg("--ttl")
        .arg(ttl)
        .run_to_exit();
    assert!(status.success(), "{output}");
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix("stdout: "))
        .unwrap_or_else(|| panic!("no token printed: {output}"));
    line.trim().to_owned()
}

/// A token signed with `SECRET` that expired an hour ago, made here rather than by the binary, which
/// only issues tokens that are still valid.
fn expired_token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": "alice", "exp": now - 3600, "rooms": ["*"] });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The HTTP status the upgrade to `path` gets.
fn upgrade_status(app: &App, path: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&app.ws_addr, READ_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.ws_addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(std::io::Read::read(&mut stream, &mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn connect_with(app: &App, token: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect_timeout(&app.ws_addr, READ_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let url = format!("ws://{}/?token={token}", app.ws_addr);
    let (mut ws, _) = tungstenite::client(url, stream).expect("a valid token upgrades");
    assert_eq!(recv_text(&mut ws), WELCOME);
    ws
}

fn event(kind: &str, payload: serde_json::Value) -> String {
    serde_json::json!({ "type": kind, "payload": payload }).to_string()
}

#[test]
fn without_a_valid_token_the_upgrade_is_401() {
    let app = spawn_app(&[("AUTH_SECRET", SECRET)]);
    let good = token("alice", "general", "3600");
    let mut tampered = good.clone();
    let at = tampered.len() - 3;
    tampered.replace_range(at..at + 1, if &good[at..at + 1] == "A" { "B" } else { "A" });
    let forged = {
        let claims = serde_json::json!({ "sub": "mallory", "exp": u64::MAX / 2, "rooms": ["*"] });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-not-the-server"),
        )
        .unwrap()
    };
    assert_eq!(upgrade_status(&app, "/"), 401, "no token");
    assert_eq!(upgrade_status(&app, "/?token="), 401, "empty token");
    assert_eq!(upgrade_status(&app, "/?token=garbage"), 401, "not a JWT");
    assert_eq!(
        upgrade_status(&app, &format!("/?token={tampered}")),
        401,
        "tampered"
    );
    assert_eq!(
        upgrade_status(&app, &format!("/?token={forged}")),
        401,
        "wrong secret"
    );
    assert_eq!(
        upgrade_status(&app, &format!("/?token={}", expired_token())),
        401,
        "expired"
    );
    assert_eq!(
        upgrade_status(&app, &format!("/?token={good}")),
        101,
        "valid"
    );
}

#[test]
fn a_token_decides_the_rooms_and_names_the_sender() {
    let app = spawn_app(&[("AUTH_SECRET", SECRET)]);
    let mut alice = connect_with(&app, &token("alice", "general,team-*", "3600"));
    let mut bob = connect_with(&app, &token("bob", "general", "3600"));
    let join = |ws: &mut WebSocket<TcpStream>, room: &str| {
        send_text(ws, &event("room.join", serde_json::json!({ "room": room })));
        recv_text(ws)
    };
    assert_eq!(join(&mut alice, "general"), "joined room: general");
    assert_eq!(join(&mut alice, "team-red"), "joined room: team-red");
    assert_eq!(join(&mut bob, "general"), "joined room: general");
    for room in ["team-red", "secret"] {
        assert_eq!(join(&mut bob, room), format!("room denied: {room}"));
    }
    // A refused join is not a membership: bob cannot post there either.
    let post = event(
        "chat.message",
        serde_json::json!({ "room": "team-red", "text": "hi" }),
    );
    send_text(&mut bob, &post);
    assert_eq!(
        recv_text(&mut bob),
        "message rejected: not a member of team-red"
    );

    let hello = event(
        "chat.message",
        serde_json::json!({ "room": "general", "text": "hello" }),
    );
    send_text(&mut alice, &hello);
    assert_eq!(recv_text(&mut alice), "room general: alice: hello");
    assert_eq!(recv_text(&mut bob), "room general: alice: hello");
}

#[test]
fn without_auth_secret_the_app_is_open_and_says_so() {
    let app = spawn_app(&[]);
    assert!(
        app.output.wait_for("AUTH_SECRET is not set", READ_TIMEOUT),
        "{}",
        app.output.text()
    );
    assert_eq!(upgrade_status(&app, "/"), 101);
}

#[test]
fn the_token_subcommand_needs_a_secret() {
    let (status, output) = Launch::new()
        .arg("token")
        .arg("--user")
        .arg("alice")
        .arg("--rooms")
        .arg("general")
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("AUTH_SECRET is not set"), "{output}");
}
