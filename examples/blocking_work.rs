//! Slow work off the shards, as the seed advises ("for expensive work, dispatch to another service, queue,
//! job system, or runtime task"): a callback never blocks its shard (every session of that core would
//! wait), so it hands the work to a pool of ordinary threads and returns at once; a worker answers the
//! session that asked, by id, through the thread-safe `ServerHandle`.
//!
//! Send `{"type":"work","payload":{"input":"..."}}`: the reply `working: ...` comes at once, `done: ...`
//! when a worker has finished (here a blocking call of half a second stands for a database query or a
//! call to another service). Meanwhile the shard serves every other session as usual: try `ping` from a
//! second client.
//!
//! Run it with the same `.env` as the chat app (or `--env-file PATH`), e.g.
//! `WEBSOCKET_PORT=9001 cargo run --release --example blocking_work`.

mod support;

use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use roomcast::{Server, SessionId};
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Threads doing the slow work; they block, the shards never do.
const WORKERS: usize = 4;

/// One piece of work: who asked, and what for.
struct Job {
    session: SessionId,
    input: String,
}

/// The slow part: a blocking call, then a result.
fn work(input: &str) -> String {
    thread::sleep(Duration::from_millis(500));
    input.chars().rev().collect()
}

fn main() -> ExitCode {
    let config = match support::start("blocking_work") {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Jobs wait here until a worker is free; the workers start once the server (and its handle) exists.
    let (jobs, queued) = crossbeam_channel::unbounded::<Job>();
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers install");
    let server = Server::new(config)
        .on_open(|session| {
            session.send_text("send {\"type\":\"work\",\"payload\":{\"input\":\"...\"}}")
        })
        .on_message(|session, text| {
            if text.trim() == "ping" {
                session.send_text("pong");
            }
        })
        .on_typed_message(move |session, kind, payload| {
            if kind != "work" {
                session.send_text(&format!("unknown message type: {kind}"));
                return;
            }
            let input = match payload.get("input") {
                Some(Value::String(input)) => input.clone(),
                _ => return session.send_text("invalid payload: `input` must be a string"),
            };
            session.send_text(&format!("working: {input}"));
            let job = Job {
                session: session.id(),
                input,
            };
            // Queueing is all the shard does; the channel is unbounded, so this never waits.
            let _ = jobs.send(job);
        });
    let running = match server.start() {
        Ok(running) => running,
        Err(e) => {
            eprintln!("blocking_work: {e}");
            return ExitCode::from(1);
        }
    };
    for _ in 0..WORKERS {
        let queued = queued.clone();
        let handle = running.handle();
        thread::spawn(move || {
            for job in queued {
                let result = work(&job.input);
                // Ignored if the session has gone meanwhile.
                handle.send_text_to_session(job.session, &format!("done: {result}"));
            }
        });
    }
    signals.forever().next();
    running.stop();
    ExitCode::SUCCESS
}
