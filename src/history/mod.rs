//! A room's ordered stream as its home shard keeps it: offsets, the epoch, the newest publications in
//! memory, idempotent publishing by client message id, and recovery for a member who comes back.
//!
//! Every publication of a room passes through the room's home shard ([`crate::shard`]), which gives it the
//! next offset of the room's [`RoomLog`] (1, 2, 3, ...) and, with history on, keeps it here (at most
//! `HISTORY_SIZE`, none older than `HISTORY_TTL_SEC`) and in the embedded [`store`]. The room's `epoch`
//! names one unbroken run of offsets: it changes only when the room's history is lost (the data directory
//! wiped, or everything it held expired), so a client holding (offset, epoch) can tell a gap-free
//! recovery from one that is not.
//!
//! It must not deliver, render or write anything: the home shard does that with what this returns, and
//! the store writes in its own thread.

pub(crate) mod store;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One message of a room's stream, as history keeps it and recovery returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its place in the room's stream: 1 for the first, then +1 per publication.
    pub offset: u64,
    /// The text published.
    pub text: String,
    /// Who published it: the session's user, or its id without authentication.
    pub from: String,
    /// When the home shard took it, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The client's id for it, unique per sender, if it gave one (a retry with the same id is not
    /// published twice).
    pub id: Option<String>,
    /// `from` is an authenticated user: its ids are its own. An anonymous publisher's session id changes
    /// when it reconnects, so its ids are the room's (a client must make them unique, e.g. random UUIDs).
    pub(crate) by_user: bool,
}

impl Publication {
    /// The key its id is remembered by: per user for an authenticated publisher, per room otherwise.
    fn id_key(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        Some(match self.by_user {
            true => format!("{}\u{1f}{id}", self.from),
            false => id.clone(),
        })
    }

    fn footprint(&self) -> usize {
        std::mem::size_of::<Publication>()
            + 16
            + self.text.len()
            + self.from.len()
            + self
                .id
                .as_ref()
                .map_or(0, |id| 2 * id.len() + self.from.len() + 48)
    }
}

/// A publication as it is kept outside memory, without its offset (which is where it is kept): the
/// embedded store's values, and with the cluster, Redis's stream entries and channel messages (which the
/// publish script writes with the same fields). The strings borrow from the bytes read when they can and
/// are copied when JSON escaped them (a quote, a backslash, a newline).
#[derive(Serialize, Deserialize)]
pub(crate) struct Record<'a> {
    pub(crate) ts: u64,
    #[serde(borrow)]
    pub(crate) from: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<Cow<'a, str>>,
    /// `from` is an authenticated user ([`Publication`]'s `by_user`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) user: bool,
    #[serde(borrow)]
    pub(crate) text: Cow<'a, str>,
}

impl Record<'_> {
    /// The publication at `offset`.
    pub(crate) fn into_publication(self, offset: u64) -> Publication {
        Publication {
            offset,
            text: self.text.into_owned(),
            from: self.from.into_owned(),
            ts: self.ts,
            id: self.id.map(Cow::into_owned),
            by_user: self.user,
        }
    }
}

/// Where a client is in a room's stream: the last offset it saw and the epoch that offset belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The last offset seen (0: none).
    pub offset: u64,
    /// The room's epoch at that offset.
    pub epoch: String,
}

/// What a join asks of the room's history.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// Recover what was published after this position (a client coming back).
    pub since: Option<StreamPosition>,
    /// Without `since`, or when recovery is not possible: how many of the newest publications to return,
    /// capped at `HISTORY_RECOVERY_MAX` (0: none).
    pub latest: usize,
    /// Echoed in the reply ([`crate::Joined::tag`]), for the client to match it (a request's `ref`).
    pub tag: Option<String>,
}

/// What a publish asks for besides its text.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// The client's id for the message: a second publish with the same id while the first is still in
    /// the room's history is acknowledged with the first offset and not published again.
    pub id: Option<String>,
    /// Echoed in the acknowledgement ([`crate::Ack::tag`]).
    pub tag: Option<String>,
}

/// What bounds a room's history: `HISTORY_SIZE`, `HISTORY_TTL_SEC` and `HISTORY_RECOVERY_MAX`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// The newest publications kept (0: history off, offsets only).
    pub(crate) size: usize,
    /// How long one is kept, in milliseconds.
    pub(crate) ttl_ms: Option<u64>,
    /// The most a recovery returns.
    pub(crate) recovery_max: usize,
}

impl Retention {
    /// No history: offsets and epochs only.
    pub(crate) const OFFSETS_ONLY: Retention = Retention {
        size: 0,
        ttl_ms: None,
        recovery_max: 0,
    };

    /// How many of a room's newest publications memory keeps: what a join can be given, no more (the
    /// store keeps the rest of `HISTORY_SIZE`).
    pub(crate) fn resident(&self) -> usize {
        self.size.min(self.recovery_max)
    }
}

/// Who publishes: the name members see, and whether it is an authenticated user.
#[derive(Debug, Clone)]
pub(crate) struct Author {
    pub(crate) name: String,
    pub(crate) is_user: bool,
}

/// A publish the log refused to repeat: the id was published already, at this offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duplicate(pub(crate) u64);

/// One room's stream on its home shard.
///
/// In memory it keeps what recovery can return: the newest `min(HISTORY_SIZE, HISTORY_RECOVERY_MAX)`
/// publications (a join never gets more), and the client ids of the whole `HISTORY_SIZE` window, which
/// idempotent publishing needs. Under memory pressure its home drops the publications
/// ([`RoomLog::drop_publications`]) and keeps the rest, a few hundred bytes: the room goes on numbering
/// and taking publications without the store, and a join that needs what was dropped has it read back
/// ([`RoomLog::needs_store`], [`RoomLog::merge`]).
#[derive(Debug)]
pub(crate) struct RoomLog {
    epoch: Arc<str>,
    /// The last offset given out.
    top: u64,
    /// The last offset members were sent: publications after it wait for the store (see
    /// [`crate::shard`]); recovery never returns them, since they will reach every member anyway.
    delivered: u64,
    /// The newest publications, oldest first, their offsets contiguous and ending at `top`.
    ring: VecDeque<Arc<Publication>>,
    /// Every kept publication from this offset on is in `ring` (`top + 1`: none is).
    resident_from: u64,
    /// Publications before this offset may be in the store and not in memory (1: memory has all the
    /// store has; `top + 1` after [`RoomLog::drop_publications`]).
    known_from: u64,
    /// Client ids of the window's publications, to their offsets ...
    ids: HashMap<String, u64>,
    /// ... and in the order published, with their offsets and times, to forget them with the window.
    id_order: VecDeque<(u64, u64, String)>,
    /// What the ring and the ids take, roughly ([`Publication::footprint`]).
    bytes: usize,
}

impl RoomLog {
    /// A room with no history: a new epoch, offset 0.
    pub(crate) fn fresh(room: &str) -> RoomLog {
        RoomLog::restored(new_epoch(room), 0, Vec::new(), &Retention::OFFSETS_ONLY)
    }

    /// A room read back from the store: its epoch, its newest offset `top`, and its kept publications,
    /// oldest first, contiguous and ending at `top` (fewer, or none, when older ones were trimmed or
    /// expired), of which it keeps what `retention` keeps in memory.
    pub(crate) fn restored(
        epoch: Arc<str>,
        top: u64,
        publications: Vec<Arc<Publication>>,
        retention: &Retention,
    ) -> RoomLog {
        debug_assert!(publications.last().is_none_or(|p| p.offset == top));
        let mut log = RoomLog {
            epoch,
            top,
            delivered: top,
            ring: VecDeque::new(),
            resident_from: top + 1,
            known_from: 1,
            ids: HashMap::new(),
            id_order: VecDeque::new(),
            bytes: 0,
        };
        let resident = retention.resident();
        let skip = publications.len().saturating_sub(resident);
        for (i, publication) in publications.into_iter().enumerate() {
            log.remember_id(&publication);
            if i >= skip {
                log.bytes += publication.footprint();
                log.ring.push_back(publication);
            }
        }
        log.resident_from = log.ring.front().map_or(top + 1, |p| p.offset);
        log
    }

    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The last offset members were sent.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// What the kept publications and ids take in memory, roughly.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives `text` from `from` the room's next offset and keeps it (with history on), unless its `id`
    /// was published already; `now_ms` stamps it.
    pub(crate) fn append(
        &mut self,
        text: String,
        from: Author,
        id: Option<String>,
        now_ms: u64,
        retention: &Retention,
    ) -> Result<Arc<Publication>, Duplicate> {
        let mut publication = Publication {
            offset: self.top + 1,
            text,
            from: from.name,
            ts: now_ms,
            id,
            by_user: from.is_user,
        };
        if let Some(offset) = publication.id_key().and_then(|key| self.ids.get(&key)) {
            return Err(Duplicate(*offset));
        }
        self.top += 1;
        publication.offset = self.top;
        Ok(self.keep(publication, retention, now_ms))
    }

    /// Takes a publication numbered elsewhere (by Redis, with the cluster), in order: `None` for one at or
    /// before the last offset (a repeat). One past the next offset means those between were skipped.
    pub(crate) fn accept(
        &mut self,
        publication: Publication,
        retention: &Retention,
        now_ms: u64,
    ) -> Option<Arc<Publication>> {
        if publication.offset <= self.top {
            return None;
        }
        self.skip_to(publication.offset - 1);
        self.top = publication.offset;
        let publication = self.keep(publication, retention, now_ms);
        // Members get it as soon as it is taken: Redis has kept it already.
        self.delivered = self.top;
        Some(publication)
    }

    /// Publications up to `offset` will never arrive (no longer in the stream they were read from): the
    /// room goes on after them. What memory held no longer runs without a gap to the new last offset, so
    /// it is dropped (a join over the gap is not recovered).
    pub(crate) fn skip_to(&mut self, offset: u64) {
        if offset <= self.top {
            return;
        }
        let freed: usize = self.ring.iter().map(|p| p.footprint()).sum();
        self.ring.clear();
        self.bytes -= freed;
        self.top = offset;
        self.delivered = offset;
        self.resident_from = offset + 1;
    }

    /// Keeps `publication`, the new last one (with history on), and returns it shared.
    fn keep(
        &mut self,
        publication: Publication,
        retention: &Retention,
        now_ms: u64,
    ) -> Arc<Publication> {
        let publication = Arc::new(publication);
        if retention.size > 0 {
            self.remember_id(&publication);
            self.bytes += publication.footprint();
            self.ring.push_back(publication.clone());
            self.trim(retention, now_ms);
        } else {
            self.resident_from = self.top + 1;
        }
        publication
    }

    fn remember_id(&mut self, publication: &Publication) {
        if let Some(key) = publication.id_key() {
            self.bytes += 2 * key.len() + ID_OVERHEAD;
            self.ids.insert(key.clone(), publication.offset);
            self.id_order
                .push_back((publication.offset, publication.ts, key));
        }
    }

    /// Members were sent everything up to `offset`.
    pub(crate) fn mark_delivered(&mut self, offset: u64) {
        self.delivered = self.delivered.max(offset);
    }

    /// Forgets what `retention` no longer keeps at `now_ms`: publications past what memory keeps or
    /// older than the TTL, and ids past `HISTORY_SIZE` or older than the TTL.
    pub(crate) fn trim(&mut self, retention: &Retention, now_ms: u64) {
        let cutoff = retention.ttl_ms.map_or(0, |ttl| now_ms.saturating_sub(ttl));
        let resident = retention.resident();
        while let Some(oldest) = self.ring.front() {
            if self.ring.len() <= resident && oldest.ts >= cutoff {
                break;
            }
            self.forget_oldest_publication();
        }
        let window_start = self.top.saturating_sub(retention.size as u64);
        while let Some((offset, ts, _)) = self.id_order.front() {
            if *offset > window_start && *ts >= cutoff {
                break;
            }
            let (offset, _, key) = self.id_order.pop_front().expect("a front");
            self.bytes -= 2 * key.len() + ID_OVERHEAD;
            if self.ids.get(&key) == Some(&offset) {
                self.ids.remove(&key);
            }
        }
    }

    /// Drops the publications from memory (the store has them), keeping the epoch, the offsets and the
    /// ids; returns the bytes freed.
    pub(crate) fn drop_publications(&mut self) -> usize {
        let freed: usize = self.ring.iter().map(|p| p.footprint()).sum();
        self.ring.clear();
        self.bytes -= freed;
        self.resident_from = self.top + 1;
        self.known_from = self.top + 1;
        freed
    }

    /// Whether a join with `options` needs publications that memory dropped and the store has.
    pub(crate) fn needs_store(&self, options: &JoinOptions, retention: &Retention) -> bool {
        if self.known_from <= 1 || retention.size == 0 {
            return false;
        }
        // The oldest publication a join could be given.
        let oldest_useful = (self.top + 1)
            .saturating_sub(retention.resident() as u64)
            .max(1);
        let wanted_from = match &options.since {
            Some(since) if *since.epoch == *self.epoch && since.offset < self.top => {
                since.offset + 1
            }
            _ => (self.delivered + 1)
                .saturating_sub(options.latest.min(retention.recovery_max) as u64)
                .max(1),
        };
        wanted_from.max(oldest_useful) < self.resident_from.min(self.known_from)
    }

    /// Takes back what the store read (`stored`: this room's log as written before the read was asked
    /// for) under what was published since: the publications memory dropped return.
    pub(crate) fn merge(&mut self, stored: RoomLog, retention: &Retention) {
        // Everything up to `top` at the time of the read is in the store (it is written before members
        // see it), and everything after it is in memory: the two meet without a gap.
        let resident_from = self.resident_from;
        let older = stored
            .ring
            .into_iter()
            .rev()
            .skip_while(|p| p.offset >= resident_from);
        for publication in older {
            if publication.offset + 1 != self.resident_from {
                break;
            }
            self.bytes += publication.footprint();
            self.resident_from = publication.offset;
            self.ring.push_front(publication);
        }
        self.known_from = 1;
        while self.ring.len() > retention.resident() {
            self.forget_oldest_publication();
        }
    }

    /// Drops the oldest publication in memory; what memory holds now starts after it.
    fn forget_oldest_publication(&mut self) {
        if let Some(oldest) = self.ring.pop_front() {
            self.bytes -= oldest.footprint();
            self.resident_from = self.resident_from.max(oldest.offset + 1);
        }
    }

    /// What a member joining with `options` gets: everything delivered after `since` when the log still
    /// holds all of it (at most `recovery_max`), else the newest `latest`.
    pub(crate) fn recover(&self, options: &JoinOptions, retention: &Retention) -> Recovery {
        let position = StreamPosition {
            offset: self.delivered,
            epoch: self.epoch.to_string(),
        };
        let delivered = self.ring.iter().take_while(|p| p.offset <= self.delivered);
        if let Some(since) = &options.since {
            let missed = self.delivered.saturating_sub(since.offset);
            let recoverable = retention.size > 0
                && *since.epoch == *self.epoch
                && since.offset <= self.delivered
                && missed as usize <= retention.recovery_max
                && (missed == 0 || self.resident_from <= since.offset + 1);
            if recoverable {
                let publications = delivered
                    .skip_while(|p| p.offset <= since.offset)
                    .cloned()
                    .collect();
                return Recovery {
                    position,
                    recovered: true,
                    publications,
                };
            }
        }
        let latest = options.latest.min(retention.recovery_max);
        let kept: Vec<_> = delivered.cloned().collect();
        let publications = kept[kept.len().saturating_sub(latest)..].to_vec();
        Recovery {
            position,
            recovered: false,
            publications,
        }
    }
}

/// What an id costs besides its key (twice: the map's and the queue's): the map entry, the queue entry.
const ID_OVERHEAD: usize = 64;

/// What a join gets from the room's log.
pub(crate) struct Recovery {
    pub(crate) position: StreamPosition,
    pub(crate) recovered: bool,
    pub(crate) publications: Vec<Arc<Publication>>,
}

/// A new random epoch for `room`: 16 hex digits from the standard library's per-process random keys (the
/// OS's randomness), mixed with the time, so a wiped data directory never repeats an epoch.
pub(crate) fn new_epoch(room: &str) -> Arc<str> {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    room.hash(&mut hasher);
    now_ms().hash(&mut hasher);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        .hash(&mut hasher);
    Arc::from(format!("{:016x}", hasher.finish()))
}

/// Milliseconds since the Unix epoch, publications' clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP_3: Retention = Retention {
        size: 3,
        ttl_ms: Some(1_000),
        recovery_max: 2,
    };

    fn publish(log: &mut RoomLog, text: &str, id: Option<&str>, now: u64) -> u64 {
        let p = log
            .append(text.into(), anonymous(), id.map(Into::into), now, &KEEP_3)
            .unwrap();
        log.mark_delivered(p.offset);
        p.offset
    }

    fn anonymous() -> Author {
        Author {
            name: "0-1".into(),
            is_user: false,
        }
    }

    fn user(name: &str) -> Author {
        Author {
            name: name.into(),
            is_user: true,
        }
    }

    fn since(log: &RoomLog, offset: u64) -> JoinOptions {
        JoinOptions {
            since: Some(StreamPosition {
                offset,
                epoch: log.epoch().to_string(),
            }),
            latest: 10,
            tag: None,
        }
    }

    #[test]
    fn offsets_count_up_and_a_retried_id_is_not_published_twice() {
        let mut log = RoomLog::fresh("r");
        assert_eq!(publish(&mut log, "a", Some("m1"), 0), 1);
        assert_eq!(publish(&mut log, "b", None, 0), 2);
        let retry = log.append("a".into(), anonymous(), Some("m1".into()), 0, &KEEP_3);
        assert_eq!(retry.unwrap_err(), Duplicate(1));
        assert_eq!(publish(&mut log, "c", Some("m2"), 0), 3);
    }

    #[test]
    fn an_authenticated_users_ids_are_its_own() {
        let mut log = RoomLog::fresh("r");
        let ann = log.append("a".into(), user("ann"), Some("1".into()), 0, &KEEP_3);
        let bob = log.append("b".into(), user("bob"), Some("1".into()), 0, &KEEP_3);
        assert_eq!((ann.unwrap().offset, bob.unwrap().offset), (1, 2));
        let again = log.append("a".into(), user("ann"), Some("1".into()), 0, &KEEP_3);
        assert_eq!(again.unwrap_err(), Duplicate(1));
    }

    #[test]
    fn recovery_is_exact_or_refused() {
        let mut log = RoomLog::fresh("r");
        for (i, text) in ["a", "b", "c", "d"].iter().enumerate() {
            publish(&mut log, text, Some(&format!("m{i}")), 0);
        }
        // Size 3 dropped offset 1 (and its id: "m0" may be published again).
        let texts = |r: &Recovery| {
            r.publications
                .iter()
                .map(|p| p.text.clone())
                .collect::<Vec<_>>()
        };
        let r = log.recover(&since(&log, 2), &KEEP_3);
        assert!(r.recovered);
        assert_eq!(texts(&r), ["c", "d"]);
        assert_eq!(r.position.offset, 4);
        // Up to date: recovered, nothing to send.
        let r = log.recover(&since(&log, 4), &KEEP_3);
        assert!(r.recovered && r.publications.is_empty());
        // More missed than HISTORY_RECOVERY_MAX (2): the newest `latest` (capped at 2), not recovered.
        let r = log.recover(&since(&log, 1), &KEEP_3);
        assert!(!r.recovered);
        assert_eq!(texts(&r), ["c", "d"]);
        // Another epoch: history was lost since.
        let mut other = since(&log, 3);
        other.since.as_mut().unwrap().epoch = "0".into();
        assert!(!log.recover(&other, &KEEP_3).recovered);
        // Ahead of the log: not this stream.
        assert!(!log.recover(&since(&log, 9), &KEEP_3).recovered);
        assert_eq!(publish(&mut log, "e", Some("m0"), 0), 5);
    }

    #[test]
    fn age_trims_and_undelivered_publications_are_not_recovered() {
        let mut log = RoomLog::fresh("r");
        publish(&mut log, "old", None, 0);
        publish(&mut log, "new", None, 5_000);
        assert_eq!(log.ring.len(), 1, "older than the TTL at 5 s");
        let waiting = log
            .append("pending".into(), anonymous(), None, 5_000, &KEEP_3)
            .unwrap();
        let r = log.recover(&since(&log, 2), &KEEP_3);
        assert!(r.recovered && r.publications.is_empty());
        assert_eq!(r.position.offset, 2);
        log.mark_delivered(waiting.offset);
        assert_eq!(log.recover(&since(&log, 2), &KEEP_3).publications.len(), 1);
        let bytes: usize = log.ring.iter().map(|p| p.footprint()).sum();
        assert_eq!(log.bytes(), bytes);
    }

    #[test]
    fn dropped_publications_come_back_from_the_store_under_newer_ones() {
        let keep = Retention {
            size: 10,
            ttl_ms: None,
            recovery_max: 4,
        };
        let mut log = RoomLog::fresh("r");
        let mut stored = Vec::new();
        for i in 1..=6 {
            let p = log
                .append(format!("m{i}"), anonymous(), None, 0, &keep)
                .unwrap();
            log.mark_delivered(p.offset);
            stored.push(p);
        }
        assert_eq!(log.ring.len(), 4, "memory keeps what a join can be given");
        let all = |latest| JoinOptions {
            latest,
            ..Default::default()
        };
        assert!(!log.needs_store(&all(4), &keep));
        log.drop_publications();
        // Publishing goes on without the store.
        let p = log
            .append("m7".into(), anonymous(), None, 0, &keep)
            .unwrap();
        log.mark_delivered(p.offset);
        stored.push(p);
        assert!(!log.needs_store(&all(1), &keep), "the newest is in memory");
        assert!(log.needs_store(&all(3), &keep));
        assert!(log.needs_store(&since(&log, 5), &keep));
        // The store read back the room as written before the read (m1..m7, of which it keeps 4).
        let from_store = RoomLog::restored(log.epoch().clone(), 7, stored, &keep);
        log.merge(from_store, &keep);
        assert!(!log.needs_store(&since(&log, 5), &keep));
        let r = log.recover(&since(&log, 4), &keep);
        assert!(r.recovered);
        let offsets: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [5, 6, 7]);
        let bytes: usize = log.ring.iter().map(|p| p.footprint()).sum();
        assert_eq!(log.bytes(), bytes);
    }

    #[test]
    fn ids_outlive_the_publications_in_memory_for_the_whole_window() {
        let keep = Retention {
            size: 5,
            ttl_ms: None,
            recovery_max: 2,
        };
        let mut log = RoomLog::fresh("r");
        for i in 1..=5 {
            log.append(
                format!("m{i}"),
                anonymous(),
                Some(format!("id{i}")),
                0,
                &keep,
            )
            .unwrap();
        }
        log.drop_publications();
        let retry = log.append("m1".into(), anonymous(), Some("id1".into()), 0, &keep);
        assert_eq!(retry.unwrap_err(), Duplicate(1));
        log.append("m6".into(), anonymous(), None, 0, &keep)
            .unwrap();
        // Offset 1 has left the window of 5: its id may be used again.
        let reused = log.append("again".into(), anonymous(), Some("id1".into()), 0, &keep);
        assert_eq!(reused.unwrap().offset, 7);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch("r"), new_epoch("r"));
    }
}
