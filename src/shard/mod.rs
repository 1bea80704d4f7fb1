//! A shard: one glommio executor pinned to one core, and everything it owns.
//!
//! A shard owns its listener ([`acceptor`]), its sessions (each a task, see [`crate::connection`]), its
//! part of every room ([`crate::room`]), a read buffer all its sessions share, and its inbox ([`mesh`]).
//! Its state is `!Send` and lives in one `Rc`: nothing on the message path takes a lock. Other shards and
//! outside threads reach it only by posting a [`mesh::ShardMsg`].
//!
//! One sweep task per shard owns time: once a second it pings every session when `WEBSOCKET_PING_INTERVAL`
//! has passed, closes sessions silent for `WEBSOCKET_IDLE_TIMEOUT` (code 1001, reason "idle timeout"), and
//! aborts close handshakes older than [`CLOSE_TIMEOUT`]. One timer per shard instead of one per session
//! keeps idle sessions free of timer state; the price is a second of slack on those deadlines.
//!
//! Shutdown ([`ShardMsg::Shutdown`]): stop accepting, send 1001 to every session, wait until they are gone
//! or [`SHUTDOWN_GRACE`] has passed, then return, which ends the executor.

pub(crate) mod acceptor;
pub(crate) mod mesh;

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::config::WebSocketSettings;
use crate::error::SessionError;
use crate::handler::{guarded, Callbacks};
use crate::room::Rooms;
use crate::session::{Lifecycle, Session, SessionId};
use crate::ws::codec::{self, Frame};
use mesh::{InboxReceiver, InboxSender, ShardMsg};

/// How long a close handshake may take before the connection is dropped, in ticks of the shard clock
/// (seconds, at least).
pub(crate) const CLOSE_TIMEOUT_SECS: u32 = 3;
/// How long shutdown waits for sessions to finish their close handshakes.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// How often the sweep looks at timeouts and pings.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Submission entries of each of the shard's io_uring rings (glommio's default is 128). Every idle
/// session keeps one poll pending in the kernel, and the kernel hashes pending polls into a table of
/// `cq_entries / 32` buckets (at most 256) that it walks on every cancellation; glommio cancels its
/// preemption timers each time the executor parks. With 128 entries (8 buckets) that walk was 6 % of a
/// 2-shard server's CPU serving 2,000 clients; 4,096 gives 256 buckets, for about 1.2 MB more RSS per shard.
pub(crate) const RING_DEPTH: usize = 4096;
/// The shard's read buffer: large enough for a burst of frames in one read, shared by all its sessions.
const READ_BUFFER_LEN: usize = 64 * 1024;

/// The state one core owns.
pub(crate) struct Shard {
    /// This shard's position among the WebSocket shards (0-based).
    pub(crate) index: usize,
    pub(crate) settings: WebSocketSettings,
    pub(crate) request_timeout: Duration,
    pub(crate) bench_mode: bool,
    pub(crate) callbacks: Arc<Callbacks>,
    pub(crate) rooms: RefCell<Rooms>,
    /// The shard clock: how many sweeps have run. Sweeps are at least a second apart, so a difference of
    /// more than N ticks means more than N seconds have passed. Sessions stamp activity with it instead of
    /// reading the time on every read, and store it in 4 bytes instead of an `Instant`'s 16.
    clock: Cell<u32>,
    /// Every open session, for the sweep and shutdown; a slab because its slot (kept in the session) makes
    /// removal O(1) at 16 bytes a session, against about twice that for a hash map.
    pub(crate) sessions: RefCell<Slab<Session>>,
    /// Where every session of this shard reads into; see [`crate::connection`].
    pub(crate) read_buf: RefCell<Box<[u8]>>,
    /// Every shard's inbox, indexed by shard; our own is skipped when broadcasting.
    peers: Arc<[InboxSender]>,
    /// Our own inbox: the shard's inbox task waits on it, sessions take from it before they write.
    inbox: InboxReceiver,
    next_session: Cell<u64>,
}

/// What a shard needs to start; built on the starting thread and moved into the shard's thread.
pub(crate) struct ShardStart {
    pub(crate) index: usize,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) inbox: InboxReceiver,
    pub(crate) peers: Arc<[InboxSender]>,
    pub(crate) callbacks: Arc<Callbacks>,
    pub(crate) settings: WebSocketSettings,
    pub(crate) request_timeout: Duration,
    pub(crate) bench_mode: bool,
}

impl Shard {
    /// A shard's state with no sessions yet.
    pub(crate) fn new(
        index: usize,
        settings: WebSocketSettings,
        request_timeout: Duration,
        bench_mode: bool,
        callbacks: Arc<Callbacks>,
        peers: Arc<[InboxSender]>,
        inbox: InboxReceiver,
    ) -> Shard {
        Shard {
            index,
            settings,
            request_timeout,
            bench_mode,
            callbacks,
            rooms: RefCell::new(Rooms::default()),
            clock: Cell::new(0),
            sessions: RefCell::new(Slab::new()),
            read_buf: RefCell::new(vec![0; READ_BUFFER_LEN].into_boxed_slice()),
            peers,
            inbox,
            next_session: Cell::new(0),
        }
    }

    /// The shard clock: sweeps run so far (at least a second apart).
    pub(crate) fn now(&self) -> u32 {
        self.clock.get()
    }

    /// A new session id: the shard index in the top 16 bits keeps ids unique across shards.
    pub(crate) fn next_session_id(&self) -> SessionId {
        let n = self.next_session.get() + 1;
        self.next_session.set(n);
        SessionId(((self.index as u64) << 48) | n)
    }

    /// Delivers `frame` to the members of `room` here, and posts it once to every other shard.
    ///
    /// The other shards share one read-only copy of the bytes and each copies it into a frame of its own
    /// (a memcpy per shard, not a re-encode): every member's queue clones and drops its frame's reference
    /// count, and two cores doing that on one count would bounce its cache line between them on every
    /// delivery, which halved throughput with two shards when the count was shared.
    pub(crate) fn broadcast(&self, room: &str, frame: Frame) {
        if self.peers.len() > 1 {
            let room_name: Arc<str> = Arc::from(room);
            let shared: Arc<[u8]> = Arc::from(&frame[..]);
            for (index, peer) in self.peers.iter().enumerate() {
                if index != self.index {
                    peer.post(ShardMsg::Broadcast {
                        room: room_name.clone(),
                        frame: shared.clone(),
                    });
                }
            }
        }
        Rooms::deliver(&self.rooms, room, &frame);
    }

    /// Delivers what other shards posted and not yet delivered. Returns `Break` at a
    /// [`ShardMsg::Shutdown`], leaving anything posted after it for later.
    ///
    /// The inbox task calls this when woken, and every session task before it writes. While a shard is
    /// busy writing a round of broadcast frames, the inbox task's wake-up waits behind all of those
    /// writes; taking the posts in the sessions lets the frames join the writes still to come in the round
    /// instead of the next one. In the closed loop of a 2-shard `saturate` run (1,000 members, window 32)
    /// that removed part of the second shard's lag: deliveries per server CPU-second rose in each of 5
    /// paired runs, by 10 % on average, and p99 latency fell from 13-15 ms to 11-13 ms.
    pub(crate) fn deliver_posted(&self) -> ControlFlow<()> {
        while let Some(msg) = self.inbox.try_take() {
            match msg {
                // Copied into a frame of this shard's own first (see `broadcast`).
                ShardMsg::Broadcast { room, frame } => {
                    Rooms::deliver(&self.rooms, &room, &Frame::from(&frame[..]))
                }
                ShardMsg::Shutdown => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(())
    }

    /// [`Shard::deliver_posted`] for a session about to write: a shutdown it comes across is handed back
    /// to the inbox, for the inbox task, whose job ending the shard is.
    pub(crate) fn deliver_posted_now(&self) {
        if self.deliver_posted().is_break() {
            self.peers[self.index].post(ShardMsg::Shutdown);
        }
    }

    /// Logs a session's error and hands it to `on_error`.
    pub(crate) fn report_error(&self, session: &Session, error: &SessionError) {
        if !self.bench_mode {
            tracing::warn!(session = %session.id(), peer = %session.peer_addr(), %error, "websocket error");
        }
        if let Some(on_error) = &self.callbacks.on_error {
            guarded(session, "on_error", || on_error(session, error));
        }
    }

    /// One pass of the sweep: pings, idle timeouts, stuck close handshakes.
    ///
    /// The clock counts sweeps, so a stamp taken between two sweeps carries the earlier one's tick; a deadline
    /// of N seconds is passed only when more than N ticks have gone by since the stamp, which is more than N
    /// seconds after the activity itself: a session is never closed early, and at most about a second late.
    fn sweep(&self, send_ping: bool, ping: &Frame) {
        self.clock.set(self.clock.get().wrapping_add(1));
        let now = self.now();
        let sessions: Vec<Session> = self
            .sessions
            .borrow()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        for session in sessions {
            let state = &session.0;
            match state.lifecycle.get() {
                Lifecycle::Open => {
                    let silent = now.wrapping_sub(state.last_seen.get());
                    if self
                        .settings
                        .idle_timeout
                        .is_some_and(|limit| u64::from(silent) > limit.as_secs())
                    {
                        session.start_close(1001, "idle timeout");
                    } else if send_ping {
                        session.send_frame(ping.clone());
                    }
                }
                lifecycle => {
                    let since = lifecycle.closing_since().unwrap_or(now);
                    if now.wrapping_sub(since) > CLOSE_TIMEOUT_SECS {
                        state.lifecycle.set(Lifecycle::Aborted);
                        session.wake();
                    }
                }
            }
        }
    }
}

/// Runs a shard until it is told to shut down.
pub(crate) async fn run(start: ShardStart) {
    let shard = std::rc::Rc::new(Shard::new(
        start.index,
        start.settings,
        start.request_timeout,
        start.bench_mode,
        start.callbacks,
        start.peers,
        start.inbox,
    ));
    let acceptor = glommio::spawn_local(acceptor::accept_loop(start.listener, shard.clone()));
    let sweeper = glommio::spawn_local(sweep_loop(shard.clone()));

    while shard.deliver_posted().is_continue() {
        shard.inbox.wait_for_post().await;
    }

    acceptor.cancel().await;
    let open: Vec<Session> = shard
        .sessions
        .borrow()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    for session in &open {
        session.close(1001, "server shutting down");
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    // Shutdown only: a short poll for the last sessions to finish is simpler than a notifier for them.
    while !shard.sessions.borrow().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    sweeper.cancel().await;
}

async fn sweep_loop(shard: std::rc::Rc<Shard>) {
    let ping = codec::ping_frame();
    let mut last_ping = Instant::now();
    loop {
        glommio::timer::sleep(SWEEP_INTERVAL).await;
        let now = Instant::now();
        let send_ping = shard
            .settings
            .ping_interval
            .is_some_and(|every| now.saturating_duration_since(last_ping) >= every);
        if send_ping {
            last_ping = now;
        }
        shard.sweep(send_ping, &ping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use mesh::inbox;

    fn shard_with_inbox() -> Shard {
        let (tx, rx) = inbox();
        Shard::new(
            0,
            Config::default().websocket,
            Duration::from_secs(5),
            true,
            Arc::new(Callbacks::default()),
            Arc::from(vec![tx]),
            rx,
        )
    }

    #[test]
    fn a_shutdown_taken_by_a_session_goes_back_to_the_inbox_task() {
        let shard = shard_with_inbox();
        shard.peers[0].post(ShardMsg::Broadcast {
            room: Arc::from("r"),
            frame: Arc::from(&b"x"[..]),
        });
        shard.peers[0].post(ShardMsg::Shutdown);
        shard.deliver_posted_now();
        assert!(matches!(shard.inbox.try_take(), Some(ShardMsg::Shutdown)));
        assert!(shard.inbox.try_take().is_none());
    }
}
