//! A shard: one glommio executor pinned to one core, and the state it owns.
//!
//! [`Shard`] owns its sessions (a slab of [`SessionState`]), its part of every room ([`Rooms`]), its own
//! io_uring ring, which its sessions receive and its writer sends through ([`ring`], [`writer`]), the
//! deflater and inflater all its deflate sessions share, its clock, its inbox ([`mesh`]), and what it
//! counted ([`crate::metrics::ShardTotals`]: plain integers, copied out when a scrape posts for them). The state is `!Send` and reached only
//! through methods: nothing outside this module touches its fields, and nothing on the message path takes a
//! lock. Other shards and outside threads reach it only by posting a [`mesh::ShardMsg`].
//!
//! Where it sits in the data path: below the connection task and the [`crate::Session`] handle, which call
//! it to register, join, leave and broadcast; above the rooms and the sessions' queues, which it fills. It
//! never calls up: it runs no callback and holds no [`crate::Session`] handle, so a room's fan-out can
//! never re-enter it. Its children start and feed it: [`executor`] starts the executor and runs the shard's
//! tasks until shutdown, [`acceptor`] accepts connections for it.
//!
//! Time is the sweep's: once a second ([`Shard::sweep`]) it pings every session when
//! `WEBSOCKET_PING_INTERVAL` has passed, closes sessions silent for `WEBSOCKET_IDLE_TIMEOUT` (code 1001,
//! reason "idle timeout"), and aborts close handshakes older than [`CLOSE_TIMEOUT_SECS`]. One timer per shard
//! instead of one per session keeps idle sessions free of timer state; the price is a second of slack on
//! those deadlines.

pub(crate) mod acceptor;
pub(crate) mod executor;
pub(crate) mod home;
pub(crate) mod mesh;
pub(crate) mod ring;
pub(crate) mod writer;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;

use crate::admission::Admission;
use crate::auth::{AuthorizeJoinFn, Identity};
use crate::cluster::ClusterOp;
use crate::config::{Config, WebSocketSettings};
use crate::history::Retention;
use crate::lifecycle::{CloseCause, Lifecycle};
use crate::metrics::{ShardSnapshot, ShardTotals, NO_CLOSE_FRAME};
use crate::replies::{RoomReplies, TextOnly};
use crate::room::Rooms;
use crate::session_state::{SessionId, SessionState};
use crate::ws::deflate::{DeflateSessions, Deflater, Inflater};
use crate::ws::encode::{self, DataKind, EncodedFrame, Prepared, Renditions};
use crate::ws::handshake::Agreed;
use home::Homes;
use mesh::{InboxReceiver, Peers, ShardMsg};
use ring::{ShardRing, RING_ENTRIES};
use writer::Writer;

/// How long a close handshake may take before the connection is dropped, in ticks of the shard clock
/// (seconds, at least).
pub(crate) const CLOSE_TIMEOUT_SECS: u32 = 3;
/// The shard's read buffer: large enough for a burst of frames in one read, shared by all its sessions.
const READ_BUFFER_LEN: usize = 64 * 1024;
/// Receive completions handed out in one pass of the receiving task before it lets the shard's other
/// tasks (the writer, the sweep) run: a flood of arrivals cannot hold the shard.
const RECEIPTS_PER_PASS: usize = 1024;

/// What every WebSocket shard is configured with; built once from the [`Config`] and cloned into each.
#[derive(Clone)]
pub(crate) struct ShardConfig {
    /// The `WEBSOCKET_*` limits every session obeys.
    pub(crate) websocket: WebSocketSettings,
    /// `SERVER_REQUEST_TIMEOUT`: how long an upgrade request may take to arrive.
    pub(crate) request_timeout: Duration,
    /// `SERVER_BENCH_MODE`: no per-connection log lines.
    pub(crate) bench_mode: bool,
    /// The application's room authorization hook, asked on every join.
    pub(crate) authorize_join: Option<Arc<AuthorizeJoinFn>>,
    /// The subprotocols the application speaks, in its order ([`crate::Server::subprotocols`]).
    pub(crate) subprotocols: Arc<[String]>,
    /// How the application words publications, acknowledgements, joins and presence.
    pub(crate) replies: Arc<dyn RoomReplies>,
    /// `HISTORY_SIZE`, `HISTORY_TTL_SEC`, `HISTORY_RECOVERY_MAX`; size 0 without history.
    pub(crate) retention: Retention,
    /// `PRESENCE_EVENTS`.
    pub(crate) presence_events: bool,
    /// This shard's share of `HISTORY_MEMORY_MB`, in bytes.
    pub(crate) history_budget: usize,
}

impl ShardConfig {
    pub(crate) fn new(config: &Config) -> ShardConfig {
        ShardConfig {
            websocket: config.websocket.clone(),
            request_timeout: config.server.request_timeout,
            bench_mode: config.server.bench_mode,
            authorize_join: None,
            subprotocols: Arc::new([]),
            replies: Arc::new(TextOnly),
            retention: Retention {
                size: 0,
                ttl_ms: None,
                recovery_max: config.rooms.recovery_max,
            },
            presence_events: config.rooms.presence_events,
            history_budget: config.rooms.memory_budget,
        }
    }
}

/// The writer task's scratch space: the sessions of one round, kept so that a round allocates nothing.
#[derive(Default)]
pub(crate) struct WriteBatch {
    ids: Vec<SessionId>,
    sessions: Vec<Rc<SessionState>>,
}

/// The state one core owns.
pub(crate) struct Shard {
    /// This shard's position among the WebSocket shards (0-based).
    index: usize,
    config: ShardConfig,
    /// The origin policy and connection budgets, shared by every shard of the server.
    admission: Arc<Admission>,
    rooms: RefCell<Rooms>,
    /// The shard clock: how many sweeps have run. Sweeps are at least a second apart, so a difference of
    /// more than N ticks means more than N seconds have passed. Sessions stamp activity with it instead of
    /// reading the time on every read, and store it in 4 bytes instead of an `Instant`'s 16.
    clock: Cell<u32>,
    /// Bytes all its sessions' decoders hold for messages still arriving; see [`Shard::hold_unfinished`].
    unfinished: Cell<usize>,
    /// Every open session, for the sweep and shutdown; a slab because its slot (in the session's id) makes
    /// removal O(1) at 16 bytes a session, against about twice that for a hash map.
    sessions: RefCell<Slab<Rc<SessionState>>>,
    /// Where the handshake (and, without a ring, every session) of this shard reads into; see
    /// [`crate::connection`].
    read_buf: RefCell<Box<[u8]>>,
    /// The shard's own io_uring ring, which its sessions receive and its writer sends through; `None`
    /// when the kernel refused it (or it failed), and each session reads and writes from its own task.
    ring: RefCell<Option<ShardRing>>,
    /// The receiving task, while it waits for completions.
    receiver: Cell<Option<Waker>>,
    /// The sweep saw the kernel announce completion work no signal told the receiving task about.
    nudged: Cell<bool>,
    /// Compresses for every deflate session of this shard, and each broadcast started here once.
    deflater: RefCell<Deflater>,
    /// Inflates what every deflate session of this shard receives compressed.
    inflater: RefCell<Inflater>,
    /// Deflate sessions and work across all shards.
    deflate_sessions: Arc<DeflateSessions>,
    /// The rooms whose home this shard is: their order, history in memory and presence.
    homes: RefCell<Homes>,
    /// Where the rooms homed here keep their streams: memory, the history store, or Redis.
    backing: home::Backing,
    /// Every shard's inbox; broadcasts are posted to all but ours.
    peers: Peers,
    /// Our own inbox: the shard's inbox task waits on it, sessions take from it before they write.
    inbox: InboxReceiver,
    next_session: Cell<u64>,
    /// What this shard counted (`/metrics`): its own, so counting touches no other core's cache line.
    totals: RefCell<ShardTotals>,
    /// Writes every session that had frames queued in a turn in one submission; see [`writer`].
    writer: Writer,
}

impl Shard {
    /// Shard `index`'s state with no sessions yet; `peers` holds every shard's inbox, `inbox` is ours;
    /// `deflate_sessions` is shared by every shard; `backing` keeps the streams of the rooms homed here.
    pub(crate) fn new(
        index: usize,
        config: ShardConfig,
        admission: Arc<Admission>,
        peers: Peers,
        inbox: InboxReceiver,
        deflate_sessions: Arc<DeflateSessions>,
        backing: home::Backing,
    ) -> Shard {
        let compress_from = config.websocket.compress_from();
        let ring = match ShardRing::new() {
            Ok(ring) => Some(ring),
            Err(e) => {
                tracing::warn!(
                    shard = index,
                    error = %e,
                    "no io_uring ring of the shard's own (multishot receive and provided buffers need \
                     Linux 6.0); each session reads and writes with its own system calls"
                );
                None
            }
        };
        Shard {
            index,
            config,
            admission,
            rooms: RefCell::new(Rooms::default()),
            clock: Cell::new(0),
            unfinished: Cell::new(0),
            sessions: RefCell::new(Slab::new()),
            read_buf: RefCell::new(vec![0; READ_BUFFER_LEN].into_boxed_slice()),
            writer: Writer::new(ring.is_some()),
            ring: RefCell::new(ring),
            receiver: Cell::new(None),
            nudged: Cell::new(false),
            deflater: RefCell::new(Deflater::new(deflate_sessions.clone(), compress_from)),
            inflater: RefCell::new(Inflater::new()),
            deflate_sessions,
            homes: RefCell::new(Homes::default()),
            backing,
            peers,
            inbox,
            next_session: Cell::new(0),
            totals: RefCell::default(),
        }
    }

    /// Counts something in this shard's totals; `count` only adds (it must not reach the shard again,
    /// which would find the totals borrowed).
    pub(crate) fn count(&self, count: impl FnOnce(&mut ShardTotals)) {
        count(&mut self.totals.borrow_mut());
    }

    /// What this shard counted, and its state now; `asked` is when the scrape posted the request.
    fn snapshot(&self, asked: std::time::Instant) -> ShardSnapshot {
        let mut deflate = self.deflater.borrow().done();
        deflate.messages_inflated = self.inflater.borrow().inflated();
        let (rooms, members) = self.rooms.borrow().counts();
        ShardSnapshot {
            shard: self.index,
            totals: self.totals.borrow().clone(),
            deflate,
            open: self.sessions.borrow().len(),
            rooms,
            members,
            queued_bytes: self
                .sessions
                .borrow()
                .iter()
                .map(|(_, s)| s.outbound.queued())
                .sum(),
            lag: asked.elapsed(),
        }
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn config(&self) -> &ShardConfig {
        &self.config
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(crate) fn settings(&self) -> &WebSocketSettings {
        &self.config.websocket
    }

    /// The shard clock: sweeps run so far (at least a second apart).
    pub(crate) fn now(&self) -> u32 {
        self.clock.get()
    }

    /// A new open session from `peer`, with what its upgrade `agreed` to, registered for the sweep and
    /// shutdown until [`Shard::unregister`]; `None` when the shard already holds 2^24 sessions, which its
    /// ids cannot address (the kernel's descriptor ceiling, `fs.nr_open`, is 2^20 by default).
    pub(crate) fn register(
        &self,
        peer: SocketAddr,
        identity: Option<Identity>,
        agreed: Agreed,
    ) -> Option<Rc<SessionState>> {
        let n = self.next_session.get() + 1;
        self.next_session.set(n);
        let mut sessions = self.sessions.borrow_mut();
        let place = sessions.vacant_entry();
        let id = SessionId::new(self.index, place.key(), n)?;
        if agreed.deflate.is_some() {
            self.deflate_sessions.opened();
        }
        let state = Rc::new(SessionState::new(id, peer, identity, agreed, self.now()));
        place.insert(state.clone());
        self.count(|t| t.opened += 1);
        Some(state)
    }

    /// The open session `id` names, if it is still open here.
    fn session(&self, id: SessionId) -> Option<Rc<SessionState>> {
        let sessions = self.sessions.borrow();
        sessions.get(id.slot()).filter(|s| s.id == id).cloned()
    }

    /// The session has ended: it leaves every room and the shard forgets it.
    pub(crate) fn unregister(&self, session: &SessionState) {
        self.hold_unfinished(session, 0);
        self.leave_all(session);
        self.sessions.borrow_mut().remove(session.id.slot());
        self.detach(session);
        session.transition(Lifecycle::abort);
        let code = session.close_code().unwrap_or(NO_CLOSE_FRAME);
        self.count(|t| t.session_closed(code));
        if session.deflate().is_some() {
            self.deflate_sessions.ended();
        }
    }

    /// Records that `session`'s decoder now holds `bytes` for messages still arriving. Past
    /// `WEBSOCKET_MAX_UNFINISHED_BYTES_PER_SHARD` for the whole shard, the session holding the most is
    /// failed with 1008: many sessions each parking a large unfinished message would otherwise take the
    /// server's memory (and glibc keeps what it was given). It drops what it held on its next turn.
    pub(crate) fn hold_unfinished(&self, session: &SessionState, bytes: usize) {
        let before = session.unfinished();
        if before == bytes {
            return;
        }
        session.set_unfinished(bytes);
        let total = self.unfinished.get() - before + session.unfinished();
        self.unfinished.set(total);
        let budget = self.settings().max_unfinished_bytes_per_shard;
        if total <= budget {
            return;
        }
        let heaviest = self
            .sessions
            .borrow()
            .iter()
            .map(|(_, s)| s)
            .max_by_key(|s| s.unfinished())
            .cloned();
        if let Some(heaviest) = heaviest.filter(|s| s.lifecycle().reads_messages()) {
            if !self.config.bench_mode {
                tracing::warn!(
                    session = %heaviest.id,
                    held = heaviest.unfinished(),
                    shard_total = total,
                    budget,
                    "unfinished messages over the shard's budget; closing the session holding the most"
                );
            }
            heaviest.fail(
                1008,
                "unfinished messages over the server's budget",
                self.now(),
            );
        }
    }

    /// Every open session, as a snapshot: closing one may end it and change the table.
    pub(crate) fn open_sessions(&self) -> Vec<Rc<SessionState>> {
        self.sessions
            .borrow()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Lends the shard's read buffer for one read; `read` must not lend it again.
    pub(crate) fn with_read_buf<R>(&self, read: impl FnOnce(&mut [u8]) -> R) -> R {
        read(&mut self.read_buf.borrow_mut())
    }

    /// Lends the shard's inflater for decoding one read of a deflate session; `decode` must not lend it
    /// again (callbacks run inside, but only one task decodes at a time: the receiving task, or a
    /// connection task, and neither yields while it decodes).
    pub(crate) fn with_inflater<R>(&self, decode: impl FnOnce(&mut Inflater) -> R) -> R {
        decode(&mut self.inflater.borrow_mut())
    }

    /// Sends a data message to `session` alone: compressed if it negotiated deflate and compression is
    /// worth it, plain otherwise.
    pub(crate) fn send_data(&self, session: &SessionState, kind: DataKind, payload: &[u8]) {
        if !session.is_open() {
            return; // Nothing would be queued: spare the compression.
        }
        let compressed = session.deflate().and_then(|deflate| {
            self.deflater
                .borrow_mut()
                .frame_for_session(kind, payload, deflate)
        });
        let frame = compressed.unwrap_or_else(|| encode::data_frame(kind, payload));
        if self.send(session, frame) {
            self.count(|t| t.messages_sent += 1);
        }
    }

    /// Queues `frame` for `session` under the backpressure limit (see [`SessionState::send`]); whether it
    /// was queued.
    pub(crate) fn send(&self, session: &SessionState, frame: EncodedFrame) -> bool {
        let queued = session.send(frame, self.settings().max_backpressure, self.now());
        if queued {
            self.writer.want(session);
        }
        queued
    }

    /// Starts `session`'s close handshake with `code` and `reason`.
    pub(crate) fn close(&self, session: &SessionState, code: u16, reason: &str) {
        session.close(code, reason, self.now(), CloseCause::Requested);
    }

    /// Sends a data message to every member of `room` on every shard, in the room's one order: through
    /// the room's home shard (see [`Peers::home_of`]), which is this one or gets it posted.
    pub(crate) fn broadcast(&self, room: &str, kind: DataKind, payload: &[u8]) {
        match self.peers.home_of(room) {
            home if home == self.index => self.broadcast_from_here(room, kind, payload),
            home => self.peers.post_broadcast(home, room, kind, payload),
        }
    }

    /// On the room's home shard: a raw broadcast made on this node, fanned out here and, with the
    /// cluster, handed to the bridge for the room's members on other nodes.
    fn broadcast_from_here(&self, room: &str, kind: DataKind, payload: &[u8]) {
        self.fan_out(room, kind, payload);
        if let home::Backing::Cluster(bridge) = &self.backing {
            let _ = bridge.send(ClusterOp::Broadcast {
                room: Arc::from(room),
                kind,
                payload: payload.into(),
            });
        }
    }

    /// On the room's home shard: encodes the message once (compressing it at most once, see
    /// [`Deflater::prepare`]), delivers it to the members here and posts it once to every other shard.
    /// Every broadcast of a room passes here, and each shard's inbox keeps the order of what one shard
    /// posts to it, so every member sees the room's messages in the order they are fanned out here.
    fn fan_out(&self, room: &str, kind: DataKind, payload: &[u8]) {
        let message = Renditions::one(self.deflater.borrow_mut().prepare(kind, payload));
        self.fan_out_renditions(room, &message);
    }

    /// On the room's home shard: posts `message` once to every other shard and delivers it here.
    fn fan_out_renditions(&self, room: &str, message: &Renditions) {
        self.count(|t| t.broadcasts += 1);
        self.peers.broadcast(room, message, Some(self.index));
        self.deliver(room, message);
    }

    /// Queues `message` for every local member of `room`.
    fn deliver(&self, room: &str, message: &Renditions) {
        let queued = self.rooms.borrow().deliver(
            room,
            message,
            self.settings().max_backpressure,
            self.now(),
            &self.writer,
        );
        self.count(|t| {
            t.deliveries += queued;
            t.messages_sent += queued;
        });
    }

    /// Waits until a session has frames for the writer; [`Shard::write_wanted`] then writes them.
    pub(crate) async fn wait_for_writes(&self) {
        self.writer.wait().await
    }

    /// Writes every session named to the writer so far, [`RING_ENTRIES`] per submission (see [`writer`]);
    /// `batch` is scratch space the writer task keeps between turns.
    pub(crate) fn write_wanted(&self, batch: &mut WriteBatch) {
        self.writer.take_wanted(&mut batch.ids);
        for ids in batch.ids.chunks(RING_ENTRIES) {
            batch.sessions.clear();
            batch
                .sessions
                .extend(ids.iter().filter_map(|id| self.session(*id)));
            for session in &batch.sessions {
                session.write_taken();
            }
            let mut slot = self.ring.borrow_mut();
            let written = match slot.as_mut() {
                Some(ring) => self.writer.write(ring, &batch.sessions),
                // The ring failed earlier in this round: the sessions' own tasks write.
                None => {
                    batch.sessions.iter().for_each(|s| s.wake());
                    Ok(0)
                }
            };
            drop(slot);
            match written {
                Ok(bytes) => self.count(|t| t.socket_bytes_written += bytes),
                Err(e) => self.ring_failed(&e),
            }
        }
        batch.sessions.clear();
        self.wake_receiver();
    }

    /// Lends the session's socket `fd` to the shard's writer and starts receiving on it through the
    /// shard's ring, until [`Shard::detach`]; `false` when the shard has no ring, and the connection task
    /// reads for itself.
    pub(crate) fn attach(&self, session: &SessionState, fd: RawFd) -> bool {
        session.attach_socket(fd);
        let mut slot = self.ring.borrow_mut();
        let Some(ring) = slot.as_mut() else {
            return false;
        };
        let armed = ring.arm_receive(fd, session.id);
        drop(slot);
        match armed {
            Ok(()) => {
                self.wake_receiver();
                true
            }
            Err(e) => {
                self.ring_failed(&e);
                false
            }
        }
    }

    /// The session's socket is about to be closed: neither the writer nor the ring may use it any more
    /// (the descriptor's number could be reused), so its receive is cancelled.
    pub(crate) fn detach(&self, session: &SessionState) {
        if session.socket().is_none() {
            return;
        }
        session.detach_socket();
        let mut slot = self.ring.borrow_mut();
        let Some(ring) = slot.as_mut() else { return };
        let cancelled = ring.cancel_receive(session.id);
        drop(slot);
        match cancelled {
            Ok(()) => self.wake_receiver(),
            Err(e) => self.ring_failed(&e),
        }
    }

    /// Waits until the ring has receive completions to hand out ([`Shard::take_received`]): the kernel
    /// signalled the ring's eventfd, this thread reaped some while it sent, or the sweep nudged it
    /// ([`Shard::check_received`]). Without a ring (none, or it failed) it waits for ever.
    pub(crate) async fn wait_for_received(&self) {
        let Some(eventfd) = self.ring.borrow().as_ref().map(ShardRing::eventfd) else {
            return std::future::pending().await;
        };
        let reaped = poll_fn(|cx| {
            if self.nudged.take() || self.has_received() {
                Poll::Ready(())
            } else {
                self.receiver.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        let signalled = async {
            if let Err(e) = glommio::io::readable(eventfd).await {
                // Nothing would wake the receiving task for its sessions' bytes any more.
                self.ring_failed(&e);
            }
        };
        futures_lite::future::or(reaped, signalled).await;
        if let Some(ring) = self.ring.borrow().as_ref() {
            ring.clear_signal();
        }
    }

    /// Hands what the sessions received to `on_bytes`, in the order it arrived, up to
    /// [`RECEIPTS_PER_PASS`] completions; records the end of a session's stream in its
    /// [`SessionState::receiving`] and wakes its task; arms again a receive the kernel ended for want of
    /// buffers. Returns whether completions are left for another pass.
    pub(crate) fn take_received(
        &self,
        mut on_bytes: impl FnMut(&Rc<SessionState>, &mut [u8]),
    ) -> bool {
        for _ in 0..RECEIPTS_PER_PASS {
            let next = self
                .ring
                .borrow_mut()
                .as_mut()
                .map(ShardRing::next_received);
            let receipt = match next {
                None | Some(Ok(None)) => return false,
                Some(Ok(Some(receipt))) => receipt,
                Some(Err(e)) => {
                    self.ring_failed(&e);
                    return false;
                }
            };
            let session = self.session(receipt.session(self.index));
            let result = receipt.result();
            if let Some(buffer) = receipt.buffer() {
                if let (Some(session), Ok(len)) = (&session, usize::try_from(result)) {
                    let slot = self.ring.borrow();
                    let ring = slot.as_ref().expect("a receipt comes from the ring");
                    // SAFETY: the buffer and length come from this receive completion, and the buffer
                    // is given back below, after the slice is gone. Nothing in `on_bytes` gives buffers
                    // back or frees the ring (only the receiving task hands receipts out, and a failed
                    // ring is leaked, never unmapped).
                    let bytes = unsafe { ring.received_bytes(buffer, len) };
                    drop(slot);
                    on_bytes(session, bytes);
                }
                if let Some(ring) = self.ring.borrow_mut().as_mut() {
                    // SAFETY: handed out by this receipt, given back once, and the slice made of it
                    // above is gone.
                    unsafe { ring.provide(buffer) };
                }
            }
            let Some(session) = session else {
                continue; // Ended, or a cancelled receive's last word.
            };
            if receipt.armed() {
                continue;
            }
            match result {
                0 => session.received_end(Ok(())),
                _ if result > 0 || result == -libc::ENOBUFS || result == -libc::ECANCELED => {
                    // Out of buffers, or the kernel stopped the receive (or cancelled it: only `detach`
                    // does that here, after taking the socket): the bytes wait in the socket, and a
                    // session that still lends it is armed again.
                    let Some(fd) = session.socket() else { continue };
                    let queued = self
                        .ring
                        .borrow_mut()
                        .as_mut()
                        .map(|ring| ring.queue_receive(fd, session.id));
                    if let Some(Err(e)) = queued {
                        self.ring_failed(&e);
                        return false;
                    }
                }
                _ => session.received_end(Err(io::Error::from_raw_os_error(-result))),
            }
        }
        true
    }

    /// Whether the ring has receive completions for the receiving task (see [`ShardRing::has_received`]).
    fn has_received(&self) -> bool {
        self.ring
            .borrow_mut()
            .as_mut()
            .is_some_and(ShardRing::has_received)
    }

    /// Runs the receiving task if this thread reaped receive completions while it used the ring.
    fn wake_receiver(&self) {
        if self.has_received() {
            if let Some(task) = self.receiver.take() {
                task.wake();
            }
        }
    }

    /// The ring failed: which of its operations happened is unknown, so every session is cut off (their
    /// clients reconnect) and the ring is never used again, nor freed (the kernel may still hold
    /// pointers into it). New sessions read and write from their own tasks.
    fn ring_failed(&self, error: &io::Error) {
        tracing::error!(shard = self.index, %error, "the shard's io_uring ring failed; its sessions are dropped, and new ones read and write from their own tasks");
        std::mem::forget(self.ring.borrow_mut().take());
        self.writer.unbatch();
        for session in self.open_sessions() {
            // The forgotten ring's receives keep the sockets open: ending the connections is what
            // tells the clients to reconnect.
            if let Some(fd) = session.socket() {
                // SAFETY: shutdown(2) on a descriptor the session's task holds open; no memory.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            session.abort();
        }
    }

    /// The sweep's safety net for a missed wake-up: if the kernel announces completion work for the
    /// ring (see [`ShardRing::work_announced`]), the receiving task runs. Once a second, so a signal
    /// lost to a weaker memory model than x86's costs at most that.
    pub(crate) fn check_received(&self) {
        let announced = self
            .ring
            .borrow_mut()
            .as_mut()
            .is_some_and(ShardRing::work_announced);
        if announced {
            self.nudged.set(true);
            if let Some(task) = self.receiver.take() {
                task.wake();
            }
        }
    }

    /// Delivers what other shards posted and not yet delivered.
    ///
    /// The inbox task calls this when woken, and every session task before it writes. While a shard is
    /// busy writing a round of broadcast frames, the inbox task's wake-up waits behind all of those
    /// writes; taking the posts in the sessions lets the frames join the writes still to come in the round
    /// instead of the next one. In the closed loop of a 2-shard `saturate` run (1,000 members, window 32)
    /// that removed part of the second shard's lag: deliveries per server CPU-second rose in each of 5
    /// paired runs, by 10 % on average, and p99 latency fell from 13-15 ms to 11-13 ms.
    pub(crate) fn deliver_posted(&self) {
        while let Some(msg) = self.inbox.try_take() {
            if !matches!(msg, ShardMsg::Snapshot { .. }) {
                self.count(|t| t.cross_shard_posts += 1);
            }
            match msg {
                // Copied into frames of this shard's own first (see `mesh::Peers::broadcast`).
                ShardMsg::Broadcast { room, renditions } => {
                    let message = Renditions(
                        renditions
                            .iter()
                            .map(|r| {
                                r.as_ref().map(|frames| Prepared {
                                    plain: EncodedFrame::from(&frames.plain[..]),
                                    deflated: frames.deflated.as_deref().map(EncodedFrame::from),
                                })
                            })
                            .collect(),
                    );
                    self.deliver(&room, &message);
                }
                ShardMsg::RawBroadcast {
                    room,
                    kind,
                    payload,
                } => self.broadcast_from_here(&room, kind, &payload),
                ShardMsg::ToSession { id, kind, payload } => {
                    if let Some(session) = self.session(id) {
                        self.send_data(&session, kind, &payload);
                    }
                }
                ShardMsg::Joined {
                    room,
                    session,
                    token,
                    reply,
                } => self.joined(&room, session, token, reply),
                ShardMsg::Snapshot { asked, reply } => {
                    // The scrape has gone when it gave up waiting: nothing to answer.
                    let _ = reply.send(self.snapshot(asked));
                }
                home => self.as_home(home),
            }
        }
    }

    /// Waits until another shard posted something; [`Shard::deliver_posted`] then takes it.
    pub(crate) async fn wait_for_post(&self) {
        self.inbox.wait_for_post().await
    }

    /// Starts the close handshake of every open session with `code` and `reason` (shutdown).
    pub(crate) fn close_all(&self, code: u16, reason: &str) {
        for session in self.open_sessions() {
            self.close(&session, code, reason);
        }
    }

    /// One pass of the sweep: the clock ticks, then pings, idle timeouts, stuck close handshakes.
    ///
    /// The clock counts sweeps, so a stamp taken between two sweeps carries the earlier one's tick; a deadline
    /// of N seconds is passed only when more than N ticks have gone by since the stamp, which is more than N
    /// seconds after the activity itself: a session is never closed early, and at most about a second late.
    pub(crate) fn sweep(&self, ping: Option<&EncodedFrame>) {
        self.clock.set(self.clock.get().wrapping_add(1));
        let now = self.now();
        let idle_limit = self.settings().idle_timeout.map(|limit| limit.as_secs());
        for session in self.open_sessions() {
            let lifecycle = session.lifecycle();
            if lifecycle.is_open() {
                let silent = u64::from(now.wrapping_sub(session.last_seen()));
                if idle_limit.is_some_and(|limit| silent > limit) {
                    self.close(&session, 1001, "idle timeout");
                } else if let Some(ping) = ping {
                    self.send(&session, ping.clone());
                }
            } else {
                let since = lifecycle.closing_since().unwrap_or(now);
                if now.wrapping_sub(since) > CLOSE_TIMEOUT_SECS {
                    session.abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lone_shard() -> (Shard, Peers) {
        let (tx, rx) = mesh::inbox();
        let peers = Peers::new(vec![tx]);
        let config = ShardConfig::new(&Config::default());
        let admission = Arc::new(Admission::new(&config.websocket));
        let counters = Arc::default();
        (
            Shard::new(
                0,
                config,
                admission,
                peers.clone(),
                rx,
                counters,
                home::Backing::Memory,
            ),
            peers,
        )
    }

    /// More sessions than provided buffers, all of which sent before the shard reaps: the kernel ends the
    /// receives it has no buffer for (`ENOBUFS`), the shard arms them again, and every session's bytes
    /// arrive once and in order. Then a frame for each: more sessions than one submission takes.
    #[test]
    fn every_session_is_received_and_written_when_they_outnumber_buffers_and_submissions() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;

        let (shard, _peers) = lone_shard();
        if shard.ring.borrow().is_none() {
            // The kernel refused the ring (older than 6.1, or io_uring disabled): there is no ring path
            // to test here, and the shard said so in a warning.
            eprintln!("no io_uring ring on this kernel: the ring receive test does not apply");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sessions = usize::from(ring::BUFFERS) + 100;
        assert!(sessions > RING_ENTRIES);
        let mut clients = Vec::new();
        let mut sockets = Vec::new();
        let mut states = Vec::new();
        for _ in 0..sessions {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (socket, peer) = listener.accept().unwrap();
            let state = shard.register(peer, None, Agreed::default()).unwrap();
            assert!(
                shard.attach(&state, socket.as_raw_fd()),
                "the shard has a ring"
            );
            clients.push(client);
            sockets.push(socket);
            states.push(state);
        }
        let expected = |i: usize| format!("{i}:first;{i}:second;");
        for round in ["first", "second"] {
            for (i, client) in clients.iter_mut().enumerate() {
                client
                    .write_all(format!("{i}:{round};").as_bytes())
                    .unwrap();
            }
        }
        let mut received = vec![Vec::new(); sessions];
        let slot_of = |id: SessionId| states.iter().position(|s| s.id == id).unwrap();
        for _ in 0..1000 {
            if (0..sessions).all(|i| received[i].len() >= expected(i).len()) {
                break;
            }
            shard
                .take_received(|state, bytes| received[slot_of(state.id)].extend_from_slice(bytes));
        }
        for (i, bytes) in received.iter().enumerate() {
            assert_eq!(String::from_utf8_lossy(bytes), expected(i), "session {i}");
        }

        for state in &states {
            shard.send(state, encode::data_frame(DataKind::Text, b"hi"));
        }
        shard.write_wanted(&mut WriteBatch::default());
        for (i, client) in clients.iter_mut().enumerate() {
            let mut frame = [0; 4];
            client.read_exact(&mut frame).unwrap();
            assert_eq!(&frame, b"\x81\x02hi", "session {i}");
        }
        for state in &states {
            shard.detach(state);
        }
    }

    /// The history store's thread has ended (it failed): a room it cannot read back still takes joins
    /// and publications, from memory, instead of keeping its members joining and its publishers
    /// unanswered for ever.
    #[test]
    fn a_room_whose_store_has_ended_goes_on_without_it() {
        let (tx, rx) = mesh::inbox();
        let peers = Peers::new(vec![tx]);
        let config = ShardConfig::new(&Config::default());
        let admission = Arc::new(Admission::new(&config.websocket));
        let (store, store_thread) = crossbeam_channel::unbounded();
        drop(store_thread);
        let shard = Shard::new(
            0,
            config,
            admission,
            peers,
            rx,
            Arc::default(),
            home::Backing::Store(store),
        );
        let member = shard
            .register("127.0.0.1:1".parse().unwrap(), None, Agreed::default())
            .unwrap();
        shard.join(&member, "r", Default::default()).unwrap();
        assert_eq!(
            shard.rooms.borrow().counts(),
            (1, 1),
            "a member, not joining for ever"
        );
        shard.publish(&member, "r", "still here", Default::default());
        assert!(
            member.outbound.queued() > 0,
            "the publication was delivered"
        );
    }

    #[test]
    fn posted_broadcasts_reach_local_members_in_order() {
        let (shard, peers) = lone_shard();
        let peer = "127.0.0.1:1".parse().unwrap();
        let member = shard.register(peer, None, Agreed::default()).unwrap();
        let outsider = shard.register(peer, None, Agreed::default()).unwrap();
        shard.join(&member, "r", Default::default()).unwrap();
        for text in ["a", "b"] {
            let message = Renditions::one(Prepared {
                plain: encode::data_frame(DataKind::Text, text.as_bytes()),
                deflated: None,
            });
            peers.broadcast("r", &message, None);
        }
        shard.deliver_posted();
        // Two frames of a 2-byte header and 1 byte of text.
        assert_eq!(member.outbound.queued(), 6);
        assert_eq!(outsider.outbound.queued(), 0);
        assert!(shard.inbox.try_take().is_none());
    }

    #[test]
    fn a_broadcast_is_compressed_once_and_each_member_gets_the_frame_it_reads() {
        let (shard, _peers) = lone_shard();
        let peer = "127.0.0.1:1".parse().unwrap();
        let offer = |o: &'static str| Agreed {
            deflate: crate::ws::extensions::negotiate([o.as_bytes()]),
            subprotocol: None,
        };
        let deflate = shard
            .register(peer, None, offer("permessage-deflate"))
            .unwrap();
        let small_window = shard
            .register(
                peer,
                None,
                offer("permessage-deflate; server_max_window_bits=10"),
            )
            .unwrap();
        let plain = shard.register(peer, None, Agreed::default()).unwrap();
        for member in [&deflate, &small_window, &plain] {
            shard.join(member, "r", Default::default()).unwrap();
        }
        let text = "{\"type\":\"chat.message\",\"text\":\"hello hello hello hello hello hello\"}";
        shard.broadcast("r", DataKind::Text, text.as_bytes());
        assert_eq!(shard.deflater.borrow().done().messages_compressed, 1);
        let first_byte = |member: &SessionState| member.outbound.front_byte();
        // RSV1 only for the member that can read a 15-bit window; the others share the plain frame.
        assert_eq!(first_byte(&deflate), Some(0xc1));
        assert_eq!(first_byte(&small_window), Some(0x81));
        assert_eq!(first_byte(&plain), Some(0x81));
        // Nobody negotiated deflate: nothing is compressed.
        for member in [&deflate, &small_window] {
            shard.unregister(member);
        }
        shard.broadcast("r", DataKind::Text, text.as_bytes());
        assert_eq!(shard.deflater.borrow().done().messages_compressed, 1);
    }

    #[test]
    fn only_the_answer_to_the_latest_join_makes_a_member() {
        let (shard, _peers) = lone_shard();
        let peer = "127.0.0.1:1".parse().unwrap();
        let session = shard.register(peer, None, Agreed::default()).unwrap();
        let mut rooms = shard.rooms.borrow_mut();
        let first = rooms.join(&session, "r");
        let second = rooms.join(&session, "r");
        assert!(
            rooms.activate("r", session.id, first).is_none(),
            "superseded"
        );
        assert!(rooms.activate("r", session.id, second).is_some());
        assert_eq!(session.with_rooms(|joined| joined.len()), 1);
        // A member joining again gets nothing until its new answer; a left room's answer is ignored.
        let again = rooms.join(&session, "r");
        let message = Renditions::one(Prepared {
            plain: encode::data_frame(DataKind::Text, b"x"),
            deflated: None,
        });
        rooms.deliver("r", &message, 1 << 20, 0, &shard.writer);
        assert_eq!(session.outbound.queued(), 0);
        assert!(rooms.leave(&session, "r"));
        assert!(rooms.activate("r", session.id, again).is_none());
    }

    #[test]
    fn an_unregistered_session_is_gone_from_rooms_and_the_table() {
        let (shard, _peers) = lone_shard();
        let member = shard
            .register("127.0.0.1:1".parse().unwrap(), None, Agreed::default())
            .unwrap();
        shard.join(&member, "r", Default::default()).unwrap();
        shard.unregister(&member);
        assert!(shard.open_sessions().is_empty());
        assert!(member.lifecycle().is_over());
        shard.broadcast("r", DataKind::Text, b"x");
        assert_eq!(member.outbound.queued(), 0);
    }
}
