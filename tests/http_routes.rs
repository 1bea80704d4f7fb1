//! The HTTP side as the chat page and an operator see it: `/api/health` answers the seed's JSON, `/` serves
//! `public/index.html`, and `/api/websocket` reports the port the WebSocket listener really bound (the page
//! connects there, so with `WEBSOCKET_PORT=0` it must not say 0).

mod common;

use common::{connect, http_get, public_dir, recv_text, spawn_app};

#[test]
fn health_answers_the_seed_json() {
    let app = spawn_app(&[]);
    let response = http_get(app.http_addr, "/api/health");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("health body {:?}: {e}", response.text()));
    assert_eq!(
        body,
        serde_json::json!({"ok": true, "service": "websocket-chat"})
    );
}

#[test]
fn root_serves_the_chat_page() {
    let app = spawn_app(&[]);
    let response = http_get(app.http_addr, "/");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = std::fs::read(public_dir().join("index.html")).unwrap();
    assert!(
        response.body == page,
        "GET / is not public/index.html:\n{}",
        response.text()
    );
}

#[test]
fn websocket_port_is_the_bound_one() {
    let app = spawn_app(&[]);
    let response = http_get(app.http_addr, "/api/websocket");
    assert_eq!(response.status, 200, "{response:?}");
    let body: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("/api/websocket body {:?}: {e}", response.text()));
    assert_eq!(
        body["port"].as_u64(),
        Some(u64::from(app.ws_addr.port())),
        "{body}"
    );
    // And that port really is the chat.
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), "welcome to Vix WebSocket chat");
}
