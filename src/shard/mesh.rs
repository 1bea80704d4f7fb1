//! How shards (and threads outside them) reach a shard: a crossbeam inbox plus a doorbell.
//!
//! Each shard owns one unbounded crossbeam channel. A message is pushed, then the shard's doorbell is rung:
//! an atomic flag says whether a ring is already pending, and only the ring that flips it writes one byte
//! to a socketpair whose other end the shard's executor awaits through io_uring. So a sleeping shard wakes
//! at once (no polling, no timer tick), and a busy shard that receives a thousand messages before it drains
//! its inbox costs its senders one `write` in all, not one each.
//!
//! Correctness of the flag: the receiver clears it *before* draining the channel, and a sender sets it
//! *after* pushing; a sender that finds it already set pushed before the clear, so the drain that follows
//! sees its message.
//!
//! It must not interpret messages; [`super::Shard`] does.

use std::io::{self, Write};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;

/// What one shard asks of another.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// Deliver an already encoded frame to the local members of `room`.
    Broadcast {
        /// The room.
        room: Arc<str>,
        /// The encoded frame, read-only and shared by every shard it was posted to; each copies it into
        /// a [`crate::ws::codec::Frame`] of its own before delivering, so that the per-delivery
        /// reference counting stays on one core and non-atomic.
        frame: Arc<[u8]>,
    },
    /// Stop accepting, close every session with 1001, and end the executor once they are gone.
    Shutdown,
}

/// The sending side of one shard's inbox; `Send + Sync`, shared by every other shard and the server handle.
#[derive(Debug)]
pub(crate) struct InboxSender {
    messages: Sender<ShardMsg>,
    ring_pending: Arc<AtomicBool>,
    bell: UnixStream,
}

impl InboxSender {
    /// Posts `msg` and wakes the shard if no wake-up is pending already.
    pub(crate) fn post(&self, msg: ShardMsg) {
        if self.messages.send(msg).is_err() {
            return; // The shard has ended; nothing to deliver to.
        }
        if !self.ring_pending.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a ring is unread already: as good as ours.
            let _ = (&self.bell).write(&[1]);
        }
    }
}

/// The receiving side, created on the starting thread and moved into the shard's executor.
pub(crate) struct InboxReceiver {
    messages: Receiver<ShardMsg>,
    ring_pending: Arc<AtomicBool>,
    bell: UnixStream,
}

/// A new inbox: its sender (to share) and its receiver (for the shard).
pub(crate) fn inbox() -> io::Result<(InboxSender, InboxReceiver)> {
    let (ring_end, wait_end) = UnixStream::pair()?;
    ring_end.set_nonblocking(true)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let ring_pending = Arc::new(AtomicBool::new(false));
    Ok((
        InboxSender {
            messages: tx,
            ring_pending: ring_pending.clone(),
            bell: ring_end,
        },
        InboxReceiver {
            messages: rx,
            ring_pending,
            bell: wait_end,
        },
    ))
}

impl InboxReceiver {
    /// Takes what was posted without waiting for the doorbell (the benches drive shards by hand).
    #[cfg(feature = "internals")]
    pub(crate) fn drain_into(&self, batch: &mut Vec<ShardMsg>) {
        batch.extend(self.messages.try_iter());
    }

    /// Binds the doorbell to the current glommio executor; call once inside the shard.
    pub(crate) fn into_waiter(self) -> InboxWaiter {
        // SAFETY: the fd comes from a std UnixStream we own and give up here.
        let bell = unsafe { glommio::net::UnixStream::from_raw_fd(self.bell.into_raw_fd()) };
        InboxWaiter {
            messages: self.messages,
            ring_pending: self.ring_pending,
            bell,
        }
    }
}

/// The inbox as the shard's executor sees it.
pub(crate) struct InboxWaiter {
    messages: Receiver<ShardMsg>,
    ring_pending: Arc<AtomicBool>,
    bell: glommio::net::UnixStream,
}

impl InboxWaiter {
    /// Waits for the doorbell, then returns every message posted so far.
    pub(crate) async fn next_batch(&mut self, batch: &mut Vec<ShardMsg>) -> io::Result<()> {
        loop {
            batch.extend(self.messages.try_iter());
            if !batch.is_empty() {
                return Ok(());
            }
            let mut rings = [0u8; 64];
            if self.bell.read(&mut rings).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "doorbell closed",
                ));
            }
            self.ring_pending.store(false, Ordering::SeqCst);
        }
    }
}

/// Reads and discards rings on a blocking std socket; only for tests of the flag logic.
#[cfg(test)]
fn drain_rings(stream: &mut UnixStream) -> usize {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    stream.read(&mut buf).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_posts_ring_once_until_the_shard_drains() {
        let (tx, mut rx) = inbox().unwrap();
        for _ in 0..100 {
            tx.post(ShardMsg::Shutdown);
        }
        assert_eq!(drain_rings(&mut rx.bell), 1);
        assert_eq!(rx.messages.try_iter().count(), 100);
        rx.ring_pending.store(false, Ordering::SeqCst);
        tx.post(ShardMsg::Shutdown);
        assert_eq!(drain_rings(&mut rx.bell), 1);
    }

    #[test]
    fn a_sleeping_shard_wakes_on_a_post_from_another_thread() {
        let (tx, rx) = inbox().unwrap();
        let shard = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut waiter = rx.into_waiter();
                let mut batch = Vec::new();
                waiter.next_batch(&mut batch).await.unwrap();
                batch.len()
            })
            .unwrap();
        std::thread::spawn(move || tx.post(ShardMsg::Shutdown));
        assert_eq!(shard.join().unwrap(), 1);
    }
}
