//! hyper's timer on glommio, and the two connection timeouts it enforces.
//!
//! hyper's http1 server has a single timer, `header_read_timeout`, and it arms it both for a request head
//! and for the idle wait on a keep-alive connection before the next one. Used as is, an idle connection
//! would be closed after `SERVER_REQUEST_TIMEOUT` and `SERVER_SESSION_TIMEOUT_SEC` would mean nothing. So
//! the timer tells the two apart (as Go's and Envoy's servers do): the first head must arrive within the
//! request timeout from accept; after a response, the connection may stay idle for the session timeout, and
//! once the next request's first bytes arrive its head must be complete within the request timeout. It
//! knows when bytes arrive through the read counter the connection's [`super::io::Socket`] shares with it.
//!
//! It must not read or write the socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::Sleep;

/// The two connection timeouts, copied out of [`crate::config::ServerSettings`] for each connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// `SERVER_REQUEST_TIMEOUT`: a request head must be read within this.
    pub(super) request: Duration,
    /// `SERVER_SESSION_TIMEOUT_SEC`: a keep-alive connection may idle this long between requests.
    pub(super) session: Duration,
}

/// hyper's timer for one connection. hyper's http1 server asks a timer only for `header_read_timeout`, so
/// every sleep is a [`HeadDeadline`].
#[derive(Clone)]
pub(super) struct ShardTimer {
    /// The connection's read counter, shared with its [`super::io::Socket`].
    pub(super) reads: Arc<AtomicU64>,
    /// How long the connection may idle between requests.
    pub(super) session_timeout: Duration,
}

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let request_timeout = deadline.saturating_duration_since(Instant::now());
        let reads = self.reads.load(Ordering::Relaxed);
        // Nothing read yet means the first head: the request timeout runs from accept. Otherwise hyper is
        // waiting for the next request on a kept-alive connection, which is idle until bytes arrive.
        let (phase, first_wait) = if reads == 0 {
            (Phase::Head, request_timeout)
        } else {
            let idle = Phase::Idle {
                reads_before: reads,
                request_timeout,
            };
            (idle, self.session_timeout)
        };
        Box::pin(HeadDeadline {
            timer: glommio::timer::Timer::new(first_wait),
            phase,
            reads: self.reads.clone(),
        })
    }
}

/// What a [`HeadDeadline`] is currently timing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request head has begun (or the connection is new): the timer is the request timeout.
    Head,
    /// Waiting for the next request: the timer is the session timeout until the read count moves past
    /// `reads_before`, then it restarts as `request_timeout`.
    Idle {
        reads_before: u64,
        request_timeout: Duration,
    },
}

/// The sleep hyper polls while it waits for a request head; see the module docs for the two phases.
struct HeadDeadline {
    timer: glommio::timer::Timer,
    phase: Phase,
    reads: Arc<AtomicU64>,
}

// SAFETY: hyper's `Sleep` must be `Send + Sync` because hyper stores sleeps as `Pin<Box<dyn Sleep>>`, but it
// never moves them itself: each lives inside its connection's `http1::Connection`, which owns a glommio
// `TcpStream` and is therefore `!Send`, so it is created, polled and dropped on the shard thread that
// created it, which is all the `Rc` inside `glommio::timer::Timer` needs. `Sync` is sound because no method
// of `HeadDeadline` takes `&self`: the timer is only reached through `Pin<&mut Self>`.
unsafe impl Send for HeadDeadline {}
// SAFETY: see the `Send` impl above.
unsafe impl Sync for HeadDeadline {}

impl Sleep for HeadDeadline {}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Phase::Idle {
            reads_before,
            request_timeout,
        } = this.phase
        {
            // hyper polls this whenever the connection wakes, so a read that brings the next request's
            // first bytes is noticed here right away.
            if this.reads.load(Ordering::Relaxed) != reads_before {
                this.timer.reset(request_timeout);
                this.phase = Phase::Head;
            }
        }
        Pin::new(&mut this.timer).poll(cx).map(|_| ())
    }
}
