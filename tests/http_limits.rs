//! The HTTP side's limits, over raw HTTP/1.1: a request head over `SERVER_MAX_REQUEST_HEAD` gets 431, an
//! HTTP/1.1 request without `Host` gets 400 (HTTP/1.0 needs none), and past
//! `SERVER_MAX_KEEPALIVE_CONNECTIONS` open connections a new one is answered with `Connection: close` and
//! closed, while the kept-alive ones are served on and keep-alive comes back when one leaves.

mod library;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use library::{ends_within, read_http_head, start, status_of, tcp, READ_TIMEOUT};
use roomcast::{RunningServer, Server};

fn server(pairs: &[(&str, &str)]) -> RunningServer {
    start(pairs, |s: Server| {
        s.json_route("/api/health", |_| serde_json::json!({ "ok": true }))
    })
}

/// Sends `request` and reads one response: its head and its `Content-Length` body.
fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_http_head(stream);
    let length: usize = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.trim().parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status_of(&head), head)
}

fn health(addr: SocketAddr) -> String {
    format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

fn closes(head: &str) -> bool {
    head.to_ascii_lowercase().contains("connection: close")
}

#[test]
fn a_request_head_over_the_limit_gets_431() {
    let server = server(&[("SERVER_MAX_REQUEST_HEAD", "4096")]);
    let addr = server.http_addr();
    let filler = "a".repeat(100_000);
    let mut stream = tcp(addr);
    let request = format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {filler}\r\n\r\n");
    // The server may answer and close before it has read all of it; the answer is what counts.
    let _ = stream.write_all(request.as_bytes());
    assert_eq!(status_of(&read_http_head(&mut stream)), 431);
    // A head within the limit is served.
    assert_eq!(exchange(&mut tcp(addr), &health(addr)).0, 200);
}

#[test]
fn http_1_1_without_host_gets_400_and_http_1_0_needs_none() {
    let server = server(&[]);
    let addr = server.http_addr();
    let (status, _) = exchange(&mut tcp(addr), "GET /api/health HTTP/1.1\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _) = exchange(&mut tcp(addr), "GET /api/health HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(exchange(&mut tcp(addr), &health(addr)).0, 200);
}

#[test]
fn past_the_keep_alive_cap_new_connections_are_answered_and_closed() {
    let server = server(&[("SERVER_MAX_KEEPALIVE_CONNECTIONS", "2")]);
    let addr = server.http_addr();
    let mut kept: Vec<TcpStream> = (0..2).map(|_| tcp(addr)).collect();
    for stream in &mut kept {
        let (status, head) = exchange(stream, &health(addr));
        assert_eq!(status, 200);
        assert!(!closes(&head), "{head}");
    }
    let mut third = tcp(addr);
    let (status, head) = exchange(&mut third, &health(addr));
    assert_eq!(status, 200, "past the cap it is still answered");
    assert!(closes(&head), "{head}");
    assert!(ends_within(&mut third, READ_TIMEOUT));
    // The kept-alive ones are served on.
    for stream in &mut kept {
        assert_eq!(exchange(stream, &health(addr)).0, 200);
    }
    // Once one leaves (the server notices the close), keep-alive is offered again.
    drop(kept.pop());
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let (status, head) = exchange(&mut tcp(addr), &health(addr));
        assert_eq!(status, 200);
        if !closes(&head) {
            break;
        }
        assert!(Instant::now() < deadline, "keep-alive never came back");
    }
}
