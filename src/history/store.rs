//! The history store: rooms' publications on disk, in an embedded fjall database under `DATA_DIR`, written
//! by one thread of its own so that no shard ever waits on the disk.
//!
//! Shards send it [`StoreOp`]s through a crossbeam channel; it takes every op waiting, and those that
//! arrive within `HISTORY_GROUP_COMMIT_US` (group commit),
//! writes them as one fjall batch whose journal reaches the operating system before the batch returns,
//! then tells each home shard how far its publications are written ([`StoreEvent::Stored`]). The home
//! shard sends members a publication only then, so no member ever sees a message a crash of the process
//! could lose; `HISTORY_FSYNC` decides what a power loss can (every batch, every N ms, or never forced).
//! Loading a room's history back ([`StoreOp::Load`]) runs on the same thread, after every write queued
//! before it. Once an interval (a quarter of `HISTORY_TTL_SEC`, between 1 s and an hour) it drops what is
//! older than the TTL, and a room whose history is all gone loses its epoch too. When the shards have
//! ended (every sender dropped) it writes what is left and syncs: SIGTERM loses nothing.
//!
//! Why fjall: its journal is a log the batch is appended to, so a batch survives a killed process as soon
//! as `commit` returns, with or without fsync; redb's B-tree makes a commit durable only by an fsync (a
//! non-durable commit is lost with the process). The README has the measurements.
//!
//! Layout: keyspace `records`, key = room (UTF-8, which never holds the byte 0xFF) + 0xFF + offset (u64
//! big-endian), so a room's publications are one ordered prefix; value = JSON (ts, from, id, text).
//! Keyspace `rooms`: room → epoch.
//!
//! It must not know about shards or sessions: it answers through the `notify` function it was given.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

use super::{now_ms, Publication, Record, Retention, RoomLog};
use crate::config::HistoryFsync;
use crate::error::StartError;

/// The most ops one batch takes, so that one shard flooding the channel cannot hold the others' acks.
const MAX_BATCH: usize = 4096;

/// What a shard asks of the store.
#[derive(Debug)]
pub(crate) enum StoreOp {
    /// Write a publication of `room`, whose home is shard `home`; `seq` counts that shard's appends.
    Append {
        home: usize,
        seq: u64,
        room: Arc<str>,
        epoch: Arc<str>,
        publication: Arc<Publication>,
    },
    /// Read `room`'s history back for its home shard `home`.
    Load { home: usize, room: Arc<str> },
}

/// What the store tells a home shard.
#[derive(Debug)]
pub(crate) enum StoreEvent {
    /// Every append of this shard up to `seq` is written.
    Stored { seq: u64 },
    /// `room`'s history as the store holds it (a fresh log when it holds none).
    Loaded { room: Arc<str>, log: RoomLog },
}

/// What the store keeps of a room besides its publications: its epoch, and its newest offset, which
/// outlives the publications (trimmed or expired) so that numbering never goes back.
#[derive(Serialize, Deserialize)]
struct RoomMeta<'a> {
    #[serde(borrow)]
    epoch: Cow<'a, str>,
    top: u64,
}

/// A sender of ops to the store thread; every shard holds one.
pub(crate) type StoreSender = Sender<StoreOp>;

/// The running store: its thread, which ends once every [`StoreSender`] is dropped.
pub(crate) struct Store {
    pub(crate) sender: StoreSender,
    pub(crate) thread: JoinHandle<()>,
}

/// How the store thread writes.
struct Writer {
    db: Database,
    records: Keyspace,
    rooms: Keyspace,
    retention: Retention,
    fsync: HistoryFsync,
    /// How long a batch waits for more ops before it is written.
    group_commit: Option<Duration>,
    notify: Box<dyn Fn(usize, StoreEvent) + Send>,
}

impl Store {
    /// Opens (creating it if needed) the store in `dir` and starts its thread; `notify(shard, event)`
    /// reaches a home shard.
    pub(crate) fn open(
        dir: &Path,
        retention: Retention,
        fsync: HistoryFsync,
        group_commit: Option<Duration>,
        notify: Box<dyn Fn(usize, StoreEvent) + Send>,
    ) -> Result<Store, StartError> {
        let failed = |cause: String| StartError::History {
            dir: dir.to_owned(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let db = Database::builder(dir)
            // Background flushes and compactions: one thread is plenty for chat history, and it leaves
            // the cores to the shards.
            .worker_threads(1)
            .open()
            .map_err(|e| failed(e.to_string()))?;
        let records = db
            .keyspace("records", KeyspaceCreateOptions::default)
            .map_err(|e| failed(e.to_string()))?;
        let rooms = db
            .keyspace("rooms", KeyspaceCreateOptions::default)
            .map_err(|e| failed(e.to_string()))?;
        let (sender, ops) = crossbeam_channel::unbounded();
        let writer = Writer {
            db,
            records,
            rooms,
            retention,
            fsync,
            group_commit,
            notify,
        };
        let thread = std::thread::Builder::new()
            .name("history-store".to_owned())
            .spawn(move || writer.run(ops))
            .map_err(|e| failed(e.to_string()))?;
        Ok(Store { sender, thread })
    }
}

impl Writer {
    fn run(self, ops: Receiver<StoreOp>) {
        let sweep_every = self.retention.ttl_ms.map(|ttl| {
            Duration::from_millis(ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
        });
        let mut next_sweep = sweep_every.map(|every| Instant::now() + every);
        // When the oldest write not yet forced to disk was made (HISTORY_FSYNC as an interval).
        let mut unsynced_since: Option<Instant> = None;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let sync_due = match (self.fsync, unsynced_since) {
                (HistoryFsync::Interval(every), Some(since)) => Some(since + every),
                _ => None,
            };
            let wake = [sync_due, next_sweep].into_iter().flatten().min();
            let first = match wake {
                Some(at) => ops.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => ops.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(op) => {
                    batch.push(op);
                    if let Some(linger) = self.group_commit {
                        // A batch waits a little for company (`HISTORY_GROUP_COMMIT_US`), so that a
                        // steady trickle of publications shares commits, wake-ups and acknowledgements.
                        // Asleep, not waiting on the channel: a sender wakes nobody while we linger.
                        std::thread::sleep(linger);
                    }
                    batch.extend(ops.try_iter().take(MAX_BATCH - 1));
                    if self.write(&mut batch) && unsynced_since.is_none() {
                        unsynced_since = Some(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if sync_due.is_some_and(|due| now >= due) {
                self.persist(PersistMode::SyncData);
                unsynced_since = None;
            }
            if let (Some(every), Some(at)) = (sweep_every, next_sweep) {
                if now >= at {
                    self.expire();
                    next_sweep = Some(Instant::now() + every);
                }
            }
        }
        // Every shard has ended: what they sent is written; force it to disk.
        self.persist(PersistMode::SyncAll);
    }

    /// Writes the appends of `ops` as one batch, in order, answering loads where they stand; true when
    /// something was written.
    fn write(&self, ops: &mut Vec<StoreOp>) -> bool {
        let mut wrote = false;
        let mut start = 0;
        while start < ops.len() {
            // Appends up to the next load go in one batch, so the load reads them.
            let end = ops[start..]
                .iter()
                .position(|op| matches!(op, StoreOp::Load { .. }))
                .map_or(ops.len(), |at| start + at);
            if end > start {
                self.append_all(&ops[start..end]);
                wrote = true;
            }
            if let Some(StoreOp::Load { home, room }) = ops.get(end) {
                let log = self.load(room);
                (self.notify)(
                    *home,
                    StoreEvent::Loaded {
                        room: room.clone(),
                        log,
                    },
                );
            }
            start = end + 1;
        }
        ops.clear();
        wrote
    }

    fn append_all(&self, appends: &[StoreOp]) {
        let mode = match self.fsync {
            HistoryFsync::EveryWrite => PersistMode::SyncData,
            _ => PersistMode::Buffer,
        };
        let mut batch = self.db.batch().durability(Some(mode));
        let mut epochs: Vec<(&str, &str, u64)> = Vec::new();
        // The last seq per home shard, in the order shards first appear.
        let mut stored: Vec<(usize, u64)> = Vec::new();
        for op in appends {
            let StoreOp::Append {
                home,
                seq,
                room,
                epoch,
                publication,
            } = op
            else {
                continue;
            };
            let record = Record {
                ts: publication.ts,
                from: Cow::Borrowed(&publication.from),
                id: publication.id.as_deref().map(Cow::Borrowed),
                user: publication.by_user,
                text: Cow::Borrowed(&publication.text),
            };
            // Sized for the text up front: growing the buffer as JSON is written was a measurable part of
            // the store thread's time with 1 KiB messages.
            let mut value = Vec::with_capacity(record.text.len() + record.from.len() + 64);
            serde_json::to_writer(&mut value, &record).expect("a record serializes");
            batch.insert(&self.records, key(room, publication.offset), value);
            let size = self.retention.size as u64;
            if publication.offset > size {
                batch.remove(&self.records, key(room, publication.offset - size));
            }
            // The epoch and the newest offset go with every batch that writes the room: the age sweep
            // may have dropped them while the room lived on in its home shard's memory.
            match epochs.iter_mut().find(|(r, _, _)| *r == &**room) {
                Some(meta) => meta.2 = meta.2.max(publication.offset),
                None => epochs.push((room, epoch, publication.offset)),
            }
            match stored.iter_mut().find(|(shard, _)| shard == home) {
                Some(last) => last.1 = *seq,
                None => stored.push((*home, *seq)),
            }
        }
        for (room, epoch, top) in epochs {
            let meta = RoomMeta {
                epoch: Cow::Borrowed(epoch),
                top,
            };
            let meta = serde_json::to_vec(&meta).expect("a room's meta serializes");
            batch.insert(&self.rooms, room, meta);
        }
        if let Err(e) = batch.commit() {
            // The shards still deliver: a disk that fails must not silence every room.
            tracing::error!(error = %e, "history store: a write failed; those messages are not kept");
        }
        for (home, seq) in stored {
            (self.notify)(home, StoreEvent::Stored { seq });
        }
    }

    /// `room`'s epoch, newest offset and kept publications (the newest ones, oldest first, contiguous,
    /// within `HISTORY_SIZE` and the TTL).
    fn load(&self, room: &str) -> RoomLog {
        let meta = match self.rooms.get(room) {
            Ok(Some(meta)) => meta,
            Ok(None) => return RoomLog::fresh(room),
            Err(e) => {
                tracing::error!(room, error = %e, "history store: cannot read a room; it starts afresh");
                return RoomLog::fresh(room);
            }
        };
        let Ok(meta) = serde_json::from_slice::<RoomMeta<'_>>(&meta) else {
            tracing::error!(
                room,
                "history store: a room's epoch is unreadable; it starts afresh"
            );
            return RoomLog::fresh(room);
        };
        let cutoff = self.cutoff();
        let mut newest_first = Vec::new();
        for item in self
            .records
            .prefix(prefix(room))
            .rev()
            .take(self.retention.size)
        {
            let Some(publication) = item.into_inner().ok().and_then(|(k, v)| decode(&k, &v)) else {
                break;
            };
            // Only an unbroken run down from the newest offset: recovery must never skip one.
            let expected = meta.top - newest_first.len() as u64;
            if publication.offset != expected || publication.ts < cutoff {
                break;
            }
            newest_first.push(Arc::new(publication));
        }
        newest_first.reverse();
        RoomLog::restored(
            Arc::from(&*meta.epoch),
            meta.top,
            newest_first,
            &self.retention,
        )
    }

    /// Drops every publication older than the TTL, and the epoch of every room left with none.
    fn expire(&self) {
        let cutoff = self.cutoff();
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        for item in self.rooms.iter() {
            let Ok((room, _)) = item.into_inner() else {
                continue;
            };
            let Ok(room) = std::str::from_utf8(&room) else {
                continue;
            };
            let mut kept_any = false;
            for record in self.records.prefix(prefix(room)) {
                let Ok((k, v)) = record.into_inner() else {
                    continue;
                };
                match decode(&k, &v) {
                    Some(p) if p.ts < cutoff => batch.remove(&self.records, k),
                    // Newer ones follow (offsets grow with time); one that cannot be read is left
                    // alone rather than guessed at.
                    _ => {
                        kept_any = true;
                        break;
                    }
                }
            }
            if !kept_any {
                batch.remove(&self.rooms, room);
            }
        }
        if let Err(e) = batch.commit() {
            tracing::error!(error = %e, "history store: dropping expired history failed");
        }
    }

    fn cutoff(&self) -> u64 {
        self.retention
            .ttl_ms
            .map_or(0, |ttl| now_ms().saturating_sub(ttl))
    }

    fn persist(&self, mode: PersistMode) {
        if let Err(e) = self.db.persist(mode) {
            tracing::error!(error = %e, "history store: syncing to disk failed");
        }
    }
}

fn prefix(room: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(room.len() + 9);
    key.extend_from_slice(room.as_bytes());
    key.push(0xff);
    key
}

fn key(room: &str, offset: u64) -> Vec<u8> {
    let mut key = prefix(room);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// A stored publication back from its key and value; `None` for anything unreadable (skipped, not fatal).
fn decode(key: &[u8], value: &[u8]) -> Option<Publication> {
    let offset = u64::from_be_bytes(key.get(key.len().checked_sub(8)?..)?.try_into().ok()?);
    let record: Record<'_> = serde_json::from_slice(value).ok()?;
    Some(record.into_publication(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn retention() -> Retention {
        Retention {
            size: 3,
            ttl_ms: None,
            recovery_max: 10,
        }
    }

    fn open(dir: &Path) -> (Store, mpsc::Receiver<(usize, StoreEvent)>) {
        let (tx, rx) = mpsc::channel();
        let notify = Box::new(move |shard, event| {
            let _ = tx.send((shard, event));
        });
        let store = Store::open(dir, retention(), HistoryFsync::Off, None, notify).unwrap();
        (store, rx)
    }

    fn publication(offset: u64, text: &str) -> Arc<Publication> {
        Arc::new(Publication {
            offset,
            text: text.into(),
            from: "u".into(),
            ts: now_ms(),
            id: Some(format!("id{offset}")),
            by_user: false,
        })
    }

    #[test]
    fn appends_are_acknowledged_kept_within_size_and_read_back_after_reopening() {
        let dir = std::env::temp_dir().join(format!("roomcast-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let epoch: Arc<str> = Arc::from("e1");
        {
            let (store, events) = open(&dir);
            for offset in 1..=5 {
                // JSON escapes these: the record must still read back.
                let text = format!("m{offset} \"quoted\" \\ line\nbreak\t");
                let op = StoreOp::Append {
                    home: 1,
                    seq: offset,
                    room: Arc::from("r"),
                    epoch: epoch.clone(),
                    publication: publication(offset, &text),
                };
                store.sender.send(op).unwrap();
            }
            let mut acked = 0;
            while acked < 5 {
                match events.recv_timeout(Duration::from_secs(10)).unwrap() {
                    (1, StoreEvent::Stored { seq }) => acked = seq,
                    other => panic!("unexpected {other:?}"),
                }
            }
            drop(store.sender);
            store.thread.join().unwrap();
        }
        let (store, events) = open(&dir);
        let ask = |room: &str| {
            store
                .sender
                .send(StoreOp::Load {
                    home: 0,
                    room: Arc::from(room),
                })
                .unwrap();
            match events.recv_timeout(Duration::from_secs(10)).unwrap() {
                (0, StoreEvent::Loaded { log, .. }) => log,
                other => panic!("unexpected {other:?}"),
            }
        };
        let log = ask("r");
        assert_eq!(&**log.epoch(), "e1");
        assert_eq!(log.delivered(), 5);
        let all = crate::history::JoinOptions {
            latest: 10,
            ..Default::default()
        };
        let texts: Vec<_> = log
            .recover(&all, &retention())
            .publications
            .iter()
            .map(|p| p.text.clone())
            .collect();
        let expected: Vec<String> = (3..=5)
            .map(|i| format!("m{i} \"quoted\" \\ line\nbreak\t"))
            .collect();
        assert_eq!(texts, expected);
        let fresh = ask("elsewhere");
        assert_eq!(fresh.delivered(), 0);
        assert_ne!(&**fresh.epoch(), "e1");
        drop(store.sender);
        store.thread.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
