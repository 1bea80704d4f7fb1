//! The chat app: `cargo run --release` serves the page on `SERVER_PORT` and the chat on `WEBSOCKET_PORT`,
//! configured from `.env` in the working directory (or `--env-file PATH`).
//!
//! Exit codes: 0 after a clean stop (SIGINT or SIGTERM), 2 for a configuration error (one line naming the
//! key and the value) or a command-line mistake, 1 when the server cannot start (the message names the
//! cause and the fix).
//!
//! `roomcast --help` lists every flag and every `.env` key with its default (from `config::KEYS`);
//! `--check-config` validates the configuration and prints each key's effective value and where it came
//! from. `roomcast token --user U --rooms 'general,team-*' --ttl 3600 [--env-file PATH]` prints a token for
//! the chat app, signed with the `AUTH_SECRET` of the same configuration.

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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use roomcast::{Config, ConfigSource, LoadedConfig, LogFormat, Origin, KEYS};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    // clap answers --help and --version itself (exit 0) and a mistake with usage (exit 2).
    let matches = command().get_matches();
    let env_file = matches.get_one::<PathBuf>("env-file").cloned();
    match matches.subcommand() {
        Some(("token", token)) => print_token(env_file.as_deref(), token),
        _ if matches.get_flag("check-config") => check_config(env_file.as_deref()),
        _ => serve(env_file.as_deref()),
    }
}

/// The command line, with every `.env` key and its default in `--help`.
fn command() -> Command {
    Command::new("roomcast")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The chat app on roomcast: HTTP on SERVER_PORT (the page, /api/health), WebSocket on WEBSOCKET_PORT.")
        .arg(
            Arg::new("env-file")
                .long("env-file")
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .global(true)
                .help("Read the configuration from PATH instead of ./.env (the environment still overrides it)"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, print every key's effective value and where it came from, and exit: 0 if valid, 2 if not"),
        )
        .subcommand(
            Command::new("token")
                .about("Print a token for the chat app (?token=...), signed with AUTH_SECRET")
                .arg(Arg::new("user").long("user").value_name("USER").required(true).help("Who the token is for"))
                .arg(
                    Arg::new("rooms")
                        .long("rooms")
                        .value_name("PATTERN,...")
                        .required(true)
                        .help("The rooms it may join: names, or prefixes ending in * (general,team-*)"),
                )
                .arg(
                    Arg::new("ttl")
                        .long("ttl")
                        .value_name("SECONDS")
                        .value_parser(value_parser!(u64).range(1..))
                        .default_value("3600")
                        .help("How long it is valid"),
                ),
        )
        .after_help(keys_help())
}

/// The `.env` keys, their defaults and what they set, from the one table the configuration reads.
fn keys_help() -> String {
    let mut help = String::from(
        "Configuration: .env in the working directory (or --env-file); the environment overrides it.\n",
    );
    for key in KEYS {
        let default = key
            .default
            .map_or("unset".to_owned(), |d| format!("default {d}"));
        help.push_str(&format!("\n  {} ({default})\n      {}", key.name, key.help));
    }
    help
}

/// Loads the configuration, or says what is wrong with it in one line.
fn load(env_file: Option<&Path>) -> Result<LoadedConfig, ExitCode> {
    Config::load_explained(env_file).map_err(|e| {
        eprintln!("roomcast: configuration error: {e}");
        ExitCode::from(2)
    })
}

/// Where the configuration came from, in words.
fn describe(source: &ConfigSource) -> String {
    match source {
        ConfigSource::File(path) => format!("configuration from {}", path.display()),
        ConfigSource::Defaults(path) => {
            format!(
                "no env file at {}: using defaults and the environment",
                path.display()
            )
        }
    }
}

/// What a misspelt or unknown key in the env file gets.
fn unknown_key_warnings(loaded: &LoadedConfig) -> Vec<String> {
    loaded
        .unknown
        .iter()
        .map(|unknown| match unknown.suggestion {
            Some(known) => format!(
                "{} in the env file is not a roomcast key (did you mean {known}?); it is ignored",
                unknown.name
            ),
            None => format!(
                "{} in the env file is not a roomcast key; it is ignored",
                unknown.name
            ),
        })
        .collect()
}

/// `--check-config`: every key's effective value and its origin on stdout, exit 0; or the error, exit 2.
fn check_config(env_file: Option<&Path>) -> ExitCode {
    let loaded = match load(env_file) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    println!("# {}", describe(&loaded.source));
    for (name, value, origin) in &loaded.values {
        let origin = match origin {
            Origin::Environment => "environment",
            Origin::File => "env file",
            Origin::Default => "default",
        };
        match value {
            Some(value) => println!("{name}={value}  # {origin}"),
            None => println!("# {name} is unset  # {origin}"),
        }
    }
    for warning in unknown_key_warnings(&loaded) {
        println!("# warning: {warning}");
    }
    println!("# the configuration is valid");
    ExitCode::SUCCESS
}

/// Prints a token signed with the configuration's `AUTH_SECRET`.
fn print_token(env_file: Option<&Path>, args: &ArgMatches) -> ExitCode {
    let config = match load(env_file) {
        Ok(loaded) => loaded.config,
        Err(code) => return code,
    };
    let Some(secret) = config.auth.secret else {
        eprintln!("roomcast: AUTH_SECRET is not set (in .env or the environment): there is nothing to sign a token with");
        return ExitCode::from(2);
    };
    let user = args.get_one::<String>("user").expect("required");
    let rooms: Vec<String> = args
        .get_one::<String>("rooms")
        .expect("required")
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if user.is_empty() || rooms.is_empty() {
        eprintln!("roomcast: token needs a non-empty --user and at least one room in --rooms");
        return ExitCode::from(2);
    }
    let ttl = Duration::from_secs(*args.get_one::<u64>("ttl").expect("defaulted"));
    println!(
        "{}",
        app::token::Tokens::new(&secret).issue(user, &rooms, ttl)
    );
    ExitCode::SUCCESS
}

/// Runs the chat app until SIGINT or SIGTERM.
fn serve(env_file: Option<&Path>) -> ExitCode {
    let loaded = match load(env_file) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    init_logging(loaded.config.logs.format);
    tracing::info!("{}", describe(&loaded.source));
    for warning in unknown_key_warnings(&loaded) {
        tracing::warn!("{warning}");
    }
    let config = loaded.config;
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
    tracing::info!(
        "ready: open http://{}/ in a browser (WebSocket: ws://{}/)",
        reachable(running.http_addr()),
        reachable(running.websocket_addr())
    );
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping: closing sessions with 1001");
    }
    running.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// An address a browser on this machine can open: a listener on every interface is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The history store's engine reports each file it opens at info: its warnings are what matter.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}
