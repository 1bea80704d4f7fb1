//! The shard's writer: the frames a turn of the event loop queued for many sessions leave in one
//! io_uring submission (one `io_uring_enter`), not one `sendmsg` per session.
//!
//! A fan-out queues a frame for each member ([`SessionState::send`]) and, the first time, names the
//! session here ([`Writer::want`]). The shard's writer task is woken once; glommio runs it after the tasks
//! already scheduled in the turn, so it finds every session the turn's fan-outs named and writes them all
//! ([`Writer::write`]): one `IORING_OP_SENDMSG` per session, with an iovec per queued frame (up to
//! [`IOVECS_PER_SEND`]), submitted together on a ring of the shard's own. A broadcast to a thousand
//! members is four system calls (the ring takes [`RING_ENTRIES`] at a time) and wakes no session task.
//!
//! Every send carries `MSG_DONTWAIT`, which io_uring honours as "do not wait" (its `REQ_F_NOWAIT`): a
//! socket with room takes the bytes during the submission and a full one completes with `EAGAIN` rather
//! than being retried later. So every completion is there when the submission returns, and the writer
//! reaps them all before it returns: the iovecs, and the frames they point at, are never touched while
//! the kernel may still read them, and nothing is left in flight between turns.
//!
//! What the kernel did not take goes back to the session's connection task ([`crate::connection`]),
//! which writes through glommio and waits for writability there: the rest of a partly written queue, a
//! queue the socket refused (`EAGAIN`), a send that failed (the task's own write meets the error and
//! reports it). So does a closing session whose queue is now empty, to finish its close handshake. An open
//! session whose queue was written needs its task for nothing.
//!
//! Why a ring of the shard's own: glommio has no way to submit socket sends that leaves them for the end
//! of the turn, and its own `sendmsg` path is one `sendmsg` per call. Why not provided or registered
//! buffers: the frames are already shared, reference-counted buffers (a broadcast's frame is encoded once
//! and every member's queue points at it), so the iovecs point at them and nothing is copied.
//!
//! If the kernel refuses the ring (io_uring disabled, or locked memory on a kernel that charges rings to
//! it) the writer says so once at start-up and every session writes from its own task, as before.
//!
//! It must not decide what is sent or when a session closes: it writes what the queues hold.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use io_uring::{opcode, types, IoUring};

use crate::session_state::{SessionId, SessionState};

/// Sessions written per submission; also the ring's size.
pub(crate) const RING_ENTRIES: usize = 256;
/// Frames one session's send carries at most; what is left waits for the next round.
pub(crate) const IOVECS_PER_SEND: usize = 32;

/// The shard's sessions waiting to be written, and the ring that writes them.
pub(crate) struct Writer {
    /// `None`: the kernel refused a ring (or it failed); sessions write from their own tasks.
    ring: RefCell<Option<Ring>>,
    /// Sessions named since the writer task last ran, each once (see [`SessionState::want_write`]).
    wanted: RefCell<Vec<SessionId>>,
    /// The writer task, while it waits for sessions to be named.
    task: Cell<Option<Waker>>,
}

/// The ring and the memory its submissions point at.
struct Ring {
    uring: IoUring,
    /// One message header per submission slot; each points at its slot's iovecs.
    headers: Box<[libc::msghdr]>,
    /// [`IOVECS_PER_SEND`] iovecs per submission slot.
    iovecs: Box<[libc::iovec]>,
    /// Bytes each slot's send asked the kernel to write.
    asked: Box<[usize]>,
}

impl Writer {
    /// A writer with a ring of its own, or without one (and a warning) if the kernel refuses it.
    pub(crate) fn new(shard: usize) -> Writer {
        let ring = match Ring::new() {
            Ok(ring) => Some(ring),
            Err(e) => {
                tracing::warn!(
                    shard,
                    error = %e,
                    "no io_uring ring for batched writes; each session writes with its own sendmsg"
                );
                None
            }
        };
        Writer {
            ring: RefCell::new(ring),
            wanted: RefCell::new(Vec::new()),
            task: Cell::new(None),
        }
    }

    /// `session` has frames queued: the writer task writes them this turn. Without a ring, its own
    /// connection task does.
    pub(crate) fn want(&self, session: &SessionState) {
        if self.ring.borrow().is_none() {
            session.wake();
            return;
        }
        if !session.want_write() {
            return; // Already named this turn.
        }
        let mut wanted = self.wanted.borrow_mut();
        wanted.push(session.id);
        if wanted.len() == 1 {
            if let Some(task) = self.task.take() {
                task.wake();
            }
        }
    }

    /// Waits until a session is named.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.wanted.borrow().is_empty() {
                self.task.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// The sessions named so far, oldest first, in `into` (cleared first); none are named after.
    pub(crate) fn take_wanted(&self, into: &mut Vec<SessionId>) {
        into.clear();
        std::mem::swap(into, &mut self.wanted.borrow_mut());
    }

    /// Writes what each of `sessions` (at most [`RING_ENTRIES`]) has queued, in one submission, and hands
    /// whatever the kernel did not take back to the session's connection task.
    pub(crate) fn write(&self, sessions: &[Rc<SessionState>]) {
        let mut slot = self.ring.borrow_mut();
        let Some(ring) = slot.as_mut() else { return };
        debug_assert!(sessions.len() <= RING_ENTRIES);
        let submitted = ring.submit(sessions);
        if submitted == 0 {
            return;
        }
        if let Err(e) = ring.wait_for(submitted) {
            // Which sends happened is unknown, so none of these queues can be trusted: the sessions are
            // cut off (their clients reconnect). The ring is never used again, nor freed: the kernel may
            // still hold pointers into it.
            tracing::error!(error = %e, "the write ring failed; its sessions are dropped, and every session writes from its own task from now on");
            for session in sessions {
                session.abort();
            }
            std::mem::forget(slot.take());
            return;
        }
        ring.reap(sessions);
    }
}

impl Ring {
    fn new() -> io::Result<Ring> {
        // Only the shard's thread submits, and completions are reaped by that thread in the same call:
        // the kernel can skip the cross-thread bookkeeping (6.1+); older kernels get a plain ring.
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(RING_ENTRIES as u32)
            .or_else(|_| IoUring::new(RING_ENTRIES as u32))?;
        // SAFETY: all-zero is a valid msghdr and a valid iovec (null pointers, zero lengths).
        let (header, iovec) = unsafe {
            (
                std::mem::zeroed::<libc::msghdr>(),
                std::mem::zeroed::<libc::iovec>(),
            )
        };
        Ok(Ring {
            uring,
            headers: vec![header; RING_ENTRIES].into_boxed_slice(),
            iovecs: vec![iovec; RING_ENTRIES * IOVECS_PER_SEND].into_boxed_slice(),
            asked: vec![0; RING_ENTRIES].into_boxed_slice(),
        })
    }

    /// Queues one send per session with something to write; returns how many.
    fn submit(&mut self, sessions: &[Rc<SessionState>]) -> usize {
        let mut submitted = 0;
        for (slot, session) in sessions.iter().enumerate() {
            self.asked[slot] = 0;
            let Some(fd) = session.socket() else { continue };
            if !session.lifecycle().can_write() {
                continue;
            }
            let iovecs = &mut self.iovecs[slot * IOVECS_PER_SEND..(slot + 1) * IOVECS_PER_SEND];
            let (count, bytes) = session.outbound.gather(iovecs);
            if count == 0 {
                continue;
            }
            self.asked[slot] = bytes;
            let header = &mut self.headers[slot];
            header.msg_iov = iovecs.as_mut_ptr();
            header.msg_iovlen = count;
            let send = opcode::SendMsg::new(types::Fd(fd), header)
                .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                .build()
                .user_data(slot as u64);
            // SAFETY: the header and iovecs live in this ring and the frames they point at in the
            // session's queue; neither is touched until `reap` has taken every completion. The queue
            // cannot be full: a submission holds at most RING_ENTRIES sends and is emptied by each
            // `wait_for`.
            unsafe { self.uring.submission().push(&send) }.expect("at most RING_ENTRIES sends");
            submitted += 1;
        }
        submitted
    }

    /// Submits, and waits until all `submitted` sends have completed (at once: none of them waits).
    fn wait_for(&mut self, submitted: usize) -> io::Result<()> {
        loop {
            match self.uring.submit_and_wait(submitted) {
                Ok(_) if self.uring.completion().len() >= submitted => return Ok(()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Accounts for every completion; what is left goes to the session's task.
    fn reap(&mut self, sessions: &[Rc<SessionState>]) {
        for completion in self.uring.completion() {
            let slot = completion.user_data() as usize;
            let session = &sessions[slot];
            let result = completion.result();
            let written = usize::try_from(result).unwrap_or(0);
            session.outbound.advance(written);
            // A full socket, an error, more frames than one send carries, or a close to finish: the
            // session's task takes it from here.
            let done = result >= 0 && written == self.asked[slot] && session.outbound.is_empty();
            if !done || !session.is_open() {
                session.wake();
            }
        }
    }
}
