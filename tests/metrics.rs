//! `GET /metrics` and `GET /api/stats` of the chat binary, read the way Prometheus would: a scripted chat
//! session, refused upgrades and a close by each of several close codes, then a scrape parsed by the
//! Python `prometheus_client` parser (`tests/clients/parse_metrics.py`, which also fails on a family
//! without HELP or TYPE). Every counter must have moved by exactly the traffic sent.

mod common;
mod library;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, http_get, recv_text, send_text, spawn_app, App};
use library::{
    client_frame, client_frame_with_first_byte, read_http_head, status_of, tcp,
    upgrade_request_head, RawClient,
};
use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

const WELCOME: &str = "welcome to Vix WebSocket chat";

/// One sample's labels and value.
type Sample = (HashMap<String, String>, f64);

/// A scrape, parsed: sample name → its samples; family name → its type.
struct Scrape {
    samples: HashMap<String, Vec<Sample>>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The sum of `name` over every sample whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(name)
            .map(|samples| {
                samples
                    .iter()
                    .filter(|(l, _)| {
                        labels
                            .iter()
                            .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                    })
                    .map(|(_, v)| v)
                    .sum()
            })
            .unwrap_or(0.0)
    }
}

/// `GET /metrics`, parsed by prometheus_client's parser.
fn scrape(app: &App) -> Scrape {
    let response = http_get(app.http_addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut parser = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/parse_metrics.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (tests/run installs prometheus_client)");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(&response.body)
        .unwrap();
    let mut out = String::new();
    parser
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    parser
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        parser.wait().unwrap().success(),
        "the parser refused the scrape: {err}\n{}",
        response.text()
    );
    let parsed: Value = serde_json::from_str(&out).unwrap();
    let mut samples: HashMap<String, Vec<_>> = HashMap::new();
    let mut types = HashMap::new();
    for family in parsed["families"].as_array().unwrap() {
        types.insert(
            family["name"].as_str().unwrap().to_owned(),
            family["type"].as_str().unwrap().to_owned(),
        );
        for sample in family["samples"].as_array().unwrap() {
            let labels = sample["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            samples
                .entry(sample["name"].as_str().unwrap().to_owned())
                .or_default()
                .push((labels, sample["value"].as_f64().unwrap()));
        }
    }
    Scrape { samples, types }
}

/// Scrapes until `done` holds (sessions end on the server a moment after their clients see the close).
fn scrape_until(app: &App, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(app);
        if done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw session that sends `frame`, and must be closed by the server with `code`.
fn closed_by_server(app: &App, frame: &[u8], code: u16) {
    let mut client = RawClient::upgrade(app.ws_addr);
    assert_eq!(client.expect_text(), WELCOME);
    client.send(frame);
    assert_eq!(client.expect_frame().close_code(), Some(code));
}

/// An upgrade request plus `extra` header lines, answered with a refusal; returns the status.
fn refused_upgrade(app: &App, request: String) -> u16 {
    let mut stream = tcp(app.ws_addr);
    stream.write_all(request.as_bytes()).unwrap();
    status_of(&read_http_head(&mut stream))
}

#[test]
fn a_scripted_chat_session_moves_every_counter_by_exactly_its_traffic() {
    let app = spawn_app(&[
        ("WEBSOCKET_MAX_MESSAGE_SIZE", "1024"),
        ("WEBSOCKET_ENABLE_DEFLATE", "false"),
        ("WEBSOCKET_PING_INTERVAL", "0"),
    ]);
    let before = scrape(&app);
    for (family, kind) in [
        ("roomcast_messages_received", "counter"),
        ("roomcast_connections_closed", "counter"),
        ("roomcast_connections_open", "gauge"),
        ("roomcast_shard_event_loop_lag_seconds", "gauge"),
        ("roomcast_outbound_queued_bytes", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }

    // Two members chat: 8 messages in, 19 out (6 welcomes, 2 join replies, 5 texts to 2 members, a pong).
    let mut received_bytes = 0;
    let mut a = connect(app.ws_addr);
    let mut b = connect(app.ws_addr);
    assert_eq!(recv_text(&mut a), WELCOME);
    assert_eq!(recv_text(&mut b), WELCOME);
    let join = r#"{"type":"room.join","payload":{"room":"metrics"}}"#;
    for client in [&mut a, &mut b] {
        send_text(client, join);
        received_bytes += join.len();
        assert_eq!(recv_text(client), "joined room: metrics");
    }
    for i in 1..=5 {
        let message = format!(
            r#"{{"type":"chat.message","payload":{{"room":"metrics","text":"line {i}"}}}}"#
        );
        send_text(&mut a, &message);
        received_bytes += message.len();
        for client in [&mut a, &mut b] {
            assert_eq!(recv_text(client), format!("room metrics: line {i}"));
        }
    }
    send_text(&mut a, "ping");
    received_bytes += 4;
    assert_eq!(recv_text(&mut a), "pong");

    // Closes: by the client (1000, and an application's 4001), by the server for invalid UTF-8 (1007), a
    // message over WEBSOCKET_MAX_MESSAGE_SIZE (1009) and a reserved bit (1002), and none at all (1006).
    for (mut client, code) in [(a, CloseCode::Normal), (b, CloseCode::from(4001))] {
        client
            .close(Some(CloseFrame {
                code,
                reason: "".into(),
            }))
            .unwrap();
        while client.read().is_ok() {}
    }
    closed_by_server(&app, &client_frame(0x1, true, &[0xff, 0xfe]), 1007);
    closed_by_server(&app, &client_frame(0x1, true, &[b'x'; 2000]), 1009);
    closed_by_server(&app, &client_frame_with_first_byte(0xA1, b"rsv2"), 1002);
    let mut dropped = RawClient::upgrade(app.ws_addr);
    assert_eq!(dropped.expect_text(), WELCOME);
    drop(dropped);

    // Two refused upgrades: not an upgrade at all (400), and a page of another site (403).
    let addr = app.ws_addr;
    assert_eq!(
        refused_upgrade(&app, format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")),
        400
    );
    let foreign = format!(
        "{}Origin: http://elsewhere.example\r\n\r\n",
        upgrade_request_head(addr)
    );
    assert_eq!(refused_upgrade(&app, foreign), 403);

    let after = scrape_until(&app, "every session ended and counted", |s| {
        s.sum("roomcast_connections_closed_total", &[])
            - before.sum("roomcast_connections_closed_total", &[])
            == 6.0
            && s.sum("roomcast_connections_open", &[]) == 0.0
    });
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(delta("roomcast_connections_accepted_total", &[]), 8.0);
    assert_eq!(delta("roomcast_connections_opened_total", &[]), 6.0);
    assert_eq!(delta("roomcast_messages_received_total", &[]), 8.0);
    assert_eq!(
        delta("roomcast_received_message_bytes_total", &[]),
        received_bytes as f64
    );
    assert_eq!(delta("roomcast_messages_sent_total", &[]), 19.0);
    assert_eq!(delta("roomcast_room_broadcasts_total", &[]), 5.0);
    assert_eq!(delta("roomcast_room_deliveries_total", &[]), 10.0);
    assert_eq!(delta("roomcast_history_appends_total", &[]), 5.0);
    assert_eq!(delta("roomcast_slow_consumer_closes_total", &[]), 0.0);
    for code in ["1000", "4xxx", "1007", "1009", "1002", "1006"] {
        assert_eq!(
            delta("roomcast_connections_closed_total", &[("code", code)]),
            1.0,
            "code {code}"
        );
    }
    assert_eq!(
        delta(
            "roomcast_handshake_failures_total",
            &[("reason", "invalid_request")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "roomcast_handshake_failures_total",
            &[("reason", "forbidden")]
        ),
        1.0
    );
    assert_eq!(delta("roomcast_handshake_failures_total", &[]), 2.0);
    assert!(delta("roomcast_socket_read_bytes_total", &[]) > received_bytes as f64);
    assert!(delta("roomcast_socket_written_bytes_total", &[]) > 0.0);
    assert_eq!(after.sum("roomcast_room_members", &[]), 0.0);
    assert_eq!(
        after.sum("roomcast_shards_answering", &[]),
        after.sum("roomcast_shards", &[])
    );
    assert_eq!(
        after.sum("roomcast_deflate_ratio", &[]),
        1.0,
        "nothing was compressed"
    );

    // The dashboard's JSON carries the same totals.
    let stats: Value = serde_json::from_slice(&http_get(app.http_addr, "/api/stats").body).unwrap();
    assert_eq!(stats["connections"]["open"], 0);
    assert!(stats["totals"]["messages_received"].as_u64().unwrap() >= 8);
    assert_eq!(
        stats["shards"].as_array().unwrap().len(),
        stats["shard_count"].as_u64().unwrap() as usize
    );
}

#[test]
fn metrics_move_to_their_path_or_go_away() {
    let moved = spawn_app(&[("METRICS_PATH", "/internal/metrics")]);
    assert_eq!(http_get(moved.http_addr, "/internal/metrics").status, 200);
    assert_eq!(http_get(moved.http_addr, "/metrics").status, 404);
    let off = spawn_app(&[("METRICS_ENABLED", "false")]);
    assert_eq!(http_get(off.http_addr, "/metrics").status, 404);
    assert_eq!(http_get(off.http_addr, "/api/stats").status, 404);
    assert_eq!(http_get(off.http_addr, "/api/health").status, 200);
}
