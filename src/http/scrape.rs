//! The scrape endpoints: `GET /metrics` (`METRICS_PATH`), the Prometheus text format, and `GET
//! /api/stats`, the same numbers as JSON for the dashboard page (`public/dashboard.html`).
//!
//! A scrape asks every WebSocket shard for its counters through its inbox and waits at most
//! [`SHARD_WAIT`] for them all; a shard that has not answered by then is left out (and
//! `roomcast_shards_answering` says so) rather than holding the answer. It must not count anything:
//! the shards do ([`crate::metrics`]).

use std::time::{Duration, Instant};

use crate::metrics::ServerSnapshot;
use crate::server::ServerHandle;

/// How long a scrape waits for the shards' counters, all together. A shard that is this late is stuck,
/// and that is what the scrape must show, not wait for.
const SHARD_WAIT: Duration = Duration::from_secs(2);

/// The content type of the Prometheus text format.
pub(super) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

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
