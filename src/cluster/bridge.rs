//! The bridge: the one thread that talks to Redis for a node (see [`super`] for what travels).
//!
//! It runs a current-thread tokio runtime with two fred clients: `commands` (the publish script, the
//! streams) and `subscriber` (the node's subscriptions; with a Redis Cluster one connection per master and
//! sharded channels). Each op a shard sends runs as a task of its own, started in the order the ops came
//! (so one node's publishes reach Redis in the order they were asked, pipelined on one connection), and a
//! slow Redis call holds up nothing but what must follow it.
//!
//! For each room it is subscribed to it keeps where the room is: `Syncing` (its stream is being read:
//! a load, a gap to fill, a resync after a reconnect; messages received meanwhile wait, in order) or
//! `Live` (the epoch and the last offset handed to the home shard). A message that follows the last
//! offset is handed over; one at or before it is a repeat and dropped; one past it means some were
//! missed, which are read from the stream and handed over first. After the subscriber reconnects, every
//! room is subscribed again (one command per partition) and resynced the same way: nothing published while
//! the link was down is lost while the stream still holds it.
//!
//! It must not reach sessions or shard state: it only posts [`ClusterEvent`]s.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface, StreamsInterface,
};
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::{Builder, Value};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    room_of_channel, BridgeSender, ClusterCounters, ClusterEvent, ClusterOp, RoomKeys,
    PUBLISH_SCRIPT,
};
use crate::config::ClusterSettings;
use crate::error::StartError;
use crate::history::{new_epoch, Publication, PublishOptions, Record, Retention, RoomLog};
use crate::shard::home::{PublishRequest, ReplyTo};

/// How the bridge reaches a home shard: `(shard, event)`.
pub(crate) type Notify = Box<dyn Fn(usize, ClusterEvent) + Send>;

/// How long a Redis command may take before it fails: a publish while Redis is unreachable is answered
/// `unavailable` within this, not held.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Reconnection: first retry at once, then doubling up to 2 s, for ever.
fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 50, 2000, 2)
}

/// A running bridge: its sender for the shards, its counters, its thread (ends once every sender is
/// dropped).
pub(crate) struct Bridge {
    pub(crate) sender: BridgeSender,
    pub(crate) counters: Arc<ClusterCounters>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts the bridge for `settings` (whose `redis_url` is set). Fails only when the URL cannot be used;
/// a Redis that does not answer yet is retried in the background while the node serves its own sessions.
pub(crate) fn start(
    settings: &ClusterSettings,
    retention: Retention,
    notify: Notify,
) -> Result<Bridge, StartError> {
    let url = settings
        .redis_url
        .as_deref()
        .expect("the bridge starts only with CLUSTER_REDIS_URL set");
    let config = RedisConfig::from_url(url).map_err(|e| StartError::Cluster {
        cause: e.details().to_owned(),
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let counters = Arc::new(ClusterCounters::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let shared = counters.clone();
    let partitions = settings.partitions;
    let linger = settings.unsubscribe_linger;
    let thread = std::thread::Builder::new()
        .name("cluster-bridge".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("no runtime for the bridge thread: {e}")));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let state =
                    match State::connect(config, partitions, linger, retention, notify, shared) {
                        Ok(state) => Rc::new(state),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(()));
                state.run(rx).await;
            });
        })
        .map_err(|e| StartError::Cluster {
            cause: format!("cannot start the bridge thread: {e}"),
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Bridge {
            sender: BridgeSender(tx),
            counters,
            thread,
        }),
        Ok(Err(cause)) => Err(StartError::Cluster { cause }),
        Err(_) => Err(StartError::Cluster {
            cause: "the bridge thread ended while starting".to_owned(),
        }),
    }
}

/// Where a subscribed room is.
enum Sync {
    /// Its stream is being read; what is received meanwhile waits, in order. `from`: the epoch and the
    /// last offset handed over before (none for a first load).
    Syncing {
        waiting: Vec<Incoming>,
        from: Option<(Arc<str>, u64)>,
    },
    /// Handed over up to `last`, in `epoch`.
    Live { epoch: Arc<str>, last: u64 },
}

impl Sync {
    fn loading() -> Sync {
        Sync::Syncing {
            waiting: Vec::new(),
            from: None,
        }
    }

    /// From `Live`, to `Syncing` from where it was, with `first` waiting; unchanged if syncing already.
    fn hold(&mut self, first: Option<Incoming>) {
        if let Sync::Live { epoch, last } = self {
            *self = Sync::Syncing {
                waiting: first.into_iter().collect(),
                from: Some((epoch.clone(), *last)),
            };
        } else if let (Sync::Syncing { waiting, .. }, Some(first)) = (self, first) {
            waiting.push(first);
        }
    }
}

/// One room this node is subscribed to.
struct Room {
    home: usize,
    keys: RoomKeys,
    sync: Sync,
    /// Its home shard has its log (a load was answered): what follows is worth handing over.
    loaded: bool,
    /// When its last local member left: it is unsubscribed once the linger has passed.
    released_at: Option<Instant>,
}

/// A publication as the channel delivered it.
struct Incoming {
    epoch: Arc<str>,
    publication: Publication,
}

/// How a room's stream is read before it goes live again.
#[derive(Clone, Copy)]
enum Read {
    /// From scratch: its epoch, last offset and newest publications become the home shard's log.
    Load,
    /// Publications `from..=to` were missed: read them and hand them over.
    Fill { from: u64, to: u64 },
    /// After a reconnect: whatever came after the last offset handed over.
    Resync,
}

struct State {
    commands: Client,
    subscriber: SubscriberClient,
    script: Script,
    sharded: bool,
    partitions: u16,
    linger: Duration,
    retention: Retention,
    notify: Notify,
    counters: Arc<ClusterCounters>,
    rooms: RefCell<HashMap<Arc<str>, Room>>,
}

/// The head of a channel message (the rest is a [`Record`]).
#[derive(Deserialize)]
struct Head {
    offset: u64,
    epoch: String,
}

impl State {
    fn connect(
        config: RedisConfig,
        partitions: u16,
        linger: Duration,
        retention: Retention,
        notify: Notify,
        counters: Arc<ClusterCounters>,
    ) -> Result<State, String> {
        let sharded = config.server.is_clustered();
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|perf| {
                perf.default_command_timeout = COMMAND_TIMEOUT;
                // Messages wait here only while this thread is busy; if it ever falls this far behind,
                // the rooms are resynced from their streams (see `run`).
                perf.broadcast_channel_capacity = 1 << 16;
            })
            .with_connection_config(|connection| {
                connection.connection_timeout = COMMAND_TIMEOUT;
                // One attempt: a publish that fails is answered `unavailable`, never sent twice.
                connection.max_command_attempts = 1;
            })
            .set_policy(reconnect_policy());
        let commands = builder.build().map_err(|e| e.details().to_owned())?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| e.details().to_owned())?;
        // Both keep reconnecting in the background for as long as the node runs (the connection tasks
        // are detached: dropping their handles does not stop them).
        drop(commands.connect());
        drop(subscriber.connect());
        Ok(State {
            commands,
            subscriber,
            script: Script::from_lua(PUBLISH_SCRIPT),
            sharded,
            partitions,
            linger,
            retention,
            notify,
            counters,
            rooms: RefCell::new(HashMap::new()),
        })
    }

    /// Serves the shards' ops and the subscription until every shard has dropped its sender.
    async fn run(self: Rc<Self>, mut ops: UnboundedReceiver<ClusterOp>) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut tick = tokio::time::interval((self.linger / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => self.clone().dispatch(op),
                    None => break,
                },
                message = messages.recv() => match message {
                    Ok(message) => self.receive(&message.channel, &message.value),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "cluster: fell behind the subscription; resyncing rooms from their streams");
                        self.clone().resync_all(false);
                    }
                    Err(RecvError::Closed) => break,
                },
                reconnected = reconnects.recv() => match reconnected {
                    Ok(server) => {
                        tracing::info!(%server, "cluster: subscriber connected; subscribing every room again");
                        self.clone().resync_all(true);
                    }
                    Err(RecvError::Lagged(_)) => self.clone().resync_all(true),
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    self.counters.linked.store(self.subscriber.is_connected(), Ordering::Relaxed);
                    self.clone().unsubscribe_lingering();
                }
            }
        }
        let _ = self.subscriber.quit().await;
        let _ = self.commands.quit().await;
    }

    fn dispatch(self: Rc<Self>, op: ClusterOp) {
        match op {
            ClusterOp::Load { room, home } => {
                tokio::task::spawn_local(self.load(room, home));
            }
            ClusterOp::Release { room } => {
                if let Some(entry) = self.rooms.borrow_mut().get_mut(&room) {
                    entry.released_at = Some(Instant::now());
                }
            }
            ClusterOp::Publish {
                room,
                home,
                request,
            } => {
                tokio::task::spawn_local(self.publish(room, home, request));
            }
        }
    }

    /// Subscribes to `room` if this node is not yet, then reads its stream for `home`.
    async fn load(self: Rc<Self>, room: Arc<str>, home: usize) {
        let subscribe = {
            let mut rooms = self.rooms.borrow_mut();
            match rooms.get_mut(&room) {
                Some(entry) => {
                    entry.released_at = None;
                    entry.home = home;
                    entry.sync.hold(None);
                    None
                }
                None => {
                    let keys = RoomKeys::of(&room, self.partitions);
                    let channel = keys.channel.clone();
                    rooms.insert(
                        room.clone(),
                        Room {
                            home,
                            keys,
                            sync: Sync::loading(),
                            loaded: false,
                            released_at: None,
                        },
                    );
                    Some(channel)
                }
            }
        };
        if let Some(channel) = subscribe {
            // Subscribed before the stream is read, so nothing published in between is missed. If Redis
            // is unreachable the room stays `Syncing` and the reconnect subscribes and loads it.
            if let Err(e) = self.subscribe(vec![channel]).await {
                tracing::warn!(%room, error = %e, "cluster: cannot subscribe yet; will on reconnect");
                return;
            }
        }
        self.read(room, Read::Load).await;
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.ssubscribe(channels).await
        } else {
            self.subscriber.subscribe(channels).await
        }
    }

    /// Reads `room`'s stream as `read` says, hands the home shard what it must have, then what waited.
    async fn read(self: Rc<Self>, room: Arc<str>, read: Read) {
        let Some((keys, before)) = self.rooms.borrow().get(&room).map(|entry| {
            let before = match &entry.sync {
                Sync::Syncing { from, .. } => from.clone(),
                Sync::Live { epoch, last } => Some((epoch.clone(), *last)),
            };
            (entry.keys.clone(), before)
        }) else {
            return; // Unsubscribed meanwhile.
        };
        let outcome = match (read, before) {
            (Read::Fill { from, to }, Some((epoch, _))) => {
                self.read_range(&room, &keys, &epoch, from, to).await
            }
            (Read::Resync, Some(before)) => self.read_since(&room, &keys, before).await,
            _ => self.read_log(&room, &keys).await,
        };
        let (epoch, top) = match outcome {
            Ok(position) => position,
            Err(e) => {
                // Redis went away mid-read: the reconnect resyncs this room.
                tracing::warn!(%room, error = %e, "cluster: reading a room's stream failed; will retry on reconnect");
                return;
            }
        };
        let waiting = {
            let mut rooms = self.rooms.borrow_mut();
            let Some(entry) = rooms.get_mut(&room) else {
                return;
            };
            if matches!(read, Read::Load) {
                entry.loaded = true;
            }
            match std::mem::replace(&mut entry.sync, Sync::Live { epoch, last: top }) {
                Sync::Syncing { waiting, .. } => waiting,
                Sync::Live { .. } => Vec::new(),
            }
        };
        for incoming in waiting {
            self.clone().accept(&room, incoming);
        }
    }

    /// The room's epoch and last offset (creating them if the room has none yet, so that every node
    /// agrees on the epoch before anything is published) and its newest publications, as a log for the
    /// home shard.
    async fn read_log(
        &self,
        room: &Arc<str>,
        keys: &RoomKeys,
    ) -> Result<(Arc<str>, u64), fred::error::Error> {
        let (epoch, top) = self.meta(room, keys).await?;
        let publications = match self.retention.resident() {
            0 => Vec::new(),
            count => {
                let mut newest = self
                    .entries(keys, None, Some(top), Some(count as u64))
                    .await?;
                newest.reverse();
                // Only what runs without a gap up to `top` (what a join can be given).
                let mut expected = top;
                let contiguous = newest
                    .iter()
                    .rev()
                    .take_while(|p| {
                        let ok = p.offset == expected;
                        expected = expected.saturating_sub(1);
                        ok
                    })
                    .count();
                newest.split_off(newest.len() - contiguous)
            }
        };
        let log = RoomLog::restored(
            epoch.clone(),
            top,
            publications.into_iter().map(Arc::new).collect(),
            &self.retention,
        );
        if let Some(home) = self.rooms.borrow().get(room).map(|entry| entry.home) {
            (self.notify)(
                home,
                ClusterEvent::Loaded {
                    room: room.clone(),
                    log,
                },
            );
        }
        Ok((epoch, top))
    }

    /// Hands over publications `from..=to` read from the stream; what it no longer holds is skipped.
    async fn read_range(
        &self,
        room: &Arc<str>,
        keys: &RoomKeys,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<(Arc<str>, u64), fred::error::Error> {
        let found = if self.retention.size > 0 {
            self.entries(keys, Some(from), Some(to), None).await?
        } else {
            Vec::new()
        };
        self.hand_over_range(room, epoch, from, to, found);
        Ok((epoch.clone(), to))
    }

    /// After a reconnect: whatever was published after `last` (a new epoch means the room was lost in
    /// Redis and starts again: loaded afresh).
    async fn read_since(
        &self,
        room: &Arc<str>,
        keys: &RoomKeys,
        (known, last): (Arc<str>, u64),
    ) -> Result<(Arc<str>, u64), fred::error::Error> {
        let (epoch, top) = self.meta(room, keys).await?;
        if known != epoch {
            return self.read_log(room, keys).await;
        }
        if top <= last {
            return Ok((epoch, last));
        }
        let found = if self.retention.size > 0 {
            self.entries(keys, Some(last + 1), Some(top), None).await?
        } else {
            Vec::new()
        };
        self.hand_over_range(room, &epoch, last + 1, top, found);
        Ok((epoch, top))
    }

    /// Hands `found` (publications read from the stream) to the home shard for `from..=to`, and says
    /// which could not be found.
    fn hand_over_range(
        &self,
        room: &Arc<str>,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
        found: Vec<Publication>,
    ) {
        let Some(home) = self.rooms.borrow().get(room).map(|entry| entry.home) else {
            return;
        };
        let mut next = from;
        for publication in found {
            if publication.offset < next || publication.offset > to {
                continue;
            }
            if publication.offset > next {
                (self.notify)(
                    home,
                    ClusterEvent::Skipped {
                        room: room.clone(),
                        from: next,
                        to: publication.offset - 1,
                    },
                );
            }
            next = publication.offset + 1;
            self.counters.gap_filled.fetch_add(1, Ordering::Relaxed);
            (self.notify)(
                home,
                ClusterEvent::Publication {
                    room: room.clone(),
                    epoch: epoch.clone(),
                    publication,
                },
            );
        }
        if next <= to {
            (self.notify)(
                home,
                ClusterEvent::Skipped {
                    room: room.clone(),
                    from: next,
                    to,
                },
            );
        }
    }

    /// The room's epoch and last offset, created (epoch new, offset 0) if the room has none in Redis.
    async fn meta(
        &self,
        room: &str,
        keys: &RoomKeys,
    ) -> Result<(Arc<str>, u64), fred::error::Error> {
        let created: bool = self
            .commands
            .hsetnx(&keys.meta, "epoch", &*new_epoch(room))
            .await?;
        if created {
            if let Some(ttl) = self.retention.ttl_ms {
                let _: () = self.commands.pexpire(&keys.meta, ttl as i64, None).await?;
            }
        }
        let (epoch, offset): (Option<String>, Option<u64>) = self
            .commands
            .hmget(&keys.meta, vec!["epoch", "offset"])
            .await?;
        let epoch = epoch.unwrap_or_default();
        Ok((Arc::from(epoch), offset.unwrap_or(0)))
    }

    /// Stream entries between two offsets (inclusive; `None`: open), oldest first, or newest first when
    /// `count` is given (then from `to` down).
    async fn entries(
        &self,
        keys: &RoomKeys,
        from: Option<u64>,
        to: Option<u64>,
        count: Option<u64>,
    ) -> Result<Vec<Publication>, fred::error::Error> {
        let start = from.map_or("-".to_owned(), |from| format!("{from}-0"));
        let end = to.map_or("+".to_owned(), |to| format!("{to}-0"));
        let entries: Vec<(String, HashMap<String, String>)> = match count {
            Some(count) => {
                self.commands
                    .xrevrange_values(&keys.stream, end, start, Some(count))
                    .await?
            }
            None => {
                self.commands
                    .xrange_values(&keys.stream, start, end, None)
                    .await?
            }
        };
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let offset = id.split_once('-')?.0.parse().ok()?;
                let record: Record<'_> = serde_json::from_str(fields.get("p")?).ok()?;
                Some(record.into_publication(offset))
            })
            .collect())
    }

    /// A message from the subscription.
    fn receive(self: &Rc<Self>, channel: &str, value: &Value) {
        let Some(room) = room_of_channel(channel) else {
            return;
        };
        let Some(bytes) = value.as_bytes() else {
            return;
        };
        let (Ok(head), Ok(record)) = (
            serde_json::from_slice::<Head>(bytes),
            serde_json::from_slice::<Record<'_>>(bytes),
        ) else {
            tracing::warn!(%room, "cluster: a message on a room's channel is not a publication; ignored");
            return;
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let room: Arc<str> = match self.rooms.borrow().get_key_value(room) {
            Some((name, _)) => name.clone(),
            None => return, // Unsubscribed since.
        };
        let incoming = Incoming {
            epoch: Arc::from(head.epoch),
            publication: record.into_publication(head.offset),
        };
        self.clone().accept(&room, incoming);
    }

    /// Hands `incoming` over if it follows what was, waits it while the room syncs, drops a repeat, and
    /// reads what was missed before it.
    fn accept(self: Rc<Self>, room: &Arc<str>, incoming: Incoming) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let offset = incoming.publication.offset;
        let read = match &mut entry.sync {
            Sync::Syncing { waiting, .. } => {
                waiting.push(incoming);
                None
            }
            Sync::Live { epoch, .. } if *epoch != incoming.epoch => {
                // The room was lost in Redis and started again: load it afresh.
                entry.sync = Sync::Syncing {
                    waiting: vec![incoming],
                    from: None,
                };
                Some(Read::Load)
            }
            Sync::Live { last, .. } if offset <= *last => None,
            Sync::Live { last, .. } if offset > *last + 1 => {
                let from = *last + 1;
                entry.sync.hold(Some(incoming));
                Some(Read::Fill {
                    from,
                    to: offset - 1,
                })
            }
            Sync::Live { epoch, last } => {
                *last = offset;
                if entry.loaded {
                    (self.notify)(
                        entry.home,
                        ClusterEvent::Publication {
                            room: room.clone(),
                            epoch: epoch.clone(),
                            publication: incoming.publication,
                        },
                    );
                }
                None
            }
        };
        drop(rooms);
        if let Some(read) = read {
            tokio::task::spawn_local(self.read(room.clone(), read));
        }
    }

    /// After a reconnect (`subscribe`: subscribe every room again first) or falling behind: every room
    /// reads what it missed.
    fn resync_all(self: Rc<Self>, subscribe: bool) {
        tokio::task::spawn_local(async move {
            let mut by_partition: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let rooms: Vec<(Arc<str>, bool)> = {
                let mut rooms = self.rooms.borrow_mut();
                for entry in rooms.values_mut() {
                    let channel = &entry.keys.channel;
                    let tag = channel[..=channel.find('}').unwrap_or(0)].to_owned();
                    by_partition.entry(tag).or_default().push(channel.clone());
                    // What arrives waits until the room has caught up.
                    entry.sync.hold(None);
                }
                rooms
                    .iter()
                    .map(|(name, entry)| (name.clone(), entry.loaded))
                    .collect()
            };
            if subscribe {
                // One command per partition: in a Redis Cluster a partition is one hash slot, and a
                // multi-slot SSUBSCRIBE would be refused (CROSSSLOT).
                for (_, channels) in by_partition {
                    if let Err(e) = self.subscribe(channels).await {
                        tracing::warn!(error = %e, "cluster: resubscribing failed; will retry on the next reconnect");
                        return;
                    }
                }
            }
            for (room, loaded) in rooms {
                let read = if loaded { Read::Resync } else { Read::Load };
                tokio::task::spawn_local(self.clone().read(room, read));
            }
        });
    }

    /// Unsubscribes the rooms whose last local member left longer than the linger ago.
    fn unsubscribe_lingering(self: Rc<Self>) {
        let now = Instant::now();
        let expired: Vec<String> = {
            let mut rooms = self.rooms.borrow_mut();
            let gone: Vec<Arc<str>> = rooms
                .iter()
                .filter(|(_, entry)| {
                    entry
                        .released_at
                        .is_some_and(|at| now.duration_since(at) >= self.linger)
                })
                .map(|(name, _)| name.clone())
                .collect();
            gone.iter()
                .filter_map(|name| rooms.remove(name))
                .map(|entry| entry.keys.channel)
                .collect()
        };
        if expired.is_empty() {
            return;
        }
        tokio::task::spawn_local(async move {
            for channel in expired {
                let result = if self.sharded {
                    self.subscriber.sunsubscribe(channel).await
                } else {
                    self.subscriber.unsubscribe(channel).await
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cluster: unsubscribe failed (the link is down: nothing to undo)");
                }
            }
        });
    }

    /// Runs the publish script for `room` and tells its home shard how it went.
    async fn publish(self: Rc<Self>, room: Arc<str>, home: usize, request: PublishRequest) {
        let PublishRequest {
            text,
            from,
            options: PublishOptions { id, tag },
            to,
        } = request;
        if !self.commands.is_connected() {
            self.publish_failed(room, home, to, tag);
            return;
        }
        let keys = RoomKeys::of(&room, self.partitions);
        let id_key = match &id {
            // The same rule as one node's ids (`Publication::id_key`): a signed-in user's ids are its own.
            Some(id) if from.is_user => format!("{}{}\u{1f}{id}", keys.id_prefix, from.name),
            Some(id) => format!("{}{id}", keys.id_prefix),
            None => keys.id_prefix.clone(),
        };
        let args: Vec<String> = vec![
            keys.channel.clone(),
            text,
            from.name,
            if from.is_user { "1" } else { "0" }.to_owned(),
            id.unwrap_or_default(),
            self.retention.size.to_string(),
            self.retention.ttl_ms.unwrap_or(0).to_string(),
            new_epoch(&room).to_string(),
            if self.sharded { "1" } else { "0" }.to_owned(),
        ];
        let result: Result<(u64, String, u8), _> = self
            .script
            .evalsha_with_reload(&self.commands, vec![keys.meta, keys.stream, id_key], args)
            .await;
        match result {
            Ok((offset, epoch, duplicate)) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                (self.notify)(
                    home,
                    ClusterEvent::Published {
                        room,
                        epoch: Arc::from(epoch),
                        offset,
                        duplicate: duplicate == 1,
                        to,
                        tag,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(%room, error = %e, "cluster: publish failed");
                self.publish_failed(room, home, to, tag);
            }
        }
    }

    fn publish_failed(
        &self,
        room: Arc<str>,
        home: usize,
        to: Option<ReplyTo>,
        tag: Option<String>,
    ) {
        self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
        (self.notify)(home, ClusterEvent::PublishFailed { room, to, tag });
    }
}
