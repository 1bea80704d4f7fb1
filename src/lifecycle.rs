//! [`Lifecycle`]: where a session is between open and gone, the close handshake included.
//!
//! One enum, its transitions as methods that return the next state, and named predicates that every caller
//! asks instead of matching variants (as tungstenite's `WebSocketState` does). The whole close handshake can
//! be read here:
//!
//! ```text
//!            close_sent                 peer_closed
//!   Open ──────────────► CloseSent ───────────────────► Flushing{End} ──(queue empty)──► over
//!     │                     │  failed                        ▲
//!     │ peer_closed         └──────────┐                     │
//!     ├────────────────────────────────┼─────────────────────┘
//!     │ failed                         ▼
//!     └──────────────────────────► Flushing{Drain} ──write_shut──► Draining ──(peer's FIN)──► over
//!
//!   any state ──abort──► Ended     (close timeout, the task ended)
//! ```
//!
//! - We close first (the application, the idle timeout, shutdown, a slow consumer): `close_sent`, then we
//!   read on until the peer's close frame arrives (`peer_closed`), flush, and end.
//! - The peer closes first: `peer_closed`; we echo its code, flush, and end.
//! - The peer breaks the protocol: `failed`; we flush our close frame, shut our write side (`write_shut`) and
//!   drain input until the peer closes, so the close frame is not lost to a TCP reset.
//! - Every state but `Open` carries when the close began (shard clock); the shard's sweep aborts a close that
//!   takes longer than its timeout.
//!
//! It must not act on sockets, queues or callbacks; the connection task does, by asking these predicates.

/// Where a session is in its life (12 bytes; every session carries one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Messages flow both ways.
    Open,
    /// Our close frame is queued; we read on, discarding data, until the peer's close frame arrives.
    CloseSent {
        /// When our close frame was queued (shard clock), for the close timeout.
        since: u32,
        /// Why we closed, when the connection task still has to report it to `on_error`.
        cause: CloseCause,
    },
    /// Nothing more is read as messages: flush what is queued, then do `then`.
    Flushing {
        /// When the close began (shard clock), for the close timeout.
        since: u32,
        /// What follows the flush.
        then: AfterFlush,
    },
    /// Our close frame is written and our write side shut down; input is read and dropped until the peer
    /// closes.
    Draining {
        /// When the close began (shard clock), for the close timeout.
        since: u32,
    },
    /// Over: end now, without flushing.
    Ended,
}

/// Why we sent a close frame, as far as the connection task still has to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// Asked for (the application, the idle timeout, shutdown), or already reported.
    Requested,
    /// The session's queue passed `WEBSOCKET_MAX_BACKPRESSURE`; `on_error` has not been told yet. Carries
    /// the bytes that were queued (a `u32`: the limit is at most 1 GiB), for the error it reports.
    SlowConsumer {
        /// Bytes queued when the frame that overflowed was refused.
        queued: u32,
    },
}

/// What a [`Lifecycle::Flushing`] session does once its queue is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFlush {
    /// End the session: the close handshake is complete.
    End,
    /// Shut our write side and drain input ([`Lifecycle::write_shut`]): we failed the connection.
    Drain,
}

impl Lifecycle {
    /// We queued our close frame. Only an open session sends one; any other state is kept.
    pub(crate) fn close_sent(self, now: u32, cause: CloseCause) -> Lifecycle {
        match self {
            Lifecycle::Open => Lifecycle::CloseSent { since: now, cause },
            other => other,
        }
    }

    /// The connection task told `on_error` why the session is closing: nothing is left to report.
    pub(crate) fn cause_reported(self) -> Lifecycle {
        match self {
            Lifecycle::CloseSent { since, .. } => Lifecycle::CloseSent {
                since,
                cause: CloseCause::Requested,
            },
            other => other,
        }
    }

    /// The peer's close frame arrived: flush (our echo, or what is left before it) and end.
    pub(crate) fn peer_closed(self, now: u32) -> Lifecycle {
        match self {
            Lifecycle::Open | Lifecycle::CloseSent { .. } => Lifecycle::Flushing {
                since: now,
                then: AfterFlush::End,
            },
            other => other,
        }
    }

    /// The peer broke the protocol: flush our close frame, then drain.
    pub(crate) fn failed(self, now: u32) -> Lifecycle {
        match self {
            Lifecycle::Open | Lifecycle::CloseSent { .. } => Lifecycle::Flushing {
                since: now,
                then: AfterFlush::Drain,
            },
            other => other,
        }
    }

    /// Our write side is shut after a failure's flush: drain input until the peer goes.
    pub(crate) fn write_shut(self) -> Lifecycle {
        match self {
            Lifecycle::Flushing {
                since,
                then: AfterFlush::Drain,
            } => Lifecycle::Draining { since },
            other => other,
        }
    }

    /// End now, whatever is queued: the close timeout passed, or the session's task has ended.
    pub(crate) fn abort(self) -> Lifecycle {
        Lifecycle::Ended
    }

    /// Whether application messages may still be sent and received.
    pub(crate) fn is_open(self) -> bool {
        self == Lifecycle::Open
    }

    /// Whether received bytes are still decoded: while open, and after our close frame, to see the peer's.
    pub(crate) fn reads_messages(self) -> bool {
        matches!(self, Lifecycle::Open | Lifecycle::CloseSent { .. })
    }

    /// Whether queued frames may still be written to the socket.
    pub(crate) fn can_write(self) -> bool {
        !matches!(self, Lifecycle::Draining { .. } | Lifecycle::Ended)
    }

    /// Whether the session is over: nothing more to read or write.
    pub(crate) fn is_over(self) -> bool {
        self == Lifecycle::Ended
    }

    /// What follows the flush, once the session is flushing.
    pub(crate) fn after_flush(self) -> Option<AfterFlush> {
        match self {
            Lifecycle::Flushing { then, .. } => Some(then),
            _ => None,
        }
    }

    /// The bytes that were queued when the session was found a slow consumer, until that is reported.
    pub(crate) fn unreported_slow_consumer(self) -> Option<u32> {
        match self {
            Lifecycle::CloseSent {
                cause: CloseCause::SlowConsumer { queued },
                ..
            } => Some(queued),
            _ => None,
        }
    }

    /// When the close began, if it has (for the close timeout).
    pub(crate) fn closing_since(self) -> Option<u32> {
        match self {
            Lifecycle::CloseSent { since, .. }
            | Lifecycle::Flushing { since, .. }
            | Lifecycle::Draining { since } => Some(since),
            Lifecycle::Open | Lifecycle::Ended => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn we_close_first_then_the_peer_answers() {
        let sent = Lifecycle::Open.close_sent(7, CloseCause::Requested);
        assert!(!sent.is_open() && sent.reads_messages() && sent.can_write());
        assert_eq!(sent.closing_since(), Some(7));
        let answered = sent.peer_closed(8);
        assert!(!answered.reads_messages() && answered.can_write());
        assert_eq!(answered.after_flush(), Some(AfterFlush::End));
        // The close began when our frame was queued only until the peer answers; the flush is timed anew.
        assert_eq!(answered.closing_since(), Some(8));
    }

    #[test]
    fn a_failure_flushes_then_drains_without_writing() {
        let failed = Lifecycle::Open.failed(3);
        assert_eq!(failed.after_flush(), Some(AfterFlush::Drain));
        let draining = failed.write_shut();
        assert!(!draining.can_write() && !draining.reads_messages() && !draining.is_over());
        assert_eq!(draining.closing_since(), Some(3));
        // Shutting the write side means nothing to a session that is not draining after a failure.
        assert_eq!(Lifecycle::Open.write_shut(), Lifecycle::Open);
        let ending = Lifecycle::Open.peer_closed(1);
        assert_eq!(ending.write_shut(), ending);
    }

    #[test]
    fn only_an_open_session_sends_a_close_frame() {
        let ending = Lifecycle::Open.peer_closed(1);
        assert_eq!(ending.close_sent(2, CloseCause::Requested), ending);
        let sent = Lifecycle::Open.close_sent(1, CloseCause::Requested);
        assert_eq!(sent.close_sent(5, CloseCause::Requested), sent);
    }

    #[test]
    fn a_slow_consumer_is_reported_once() {
        let slow = Lifecycle::Open.close_sent(1, CloseCause::SlowConsumer { queued: 4096 });
        assert_eq!(slow.unreported_slow_consumer(), Some(4096));
        let reported = slow.cause_reported();
        assert_eq!(reported.unreported_slow_consumer(), None);
        assert_eq!(reported.closing_since(), Some(1));
    }

    #[test]
    fn abort_ends_from_anywhere_and_is_final() {
        for state in [
            Lifecycle::Open,
            Lifecycle::Open.close_sent(1, CloseCause::Requested),
            Lifecycle::Open.failed(1),
            Lifecycle::Open.failed(1).write_shut(),
        ] {
            let ended = state.abort();
            assert!(ended.is_over() && !ended.can_write() && !ended.reads_messages());
            assert_eq!(ended.peer_closed(9), Lifecycle::Ended);
            assert_eq!(ended.failed(9), Lifecycle::Ended);
            assert_eq!(ended.closing_since(), None);
        }
    }
}
