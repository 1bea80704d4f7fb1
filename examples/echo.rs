//! Echoes every text and binary message back to its sender: the server conformance suites (Autobahn) and
//! peers' benchmarks run against.
//!
//! Run it with the same `.env` as the chat app (or `--env-file PATH`), e.g.
//! `WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=9001 cargo run --release --example echo`.
//! It uses the same shards, codec and limits as the chat app, permessage-deflate included (negotiated when
//! the client offers it; `WEBSOCKET_ENABLE_DEFLATE=false` turns it off); only the callbacks differ.
//! Whether an echo goes out compressed depends on the session (it negotiated deflate and did not limit
//! the server's window) and the message (long enough, and smaller compressed), not on how it arrived.

use std::process::ExitCode;

use roomcast::{Config, Server};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let env_file = match (std::env::args().nth(1).as_deref(), std::env::args().nth(2)) {
        (Some("--env-file"), Some(path)) => Some(std::path::PathBuf::from(path)),
        _ => None,
    };
    let config = match Config::load(env_file.as_deref()) {
        Ok((config, _)) => config,
        Err(e) => {
            eprintln!("echo: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers install");
    let running = match Server::new(config)
        .on_message(|session, text| session.send_text(text))
        .on_binary(|session, data| session.send_binary(data))
        .start()
    {
        Ok(running) => running,
        Err(e) => {
            eprintln!("echo: {e}");
            return ExitCode::from(1);
        }
    };
    signals.forever().next();
    running.stop();
    ExitCode::SUCCESS
}
