//! Shutdown: one mechanism for the WebSocket shards and the HTTP shard, as one sequence.
//!
//! 1. **Request.** [`Stop::request`], from any thread ([`crate::RunningServer::stop`],
//!    [`crate::ServerHandle::shutdown`], dropping the running server). Every executor waits on the same
//!    [`Stop`]; a sleeping executor is woken through its glommio waker, so nothing polls for it.
//! 2. **Stop accepting.** Each executor drops its accept loop, which owns the listener: the port stops
//!    taking connections.
//! 3. **Close.** Each executor asks its connections to close: a WebSocket shard delivers what other shards
//!    posted before and sends every session close 1001 "server shutting down"; the HTTP shard starts hyper's
//!    graceful shutdown on every connection (the request in flight finishes, keep-alive ends).
//! 4. **Bounded drain.** Every connection task holds a pass of its executor's glommio [`Gate`]; closing the
//!    gate waits until the last pass is dropped, for at most the executor's grace period.
//! 5. **Exit.** The executor's main future returns, which ends the executor and its thread; a connection
//!    still open then is dropped with it.
//!
//! [`serve_until_stopped`] is that sequence; the WebSocket shard (`shard::executor`) and the HTTP shard
//! (`http`) each run it with their own accept loop, close step and grace.
//!
//! It must not know what a connection is: the executors say how to accept and how to close.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future;
use glommio::sync::Gate;

/// A shutdown request shared by every executor of one server; `Send + Sync`.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    requested: AtomicBool,
    /// The executors waiting in [`Stop::requested`]: one each, so a short list behind a lock that is only
    /// taken when an executor starts waiting and once at shutdown, never on the message path.
    waiters: Mutex<Vec<Waker>>,
}

impl Stop {
    /// Asks every executor to shut down; returns at once. Asking again does nothing more.
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiters {
            waker.wake();
        }
    }

    /// Returns once shutdown has been requested.
    pub(crate) async fn requested(&self) {
        poll_fn(|cx| {
            if self.requested.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            // Checked again under the lock: a request that came between the first check and the push has
            // already taken the list, and would not wake us.
            if self.requested.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Runs `accept` until `stop` is requested, then stops accepting, runs `close`, and waits at most `grace`
/// for every pass of `connections` to be released (the module docs give the sequence). Returns whether
/// every connection finished within the grace period.
pub(crate) async fn serve_until_stopped(
    stop: &Stop,
    accept: impl Future<Output = ()>,
    connections: &Gate,
    close: impl FnOnce(),
    grace: Duration,
) -> bool {
    {
        let accept = pin!(accept);
        future::or(accept, stop.requested()).await;
        // Dropping the accept loop here closes its listener.
    }
    // The accept it was waiting on is still queued in io_uring and keeps the socket listening after its
    // descriptor is closed, until glommio submits the cancellation on a reactor turn. Parking on a short
    // timer forces that turn (merely yielding did not, in tests), so the port stops accepting now rather
    // than when the executor is torn down.
    glommio::timer::sleep(Duration::from_millis(1)).await;
    close();
    let drained = glommio::timer::timeout(grace, async {
        // Closing a gate twice is the only error, and only this function closes it.
        let _ = connections.close().await;
        Ok(())
    })
    .await;
    drained.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_request_from_another_thread_wakes_a_waiting_executor() {
        let stop = Arc::new(Stop::default());
        let waiting = stop.clone();
        let executor = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { waiting.requested().await })
            .unwrap();
        stop.request();
        executor.join().unwrap();
        // Once requested, it stays requested.
        futures_lite::future::block_on(stop.requested());
    }

    #[test]
    fn the_sequence_stops_accepting_closes_and_drains_within_the_grace() {
        let finished = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let stop = Stop::default();
                let connections = Gate::new();
                let (closing_tx, closing_rx) = glommio::channels::local_channel::new_bounded(1);
                // One connection that ends when told to close, one that never does.
                connections
                    .spawn(async move {
                        let _ = closing_rx.recv().await;
                    })
                    .unwrap()
                    .detach();
                connections
                    .spawn(futures_lite::future::pending::<()>())
                    .unwrap()
                    .detach();
                stop.request();
                let all_done = serve_until_stopped(
                    &stop,
                    futures_lite::future::pending(),
                    &connections,
                    || closing_tx.try_send(()).unwrap(),
                    Duration::from_millis(100),
                )
                .await;
                (all_done, connections.is_open())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(finished, (false, false));
    }
}
