//! The `tokio-chat` binary: the command line, the runtime, the listener and the shutdown on SIGTERM or
//! SIGINT around [`tokio_chat::serve`].
//!
//! `tokio-chat [--port N] [--threads N]`: listens on 0.0.0.0:N (9091 by default, beside roomcast's
//! 9090) with N tokio worker threads (every core by default).

use std::num::NonZeroUsize;
use std::process::ExitCode;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const DEFAULT_PORT: u16 = 9091;
const USAGE: &str = "usage: tokio-chat [--port N] [--threads N]";

/// The command line.
struct Args {
    port: u16,
    worker_threads: usize,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            port: DEFAULT_PORT,
            worker_threads: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--port" => {
                    let port = value()?;
                    parsed.port = port
                        .parse()
                        .map_err(|_| format!("--port: `{port}` is not a port number"))?;
                }
                "--threads" => {
                    let threads = value()?;
                    parsed.worker_threads = threads
                        .parse::<NonZeroUsize>()
                        .map_err(|_| format!("--threads: `{threads}` is not a count of 1 or more"))?
                        .get();
                }
                _ => return Err(format!("unknown argument `{flag}`")),
            }
        }
        Ok(parsed)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("tokio-chat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio-chat: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args.port))
}

/// Serves on `port` until a shutdown signal (success) or until the listener fails (failure).
async fn run(port: u16) -> ExitCode {
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("tokio-chat: cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            eprintln!("tokio-chat: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bound address, so `--port 0` reports the port the kernel chose.
    match listener.local_addr() {
        Ok(addr) => eprintln!("tokio-chat listening on {addr}"),
        Err(_) => eprintln!("tokio-chat listening on 0.0.0.0:{port}"),
    }
    tokio::select! {
        () = tokio_chat::serve(listener) => ExitCode::FAILURE,
        _ = terminate.recv() => ExitCode::SUCCESS,
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}

/// Raises the soft limit on open files to the hard one: the suite holds 19,000 connections at once,
/// far above the usual soft limit of 1,024.
fn raise_open_file_limit() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        eprintln!("tokio-chat: cannot raise the open-file limit ({e}); it stays {limit:?}");
    }
}
