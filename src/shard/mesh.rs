//! How shards (and threads outside them) reach a shard: a crossbeam inbox plus a wake-up.
//!
//! Each shard owns one unbounded crossbeam channel. A message is pushed, then the shard is woken through
//! the waker of its inbox task, unless a wake-up is already pending (an atomic flag). That waker belongs
//! to glommio, which handles a wake from another thread by queueing it for the shard's executor: a busy
//! executor picks it up on its next turn of the event loop without any system call, and only an
//! executor that has gone to sleep is woken, by one `write` to its own eventfd. So a sleeping shard wakes
//! at once (no polling, no timer tick), and a busy shard that receives a thousand messages before it
//! drains its inbox costs its senders one wake in all, not one each.
//!
//! Why not a socket as the doorbell (the first design): each ring cost the sender a `sendto` and the
//! shard two `recv`s and a re-armed io_uring poll, even when the shard was awake; in a 2-shard run of
//! 2,000 chatting clients the senders' `sendto` alone was 3.5 % of the server's CPU.
//!
//! Correctness of the flag: the receiver clears it (a swap, so it sees every message pushed before the
//! flag was set) *before* its last drain, and a sender sets it *after* pushing; a sender that finds it
//! already set pushed before the clear, so the drain that follows sees its message.
//!
//! The shard's sessions also take messages before they write ([`super::Shard::deliver_posted`]);
//! that leaves the flag set, so the inbox task, already woken, clears it and drains again before it
//! waits: nothing posted is left behind.
//!
//! It must not interpret messages; [`super::Shard`] does. Shutdown does not travel here: it is
//! [`crate::shutdown`]'s, the same for the WebSocket shards and the HTTP shard.

use std::future::poll_fn;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender};

use super::home::{Asker, JoinRequest, PublishRequest};
use crate::cluster::ClusterEvent;
use crate::history::store::StoreEvent;
use crate::session_state::SessionId;
use crate::ws::encode::{DataKind, Renditions};

/// What one shard (or the history store, or a thread outside) asks of a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// Deliver an already encoded message to the local members of `room`.
    Broadcast {
        /// The room.
        room: Arc<str>,
        /// The message's renditions, read-only and shared by every shard it was posted to; each copies
        /// them into [`crate::ws::encode::EncodedFrame`]s of its own before delivering, so that the
        /// per-delivery reference counting stays on one core and non-atomic.
        renditions: Arc<[Option<SharedFrames>]>,
    },
    /// Fan a raw data message (not a publication: no offset, no history) out to `room`, whose home shard
    /// this is (see [`Peers::home_of`]).
    RawBroadcast {
        /// The room.
        room: Arc<str>,
        /// Text or binary.
        kind: DataKind,
        /// The message, not yet encoded: it is encoded (and compressed) once, on the home shard.
        payload: Box<[u8]>,
    },
    /// Put a publication in `room`'s stream (this is its home shard) and fan it out.
    Publication {
        /// The room.
        room: Arc<str>,
        /// The publication and who asked.
        request: PublishRequest,
    },
    /// A session of another shard joins `room`, whose home this is.
    Join {
        /// The room.
        room: Arc<str>,
        /// Who joins and what it asks of the history.
        request: JoinRequest,
    },
    /// A session left `room` (or ended), whose home this is.
    Leave {
        /// The room.
        room: Arc<str>,
        /// The session.
        session: SessionId,
    },
    /// The home shard of `room` took the join of `session`, of this shard: it is now a member.
    Joined {
        /// The room.
        room: Arc<str>,
        /// The session.
        session: SessionId,
        /// Which of its joins ([`crate::room::Rooms::join`]).
        token: u64,
        /// What the application renders for it ([`crate::RoomReplies::joined`]).
        reply: Option<String>,
    },
    /// Who is in `room`, whose home this is, for `to`.
    Presence {
        /// The room.
        room: Arc<str>,
        /// Who asked.
        to: Asker,
        /// The request's tag.
        tag: Option<String>,
    },
    /// The history store answers this shard, a home shard.
    Store(StoreEvent),
    /// The bridge to Redis tells this shard, a home shard on this node (with `CLUSTER_REDIS_URL`).
    Cluster(ClusterEvent),
    /// What this shard counted, for a scrape (`/metrics`, `/api/stats`), posted at `asked`: how long it
    /// waited here is the shard's event-loop lag.
    Snapshot {
        asked: std::time::Instant,
        reply: tokio::sync::oneshot::Sender<crate::metrics::ShardSnapshot>,
    },
    /// Send a data message to one session of this shard, if it is still open (from
    /// [`crate::ServerHandle::send_text_to_session`]); compressed here if that session negotiated deflate.
    ToSession {
        /// The session.
        id: SessionId,
        /// Text or binary.
        kind: DataKind,
        /// The message.
        payload: Box<[u8]>,
    },
}

/// One rendition's frames as shards share them: the plain frame and, if the message was compressed, the
/// compressed one (compressed once, on the home shard).
#[derive(Debug)]
pub(crate) struct SharedFrames {
    pub(crate) plain: Arc<[u8]>,
    pub(crate) deflated: Option<Arc<[u8]>>,
}

/// Every WebSocket shard's inbox, indexed by shard; `Send + Sync`, shared by every shard and the server
/// handle. Cloning is a reference count.
#[derive(Debug, Clone)]
pub(crate) struct Peers(Arc<[InboxSender]>);

impl Peers {
    pub(crate) fn new(inboxes: Vec<InboxSender>) -> Peers {
        Peers(inboxes.into())
    }

    /// How many shards there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The home shard of `room`: where every broadcast to it is fanned out, so that all its members see
    /// one order (two senders on two shards would otherwise reach the members of each shard in the
    /// order their posts happened to arrive there). A hash of the name, the same on every shard.
    pub(crate) fn home_of(&self, room: &str) -> usize {
        // `DefaultHasher::new` has fixed keys: every shard computes the same home.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        (hasher.finish() % self.0.len() as u64) as usize
    }

    /// Posts a raw data message for `room` to its `home` shard, which fans it out.
    pub(crate) fn post_broadcast(&self, home: usize, room: &str, kind: DataKind, payload: &[u8]) {
        self.0[home].post(ShardMsg::RawBroadcast {
            room: Arc::from(room),
            kind,
            payload: payload.into(),
        });
    }

    /// Posts a data message for session `id` to the shard that owns it; nothing happens when there is
    /// no such shard (an id that was never handed out).
    pub(crate) fn send_to_session(&self, id: SessionId, kind: DataKind, payload: &[u8]) {
        if let Some(inbox) = self.0.get(id.shard()) {
            inbox.post(ShardMsg::ToSession {
                id,
                kind,
                payload: payload.into(),
            });
        }
    }

    /// Posts `msg` to shard `shard`.
    pub(crate) fn post(&self, shard: usize, msg: ShardMsg) {
        self.0[shard].post(msg);
    }

    /// Posts an encoded message, every rendition's plain frame and compressed one, for the members of
    /// `room` to every shard but `except` (the home shard, which delivers to its own members itself).
    ///
    /// The shards share one read-only copy of the bytes and each copies it into frames of its own (a
    /// memcpy per shard, not a re-encode): every member's queue clones and drops its frame's reference
    /// count, and two cores doing that on one count would bounce its cache line between them on every
    /// delivery, which halved throughput with two shards when the count was shared.
    pub(crate) fn broadcast(&self, room: &str, message: &Renditions, except: Option<usize>) {
        if self.0.len() == 1 && except.is_some() {
            return; // No other shard: nothing to copy.
        }
        let room: Arc<str> = Arc::from(room);
        let renditions: Arc<[Option<SharedFrames>]> = message
            .0
            .iter()
            .map(|r| {
                r.as_ref().map(|prepared| SharedFrames {
                    plain: Arc::from(&prepared.plain[..]),
                    deflated: prepared.deflated.as_deref().map(Arc::from),
                })
            })
            .collect();
        for (index, inbox) in self.0.iter().enumerate() {
            if Some(index) != except {
                inbox.post(ShardMsg::Broadcast {
                    room: room.clone(),
                    renditions: renditions.clone(),
                });
            }
        }
    }
}

/// The sending side of one shard's inbox; `Send + Sync`, one of the [`Peers`].
#[derive(Debug)]
pub(crate) struct InboxSender {
    messages: Sender<ShardMsg>,
    wake: Arc<WakeUp>,
}

/// What a sender needs to wake the shard.
#[derive(Debug, Default)]
struct WakeUp {
    /// A wake-up was sent and the shard has not drained since.
    pending: AtomicBool,
    /// The shard's inbox task, registered each time it waits.
    waker: AtomicWaker,
}

impl InboxSender {
    /// Posts `msg` and wakes the shard if no wake-up is pending already.
    pub(crate) fn post(&self, msg: ShardMsg) {
        if self.messages.send(msg).is_err() {
            return; // The shard has ended; nothing to deliver to.
        }
        if !self.wake.pending.swap(true, Ordering::SeqCst) {
            self.wake.waker.wake();
        }
    }
}

/// The receiving side, created on the starting thread and moved into the shard's executor.
pub(crate) struct InboxReceiver {
    messages: Receiver<ShardMsg>,
    wake: Arc<WakeUp>,
}

/// A new inbox: its sender (to share) and its receiver (for the shard).
pub(crate) fn inbox() -> (InboxSender, InboxReceiver) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(WakeUp::default());
    (
        InboxSender {
            messages: tx,
            wake: wake.clone(),
        },
        InboxReceiver { messages: rx, wake },
    )
}

impl InboxReceiver {
    /// The next message posted, if any, without waiting (two atomic loads when there is none).
    pub(crate) fn try_take(&self) -> Option<ShardMsg> {
        self.messages.try_recv().ok()
    }

    /// Waits until something was posted; [`InboxReceiver::try_take`] then takes it. Call it only once
    /// everything posted before was taken, or it returns at once.
    pub(crate) async fn wait_for_post(&self) {
        poll_fn(|cx| {
            if !self.messages.is_empty() {
                return Poll::Ready(());
            }
            self.wake.waker.register(cx.waker());
            self.wake.pending.swap(false, Ordering::SeqCst);
            if self.messages.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ShardMsg {
        ShardMsg::Leave {
            room: Arc::from("r"),
            session: SessionId(0),
        }
    }

    #[test]
    fn many_posts_wake_once_until_the_shard_drains() {
        let (tx, rx) = inbox();
        for _ in 0..100 {
            tx.post(message());
        }
        assert!(tx.wake.pending.load(Ordering::SeqCst));
        futures_lite::future::block_on(rx.wait_for_post());
        assert_eq!(std::iter::from_fn(|| rx.try_take()).count(), 100);
    }

    #[test]
    fn a_sleeping_shard_wakes_on_a_post_from_another_thread() {
        let (tx, rx) = inbox();
        let shard = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut total = 0;
                // Two rounds: the second wait starts after the first drain, and clears the flag.
                for _ in 0..2 {
                    rx.wait_for_post().await;
                    total += std::iter::from_fn(|| rx.try_take()).count();
                }
                total
            })
            .unwrap();
        std::thread::spawn(move || {
            tx.post(message());
            // Wait until the shard drained before the second post, so it must sleep and be woken again.
            while tx.wake.pending.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            tx.post(message());
        });
        assert_eq!(shard.join().unwrap(), 2);
    }
}
