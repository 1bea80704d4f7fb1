//! The server API for backends (`API_KEY`) of the chat binary, driven with `curl` and from Python's
//! standard library as a backend would: `POST /api/publish` reaches a room's members through the same
//! path as a member's message (its offset in the reply, the member seeing it once, an `id` retried
//! published once and kept apart from anonymous sessions' ids, binary as base64), `GET /api/rooms/{room}` counts and lists the members; a missing or
//! wrong key is 401, bad bodies are 400 with a code, and without `API_KEY` both answer 404.

mod common;

use std::process::Command;

use common::{connect, recv_text, send_text, spawn_app, App, Launch, NotText};
use serde_json::Value;

const KEY: &str = "a-test-api-key-0123456789";
const WELCOME: &str = "welcome to Vix WebSocket chat";

/// `curl` with `args` against the app's HTTP port; returns the status and the body.
fn curl(app: &App, args: &[&str], path: &str) -> (u16, String) {
    let url = format!("{}{path}", app.http_url());
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(&url)
        .output()
        .expect("curl (tests/run's machines have it)");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn publish(app: &App, body: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {KEY}");
    let (status, body) = curl(
        app,
        &["-X", "POST", "-H", &auth, "-d", body],
        "/api/publish",
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[test]
fn a_backend_publishes_into_a_room_and_reads_who_is_in_it() {
    let app = spawn_app(&[("API_KEY", KEY)]);
    let mut member = connect(app.ws_addr);
    assert_eq!(recv_text(&mut member), WELCOME);
    send_text(
        &mut member,
        r#"{"type":"room.join","payload":{"room":"news"}}"#,
    );
    assert_eq!(recv_text(&mut member), "joined room: news");

    let (status, ack) = publish(&app, r#"{"room":"news","text":"deploy finished"}"#);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["room"], "news");
    assert_eq!(ack["offset"], 1);
    assert_eq!(ack["duplicate"], false);
    assert!(ack["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(recv_text(&mut member), "room news: deploy finished");

    // A retry with the same id is acknowledged with the first offset and not published again.
    let with_id = r#"{"room":"news","text":"build 7 green","id":"build-7"}"#;
    let (_, first) = publish(&app, with_id);
    let (_, again) = publish(&app, with_id);
    assert_eq!(
        (first["offset"].clone(), first["duplicate"].clone()),
        (2.into(), false.into())
    );
    assert_eq!(
        (again["offset"].clone(), again["duplicate"].clone()),
        (2.into(), true.into())
    );
    assert_eq!(recv_text(&mut member), "room news: build 7 green");

    // From Python's standard library, as a backend written in it would.
    let python = format!(
        r#"
import json, urllib.request
request = urllib.request.Request("{}/api/publish", method="POST",
    data=json.dumps({{"room": "news", "text": "from python"}}).encode(),
    headers={{"Authorization": "Bearer {KEY}", "Content-Type": "application/json"}})
with urllib.request.urlopen(request, timeout=10) as response:
    print(json.load(response)["offset"])
"#,
        app.http_url()
    );
    let output = Command::new("python3")
        .args(["-c", &python])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3");
    assert_eq!(recv_text(&mut member), "room news: from python");

    // An anonymous session's ids are not the backend's: its `build-7` is a message of its own.
    send_text(
        &mut member,
        r#"{"type":"chat.message","payload":{"room":"news","text":"mine","id":"build-7"}}"#,
    );
    assert_eq!(recv_text(&mut member), "room news: mine");

    // Binary, as base64: delivered as a binary message, without an offset.
    let (status, sent) = publish(&app, r#"{"room":"news","binary":"AAEC/w=="}"#);
    assert_eq!((status, sent["bytes"].clone()), (200, 4.into()));
    match common::try_recv_text(&mut member) {
        Err(NotText::Binary(data)) => assert_eq!(data, [0, 1, 2, 255]),
        other => panic!("expected the binary message, got {other:?}"),
    }

    let auth = format!("Authorization: Bearer {KEY}");
    let (status, room) = curl(&app, &["-H", &auth], "/api/rooms/news");
    let room: Value = serde_json::from_str(&room).unwrap();
    assert_eq!(status, 200);
    assert_eq!(room["members"], 1);
    assert_eq!(room["presence"].as_array().unwrap().len(), 1);
    let (_, empty) = curl(&app, &["-H", &auth], "/api/rooms/nobody%20here");
    let empty: Value = serde_json::from_str(&empty).unwrap();
    assert_eq!(
        (empty["room"].clone(), empty["members"].clone()),
        ("nobody here".into(), 0.into())
    );
}

#[test]
fn the_api_refuses_what_is_wrong_and_says_why() {
    let app = spawn_app(&[("API_KEY", KEY)]);
    let body = r#"{"room":"news","text":"x"}"#;
    for auth in [
        None,
        Some("Authorization: Bearer wrong-key-wrong-key-123"),
        Some("Authorization: Basic eDp5"),
    ] {
        let mut args = vec!["-X", "POST", "-d", body, "-D", "-"];
        if let Some(auth) = auth {
            args.extend(["-H", auth]);
        }
        let (status, text) = curl(&app, &args, "/api/publish");
        assert_eq!(status, 401, "{auth:?}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
        assert!(text.contains(r#""error":"unauthorized""#), "{text}");
    }
    for (body, code) in [
        ("not json", "invalid_json"),
        (r#"{"room":"news"}"#, "invalid_json"),
        (
            r#"{"room":"news","text":"a","binary":"AA=="}"#,
            "invalid_json",
        ),
        (
            r#"{"room":"news","text":"a","colour":"red"}"#,
            "invalid_json",
        ),
        (r#"{"room":"","text":"a"}"#, "invalid_room"),
        (r#"{"room":"news","binary":"***"}"#, "invalid_binary"),
        (r#"{"room":"news","text":"a","id":""}"#, "invalid_id"),
    ] {
        let (status, answer) = publish(&app, body);
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
    }
    let auth = format!("Authorization: Bearer {KEY}");
    let (status, _) = curl(&app, &["-H", &auth], "/api/publish");
    assert_eq!(status, 405, "GET on the publish endpoint");
    let (status, _) = curl(
        &app,
        &["-X", "POST", "-H", &auth, "-d", "{}"],
        "/api/rooms/news",
    );
    assert_eq!(status, 405, "POST on a room");
    let huge = format!(r#"{{"room":"news","text":"{}"}}"#, "x".repeat(200_000));
    let file = common::write_file(&common::scratch_dir("api"), "huge.json", &huge);
    let from_file = format!("@{}", file.display());
    let args = ["-X", "POST", "-H", &auth, "--data-binary", &from_file];
    let (status, _) = curl(&app, &args, "/api/publish");
    assert_eq!(status, 413);
    // The session side is untouched by all of it.
    let mut member = connect(app.ws_addr);
    assert_eq!(recv_text(&mut member), WELCOME);
}

#[test]
fn without_an_api_key_the_api_does_not_exist_and_start_up_says_so() {
    let app = spawn_app(&[]);
    let (status, _) = curl(&app, &["-X", "POST", "-d", "{}"], "/api/publish");
    assert_eq!(status, 404);
    let (status, _) = curl(&app, &[], "/api/rooms/general");
    assert_eq!(status, 404);
    assert!(
        app.output.text().contains("API_KEY is not set"),
        "{}",
        app.output.text()
    );

    let (status, output) = Launch::new()
        .test_network()
        .envs(&[("API_KEY", "short")])
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("API_KEY") && output.contains("<5 bytes>"),
        "{output}"
    );
    assert!(!output.contains("short"), "the key is not echoed: {output}");
}
