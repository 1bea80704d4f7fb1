//! Out of descriptors (`ulimit -n 64`): once the process cannot accept, the failures are logged at most
//! once per interval instead of dozens of times a second, and once the clients that took the descriptors
//! leave, the server accepts again: a new session upgrades and the HTTP side answers.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{connect, http_get, recv_text, send_text, Launch, READ_TIMEOUT};

/// More connections than the descriptor limit leaves room for.
const HOGS: usize = 80;
/// How long the server gets to run out and to recover.
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn accept_failures_are_logged_sparingly_and_the_server_recovers_when_descriptors_free_up() {
    let app = Launch::new()
        .test_network()
        // The budget is above the limit on purpose: this is about the descriptors running out.
        .envs(&[
            ("WEBSOCKET_MAX_CONNECTIONS", "10000"),
            ("WEBSOCKET_MAX_CONNECTIONS_PER_IP", "0"),
            ("SERVER_IO_THREADS", "1"),
        ])
        .descriptor_limit(64)
        .spawn();
    // Start-up said so, with the fix.
    let warning = "WEBSOCKET_MAX_CONNECTIONS=10000, but the descriptor limit (ulimit -n) is 64";
    assert!(app.output.text().contains(warning), "{}", app.output.text());
    assert!(
        app.output.text().contains("LimitNOFILE"),
        "{}",
        app.output.text()
    );
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.ws_addr
    );
    // The kernel completes the TCP handshakes into the listen backlog whether or not the server accepts.
    let mut hogs: Vec<TcpStream> = (0..HOGS)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&app.ws_addr, READ_TIMEOUT).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let failed = |app: &common::App| {
        app.output
            .lines()
            .iter()
            .filter(|line| line.contains("accept failed"))
            .count()
    };
    assert!(
        app.output.wait_for("accept failed", DEADLINE),
        "the server never ran out of descriptors: {}",
        app.output.text()
    );
    let out_since = Instant::now();
    hogs.clear();

    let mut ws = loop {
        assert!(
            Instant::now() < deadline,
            "no new session after the descriptors were freed"
        );
        if let Ok(stream) = TcpStream::connect_timeout(&app.ws_addr, READ_TIMEOUT) {
            stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            if let Ok((ws, _)) = tungstenite::client(app.ws_url(), stream) {
                break ws;
            }
        }
    };
    assert_eq!(recv_text(&mut ws), "welcome to Vix WebSocket chat");
    send_text(&mut ws, "ping");
    assert_eq!(recv_text(&mut ws), "pong");
    let health = http_get(app.http_addr, "/api/health");
    assert_eq!(health.status, 200);
    drop(connect(app.ws_addr));

    // Failures were retried every 50 ms while they lasted, yet logged at most once per 10 s per listener.
    let allowed = 2 * (1 + out_since.elapsed().as_secs() as usize / 10);
    assert!(failed(&app) <= allowed, "{}", app.output.text());
}
