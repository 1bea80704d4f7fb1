//! The main thread of a run: spawn the driver threads, announce phases, watch deadlines, sample `/proc`
//! once a second, and turn the merged tallies into a [`Report`].
//!
//! Owns the run's timeline (set-up → run → drain → done, then for a soak the wait for the server's RSS
//! to settle once every client is gone), every deadline that bounds it, Ctrl-C handling, the progress
//! bars, and raising the file-descriptor limit. It does not touch sockets (see `driver`) nor decide what
//! a scenario's clients do (see `scenario`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::driver;
use crate::plan::{Phase, Plan, Shared};
use crate::procfs::{self, Sample};
use crate::report::{
    rss_end_limit, HarnessFigures, Latency, Point, Report, ServerFigures, SoakMemory,
};
use crate::stamp;
use crate::tally::{latency_histogram, Interval, Tally};

/// How often the main thread looks at the shared counters.
const WATCH_TICK: Duration = Duration::from_millis(20);
/// Extra time past the set-up deadline for the last attempts to be expired by their threads.
const SETUP_GRACE: Duration = Duration::from_secs(1);
/// How often a soak's server RSS is read while it settles after the clients are gone.
const SETTLE_TICK: Duration = Duration::from_millis(200);
/// A soak's end RSS is the reading once it has not fallen for this long: the server has finished
/// tearing down sessions and its allocator has returned what it will return.
const SETTLE_STILL: Duration = Duration::from_secs(2);
/// The longest a soak waits for the server's RSS to settle, so the run still ends by itself.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes Ctrl-C end the current phase early and stop the run cleanly (the report says "interrupted").
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// How a run is observed, as opposed to what it does.
#[derive(Clone, Debug, Default)]
pub struct Observe {
    /// The server process to sample, if known.
    pub server_pid: Option<u32>,
    /// More processes of it (the other nodes of a cluster), summed with it.
    pub also_server_pids: Vec<u32>,
    /// Draw progress bars on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Track the server's RSS from the start of the run to after every client is gone (a soak).
    pub track_rss: bool,
}

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit the calls read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Per-second buckets merged from every thread's intervals.
#[derive(Default)]
struct Timeline {
    latency: Vec<Histogram<u64>>,
    deliveries: Vec<u64>,
    server_cpu: Vec<Option<f64>>,
    harness_cpu: Vec<f64>,
}

impl Timeline {
    fn absorb(&mut self, rx: &Receiver<Interval>) {
        while let Ok(interval) = rx.try_recv() {
            let i = interval.second as usize;
            while self.latency.len() <= i {
                self.latency.push(latency_histogram());
                self.deliveries.push(0);
            }
            let _ = self.latency[i].add(&interval.latency);
            self.deliveries[i] += interval.deliveries;
        }
    }

    fn points(&self) -> Vec<Point> {
        (0..self.latency.len().max(self.harness_cpu.len()))
            .map(|i| {
                let h = self.latency.get(i);
                let q = |q: f64| {
                    h.filter(|h| !h.is_empty())
                        .map_or(0, |h| h.value_at_quantile(q))
                };
                Point {
                    second: i as u64,
                    deliveries: self.deliveries.get(i).copied().unwrap_or(0),
                    p50_us: q(0.5),
                    p99_us: q(0.99),
                    max_us: h.map_or(0, |h| h.max()),
                    server_cpu_share: self.server_cpu.get(i).copied().flatten(),
                    harness_cpu_share: self.harness_cpu.get(i).copied().unwrap_or(0.0),
                }
            })
            .collect()
    }
}

/// A soak's server RSS: where the run started and the highest reading since.
struct RssWatch {
    start: u64,
    peak: u64,
}

impl RssWatch {
    fn new(start: &Sample) -> RssWatch {
        RssWatch {
            start: start.rss_bytes,
            peak: start.rss_bytes,
        }
    }

    fn see(&mut self, sample: Option<&Sample>) {
        if let Some(sample) = sample {
            self.peak = self.peak.max(sample.rss_bytes);
        }
    }

    /// Called once every client has disconnected: reads the server's RSS until it has not fallen for
    /// [`SETTLE_STILL`] (or [`SETTLE_LIMIT`] passed, or Ctrl-C) and takes the last reading as the end.
    /// `None` when the server could not be read at all.
    fn settle(
        mut self,
        sample_server: impl Fn() -> Option<Sample>,
        progress: bool,
    ) -> Option<SoakMemory> {
        let bar = progress_bar(progress, SETTLE_LIMIT.as_secs(), "settle");
        let started = Instant::now();
        let mut lowest = u64::MAX;
        let mut last_fall = started;
        let mut end = None;
        // A server that exits mid-settle ends it; the last reading stands.
        while let Some(sample) = sample_server() {
            self.see(Some(&sample));
            end = Some(sample.rss_bytes);
            let now = Instant::now();
            if sample.rss_bytes < lowest {
                lowest = sample.rss_bytes;
                last_fall = now;
            }
            bar.set_position(now.duration_since(started).as_secs());
            bar.set_message(format!("server RSS {} KiB", sample.rss_bytes / 1024));
            if now.duration_since(last_fall) >= SETTLE_STILL
                || now.duration_since(started) >= SETTLE_LIMIT
                || interrupted()
            {
                break;
            }
            thread::sleep(SETTLE_TICK);
        }
        bar.finish_and_clear();
        Some(SoakMemory {
            rss_start_bytes: self.start,
            rss_peak_bytes: self.peak,
            rss_end_bytes: end?,
            rss_end_limit_bytes: rss_end_limit(self.start),
            settle_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// Runs `plan` to the end and reports; `scenario` and `parameters` only label the report.
pub fn execute(
    plan: Plan,
    scenario: &str,
    parameters: serde_json::Value,
    observe: &Observe,
) -> Report {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new(plan.rooms.len()));
    let (tx, rx) = mpsc::channel();
    let threads = plan.threads.max(1);
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); threads];
    for slot in 0..plan.clients.len() {
        shares[slot % threads].push(slot);
    }
    let setup_count = plan.clients.iter().filter(|c| !c.churner).count() as u64;
    let sample_server = || {
        let first = procfs::sample(Some(observe.server_pid?)).ok()?;
        observe
            .also_server_pids
            .iter()
            .try_fold(first, |sum, &pid| {
                procfs::sample(Some(pid)).ok().map(|s| sum.plus(&s))
            })
    };
    let server_before = sample_server();

    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(i, slots)| {
            let (plan, shared, tx) = (plan.clone(), shared.clone(), tx.clone());
            thread::Builder::new()
                .name(format!("loadtest-driver-{i}"))
                .spawn(move || driver::drive(plan, shared, slots, tx))
                .expect("spawn a driver thread")
        })
        .collect();
    drop(tx);

    // Set-up: every client connected, upgraded, welcomed and joined, or the deadline.
    let bar = progress_bar(observe.progress, setup_count, "set-up");
    let setup_started = Instant::now();
    let setup_deadline = setup_started + plan.setup_timeout + SETUP_GRACE;
    // The memory baseline is taken once the first tenth of the clients are set up, so a cold server's
    // one-time costs (code pages faulted in, allocator arenas) are not spread over the connections.
    let warm_after = (setup_count / 10).max(1);
    let mut server_warm = None;
    loop {
        let ready = shared.ready.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        bar.set_position(ready + failed);
        if server_warm.is_none() && ready >= warm_after && ready < setup_count {
            server_warm = sample_server().map(|sample| (sample, ready));
        }
        if ready + failed >= setup_count || Instant::now() >= setup_deadline || interrupted() {
            break;
        }
        thread::sleep(WATCH_TICK);
    }
    bar.finish_and_clear();
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    let server_held = sample_server();
    // A soak's memory is measured from here, with the clients set up and no traffic yet.
    let mut rss_watch = server_held
        .as_ref()
        .filter(|_| observe.track_rss)
        .map(RssWatch::new);

    // Run: publishers publish until the duration or their message cap; the clock is CLOCK_MONOTONIC
    // because threads pace against it and receivers time against it.
    let mut timeline = Timeline::default();
    let self_start = procfs::sample(None).ok();
    let run_started = Instant::now();
    shared
        .run_start_ns
        .store(stamp::monotonic_ns(), Ordering::Release);
    shared.set_phase(Phase::Run);
    let publishers = plan
        .clients
        .iter()
        .filter(|c| c.publisher.is_some() && !c.churner)
        .count() as u64;
    let bar = progress_bar(observe.progress, plan.duration.as_secs().max(1), "run");
    let mut last_second = (run_started, server_held, self_start);
    loop {
        let elapsed = run_started.elapsed();
        timeline.absorb(&rx);
        if last_second.0.elapsed() >= Duration::from_secs(1) {
            let now = Instant::now();
            let (server, own) = (sample_server(), procfs::sample(None).ok());
            if let Some(watch) = rss_watch.as_mut() {
                watch.see(server.as_ref());
            }
            let wall = now.duration_since(last_second.0).as_secs_f64();
            timeline
                .server_cpu
                .push(share(last_second.1.as_ref(), server.as_ref(), wall));
            timeline
                .harness_cpu
                .push(share(last_second.2.as_ref(), own.as_ref(), wall).unwrap_or(0.0));
            last_second = (now, server, own);
            bar.set_position(elapsed.as_secs());
            bar.set_message(format!(
                "{} deliveries",
                shared.delivered.load(Ordering::Relaxed)
            ));
        }
        let capped_out = plan.max_messages.is_some()
            && publishers > 0
            && shared.publishers_done.load(Ordering::Relaxed) >= publishers.min(ready);
        if elapsed >= plan.duration || capped_out || interrupted() {
            break;
        }
        thread::sleep(WATCH_TICK);
    }
    bar.finish_and_clear();
    let run_seconds = run_started.elapsed().as_secs_f64();

    // Drain: what is in flight arrives, probes are answered, or the drain deadline passes.
    shared.set_phase(Phase::Drain);
    let drain_deadline = Instant::now() + plan.drain_timeout;
    // Threads send probes on their first turn in the drain phase; give every thread that turn.
    thread::sleep(WATCH_TICK * 2);
    while Instant::now() < drain_deadline && !interrupted() {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let expected = shared.expected.load(Ordering::Relaxed);
        let probes = shared.probes_sent.load(Ordering::Relaxed);
        let answers = shared.probes_answered.load(Ordering::Relaxed);
        if delivered >= expected && answers >= probes {
            break;
        }
        thread::sleep(WATCH_TICK);
    }
    let measured_wall = run_started.elapsed().as_secs_f64();
    let server_after = sample_server();
    let self_end = procfs::sample(None).ok();
    shared.set_phase(Phase::Done);

    let mut tally = Tally::new(&plan.rooms.iter().map(|r| r.publishers).collect::<Vec<_>>());
    // A driver thread closes its connections as it returns, so once all are joined no client is left.
    for handle in handles {
        if let Ok(t) = handle.join() {
            tally.merge(&t);
        }
    }
    timeline.absorb(&rx);
    let soak = rss_watch.and_then(|mut watch| {
        watch.see(server_after.as_ref());
        watch.settle(sample_server, observe.progress)
    });

    let members: Vec<u64> = shared
        .room_members
        .iter()
        .map(|m| m.load(Ordering::Relaxed))
        .collect();
    let owed: u64 = tally
        .sent
        .iter()
        .zip(&members)
        .map(|(sent, m)| sent.iter().sum::<u64>() * m)
        .sum();
    let distinct: u64 = tally.distinct.iter().flatten().sum();

    let server = match (observe.server_pid, server_before, server_held, server_after) {
        (Some(pid), Some(before), Some(held), Some(after)) => {
            let cpu = after.cpu_seconds - held.cpu_seconds;
            Some(ServerFigures {
                pid,
                rss_before_bytes: before.rss_bytes,
                rss_held_bytes: held.rss_bytes,
                rss_after_bytes: after.rss_bytes,
                rss_per_connection_bytes: match server_warm {
                    Some((warm, warm_ready)) if ready > warm_ready => Some(
                        (held.rss_bytes as f64 - warm.rss_bytes as f64)
                            / (ready - warm_ready) as f64,
                    ),
                    _ => (ready > 0)
                        .then(|| (held.rss_bytes as f64 - before.rss_bytes as f64) / ready as f64),
                },
                cpu_seconds: cpu,
                cpu_share: cpu / measured_wall,
                deliveries_per_cpu_second: (tally.deliveries > 0 && cpu > 0.0)
                    .then(|| tally.deliveries as f64 / cpu),
                sleeps_per_second: match (held.sleeps, after.sleeps) {
                    (Some(held), Some(after)) => {
                        Some(after.saturating_sub(held) as f64 / measured_wall)
                    }
                    _ => None,
                },
                soak,
            })
        }
        _ => None,
    };
    let own_cpu = match (self_start, self_end) {
        (Some(a), Some(b)) => b.cpu_seconds - a.cpu_seconds,
        _ => 0.0,
    };
    let mut report = Report {
        scenario: scenario.to_owned(),
        url: format!("ws://{}{}", plan.target.host_header, plan.target.path),
        parameters,
        passed: false,
        failures: Vec::new(),
        threads,
        clients: setup_count,
        ready,
        setup_seconds,
        connect_rate_per_second: ready as f64 / setup_seconds.max(1e-9),
        connect_errors: named(&tally.connect_errors),
        disconnects: named(&tally.disconnects),
        run_seconds,
        messages_sent: shared.sent.load(Ordering::Relaxed),
        deliveries: tally.deliveries,
        deliveries_per_second: tally.deliveries as f64 / measured_wall,
        lost: owed.saturating_sub(distinct),
        duplicated: tally.duplicates,
        out_of_order: tally.late,
        unexpected_replies: tally.unexpected,
        latency_us: Latency::of(&tally.latency),
        probes_sent: shared.probes_sent.load(Ordering::Relaxed),
        probes_answered: shared.probes_answered.load(Ordering::Relaxed),
        churn_cycles: tally.churn_cycles,
        deflate: plan.deflate,
        deflate_negotiated: tally.deflate_negotiated,
        messages_compressed: tally.messages_compressed,
        messages_plain: tally.messages_plain,
        bytes_received: tally.bytes_received,
        message_bytes_received: tally.message_bytes,
        server,
        harness: HarnessFigures {
            cpu_seconds: own_cpu,
            cpu_share: own_cpu / measured_wall,
            cpu_ns_per_delivery: (tally.deliveries > 0)
                .then(|| own_cpu * 1e9 / tally.deliveries as f64),
        },
        timeline: timeline.points(),
        steps: Vec::new(),
    };
    report.judge(interrupted());
    report
}

fn share(a: Option<&Sample>, b: Option<&Sample>, wall: f64) -> Option<f64> {
    Some((b?.cpu_seconds - a?.cpu_seconds) / wall.max(1e-9))
}

fn named(
    m: &std::collections::BTreeMap<crate::tally::ErrorKind, u64>,
) -> std::collections::BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.name().to_owned(), *v)).collect()
}

fn progress_bar(visible: bool, len: u64, label: &'static str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} {elapsed} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar
}
