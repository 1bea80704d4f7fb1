//! Echoes every text and binary message back to its sender: the server conformance suites (Autobahn) and
//! peers' benchmarks run against.
//!
//! Run it with the same `.env` as the chat app (or `--env-file PATH`), e.g.
//! `WEBSOCKET_HOST=127.0.0.1 WEBSOCKET_PORT=9001 cargo run --release --example echo`.
//! It uses the same shards, codec and limits as the chat app, permessage-deflate included (negotiated when
//! the client offers it; `WEBSOCKET_ENABLE_DEFLATE=false` turns it off); only the callbacks differ.
//! Whether an echo goes out compressed depends on the session (it negotiated deflate and did not limit
//! the server's window) and the message (long enough, and smaller compressed), not on how it arrived.

mod support;

use std::process::ExitCode;

use roomcast::Server;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let config = match support::start("echo") {
        Ok(config) => config,
        Err(code) => return code,
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
