//! `loadtest compare`: our server's standard runs against a peer's, as ratios of medians, read back from
//! the JSON lines each server's runs printed, in a Markdown table whose rows carry issue 11's targets.
//!
//! Owns reading report lines back (only the figures it compares), naming each line by the standard run it
//! was (its parameters matched against `suite`'s lists, full size or quick), which figures each run is
//! compared on and against which target, and the table. It makes no run and starts no server
//! (`loadtest/run-suite.sh` does, and saves each server's lines to a file of its own), and it must never
//! mix unlike runs: deflate twins, smoke and non-standard runs are left out and counted, quick and full
//! sizes are rows of their own, and no target is judged from a run that failed.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::scenario::Scenario;
use crate::suite::{self, Set};

/// The fields of one report line (`report::Report` as JSON) that a comparison reads; the rest are ignored.
#[derive(Clone, Debug, Deserialize)]
struct Line {
    parameters: serde_json::Value,
    passed: bool,
    deflate: bool,
    connect_rate_per_second: f64,
    deliveries_per_second: f64,
    latency_us: Option<LineLatency>,
    server: Option<LineServer>,
}

#[derive(Clone, Debug, Deserialize)]
struct LineLatency {
    p99: u64,
}

#[derive(Clone, Debug, Deserialize)]
struct LineServer {
    cpu_share: f64,
    deliveries_per_cpu_second: Option<f64>,
    rss_per_connection_bytes: Option<f64>,
    /// Absent from lines of older harnesses.
    #[serde(default)]
    sleeps_per_second: Option<f64>,
}

/// A standard run: its name in the suite's table, and whether it was the `--quick` size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    name: &'static str,
    quick: bool,
}

/// The standard load runs a comparison knows, in the suite's order, full size first. Smoke is not one:
/// it checks replies and measures nothing.
fn known() -> Vec<(Key, Scenario)> {
    [false, true]
        .into_iter()
        .flat_map(|quick| {
            [Set::Full, Set::Held]
                .into_iter()
                .flat_map(move |set| suite::standard(set, quick))
                .filter(|s| s.scenario != Scenario::Smoke)
                .map(move |s| {
                    (
                        Key {
                            name: s.name,
                            quick,
                        },
                        s.scenario,
                    )
                })
        })
        .collect()
}

/// One server's report lines, each named by the standard run it was, in the order they were run.
#[derive(Debug, Default)]
pub struct Runs {
    runs: Vec<(Key, Line)>,
    skipped: usize,
}

impl Runs {
    /// Reads JSON report lines (one object a line, blank lines ignored). Lines of no standard load run
    /// (smoke, the deflate twins, other scenarios or sizes) are counted, not kept. `Err` names the first
    /// line that is not a report.
    pub fn parse(text: &str) -> Result<Runs, String> {
        let known: Vec<(Key, serde_json::Value)> = known()
            .into_iter()
            .map(|(key, scenario)| {
                let parameters = serde_json::to_value(scenario).expect("scenarios serialize");
                (key, parameters)
            })
            .collect();
        let mut runs = Runs::default();
        for (i, text) in text.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(text)
                .map_err(|e| format!("line {}: not a loadtest report: {e}", i + 1))?;
            let key = known
                .iter()
                .find(|(_, parameters)| !line.deflate && *parameters == line.parameters)
                .map(|(key, _)| *key);
            match key {
                Some(key) => runs.runs.push((key, line)),
                None => runs.skipped += 1,
            }
        }
        Ok(runs)
    }

    /// How many lines are compared.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether no line is compared.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many lines were left out as no standard load run.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn of(&self, key: Key) -> Vec<&Line> {
        self.runs
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, line)| line)
            .collect()
    }
}

/// One side of the comparison: a server's name, the file its lines came from, and the lines.
pub struct Side<'a> {
    /// The server's name, for the table's columns.
    pub name: &'a str,
    /// Where its lines came from, for the text above the table.
    pub file: &'a str,
    /// Its runs.
    pub runs: &'a Runs,
}

/// A figure compared.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Figure {
    PerCpuSecond,
    DeliveriesPerSecond,
    CpuShare,
    P99,
    RssPerConnection,
    ConnectRate,
    SleepsPerSecond,
    CpuPerSleep,
}

impl Figure {
    fn label(self) -> &'static str {
        match self {
            Figure::PerCpuSecond => "deliveries per server CPU-s",
            Figure::DeliveriesPerSecond => "deliveries/s",
            Figure::CpuShare => "server CPU",
            Figure::P99 => "latency p99",
            Figure::RssPerConnection => "server RSS per connection",
            Figure::ConnectRate => "connect rate",
            Figure::SleepsPerSecond => "server sleeps (and wake-ups)/s",
            Figure::CpuPerSleep => "server CPU per sleep",
        }
    }

    fn of(self, line: &Line) -> Option<f64> {
        let server = line.server.as_ref();
        match self {
            Figure::PerCpuSecond => server.and_then(|s| s.deliveries_per_cpu_second),
            Figure::DeliveriesPerSecond => Some(line.deliveries_per_second),
            Figure::CpuShare => server.map(|s| s.cpu_share),
            Figure::P99 => line.latency_us.as_ref().map(|l| l.p99 as f64),
            Figure::RssPerConnection => server.and_then(|s| s.rss_per_connection_bytes),
            Figure::ConnectRate => Some(line.connect_rate_per_second),
            Figure::SleepsPerSecond => server.and_then(|s| s.sleeps_per_second),
            // Everything the server spent, over its sleeps: what one sleep-and-wake cycle of its
            // threads costs with the work done in it, read against `loadtest wake-cost`.
            Figure::CpuPerSleep => server.and_then(|s| {
                s.sleeps_per_second
                    .filter(|&n| n > 0.0)
                    .map(|n| s.cpu_share / n)
            }),
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Figure::PerCpuSecond => format!("{:.2} M", v / 1e6),
            Figure::DeliveriesPerSecond => format!("{v:.0}"),
            Figure::CpuShare => format!("{:.0}%", v * 100.0),
            Figure::P99 => format!("{v:.0} µs"),
            Figure::RssPerConnection => format!("{v:.0} B"),
            Figure::ConnectRate => format!("{v:.0}/s"),
            Figure::SleepsPerSecond => format!("{v:.0}"),
            Figure::CpuPerSleep => format!("{:.1} µs", v * 1e6),
        }
    }
}

/// What a figure must be for issue 11's target to be met.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Goal {
    /// Our median at least this many times the peer's.
    RatioAtLeast(f64),
    /// Our median at most this many times the peer's.
    RatioAtMost(f64),
    /// Our median at most this, whatever the peer's (bytes).
    OursAtMost(f64),
    /// The medians equal within this fraction: the check that the other figures of the run compare like
    /// with like (an open-loop run whose servers delivered different rates did different work).
    SameWithin(f64),
    /// No target: shown for the ratio alone.
    None,
}

/// The figures `name` is compared on, each with its target; every run with connections also on the
/// connect rate, which must be at least the peer's.
fn rows_of(name: &str) -> Vec<(Figure, Goal)> {
    let mut rows = match name {
        "saturate, 100 B" | "saturate, 1 KiB" => {
            vec![(Figure::PerCpuSecond, Goal::RatioAtLeast(1.9))]
        }
        "rooms" => vec![
            (Figure::DeliveriesPerSecond, Goal::SameWithin(0.02)),
            (Figure::CpuShare, Goal::RatioAtMost(0.45)),
            (Figure::P99, Goal::RatioAtMost(1.0)),
            (Figure::SleepsPerSecond, Goal::None),
            (Figure::CpuPerSleep, Goal::None),
        ],
        "conns, idle" => vec![(Figure::RssPerConnection, Goal::None)],
        "conns, held at once" => vec![(Figure::RssPerConnection, Goal::OursAtMost(512.0))],
        _ => Vec::new(),
    };
    rows.push((Figure::ConnectRate, Goal::RatioAtLeast(1.0)));
    rows
}

/// The median of `values`, or `None` when there are none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Whether a row's target is met, or why it is not judged.
#[derive(Debug, PartialEq)]
enum Verdict {
    Met,
    Missed,
    NoTarget,
    RunFailed,
    NotMeasured,
}

impl Verdict {
    fn text(&self) -> &'static str {
        match self {
            Verdict::Met => "yes",
            Verdict::Missed => "**no**",
            Verdict::NoTarget => "–",
            Verdict::RunFailed => "not judged: a run failed",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// Our median over the peer's, to the two decimals the table prints: a target is judged on the ratio
/// the reader sees, so `1.00×` is never a miss of `≥ 1×` (figures the harness quantizes, such as the
/// connect rate of a small run, often differ by less).
fn printed_ratio(ours: Option<f64>, peer: Option<f64>) -> Option<f64> {
    match (ours, peer) {
        (Some(o), Some(p)) if p > 0.0 => Some((o / p * 100.0).round() / 100.0),
        _ => None,
    }
}

/// Judges `goal` from our median and the ratio of medians; `failed` when a run the goal depends on
/// failed.
fn judge(goal: Goal, failed: bool, ours: Option<f64>, ratio: Option<f64>) -> Verdict {
    if goal == Goal::None {
        return Verdict::NoTarget;
    }
    if failed {
        return Verdict::RunFailed;
    }
    let met = match (goal, ratio, ours) {
        (Goal::RatioAtLeast(x), Some(r), _) => r >= x,
        (Goal::RatioAtMost(x), Some(r), _) => r <= x,
        (Goal::SameWithin(x), Some(r), _) => (r - 1.0).abs() <= x,
        (Goal::OursAtMost(x), _, Some(o)) => o <= x,
        _ => return Verdict::NotMeasured,
    };
    if met {
        Verdict::Met
    } else {
        Verdict::Missed
    }
}

/// The goal in words, naming the servers.
fn goal_text(goal: Goal, ours: &str, peer: &str) -> String {
    match goal {
        Goal::RatioAtLeast(x) => format!("≥ {x}× {peer}"),
        Goal::RatioAtMost(x) => format!("≤ {x}× {peer}"),
        Goal::OursAtMost(x) => format!("{ours} ≤ {x:.0} B"),
        Goal::SameWithin(x) => format!("equal within {:.0} %", x * 100.0),
        Goal::None => "–".to_owned(),
    }
}

/// Each run's figure in the order run, `/`-separated; a failed run's is marked.
fn figures(lines: &[&Line], figure: Figure) -> String {
    if lines.is_empty() {
        return "no runs".to_owned();
    }
    lines
        .iter()
        .map(|line| {
            let v = figure.of(line).map_or("–".to_owned(), |v| figure.format(v));
            if line.passed {
                v
            } else {
                format!("{v} (FAILED)")
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The comparison as a Markdown section: what was read, one row per (run, figure) with each run's figure
/// on both sides, the ratio of medians, the target and whether it is met, then the count of targets met.
pub fn section(ours: &Side, peer: &Side) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## {} against {}\n", ours.name, peer.name);
    let _ = writeln!(
        out,
        "From the runs' JSON lines: {} `{}` ({} compared, {} left out), {} `{}` ({} compared, \
         {} left out); smoke, the deflate twins and non-standard runs are left out. Each figure is one run, \
         in the order run; the ratio is {}'s median over {}'s, judged as printed (two decimals). Targets \
         are issue 11's; none is judged from a run that failed.\n",
        ours.name,
        ours.file,
        ours.runs.len(),
        ours.runs.skipped(),
        peer.name,
        peer.file,
        peer.runs.len(),
        peer.runs.skipped(),
        ours.name,
        peer.name,
    );
    let keys: Vec<Key> = known()
        .into_iter()
        .map(|(key, _)| key)
        .filter(|&key| !ours.runs.of(key).is_empty() || !peer.runs.of(key).is_empty())
        .collect();
    if keys.iter().any(|key| key.quick) {
        let _ = writeln!(
            out,
            "Rows marked (quick) are `--quick` sizes: they check the harness and the script, not the \
             servers.\n"
        );
    }
    let _ = writeln!(
        out,
        "| run | figure | {} | {} | {} / {} | target | met |\n|---|---|---|---|---|---|---|",
        ours.name, peer.name, ours.name, peer.name
    );
    let (mut met, mut judged) = (0, 0);
    for key in keys {
        let (o, p) = (ours.runs.of(key), peer.runs.of(key));
        let run = if key.quick {
            format!("{} (quick)", key.name)
        } else {
            key.name.to_owned()
        };
        for (figure, goal) in rows_of(key.name) {
            let median_of =
                |lines: &[&Line]| median(lines.iter().filter_map(|l| figure.of(l)).collect());
            let ours_median = median_of(&o);
            let ratio = printed_ratio(ours_median, median_of(&p));
            // A target on our figure alone does not depend on the peer's runs.
            let failed = match goal {
                Goal::OursAtMost(_) => o.iter().any(|l| !l.passed),
                _ => o.iter().chain(&p).any(|l| !l.passed),
            };
            let verdict = judge(goal, failed, ours_median, ratio);
            judged += usize::from(matches!(verdict, Verdict::Met | Verdict::Missed));
            met += usize::from(verdict == Verdict::Met);
            let _ = writeln!(
                out,
                "| {run} | {} | {} | {} | {} | {} | {} |",
                figure.label(),
                figures(&o, figure),
                figures(&p, figure),
                ratio.map_or("–".to_owned(), |r| format!("{r:.2}×")),
                goal_text(goal, ours.name, peer.name),
                verdict.text(),
            );
        }
    }
    let _ = writeln!(out, "\nTargets met: {met} of {judged} judged.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Report, ServerFigures};

    /// A report line as `loadtest` prints it, for the standard run `name` (full size).
    fn line(name: &str, passed: bool, per_cpu: f64, cpu: f64, p99: u64, rss: f64) -> String {
        let scenario = suite::standard(Set::Full, false)
            .into_iter()
            .chain(suite::standard(Set::Held, false))
            .find(|s| s.name == name)
            .unwrap()
            .scenario;
        let report = Report {
            parameters: serde_json::to_value(&scenario).unwrap(),
            passed,
            connect_rate_per_second: 20_000.0,
            deliveries_per_second: 40_000.0,
            latency_us: Some(Latency {
                p99,
                ..Latency::default()
            }),
            server: Some(ServerFigures {
                cpu_share: cpu,
                deliveries_per_cpu_second: Some(per_cpu),
                rss_per_connection_bytes: Some(rss),
                ..ServerFigures::default()
            }),
            ..Report::default()
        };
        serde_json::to_string(&report).unwrap()
    }

    fn row<'a>(section: &'a str, run: &str, figure: &str) -> &'a str {
        section
            .lines()
            .find(|l| l.starts_with(&format!("| {run} | {figure} |")))
            .unwrap_or_else(|| panic!("no row {run} / {figure} in\n{section}"))
    }

    fn compare(ours: &str, peer: &str) -> String {
        let (o, p) = (Runs::parse(ours).unwrap(), Runs::parse(peer).unwrap());
        section(
            &Side {
                name: "roomcast",
                file: "ours.jsonl",
                runs: &o,
            },
            &Side {
                name: "tokio-chat",
                file: "peer.jsonl",
                runs: &p,
            },
        )
    }

    #[test]
    fn the_names_compared_are_the_suites() {
        let names: Vec<&str> = known().iter().map(|(k, _)| k.name).collect();
        for name in [
            "saturate, 100 B",
            "saturate, 1 KiB",
            "rooms",
            "conns, idle",
            "conns, held at once",
        ] {
            assert!(names.contains(&name), "{name} is not a standard run");
            assert!(rows_of(name).len() > 1, "{name} has no figure of its own");
        }
        assert!(!names.contains(&"smoke"));
    }

    #[test]
    fn ratios_are_judged_as_printed() {
        assert_eq!(printed_ratio(Some(9924.0), Some(9927.0)), Some(1.0));
        assert_eq!(
            judge(
                Goal::RatioAtLeast(1.0),
                false,
                None,
                printed_ratio(Some(9924.0), Some(9927.0))
            ),
            Verdict::Met
        );
        assert_eq!(
            judge(
                Goal::RatioAtLeast(1.0),
                false,
                None,
                printed_ratio(Some(9900.0), Some(9999.0))
            ),
            Verdict::Missed
        );
        assert_eq!(printed_ratio(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn every_run_is_shown_and_the_ratio_is_of_medians() {
        let ours = [3.5e6, 3.3e6, 3.4e6]
            .map(|d| line("saturate, 100 B", true, d, 1.1, 10_000, 0.0))
            .join("\n");
        let peer = [0.6e6, 2.0e6, 0.5e6]
            .map(|d| line("saturate, 100 B", true, d, 1.9, 20_000, 0.0))
            .join("\n");
        let out = compare(&ours, &peer);
        let r = row(&out, "saturate, 100 B", "deliveries per server CPU-s");
        assert!(
            r.contains("| 3.50 M / 3.30 M / 3.40 M | 0.60 M / 2.00 M / 0.50 M | 5.67× |"),
            "{r}"
        );
        assert!(r.ends_with("| ≥ 1.9× tokio-chat | yes |"), "{r}");
        let r = row(&out, "saturate, 100 B", "connect rate");
        assert!(r.contains("| 1.00× | ≥ 1× tokio-chat | yes |"), "{r}");
        assert!(out.contains("Targets met: 2 of 2 judged."));
        // Only the runs there were get rows.
        assert!(!out.contains("| rooms |"));
    }

    #[test]
    fn rooms_rows_check_the_rate_then_cpu_and_p99() {
        let ours = line("rooms", true, 9e4, 0.42, 900, 0.0);
        let peer = line("rooms", true, 3e4, 1.0, 800, 0.0);
        let out = compare(&ours, &peer);
        assert!(row(&out, "rooms", "deliveries/s").ends_with("| 1.00× | equal within 2 % | yes |"));
        assert!(row(&out, "rooms", "server CPU").ends_with("| 0.42× | ≤ 0.45× tokio-chat | yes |"));
        let r = row(&out, "rooms", "latency p99");
        assert!(r.contains("| 900 µs | 800 µs | 1.13× |"), "{r}");
        assert!(r.ends_with("| **no** |"), "{r}");
        assert!(out.contains("Targets met: 3 of 4 judged."));
    }

    #[test]
    fn held_rss_is_judged_on_ours_alone_and_idle_has_no_target() {
        let ours = [
            line("conns, idle", true, 0.0, 0.0, 0, 885.0),
            line("conns, held at once", true, 0.0, 0.0, 0, 500.0),
        ]
        .join("\n");
        // The peer's held run failed; our figure still stands on its own.
        let peer = [
            line("conns, idle", true, 0.0, 0.0, 0, 4000.0),
            line("conns, held at once", false, 0.0, 0.0, 0, 5000.0),
        ]
        .join("\n");
        let out = compare(&ours, &peer);
        assert!(
            row(&out, "conns, idle", "server RSS per connection").ends_with("| 0.22× | – | – |")
        );
        let r = row(&out, "conns, held at once", "server RSS per connection");
        assert!(
            r.contains("| 500 B | 5000 B (FAILED) | 0.10× | roomcast ≤ 512 B | yes |"),
            "{r}"
        );
        let r = row(&out, "conns, held at once", "connect rate");
        assert!(r.ends_with("| not judged: a run failed |"), "{r}");
    }

    #[test]
    fn a_side_without_the_run_says_so() {
        let ours = line("rooms", true, 9e4, 0.42, 900, 0.0);
        let out = compare(&ours, "");
        let r = row(&out, "rooms", "server CPU");
        assert!(
            r.contains("| 42% | no runs | – |") && r.ends_with("| not measured |"),
            "{r}"
        );
    }

    #[test]
    fn smoke_deflate_twins_and_other_runs_are_left_out() {
        let deflate = line("conns, idle", true, 0.0, 0.0, 0, 900.0)
            .replace("\"deflate\":false", "\"deflate\":true");
        let smoke = serde_json::to_string(&Report {
            parameters: serde_json::to_value(Scenario::Smoke).unwrap(),
            ..Report::default()
        })
        .unwrap();
        let other =
            line("rooms", true, 1.0, 1.0, 1, 0.0).replace("\"clients\":2000", "\"clients\":7");
        let runs = Runs::parse(&[deflate, smoke, other, String::new()].join("\n")).unwrap();
        assert_eq!((runs.len(), runs.skipped()), (0, 3));
        let err = Runs::parse("{\"scenario\":\"rooms\"}\n").unwrap_err();
        assert!(err.starts_with("line 1: not a loadtest report"), "{err}");
    }

    #[test]
    fn quick_sizes_are_rows_of_their_own() {
        let quick = suite::standard(Set::Throughput, true).remove(0);
        let report = Report {
            parameters: serde_json::to_value(&quick.scenario).unwrap(),
            passed: true,
            ..Report::default()
        };
        let text = serde_json::to_string(&report).unwrap();
        let out = compare(&text, &text);
        assert!(out.contains("Rows marked (quick)"));
        row(&out, "saturate, 100 B (quick)", "connect rate");
    }
}
