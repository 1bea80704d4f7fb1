//! [`Session`]: the handle callbacks receive for one WebSocket connection, and the state it shares with
//! the connection task that drives the socket.
//!
//! A session lives on one shard for its whole life; the handle is `!Send` on purpose, so it can only be
//! used on that shard (from callbacks, or tasks the application spawns there). Everything it does is
//! local and synchronous: sending queues a frame and wakes the connection task; joining a room touches
//! the shard's own room table; a broadcast is delivered locally and posted once to each other shard.
//!
//! It must not touch the socket: only the connection task reads and writes it.

use std::cell::Cell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::Waker;

use crate::error::SessionError;
use crate::outbound::{Outbound, Overflow};
use crate::shard::Shard;
use crate::ws::codec::{self, Frame};

/// A session's identity, unique within the process: the shard index in the top 16 bits, a per-shard
/// counter below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0 >> 48, self.0 & ((1 << 48) - 1))
    }
}

/// Where a session is in the close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; incoming data is discarded.
    Closing {
        /// When our close frame was queued (shard clock), for the close timeout.
        since: u32,
    },
    /// Nothing more will be read as messages: flush what is queued, then end, or, with `linger`, go on to
    /// [`Lifecycle::Draining`].
    Ending {
        /// When this state began (shard clock), for the close timeout.
        since: u32,
        /// Drain input after the flush instead of ending at once.
        linger: bool,
    },
    /// Our close frame is written and our write side shut down; input is read and dropped until the peer
    /// closes, so a protocol error's close frame is not lost to a TCP reset.
    Draining {
        /// When the close began (shard clock), for the close timeout.
        since: u32,
    },
    /// The close timeout passed; end now without flushing.
    Aborted,
}

impl Lifecycle {
    /// Whether application messages may still be sent and received.
    pub(crate) fn is_open(self) -> bool {
        matches!(self, Lifecycle::Open)
    }

    /// When the close began, if it has.
    pub(crate) fn closing_since(self) -> Option<u32> {
        match self {
            Lifecycle::Closing { since }
            | Lifecycle::Ending { since, .. }
            | Lifecycle::Draining { since } => Some(since),
            Lifecycle::Open | Lifecycle::Aborted => None,
        }
    }
}

/// The state a session's handle shares with its connection task.
pub(crate) struct SessionState {
    pub(crate) id: SessionId,
    /// The client's address as IP and port: 20 bytes where a `SocketAddr` takes 32 (the IPv6 flow label
    /// and scope, which a peer address does not need).
    pub(crate) peer: (IpAddr, u16),
    pub(crate) shard: Rc<Shard>,
    pub(crate) outbound: Outbound,
    /// The connection task's waker, to run it when frames are queued from elsewhere.
    pub(crate) waker: Cell<Option<Waker>>,
    pub(crate) lifecycle: Cell<Lifecycle>,
    /// Rooms joined, in order, so that the end of the session leaves them all. A `Cell` (taken and put
    /// back) rather than a `RefCell`: every session carries one, and the borrow flag would cost 8 bytes.
    pub(crate) rooms: Cell<Vec<Rc<str>>>,
    /// When anything last arrived from the peer (shard clock), for the idle timeout.
    pub(crate) last_seen: Cell<u32>,
    /// Where the shard's session slab keeps this session.
    pub(crate) slot: Cell<u32>,
}

impl SessionState {
    /// Runs `f` on the joined rooms, taken out of their `Cell` and put back; `f` must not reach this
    /// session's rooms again (it would see none).
    pub(crate) fn with_rooms<R>(&self, f: impl FnOnce(&mut Vec<Rc<str>>) -> R) -> R {
        let mut joined = self.rooms.take();
        let result = f(&mut joined);
        self.rooms.set(joined);
        result
    }
}

/// A connected WebSocket client, as callbacks see it. Cloning is cheap (a reference count).
#[derive(Clone)]
pub struct Session(pub(crate) Rc<SessionState>);

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.0.id)
            .field("peer", &self.peer_addr())
            .finish()
    }
}

impl Session {
    /// A new open session of `shard`, not yet registered anywhere.
    pub(crate) fn new(peer: SocketAddr, shard: &Rc<Shard>) -> Session {
        Session(Rc::new(SessionState {
            id: shard.next_session_id(),
            peer: (peer.ip(), peer.port()),
            shard: shard.clone(),
            outbound: Outbound::default(),
            waker: Cell::new(None),
            lifecycle: Cell::new(Lifecycle::Open),
            rooms: Cell::new(Vec::new()),
            last_seen: Cell::new(shard.now()),
            slot: Cell::new(u32::MAX),
        }))
    }

    /// This session's process-wide unique id.
    pub fn id(&self) -> SessionId {
        self.0.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.0.peer.0, self.0.peer.1)
    }

    /// The index of the shard (and so the core) that owns this session.
    pub fn shard(&self) -> usize {
        self.0.shard.index
    }

    /// Whether the session is open: not closing, not closed.
    pub fn is_open(&self) -> bool {
        self.0.lifecycle.get().is_open()
    }

    /// Sends a text message. Ignored once the session is closing.
    pub fn send_text(&self, text: &str) {
        self.send_frame(codec::text_frame(text));
    }

    /// Sends a binary message. Ignored once the session is closing.
    pub fn send_binary(&self, data: &[u8]) {
        self.send_frame(codec::binary_frame(data));
    }

    /// Starts the close handshake with `code` (e.g. 1000) and a reason of at most 123 bytes.
    pub fn close(&self, code: u16, reason: &str) {
        if self.is_open() {
            self.start_close(code, reason);
        }
    }

    /// Joins `room`; a session is a member at most once, and leaves every room when it ends.
    pub fn join_room(&self, room: &str) {
        self.0.shard.rooms.borrow_mut().join(self, room);
    }

    /// Leaves `room`; nothing happens if the session was not a member.
    pub fn leave_room(&self, room: &str) {
        self.0.shard.rooms.borrow_mut().leave(self, room);
    }

    /// Whether this session is a member of `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.0
            .with_rooms(|joined| joined.iter().any(|r| &**r == room))
    }

    /// How many rooms this session is a member of.
    pub fn room_count(&self) -> usize {
        self.0.with_rooms(|joined| joined.len())
    }

    /// The rooms this session is a member of, in the order joined.
    pub fn rooms(&self) -> Vec<String> {
        self.0
            .with_rooms(|joined| joined.iter().map(|r| r.to_string()).collect())
    }

    /// Sends `text` to every member of `room` on every shard, this session included if it is a member.
    /// The frame is encoded once and shared by all recipients.
    pub fn broadcast_text_to_room(&self, room: &str, text: &str) {
        self.0.shard.broadcast(room, codec::text_frame(text));
    }

    /// Queues an encoded frame (shared with other recipients) unless the session is closing. A frame that
    /// would pass the backpressure limit closes the session as a slow consumer; pongs and pings count too,
    /// so a client flooding pings without reading the pongs is one.
    pub(crate) fn send_frame(&self, frame: Frame) {
        if self.queue_frame(frame).is_err() {
            self.close_slow_consumer();
        }
    }

    /// Queues a frame without running any callback; an overflow is left to the caller to act on.
    pub(crate) fn queue_frame(&self, frame: Frame) -> Result<(), Overflow> {
        if !self.is_open() {
            return Ok(());
        }
        let limit = self.0.shard.settings.max_backpressure;
        self.0.outbound.push(frame, limit)?;
        self.wake();
        Ok(())
    }

    /// The slow-consumer policy: report, drop what is queued, close with 1008.
    pub(crate) fn close_slow_consumer(&self) {
        if !self.is_open() {
            return;
        }
        let limit = self.0.shard.settings.max_backpressure;
        let queued = self.0.outbound.queued();
        self.0
            .shard
            .report_error(self, &SessionError::SlowConsumer { queued, limit });
        self.0.outbound.discard();
        self.start_close(1008, "slow consumer");
    }

    /// Queues our close frame and waits for the peer's (bounded by the shard's close timeout).
    pub(crate) fn start_close(&self, code: u16, reason: &str) {
        self.0
            .outbound
            .push_unbounded(codec::close_frame(code, reason));
        let since = self.0.shard.now();
        self.0.lifecycle.set(Lifecycle::Closing { since });
        self.wake();
    }

    /// Runs the connection task so it writes what was queued or notices a state change.
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.0.waker.take() {
            waker.wake();
        }
    }
}
