//! The chat app's `roomcast.v1` dialect and the library's room streams behind it, through the real binary:
//! every event and error code; offsets, epochs and recovery with `since`; idempotent publishing by `id`;
//! history surviving SIGTERM and kill -9 on the same `DATA_DIR` (and a new epoch once it is wiped);
//! trimming by size and by age; `HISTORY_RECOVERY_MAX`; presence and its events across two shards; and two
//! publishers on different shards seen in one order by every member.
//!
//! Clients are tungstenite's, asking for the subprotocol in the upgrade as a browser does with
//! `new WebSocket(url, "roomcast.v1")`. Nothing here sleeps: waits are for events, with a deadline.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::v1::Client;
use common::{connect, recv_text, scratch_dir, send_text, Launch, READ_TIMEOUT};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

/// The chat binary with history in `data`, on loopback, without rate limits (the tests publish in
/// bursts), plus `env`.
fn chat(data: &Path, env: &[(&str, &str)]) -> common::App {
    Launch::new()
        .test_network()
        .envs(&[
            ("DATA_DIR", data.to_str().unwrap()),
            ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ])
        .envs(env)
        .spawn()
}

fn texts(publications: &Value) -> Vec<String> {
    publications
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_owned())
        .collect()
}

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_json_dialect_numbers_messages_and_the_seed_dialect_is_unchanged() {
    let data = scratch_dir("history");
    let app = chat(&data, &[]);
    let mut alice = Client::connect(app.ws_addr);
    let joined = alice.join("lobby", None);
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["offset"], 0);
    assert_eq!(joined["recovered"], false);
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(joined["publications"], json!([]));

    // A seed client in the same room reads the seed's lines.
    let mut seed = connect(app.ws_addr);
    assert_eq!(recv_text(&mut seed), "welcome to Vix WebSocket chat");
    send_text(
        &mut seed,
        r#"{"type":"room.join","payload":{"room":"lobby"}}"#,
    );
    assert_eq!(recv_text(&mut seed), "joined room: lobby");
    send_text(&mut seed, "ping");
    assert_eq!(recv_text(&mut seed), "pong");

    let (message, ack) = alice.say("lobby", "hello", None);
    assert_eq!(message["offset"], 1);
    assert_eq!(message["epoch"], joined["epoch"]);
    assert_eq!(message["from"], alice.session.as_str());
    assert_eq!(message["room"], "lobby");
    assert!(message["ts"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(ack["offset"], 1);
    assert_eq!(ack["duplicate"], false);
    assert_eq!(recv_text(&mut seed), "room lobby: hello");

    // The seed client's message is a publication too: the JSON client sees it numbered.
    send_text(
        &mut seed,
        r#"{"type":"chat.message","payload":{"room":"lobby","text":"from the seed"}}"#,
    );
    assert_eq!(recv_text(&mut seed), "room lobby: from the seed");
    let event = alice.next();
    assert_eq!(event["type"], "chat.message");
    assert_eq!(event["payload"]["offset"], 2);

    // ping still answers pong in the JSON dialect; leave answers room.left.
    send_text(&mut alice.ws, "ping");
    assert_eq!(recv_text(&mut alice.ws), "pong");
    let reference = alice.request("room.leave", json!({ "room": "lobby" }));
    assert_eq!(alice.reply(&reference, "room.left")["room"], "lobby");
}

#[test]
fn every_refusal_has_its_code_and_the_session_lives_on() {
    let data = scratch_dir("history");
    let app = chat(&data, &[]);
    let mut c = Client::connect(app.ws_addr);
    assert_eq!(
        c.error_code("room.join", json!({ "room": "" })),
        "invalid_room"
    );
    assert_eq!(
        c.error_code("room.join", json!({ "room": "a\u{202e}b" })),
        "invalid_room"
    );
    assert_eq!(
        c.error_code("room.join", json!({ "room": 5 })),
        "invalid_payload"
    );
    assert_eq!(
        c.error_code(
            "room.join",
            json!({ "room": "r", "since": { "offset": "x" } })
        ),
        "invalid_payload"
    );
    assert_eq!(
        c.error_code("chat.message", json!({ "room": "r", "text": "hi" })),
        "not_member"
    );
    assert_eq!(
        c.error_code("room.presence", json!({ "room": "r" })),
        "not_member"
    );
    c.join("r", None);
    assert_eq!(
        c.error_code("chat.message", json!({ "room": "r", "text": "" })),
        "empty_text"
    );
    assert_eq!(
        c.error_code(
            "chat.message",
            json!({ "room": "r", "text": "x", "id": "" })
        ),
        "invalid_payload"
    );
    assert_eq!(c.error_code("typing.start", json!({})), "unknown_type");
    for i in 1..64 {
        c.join(&format!("r{i}"), None);
    }
    assert_eq!(
        c.error_code("room.join", json!({ "room": "one-too-many" })),
        "room_limit"
    );
    // Not an event at all, and malformed JSON: invalid_event, without a ref to echo.
    for bad in ["hello", "{\"type\":", "{\"type\":\"x\",\"ref\":3}"] {
        send_text(&mut c.ws, bad);
        let event = c.next();
        assert_eq!(event["type"], "error", "{bad}: {event}");
        assert_eq!(event["payload"]["code"], "invalid_event", "{bad}: {event}");
    }
    // Still alive and a member.
    let (message, _) = c.say("r", "still here", None);
    assert_eq!(message["offset"], 1);
}

#[test]
fn a_message_over_the_rate_limit_has_its_code() {
    let data = scratch_dir("history");
    let app = chat(
        &data,
        &[
            ("WEBSOCKET_RATE_LIMIT_MESSAGES", "1"),
            ("WEBSOCKET_RATE_LIMIT_BURST", "1"),
        ],
    );
    let mut c = Client::connect(app.ws_addr);
    c.request("room.presence", json!({ "room": "r" }));
    let second = c.request("room.presence", json!({ "room": "r" }));
    // The first is answered (not a member), the second refused before it is acted on; its ref says
    // which request to send again.
    assert_eq!(c.next()["payload"]["code"], "not_member");
    let refused = c.next();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"]["code"], "rate_limited");
    assert_eq!(refused["ref"], second.as_str());
}

#[test]
fn a_room_denied_by_the_token_has_its_code() {
    let data = scratch_dir("history");
    let secret = "an-auth-secret-of-at-least-32-bytes!!";
    let app = chat(&data, &[("AUTH_SECRET", secret)]);
    let (status, output) = Launch::new()
        .envs(&[("AUTH_SECRET", secret)])
        .args(["token", "--user", "ann", "--rooms", "general"])
        .run_to_exit();
    assert!(status.success(), "{output}");
    let token = output
        .lines()
        .find_map(|line| line.strip_prefix("stdout: "))
        .unwrap()
        .trim()
        .to_owned();
    let addr = app.ws_addr;
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = format!("ws://{addr}/?token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "roomcast.v1".parse().unwrap());
    let (ws, _) = tungstenite::client(request, stream).unwrap();
    let mut c = Client {
        ws,
        session: String::new(),
        next_ref: 0,
    };
    assert_eq!(c.next()["type"], "welcome");
    assert_eq!(
        c.error_code("room.join", json!({ "room": "secret" })),
        "room_denied"
    );
    let joined = c.join("general", None);
    assert_eq!(joined["room"], "general");
    let (message, _) = c.say("general", "hi", None);
    assert_eq!(
        message["from"], "ann",
        "an authenticated sender is its user"
    );
}

#[test]
fn a_member_who_comes_back_recovers_exactly_what_it_missed() {
    let data = scratch_dir("history");
    let app = chat(&data, &[]);
    let mut writer = Client::connect(app.ws_addr);
    let joined = writer.join("r", None);
    let epoch = joined["epoch"].clone();
    for i in 1..=5 {
        writer.say("r", &format!("m{i}"), None);
    }
    let mut reader = Client::connect(app.ws_addr);
    let back = reader.join("r", Some(&json!({ "offset": 2, "epoch": epoch })));
    assert_eq!(back["recovered"], true);
    assert_eq!(offsets(&back["publications"]), [3, 4, 5]);
    assert_eq!(back["offset"], 5);
    // Live messages follow the recovery without a gap.
    writer.say("r", "m6", None);
    let live = reader.next();
    assert_eq!(live["payload"]["offset"], 6, "{live}");
    // A join without since shows the room's history; another epoch is not recovered.
    let mut fresh = Client::connect(app.ws_addr);
    let shown = fresh.join("r", None);
    assert_eq!(
        texts(&shown["publications"]),
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );
    assert_eq!(shown["recovered"], false);
    let mut stale = Client::connect(app.ws_addr);
    let other = stale.join("r", Some(&json!({ "offset": 2, "epoch": "not-this-one" })));
    assert_eq!(other["recovered"], false);
    assert_eq!(other["offset"], 6);
    assert_eq!(other["epoch"], epoch);
}

#[test]
fn a_retried_id_is_acknowledged_with_its_first_offset_and_not_published_again() {
    let data = scratch_dir("history");
    let mut app = chat(&data, &[]);
    let mut c = Client::connect(app.ws_addr);
    c.join("r", None);
    let (_, first) = c.say("r", "once", Some("msg-1"));
    let reference = c.request(
        "chat.message",
        json!({ "room": "r", "text": "once", "id": "msg-1" }),
    );
    let ack = c.reply(&reference, "ack");
    assert_eq!(ack["offset"], first["offset"]);
    assert_eq!(ack["duplicate"], true);
    let (next, _) = c.say("r", "after", None);
    assert_eq!(next["offset"], 2, "nothing was published for the retry");
    // The id outlives a restart: it is in the stored history.
    drop(c);
    assert_eq!(app.terminate().code(), Some(0));
    let app = chat(&data, &[]);
    let mut c = Client::connect(app.ws_addr);
    c.join("r", None);
    let reference = c.request(
        "chat.message",
        json!({ "room": "r", "text": "once", "id": "msg-1" }),
    );
    let ack = c.reply(&reference, "ack");
    assert_eq!(
        (ack["offset"].as_u64(), ack["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
}

/// Publishes `count` numbered messages from one client while a reader receives them, stops the server
/// with `signal` after the reader has seen `stop_after`, restarts it on the same data, and checks that the
/// reader recovers every message after the last one it saw, in order, once.
fn survives(signal: libc::c_int) {
    let data = scratch_dir("history");
    let mut app = chat(&data, &[("SERVER_IO_THREADS", "2")]);
    let mut reader = Client::connect(app.ws_addr);
    let epoch = reader.join("r", None)["epoch"].clone();
    let mut writer = Client::connect(app.ws_addr);
    writer.join("r", None);
    // The writer does not wait for acks: messages are in flight when the server goes down.
    for i in 1..=200 {
        let payload = json!({ "room": "r", "text": format!("m{i}"), "id": format!("w-{i}") });
        writer.request("chat.message", payload);
    }
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let event = reader.next();
        if event["type"] == "chat.message" {
            seen.push(event["payload"]["offset"].as_u64().unwrap());
        }
    }
    app.signal(signal);
    // Whatever else reaches the reader before the connection drops counts as seen.
    while let Ok(text) = common::try_recv_text(&mut reader.ws) {
        let event: Value = serde_json::from_str(&text).unwrap();
        if event["type"] == "chat.message" {
            seen.push(event["payload"]["offset"].as_u64().unwrap());
        }
    }
    let _ = app.wait_exit();
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "in order, no gap"
    );
    let last = *seen.last().unwrap();

    let app = chat(&data, &[("SERVER_IO_THREADS", "2")]);
    let mut reader = Client::connect(app.ws_addr);
    let back = reader.join("r", Some(&json!({ "offset": last, "epoch": epoch })));
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(back["epoch"], epoch);
    let recovered = offsets(&back["publications"]);
    let top = back["offset"].as_u64().unwrap();
    assert_eq!(
        recovered,
        (last + 1..=top).collect::<Vec<_>>(),
        "contiguous"
    );
    // Every message the server took before it stopped is in order in the stream: the texts follow the
    // writer's order, each once.
    let all = reader.join("r", Some(&json!({ "offset": 0, "epoch": epoch })));
    let stored = texts(&all["publications"]);
    let numbers: Vec<u64> = stored.iter().map(|t| t[1..].parse().unwrap()).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    // The writer resends everything by id after the restart: what was stored is acknowledged as a
    // duplicate, the rest is published once, and the stream ends up with each message exactly once.
    let mut writer = Client::connect(app.ws_addr);
    writer.join("r", None);
    for i in 1..=200u64 {
        let payload = json!({ "room": "r", "text": format!("m{i}"), "id": format!("w-{i}") });
        let reference = writer.request("chat.message", payload);
        loop {
            let event = writer.next();
            if event["type"] == "ack" {
                assert_eq!(event["ref"], reference.as_str());
                assert_eq!(event["payload"]["duplicate"], i <= top, "{event}");
                break;
            }
        }
    }
    let mut check = Client::connect(app.ws_addr);
    let everything = check.join("r", Some(&json!({ "offset": 0, "epoch": epoch })));
    // All 200 (under HISTORY_RECOVERY_MAX) come back, each once, in order.
    let numbers: Vec<u64> = texts(&everything["publications"])
        .iter()
        .map(|t| t[1..].parse().unwrap())
        .collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
}

#[test]
fn history_survives_sigterm_mid_stream() {
    survives(libc::SIGTERM);
}

#[test]
fn history_survives_kill_9_mid_stream() {
    survives(libc::SIGKILL);
}

#[test]
fn a_wiped_data_dir_is_a_new_epoch() {
    let data = scratch_dir("history");
    let mut app = chat(&data, &[]);
    let mut c = Client::connect(app.ws_addr);
    let epoch = c.join("r", None)["epoch"].clone();
    c.say("r", "before", None);
    drop(c);
    assert_eq!(app.terminate().code(), Some(0));
    std::fs::remove_dir_all(&data).unwrap();
    let app = chat(&data, &[]);
    let mut c = Client::connect(app.ws_addr);
    let back = c.join("r", Some(&json!({ "offset": 1, "epoch": epoch })));
    assert_eq!(back["recovered"], false);
    assert_ne!(back["epoch"], epoch);
    assert_eq!(back["offset"], 0);
    assert_eq!(back["publications"], json!([]));
}

#[test]
fn history_is_trimmed_by_size_and_recovery_is_capped() {
    let data = scratch_dir("history");
    let app = chat(
        &data,
        &[("HISTORY_SIZE", "5"), ("HISTORY_RECOVERY_MAX", "3")],
    );
    let mut c = Client::connect(app.ws_addr);
    let epoch = c.join("r", None)["epoch"].clone();
    for i in 1..=8 {
        c.say("r", &format!("m{i}"), None);
    }
    let mut other = Client::connect(app.ws_addr);
    // The newest HISTORY_RECOVERY_MAX of the 5 kept.
    let shown = other.join("r", None);
    assert_eq!(offsets(&shown["publications"]), [6, 7, 8]);
    // Three missed: recovered.
    let back = other.join("r", Some(&json!({ "offset": 5, "epoch": epoch })));
    assert_eq!(
        (back["recovered"].as_bool(), offsets(&back["publications"])),
        (Some(true), vec![6, 7, 8])
    );
    // Four missed: more than HISTORY_RECOVERY_MAX.
    let back = other.join("r", Some(&json!({ "offset": 4, "epoch": epoch })));
    assert_eq!(back["recovered"], false);
    // After offset 1 was trimmed away: not recoverable however many that is.
    let app2 = chat(&scratch_dir("history"), &[("HISTORY_SIZE", "2")]);
    let mut c = Client::connect(app2.ws_addr);
    let epoch = c.join("r", None)["epoch"].clone();
    for i in 1..=4 {
        c.say("r", &format!("m{i}"), None);
    }
    let back = c.join("r", Some(&json!({ "offset": 1, "epoch": epoch })));
    assert_eq!(back["recovered"], false);
    assert_eq!(offsets(&back["publications"]), [3, 4]);
    drop(app);
}

#[test]
fn a_room_pushed_out_of_memory_is_read_back_for_a_join() {
    let data = scratch_dir("history");
    // One shard with 1 MB for history in memory; 40 rooms of 40 messages of 1 KB push the first out.
    let app = chat(
        &data,
        &[("HISTORY_MEMORY_MB", "1"), ("SERVER_IO_THREADS", "1")],
    );
    let mut c = Client::connect(app.ws_addr);
    let epoch = c.join("first", None)["epoch"].clone();
    for i in 1..=5 {
        c.say("first", &format!("m{i}"), None);
    }
    let filler = "x".repeat(1024);
    for room in 0..40 {
        let name = format!("filler-{room}");
        c.join(&name, None);
        for _ in 0..40 {
            c.say(&name, &filler, None);
        }
    }
    let mut back = Client::connect(app.ws_addr);
    let recovered = back.join("first", Some(&json!({ "offset": 2, "epoch": epoch })));
    assert_eq!(recovered["recovered"], true, "{recovered}");
    assert_eq!(texts(&recovered["publications"]), ["m3", "m4", "m5"]);
    let mut fresh = Client::connect(app.ws_addr);
    let shown = fresh.join("first", None);
    assert_eq!(
        texts(&shown["publications"]),
        ["m1", "m2", "m3", "m4", "m5"]
    );
    // Publishing to a room whose publications left memory goes on from its offset.
    let (message, _) = c.say("first", "m6", None);
    assert_eq!(message["offset"], 6);
    assert_eq!(message["epoch"], epoch);
}

#[test]
fn history_is_trimmed_by_age() {
    let data = scratch_dir("history");
    let app = chat(&data, &[("HISTORY_TTL_SEC", "1")]);
    let mut c = Client::connect(app.ws_addr);
    c.join("r", None);
    c.say("r", "short-lived", None);
    let mut watcher = Client::connect(app.ws_addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = watcher.join("r", None);
        if shown["publications"] == json!([]) {
            // Gone from history, but the stream goes on where it was.
            assert_eq!(shown["offset"], 1);
            break;
        }
        assert_eq!(texts(&shown["publications"]), ["short-lived"]);
        assert!(
            Instant::now() < deadline,
            "still kept after the TTL: {shown}"
        );
        // Block on the next frame the server sends (a ping at most a second away would do, but any
        // event is fine): this paces the polling without sleeping.
        let reference = watcher.request("room.presence", json!({ "room": "r" }));
        watcher.reply(&reference, "room.presence");
    }
    drop(app);
}

/// Clients connected until there are `per_shard` on each of two shards.
fn on_both_shards(addr: SocketAddr, per_shard: usize) -> Vec<Client> {
    let mut chosen: Vec<Client> = Vec::new();
    for _ in 0..64 {
        let c = Client::connect(addr);
        if chosen.iter().filter(|o| o.shard() == c.shard()).count() < per_shard {
            chosen.push(c);
        }
        if chosen.len() == 2 * per_shard {
            return chosen;
        }
    }
    panic!("64 connections did not land {per_shard} on each of 2 shards");
}

#[test]
fn presence_and_its_events_span_shards() {
    let data = scratch_dir("history");
    let app = chat(
        &data,
        &[("SERVER_IO_THREADS", "2"), ("PRESENCE_EVENTS", "true")],
    );
    let mut clients = on_both_shards(app.ws_addr, 2);
    let mut expected = BTreeSet::new();
    for i in 0..clients.len() {
        clients[i].join("p", None);
        expected.insert(clients[i].session.clone());
        // Every member already in the room hears of the newcomer.
        let newcomer = clients[i].session.clone();
        for earlier in clients.iter_mut().take(i) {
            let event = earlier.next();
            assert_eq!(event["type"], "room.member_joined", "{event}");
            assert_eq!(event["payload"]["session"], newcomer.as_str());
        }
    }
    for c in clients.iter_mut() {
        let reference = c.request("room.presence", json!({ "room": "p" }));
        let presence = c.reply(&reference, "room.presence");
        assert_eq!(presence["count"], 4);
        let members: BTreeSet<String> = presence["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["session"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(members, expected);
    }
    let leaving = clients.remove(0);
    let gone = leaving.session.clone();
    drop(leaving);
    for c in clients.iter_mut() {
        let event = c.next();
        assert_eq!(event["type"], "room.member_left", "{event}");
        assert_eq!(event["payload"]["session"], gone.as_str());
        let reference = c.request("room.presence", json!({ "room": "p" }));
        assert_eq!(c.reply(&reference, "room.presence")["count"], 3);
    }
}

#[test]
fn publishers_on_two_shards_are_seen_in_one_order_with_contiguous_offsets() {
    let data = scratch_dir("history");
    let app = chat(&data, &[("SERVER_IO_THREADS", "2")]);
    let mut clients = on_both_shards(app.ws_addr, 2);
    for c in clients.iter_mut() {
        c.join("o", None);
    }
    const EACH: usize = 100;
    // One publisher per shard, sending without waiting.
    for (n, c) in clients.iter_mut().step_by(2).enumerate() {
        for i in 0..EACH {
            c.request(
                "chat.message",
                json!({ "room": "o", "text": format!("p{n}-{i}") }),
            );
        }
    }
    let mut orders = Vec::new();
    for c in clients.iter_mut() {
        let mut order = Vec::new();
        while order.len() < 2 * EACH {
            let event = c.next();
            if event["type"] == "chat.message" {
                let p = &event["payload"];
                order.push((
                    p["offset"].as_u64().unwrap(),
                    p["text"].as_str().unwrap().to_owned(),
                ));
            }
        }
        let numbers: Vec<u64> = order.iter().map(|(o, _)| *o).collect();
        assert_eq!(numbers, (1..=2 * EACH as u64).collect::<Vec<_>>());
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every member sees one order"
    );
}
