//! The standard scenarios, run one after another, and the Markdown results table they produce.
//!
//! Owns the list of standard runs (full size, or `quick` for a smoke test of the harness itself), which of
//! them offer permessage-deflate, and the record of the machine, the date and the command lines that goes
//! with their results. The deflate runs are the plain ones' twins (same scenario, same parameters), so
//! one suite run gives on/off ratios. Starting and stopping the server is not its job:
//! `loadtest/run-suite.sh` does that (the deflate set against a server with deflate on), so the suite
//! can measure any server the caller starts.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::report::{deflate_summary, Report};
use crate::scenario::{run, Error, RunOptions, Scenario};

/// Which standard runs to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// Every standard scenario.
    Full,
    /// Only the throughput runs, for repeating against a differently configured server (one shard).
    Throughput,
    /// Only the 19,000 held connections, against a fresh server: memory freed by an earlier run stays in
    /// the server's allocator and would make the per-connection figure look smaller than it is.
    Held,
    /// The permessage-deflate twins of the idle connections and the two saturate runs, against a fresh
    /// server with deflate on: idle first, so its RSS per connection is exact, as in `Full`.
    Deflate,
}

/// One standard run.
#[derive(Clone, Debug)]
pub struct Standard {
    /// The table's name for it.
    pub name: &'static str,
    /// What runs.
    pub scenario: Scenario,
    /// Whether its upgrades offer permessage-deflate (and fail without it).
    pub deflate: bool,
}

/// The standard runs of `set`, full size or `quick`.
pub fn standard(set: Set, quick: bool) -> Vec<Standard> {
    scenarios(set, quick)
        .into_iter()
        .map(|(name, scenario)| Standard {
            name,
            scenario,
            deflate: set == Set::Deflate,
        })
        .collect()
}

/// The scenarios of `set`, with their names in the table.
fn scenarios(set: Set, quick: bool) -> Vec<(&'static str, Scenario)> {
    let s = Duration::from_secs;
    let (idle_a, idle_b, members, run_for) = if quick {
        (200, 400, 50, s(2))
    } else {
        (10_000, 19_000, 1_000, s(10))
    };
    let saturate_small = Scenario::Saturate {
        members,
        window: 32,
        duration: run_for,
        size: 100,
    };
    let saturate_large = Scenario::Saturate {
        members: members / 10,
        window: 32,
        duration: run_for,
        size: 1024,
    };
    let rooms = Scenario::Rooms {
        clients: if quick { 100 } else { 2_000 },
        rooms: if quick { 10 } else { 200 },
        rate: 2.0,
        duration: run_for,
        size: 100,
    };
    let conns = |connections: usize| Scenario::Conns {
        connections,
        hold: run_for,
        sample: connections / 100,
    };
    if set == Set::Deflate {
        return vec![
            ("idle-10k-deflate", conns(idle_a)),
            ("saturate-100B-deflate", saturate_small),
            ("saturate-1KiB-deflate", saturate_large),
        ];
    }
    let mut runs = vec![
        ("saturate, 100 B", saturate_small),
        ("saturate, 1 KiB", saturate_large),
        ("rooms", rooms),
    ];
    if set == Set::Throughput {
        return runs;
    }
    if set == Set::Held {
        return vec![("conns, held at once", conns(idle_b))];
    }
    runs.splice(
        0..0,
        [("smoke", Scenario::Smoke), ("conns, idle", conns(idle_a))],
    );
    runs.push((
        "fanout",
        Scenario::Fanout {
            members,
            rate: 1000.0,
            messages: if quick { 200 } else { 5_000 },
            size: 100,
        },
    ));
    runs.push((
        "churn",
        Scenario::Churn {
            clients: if quick { 50 } else { 1_000 },
            rooms: if quick { 5 } else { 100 },
            rate: 1.0,
            churners: if quick { 10 } else { 50 },
            duration: run_for,
            size: 100,
        },
    ));
    runs
}

/// One finished standard run.
pub struct Outcome {
    /// The table's name for it.
    pub name: &'static str,
    /// What ran.
    pub scenario: Scenario,
    /// Whether it offered permessage-deflate.
    pub deflate: bool,
    /// What it measured, or why it did not run.
    pub result: Result<Report, Error>,
}

/// Runs `runs` in order, each offering deflate as it says whatever `options.deflate` is; `each` sees
/// every outcome as it finishes (for printing as the suite goes).
pub fn run_all(
    runs: Vec<Standard>,
    options: &RunOptions,
    mut each: impl FnMut(&Outcome),
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for standard in runs {
        if crate::interrupted() {
            break;
        }
        let options = RunOptions {
            deflate: standard.deflate,
            ..options.clone()
        };
        let result = run(&standard.scenario, &options);
        let outcome = Outcome {
            name: standard.name,
            scenario: standard.scenario,
            deflate: standard.deflate,
            result,
        };
        each(&outcome);
        outcomes.push(outcome);
        // Let the server reap the previous run's sessions before the next one is measured.
        std::thread::sleep(Duration::from_secs(1));
    }
    outcomes
}

/// The machine, the date and the command, as a Markdown preamble.
pub fn preamble(command: &str) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let mut out = String::new();
    let _ = writeln!(out, "- date (UTC): {}", today());
    let _ = writeln!(
        out,
        "- machine: nproc {nproc}, kernel {}, CPU {cpu}",
        kernel.trim()
    );
    let _ = writeln!(out, "- command: `{command}`");
    out
}

/// The table's header row.
pub fn table_header() -> String {
    "| server | run | parameters | ready | connect/s | deliveries/s | lost / dup / ooo | latency µs p50 / p99 / p99.9 / max | server RSS per conn | server CPU | deliveries per server CPU-s | deflate | wire B per message | harness CPU | result |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        .to_owned()
}

/// One table row per outcome, labelled with the server configuration.
pub fn table_rows(label: &str, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        let params = serde_json::to_value(&o.scenario)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != "scenario")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let r = match &o.result {
            Ok(r) => r,
            Err(e) => {
                let deflate = if o.deflate { "on" } else { "off" };
                let _ = writeln!(
                    out,
                    "| {label} | {} | {params} | | | | | | | | | {deflate} | | | not run: {e} |",
                    o.name
                );
                continue;
            }
        };
        let latency = r.latency_us.as_ref().map_or("–".to_owned(), |l| {
            format!("{} / {} / {} / {}", l.p50, l.p99, l.p999, l.max)
        });
        let server = r.server.as_ref();
        // Only a hold of idle connections says what one costs; elsewhere the difference is noise.
        let rss = server
            .filter(|_| matches!(o.scenario, Scenario::Conns { .. }))
            .and_then(|s| s.rss_per_connection_bytes)
            .map_or("–".to_owned(), |b| format!("{b:.0} B"));
        let cpu = server.map_or("–".to_owned(), |s| format!("{:.0}%", s.cpu_share * 100.0));
        let per_cpu = server
            .and_then(|s| s.deliveries_per_cpu_second)
            .map_or("–".to_owned(), |d| format!("{d:.0}"));
        let messages = r.messages_compressed + r.messages_plain;
        let wire = if messages > 0 {
            format!("{:.1}", r.bytes_received as f64 / messages as f64)
        } else {
            "–".to_owned()
        };
        let deflate = deflate_summary(r);
        let verdict = if r.passed {
            "pass".to_owned()
        } else {
            format!("FAIL: {}", r.failures.join("; "))
        };
        let ready = if r.steps.is_empty() {
            format!("{} / {}", r.ready, r.clients)
        } else {
            format!("{} steps", r.steps.len())
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {params} | {ready} | {:.0} | {:.0} | {} / {} / {} | {latency} | {rss} | {cpu} | {per_cpu} | {deflate} | {wire} | {:.0}% | {verdict} |",
            o.name,
            r.connect_rate_per_second,
            r.deliveries_per_second,
            r.lost,
            r.duplicated,
            r.out_of_order,
            r.harness.cpu_share * 100.0,
        );
    }
    out
}

/// Today's date, from the system clock, as YYYY-MM-DD.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_suite_holds_the_issue_targets() {
        let mut runs = standard(Set::Full, false);
        runs.extend(standard(Set::Held, false));
        assert!(runs.iter().any(|r| matches!(
            r.scenario,
            Scenario::Conns {
                connections: 19_000,
                ..
            }
        )));
        assert!(runs.iter().any(|r| matches!(
            r.scenario,
            Scenario::Saturate {
                members: 1_000,
                window: 32,
                size: 100,
                ..
            }
        )));
        assert_eq!(standard(Set::Throughput, true).len(), 3);
        assert_eq!(standard(Set::Held, true).len(), 1);
    }

    fn names(runs: &[Standard]) -> Vec<&'static str> {
        runs.iter().map(|r| r.name).collect()
    }

    #[test]
    fn plain_sets_are_unchanged_and_offer_nothing() {
        for quick in [false, true] {
            let full = standard(Set::Full, quick);
            assert_eq!(
                names(&full),
                [
                    "smoke",
                    "conns, idle",
                    "saturate, 100 B",
                    "saturate, 1 KiB",
                    "rooms",
                    "fanout",
                    "churn"
                ]
            );
            for set in [Set::Full, Set::Throughput, Set::Held] {
                assert!(standard(set, quick).iter().all(|r| !r.deflate));
            }
        }
    }

    #[test]
    fn deflate_runs_are_twins_of_the_plain_ones() {
        for quick in [false, true] {
            let full = standard(Set::Full, quick);
            let plain = |name: &str| {
                full.iter()
                    .find(|r| r.name == name)
                    .map(|r| r.scenario.clone())
                    .unwrap()
            };
            let deflate = standard(Set::Deflate, quick);
            assert!(deflate.iter().all(|r| r.deflate));
            assert_eq!(
                names(&deflate),
                [
                    "idle-10k-deflate",
                    "saturate-100B-deflate",
                    "saturate-1KiB-deflate"
                ]
            );
            assert_eq!(deflate[0].scenario, plain("conns, idle"));
            assert_eq!(deflate[1].scenario, plain("saturate, 100 B"));
            assert_eq!(deflate[2].scenario, plain("saturate, 1 KiB"));
        }
        assert!(matches!(
            standard(Set::Deflate, false)[0].scenario,
            Scenario::Conns {
                connections: 10_000,
                ..
            }
        ));
    }

    #[test]
    fn rows_say_whether_deflate_was_on_and_the_wire_bytes_per_message() {
        let report = Report {
            deflate: true,
            deflate_negotiated: 2,
            messages_compressed: 8,
            messages_plain: 2,
            bytes_received: 555,
            ..Report::default()
        };
        let outcome = Outcome {
            name: "saturate-100B-deflate",
            scenario: Scenario::Smoke,
            deflate: true,
            result: Ok(report),
        };
        let row = table_rows("2 shards, deflate", &[outcome]);
        assert!(
            row.contains("| on: 2 upgrades negotiated; 8 messages compressed, 2 plain | 55.5 |")
        );
        let columns = |line: &str| line.matches('|').count();
        assert_eq!(
            columns(&row),
            columns(table_header().lines().next().unwrap())
        );
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
