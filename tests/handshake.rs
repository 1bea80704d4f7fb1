//! The opening handshake as a client sees it: a version other than 13 is `426` naming version 13; a request
//! that is not a valid upgrade (no key, POST, garbage) is `400` and the connection ends; and a client that
//! sends half a request and then nothing is dropped after `SERVER_REQUEST_TIMEOUT`. The negotiation of
//! `permessage-deflate` is `deflate.rs`'s.

mod library;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use library::{read_http_head, start, tcp, upgrade_request_head};
use roomcast::RunningServer;

/// `SERVER_REQUEST_TIMEOUT` for these tests, in milliseconds.
const REQUEST_TIMEOUT_MS: u64 = 300;

fn echo_server() -> RunningServer {
    start(
        &[("SERVER_REQUEST_TIMEOUT", &REQUEST_TIMEOUT_MS.to_string())],
        |s| s.on_message(|session, text| session.send_text(text)),
    )
}

/// Sends `request` on a fresh connection and returns the response's status, its head, and whether the
/// server then ended the connection.
fn exchange(addr: SocketAddr, request: &str) -> (u16, String, bool) {
    let mut stream = tcp(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_http_head(&mut stream);
    let status = library::status_of(&head);
    (status, head, ends(&mut stream))
}

/// Whether the server ends the connection (end of stream or reset) within the read timeout, after
/// whatever body it still sends.
fn ends(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            panic!("{}: {e}", library::INTERRUPTED)
        }
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn version_8_is_426_naming_version_13() {
    let server = echo_server();
    let addr = server.websocket_addr();
    let request = upgrade_request_head(addr).replace("Version: 13", "Version: 8") + "\r\n";
    let (status, head, ended) = exchange(addr, &request);
    assert_eq!(status, 426, "{head}");
    assert_eq!(header(&head, "Sec-WebSocket-Version"), Some("13"), "{head}");
    assert!(ended, "the connection stays open after a refusal");
}

#[test]
fn invalid_upgrades_are_400_and_the_connection_ends() {
    let server = echo_server();
    let addr = server.websocket_addr();
    let good = upgrade_request_head(addr);
    let cases = [
        (
            "missing Sec-WebSocket-Key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "") + "\r\n",
        ),
        ("POST", good.replacen("GET", "POST", 1) + "\r\n"),
        (
            "garbage",
            "\u{1}\u{2} this is not HTTP at all\r\n\r\n".to_owned(),
        ),
    ];
    for (what, request) in cases {
        let (status, head, ended) = exchange(addr, &request);
        assert_eq!(status, 400, "{what}: {head}");
        assert!(ended, "{what}: the connection stays open after a 400");
    }
}

#[test]
fn half_a_request_is_dropped_after_the_request_timeout() {
    let server = echo_server();
    let addr = server.websocket_addr();
    // Taken before connecting, so the server's timer cannot have started earlier.
    let sent = Instant::now();
    let mut stream = tcp(addr);
    let head = upgrade_request_head(addr);
    stream
        .write_all(&head.as_bytes()[..head.len() / 2])
        .unwrap();
    // The read timeout (5 s) is the deadline; the server should end it after 300 ms.
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected the connection to end, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!(
                "the server kept a half request open for {:?}",
                sent.elapsed()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            panic!("{}: {e}", library::INTERRUPTED)
        }
        Err(_) => {} // a reset also ends it
    }
    assert!(
        sent.elapsed() >= Duration::from_millis(REQUEST_TIMEOUT_MS),
        "dropped after {:?}, before the request timeout",
        sent.elapsed()
    );
}
