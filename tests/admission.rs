//! Who may upgrade, as a client sees it: a browser page from another origin (or `null`) gets 403 while the
//! server's own host, loopback pages and clients without `Origin` get 101, and an explicit allowlist is
//! exact; past `WEBSOCKET_MAX_CONNECTIONS` or `WEBSOCKET_MAX_CONNECTIONS_PER_IP` an upgrade gets 503 while
//! the sessions already open are served on, and a slot is given back when a session ends.

mod library;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use library::{read_http_head, start, upgrade_request_head, RawClient, READ_TIMEOUT};
use roomcast::RunningServer;

fn echo_server(pairs: &[(&str, &str)]) -> RunningServer {
    start(pairs, |s| {
        s.on_message(|session, text| session.send_text(text))
    })
}

/// A TCP connection from the loopback address `source` (127.0.0.x) to `addr`.
fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect_timeout(&addr.into(), READ_TIMEOUT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Sends an upgrade request with `extra` header lines from `source`; returns the status and, on 101, the
/// open connection.
fn upgrade(addr: SocketAddr, source: &str, extra: &str) -> (u16, String, TcpStream) {
    let mut stream = tcp_from(source, addr);
    let request = format!("{}{extra}\r\n", upgrade_request_head(addr));
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_http_head(&mut stream);
    let status = library::status_of(&head);
    (status, head, stream)
}

fn status_with_origin(addr: SocketAddr, origin: &str) -> u16 {
    upgrade(addr, "127.0.0.1", &format!("Origin: {origin}\r\n")).0
}

#[test]
fn by_default_other_origins_get_403_and_the_own_host_loopback_and_non_browsers_get_101() {
    let server = echo_server(&[]);
    let addr = server.websocket_addr();
    for origin in [
        "http://evil.example",
        "null",
        "https://127.0.0.1.evil.example",
    ] {
        assert_eq!(status_with_origin(addr, origin), 403, "{origin}");
    }
    // The upgrade request's Host is the server's address, 127.0.0.1:PORT: the same host on another port
    // is the HTTP side's page.
    for origin in [
        "http://127.0.0.1:8080",
        "http://localhost:3000",
        "http://[::1]:8080",
    ] {
        assert_eq!(status_with_origin(addr, origin), 101, "{origin}");
    }
    assert_eq!(
        upgrade(addr, "127.0.0.1", "").0,
        101,
        "no Origin: not a browser"
    );
    // A refused page's text says why.
    let (_, head, _) = upgrade(addr, "127.0.0.1", "Origin: http://evil.example\r\n");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[test]
fn an_allowlist_admits_exactly_its_origins() {
    let server = echo_server(&[("WEBSOCKET_ALLOWED_ORIGINS", "https://chat.example")]);
    let addr = server.websocket_addr();
    assert_eq!(status_with_origin(addr, "https://chat.example"), 101);
    assert_eq!(status_with_origin(addr, "http://chat.example"), 403);
    assert_eq!(status_with_origin(addr, "http://127.0.0.1:8080"), 403);
}

/// Upgrades from `source` until one is refused; returns the open sessions and the refusal's status.
fn fill(addr: SocketAddr, source: &str, at_most: usize) -> (Vec<TcpStream>, u16) {
    let mut open = Vec::new();
    for _ in 0..at_most {
        let (status, _, stream) = upgrade(addr, source, "");
        if status != 101 {
            return (open, status);
        }
        open.push(stream);
    }
    panic!("{at_most} upgrades from {source} were all accepted");
}

/// Upgrades until one is accepted within [`READ_TIMEOUT`]: a slot comes back once the server has seen a
/// session end, which a client cannot observe directly.
fn upgrade_once_free(addr: SocketAddr, source: &str) -> TcpStream {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let (status, _, stream) = upgrade(addr, source, "");
        if status == 101 {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "no slot came back: still {status}"
        );
    }
}

#[test]
fn past_the_process_wide_budget_upgrades_get_503_and_open_sessions_are_served() {
    let server = echo_server(&[("WEBSOCKET_MAX_CONNECTIONS", "4")]);
    let addr = server.websocket_addr();
    let mut well_behaved = RawClient::upgrade(addr);
    let (mut open, status) = fill(addr, "127.0.0.1", 10);
    assert_eq!((open.len(), status), (3, 503));
    // A different address changes nothing: the budget is the whole process's.
    assert_eq!(upgrade(addr, "127.0.0.2", "").0, 503);
    well_behaved.send(&library::client_frame(0x1, true, b"still here"));
    assert_eq!(well_behaved.expect_text(), "still here");
    drop(open.pop());
    drop(upgrade_once_free(addr, "127.0.0.2"));
}

#[test]
fn past_the_per_address_budget_upgrades_get_503_and_other_addresses_are_admitted() {
    let server = echo_server(&[("WEBSOCKET_MAX_CONNECTIONS_PER_IP", "3")]);
    let addr = server.websocket_addr();
    let (mut open, status) = fill(addr, "127.0.0.1", 10);
    assert_eq!((open.len(), status), (3, 503));
    let (status, head, _) = upgrade(addr, "127.0.0.1", "");
    assert_eq!(status, 503, "{head}");
    let mut elsewhere = RawClient {
        stream: {
            let (status, _, stream) = upgrade(addr, "127.0.0.2", "");
            assert_eq!(status, 101);
            stream
        },
    };
    elsewhere.send(&library::client_frame(0x1, true, b"other address"));
    assert_eq!(elsewhere.expect_text(), "other address");
    drop(open.pop());
    drop(upgrade_once_free(addr, "127.0.0.1"));
}
