//! [`SessionState`]: one session as its shard sees it: the outbound queue, the lifecycle, the liveness stamp,
//! the rooms joined and the waker of the connection task that drives the socket.
//!
//! It is what the shard's tables hold (its session slab and its rooms), what the sweep and shutdown close,
//! and what the public [`crate::Session`] handle points at. It sits below the shard in the data path and
//! never reaches up to it: whatever it needs from the shard (the clock, the backpressure limit) is passed
//! in by the caller. So a slow consumer found during a room's fan-out is not reported here: the state
//! records it ([`CloseCause::SlowConsumer`]) and wakes the connection task, which tells `on_error`.
//!
//! It must not touch the socket (the connection task, the shard's ring and its writer do) nor run
//! callbacks.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::task::Waker;

use crate::auth::Identity;
use crate::lifecycle::{CloseCause, Lifecycle};
use crate::outbound::{Outbound, Overflow};
use crate::rate_limit::RateLimiter;
use crate::ws::codec::Decoder;
use crate::ws::encode::{self, EncodedFrame};
use crate::ws::extensions::PerMessageDeflate;
use crate::ws::handshake::Agreed;

/// A session's identity, unique within the process: the shard index in the top 16 bits, the session's
/// place in its shard's table in the next 24, and the low 24 bits of a per-shard counter, which tell a
/// session from the ones that held its place before. So the id alone finds the session (from another
/// thread, [`crate::ServerHandle::send_text_to_session`]) without a table of ids on every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Bits of the place in the shard's table, and of the counter.
const SLOT_BITS: u32 = 24;

impl SessionId {
    /// The id of the `count`th session of shard `shard`, at `slot` in its table; `None` past 2^24 places.
    pub(crate) fn new(shard: usize, slot: usize, count: u64) -> Option<SessionId> {
        let slot = u64::try_from(slot).ok().filter(|s| *s < 1 << SLOT_BITS)?;
        let count = count & ((1 << SLOT_BITS) - 1);
        Some(SessionId(
            ((shard as u64) << 48) | (slot << SLOT_BITS) | count,
        ))
    }

    /// The index of the shard that owns the session.
    pub fn shard(self) -> usize {
        (self.0 >> 48) as usize
    }

    /// The session's place in its shard's table.
    pub(crate) fn slot(self) -> usize {
        ((self.0 >> SLOT_BITS) & ((1 << SLOT_BITS) - 1)) as usize
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0 >> 48, self.0 & ((1 << 48) - 1))
    }
}

/// The state of one session shared by its shard, its connection task and its handles.
pub(crate) struct SessionState {
    pub(crate) id: SessionId,
    /// The client's address as IP and port: 20 bytes where a `SocketAddr` takes 32 (the IPv6 flow label
    /// and scope, which a peer address does not need).
    peer: (IpAddr, u16),
    pub(crate) outbound: Outbound,
    /// The connection task's waker, to run it when frames are queued from elsewhere.
    waker: Cell<Option<Waker>>,
    lifecycle: Cell<Lifecycle>,
    /// Rooms joined, in order, so that the end of the session leaves them all. A `Cell` (taken and put
    /// back) rather than a `RefCell`: every session carries one, and the borrow flag would cost 8 bytes.
    rooms: Cell<Vec<Rc<str>>>,
    /// When anything last arrived from the peer (shard clock), for the idle timeout.
    last_seen: Cell<u32>,
    /// Bytes its connection's decoder holds for messages still arriving, as last told to the shard.
    unfinished: Cell<u32>,
    /// Who the authentication hook said this is; boxed, so a session without one pays 8 bytes.
    identity: Option<Box<Identity>>,
    /// What its upgrade agreed to: permessage-deflate's parameters (the session's only compression
    /// state: the deflater and inflater are its shard's) and the subprotocol; 3 bytes.
    agreed: Agreed,
    /// The socket, for the shard's ring and writer, while the connection task holds it open; -1 before
    /// and after.
    socket: Cell<RawFd>,
    /// Named to the shard's writer and not yet written by it ([`crate::shard::writer`]).
    write_wanted: Cell<bool>,
    /// The code of the first close frame, ours or the peer's; 0 while there is none (for `/metrics`).
    close_code: Cell<u16>,
    /// What reading from the peer keeps between arrivals.
    pub(crate) receiving: RefCell<Receiving>,
}

/// What reading from the peer keeps between arrivals: the frame decoder (with a message still arriving),
/// the rate limiter, and how the stream ended once it has. The code that receives for the session fills
/// it (its shard's receiving task, or its connection task when the shard has no ring); the connection task
/// takes the end and clears the decoder once nothing more is read as messages.
#[derive(Default)]
pub(crate) struct Receiving {
    pub(crate) decoder: Decoder,
    pub(crate) limiter: RateLimiter,
    /// The peer's end of the stream (`Ok`) or the socket's failure, for the connection task to act on.
    pub(crate) ended: Option<io::Result<()>>,
}

impl SessionState {
    /// An open session of `identity`, with what its upgrade `agreed` to, that has not been heard from since
    /// `now` (shard clock).
    pub(crate) fn new(
        id: SessionId,
        peer: SocketAddr,
        identity: Option<Identity>,
        agreed: Agreed,
        now: u32,
    ) -> SessionState {
        SessionState {
            id,
            peer: (peer.ip(), peer.port()),
            outbound: Outbound::default(),
            waker: Cell::new(None),
            lifecycle: Cell::new(Lifecycle::Open),
            rooms: Cell::new(Vec::new()),
            last_seen: Cell::new(now),
            unfinished: Cell::new(0),
            identity: identity.map(Box::new),
            agreed,
            socket: Cell::new(-1),
            write_wanted: Cell::new(false),
            close_code: Cell::new(0),
            receiving: RefCell::default(),
        }
    }

    /// The session's socket, while its connection task holds it open.
    pub(crate) fn socket(&self) -> Option<RawFd> {
        Some(self.socket.get()).filter(|fd| *fd >= 0)
    }

    /// Lends the shard's writer the socket `fd`, until [`SessionState::detach_socket`]; the connection
    /// task must detach it before it closes it, or the writer could write to whatever reuses the number.
    pub(crate) fn attach_socket(&self, fd: RawFd) {
        self.socket.set(fd);
    }

    /// The socket is about to be closed: the writer must not use it any more.
    pub(crate) fn detach_socket(&self) {
        self.socket.set(-1);
    }

    /// Marks the session as named to the shard's writer; `false` if it already was.
    pub(crate) fn want_write(&self) -> bool {
        !self.write_wanted.replace(true)
    }

    /// The shard's writer took the session: frames queued from now on name it again.
    pub(crate) fn write_taken(&self) {
        self.write_wanted.set(false);
    }

    /// permessage-deflate, if the session negotiated it.
    pub(crate) fn deflate(&self) -> Option<PerMessageDeflate> {
        self.agreed.deflate
    }

    /// The subprotocol agreed, as its index in the application's list.
    pub(crate) fn subprotocol(&self) -> Option<u8> {
        self.agreed.subprotocol
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// The client's address.
    pub(crate) fn peer_addr(&self) -> SocketAddr {
        SocketAddr::new(self.peer.0, self.peer.1)
    }

    pub(crate) fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.get()
    }

    /// Moves the lifecycle on by one of [`Lifecycle`]'s transitions.
    pub(crate) fn transition(&self, to: impl FnOnce(Lifecycle) -> Lifecycle) {
        self.lifecycle.set(to(self.lifecycle.get()));
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lifecycle.get().is_open()
    }

    pub(crate) fn last_seen(&self) -> u32 {
        self.last_seen.get()
    }

    /// Something arrived from the peer at `now` (shard clock).
    pub(crate) fn seen(&self, now: u32) {
        self.last_seen.set(now);
    }

    pub(crate) fn unfinished(&self) -> usize {
        self.unfinished.get() as usize
    }

    pub(crate) fn set_unfinished(&self, bytes: usize) {
        self.unfinished
            .set(u32::try_from(bytes).unwrap_or(u32::MAX));
    }

    /// Runs `f` on the joined rooms, taken out of their `Cell` and put back; `f` must not reach this
    /// session's rooms again (it would see none).
    pub(crate) fn with_rooms<R>(&self, f: impl FnOnce(&mut Vec<Rc<str>>) -> R) -> R {
        let mut joined = self.rooms.take();
        let result = f(&mut joined);
        self.rooms.set(joined);
        result
    }

    /// The rooms joined, leaving none behind (the session's end).
    pub(crate) fn take_rooms(&self) -> Vec<Rc<str>> {
        self.rooms.take()
    }

    /// Queues an encoded frame (shared with other recipients) unless the session is closing; `true` when
    /// it was queued, and so is to be written (the caller names the session to its shard's writer). A
    /// frame that would put more than `limit` bytes in the queue makes the session a slow consumer: what is
    /// queued is dropped (it could not be delivered in time anyway) and the session closes with 1008; pongs
    /// and pings count too, so a client flooding pings without reading the pongs is one.
    #[must_use = "a queued frame is written only once the session is named to its shard's writer"]
    pub(crate) fn send(&self, frame: EncodedFrame, limit: usize, now: u32) -> bool {
        if !self.is_open() {
            return false;
        }
        match self.outbound.push(frame, limit) {
            Ok(()) => true,
            Err(Overflow { queued }) => {
                self.outbound.discard();
                let queued = u32::try_from(queued).unwrap_or(u32::MAX);
                self.close(
                    1008,
                    "slow consumer",
                    now,
                    CloseCause::SlowConsumer { queued },
                );
                false
            }
        }
    }

    /// The code of the session's first close frame, whoever sent it.
    pub(crate) fn close_code(&self) -> Option<u16> {
        Some(self.close_code.get()).filter(|code| *code != 0)
    }

    /// A close frame with `code` was sent or received; only the first one is the session's close code.
    pub(crate) fn closing_with(&self, code: u16) {
        if self.close_code.get() == 0 {
            self.close_code.set(code);
        }
    }

    /// Queues our close frame and waits for the peer's (bounded by the shard's close timeout). Only an open
    /// session sends one.
    pub(crate) fn close(&self, code: u16, reason: &str, now: u32, cause: CloseCause) {
        if !self.is_open() {
            return;
        }
        self.closing_with(code);
        self.outbound
            .push_unbounded(encode::close_frame(code, reason));
        self.transition(|l| l.close_sent(now, cause));
        self.wake();
    }

    /// Fails the connection: queues a close frame with `code` and `reason`, then flushes it, shuts the write
    /// side and drains (no waiting for the peer's close, nothing more read as messages). A session already
    /// failing or ended is left as it is.
    pub(crate) fn fail(&self, code: u16, reason: &str, now: u32) {
        if !self.lifecycle().reads_messages() {
            return;
        }
        if self.is_open() {
            self.closing_with(code);
            self.outbound
                .push_unbounded(encode::close_frame(code, reason));
        }
        self.transition(|l| l.failed(now));
        self.wake();
    }

    /// Registers the connection task's waker, keeping the one it has when it would wake the same task.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let kept = self.waker.take();
        self.waker.set(Some(match kept {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        }));
    }

    /// The peer ended its stream (`Ok`) or the socket failed: the connection task acts on it.
    pub(crate) fn received_end(&self, end: io::Result<()>) {
        self.receiving.borrow_mut().ended = Some(end);
        self.wake();
    }

    /// Ends the session at once, without a close handshake: its task drops the connection.
    pub(crate) fn abort(&self) {
        self.transition(Lifecycle::abort);
        self.wake();
    }

    /// Runs the connection task so it writes what was queued or notices a state change.
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}
