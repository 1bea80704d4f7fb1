//! One driver thread: a mio event loop that owns many client connections for a whole run.
//!
//! Owns the thread's share of the plan: opening connections a window at a time, set-up deadlines,
//! publishing (open-loop rate or closed-loop window), churning, probing, and the per-second intervals it
//! sends to the main thread. It follows the phase the main thread announces in [`Shared`] and never
//! blocks longer than one poll timeout, so every phase change and deadline is seen within milliseconds.
//! Sockets are registered edge-triggered for reading and writing once, so a turn costs one `epoll_wait`
//! plus the reads and writes that have work. The thread's read buffer and its one inflater (see
//! `inflate`) are shared by all its connections. It does not aggregate across threads (see `runner`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::client::{Client, Counting, Progress, ReadBuffer, Stage};
use crate::inflate::Inflater;
use crate::plan::{Pacing, Phase, Plan, Shared};
use crate::stamp::{self, Stamp};
use crate::tally::{latency_histogram, ErrorKind, Interval, Tally};

/// How long a turn may block while publishers are due: pacing resolution.
const BUSY_TICK: Duration = Duration::from_millis(1);
/// How long a turn may block otherwise: how quickly a phase change or deadline is seen.
const IDLE_TICK: Duration = Duration::from_millis(10);
/// How often set-up deadlines are checked.
const DEADLINE_SWEEP_NS: u64 = 100_000_000;
/// The most messages one publisher sends in one turn, so a stalled server cannot make a turn unbounded.
const MAX_BURST: u64 = 256;

/// Runs `slots` (indices into `plan.clients`) until the main thread announces [`Phase::Done`].
pub fn drive(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    slots: Vec<usize>,
    intervals: Sender<Interval>,
) -> Tally {
    match Driver::new(plan, shared, slots, intervals) {
        Ok(mut driver) => {
            driver.run();
            driver.finish()
        }
        Err(kind) => {
            // Without a poller nothing can be driven; every slot counts as a set-up failure.
            let mut tally = Tally::new(&[]);
            tally.connect_errors.insert(kind, 1);
            tally
        }
    }
}

struct Driver {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    /// Local index = mio token; `slots[i]` is its index in the plan.
    slots: Vec<usize>,
    clients: Vec<Client>,
    /// Local indices waiting to connect.
    queue: VecDeque<usize>,
    setting_up: usize,
    /// Non-churner publishers and the fraction of a period their schedule is offset by.
    publishers: Vec<(usize, f64)>,
    churners: Vec<usize>,
    churn_started: bool,
    probes_sent: bool,
    scratch: Vec<u8>,
    /// Every read of this thread's connections lands here first.
    read_buf: ReadBuffer,
    /// Every compressed message of this thread's connections is inflated here.
    inflater: Inflater,
    tally: Tally,
    interval_latency: Histogram<u64>,
    interval_deliveries: u64,
    interval_second: u64,
    intervals: Sender<Interval>,
    /// Counted deliveries not yet added to `shared.delivered`.
    unreported: u64,
    next_sweep_ns: u64,
}

impl Driver {
    fn new(
        plan: Arc<Plan>,
        shared: Arc<Shared>,
        slots: Vec<usize>,
        intervals: Sender<Interval>,
    ) -> Result<Driver, ErrorKind> {
        let poll = Poll::new().map_err(|e| ErrorKind::of(&e))?;
        let publishers_per_room: Vec<u32> = plan.rooms.iter().map(|r| r.publishers).collect();
        let mut clients = Vec::with_capacity(slots.len());
        let mut queue = VecDeque::new();
        let mut publishers = Vec::new();
        let mut churners = Vec::new();
        for (local, &slot) in slots.iter().enumerate() {
            let cp = &plan.clients[slot];
            let room_publishers = cp.room.map_or(0, |r| publishers_per_room[r as usize]);
            clients.push(Client::new(slot, cp, room_publishers));
            if cp.churner {
                churners.push(local);
                continue;
            }
            queue.push_back(local);
            if cp.publisher.is_some() {
                // Spread publishers' sends evenly over each period instead of all at once.
                let offset = (slot as f64 * 0.618_033_988_7).fract();
                publishers.push((local, offset));
            }
        }
        Ok(Driver {
            tally: Tally::new(&publishers_per_room),
            plan,
            shared,
            poll,
            slots,
            clients,
            queue,
            setting_up: 0,
            publishers,
            churners,
            churn_started: false,
            probes_sent: false,
            scratch: Vec::new(),
            read_buf: ReadBuffer::default(),
            inflater: Inflater::default(),
            interval_latency: latency_histogram(),
            interval_deliveries: 0,
            interval_second: 0,
            intervals,
            unreported: 0,
            next_sweep_ns: 0,
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let phase = self.shared.phase();
            if phase == Phase::Done {
                break;
            }
            self.open_connections();
            let busy =
                phase == Phase::Run && (!self.publishers.is_empty() || !self.churners.is_empty());
            let tick = if busy { BUSY_TICK } else { IDLE_TICK };
            if let Err(e) = self.poll.poll(&mut events, Some(tick)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            let now = stamp::monotonic_ns();
            for event in events.iter() {
                let local = event.token().0;
                if event.is_writable() || event.is_error() {
                    let result = self.clients[local].on_writable();
                    self.settle(local, result.map(|()| Progress::default()), phase);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(local, now, phase);
                }
            }
            match phase {
                Phase::Setup => {}
                Phase::Run => {
                    self.start_churn();
                    self.publish(now);
                }
                Phase::Drain | Phase::Done => self.probe(),
            }
            self.report_deliveries();
            if now >= self.next_sweep_ns {
                self.next_sweep_ns = now + DEADLINE_SWEEP_NS;
                self.expire_setups(now, phase);
            }
            self.roll_interval(now, phase);
        }
    }

    fn read(&mut self, local: usize, now: u64, phase: Phase) {
        let slot = &self.plan.clients[self.slots[local]];
        let mut counting = Counting {
            tally: &mut self.tally,
            interval_latency: &mut self.interval_latency,
            interval_deliveries: &mut self.interval_deliveries,
            now_ns: now,
        };
        let result = self.clients[local].on_readable(
            &self.plan,
            slot,
            &mut counting,
            &mut self.read_buf,
            &mut self.inflater,
        );
        self.settle(local, result, phase);
    }

    /// Acts on what a read or write did: set-up completion, churn steps, probe answers, failures.
    fn settle(&mut self, local: usize, result: Result<Progress, ErrorKind>, phase: Phase) {
        // Copies of the slot's roles, so no borrow of the plan spans the calls below.
        let slot = &self.plan.clients[self.slots[local]];
        let (churner, counted, room) = (slot.churner, slot.counted, slot.room);
        let progress = match result {
            Ok(progress) => progress,
            Err(kind) => {
                self.fail(local, kind, phase);
                return;
            }
        };
        self.unreported += progress.deliveries;
        if progress.pong && self.clients[local].probed {
            self.shared.probes_answered.fetch_add(1, Ordering::Relaxed);
        }
        if progress.ready {
            self.setting_up -= 1;
            if churner {
                self.churn_send(local);
            } else {
                self.shared.ready.fetch_add(1, Ordering::Relaxed);
                if let (true, Some(room)) = (counted, room) {
                    self.shared.room_members[room as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if progress.own_echo && churner {
            let room = &self.plan.rooms[room.unwrap_or(0) as usize].name;
            let leave = format!("{{\"type\":\"room.leave\",\"payload\":{{\"room\":\"{room}\"}}}}");
            self.clients[local].stage = Stage::Leaving;
            let result = self.clients[local].send_text(leave.as_bytes());
            if let Err(kind) = result {
                self.fail(local, kind, phase);
                return;
            }
        }
        if progress.left && churner {
            self.tally.churn_cycles += 1;
            self.clients[local].close();
            if phase == Phase::Run {
                self.queue.push_back(local);
            }
        }
    }

    fn fail(&mut self, local: usize, kind: ErrorKind, phase: Phase) {
        let slot = &self.plan.clients[self.slots[local]];
        let stage = self.clients[local].stage;
        if stage == Stage::Closed || stage == Stage::Idle {
            return;
        }
        self.clients[local].close();
        if stage.is_setting_up() {
            self.setting_up -= 1;
            *self.tally.connect_errors.entry(kind).or_default() += 1;
            if !slot.churner {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        } else if phase < Phase::Done {
            *self.tally.disconnects.entry(kind).or_default() += 1;
        }
        if slot.churner && phase == Phase::Run {
            self.queue.push_back(local);
        }
    }

    /// Starts queued connects while fewer than the connect window are in set-up.
    fn open_connections(&mut self) {
        let now = stamp::monotonic_ns();
        let deadline = now + self.plan.setup_timeout.as_nanos() as u64;
        while self.setting_up < self.plan.connect_window {
            let Some(local) = self.queue.pop_front() else {
                break;
            };
            let slot = &self.plan.clients[self.slots[local]];
            if slot.churner && self.shared.phase() != Phase::Run {
                continue;
            }
            let target = self.plan.target_of(self.slots[local]);
            let client = &mut self.clients[local];
            let registered = client
                .connect(target, slot.source, deadline, self.plan.deflate)
                .and_then(|stream| {
                    self.poll.registry().register(
                        stream,
                        Token(local),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                });
            self.setting_up += 1;
            if let Err(e) = registered {
                self.fail(local, ErrorKind::of(&e), Phase::Setup);
            }
        }
    }

    fn expire_setups(&mut self, now: u64, phase: Phase) {
        for local in 0..self.clients.len() {
            let client = &self.clients[local];
            if client.stage.is_setting_up() && now > client.deadline_ns {
                self.fail(local, ErrorKind::TimedOut, phase);
            }
        }
    }

    fn start_churn(&mut self) {
        if !self.churn_started {
            self.churn_started = true;
            self.queue.extend(self.churners.iter().copied());
        }
    }

    /// A churner is in its room: send one message and wait for it to come back.
    fn churn_send(&mut self, local: usize) {
        if self.shared.phase() != Phase::Run {
            return;
        }
        self.clients[local].awaiting_echo = true;
        if let Err(kind) = self.send_chat(local, stamp::monotonic_ns()) {
            self.fail(local, kind, Phase::Run);
        }
    }

    /// Sends every message due under the plan's pacing.
    fn publish(&mut self, now: u64) {
        let start = self.shared.run_start_ns.load(Ordering::Acquire);
        let elapsed = now.saturating_sub(start) as f64 / 1e9;
        let delivered = self.shared.delivered.load(Ordering::Relaxed) + self.unreported;
        for i in 0..self.publishers.len() {
            let (local, offset) = self.publishers[i];
            if self.clients[local].stage != Stage::Ready {
                continue;
            }
            let slot = &self.plan.clients[self.slots[local]];
            let seq = self.clients[local].seq;
            let cap = self.plan.max_messages.unwrap_or(u64::MAX);
            if seq >= cap {
                continue;
            }
            let due = match self.plan.pacing {
                Pacing::Silent => seq,
                Pacing::Rate(rate) => {
                    let periods = elapsed * rate - offset;
                    if periods < 0.0 {
                        0
                    } else {
                        periods as u64 + 1
                    }
                }
                Pacing::Window(window) => {
                    let room = slot.room.unwrap_or(0) as usize;
                    let members = self.shared.room_members[room]
                        .load(Ordering::Relaxed)
                        .max(1);
                    let completed = delivered / members;
                    completed + window
                }
            };
            let target = due.min(cap).min(seq + MAX_BURST);
            for _ in seq..target {
                if let Err(kind) = self.send_chat(local, stamp::monotonic_ns()) {
                    self.fail(local, kind, Phase::Run);
                    break;
                }
            }
            if self.clients[local].seq == cap && seq < cap {
                self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_chat(&mut self, local: usize, now: u64) -> Result<(), ErrorKind> {
        let slot = &self.plan.clients[self.slots[local]];
        let (Some(room), Some(publisher)) = (slot.room, slot.publisher) else {
            return Ok(());
        };
        let client = &mut self.clients[local];
        let stamp = Stamp {
            publisher,
            seq: client.seq,
            sent_ns: now,
        };
        let room_name = &self.plan.rooms[room as usize].name;
        stamp::write_chat(&mut self.scratch, room_name, stamp, self.plan.message_size);
        client.seq += 1;
        self.tally.sent[room as usize][publisher as usize] += 1;
        let owed = self.shared.room_members[room as usize].load(Ordering::Relaxed);
        self.shared.expected.fetch_add(owed, Ordering::Relaxed);
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        client.send_text(&self.scratch)
    }

    /// Once the run is over, sampled clients send `ping`.
    fn probe(&mut self) {
        if self.probes_sent {
            return;
        }
        self.probes_sent = true;
        for local in 0..self.clients.len() {
            let slot = &self.plan.clients[self.slots[local]];
            if !slot.probe || self.clients[local].stage != Stage::Ready {
                continue;
            }
            self.clients[local].probed = true;
            self.shared.probes_sent.fetch_add(1, Ordering::Relaxed);
            if let Err(kind) = self.clients[local].send_text(b"ping") {
                self.fail(local, kind, Phase::Drain);
            }
        }
    }

    fn report_deliveries(&mut self) {
        if self.unreported > 0 {
            self.shared
                .delivered
                .fetch_add(self.unreported, Ordering::Relaxed);
            self.unreported = 0;
        }
    }

    /// Hands the finished second to the main thread; one histogram copy per second, not per receipt.
    fn roll_interval(&mut self, now: u64, phase: Phase) {
        if phase < Phase::Run {
            return;
        }
        let start = self.shared.run_start_ns.load(Ordering::Acquire);
        let second = now.saturating_sub(start) / 1_000_000_000;
        if second > self.interval_second {
            self.send_interval();
            self.interval_second = second;
        }
    }

    fn send_interval(&mut self) {
        let interval = Interval {
            second: self.interval_second,
            latency: self.interval_latency.clone(),
            deliveries: self.interval_deliveries,
        };
        self.interval_latency.reset();
        self.interval_deliveries = 0;
        // The main thread may have stopped listening after an interrupt; the tally still comes back.
        let _ = self.intervals.send(interval);
    }

    fn finish(mut self) -> Tally {
        self.send_interval();
        for (local, client) in self.clients.iter().enumerate() {
            let slot = &self.plan.clients[self.slots[local]];
            if let (true, Some(room)) = (slot.counted, slot.room) {
                for (p, track) in client.tracks.iter().enumerate() {
                    self.tally.distinct[room as usize][p] += track.distinct();
                }
            }
        }
        self.tally
    }
}
