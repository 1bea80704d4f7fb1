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

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// What it costs in memory, roughly: its strings and the ring's pointer to it.
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
    /// Echoed in the reply ([`Joined::tag`]), for the client to match it (a request's `ref`).
    pub tag: Option<String>,
}

/// What a publish asks for besides its text.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// The client's id for the message: a second publish with the same id while the first is still in
    /// the room's history is acknowledged with the first offset and not published again.
    pub id: Option<String>,
    /// Echoed in the acknowledgement ([`Ack::tag`]).
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
    /// Client ids of the publications in `ring`, to their offsets.
    ids: HashMap<String, u64>,
    /// What `ring` and `ids` take, roughly ([`Publication::footprint`]).
    bytes: usize,
}

impl RoomLog {
    /// A room with no history: a new epoch, offset 0.
    pub(crate) fn fresh(room: &str) -> RoomLog {
        RoomLog::restored(new_epoch(room), Vec::new())
    }

    /// A room read back from the store: its epoch and its kept publications, oldest first.
    pub(crate) fn restored(epoch: Arc<str>, publications: Vec<Arc<Publication>>) -> RoomLog {
        let top = publications.last().map_or(0, |p| p.offset);
        let mut log = RoomLog {
            epoch,
            top,
            delivered: top,
            ring: VecDeque::with_capacity(publications.len()),
            ids: HashMap::new(),
            bytes: 0,
        };
        for publication in publications {
            log.keep(publication);
        }
        log
    }

    pub(crate) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The last offset members were sent.
    #[cfg(test)]
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// What the kept publications take in memory, roughly.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives `text` from `from` (an authenticated user when `by_user`) the room's next offset and keeps it
    /// (with history on), unless its `id` was published already; `now_ms` stamps it.
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
        let publication = Arc::new(publication);
        if retention.size > 0 {
            self.keep(publication.clone());
            self.trim(retention, now_ms);
        }
        Ok(publication)
    }

    fn keep(&mut self, publication: Arc<Publication>) {
        self.bytes += publication.footprint();
        if let Some(key) = publication.id_key() {
            self.ids.insert(key, publication.offset);
        }
        self.ring.push_back(publication);
    }

    /// Members were sent everything up to `offset`.
    pub(crate) fn mark_delivered(&mut self, offset: u64) {
        self.delivered = self.delivered.max(offset);
    }

    /// Drops what `retention` no longer keeps: past `HISTORY_SIZE`, and older than the TTL at `now_ms`.
    pub(crate) fn trim(&mut self, retention: &Retention, now_ms: u64) {
        let cutoff = retention.ttl_ms.map_or(0, |ttl| now_ms.saturating_sub(ttl));
        while let Some(oldest) = self.ring.front() {
            if self.ring.len() <= retention.size && oldest.ts >= cutoff {
                break;
            }
            let oldest = self.ring.pop_front().expect("the ring has a front");
            self.bytes -= oldest.footprint();
            if let Some(key) = oldest.id_key() {
                self.ids.remove(&key);
            }
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
            let oldest_kept = self.ring.front().map_or(self.top + 1, |p| p.offset);
            let missed = self.delivered.saturating_sub(since.offset);
            let recoverable = retention.size > 0
                && *since.epoch == *self.epoch
                && since.offset <= self.delivered
                && missed as usize <= retention.recovery_max
                && (missed == 0 || oldest_kept <= since.offset + 1);
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
    fn epochs_differ() {
        assert_ne!(new_epoch("r"), new_epoch("r"));
    }
}
