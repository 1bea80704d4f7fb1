//! loadtest: a load-test harness for any server speaking the seed's WebSocket chat protocol.
//!
//! The `loadtest` binary runs one scenario (`smoke`, `conns`, `fanout`, `saturate`, `rooms`, `churn`,
//! `soak`) or the standard `suite`, prints one JSON object per run on stdout and a table on stderr;
//! `compare` reads two servers' saved JSON lines back and writes the ratios; `wake-cost` measures what one
//! cross-core wake-up costs the machine. The library is what the binary and the tests call: [`run`] a
//! [`Scenario`] with [`RunOptions`], get a [`Report`].
//!
//! # Architecture: where everything lives
//!
//! ```text
//!  scenario ──► plan ──► runner (main thread: phases, deadlines, /proc) ──► report ──► plot / suite
//!                          │ spawns
//!                          ▼
//!                        driver × threads (mio) ──► client ──► handshake, codec, inflate, stamp, tracker
//!                          │ per-second intervals, final tallies
//!                          └──────────────► tally ──► runner
//! ```
//!
//! - `target`: the URL and the loopback-only guard, applied before any socket exists.
//! - `scenario`: each scenario's meaning, its caps, and source-address spreading; builds a `plan`.
//! - `plan`: every client's role, the pacing and bounds; the atomics threads share.
//! - `runner`: the main thread of a run: set-up → run → drain → done, sampling `/proc` each second; for a
//!   soak, the server's RSS after every client is gone.
//! - `driver`: one thread's mio event loop over many connections: connect window, pacing, churn, probes.
//! - `client`: one connection's state machine and what each reply means at each stage.
//! - `handshake`, `codec`: the HTTP upgrade (and, with `--deflate`, the permessage-deflate offer and the
//!   check of the answer) and the client frame codec (masking out, in-place parsing in, RSV1 marking a
//!   compressed message only where deflate was negotiated).
//! - `inflate`: compressed messages back to text; one decompressor per driver thread serves every
//!   session whose server resets its window per message.
//! - `stamp`: `<publisher>:<seq>:<sent_ns>` in the chat text, on CLOCK_MONOTONIC.
//! - `tracker`: loss, duplication and order per (receiver, publisher).
//! - `tally`: per-thread counts and their merge. `procfs`: RSS and CPU from `/proc`.
//! - `report`: the JSON object, the table, pass/fail. `plot`: the SVG. `suite`: the standard runs and
//!   their Markdown table. `smoke`: the protocol, reply by reply.
//! - `wake`: `wake-cost`, the machine's cost of one cross-core wake-up, which a server's CPU at moderate
//!   load is read against.
//! - `compare`: two servers' suite runs, read back from their JSON lines, as ratios of medians against
//!   issue 11's targets.
//!
//! # Cost
//!
//! The harness shares the machine with the server, so it must not be what it measures: each thread
//! drives thousands of connections; a receipt is parsed in place from the connection's read buffer
//! and counted without allocating; its own CPU time is in every report.
#![deny(missing_docs)]

mod client;
pub mod codec;
pub mod compare;
mod driver;
mod handshake;
mod inflate;
mod plan;
pub mod plot;
mod procfs;
mod report;
mod runner;
mod scenario;
mod smoke;
mod stamp;
pub mod suite;
mod tally;
mod target;
pub mod tracker;
pub mod wake;

pub use plan::{MAX_CONNECTIONS, MAX_DURATION};
pub use report::{HarnessFigures, Latency, Point, Report, ServerFigures, SoakMemory, Step};
pub use runner::{install_interrupt_handler, interrupted};
pub use scenario::{run, Error, RunOptions, Scenario};
pub use target::{Target, TargetError};
