//! The binary's command line and what it says about its configuration: `--help` lists every flag and every
//! `.env` key with its default (from `roomcast::KEYS`, the table the configuration reads), `--version`,
//! `--check-config` (each key's effective value and origin, secrets hidden, exit 0; a bad value exit 2),
//! a misspelt key in the env file warned about with a guess, the URL to open logged at start-up,
//! `LOG_FORMAT=json` lines that parse, and `LOG_STATS_INTERVAL_SEC` summary lines.

mod common;

use std::time::Duration;

use common::{scratch_dir, spawn_app, write_file, Launch};
use serde_json::Value;

#[test]
fn help_lists_every_flag_and_every_key_with_its_default() {
    let (status, output) = Launch::new().arg("--help").run_to_exit();
    assert!(status.success(), "{output}");
    for flag in ["--env-file", "--check-config", "--version", "token"] {
        assert!(output.contains(flag), "{flag} in:\n{output}");
    }
    for key in roomcast::KEYS {
        let default = key
            .default
            .map_or("unset".to_owned(), |d| format!("default {d}"));
        assert!(
            output.contains(&format!("{} ({default})", key.name)),
            "{} in:\n{output}",
            key.name
        );
    }
    let (status, output) = Launch::new().arg("--version").run_to_exit();
    assert!(status.success());
    assert!(
        output.contains(&format!("roomcast {}", env!("CARGO_PKG_VERSION"))),
        "{output}"
    );
    let (status, output) = Launch::new().arg("--no-such-flag").run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("--no-such-flag"), "{output}");
}

#[test]
fn check_config_prints_every_effective_value_and_its_origin() {
    let dir = scratch_dir("check-config");
    let env = write_file(
        &dir,
        "chat.env",
        "WEBSOCKET_PORT=19191\nWEBSCOKET_IDLE_TIMEOUT=5\nAPI_KEY=a-key-that-is-long-enough\nDATABASE_URL=postgres://x\n",
    );
    let (status, output) = Launch::new()
        .arg("--check-config")
        .arg("--env-file")
        .arg(&env)
        .envs(&[("SERVER_PORT", "18181")])
        .run_to_exit();
    assert!(status.success(), "{output}");
    for line in [
        "WEBSOCKET_PORT=19191  # env file",
        "SERVER_PORT=18181  # environment",
        "HISTORY_SIZE=1000  # default",
        "API_KEY=<set>  # env file",
        "# AUTH_SECRET is unset  # default",
        "WEBSCOKET_IDLE_TIMEOUT in the env file is not a roomcast key (did you mean WEBSOCKET_IDLE_TIMEOUT?)",
        "# the configuration is valid",
    ] {
        assert!(output.contains(line), "{line:?} in:\n{output}");
    }
    assert!(
        !output.contains("a-key-that-is-long-enough"),
        "a secret printed:\n{output}"
    );
    assert!(
        !output.contains("DATABASE_URL"),
        "the application's own key is none of ours:\n{output}"
    );
    for key in roomcast::KEYS {
        assert!(output.contains(key.name), "{} in:\n{output}", key.name);
    }

    let (status, output) = Launch::new()
        .arg("--check-config")
        .envs(&[("WEBSOCKET_PORT", "ninety")])
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("WEBSOCKET_PORT") && output.contains("ninety"),
        "{output}"
    );
}

#[test]
fn start_up_warns_about_a_misspelt_key_and_says_where_to_point_the_browser() {
    let dir = scratch_dir("misspelt");
    let env = write_file(&dir, ".env", "WEBSCOKET_PORT=9999\n");
    let app = Launch::new()
        .test_network()
        .arg("--env-file")
        .arg(&env)
        .spawn();
    let warning =
        "WEBSCOKET_PORT in the env file is not a roomcast key (did you mean WEBSOCKET_PORT?)";
    assert!(
        app.output.wait_for(warning, Duration::from_secs(10)),
        "{}",
        app.output.text()
    );
    let url = format!("open http://{}/ in a browser", app.http_addr);
    assert!(
        app.output.wait_for(&url, Duration::from_secs(10)),
        "{}",
        app.output.text()
    );
}

#[test]
fn a_low_descriptor_limit_is_warned_about_at_start_up() {
    let app = Launch::new().test_network().descriptor_limit(1024).spawn();
    let warning = "the descriptor limit (ulimit -n) is 1024: at most 896 sessions fit";
    assert!(app.output.text().contains(warning), "{}", app.output.text());
}

#[test]
fn json_logs_are_one_object_per_line_and_summaries_come_at_their_interval() {
    let app = spawn_app(&[("LOG_FORMAT", "json"), ("LOG_STATS_INTERVAL_SEC", "1")]);
    assert!(
        app.output.wait_for("\"stats\"", Duration::from_secs(10)),
        "{}",
        app.output.text()
    );
    let lines = app.output.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            object["level"].is_string() && object["fields"].is_object(),
            "{line}"
        );
    }
    let stats = lines.iter().find(|l| l.contains("\"stats\"")).unwrap();
    let stats: Value = serde_json::from_str(stats).unwrap();
    for field in [
        "connections",
        "messages_in_per_sec",
        "messages_out_per_sec",
        "queued_bytes",
        "max_lag_ms",
    ] {
        assert!(!stats["fields"][field].is_null(), "{field} in {stats}");
    }
    let (status, output) = Launch::new()
        .test_network()
        .envs(&[("LOG_FORMAT", "xml")])
        .run_to_exit();
    assert_eq!(status.code(), Some(2));
    assert!(
        output.contains("LOG_FORMAT") && output.contains("xml"),
        "{output}"
    );
}
