//! The shard's writer: the frames a turn of the event loop queued for many sessions leave in one
//! io_uring submission (one `io_uring_enter`), not one `sendmsg` per session.
//!
//! A fan-out queues a frame for each member ([`SessionState::send`]) and, the first time, names the
//! session here ([`Writer::want`]). The shard's writer task is woken once; glommio runs it after the tasks
//! already scheduled in the turn, so it finds every session the turn's fan-outs named and writes them all
//! ([`Writer::write`]): one `IORING_OP_SENDMSG` per session, with an iovec per queued frame (up to
//! [`IOVECS_PER_SEND`]), submitted together on the shard's own ring ([`crate::shard::ring`]). A broadcast
//! to a thousand members is four system calls (the ring takes [`RING_ENTRIES`] at a time) and wakes no session task.
//!
//! Every send carries `MSG_DONTWAIT`, which io_uring honours as "do not wait" (its `REQ_F_NOWAIT`): a
//! socket with room takes the bytes during the submission and a full one completes with `EAGAIN` rather
//! than being retried later. So every completion is there when the submission returns, and the writer
//! reaps them all before it returns: the iovecs, and the frames they point at, are never touched while
//! the kernel may still read them, and nothing is left in flight between turns.
//!
//! What the kernel did not take goes back to the session's connection task ([`crate::connection`]),
//! which writes with its own `sendmsg` and waits for writability through glommio: the rest of a partly written queue, a
//! queue the socket refused (`EAGAIN`), a send that failed (the task's own write meets the error and
//! reports it). So does a closing session whose queue is now empty, to finish its close handshake. An open
//! session whose queue was written needs its task for nothing.
//!
//! Why the shard's own ring (the one its sessions receive through): glommio has no way to submit socket
//! sends that leaves them for the end of the turn, and its own `sendmsg` path is one `sendmsg` per call. Why not provided or registered
//! buffers: the frames are already shared, reference-counted buffers (a broadcast's frame is encoded once
//! and every member's queue points at it), so the iovecs point at them and nothing is copied.
//!
//! Without the ring (the kernel refused it: see [`crate::shard::ring`]) every session writes from its own
//! task.
//!
//! It must not decide what is sent or when a session closes: it writes what the queues hold.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use io_uring::{opcode, types};

use super::ring::{ShardRing, IOVECS_PER_SEND, RING_ENTRIES};
use crate::session_state::{SessionId, SessionState};

/// The shard's sessions waiting to be written.
pub(crate) struct Writer {
    /// Whether the shard has a ring to write through; without one, sessions write from their own tasks.
    batched: Cell<bool>,
    /// Sessions named since the writer task last ran, each once (see [`SessionState::want_write`]).
    wanted: RefCell<Vec<SessionId>>,
    /// The writer task, while it waits for sessions to be named.
    task: Cell<Option<Waker>>,
}

impl Writer {
    /// A writer for a shard with a ring (`batched`) or without one.
    pub(crate) fn new(batched: bool) -> Writer {
        Writer {
            batched: Cell::new(batched),
            wanted: RefCell::new(Vec::new()),
            task: Cell::new(None),
        }
    }

    /// `session` has frames queued: the writer task writes them this turn. Without a ring, its own
    /// connection task does.
    pub(crate) fn want(&self, session: &SessionState) {
        if !self.batched.get() {
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

    /// The shard's ring is gone: from now on each session writes from its own task.
    pub(crate) fn unbatch(&self) {
        self.batched.set(false);
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

    /// Writes what each of `sessions` (at most [`RING_ENTRIES`]) has queued, in one submission on
    /// `ring`, and hands whatever the kernel did not take back to the session's connection task; returns
    /// the bytes written. An error is the ring's failure: which sends happened is unknown, so the caller
    /// must give up on the ring and the sessions.
    pub(crate) fn write(
        &self,
        ring: &mut ShardRing,
        sessions: &[Rc<SessionState>],
    ) -> std::io::Result<u64> {
        debug_assert!(sessions.len() <= RING_ENTRIES);
        let mut submitted = 0;
        for (slot, session) in sessions.iter().enumerate() {
            ring.sends.asked[slot] = 0;
            let Some(fd) = session.socket() else { continue };
            if !session.lifecycle().can_write() {
                continue;
            }
            let iovecs =
                &mut ring.sends.iovecs[slot * IOVECS_PER_SEND..(slot + 1) * IOVECS_PER_SEND];
            let (count, bytes) = session.outbound.gather(iovecs);
            if count == 0 {
                continue;
            }
            ring.sends.asked[slot] = bytes;
            let header = &mut ring.sends.headers[slot];
            header.msg_iov = iovecs.as_mut_ptr();
            header.msg_iovlen = count;
            let send = opcode::SendMsg::new(types::Fd(fd), header)
                .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                .build();
            // SAFETY: the header and iovecs live in the ring, which does not move them, and the frames
            // they point at in the session's queue, which is not touched until `complete_sends` below
            // has reaped every send.
            unsafe { ring.push_send(send, slot) }?;
            submitted += 1;
        }
        if submitted == 0 {
            return Ok(0);
        }
        let mut asked = std::mem::take(&mut ring.sends.asked);
        let mut total = 0;
        let completed = ring.complete_sends(submitted, |slot, result| {
            let session = &sessions[slot];
            let written = usize::try_from(result).unwrap_or(0);
            total += written as u64;
            session.outbound.advance(written);
            // A full socket, an error, more frames than one send carries, or a close to finish: the
            // session's task takes it from here.
            let done = result >= 0 && written == asked[slot] && session.outbound.is_empty();
            if !done || !session.is_open() {
                session.wake();
            }
        });
        std::mem::swap(&mut ring.sends.asked, &mut asked);
        completed.map(|()| total)
    }
}
