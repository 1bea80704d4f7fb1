//! The result of one run: the JSON object printed on stdout and the table printed on stderr.
//!
//! Owns the report's shape, the derived figures (loss, rates, CPU shares, per-connection RSS, a soak's
//! RSS limit) and the pass/fail rule: a run fails when any client failed set-up or was cut off, any
//! message was lost, duplicated or reordered, any reply was not the seed's, a probe went unanswered, a
//! soak's server did not give its memory back, it was interrupted, or it offered permessage-deflate and
//! an upgrade came back without it.
//! It does not measure anything itself (see `runner`, `procfs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds, from publisher send to member receipt.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Receipts measured.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h`, or `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            samples: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        })
    }
}

/// The server's figures, with `--server-pid`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerFigures {
    /// The process measured.
    pub pid: u32,
    /// RSS before any client connected.
    pub rss_before_bytes: u64,
    /// RSS with every client set up.
    pub rss_held_bytes: u64,
    /// RSS at the end of the run.
    pub rss_after_bytes: u64,
    /// (held − before) / clients set up: what one idle connection costs the server.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds over the run and drain.
    pub cpu_seconds: f64,
    /// CPU seconds per wall second over the run and drain (1.0 = one core busy).
    pub cpu_share: f64,
    /// Deliveries per server CPU-second: the fair figure when client and server share the machine.
    pub deliveries_per_cpu_second: Option<f64>,
    /// How often per wall second, over the run and drain, the server's threads went to sleep (and so
    /// were woken again): at moderate load most of a server's CPU is these (`loadtest wake-cost`).
    pub sleeps_per_second: Option<f64>,
    /// A soak's RSS from the start of the run to after the clients are gone (its fields sit beside the
    /// others in the JSON).
    #[serde(flatten)]
    pub soak: Option<SoakMemory>,
}

/// The server's RSS through a soak.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SoakMemory {
    /// RSS with every steady client set up, right before traffic started.
    pub rss_start_bytes: u64,
    /// The largest sample, taken about once a second from the start to the end.
    pub rss_peak_bytes: u64,
    /// RSS once every harness client had disconnected and the figure stopped falling.
    pub rss_end_bytes: u64,
    /// The most `rss_end_bytes` may be for the soak to pass: the start plus 16 MiB or a quarter of the
    /// start, whichever is more.
    pub rss_end_limit_bytes: u64,
    /// How long the end was waited for after the last client disconnected.
    pub settle_seconds: f64,
}

/// The most a soak's server RSS may end at: its start plus 16 MiB or a quarter of the start, whichever
/// is more. The slack is for what an allocator keeps for reuse; a leak per session grows past it over
/// ten minutes of churn.
pub fn rss_end_limit(rss_start_bytes: u64) -> u64 {
    rss_start_bytes + (16u64 << 20).max(rss_start_bytes / 4)
}

/// The harness's own cost over the run and drain.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HarnessFigures {
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_share: f64,
    /// CPU nanoseconds per delivery, publishing included.
    pub cpu_ns_per_delivery: Option<f64>,
}

/// One second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the run started.
    pub second: u64,
    /// Counted deliveries in that second.
    pub deliveries: u64,
    /// Latency percentiles of that second's receipts, microseconds.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
    /// Server CPU share in that second, with `--server-pid`.
    pub server_cpu_share: Option<f64>,
    /// Harness CPU share in that second.
    pub harness_cpu_share: f64,
}

/// One step of the smoke scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was received, when it was not what was expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The server's URL.
    pub url: String,
    /// The scenario's parameters as given.
    pub parameters: serde_json::Value,
    /// Whether every check held.
    pub passed: bool,
    /// Why it did not.
    pub failures: Vec<String>,
    /// Driver threads.
    pub threads: usize,
    /// Clients to set up before the run (churners excluded).
    pub clients: u64,
    /// Clients that finished set-up.
    pub ready: u64,
    /// Time from the first connect to the last client ready (or the set-up deadline).
    pub setup_seconds: f64,
    /// Clients set up per second of set-up.
    pub connect_rate_per_second: f64,
    /// Set-up failures by kind.
    pub connect_errors: BTreeMap<String, u64>,
    /// Connections lost after set-up, by kind.
    pub disconnects: BTreeMap<String, u64>,
    /// Length of the run phase.
    pub run_seconds: f64,
    /// Messages published.
    pub messages_sent: u64,
    /// Counted deliveries.
    pub deliveries: u64,
    /// Counted deliveries per second of run plus drain.
    pub deliveries_per_second: f64,
    /// Messages owed to members and never received by the end of the drain.
    pub lost: u64,
    /// Deliveries of a message already received.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message from the same publisher.
    pub out_of_order: u64,
    /// Texts that were neither a delivery nor an expected reply.
    pub unexpected_replies: u64,
    /// Latency, when anything was delivered.
    pub latency_us: Option<Latency>,
    /// Probe pings sent after the run.
    pub probes_sent: u64,
    /// Probe pongs received.
    pub probes_answered: u64,
    /// Churn cycles completed.
    pub churn_cycles: u64,
    /// Whether every upgrade offered permessage-deflate (`--deflate`).
    pub deflate: bool,
    /// Upgrades the server answered with permessage-deflate (churners' reconnections included).
    pub deflate_negotiated: u64,
    /// Data messages received compressed (RSV1 set), every connection and stage: inflated by the harness.
    pub messages_compressed: u64,
    /// Data messages received uncompressed: all of them without deflate; with it, those the server left
    /// plain (too small, or not made smaller by compression).
    pub messages_plain: u64,
    /// Every byte read from the server, upgrade responses and frame headers included.
    pub bytes_received: u64,
    /// The data messages' bytes once inflated: against `bytes_received`, what compression saved.
    pub message_bytes_received: u64,
    /// With `--server-pid`.
    pub server: Option<ServerFigures>,
    /// The harness's own cost.
    pub harness: HarnessFigures,
    /// Per second of the run.
    pub timeline: Vec<Point>,
    /// The smoke scenario's steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

impl Report {
    /// Fills `failures` and `passed` from the counts.
    pub fn judge(&mut self, interrupted: bool) {
        let mut f = Vec::new();
        if interrupted {
            f.push("interrupted".to_owned());
        }
        if self.ready < self.clients {
            f.push(format!(
                "{} of {} clients failed set-up",
                self.clients - self.ready,
                self.clients
            ));
        }
        let setup_errors: u64 = self.connect_errors.values().sum();
        if setup_errors > 0 && self.ready == self.clients {
            f.push(format!("{setup_errors} connection attempts failed"));
        }
        let cut: u64 = self.disconnects.values().sum();
        if cut > 0 {
            f.push(format!("{cut} connections lost during the run"));
        }
        for (count, what) in [
            (self.lost, "lost"),
            (self.duplicated, "duplicated"),
            (self.out_of_order, "out of order"),
            (self.unexpected_replies, "unexpected replies"),
        ] {
            if count > 0 {
                f.push(format!("{count} {what}"));
            }
        }
        let refused = self.connect_errors.get("deflate_refused").copied();
        if let (true, Some(refused)) = (self.deflate, refused) {
            f.push(format!(
                "{refused} upgrades came back without the permessage-deflate offered: is the server \
                 started with WEBSOCKET_ENABLE_DEFLATE=true?"
            ));
        }
        if self.probes_answered < self.probes_sent {
            f.push(format!(
                "{} of {} sampled connections did not answer ping",
                self.probes_sent - self.probes_answered,
                self.probes_sent
            ));
        }
        if let Some(m) = self.server.as_ref().and_then(|s| s.soak.as_ref()) {
            if m.rss_end_bytes > m.rss_end_limit_bytes {
                f.push(format!(
                    "server RSS ended at {} KiB, above the limit of {} KiB (start {} KiB)",
                    m.rss_end_bytes / 1024,
                    m.rss_end_limit_bytes / 1024,
                    m.rss_start_bytes / 1024
                ));
            }
        }
        for step in self.steps.iter().filter(|s| !s.ok) {
            f.push(format!(
                "{}: {}",
                step.name,
                step.detail.as_deref().unwrap_or("failed")
            ));
        }
        self.passed = f.is_empty();
        self.failures = f;
    }

    /// The human-readable summary for stderr.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.clone()),
            ("result".into(), verdict(self)),
        ];
        if !self.steps.is_empty() {
            for s in &self.steps {
                let mark = if s.ok { "ok" } else { "FAILED" };
                let detail = s
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                rows.push((s.name.clone(), format!("{mark}{detail}")));
            }
        } else {
            rows.push((
                "clients ready".into(),
                format!("{} / {}", self.ready, self.clients),
            ));
            rows.push((
                "set-up".into(),
                format!(
                    "{:.2} s, {:.0} conn/s",
                    self.setup_seconds, self.connect_rate_per_second
                ),
            ));
            if !self.connect_errors.is_empty() {
                rows.push((
                    "connect errors".into(),
                    format!("{:?}", self.connect_errors),
                ));
            }
            if !self.disconnects.is_empty() {
                rows.push(("disconnects".into(), format!("{:?}", self.disconnects)));
            }
            rows.push((
                "run".into(),
                format!(
                    "{:.2} s, {} messages sent",
                    self.run_seconds, self.messages_sent
                ),
            ));
            rows.push((
                "deliveries".into(),
                format!("{} ({:.0}/s)", self.deliveries, self.deliveries_per_second),
            ));
            rows.push(("deflate".into(), deflate_summary(self)));
            rows.push((
                "received".into(),
                format!(
                    "{} KiB on the wire, {} KiB of messages",
                    self.bytes_received / 1024,
                    self.message_bytes_received / 1024
                ),
            ));
            rows.push((
                "lost / dup / out of order".into(),
                format!(
                    "{} / {} / {}",
                    self.lost, self.duplicated, self.out_of_order
                ),
            ));
            if let Some(l) = &self.latency_us {
                rows.push((
                    "latency µs p50/p90/p99/p99.9/max".into(),
                    format!("{} / {} / {} / {} / {}", l.p50, l.p90, l.p99, l.p999, l.max),
                ));
            }
            if self.probes_sent > 0 {
                rows.push((
                    "ping sample".into(),
                    format!("{} / {} answered", self.probes_answered, self.probes_sent),
                ));
            }
            if self.churn_cycles > 0 {
                rows.push(("churn cycles".into(), self.churn_cycles.to_string()));
            }
            if let Some(s) = &self.server {
                rows.push((
                    "server RSS before / held / after".into(),
                    format!(
                        "{} / {} / {} KiB",
                        s.rss_before_bytes / 1024,
                        s.rss_held_bytes / 1024,
                        s.rss_after_bytes / 1024
                    ),
                ));
                if let Some(m) = &s.soak {
                    rows.push((
                        "server RSS start / peak / end".into(),
                        format!(
                            "{} / {} / {} KiB (end limit {} KiB, settled in {:.1} s)",
                            m.rss_start_bytes / 1024,
                            m.rss_peak_bytes / 1024,
                            m.rss_end_bytes / 1024,
                            m.rss_end_limit_bytes / 1024,
                            m.settle_seconds
                        ),
                    ));
                }
                if let Some(per) = s.rss_per_connection_bytes {
                    rows.push(("server RSS per connection".into(), format!("{per:.0} B")));
                }
                rows.push((
                    "server CPU".into(),
                    format!(
                        "{:.2} s ({:.0}% of a core)",
                        s.cpu_seconds,
                        s.cpu_share * 100.0
                    ),
                ));
                if let Some(d) = s.deliveries_per_cpu_second {
                    rows.push(("deliveries per server CPU-s".into(), format!("{d:.0}")));
                }
            }
            let h = &self.harness;
            let per = h
                .cpu_ns_per_delivery
                .map(|n| format!(", {n:.0} ns/delivery"))
                .unwrap_or_default();
            rows.push((
                "harness CPU".into(),
                format!(
                    "{:.2} s ({:.0}% of a core){per}",
                    h.cpu_seconds,
                    h.cpu_share * 100.0
                ),
            ));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<width$}  {v}");
        }
        out
    }
}

/// `off`, or how many upgrades negotiated deflate and how many messages came compressed.
pub fn deflate_summary(r: &Report) -> String {
    if !r.deflate {
        return "off".to_owned();
    }
    format!(
        "on: {} upgrades negotiated; {} messages compressed, {} plain",
        r.deflate_negotiated, r.messages_compressed, r.messages_plain
    )
}

fn verdict(r: &Report) -> String {
    if r.passed {
        "PASS".to_owned()
    } else {
        format!("FAIL: {}", r.failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_passes_and_any_loss_fails() {
        let mut r = Report {
            clients: 3,
            ready: 3,
            ..Report::default()
        };
        r.judge(false);
        assert!(r.passed, "{:?}", r.failures);
        r.lost = 2;
        r.judge(false);
        assert!(!r.passed);
        assert_eq!(r.failures, vec!["2 lost"]);
        assert!(r.table().contains("FAIL: 2 lost"));
    }

    #[test]
    fn a_soak_fails_when_the_server_keeps_its_memory() {
        let start = 100 << 20;
        let soak = |end: u64| SoakMemory {
            rss_start_bytes: start,
            rss_peak_bytes: start * 2,
            rss_end_bytes: end,
            rss_end_limit_bytes: rss_end_limit(start),
            settle_seconds: 2.0,
        };
        let mut r = Report {
            server: Some(ServerFigures {
                soak: Some(soak(start + (25 << 20))),
                ..ServerFigures::default()
            }),
            ..Report::default()
        };
        r.judge(false);
        assert!(r.passed, "{:?}", r.failures);
        r.server.as_mut().unwrap().soak = Some(soak(start + (26 << 20)));
        r.judge(false);
        assert!(!r.passed);
        assert!(r.failures[0].starts_with("server RSS ended at"));
        assert!(r.table().contains("server RSS start / peak / end"));
        // A small server still gets 16 MiB of slack.
        assert_eq!(rss_end_limit(8 << 20), 24 << 20);
    }

    #[test]
    fn deflate_refused_by_the_server_fails_with_the_reason() {
        let mut r = Report {
            clients: 3,
            ready: 0,
            deflate: true,
            connect_errors: [("deflate_refused".to_owned(), 3)].into(),
            ..Report::default()
        };
        r.judge(false);
        assert!(!r.passed);
        assert!(
            r.failures
                .iter()
                .any(|f| f.starts_with("3 upgrades came back without the permessage-deflate")),
            "{:?}",
            r.failures
        );
        assert!(r.table().contains("on: 0 upgrades negotiated"));
    }

    #[test]
    fn the_table_shows_compression() {
        let r = Report {
            deflate: true,
            deflate_negotiated: 11,
            messages_compressed: 1000,
            messages_plain: 22,
            bytes_received: 50 * 1024,
            message_bytes_received: 120 * 1024,
            ..Report::default()
        };
        let table = r.table();
        assert!(table.contains("on: 11 upgrades negotiated; 1000 messages compressed, 22 plain"));
        assert!(table.contains("50 KiB on the wire, 120 KiB of messages"));
        let plain = Report::default().table();
        assert!(plain.contains("deflate") && plain.contains("off"));
    }

    #[test]
    fn unanswered_probes_and_failed_setup_fail() {
        let mut r = Report {
            clients: 3,
            ready: 2,
            probes_sent: 2,
            probes_answered: 1,
            ..Report::default()
        };
        r.judge(false);
        assert_eq!(r.failures.len(), 2);
    }
}
