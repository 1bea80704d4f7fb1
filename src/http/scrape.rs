//! The scrape endpoints: `GET /metrics` (`METRICS_PATH`), the Prometheus text format, and `GET
//! /api/stats`, the same numbers as JSON for the dashboard page (`public/dashboard.html`).
//!
//! A scrape asks every WebSocket shard for its counters through its inbox and waits at most
//! [`SHARD_WAIT`] for them all; a shard that has not answered by then is left out (and
//! `roomcast_shards_answering` says so) rather than holding the answer. Scrapes within [`REUSE`] of one
//! another share one gathering. It must not count anything: the shards do ([`crate::metrics`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metrics::{ServerSnapshot, ShardSnapshot};
use crate::server::ServerHandle;

/// How long a scrape waits for the shards' counters, all together. A shard that is this late is stuck,
/// and that is what the scrape must show, not wait for.
const SHARD_WAIT: Duration = Duration::from_secs(2);

/// The content type of the Prometheus text format.
pub(super) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one scrape's numbers answer the scrapes that follow: however many scrapers and dashboards
/// ask, the shards are asked at most this often.
pub(super) const REUSE: Duration = Duration::from_millis(250);

/// The last scrape's numbers, on the HTTP shard.
#[derive(Debug, Default)]
pub(super) struct Recent(RefCell<Option<(Instant, Rc<ServerSnapshot>)>>);

impl Recent {
    /// The last scrape's numbers if they are younger than [`REUSE`], else a new gathering.
    pub(super) async fn get_or_gather(&self, server: &ServerHandle) -> Rc<ServerSnapshot> {
        if let Some((at, snapshot)) = &*self.0.borrow() {
            if at.elapsed() < REUSE {
                return snapshot.clone();
            }
        }
        let snapshot = Rc::new(gather(server).await);
        *self.0.borrow_mut() = Some((Instant::now(), snapshot.clone()));
        snapshot
    }
}

/// Gathers what every shard counted (those that answer within [`SHARD_WAIT`]) and the process-wide counts.
pub(super) async fn gather(server: &ServerHandle) -> ServerSnapshot {
    let deadline = Instant::now() + SHARD_WAIT;
    let mut shards = Vec::new();
    for answer in server.ask_shards() {
        let left = deadline.saturating_duration_since(Instant::now());
        // glommio's timeout wants a fallible future; an answer that never comes is a shard that ended.
        let waited = glommio::timer::timeout(left, async { Ok(answer.await.ok()) }).await;
        if let Ok(Some(snapshot)) = waited {
            shards.push(snapshot);
        }
    }
    server.snapshot(shards)
}

/// Logs a summary line every `interval`, from the same gathering as a scrape: connections, messages in
/// and out a second since the last line, bytes queued, and the slowest shard's lag. Runs on the HTTP
/// shard until it stops.
pub(super) async fn log_summaries(server: ServerHandle, interval: Duration) {
    let mut last: Option<(Instant, u64, u64)> = None;
    loop {
        glommio::timer::sleep(interval).await;
        let snapshot = gather(&server).await;
        let totals =
            |read: fn(&ShardSnapshot) -> u64| snapshot.shards.iter().map(read).sum::<u64>();
        let received = totals(|s| s.totals.messages_received);
        let sent = totals(|s| s.totals.messages_sent);
        let now = Instant::now();
        let (received_per_sec, sent_per_sec) = match last {
            Some((at, before_in, before_out)) => {
                let seconds = now.duration_since(at).as_secs_f64().max(1e-3);
                // A shard that missed this scrape takes its counts out of the sums: no negative rate.
                (
                    received.saturating_sub(before_in) as f64 / seconds,
                    sent.saturating_sub(before_out) as f64 / seconds,
                )
            }
            None => (0.0, 0.0),
        };
        last = Some((now, received, sent));
        let max_lag = snapshot
            .shards
            .iter()
            .map(|s| s.lag)
            .max()
            .unwrap_or_default();
        tracing::info!(
            connections = totals(|s| s.open as u64),
            messages_in_per_sec = received_per_sec.round() as u64,
            messages_out_per_sec = sent_per_sec.round() as u64,
            queued_bytes = totals(|s| s.queued_bytes as u64),
            max_lag_ms = max_lag.as_secs_f64() * 1e3,
            shards_answering = snapshot.shards.len(),
            shards = snapshot.shard_count,
            "stats"
        );
    }
}
