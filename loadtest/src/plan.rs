//! What a run will do, decided before any socket opens, and the few atomics the threads share.
//!
//! Owns [`Plan`] (every client's room, role and source address; pacing; time and count bounds) and
//! [`Shared`] (the phase the main thread announces and the counters it watches). Scenarios build a plan
//! (see `scenario`); driver threads execute their share of it (see `driver`). Threads talk only through
//! these atomics and a channel of per-second tallies, never through locks on the receive path.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::target::Target;

/// The hard ceiling on any run's length: a run always stops by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// The hard ceiling on connections in one run.
pub const MAX_CONNECTIONS: usize = 60_000;
/// The largest frame the harness accepts from a server.
pub const MAX_FRAME: usize = 1 << 20;

/// One room: its name and who is in it.
#[derive(Clone, Debug)]
pub struct RoomPlan {
    /// The room name sent in `room.join` and `chat.message`.
    pub name: String,
    /// How many publishers send to it (their stamps number 0..publishers).
    pub publishers: u32,
}

/// One client slot.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// The room it joins, if any (index into [`Plan::rooms`]).
    pub room: Option<u32>,
    /// Its publisher number within its room, if it publishes.
    pub publisher: Option<u32>,
    /// Whether its receipts count toward deliveries, loss and latency.
    pub counted: bool,
    /// A churner connects, joins, sends one message, leaves and disconnects, over and over, during the run.
    pub churner: bool,
    /// Whether it sends `ping` once the run ends and must get `pong` (the liveness sample).
    pub probe: bool,
    /// The local address to bind before connecting, when one address lacks ephemeral ports.
    pub source: Option<Ipv4Addr>,
}

/// How publishers decide when to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// Nobody publishes.
    Silent,
    /// Each publisher sends this many messages per second, open loop, phases spread evenly.
    Rate(f64),
    /// Closed loop: at most this many messages in flight (sent but not yet delivered to every member).
    Window(u64),
}

/// Everything a run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server.
    pub target: Target,
    /// More nodes of it; [`Plan::target_of`] says which node a client slot connects to.
    pub also_targets: Vec<Target>,
    /// The rooms used.
    pub rooms: Vec<RoomPlan>,
    /// Every client slot.
    pub clients: Vec<ClientPlan>,
    /// Chat text size in bytes.
    pub message_size: usize,
    /// When publishers send.
    pub pacing: Pacing,
    /// How long the run phase lasts at most.
    pub duration: Duration,
    /// Per-publisher message cap; the run ends early when every publisher reached it.
    pub max_messages: Option<u64>,
    /// How long set-up (connect, upgrade, welcome, join) may take.
    pub setup_timeout: Duration,
    /// How long to wait after the run for deliveries and probe answers still in flight.
    pub drain_timeout: Duration,
    /// Driver threads.
    pub threads: usize,
    /// Connections in set-up at once per thread, so the server's accept backlog is not flooded.
    pub connect_window: usize,
    /// Every upgrade offers permessage-deflate and must get it (`--deflate`).
    pub deflate: bool,
}

impl Plan {
    /// The node client slot `slot` connects to: spread by a hash of the slot, not the slot itself, since
    /// scenarios give rooms by slot modulo the room count (slots modulo 2 would put every member of a
    /// room on one node).
    pub fn target_of(&self, slot: usize) -> &Target {
        let spread = ((slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize;
        match spread % (1 + self.also_targets.len()) {
            0 => &self.target,
            n => &self.also_targets[n - 1],
        }
    }
}

/// The phase of a run, announced by the main thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Clients connect, upgrade and join.
    Setup = 0,
    /// Publishers publish; churners churn.
    Run = 1,
    /// No new messages; in-flight deliveries and probes are awaited.
    Drain = 2,
    /// Threads hand back their tallies and exit.
    Done = 3,
}

/// What the main thread and the driver threads share.
#[derive(Debug)]
pub struct Shared {
    phase: AtomicU8,
    /// When the run phase began ([`crate::stamp::monotonic_ns`]); pacing and intervals count from it.
    pub run_start_ns: AtomicU64,
    /// Clients that finished set-up (non-churners).
    pub ready: AtomicU64,
    /// Clients whose set-up failed (non-churners).
    pub failed: AtomicU64,
    /// Counted deliveries so far, added once per event-loop turn per thread.
    pub delivered: AtomicU64,
    /// Counted deliveries the messages sent so far should produce.
    pub expected: AtomicU64,
    /// Messages sent by all publishers.
    pub sent: AtomicU64,
    /// Publishers that reached [`Plan::max_messages`].
    pub publishers_done: AtomicU64,
    /// Probe pings sent and pongs received.
    pub probes_sent: AtomicU64,
    /// See `probes_sent`.
    pub probes_answered: AtomicU64,
    /// Counted members that finished set-up, per room: each message to a room is owed to them.
    pub room_members: Vec<AtomicU64>,
}

impl Shared {
    /// Fresh counters for a plan with `rooms` rooms.
    pub fn new(rooms: usize) -> Shared {
        Shared {
            phase: AtomicU8::new(Phase::Setup as u8),
            run_start_ns: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            publishers_done: AtomicU64::new(0),
            probes_sent: AtomicU64::new(0),
            probes_answered: AtomicU64::new(0),
            room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Run,
            2 => Phase::Drain,
            _ => Phase::Done,
        }
    }

    /// Moves to `phase` (only the main thread calls this).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }
}
