//! storebench: fjall vs redb for a chat-room append+trim workload.
//! Subcommands (all print one result line prefixed with "RESULT"):
//!   append  <store> <mode> <batch> <dir> <secs>
//!   crash   <store> <mode> <batch> <dir> <kill_after_ms>   (parent; spawns crashchild)
//!   crashchild <store> <mode> <batch> <dir>
//!   load    <store> <dir> <rooms> <per_room>
//!   reopen-read <store> <dir> <rooms> <per_room> <nreads> <last_n>
//!   trim    <store> <dir> <rooms> <per_room>
//! store: fjall | redb | redb-nosync  (redb with a StorageBackend whose sync_data is a no-op
//!        unless the batch is marked durable)
//! mode:  every_write | interval | off

use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TS_BASE: u64 = 1_714_000_000_000;

// ---------------------------------------------------------------- workload helpers

fn key(room: u32, off: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(19);
    k.extend_from_slice(format!("room-{room:05}").as_bytes());
    k.push(0);
    k.extend_from_slice(&off.to_be_bytes());
    k
}

fn room_prefix(room: u32) -> Vec<u8> {
    let mut k = format!("room-{room:05}").into_bytes();
    k.push(0);
    k
}

fn parse_off(k: &[u8]) -> u64 {
    let n = k.len();
    u64::from_be_bytes(k[n - 8..].try_into().unwrap())
}

const TEXT: &str = "hey everyone, the deploy is done and metrics look fine :)!";

fn value(room: u32, off: u64, ts: u64) -> Vec<u8> {
    // ~121 bytes JSON-like record, text is 55 chars
    let sender = (room as u64 * 7 + off) % 50_000;
    let cid = (room as u64).wrapping_mul(0x9E37_79B9).wrapping_add(off) as u32;
    let t = &TEXT[..55];
    format!(r#"{{"ts":{ts},"from":"user-{sender:05}","cid":"c-{cid:08x}","text":"{t}"}}"#)
        .into_bytes()
}

fn parse_ts(v: &[u8]) -> u64 {
    // value starts with {"ts":<digits>
    let mut ts = 0u64;
    for &b in &v[6..] {
        if b.is_ascii_digit() {
            ts = ts * 10 + (b - b'0') as u64;
        } else {
            break;
        }
    }
    ts
}

fn rss_kb() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let get = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                total += dir_size(&e.path());
            } else {
                total += md.len();
            }
        }
    }
    total
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

// ---------------------------------------------------------------- store abstraction

trait Store {
    /// One batch = one atomic commit. `durable` = fsync as part of this commit.
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], durable: bool);
    /// Range scan [start, end), returns (count, total value bytes)
    fn scan(&self, start: &[u8], end: &[u8]) -> (usize, usize);
    /// offsets present in a room
    fn room_offsets(&self, room: u32) -> Vec<u64>;
    /// full scan: keys with ts < cutoff, plus total count scanned
    fn scan_old(&self, cutoff: u64) -> (Vec<Vec<u8>>, usize);
    fn close(self: Box<Self>);
}

// ---- fjall
struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir)
            // we pass the PersistMode explicitly on every batch
            .manual_journal_persist(true)
            .open()
            .unwrap();
        let ks = db
            .keyspace("messages", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Fjall { db, ks }
    }
}

impl Store for Fjall {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], durable: bool) {
        let mode = if durable {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        let mut b = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), puts.len() + dels.len())
            .durability(Some(mode));
        for (k, v) in puts {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        for k in dels {
            b.remove(&self.ks, k.as_slice());
        }
        b.commit().unwrap();
    }
    fn scan(&self, start: &[u8], end: &[u8]) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = 0;
        for kv in self.ks.range(start..end) {
            let (_k, v) = kv.into_inner().unwrap();
            n += 1;
            bytes += v.len();
        }
        (n, bytes)
    }
    fn room_offsets(&self, room: u32) -> Vec<u64> {
        self.ks
            .prefix(room_prefix(room))
            .map(|g| parse_off(&g.key().unwrap()))
            .collect()
    }
    fn scan_old(&self, cutoff: u64) -> (Vec<Vec<u8>>, usize) {
        let mut old = Vec::new();
        let mut n = 0;
        for kv in self.ks.iter() {
            let (k, v) = kv.into_inner().unwrap();
            n += 1;
            if parse_ts(&v) < cutoff {
                old.push(k.to_vec());
            }
        }
        (old, n)
    }
    fn close(self: Box<Self>) {
        // Drop persists the journal (SyncAll) and stops background workers
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
        drop(self);
    }
}

// ---- redb
const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("messages");

/// FileBackend wrapper: sync_data only really syncs when `allow_sync` is set.
#[derive(Debug)]
struct NoSyncBackend {
    inner: redb::backends::FileBackend,
    allow_sync: Arc<AtomicBool>,
    skipped: Arc<AtomicU64>,
}

impl redb::StorageBackend for NoSyncBackend {
    fn len(&self) -> Result<u64, redb::BackendError> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), redb::BackendError> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), redb::BackendError> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), redb::BackendError> {
        if self.allow_sync.load(Ordering::Relaxed) {
            self.inner.sync_data()
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), redb::BackendError> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), redb::BackendError> {
        self.inner.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

struct Redb {
    db: redb::Database,
    /// Some(flag) for the redb-nosync variant
    allow_sync: Option<Arc<AtomicBool>>,
}

impl Redb {
    fn open(dir: &Path, nosync: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("data.redb");
        let (db, allow_sync) = if nosync {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            let flag = Arc::new(AtomicBool::new(true));
            let be = NoSyncBackend {
                inner: redb::backends::FileBackend::new(file),
                allow_sync: flag.clone(),
                skipped: Arc::new(AtomicU64::new(0)),
            };
            (redb::Builder::new().create_with_backend(be).unwrap(), Some(flag))
        } else {
            (redb::Database::create(&path).unwrap(), None)
        };
        // make sure the table exists durably
        {
            let tx = db.begin_write().unwrap();
            tx.open_table(TABLE).unwrap();
            tx.commit().unwrap();
        }
        Redb { db, allow_sync }
    }
}

impl Store for Redb {
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>)], dels: &[Vec<u8>], durable: bool) {
        let mut tx = self.db.begin_write().unwrap();
        match &self.allow_sync {
            // nosync variant: always a "durable" (Immediate) commit so it is written to the
            // file; the backend only fsyncs when the batch is marked durable
            Some(flag) => flag.store(durable, Ordering::Relaxed),
            None => tx
                .set_durability(if durable {
                    redb::Durability::Immediate
                } else {
                    redb::Durability::None
                })
                .unwrap(),
        }
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (k, v) in puts {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
            for k in dels {
                t.remove(k.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn scan(&self, start: &[u8], end: &[u8]) -> (usize, usize) {
        use redb::{ReadableDatabase, ReadableTable};
        let rt = self.db.begin_read().unwrap();
        let t = rt.open_table(TABLE).unwrap();
        let mut n = 0;
        let mut bytes = 0;
        for kv in t.range(start..end).unwrap() {
            let (_k, v) = kv.unwrap();
            n += 1;
            bytes += v.value().len();
        }
        (n, bytes)
    }
    fn room_offsets(&self, room: u32) -> Vec<u64> {
        use redb::{ReadableDatabase, ReadableTable};
        let rt = self.db.begin_read().unwrap();
        let t = rt.open_table(TABLE).unwrap();
        let start = room_prefix(room);
        let mut end = start.clone();
        *end.last_mut().unwrap() = 1;
        t.range(start.as_slice()..end.as_slice())
            .unwrap()
            .map(|kv| parse_off(kv.unwrap().0.value()))
            .collect()
    }
    fn scan_old(&self, cutoff: u64) -> (Vec<Vec<u8>>, usize) {
        use redb::{ReadableDatabase, ReadableTable};
        let rt = self.db.begin_read().unwrap();
        let t = rt.open_table(TABLE).unwrap();
        let mut old = Vec::new();
        let mut n = 0;
        for kv in t.iter().unwrap() {
            let (k, v) = kv.unwrap();
            n += 1;
            if parse_ts(v.value()) < cutoff {
                old.push(k.value().to_vec());
            }
        }
        (old, n)
    }
    fn close(self: Box<Self>) {
        if let Some(f) = &self.allow_sync {
            f.store(true, Ordering::Relaxed);
        }
        // a final durable commit so nothing non-durable is pending
        let tx = self.db.begin_write().unwrap();
        tx.commit().unwrap();
        drop(self);
    }
}

fn open_store(kind: &str, dir: &Path) -> Box<dyn Store> {
    match kind {
        "fjall" => Box::new(Fjall::open(dir)),
        "redb" => Box::new(Redb::open(dir, false)),
        "redb-nosync" => Box::new(Redb::open(dir, true)),
        _ => panic!("unknown store {kind}"),
    }
}

// ---------------------------------------------------------------- durability policy

struct Policy {
    mode: String,
    last_sync: Instant,
    syncs: u64,
}
impl Policy {
    fn new(mode: &str) -> Self {
        assert!(["every_write", "interval", "off"].contains(&mode));
        Policy { mode: mode.into(), last_sync: Instant::now(), syncs: 0 }
    }
    /// should the next batch's commit include an fsync?
    fn durable_now(&mut self) -> bool {
        let d = match self.mode.as_str() {
            "every_write" => true,
            "interval" => self.last_sync.elapsed() >= Duration::from_millis(100),
            _ => false,
        };
        if d {
            self.last_sync = Instant::now();
            self.syncs += 1;
        }
        d
    }
}

/// Round-robin appender with trimming (keep last `keep` per room)
struct Appender {
    rooms: u32,
    keep: u64,
    next_off: Vec<u64>,
    seq: u64, // global count of appended records
}
impl Appender {
    fn new(rooms: u32, keep: u64, start_off: u64) -> Self {
        Appender { rooms, keep, next_off: vec![start_off; rooms as usize], seq: 0 }
    }
    fn fill(&mut self, n: usize, puts: &mut Vec<(Vec<u8>, Vec<u8>)>, dels: &mut Vec<Vec<u8>>) {
        puts.clear();
        dels.clear();
        for _ in 0..n {
            let room = (self.seq % self.rooms as u64) as u32;
            let off = self.next_off[room as usize];
            self.next_off[room as usize] += 1;
            puts.push((key(room, off), value(room, off, TS_BASE + off)));
            if off >= self.keep {
                dels.push(key(room, off - self.keep));
            }
            self.seq += 1;
        }
    }
}

/// Bulk load rooms x per_room in room-major order, 10 rooms per batch, interval durability.
fn bulk_load(s: &mut dyn Store, rooms: u32, per_room: u64, ts_of: impl Fn(u64) -> u64, deadline: Duration) -> bool {
    let t0 = Instant::now();
    let mut pol = Policy::new("interval");
    let mut puts = Vec::new();
    let rooms_per_batch = (10_000 / per_room).max(1) as u32;
    let mut r = 0;
    while r < rooms {
        puts.clear();
        for room in r..(r + rooms_per_batch).min(rooms) {
            for off in 0..per_room {
                puts.push((key(room, off), value(room, off, ts_of(off))));
            }
        }
        let d = pol.durable_now();
        s.commit(&puts, &[], d);
        r += rooms_per_batch;
        if t0.elapsed() > deadline {
            return false;
        }
    }
    s.commit(&[], &[], true);
    true
}

// ---------------------------------------------------------------- subcommands

fn cmd_append(store: &str, mode: &str, batch: usize, dir: &Path, secs: f64) {
    const ROOMS: u32 = 1000;
    const KEEP: u64 = 1000;
    let _ = std::fs::remove_dir_all(dir);
    let mut s = open_store(store, dir);
    // prefill to steady state: every room already has 1000 records, so every append trims
    let tp = Instant::now();
    assert!(bulk_load(s.as_mut(), ROOMS, KEEP, |off| TS_BASE + off, Duration::from_secs(80)));
    let prefill_s = tp.elapsed().as_secs_f64();
    let mut app = Appender::new(ROOMS, KEEP, KEEP);
    let mut pol = Policy::new(mode);
    let (mut puts, mut dels) = (Vec::new(), Vec::new());
    let mut lat = Vec::with_capacity(1 << 20);
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while t0.elapsed() < dur {
        app.fill(batch, &mut puts, &mut dels);
        let d = pol.durable_now();
        let tb = Instant::now();
        s.commit(&puts, &dels, d);
        lat.push(tb.elapsed().as_secs_f64() * 1e6);
    }
    let el = t0.elapsed().as_secs_f64();
    let (rss, hwm) = rss_kb();
    let size_before_close = dir_size(dir);
    let nb = lat.len();
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    let max = pct(&mut lat, 1.0);
    s.close();
    println!(
        "RESULT append store={store} mode={mode} batch={batch} appends={} secs={el:.2} appends_per_s={:.0} batches={nb} fsyncs={} commit_us_p50={p50:.0} commit_us_p99={p99:.0} commit_us_max={max:.0} prefill_s={prefill_s:.1} rss_kb={rss} hwm_kb={hwm} dir_bytes_end={size_before_close} dir_bytes_closed={}",
        app.seq,
        app.seq as f64 / el,
        pol.syncs,
        dir_size(dir)
    );
}

fn cmd_crashchild(store: &str, mode: &str, batch: usize, dir: &Path) {
    let mut s = open_store(store, dir);
    let mut app = Appender::new(1000, 1000, 0);
    let mut pol = Policy::new(mode);
    let (mut puts, mut dels) = (Vec::new(), Vec::new());
    let out = std::io::stdout();
    eprintln!("child ready");
    loop {
        app.fill(batch, &mut puts, &mut dels);
        let d = pol.durable_now();
        s.commit(&puts, &dels, d);
        // highest global sequence number whose batch call has returned
        let mut o = out.lock();
        writeln!(o, "{}", app.seq - 1).unwrap();
        o.flush().unwrap();
    }
}

fn cmd_crash(store: &str, mode: &str, batch: usize, dir: &Path, kill_after_ms: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crashchild", store, mode, &batch.to_string(), dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let last2 = last.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut lines = 0u64;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).unwrap();
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                let v: u64 = std::str::from_utf8(&line[..line.len() - 1]).unwrap().parse().unwrap();
                last2.store(v, Ordering::SeqCst);
                lines += 1;
            }
        }
        lines
    });
    std::thread::sleep(Duration::from_millis(kill_after_ms));
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    let last_seq = last.load(Ordering::SeqCst);
    assert!(last_seq != u64::MAX, "child printed nothing");
    // reopen & verify
    let t0 = Instant::now();
    let s = open_store(store, dir);
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rooms = 1000u64;
    let mut missing = 0u64;
    let mut expected = 0u64;
    let mut present_total = 0u64;
    let mut beyond = 0u64;
    let mut rooms_missing = 0u64;
    let mut resurrected = 0u64;
    for room in 0..rooms {
        // records with seq <= last_seq in this room: seq = room + 1000*off
        if last_seq < room {
            continue;
        }
        let max_off = (last_seq - room) / rooms;
        let offs: std::collections::HashSet<u64> = s.room_offsets(room as u32).into_iter().collect();
        // a batch that committed after the last print may have trimmed one more record
        let top = offs.iter().copied().max().unwrap_or(0).max(max_off);
        let lo = top.saturating_sub(999);
        present_total += offs.len() as u64;
        beyond += offs.iter().filter(|&&o| o > max_off).count() as u64;
        // trimmed records (offset < lo) must stay deleted
        resurrected += offs.iter().filter(|&&o| o < lo).count() as u64;
        let mut m = 0;
        for o in lo..=max_off {
            expected += 1;
            if !offs.contains(&o) {
                m += 1;
            }
        }
        missing += m;
        if m > 0 {
            rooms_missing += 1;
        }
    }
    println!(
        "RESULT crash store={store} mode={mode} batch={batch} killed_after_ms={kill_after_ms} exit={status:?} lines_read={lines} last_printed_seq={last_seq} records_acknowledged={} expected_present={expected} missing={missing} rooms_with_missing={rooms_missing} present_total={present_total} present_beyond_last_printed={beyond} trimmed_but_present={resurrected} max_off_room0={} survives={} reopen_ms={reopen_ms:.1}",
        last_seq + 1,
        last_seq / rooms,
        if missing == 0 { "yes" } else { "no" }
    );
    s.close();
}

fn cmd_load(store: &str, dir: &Path, rooms: u32, per_room: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let (r0, _) = rss_kb();
    let t0 = Instant::now();
    let mut s = open_store(store, dir);
    let ok = bulk_load(s.as_mut(), rooms, per_room, |off| TS_BASE + off, Duration::from_secs(85));
    let load_s = t0.elapsed().as_secs_f64();
    let (rss, hwm) = rss_kb();
    let tc = Instant::now();
    s.close();
    let close_s = tc.elapsed().as_secs_f64();
    let (rss_closed, _) = rss_kb();
    println!(
        "RESULT load store={store} rooms={rooms} per_room={per_room} complete={ok} load_s={load_s:.1} records_per_s={:.0} rss_start_kb={r0} rss_after_load_kb={rss} hwm_kb={hwm} close_s={close_s:.2} rss_after_close_kb={rss_closed} dir_bytes={}",
        (rooms as u64 * per_room) as f64 / load_s,
        dir_size(dir)
    );
}

fn cmd_reopen_read(store: &str, dir: &Path, rooms: u32, per_room: u64, nreads: usize, last_n: u64) {
    let (r0, _) = rss_kb();
    let t0 = Instant::now();
    let s = open_store(store, dir);
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (rss_open, _) = rss_kb();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut lat = Vec::with_capacity(nreads);
    let mut bad = 0;
    let tr = Instant::now();
    for _ in 0..nreads {
        let room = (rng.next() % rooms as u64) as u32;
        let start = key(room, per_room - last_n);
        let mut end = room_prefix(room);
        *end.last_mut().unwrap() = 1;
        let tb = Instant::now();
        let (n, _bytes) = s.scan(&start, &end);
        lat.push(tb.elapsed().as_secs_f64() * 1e6);
        if n as u64 != last_n {
            bad += 1;
        }
    }
    let reads_s = tr.elapsed().as_secs_f64();
    let (rss_read, hwm) = rss_kb();
    let p50 = pct(&mut lat, 0.5);
    let p99 = pct(&mut lat, 0.99);
    let max = pct(&mut lat, 1.0);
    // second pass over the same rooms (warm app cache)
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut lat2 = Vec::with_capacity(nreads);
    for _ in 0..nreads {
        let room = (rng.next() % rooms as u64) as u32;
        let start = key(room, per_room - last_n);
        let mut end = room_prefix(room);
        *end.last_mut().unwrap() = 1;
        let tb = Instant::now();
        s.scan(&start, &end);
        lat2.push(tb.elapsed().as_secs_f64() * 1e6);
    }
    let w50 = pct(&mut lat2, 0.5);
    let w99 = pct(&mut lat2, 0.99);
    let wmax = pct(&mut lat2, 1.0);
    println!(
        "RESULT reopen_read store={store} reopen_ms={reopen_ms:.1} rss_start_kb={r0} rss_after_reopen_kb={rss_open} reads={nreads} last_n={last_n} wrong_count_reads={bad} read_us_p50={p50:.0} read_us_p99={p99:.0} read_us_max={max:.0} reads_total_s={reads_s:.2} rss_after_reads_kb={rss_read} hwm_kb={hwm} warm_read_us_p50={w50:.0} warm_read_us_p99={w99:.0} warm_read_us_max={wmax:.0}"
    );
    drop(s);
}

fn cmd_trim(store: &str, dir: &Path, rooms: u32, per_room: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let mut s = open_store(store, dir);
    // ts: first half of each room is "old"
    let cutoff = TS_BASE + 1_000_000;
    let half = per_room / 2;
    let tl = Instant::now();
    assert!(bulk_load(
        s.as_mut(),
        rooms,
        per_room,
        |off| if off < half { TS_BASE + off } else { cutoff + off },
        Duration::from_secs(85)
    ));
    let load_s = tl.elapsed().as_secs_f64();
    let bytes_loaded = dir_size(dir);
    let t0 = Instant::now();
    let (old, scanned) = s.scan_old(cutoff);
    let scan_s = t0.elapsed().as_secs_f64();
    let td = Instant::now();
    let mut pol = Policy::new("interval");
    for chunk in old.chunks(1000) {
        let d = pol.durable_now();
        s.commit(&[], chunk, d);
    }
    s.commit(&[], &[], true); // final fsync
    let del_s = td.elapsed().as_secs_f64();
    let total_s = t0.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let (old2, remaining) = s.scan_old(cutoff);
    let rescan_s = t2.elapsed().as_secs_f64();
    println!(
        "RESULT trim store={store} rooms={rooms} per_room={per_room} load_s={load_s:.1} dir_bytes_loaded={bytes_loaded} scanned={scanned} old_found={} scan_s={scan_s:.2} delete_s={del_s:.2} total_s={total_s:.2} remaining={remaining} old_remaining={} rescan_after_s={rescan_s:.2} dir_bytes_after={}",
        old.len(),
        old2.len(),
        dir_size(dir)
    );
    s.close();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let p = |i: usize| PathBuf::from(&a[i]);
    match a[1].as_str() {
        "append" => cmd_append(&a[2], &a[3], a[4].parse().unwrap(), &p(5), a[6].parse().unwrap()),
        "crash" => cmd_crash(&a[2], &a[3], a[4].parse().unwrap(), &p(5), a[6].parse().unwrap()),
        "crashchild" => cmd_crashchild(&a[2], &a[3], a[4].parse().unwrap(), &p(5)),
        "load" => cmd_load(&a[2], &p(3), a[4].parse().unwrap(), a[5].parse().unwrap()),
        "reopen-read" => cmd_reopen_read(
            &a[2],
            &p(3),
            a[4].parse().unwrap(),
            a[5].parse().unwrap(),
            a[6].parse().unwrap(),
            a[7].parse().unwrap(),
        ),
        "trim" => cmd_trim(&a[2], &p(3), a[4].parse().unwrap(), a[5].parse().unwrap()),
        x => panic!("unknown subcommand {x}"),
    }
}
