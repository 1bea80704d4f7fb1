//! The chat app: `cargo run --release` serves the page on `SERVER_PORT` and the chat on `WEBSOCKET_PORT`,
//! configured from `.env` in the working directory (or `--env-file PATH`).
//!
//! Exit codes: 0 after a clean stop (SIGINT or SIGTERM), 2 for a configuration error (one line naming the
//! key and the value), 1 when the server cannot start (the message names the cause and the fix).

mod app;

use std::path::PathBuf;
use std::process::ExitCode;

use roomcast::Config;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let env_file = match env_file_argument() {
        Ok(path) => path,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (config, source) = match Config::load(env_file.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("roomcast: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // SERVER_BENCH_MODE silences per-connection lines in the library; start-up lines stay.
    init_logging();
    match &source {
        roomcast::ConfigSource::File(path) => {
            tracing::info!("configuration from {}", path.display())
        }
        roomcast::ConfigSource::Defaults(path) => {
            tracing::info!(
                "no env file at {}: using defaults and the environment",
                path.display()
            )
        }
    }
    if config.websocket.enable_deflate {
        tracing::info!("WEBSOCKET_ENABLE_DEFLATE=true: permessage-deflate is not implemented yet, frames go uncompressed");
    }
    // Register for signals before starting, so a signal during start-up is not lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("roomcast: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(app = %config.app.name, env = %config.app.env, "starting");
    let running = match app::chat_server(config).start() {
        Ok(running) => running,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("roomcast: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping: closing sessions with 1001");
    }
    running.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// `--env-file PATH`, the only argument.
fn env_file_argument() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => Ok(None),
        (Some("--env-file"), Some(path), None) => Ok(Some(PathBuf::from(path))),
        _ => Err("usage: roomcast [--env-file PATH]".to_owned()),
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
