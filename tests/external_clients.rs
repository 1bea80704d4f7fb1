//! Real clients against the real binary: each script under `tests/clients/` (Python `websockets`, Node `ws`,
//! headless Chromium through playwright-core, and the seed's websocat session) is run as a subprocess
//! against a freshly started server and must exit 0. Their output is shown when one fails.
//!
//! The tools are installed by `tests/run`; run that once before `cargo test` if one is missing here.

mod common;

use std::time::Duration;

use common::{run_client, spawn_app};

/// Runs `program tests/clients/<script> <url>` and fails the test, with the script's and the server's
/// output, unless it exits 0.
fn client_passes(program: &str, script: &str, url_of: fn(&common::App) -> String, limit: Duration) {
    let app = spawn_app(&[]);
    let script_path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let url = url_of(&app);
    let (status, output) = run_client(program, &[&script_path, &url], limit);
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
    client_passes(
        "node",
        "two_tabs.mjs",
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
