//! Several roomcast nodes sharing rooms through Redis (`CLUSTER_REDIS_URL`): what a node asks of Redis,
//! what it is told back, and how rooms are named there.
//!
//! Off (the key unset) nothing here runs: one node, rooms on its shards, history in the embedded store.
//! On, the [`bridge`] thread owns every Redis connection and is the only code that talks to Redis. Shards
//! reach it with a [`ClusterOp`] through a [`BridgeSender`] (never waiting for it); it answers the room's
//! home shard on this node with a [`ClusterEvent`] posted through [`crate::shard::mesh`]. So the shards
//! stay glommio executors that never block, and Redis's client library stays on a thread of its own.
//!
//! What travels, per room:
//! - a node subscribes to a room's channel when its first local member joins, and unsubscribes after
//!   `CLUSTER_UNSUBSCRIBE_LINGER_MS` once the last has left: a node never receives a room it has nobody in.
//!   Rooms that come or go together share a command (one per partition);
//! - a publication is one Lua script ([`PUBLISH_SCRIPT`]) that gives it the room's next offset (and the
//!   room an epoch if it has none), appends it to the room's stream (capped at `HISTORY_SIZE`, expiring
//!   with `HISTORY_TTL_SEC`) and publishes it, atomically: every node sees one order, Redis's;
//! - the bridge hands a room's home shard its publications in that order, without gap or repeat: a gap in
//!   offsets (a dropped link, a message lost in between) is filled from the stream first;
//! - a room's home shard keeps its recent publications in memory as in one node, read from the stream
//!   when the room is first subscribed: joins and recovery are answered there, the same on every node;
//! - presence: every node keeps its own members of a room in a sorted set of the room's, scored by when
//!   each expires (`CLUSTER_PRESENCE_TTL_MS`) and refreshed by the node every third of that; a presence
//!   request reads the other nodes' members there, so a node that dies leaves no member behind for longer
//!   than the TTL. With `PRESENCE_EVENTS`, a join or leave is also told to the other nodes on the room's
//!   channel (a notice with no offset, not in the stream);
//! - a raw broadcast (`broadcast_text_to_room`, no offset, no history) is delivered on its own node at
//!   once and published on the room's channel for the other nodes' members: each node's broadcasts keep
//!   their order, but broadcasts of different nodes are not put in one order (publications are).
//!
//! Every key and channel of a room carries one hash tag, `{pN}` with `N` the room's partition (its Redis
//! Cluster hash slot modulo `CLUSTER_PARTITIONS`), so the script's keys share a slot, and resubscribing
//! after a failover is one `SSUBSCRIBE` per partition.
//!
//! It must not deliver to sessions or render anything (the home shard does), and nothing on a shard may
//! wait for Redis.

pub(crate) mod bridge;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::history::RoomLog;
use crate::metrics::ClusterStats;
use crate::replies::Member;
use crate::session_state::SessionId;
use crate::shard::home::{Asker, PublishRequest};
use crate::ws::encode::DataKind;

/// The publish script (see its header for the keys and arguments).
pub(crate) const PUBLISH_SCRIPT: &str = include_str!("publish.lua");

/// The presence script: refresh a node's members of a room, or read the members not expired.
pub(crate) const PRESENCE_SCRIPT: &str = include_str!("presence.lua");

/// Every key and channel of roomcast's starts with this.
const PREFIX: &str = "roomcast";

/// The names of one room's keys and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomKeys {
    /// The hash holding the room's epoch and last offset.
    pub(crate) meta: String,
    /// The stream of its newest publications.
    pub(crate) stream: String,
    /// Its channel.
    pub(crate) channel: String,
    /// Client ids are remembered under this, followed by the id's key.
    pub(crate) id_prefix: String,
    /// The sorted set of its members on every node, scored by when each expires.
    pub(crate) presence: String,
}

impl RoomKeys {
    /// The names for `room` with `partitions` partitions (the same on every node).
    pub(crate) fn of(room: &str, partitions: u16) -> RoomKeys {
        let partition = fred::util::redis_keyslot(room.as_bytes()) % partitions.max(1);
        let base = format!("{PREFIX}:{{p{partition}}}:{room}");
        RoomKeys {
            meta: format!("{base}:meta"),
            stream: format!("{base}:stream"),
            id_prefix: format!("{base}:id:"),
            presence: format!("{base}:presence"),
            channel: base,
        }
    }
}

/// The room a channel of [`RoomKeys::channel`] belongs to; `None` for any other channel.
pub(crate) fn room_of_channel(channel: &str) -> Option<&str> {
    let rest = channel.strip_prefix(PREFIX)?.strip_prefix(":{p")?;
    let (partition, room) = rest.split_once("}:")?;
    partition
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(room)
}

/// What a shard asks of the bridge.
#[derive(Debug)]
pub(crate) enum ClusterOp {
    /// `room` has a member on this node (its first, or one whose join needs what memory no longer has):
    /// subscribe to it if not yet, then read its epoch, last offset and newest publications for the home
    /// shard `home` ([`ClusterEvent::Loaded`]), and from then on hand it every publication.
    Load { room: Arc<str>, home: usize },
    /// `room` has no member left on this node: unsubscribe after the linger, unless it is loaded again.
    Release { room: Arc<str> },
    /// Publish in `room` (the script); the home shard `home` gets [`ClusterEvent::Published`] or
    /// [`ClusterEvent::PublishFailed`].
    Publish {
        room: Arc<str>,
        home: usize,
        request: PublishRequest,
    },
    /// A raw broadcast to `room` made on this node (and delivered here already): for the other nodes.
    Broadcast {
        room: Arc<str>,
        kind: DataKind,
        payload: Box<[u8]>,
    },
    /// `member` of this node joined `room`: into the room's presence in Redis, refreshed until it leaves.
    MemberJoined { room: Arc<str>, member: Member },
    /// The member `session` of this node left `room`.
    MemberLeft { room: Arc<str>, session: SessionId },
    /// Who is in `room` on the other nodes; the home shard `home` gets [`ClusterEvent::Presence`].
    Presence {
        room: Arc<str>,
        home: usize,
        to: Asker,
        tag: Option<String>,
    },
}

/// What the bridge tells a room's home shard on this node.
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// `room`'s stream as Redis has it now; every publication handed over from now on follows it.
    Loaded { room: Arc<str>, log: RoomLog },
    /// The next publication of `room` (its offset follows the last one handed over, unless `epoch` is
    /// new: the room's history was lost in Redis and it starts again).
    Publication {
        room: Arc<str>,
        epoch: Arc<str>,
        publication: crate::history::Publication,
    },
    /// Publications `from..=to` of `room` could not be read back (trimmed from the stream, or history
    /// off): they are skipped; what follows is handed over.
    Skipped {
        room: Arc<str>,
        epoch: Arc<str>,
        from: u64,
        to: u64,
    },
    /// Redis took a publish at `offset` (`duplicate`: its id was published already, at `offset`).
    Published {
        room: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        duplicate: bool,
        to: Option<Asker>,
        tag: Option<String>,
    },
    /// Redis could not be reached: nothing was published.
    PublishFailed {
        room: Arc<str>,
        to: Option<Asker>,
        tag: Option<String>,
    },
    /// The members of `room` on other nodes, for `to` (`None`: Redis could not be reached, only this
    /// node's members are known).
    Presence {
        room: Arc<str>,
        others: Option<Vec<Member>>,
        to: Asker,
        tag: Option<String>,
    },
    /// A raw broadcast to `room` made on another node.
    Broadcast {
        room: Arc<str>,
        kind: DataKind,
        payload: Box<[u8]>,
    },
    /// `member` of another node joined or left `room` (with `PRESENCE_EVENTS`).
    MemberChange {
        room: Arc<str>,
        member: Member,
        joined: bool,
    },
}

/// The shards' way to the bridge; `Send + Sync`, cloned into every shard.
#[derive(Debug, Clone)]
pub(crate) struct BridgeSender(tokio::sync::mpsc::UnboundedSender<ClusterOp>);

impl BridgeSender {
    /// Hands `op` to the bridge without waiting; gives it back (boxed: only a stopping node pays for it)
    /// once the bridge has ended.
    pub(crate) fn send(&self, op: ClusterOp) -> Result<(), Box<ClusterOp>> {
        self.0.send(op).map_err(|refused| Box::new(refused.0))
    }
}

/// What the bridge counts, readable from any thread ([`crate::ServerHandle::cluster_stats`]).
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    /// Room messages (publications and raw broadcasts) received from Redis for rooms this node is
    /// subscribed to.
    pub(crate) received: AtomicU64,
    /// Room messages this node published through Redis.
    pub(crate) published: AtomicU64,
    /// Publishes refused, and raw broadcasts that reached only this node, because Redis could not be
    /// reached.
    pub(crate) unavailable: AtomicU64,
    /// Publications read back from a stream to fill a gap.
    pub(crate) gap_filled: AtomicU64,
    /// Whether the subscriber connection is up.
    pub(crate) linked: AtomicBool,
}

impl ClusterCounters {
    pub(crate) fn snapshot(&self) -> ClusterStats {
        ClusterStats {
            received: self.received.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            gap_filled: self.gap_filled.load(Ordering::Relaxed),
            linked: self.linked.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_keys_share_one_hash_tag_and_its_channel_names_it_back() {
        for room in ["general", "a:b", "{odd}", "ünïcode room"] {
            let keys = RoomKeys::of(room, 16);
            let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
            assert_eq!(tag(&keys.meta), tag(&keys.channel));
            assert_eq!(tag(&keys.stream), tag(&keys.channel));
            assert_eq!(tag(&keys.id_prefix), tag(&keys.channel));
            assert_eq!(tag(&keys.presence), tag(&keys.channel));
            assert_eq!(room_of_channel(&keys.channel), Some(room));
        }
        assert_eq!(room_of_channel("other:{p1}:x"), None);
        assert_eq!(room_of_channel("roomcast:{px}:x"), None);
    }

    #[test]
    fn rooms_spread_over_at_most_the_configured_partitions() {
        let tags: std::collections::HashSet<String> = (0..1000)
            .map(|i| {
                let keys = RoomKeys::of(&format!("room-{i}"), 16);
                keys.channel[..keys.channel.find('}').unwrap()].to_owned()
            })
            .collect();
        assert_eq!(tags.len(), 16);
    }
}
