//! The `loadtest` command: parse arguments, run a scenario or the suite, print JSON on stdout and a table
//! on stderr, draw `--plot`; or `compare` two servers' saved JSON lines into the results file.
//!
//! Exit codes: 0 when every run passed (for `compare`: when the table was written, targets met or not),
//! 1 when a run failed, 2 for refused arguments or targets, or input `compare` cannot use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::compare::{self, Runs, Side};
use loadtest::suite::{self, Set};
use loadtest::{Report, RunOptions, Scenario};

/// Load-test harness for servers speaking the seed's WebSocket chat protocol (loopback targets only).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The server; only ws:// on 127.0.0.0/8 or [::1] is accepted.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:9090/")]
    url: String,
    /// Driver threads (each a mio event loop over many connections); the server needs the cores.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// The server's process id: its RSS and CPU are read from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Another node of the same server (a cluster), repeatable: clients are spread over --url and these
    /// in turn, so the members of a room are on every node.
    #[arg(long, global = true)]
    also_url: Vec<String>,
    /// Another node's process id, repeatable: its RSS and CPU are added to --server-pid's.
    #[arg(long, global = true)]
    also_server_pid: Vec<u32>,
    /// Draw latency percentiles and delivery rate over time to this SVG file.
    #[arg(long, global = true)]
    plot: Option<PathBuf>,
    /// Seconds allowed for set-up (connect, upgrade, welcome, join).
    #[arg(long, global = true, default_value_t = 60)]
    setup_timeout: u64,
    /// Seconds to wait after the run for in-flight deliveries.
    #[arg(long, global = true, default_value_t = 5)]
    drain_timeout: u64,
    /// Connections in set-up at once per thread.
    #[arg(long, global = true, default_value_t = 256)]
    connect_window: usize,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    /// Offer permessage-deflate (RFC 7692) in every upgrade and inflate the server's compressed messages;
    /// an upgrade answered without it fails set-up (`deflate_refused`), and so the run. Not with `suite`,
    /// whose deflate runs (`--set deflate`) offer it themselves.
    #[arg(long, global = true)]
    deflate: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The protocol, reply by reply.
    Smoke,
    /// Open N connections, hold them, check a sample still answers ping.
    Conns {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// How many must answer ping afterwards.
        #[arg(long, default_value_t = 100)]
        sample: usize,
    },
    /// One publisher, N members of one room, a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Chat text bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// One publisher, N members, closed loop with a window of messages in flight.
    Saturate {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// N clients over K rooms, each sending r msg/s.
    Rooms {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        rooms: usize,
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Rooms traffic while churners connect, join, chat, leave and disconnect continuously.
    Churn {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 50)]
        churners: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Churn for ten minutes; with --server-pid, the server's RSS at the start, its peak, and once every
    /// client is gone.
    Soak {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 50)]
        churners: usize,
        #[arg(long, default_value_t = 600.0)]
        duration: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// The standard scenarios; writes the Markdown results table.
    Suite {
        /// Small sizes and 2 s runs: checks the harness, not the server.
        #[arg(long)]
        quick: bool,
        /// `full`; `throughput` (saturate and rooms only) to repeat against another server set-up; `held`
        /// (the 19,000 held connections) against a fresh server; `deflate` (idle connections and the two
        /// saturate runs offering permessage-deflate) against a fresh server with deflate on.
        #[arg(long, value_enum, default_value = "full")]
        set: SetArg,
        /// The server configuration, for the table's first column.
        #[arg(long, default_value = "server")]
        label: String,
        /// Where the Markdown goes.
        #[arg(long, default_value = "loadtest/results.md")]
        out: PathBuf,
        /// Add rows to an existing results file instead of starting a new one.
        #[arg(long)]
        append: bool,
    },
    /// Our server's suite runs against a peer's: reads the JSON lines each printed (one file per server)
    /// and writes, per standard run, both sides' figures, the ratio of medians and issue 11's targets.
    Compare {
        /// The JSON lines of our server's runs.
        #[arg(long)]
        ours: PathBuf,
        /// The JSON lines of the peer's runs, the same scenarios.
        #[arg(long)]
        peer: PathBuf,
        /// Our server's name in the table.
        #[arg(long, default_value = "roomcast")]
        ours_name: String,
        /// The peer's name in the table.
        #[arg(long, default_value = "tokio-chat")]
        peer_name: String,
        /// Where the Markdown goes.
        #[arg(long, default_value = "loadtest/results.md")]
        out: PathBuf,
        /// Add the section to an existing results file instead of starting a new one.
        #[arg(long)]
        append: bool,
    },
    /// What one cross-core wake-up of a sleeping thread costs this machine (no server involved): the
    /// figure a server's CPU at moderate load is read against.
    WakeCost {
        /// Round trips between the two threads (two wake-ups each).
        #[arg(long, default_value_t = 20_000)]
        round_trips: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SetArg {
    Full,
    Throughput,
    Held,
    Deflate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    loadtest::install_interrupt_handler();
    let c = &cli.common;
    let options = RunOptions {
        url: c.url.clone(),
        threads: c.threads,
        server_pid: c.server_pid,
        also_urls: c.also_url.clone(),
        also_server_pids: c.also_server_pid.clone(),
        progress: !c.quiet,
        setup_timeout: Duration::from_secs(c.setup_timeout),
        drain_timeout: Duration::from_secs(c.drain_timeout),
        connect_window: c.connect_window.max(1),
        deflate: c.deflate,
    };
    let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.0, 1e6));
    let scenario = match cli.command {
        Command::Smoke => Scenario::Smoke,
        Command::Conns {
            connections,
            hold,
            sample,
        } => Scenario::Conns {
            connections,
            hold: secs(hold),
            sample,
        },
        Command::Fanout {
            members,
            rate,
            messages,
            size,
        } => Scenario::Fanout {
            members,
            rate,
            messages,
            size,
        },
        Command::Saturate {
            members,
            window,
            duration,
            size,
        } => Scenario::Saturate {
            members,
            window,
            duration: secs(duration),
            size,
        },
        Command::Rooms {
            clients,
            rooms,
            rate,
            duration,
            size,
        } => Scenario::Rooms {
            clients,
            rooms,
            rate,
            duration: secs(duration),
            size,
        },
        Command::Churn {
            clients,
            rooms,
            rate,
            churners,
            duration,
            size,
        } => Scenario::Churn {
            clients,
            rooms,
            rate,
            churners,
            duration: secs(duration),
            size,
        },
        Command::Soak {
            clients,
            rooms,
            rate,
            churners,
            duration,
            size,
        } => Scenario::Soak {
            clients,
            rooms,
            rate,
            churners,
            duration: secs(duration),
            size,
        },
        Command::Suite {
            quick,
            set,
            label,
            out,
            append,
        } => {
            let set = match set {
                SetArg::Full => Set::Full,
                SetArg::Throughput => Set::Throughput,
                SetArg::Held => Set::Held,
                SetArg::Deflate => Set::Deflate,
            };
            if c.deflate {
                // The set decides which runs offer deflate, so each row's name says the truth.
                eprintln!(
                    "loadtest: suite takes no --deflate; its deflate runs are `--set deflate`"
                );
                return ExitCode::from(2);
            }
            return run_suite(&options, set, quick, &label, &out, append);
        }
        Command::Compare {
            ours,
            peer,
            ours_name,
            peer_name,
            out,
            append,
        } => return compare(&ours, &peer, (&ours_name, &peer_name), &out, append),
        Command::WakeCost { round_trips } => {
            return match loadtest::wake::measure(round_trips.max(1)) {
                Ok(cost) => {
                    println!(
                        "{}",
                        serde_json::to_string(&cost).expect("figures serialize")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: wake-cost: {e}");
                    ExitCode::from(1)
                }
            }
        }
    };
    match loadtest::run(&scenario, &options) {
        Ok(report) => {
            emit(&report);
            if let Some(path) = &c.plot {
                if let Err(e) = loadtest::plot::draw(&report, path) {
                    eprintln!("loadtest: cannot draw {}: {e}", path.display());
                }
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

/// JSON on stdout (one line, for piping into jq or a file), the table on stderr.
fn emit(report: &Report) {
    println!(
        "{}",
        serde_json::to_string(report).expect("reports serialize")
    );
    eprintln!("{}", report.table());
}

fn run_suite(
    options: &RunOptions,
    set: Set,
    quick: bool,
    label: &str,
    out: &Path,
    append: bool,
) -> ExitCode {
    if let Err(e) = loadtest::Target::parse(&options.url) {
        eprintln!("loadtest: refused target: {e}");
        return ExitCode::from(2);
    }
    let outcomes = suite::run_all(suite::standard(set, quick), options, |o| match &o.result {
        Ok(report) => emit(report),
        Err(e) => eprintln!("loadtest: {}: {e}", o.name),
    });
    let command: Vec<String> = std::env::args().collect();
    let mut text = String::new();
    if !append {
        text.push_str("# loadtest results\n\n");
        text.push_str(&suite::preamble(&command.join(" ")));
        text.push('\n');
        text.push_str(&suite::table_header());
    }
    text.push_str(&suite::table_rows(label, &outcomes));
    if let Err(code) = write_out(out, &text, append) {
        return code;
    }
    let passed = outcomes
        .iter()
        .all(|o| o.result.as_ref().is_ok_and(|r| r.passed));
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes `text` to `out` (added to its end with `append`, the file must then exist) and echoes it on
/// stderr; on failure says why and gives exit code 2.
fn write_out(out: &Path, text: &str, append: bool) -> Result<(), ExitCode> {
    let written = if append {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(out)
            .and_then(|mut f| f.write_all(text.as_bytes()))
    } else {
        std::fs::write(out, text)
    };
    if let Err(e) = written {
        eprintln!("loadtest: cannot write {}: {e}", out.display());
        return Err(ExitCode::from(2));
    }
    eprint!("{text}");
    Ok(())
}

/// `loadtest compare`: both files read and named by run, the section written. Unmet targets do not fail
/// it: they are measurements, and the table says which.
fn compare(
    ours: &Path,
    peer: &Path,
    (ours_name, peer_name): (&str, &str),
    out: &Path,
    append: bool,
) -> ExitCode {
    let read = |path: &Path| -> Result<Runs, ExitCode> {
        let runs = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Runs::parse(&text))
            .and_then(|runs| {
                if runs.is_empty() {
                    Err("no standard load run in it".to_owned())
                } else {
                    Ok(runs)
                }
            });
        runs.map_err(|e| {
            eprintln!("loadtest: compare: {}: {e}", path.display());
            ExitCode::from(2)
        })
    };
    let (ours_runs, peer_runs) = match (read(ours), read(peer)) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let (ours_file, peer_file) = (ours.display().to_string(), peer.display().to_string());
    let text = compare::section(
        &Side {
            name: ours_name,
            file: &ours_file,
            runs: &ours_runs,
        },
        &Side {
            name: peer_name,
            file: &peer_file,
            runs: &peer_runs,
        },
    );
    match write_out(out, &text, append) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
