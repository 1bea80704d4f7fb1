//! Start-up configuration, seen from outside: a bad `.env` value, whether it comes from `./.env`, from
//! `--env-file PATH` or from the environment, stops the binary with exit code 2 and one stderr line naming
//! the key and the value; a missing `.env` is not an error (defaults, and a log line saying so); the
//! environment overrides the file; `--env-file` is really read; and a second instance on ports another
//! process already listens on exits 1 naming the port and the key to change, leaving the first one alone.

mod common;

use common::{connect, recv_text, scratch_dir, write_file, Launch};

/// The refusals the contract names, as (key, value).
const BAD_VALUES: [(&str, &str); 4] = [
    ("WEBSOCKET_PORT", "abc"),
    ("WEBSOCKET_PORT", "70000"),
    ("WEBSOCKET_MAX_MESSAGE_SIZE", "0"),
    ("WEBSOCKET_ENABLE_DEFLATE", "maybe"),
];

/// An env file that would otherwise start cleanly on loopback, with `key=value` added.
fn env_file_with(key: &str, value: &str) -> String {
    format!(
        "WEBSOCKET_HOST=127.0.0.1\nSERVER_HOST=127.0.0.1\nSERVER_PORT=0\n{}{key}={value}\n",
        if key == "WEBSOCKET_PORT" {
            ""
        } else {
            "WEBSOCKET_PORT=0\n"
        }
    )
}

/// Exit code 2, and exactly one non-empty stderr line, which names the key and the value.
fn assert_refused(how: &str, key: &str, value: &str, launch: Launch) {
    let (status, stderr) = launch.run_to_exit();
    assert_eq!(
        status.code(),
        Some(2),
        "{how}: {key}={value} should exit with code 2, got {status}; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{how}: {key}={value} should print exactly one line; stderr:\n{stderr}"
    );
    assert!(
        lines[0].contains(key) && lines[0].contains(value),
        "{how}: the line should name {key} and {value:?}: {:?}",
        lines[0]
    );
}

#[test]
fn bad_value_in_dot_env_exits_2_naming_key_and_value() {
    for (key, value) in BAD_VALUES {
        let dir = scratch_dir("bad-dotenv");
        write_file(&dir, ".env", &env_file_with(key, value));
        assert_refused("./.env", key, value, Launch::new().current_dir(&dir));
    }
}

#[test]
fn bad_value_in_env_file_argument_exits_2_naming_key_and_value() {
    for (key, value) in BAD_VALUES {
        let dir = scratch_dir("bad-env-file");
        let path = write_file(&dir, "custom.env", &env_file_with(key, value));
        assert_refused(
            "--env-file",
            key,
            value,
            Launch::new().arg("--env-file").arg(&path),
        );
    }
}

#[test]
fn bad_value_in_environment_exits_2_naming_key_and_value() {
    for (key, value) in BAD_VALUES {
        let launch = Launch::new().test_network().envs(&[(key, value)]);
        assert_refused("environment", key, value, launch);
    }
}

#[test]
fn missing_dot_env_starts_with_defaults_and_says_so() {
    // The scratch working directory has no .env; only the listeners are moved off the default ports,
    // through the environment, so the test cannot collide with anything on 8080/9090.
    let app = Launch::new().test_network().spawn();
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), "welcome to Vix WebSocket chat");
    let lines = app.output.lines();
    assert!(
        lines.iter().any(|l| {
            let l = l.to_lowercase();
            l.contains(".env") && l.contains("default")
        }),
        "expected a log line saying no .env was found and defaults apply; output:\n{}",
        lines.join("\n")
    );
}

#[test]
fn environment_overrides_the_env_file() {
    let dir = scratch_dir("override");
    write_file(&dir, ".env", &env_file_with("WEBSOCKET_PORT", "abc"));
    // The file's bad port never gets parsed because the environment's port wins.
    let app = Launch::new()
        .current_dir(&dir)
        .envs(&[("WEBSOCKET_PORT", "0")])
        .spawn();
    assert!(app.ws_addr.ip().is_loopback(), "{}", app.ws_addr);
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), "welcome to Vix WebSocket chat");
}

#[test]
fn env_file_argument_is_read() {
    // Only the file says loopback and port 0; were it ignored, the defaults (0.0.0.0:9090) would show.
    let dir = scratch_dir("env-file");
    let path = write_file(
        &dir,
        "roomcast.env",
        "WEBSOCKET_HOST=127.0.0.1\nWEBSOCKET_PORT=0\nSERVER_HOST=127.0.0.1\nSERVER_PORT=0\n",
    );
    let app = Launch::new().arg("--env-file").arg(&path).spawn();
    assert!(app.ws_addr.ip().is_loopback(), "{}", app.ws_addr);
    assert!(app.http_addr.ip().is_loopback(), "{}", app.http_addr);
    assert_ne!(app.ws_addr.port(), 9090);
    assert_ne!(app.http_addr.port(), 8080);
    let mut ws = connect(app.ws_addr);
    assert_eq!(recv_text(&mut ws), "welcome to Vix WebSocket chat");
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_second_instance_on_the_same_ports_is_refused_naming_the_port_and_the_fix() {
    let (ws_port, http_port) = (free_port(), free_port());
    let (ws, http) = (ws_port.to_string(), http_port.to_string());
    let ports = |ws: &str, http: &str| {
        Launch::new()
            .test_network()
            .envs(&[("WEBSOCKET_PORT", ws), ("SERVER_PORT", http)])
    };
    let first = ports(&ws, &http).spawn();
    let mut client = connect(first.ws_addr);
    assert_eq!(recv_text(&mut client), "welcome to Vix WebSocket chat");

    let (status, stderr) = ports(&ws, &http).run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("websocket port {ws_port}")),
        "{stderr}"
    );
    assert!(stderr.contains("WEBSOCKET_PORT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let other_ws = free_port().to_string();
    let (status, stderr) = ports(&other_ws, &http).run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("http port {http_port}")),
        "{stderr}"
    );
    assert!(stderr.contains("SERVER_PORT"), "{stderr}");

    // The first instance never noticed.
    client
        .send(tungstenite::Message::text("ping"))
        .expect("the first instance still serves");
    assert_eq!(recv_text(&mut client), "pong");
}
