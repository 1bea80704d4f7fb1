//! Real clients against the real binary: each script under `tests/clients/` (Python `websockets`, Node `ws`,
//! headless Chromium through playwright-core, and the seed's websocat session) is run as a subprocess
//! against a freshly started server and must exit 0. Their output is shown when one fails.
//!
//! The permessage-deflate runs pass `--expect-extensions`: each client then checks the server's exact
//! `Sec-WebSocket-Extensions` answer and, where it can see the RSV1 bit (Python, Node), that its long
//! message arrived compressed exactly when deflate was negotiated.
//!
//! The tools are installed by `tests/run`; run that once before `cargo test` if one is missing here.

mod common;

use std::time::Duration;

use common::{run_client, spawn_app};

/// The server's answer to an acceptable permessage-deflate offer without `server_max_window_bits`.
const DEFLATE_ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Runs `program tests/clients/<script> <url>` and fails the test, with the script's and the server's
/// output, unless it exits 0.
fn client_passes(program: &str, script: &str, url_of: fn(&common::App) -> String, limit: Duration) {
    client_passes_with(program, script, &[], &[], url_of, limit);
}

/// [`client_passes`] against a server started with `env`, the script run as
/// `program tests/clients/<script> <url> <args>...`.
fn client_passes_with(
    program: &str,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    url_of: fn(&common::App) -> String,
    limit: Duration,
) {
    let app = spawn_app(env);
    let script_path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let url = url_of(&app);
    let mut all_args = vec![script_path.as_str(), url.as_str()];
    all_args.extend_from_slice(args);
    let (status, output) = run_client(program, &all_args, limit);
    match status {
        Some(status) if status.success() => println!("{output}"),
        Some(status) => panic!(
            "{script} {url} exited with {status}:\n{output}\n--- server output ---\n{}",
            app.output.text()
        ),
        None => panic!(
            "{script} {url} still running after {limit:?}, killed:\n{output}\n--- server output ---\n{}",
            app.output.text()
        ),
    }
}

#[test]
fn python_websockets_chat_flow() {
    client_passes(
        "python3",
        "chat_flow.py",
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn node_ws_chat_flow() {
    client_passes(
        "node",
        "chat_flow.mjs",
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn chromium_two_tabs_receive_the_broadcast() {
    let screenshot = common::target_dir().join("two_tabs.png");
    client_passes_with(
        "node",
        "two_tabs.mjs",
        &[screenshot.to_str().expect("a UTF-8 target path")],
        &[],
        |app| app.http_url(),
        Duration::from_secs(120),
    );
}

#[test]
fn chromium_sees_the_dashboard_chart_a_running_load() {
    let screenshot = common::target_dir().join("dashboard.png");
    client_passes_with(
        "node",
        "dashboard.mjs",
        &[screenshot.to_str().expect("a UTF-8 target path")],
        &[],
        |app| app.http_url(),
        Duration::from_secs(120),
    );
}

#[test]
fn websocat_seed_flow() {
    client_passes(
        "bash",
        "seed_flow.sh",
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn python_websockets_negotiates_permessage_deflate() {
    client_passes_with(
        "python3",
        "chat_flow.py",
        &[
            "--compression",
            "deflate",
            "--expect-extensions",
            DEFLATE_ANSWER,
        ],
        &[],
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn python_websockets_without_compression_gets_plain_messages() {
    client_passes_with(
        "python3",
        "chat_flow.py",
        &["--compression", "none", "--expect-extensions", "none"],
        &[],
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn python_websockets_offer_is_declined_with_deflate_disabled() {
    client_passes_with(
        "python3",
        "chat_flow.py",
        &["--compression", "deflate", "--expect-extensions", "none"],
        &[("WEBSOCKET_ENABLE_DEFLATE", "false")],
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn node_ws_negotiates_permessage_deflate() {
    client_passes_with(
        "node",
        "chat_flow.mjs",
        &[
            "--compression",
            "deflate",
            "--expect-extensions",
            DEFLATE_ANSWER,
        ],
        &[],
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn node_ws_without_per_message_deflate_gets_plain_messages() {
    client_passes_with(
        "node",
        "chat_flow.mjs",
        &["--compression", "none", "--expect-extensions", "none"],
        &[],
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn chromium_negotiates_permessage_deflate() {
    let screenshot = common::target_dir().join("two_tabs_deflate.png");
    let screenshot = screenshot.to_str().expect("a UTF-8 target path");
    // The URL comes first; the screenshot path (not the default, which the seed flow's test writes) and
    // the flag follow it.
    client_passes_with(
        "node",
        "two_tabs.mjs",
        &[screenshot, "--expect-extensions", DEFLATE_ANSWER],
        &[],
        |app| app.http_url(),
        Duration::from_secs(120),
    );
}

#[test]
fn python_websockets_speaks_roomcast_v1() {
    client_passes(
        "python3",
        "v1_flow.py",
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

#[test]
fn node_ws_speaks_roomcast_v1() {
    client_passes(
        "node",
        "v1_flow.mjs",
        |app| app.ws_url(),
        Duration::from_secs(60),
    );
}

/// Runs `node tests/clients/<script> <args>...` without a server of ours (the script starts what it
/// needs) and fails the test with its output unless it exits 0.
fn script_passes(script: &str, args: &[&str], limit: Duration) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all_args = vec![path.as_str()];
    all_args.extend_from_slice(args);
    let (status, output) = run_client("node", &all_args, limit);
    match status {
        Some(status) if status.success() => println!("{output}"),
        Some(status) => panic!("{script} exited with {status}:\n{output}"),
        None => panic!("{script} still running after {limit:?}, killed:\n{output}"),
    }
}

#[test]
fn chromium_pages_survive_server_restarts_without_losing_or_repeating_a_line() {
    // The script starts the binary itself, on fixed free ports, so that the pages reconnect to the same
    // address after it stops it (SIGTERM, then kill -9) and starts it again on the same DATA_DIR.
    let data = common::scratch_dir("restart-chat");
    script_passes(
        "restart_chat.mjs",
        &[
            env!("CARGO_BIN_EXE_roomcast"),
            data.join("data").to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
}

#[test]
fn the_browser_client_recovers_from_gaps_lost_acks_and_silent_peers() {
    script_passes("roomcast_client.mjs", &[], Duration::from_secs(60));
}
