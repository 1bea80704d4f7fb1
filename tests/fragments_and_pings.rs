//! Fragmentation and control frames against the chat binary, over a raw client: a `ping` text split in two
//! fragments with a control ping between them gets the pong (same payload) and then the text `pong`;
//! `WEBSOCKET_AUTO_PING_PONG=false` leaves control pings unanswered; `WEBSOCKET_PING_INTERVAL` makes the
//! server ping; `WEBSOCKET_IDLE_TIMEOUT` closes a silent client with 1001 but not one that keeps talking.

mod common;
mod library;

use std::io;
use std::time::{Duration, Instant};

use common::{spawn_app, App};
use library::{client_frame, close_payload, RawClient};

const WELCOME: &str = "welcome to Vix WebSocket chat";
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A raw client that has read the welcome.
fn raw_client(app: &App) -> RawClient {
    let mut client = RawClient::upgrade(app.ws_addr);
    assert_eq!(client.expect_text(), WELCOME);
    client
}

#[test]
fn a_control_ping_between_fragments_is_answered_then_the_message() {
    let app = spawn_app(&[("WEBSOCKET_PING_INTERVAL", "0")]);
    let mut client = raw_client(&app);
    let mut bytes = client_frame(0x1, false, b"pi");
    bytes.extend(client_frame(PING, true, b"heartbeat"));
    bytes.extend(client_frame(0x0, true, b"ng"));
    client.send(&bytes);

    let pong = client.expect_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"heartbeat"[..]),
        "expected a pong echoing the ping, got {pong:?}"
    );
    assert_eq!(client.expect_text(), "pong", "the reassembled `ping`");
}

#[test]
fn fragments_sent_one_write_at_a_time_are_reassembled() {
    let app = spawn_app(&[("WEBSOCKET_PING_INTERVAL", "0")]);
    let mut client = raw_client(&app);
    // Each fragment in its own write, with the reply to a control ping in between proving the server has
    // read the earlier ones before the next is sent.
    client.send(&client_frame(0x1, false, b"p"));
    client.send(&client_frame(PING, true, b"1"));
    assert_eq!(client.expect_frame().payload, b"1");
    client.send(&client_frame(0x0, false, b"i"));
    client.send(&client_frame(PING, true, b"2"));
    assert_eq!(client.expect_frame().payload, b"2");
    client.send(&client_frame(0x0, true, b"ng"));
    assert_eq!(client.expect_text(), "pong");
}

#[test]
fn without_auto_ping_pong_a_control_ping_is_not_answered() {
    let app = spawn_app(&[
        ("WEBSOCKET_AUTO_PING_PONG", "false"),
        ("WEBSOCKET_PING_INTERVAL", "0"),
    ]);
    let mut client = raw_client(&app);
    client.send(&client_frame(PING, true, b"anyone?"));
    client.send(&client_frame(0x1, true, b"ping"));
    // A pong to the control ping would have been queued before the reply to the later text.
    let first = client.expect_frame();
    assert_eq!(
        (first.opcode, first.text()),
        (0x1, "pong".to_owned()),
        "expected the text reply first, got {first:?}"
    );
}

#[test]
fn the_server_pings_every_ping_interval() {
    let app = spawn_app(&[("WEBSOCKET_PING_INTERVAL", "1")]);
    let mut client = raw_client(&app);
    // The sweep runs once a second, so the first ping comes within about two; the read timeout (5 s) is
    // the deadline.
    let frame = client.expect_frame();
    assert_eq!(frame.opcode, PING, "expected a server ping, got {frame:?}");
    // Answering it keeps the session usable.
    client.send(&client_frame(PONG, true, &frame.payload));
    client.send(&client_frame(0x1, true, b"ping"));
    loop {
        let next = client.expect_frame();
        if next.opcode != PING {
            assert_eq!((next.opcode, next.text()), (0x1, "pong".to_owned()));
            break;
        }
    }
}

#[test]
fn a_silent_client_is_closed_with_1001_after_the_idle_timeout() {
    // Taken before connecting, so the server cannot have started counting earlier.
    let began = Instant::now();
    let app = spawn_app(&[
        ("WEBSOCKET_IDLE_TIMEOUT", "1"),
        ("WEBSOCKET_PING_INTERVAL", "0"),
    ]);
    let mut client = raw_client(&app);
    let frame = client.expect_frame();
    assert_eq!(
        frame.close_code(),
        Some(1001),
        "expected close 1001, got {frame:?} ({:?})",
        frame.text()
    );
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "closed after {:?}, before the idle timeout",
        began.elapsed()
    );
    // Complete the close handshake; the server then ends the connection.
    client.send(&client_frame(0x8, true, &close_payload(1001, "")));
    assert!(client.connection_ends(), "the connection stays open");
}

#[test]
fn a_client_that_keeps_talking_outlives_the_idle_timeout() {
    let app = spawn_app(&[
        ("WEBSOCKET_IDLE_TIMEOUT", "2"),
        ("WEBSOCKET_PING_INTERVAL", "0"),
    ]);
    let mut silent = raw_client(&app);
    let mut talker = raw_client(&app);
    // The talker sends every 200 ms for 5 s (more than twice the timeout). The pause between messages is
    // a read with a 200 ms timeout, which also checks that nothing (no close) arrives meanwhile.
    talker
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        talker.send(&client_frame(0x1, true, b"ping"));
        assert_eq!(talker.expect_text(), "pong");
        match talker.read_frame() {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the talker got {other:?} while active"),
        }
    }
    talker
        .stream
        .set_read_timeout(Some(library::READ_TIMEOUT))
        .unwrap();
    talker.send(&client_frame(0x1, true, b"ping"));
    assert_eq!(talker.expect_text(), "pong", "still open");
    // The timeout was in force all along: the silent client on the same server was closed.
    let frame = silent.expect_frame();
    assert_eq!(
        frame.close_code(),
        Some(1001),
        "silent client got {frame:?}"
    );
}
