//! The chat app: `cargo run --release` serves the page on `SERVER_PORT` and the chat on `WEBSOCKET_PORT`,
//! configured from `.env` in the working directory (or `--env-file PATH`).
//!
//! Exit codes: 0 after a clean stop (SIGINT or SIGTERM), 2 for a configuration error (one line naming the
//! key and the value), 1 when the server cannot start (the message names the cause and the fix).
//!
//! `roomcast token --user U --rooms 'general,team-*' --ttl 3600 [--env-file PATH]` prints a token for the
//! chat app, signed with the `AUTH_SECRET` of the same configuration.

mod app;

/// jemalloc rather than glibc's malloc, because glibc keeps what a spike took: after 8,000 clients each
/// parked an unfinished 60 KB message and left, the server stayed at 178 MB of RSS under glibc (40 MB
/// before), and came back to 43 MB under jemalloc (41 MB before). mimalloc returned it only once its
/// threads allocated again (214 MB five seconds after, 71 MB after more traffic) and started 25 MB
/// higher. Throughput was the same under all three (saturate, 100 B: 1.79-1.94 M deliveries per server
/// CPU-second with glibc, 1.74-1.94 M with jemalloc).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread returns freed pages after about a second,
/// even while the shards that freed them are idle.
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_OPTIONS: &[u8] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use roomcast::Config;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const USAGE: &str = "usage: roomcast [--env-file PATH]\n       roomcast token --user USER --rooms \
    'PATTERN,...' [--ttl SECONDS] [--env-file PATH]";

fn main() -> ExitCode {
    let command = match Command::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("roomcast: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve { env_file } => serve(env_file),
        Command::Token {
            env_file,
            user,
            rooms,
            ttl,
        } => print_token(env_file, &user, &rooms, ttl),
    }
}

/// What the command line asks for.
enum Command {
    /// Run the chat app.
    Serve { env_file: Option<PathBuf> },
    /// Print a token.
    Token {
        env_file: Option<PathBuf>,
        user: String,
        rooms: Vec<String>,
        ttl: Duration,
    },
}

impl Command {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
        let mut first = args.next();
        let token = first.as_deref() == Some("token");
        if token {
            first = args.next();
        }
        let (mut env_file, mut user, mut rooms, mut ttl) = (None, None, None, 3600);
        let mut next = first;
        while let Some(flag) = next {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--env-file" => env_file = Some(PathBuf::from(value()?)),
                "--user" if token => user = Some(value()?),
                "--rooms" if token => rooms = Some(value()?),
                "--ttl" if token => {
                    let v = value()?;
                    ttl = v.parse().ok().filter(|&n| n > 0).ok_or(format!(
                        "--ttl {v}: expected a whole number of seconds, at least 1"
                    ))?;
                }
                other => return Err(format!("unexpected argument {other}")),
            }
            next = args.next();
        }
        if !token {
            return Ok(Command::Serve { env_file });
        }
        let user = user.filter(|u| !u.is_empty()).ok_or("token needs --user")?;
        let rooms: Vec<String> = rooms
            .ok_or("token needs --rooms")?
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        Ok(Command::Token {
            env_file,
            user,
            rooms,
            ttl: Duration::from_secs(ttl),
        })
    }
}

/// Prints a token signed with the configuration's `AUTH_SECRET`.
fn print_token(env_file: Option<PathBuf>, user: &str, rooms: &[String], ttl: Duration) -> ExitCode {
    let config = match Config::load(env_file.as_deref()) {
        Ok((config, _)) => config,
        Err(e) => {
            eprintln!("roomcast: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(secret) = config.auth.secret else {
        eprintln!("roomcast: AUTH_SECRET is not set (in .env or the environment): there is nothing to sign a token with");
        return ExitCode::from(2);
    };
    println!(
        "{}",
        app::token::Tokens::new(&secret).issue(user, rooms, ttl)
    );
    ExitCode::SUCCESS
}

/// Runs the chat app until SIGINT or SIGTERM.
fn serve(env_file: Option<PathBuf>) -> ExitCode {
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

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The history store's engine reports each file it opens at info: its warnings are what matter.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
