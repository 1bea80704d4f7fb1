//! What the server counts, and the two ways a scrape reads it: Prometheus text (`GET /metrics`) and JSON
//! (`GET /api/stats`, for the dashboard page).
//!
//! Every counter on the message path is a shard's own: [`ShardTotals`] is plain `u64`s in the shard's
//! `RefCell`, written only by the shard's thread, so counting a message touches no cache line another
//! core writes. A scrape asks each shard for a [`ShardSnapshot`] through its inbox (the same post as any
//! other, answered on the shard's next turn) and gathers them into a [`ServerSnapshot`]; how long that post
//! waited to be run is the shard's event-loop lag. What is process-wide already (the connection budget,
//! the deflate session count, the bridge to Redis) is read from where it lives, once per scrape.
//!
//! Why prometheus-client and not `metrics` with `metrics-exporter-prometheus`: the `metrics` facade
//! records through a global recorder whose counters are atomics shared by every thread that touches them
//! (each increment a locked add on a shared line), which is what the shards must not do. prometheus-client
//! lets a [`Collector`] encode values it is handed at scrape time, so the shards keep plain counters and
//! the crate only writes the text format (names, `HELP`, `TYPE`, label escaping).
//!
//! It must not count anything itself nor reach the shards: the shards count ([`crate::shard`]), the server
//! handle gathers ([`crate::ServerHandle`]), the HTTP side serves.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{json, Value};

/// What permessage-deflate did since the server started: each shard's own counts, summed by a scrape
/// ([`crate::ServerHandle::deflate_stats`], `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateStats {
    /// Messages compressed: a room broadcast counts once, however many members and shards receive it.
    pub messages_compressed: u64,
    /// Compressed messages received and inflated.
    pub messages_inflated: u64,
    /// Bytes of the messages compressed.
    pub bytes_compressed: u64,
    /// What they compressed to.
    pub bytes_compressed_to: u64,
}

impl std::ops::AddAssign for DeflateStats {
    fn add_assign(&mut self, other: DeflateStats) {
        self.messages_compressed += other.messages_compressed;
        self.messages_inflated += other.messages_inflated;
        self.bytes_compressed += other.bytes_compressed;
        self.bytes_compressed_to += other.bytes_compressed_to;
    }
}

/// A snapshot of what a node's bridge to Redis counted ([`crate::ServerHandle::cluster_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Room messages (publications and raw broadcasts) received from Redis (only for rooms with a member
    /// on this node).
    pub received: u64,
    /// Room messages (publications and raw broadcasts) this node published through Redis.
    pub published: u64,
    /// Publishes refused with `unavailable`, and raw broadcasts that reached only this node, because
    /// Redis could not be reached.
    pub unavailable: u64,
    /// Publications read back from a room's stream to fill a gap in what the subscription delivered.
    pub gap_filled: u64,
    /// Whether the subscriber connection to Redis is up.
    pub linked: bool,
}

/// Why an upgrade did not become a session; the `reason` label of `roomcast_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum HandshakeFailure {
    /// Not a valid upgrade request (400, 426 for another version, 405 for another method).
    InvalidRequest,
    /// 401 from the application's authentication hook.
    Unauthorized,
    /// 403: an origin not allowed, or the authentication hook's refusal.
    Forbidden,
    /// 503: over `WEBSOCKET_MAX_CONNECTIONS` or `WEBSOCKET_MAX_CONNECTIONS_PER_IP`.
    OverCapacity,
    /// 500: the authentication hook panicked.
    InternalError,
    /// Not completed within `SERVER_REQUEST_TIMEOUT`.
    Timeout,
    /// The client hung up, or the socket failed, before the upgrade completed.
    Disconnected,
    /// Upgraded while the server was stopping, or past the 2^24 sessions a shard can address.
    NotServed,
}

impl HandshakeFailure {
    /// Every reason, in the order of their discriminants (so `reason as usize` indexes the counts).
    const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::InvalidRequest,
        HandshakeFailure::Unauthorized,
        HandshakeFailure::Forbidden,
        HandshakeFailure::OverCapacity,
        HandshakeFailure::InternalError,
        HandshakeFailure::Timeout,
        HandshakeFailure::Disconnected,
        HandshakeFailure::NotServed,
    ];

    /// The refusal an upgrade was answered with, by its HTTP status.
    pub(crate) fn of_status(status: u16) -> HandshakeFailure {
        match status {
            401 => HandshakeFailure::Unauthorized,
            403 => HandshakeFailure::Forbidden,
            503 => HandshakeFailure::OverCapacity,
            500..=599 => HandshakeFailure::InternalError,
            _ => HandshakeFailure::InvalidRequest,
        }
    }

    fn label(self) -> &'static str {
        match self {
            HandshakeFailure::InvalidRequest => "invalid_request",
            HandshakeFailure::Unauthorized => "unauthorized",
            HandshakeFailure::Forbidden => "forbidden",
            HandshakeFailure::OverCapacity => "over_capacity",
            HandshakeFailure::InternalError => "internal_error",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Disconnected => "disconnected",
            HandshakeFailure::NotServed => "not_served",
        }
    }
}

/// The close code counted for a session that ended without a close frame either way (RFC 6455 §7.1.5).
pub(crate) const NO_CLOSE_FRAME: u16 = 1006;

/// The `code` label of a close: the code itself for the protocol's (1000 to 2999), its class for the
/// codes applications and libraries choose (3000 to 4999), which a client could otherwise turn into
/// thousands of series.
fn close_label(code: u16) -> String {
    match code {
        3000..=3999 => "3xxx".to_owned(),
        4000..=4999 => "4xxx".to_owned(),
        code => code.to_string(),
    }
}

/// The code a close is counted under: itself, or the first of its class (see [`close_label`]).
fn close_class(code: u16) -> u16 {
    match code {
        3000..=3999 => 3000,
        4000..=4999 => 4000,
        code => code,
    }
}

/// What one shard counted since it started: written by the shard's thread only.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ShardTotals {
    /// TCP connections accepted on the WebSocket port.
    pub(crate) accepted: u64,
    /// Upgrades that became sessions.
    pub(crate) opened: u64,
    /// Upgrades refused or abandoned, indexed by [`HandshakeFailure`].
    #[serde(skip)]
    pub(crate) handshake_failures: [u64; HandshakeFailure::ALL.len()],
    /// Sessions ended, by the close code of their close handshake: the first close frame's, whoever sent
    /// it (1005 for a close frame without one, [`NO_CLOSE_FRAME`] when there was none), 3xxx and 4xxx
    /// codes by class ([`close_label`]); so a short list.
    #[serde(skip)]
    pub(crate) closed: Vec<(u16, u64)>,
    /// Data messages (text and binary) received.
    pub(crate) messages_received: u64,
    /// Their payload bytes (inflated, for compressed ones).
    pub(crate) message_bytes_received: u64,
    /// Data messages queued to sessions: room deliveries and messages to one session.
    pub(crate) messages_sent: u64,
    /// Bytes read from sessions' sockets.
    pub(crate) socket_bytes_read: u64,
    /// Bytes written to sessions' sockets (frames, headers included).
    pub(crate) socket_bytes_written: u64,
    /// Messages this shard fanned out as a room's home: publications, raw broadcasts, presence changes.
    pub(crate) broadcasts: u64,
    /// Frames of room messages queued to members on this shard.
    pub(crate) deliveries: u64,
    /// Sessions closed with 1008 for not reading what they were sent.
    pub(crate) slow_consumers: u64,
    /// Posts taken from this shard's inbox (from other shards, the store, the bridge, the handle).
    pub(crate) cross_shard_posts: u64,
    /// Publications appended to the streams of rooms homed here.
    pub(crate) history_appends: u64,
}

impl ShardTotals {
    /// Counts an upgrade that did not become a session.
    pub(crate) fn handshake_failed(&mut self, why: HandshakeFailure) {
        self.handshake_failures[why as usize] += 1;
    }

    /// Counts a session that ended with close `code`.
    pub(crate) fn session_closed(&mut self, code: u16) {
        let code = close_class(code);
        match self.closed.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.closed.push((code, 1)),
        }
    }
}

/// One shard's counters and its state at a scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardSnapshot {
    pub(crate) shard: usize,
    pub(crate) totals: ShardTotals,
    /// What its deflater and inflater did.
    pub(crate) deflate: DeflateStats,
    /// Sessions open.
    pub(crate) open: usize,
    /// Rooms with at least one member on this shard.
    pub(crate) rooms: usize,
    /// Memberships on this shard (a session in three rooms counts three times).
    pub(crate) members: usize,
    /// Bytes queued to this shard's sessions and not yet written.
    pub(crate) queued_bytes: usize,
    /// How long the scrape's post waited before the shard ran it.
    pub(crate) lag: Duration,
}

/// Everything a scrape reports.
#[derive(Debug, Clone)]
pub(crate) struct ServerSnapshot {
    /// The shards that answered in time, in order (a shard that did not is missing, and
    /// `roomcast_shards_answering` says so).
    pub(crate) shards: Vec<ShardSnapshot>,
    /// How many WebSocket shards run.
    pub(crate) shard_count: usize,
    /// Sessions the process admits at once (`WEBSOCKET_MAX_CONNECTIONS`, or the descriptor limit).
    pub(crate) connection_limit: usize,
    /// Sessions open that negotiated permessage-deflate.
    pub(crate) deflate_sessions: usize,
    /// With `CLUSTER_REDIS_URL`: the bridge's counts.
    pub(crate) cluster: Option<ClusterStats>,
    pub(crate) uptime: Duration,
}

impl ServerSnapshot {
    /// What permessage-deflate did, over the shards that answered.
    pub(crate) fn deflate(&self) -> DeflateStats {
        let mut total = DeflateStats::default();
        for shard in &self.shards {
            total += shard.deflate;
        }
        total
    }

    /// The Prometheus text format (version 0.0.4), every metric with `HELP` and `TYPE`.
    pub(crate) fn to_prometheus(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }

    /// The dashboard's view: totals over every shard, and each shard's load.
    pub(crate) fn to_json(&self) -> Value {
        let sum =
            |f: fn(&ShardTotals) -> u64| self.shards.iter().map(|s| f(&s.totals)).sum::<u64>();
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|s| {
                json!({
                    "shard": s.shard,
                    "open": s.open,
                    "rooms": s.rooms,
                    "members": s.members,
                    "queued_bytes": s.queued_bytes,
                    "lag_ms": s.lag.as_secs_f64() * 1e3,
                    "totals": s.totals,
                })
            })
            .collect();
        json!({
            "uptime_seconds": self.uptime.as_secs_f64(),
            "shard_count": self.shard_count,
            "connections": {
                "open": self.shards.iter().map(|s| s.open).sum::<usize>(),
                "limit": self.connection_limit,
            },
            "totals": {
                "accepted": sum(|t| t.accepted),
                "opened": sum(|t| t.opened),
                "messages_received": sum(|t| t.messages_received),
                "messages_sent": sum(|t| t.messages_sent),
                "broadcasts": sum(|t| t.broadcasts),
                "deliveries": sum(|t| t.deliveries),
                "socket_bytes_read": sum(|t| t.socket_bytes_read),
                "socket_bytes_written": sum(|t| t.socket_bytes_written),
                "slow_consumers": sum(|t| t.slow_consumers),
                "history_appends": sum(|t| t.history_appends),
            },
            "queued_bytes": self.shards.iter().map(|s| s.queued_bytes).sum::<usize>(),
            "shards": shards,
            "cluster": self.cluster.map(|c| json!({
                "linked": c.linked,
                "published": c.published,
                "received": c.received,
                "unavailable": c.unavailable,
                "gap_filled": c.gap_filled,
            })),
        })
    }
}

/// A sample's labels, in order.
type Labels = Vec<(&'static str, String)>;

/// A per-shard metric: its name, its help, and how to read it from a shard's snapshot.
type PerShard<V> = (&'static str, &'static str, fn(&ShardSnapshot) -> V);

/// Writes one metric family: `name` (counters get `_total` from the encoder), its help, its type, and one
/// sample per label set.
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
    encode: impl Fn(V, prometheus_client::encoding::MetricEncoder) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        encode(value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One sample per shard, labelled with it.
fn by_shard<V>(shards: &[ShardSnapshot], read: fn(&ShardSnapshot) -> V) -> Vec<(Labels, V)> {
    shards
        .iter()
        .map(|s| (vec![("shard", s.shard.to_string())], read(s)))
        .collect()
}

fn counter(value: u64, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder)
}

fn gauge(value: f64, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder)
}

impl Collector for ServerSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters: [PerShard<u64>; 16] = [
            ("roomcast_connections_accepted", "TCP connections accepted on the WebSocket port.", |s| s.totals.accepted),
            ("roomcast_connections_opened", "WebSocket upgrades that became sessions.", |s| s.totals.opened),
            ("roomcast_messages_received", "Data messages (text and binary) received from clients.", |s| s.totals.messages_received),
            ("roomcast_received_message_bytes", "Payload bytes of the data messages received (inflated when compressed).", |s| s.totals.message_bytes_received),
            ("roomcast_messages_sent", "Data messages queued to sessions: room deliveries and messages to one session.", |s| s.totals.messages_sent),
            ("roomcast_socket_read_bytes", "Bytes read from sessions' sockets after their upgrade.", |s| s.totals.socket_bytes_read),
            ("roomcast_socket_written_bytes", "Bytes written to sessions' sockets, frame headers included.", |s| s.totals.socket_bytes_written),
            ("roomcast_room_broadcasts", "Messages fanned out by their room's home shard: publications, raw broadcasts, presence changes.", |s| s.totals.broadcasts),
            ("roomcast_room_deliveries", "Room message frames queued to members on this shard.", |s| s.totals.deliveries),
            ("roomcast_slow_consumer_closes", "Sessions closed with 1008 for not reading what they were sent (WEBSOCKET_MAX_BACKPRESSURE).", |s| s.totals.slow_consumers),
            ("roomcast_cross_shard_posts", "Posts this shard took from its inbox: other shards' broadcasts and requests, the history store's and the Redis bridge's answers.", |s| s.totals.cross_shard_posts),
            ("roomcast_history_appends", "Publications appended to the streams of the rooms homed on this shard.", |s| s.totals.history_appends),
            ("roomcast_deflate_compressed_messages", "Messages compressed for permessage-deflate (a room broadcast once, however many members get it).", |s| s.deflate.messages_compressed),
            ("roomcast_deflate_inflated_messages", "Compressed messages received and inflated.", |s| s.deflate.messages_inflated),
            ("roomcast_deflate_input_bytes", "Bytes of the messages compressed.", |s| s.deflate.bytes_compressed),
            ("roomcast_deflate_output_bytes", "What those messages compressed to.", |s| s.deflate.bytes_compressed_to),
        ];
        for (name, help, value) in counters {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                by_shard(&self.shards, value),
                counter,
            )?;
        }
        let closes = self.shards.iter().flat_map(|s| {
            s.totals.closed.iter().map(|(code, n)| {
                (
                    vec![("shard", s.shard.to_string()), ("code", close_label(*code))],
                    *n,
                )
            })
        });
        family(
            &mut encoder,
            "roomcast_connections_closed",
            "Sessions ended, by the close code of their close handshake: the first close frame's, whoever sent it (1005: a close frame without a code; 1006: no close frame at all; 3xxx and 4xxx: application codes by class).",
            MetricType::Counter,
            closes,
            counter,
        )?;
        let failures = self.shards.iter().flat_map(|s| {
            HandshakeFailure::ALL
                .iter()
                .zip(s.totals.handshake_failures)
                .map(|(why, n)| {
                    (
                        vec![
                            ("shard", s.shard.to_string()),
                            ("reason", why.label().to_owned()),
                        ],
                        n,
                    )
                })
        });
        family(
            &mut encoder,
            "roomcast_handshake_failures",
            "WebSocket upgrades refused or abandoned, by reason.",
            MetricType::Counter,
            failures,
            counter,
        )?;
        let gauges: [PerShard<f64>; 5] = [
            ("roomcast_connections_open", "Sessions open.", |s| {
                s.open as f64
            }),
            (
                "roomcast_rooms",
                "Rooms with at least one member on this shard.",
                |s| s.rooms as f64,
            ),
            (
                "roomcast_room_members",
                "Room memberships on this shard.",
                |s| s.members as f64,
            ),
            (
                "roomcast_outbound_queued_bytes",
                "Bytes queued to sessions and not yet written.",
                |s| s.queued_bytes as f64,
            ),
            (
                "roomcast_shard_event_loop_lag_seconds",
                "How long the scrape's post to the shard waited before the shard ran it.",
                |s| s.lag.as_secs_f64(),
            ),
        ];
        for (name, help, value) in gauges {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                by_shard(&self.shards, value),
                gauge,
            )?;
        }
        let process_gauges: [(&str, &str, f64); 5] = [
            ("roomcast_shards", "WebSocket shards running.", self.shard_count as f64),
            ("roomcast_shards_answering", "Shards that answered this scrape in time (a missing one is stuck).", self.shards.len() as f64),
            ("roomcast_connections_limit", "Sessions the process admits at once (WEBSOCKET_MAX_CONNECTIONS, or the descriptor limit less a reserve).", self.connection_limit as f64),
            ("roomcast_deflate_sessions", "Sessions that negotiated permessage-deflate.", self.deflate_sessions as f64),
            ("roomcast_uptime_seconds", "Seconds since the server started.", self.uptime.as_secs_f64()),
        ];
        for (name, help, value) in process_gauges {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                [(Vec::new(), value)],
                gauge,
            )?;
        }
        let deflate = self.deflate();
        let ratio = match deflate.bytes_compressed {
            0 => 1.0,
            before => deflate.bytes_compressed_to as f64 / before as f64,
        };
        family(
            &mut encoder,
            "roomcast_deflate_ratio",
            "Compressed size over original size of everything compressed since the start (1 when nothing was); rate(roomcast_deflate_output_bytes_total) over rate(roomcast_deflate_input_bytes_total) gives it over a window.",
            MetricType::Gauge,
            [(Vec::new(), ratio)],
            gauge,
        )?;
        if let Some(cluster) = self.cluster {
            family(
                &mut encoder,
                "roomcast_cluster_redis_up",
                "Whether the subscriber connection to Redis is up (CLUSTER_REDIS_URL).",
                MetricType::Gauge,
                [(Vec::new(), if cluster.linked { 1.0 } else { 0.0 })],
                gauge,
            )?;
            let cluster_counts: [(&str, &str, u64); 4] = [
                ("roomcast_cluster_published", "Room messages this node published through Redis.", cluster.published),
                ("roomcast_cluster_received", "Room messages received from Redis for rooms with a member on this node.", cluster.received),
                ("roomcast_cluster_unavailable", "Publishes refused, and raw broadcasts kept to this node, because Redis could not be reached.", cluster.unavailable),
                ("roomcast_cluster_gap_filled", "Publications read back from a room's stream to fill a gap in the subscription.", cluster.gap_filled),
            ];
            for (name, help, value) in cluster_counts {
                family(
                    &mut encoder,
                    name,
                    help,
                    MetricType::Counter,
                    [(Vec::new(), value)],
                    counter,
                )?;
            }
        }
        let version = env!("CARGO_PKG_VERSION").to_owned();
        family(
            &mut encoder,
            "roomcast_build_info",
            "Always 1; the version is in the label.",
            MetricType::Gauge,
            [(vec![("version", version)], 1.0)],
            gauge,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let mut totals = ShardTotals::default();
        totals.session_closed(1000);
        totals.session_closed(1000);
        totals.session_closed(NO_CLOSE_FRAME);
        totals.session_closed(4001);
        totals.session_closed(4999);
        totals.handshake_failed(HandshakeFailure::OverCapacity);
        totals.messages_received = 3;
        let snapshot = ServerSnapshot {
            shards: vec![ShardSnapshot {
                shard: 0,
                totals,
                ..ShardSnapshot::default()
            }],
            shard_count: 1,
            connection_limit: 100,
            deflate_sessions: 0,
            cluster: None,
            uptime: Duration::from_secs(2),
        };
        let text = snapshot.to_prometheus();
        assert!(
            text.contains("roomcast_connections_closed_total{shard=\"0\",code=\"1000\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("roomcast_connections_closed_total{shard=\"0\",code=\"1006\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("roomcast_connections_closed_total{shard=\"0\",code=\"4xxx\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "roomcast_handshake_failures_total{shard=\"0\",reason=\"over_capacity\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("roomcast_messages_received_total{shard=\"0\"} 3\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let parts: Vec<&str> = line.split(' ').collect();
            let (name, kind) = (parts[2], parts[3]);
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
    }
}
