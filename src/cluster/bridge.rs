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
//! It also keeps this node's members of each room in the room's presence in Redis (written on join,
//! removed on leave, refreshed every third of the TTL, all removed as the node stops) and reads the other
//! nodes' members for a presence request.
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
    ClientLike, ClusterInterface, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
    SortedSetsInterface, StreamsInterface,
};
use fred::types::config::Server;
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::{Builder, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    room_of_channel, BridgeSender, ClusterCounters, ClusterEvent, ClusterOp, RoomKeys,
    PRESENCE_SCRIPT, PUBLISH_SCRIPT,
};
use crate::config::ClusterSettings;
use crate::error::StartError;
use crate::history::{new_epoch, Publication, PublishOptions, Record, Retention, RoomLog};
use crate::replies::Member;
use crate::session_state::SessionId;
use crate::shard::home::{Asker, PublishRequest};
use crate::ws::encode::DataKind;

/// How the bridge reaches a home shard: `(shard, event)`.
pub(crate) type Notify = Box<dyn Fn(usize, ClusterEvent) + Send>;

/// How long a Redis command may take before it fails: a publish while Redis is unreachable is answered
/// `unavailable` within this, not held.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a node in a Redis Cluster asks which master serves which slot (see
/// [`State::check_topology`]).
const TOPOLOGY_CHECK: Duration = Duration::from_secs(1);

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

/// Starts the bridge for `settings` (whose `redis_url` is set), waiting up to [`COMMAND_TIMEOUT`] for
/// Redis to answer. Fails only when the URL cannot be used; a Redis that does not answer yet is retried in
/// the background while the node serves its own sessions.
pub(crate) fn start(
    settings: &ClusterSettings,
    retention: Retention,
    presence_events: bool,
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
    let settings = settings.clone();
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
                let connected =
                    State::connect(config, &settings, retention, presence_events, notify, shared);
                let state = match connected {
                        Ok(state) => Rc::new(state),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                // A node whose Redis answers starts ready to publish: connected, the script loaded
                // (else its first publishes would be refused `unavailable`). One whose Redis does not
                // answer starts anyway, after this wait, and joins once Redis is up.
                let ready = tokio::time::timeout(COMMAND_TIMEOUT, async {
                    state.commands.wait_for_connect().await?;
                    state.subscriber.wait_for_connect().await?;
                    state.script.load(&state.commands).await?;
                    state.presence_script.load(&state.commands).await?;
                    if state.sharded {
                        // Which master serves which slot now: a failover from here on is noticed.
                        state.clone().check_topology().await;
                    }
                    Ok::<(), fred::error::Error>(())
                })
                .await;
                if !matches!(ready, Ok(Ok(()))) {
                    tracing::warn!("cluster: Redis does not answer yet; serving this node's sessions and retrying");
                }
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
    /// last offset handed over before (none before its first load).
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

    /// The epoch and last offset handed over, if any.
    fn position(&self) -> Option<(Arc<str>, u64)> {
        match self {
            Sync::Syncing { from, .. } => from.clone(),
            Sync::Live { epoch, last } => Some((epoch.clone(), *last)),
        }
    }

    /// From `Live`, to `Syncing` from where it was; unchanged if syncing already.
    fn hold(&mut self) {
        if let Sync::Live { epoch, last } = self {
            *self = Sync::Syncing {
                waiting: Vec::new(),
                from: Some((epoch.clone(), *last)),
            };
        }
    }
}

/// Where a batched subscribe tells a room's read how it went.
type SubscribeDone = tokio::sync::oneshot::Sender<Result<(), fred::error::Error>>;

/// The most channels one subscribe or unsubscribe command names.
const CHANNELS_PER_COMMAND: usize = 512;

/// The partition part of a room's channel (`roomcast:{pN}`), which every channel of one partition shares.
fn partition_of(channel: &str) -> &str {
    &channel[..=channel.find('}').unwrap_or(0)]
}

/// `channels` split so that each part is one command: by partition in a Redis Cluster (`sharded`: a
/// partition is one hash slot, and a command over several slots is refused with `CROSSSLOT`), at most
/// [`CHANNELS_PER_COMMAND`] each.
fn command_groups<T>(sharded: bool, channels: Vec<(String, T)>) -> Vec<Vec<(String, T)>> {
    let mut by_partition: BTreeMap<String, Vec<(String, T)>> = BTreeMap::new();
    for (channel, with) in channels {
        let key = match sharded {
            true => partition_of(&channel).to_owned(),
            false => String::new(),
        };
        by_partition.entry(key).or_default().push((channel, with));
    }
    let mut groups = Vec::new();
    for mut group in by_partition.into_values() {
        while group.len() > CHANNELS_PER_COMMAND {
            let rest = group.split_off(CHANNELS_PER_COMMAND);
            groups.push(std::mem::replace(&mut group, rest));
        }
        groups.push(group);
    }
    groups
}

/// Messages one room may have waiting while its stream is read; past it they are dropped and read back
/// from the stream instead, so a read that cannot finish (Redis half-down) does not grow memory.
const MAX_WAITING: usize = 4096;

/// One room this node is subscribed to.
struct Room {
    home: usize,
    keys: RoomKeys,
    sync: Sync,
    /// Its channel is subscribed (false until the SUBSCRIBE succeeded, and again after a reconnect).
    subscribed: bool,
    /// A read of its stream is running; `next` is what to read once it is done.
    reading: bool,
    next: Option<Read>,
    /// When its last local member left: it is unsubscribed once the linger has passed.
    released_at: Option<Instant>,
    /// Which subscription of the room this is: a read started for one that was unsubscribed since must
    /// not act on the next one.
    generation: u64,
}

/// A publication as the channel delivered it.
struct Incoming {
    epoch: Arc<str>,
    publication: Publication,
}

/// How a room's stream is read before it goes live again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Publications `from..=to` were missed: read them and hand them over.
    Fill { from: u64, to: u64 },
    /// Whatever came after the last offset handed over (after a reconnect, or messages dropped while
    /// waiting).
    Resync,
    /// As `Resync`, and the home shard gets the room's log first ([`ClusterEvent::Loaded`]): its first
    /// member here, or a join that needs what the home's memory dropped.
    Load,
}

impl Read {
    /// One read that does what both would: a load covers a resync, which covers a fill.
    fn merge(self, other: Option<Read>) -> Read {
        match other {
            Some(Read::Load) => Read::Load,
            Some(Read::Resync) if self != Read::Load => Read::Resync,
            Some(Read::Fill { .. }) | Some(Read::Resync) | None => self,
        }
    }
}

struct State {
    commands: Client,
    subscriber: SubscriberClient,
    script: Script,
    presence_script: Script,
    sharded: bool,
    partitions: u16,
    linger: Duration,
    /// This node's name in presence (random, new at each start).
    node: Arc<str>,
    presence_ttl: Duration,
    presence_events: bool,
    /// This node's members per room, each with its entry as written in the room's presence in Redis.
    members: RefCell<HashMap<Arc<str>, RoomMembers>>,
    /// The node is stopping: presence is no longer refreshed.
    stopping: std::cell::Cell<bool>,
    /// Presence writes not finished yet: a node that stops waits for them (see `run`).
    presence_writes: std::cell::Cell<usize>,
    presence_written: tokio::sync::Notify,
    retention: Retention,
    notify: Notify,
    counters: Arc<ClusterCounters>,
    rooms: RefCell<HashMap<Arc<str>, Room>>,
    /// The last [`Room::generation`] given.
    generations: std::cell::Cell<u64>,
    /// Redis Cluster: which master served each range of slots at the last check.
    topology: RefCell<Option<Vec<(u16, u16, Server)>>>,
    /// A topology check is running.
    checking: std::cell::Cell<bool>,
    /// `CLUSTER_PUBLISH_BATCH_US`, and the publishes gathered for the next batch.
    publish_batch: Option<Duration>,
    publish_queue: RefCell<Vec<(Arc<str>, usize, PublishRequest)>>,
    /// Channels to subscribe with the next batch, each with who waits for the outcome.
    subscribe_queue: RefCell<Vec<(String, SubscribeDone)>>,
}

/// The head of a channel message (the rest is a [`Record`]).
#[derive(Deserialize)]
struct Head {
    offset: u64,
    epoch: String,
}

/// A raw broadcast as it travels on a room's channel: a zero byte (no JSON message starts with one), `t`
/// or `b` for text or binary, the length of the sending node's name in one byte, the name, then the
/// payload as it is: binary needs no escaping, and text none either.
struct RawMessage<'a> {
    node: &'a str,
    kind: DataKind,
    payload: &'a [u8],
}

impl<'a> RawMessage<'a> {
    fn encode(node: &str, kind: DataKind, payload: &[u8]) -> Vec<u8> {
        let node = &node.as_bytes()[..node.len().min(255)];
        let mut out = Vec::with_capacity(3 + node.len() + payload.len());
        out.push(0);
        out.push(match kind {
            DataKind::Text => b't',
            DataKind::Binary => b'b',
        });
        out.push(node.len() as u8);
        out.extend_from_slice(node);
        out.extend_from_slice(payload);
        out
    }

    fn decode(bytes: &'a [u8]) -> Option<RawMessage<'a>> {
        let [0, kind, len, rest @ ..] = bytes else {
            return None;
        };
        let kind = match kind {
            b't' => DataKind::Text,
            b'b' => DataKind::Binary,
            _ => return None,
        };
        let (node, payload) = rest.split_at_checked(usize::from(*len))?;
        if kind == DataKind::Text && std::str::from_utf8(payload).is_err() {
            return None;
        }
        Some(RawMessage {
            node: std::str::from_utf8(node).ok()?,
            kind,
            payload,
        })
    }
}

/// This node's members of one room: each one's entry, and the entry as written in Redis (what a leave
/// removes).
type RoomMembers = HashMap<SessionId, (PresenceEntry, String)>;

/// A member in a room's presence in Redis (and, with a `presence` field, a [`Notice`]).
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct PresenceEntry {
    node: String,
    session: u64,
    user: String,
}

impl PresenceEntry {
    fn into_member(self) -> Member {
        Member {
            session: SessionId(self.session),
            user: self.user,
            node: Some(self.node),
        }
    }
}

/// A member of another node joined or left a room (`PRESENCE_EVENTS`), told on the room's channel.
#[derive(Serialize, Deserialize, Debug)]
struct Notice {
    presence: Change,
    #[serde(flatten)]
    member: PresenceEntry,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Change {
    Joined,
    Left,
}

impl State {
    fn connect(
        mut config: RedisConfig,
        settings: &ClusterSettings,
        retention: Retention,
        presence_events: bool,
        notify: Notify,
        counters: Arc<ClusterCounters>,
    ) -> Result<State, String> {
        let sharded = config.server.is_clustered();
        // Keep trying when Redis does not answer at start-up, as after any later loss (fred's default
        // gives up after the first attempt, and the node would never join the cluster).
        config.fail_fast = false;
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
        let node = new_epoch(&format!("node {}", std::process::id()));
        tracing::info!(%node, "cluster: this node's name in presence");
        Ok(State {
            commands,
            subscriber,
            script: Script::from_lua(PUBLISH_SCRIPT),
            presence_script: Script::from_lua(PRESENCE_SCRIPT),
            sharded,
            partitions: settings.partitions,
            linger: settings.unsubscribe_linger,
            node,
            presence_ttl: settings.presence_ttl,
            presence_events,
            members: RefCell::new(HashMap::new()),
            presence_writes: std::cell::Cell::new(0),
            stopping: std::cell::Cell::new(false),
            presence_written: tokio::sync::Notify::new(),
            retention,
            notify,
            counters,
            rooms: RefCell::new(HashMap::new()),
            generations: std::cell::Cell::new(0),
            topology: RefCell::new(None),
            checking: std::cell::Cell::new(false),
            subscribe_queue: RefCell::new(Vec::new()),
            publish_batch: settings.publish_batch,
            publish_queue: RefCell::new(Vec::new()),
        })
    }

    /// Serves the shards' ops and the subscription until every shard has dropped its sender.
    async fn run(self: Rc<Self>, mut ops: UnboundedReceiver<ClusterOp>) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut command_reconnects = self.commands.reconnect_rx();
        let mut tick = tokio::time::interval((self.linger / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.presence_ttl / 3);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut topology = tokio::time::interval(TOPOLOGY_CHECK);
        topology.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                reconnected = command_reconnects.recv() => match reconnected {
                    // Loaded before any publish can need it: a publish that met NOSCRIPT and was retried
                    // after the load could land after one sent later (see `publish`).
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let state = self.clone();
                        tokio::task::spawn_local(async move {
                            if let Err(e) = state.script.load(&state.commands).await {
                                tracing::warn!(error = %e, "cluster: loading the publish script failed");
                            }
                            // Redis may have lost this node's members (a restart without them).
                            state.refresh_presence();
                        });
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = refresh.tick() => self.clone().refresh_presence(),
                _ = topology.tick(), if self.sharded && !self.checking.get() => {
                    tokio::task::spawn_local(self.clone().check_topology());
                }
                _ = tick.tick() => {
                    let linked = self.subscriber.is_connected() && self.commands.is_connected();
                    self.counters.linked.store(linked, Ordering::Relaxed);
                    self.clone().unsubscribe_lingering();
                }
            }
        }
        self.leave_presence().await;
        let _ = self.subscriber.quit().await;
        let _ = self.commands.quit().await;
    }

    fn dispatch(self: Rc<Self>, op: ClusterOp) {
        match op {
            ClusterOp::Load { room, home } => {
                {
                    let mut rooms = self.rooms.borrow_mut();
                    let generation = self.generations.get() + 1;
                    let entry = rooms.entry(room.clone()).or_insert_with(|| {
                        self.generations.set(generation);
                        Room {
                            home,
                            keys: RoomKeys::of(&room, self.partitions),
                            sync: Sync::loading(),
                            subscribed: false,
                            reading: false,
                            next: None,
                            released_at: None,
                            generation,
                        }
                    });
                    entry.released_at = None;
                    entry.home = home;
                }
                self.request_read(&room, Read::Load);
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
            } => match self.publish_batch {
                None => {
                    tokio::task::spawn_local(self.publish(room, home, request));
                }
                Some(window) => {
                    let first = {
                        let mut queue = self.publish_queue.borrow_mut();
                        queue.push((room, home, request));
                        queue.len() == 1
                    };
                    if first {
                        tokio::task::spawn_local(self.flush_publishes(window));
                    }
                }
            },
            ClusterOp::Broadcast {
                room,
                kind,
                payload,
            } => {
                tokio::task::spawn_local(self.broadcast(room, kind, payload));
            }
            ClusterOp::MemberJoined { room, member } => {
                let entry = PresenceEntry {
                    node: self.node.to_string(),
                    session: member.session.0,
                    user: member.user,
                };
                let written = serde_json::to_string(&entry).unwrap_or_default();
                self.members
                    .borrow_mut()
                    .entry(room.clone())
                    .or_default()
                    .insert(member.session, (entry.clone(), written.clone()));
                self.presence_write(room, entry, written, Change::Joined);
            }
            ClusterOp::MemberLeft { room, session } => {
                let left = {
                    let mut members = self.members.borrow_mut();
                    let Some(here) = members.get_mut(&room) else {
                        return;
                    };
                    let left = here.remove(&session);
                    if here.is_empty() {
                        members.remove(&room);
                    }
                    left
                };
                if let Some((entry, written)) = left {
                    self.presence_write(room, entry, written, Change::Left);
                }
            }
            ClusterOp::Presence {
                room,
                home,
                to,
                tag,
            } => {
                tokio::task::spawn_local(self.presence(room, home, to, tag));
            }
        }
    }

    /// Publishes a raw broadcast of this node on `room`'s channel, as a [`RawMessage`]. Redis unreachable,
    /// the room's members on other nodes miss it (a raw broadcast has no offset to recover it by; this
    /// node's members had it already).
    async fn broadcast(self: Rc<Self>, room: Arc<str>, kind: DataKind, payload: Box<[u8]>) {
        if !self.commands.is_connected() {
            self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let keys = RoomKeys::of(&room, self.partitions);
        let message = RawMessage::encode(&self.node, kind, &payload);
        let sent: Result<i64, _> = if self.sharded {
            self.commands.spublish(&keys.channel, message).await
        } else {
            self.commands.publish(&keys.channel, message).await
        };
        match sent {
            Ok(_) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%room, error = %e, "cluster: a raw broadcast reached only this node's members");
            }
        }
    }

    // ---- Presence. ----

    /// Writes one member's join or leave into its room's presence in Redis and, with
    /// `PRESENCE_EVENTS`, tells the other nodes on the room's channel, in one script call: a node's
    /// changes to a room reach Redis and the other nodes in the order it made them. Failing (Redis
    /// unreachable, the script not loaded there yet), the join is written by the next refresh (without
    /// its notice); a leave is not needed then: the member expires.
    fn presence_write(
        self: Rc<Self>,
        room: Arc<str>,
        member: PresenceEntry,
        written: String,
        change: Change,
    ) {
        self.presence_writes.set(self.presence_writes.get() + 1);
        tokio::task::spawn_local(async move {
            let keys = RoomKeys::of(&room, self.partitions);
            let notice = match self.presence_events {
                true => serde_json::to_string(&Notice {
                    presence: change,
                    member,
                })
                .unwrap_or_default(),
                false => String::new(),
            };
            let mode = match change {
                Change::Joined => "join",
                Change::Left => "leave",
            };
            let args = vec![
                mode.to_owned(),
                self.presence_ttl.as_millis().to_string(),
                written,
                keys.channel.clone(),
                notice,
                if self.sharded { "1" } else { "0" }.to_owned(),
            ];
            let result = self.presence_script_call(&keys, args).await;
            if let Err(e) = result {
                tracing::debug!(%room, error = %e, "cluster: a presence change was not written (the next refresh writes what is)");
            }
            self.presence_writes.set(self.presence_writes.get() - 1);
            if self.presence_writes.get() == 0 {
                self.presence_written.notify_waiters();
            }
        });
    }

    /// Runs the presence script on `keys`' room with `args`: `EVALSHA` only, never a reload and a
    /// second try that could land after a change sent later. A script Redis does not have (restarted, a
    /// replica promoted) is loaded for next time, and the refresh repairs what was missed.
    async fn presence_script_call(
        self: &Rc<Self>,
        keys: &RoomKeys,
        args: Vec<String>,
    ) -> Result<(), fred::error::Error> {
        let result = self
            .presence_script
            .evalsha(&self.commands, vec![keys.presence.clone()], args)
            .await;
        if let Err(e) = &result {
            self.load_scripts_on_noscript(e);
        }
        result
    }

    /// Gives `members` (this node's, in `keys`' room) a new expiry, and removes the members whose
    /// nodes stopped refreshing them. Not once the node is stopping: its members are being taken out.
    async fn refresh_room(
        self: &Rc<Self>,
        keys: &RoomKeys,
        members: Vec<String>,
    ) -> Result<(), fred::error::Error> {
        if self.stopping.get() {
            return Ok(());
        }
        let mut args = vec![
            "refresh".to_owned(),
            self.presence_ttl.as_millis().to_string(),
        ];
        args.extend(members);
        self.presence_script_call(keys, args).await
    }

    /// Every third of the TTL: this node's members of every room get a new expiry (one script per room,
    /// sent together).
    fn refresh_presence(self: Rc<Self>) {
        let rooms: Vec<(Arc<str>, Vec<String>)> = self
            .members
            .borrow()
            .iter()
            .map(|(room, members)| {
                let written = members.values().map(|(_, written)| written.clone());
                (room.clone(), written.collect())
            })
            .collect();
        for (room, members) in rooms {
            let state = self.clone();
            tokio::task::spawn_local(async move {
                let keys = RoomKeys::of(&room, state.partitions);
                if let Err(e) = state.refresh_room(&keys, members).await {
                    tracing::debug!(%room, error = %e, "cluster: refreshing presence failed; trying at the next refresh");
                }
            });
        }
    }

    /// The members of `room` on other nodes, for the home shard to answer `to`.
    async fn presence(self: Rc<Self>, room: Arc<str>, home: usize, to: Asker, tag: Option<String>) {
        let others = if self.commands.is_connected() {
            let keys = RoomKeys::of(&room, self.partitions);
            let read: Result<Vec<String>, _> = self
                .presence_script
                .evalsha_with_reload(&self.commands, vec![keys.presence], vec!["read"])
                .await;
            match read {
                Ok(entries) => {
                    let mut others: Vec<PresenceEntry> = entries
                        .iter()
                        .filter_map(|entry| serde_json::from_str::<PresenceEntry>(entry).ok())
                        .filter(|entry| *entry.node != *self.node)
                        .collect();
                    others.sort_by(|a, b| (&a.node, a.session).cmp(&(&b.node, b.session)));
                    Some(others.into_iter().map(PresenceEntry::into_member).collect())
                }
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cluster: reading presence failed; answering with this node's members");
                    None
                }
            }
        } else {
            None
        };
        (self.notify)(
            home,
            ClusterEvent::Presence {
                room,
                others,
                to,
                tag,
            },
        );
    }

    /// As the node stops: waits for the presence writes under way, then takes what is left of this
    /// node's members out of Redis, so that they do not linger until they expire (at most
    /// [`COMMAND_TIMEOUT`] in all).
    async fn leave_presence(self: &Rc<Self>) {
        self.stopping.set(true);
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            while self.presence_writes.get() > 0 {
                self.presence_written.notified().await;
            }
            let rooms = std::mem::take(&mut *self.members.borrow_mut());
            // All sent at once (pipelined), then waited for.
            let removals: Vec<_> = rooms
                .into_iter()
                .map(|(room, members)| {
                    let state = self.clone();
                    tokio::task::spawn_local(async move {
                        let keys = RoomKeys::of(&room, state.partitions);
                        let members: Vec<String> =
                            members.into_values().map(|(_, written)| written).collect();
                        let _: Result<i64, _> = state.commands.zrem(&keys.presence, members).await;
                    })
                })
                .collect();
            for removal in removals {
                let _ = removal.await;
            }
        })
        .await;
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<(), fred::error::Error> {
        if self.sharded {
            self.subscriber.ssubscribe(channels).await
        } else {
            self.subscriber.subscribe(channels).await
        }
    }

    /// Subscribes `channel` together with the others asked for in the same turn of the bridge (rooms
    /// loaded at once: a node starting, many clients coming back): one command per partition, not one
    /// per room.
    async fn subscribe_batched(self: &Rc<Self>, channel: String) -> Result<(), fred::error::Error> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let first = {
            let mut queue = self.subscribe_queue.borrow_mut();
            queue.push((channel, done));
            queue.len() == 1
        };
        if first {
            tokio::task::spawn_local(self.clone().flush_subscribes());
        }
        outcome.await.unwrap_or_else(|_| {
            Err(fred::error::Error::new(
                fred::error::ErrorKind::Canceled,
                "the bridge stopped",
            ))
        })
    }

    /// Sends the queued subscribes, once the rest of this turn's loads have joined them.
    async fn flush_subscribes(self: Rc<Self>) {
        tokio::task::yield_now().await;
        let queued = std::mem::take(&mut *self.subscribe_queue.borrow_mut());
        for group in command_groups(self.sharded, queued) {
            let (channels, waiting): (Vec<String>, Vec<SubscribeDone>) = group.into_iter().unzip();
            let outcome = self.subscribe(channels).await;
            for done in waiting {
                let _ = done.send(outcome.clone());
            }
        }
    }

    /// Reads `room`'s stream as `read` says, unless a read of it is running: then once that one is done
    /// (one read at a time per room, so that two never hand over the same stretch or race to go live).
    fn request_read(self: Rc<Self>, room: &Arc<str>, read: Read) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        entry.sync.hold();
        if entry.reading {
            entry.next = Some(read.merge(entry.next));
            return;
        }
        entry.reading = true;
        let generation = entry.generation;
        drop(rooms);
        tokio::task::spawn_local(self.reads(room.clone(), generation, read));
    }

    /// Runs `read`, then whatever was asked meanwhile, then hands over what waited and goes live. A
    /// read that fails (Redis unreachable, a command timed out) is tried again, backing off to 2 s, for
    /// as long as the room is subscribed here.
    async fn reads(self: Rc<Self>, room: Arc<str>, generation: u64, mut read: Read) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some((keys, subscribed, before)) = self
                .rooms
                .borrow()
                .get(&room)
                .filter(|entry| entry.generation == generation)
                .map(|entry| (entry.keys.clone(), entry.subscribed, entry.sync.position()))
            else {
                return; // Unsubscribed meanwhile.
            };
            // Subscribed before the stream is read, so that nothing published in between is missed.
            let outcome = match subscribed {
                true => Ok(()),
                false => self.subscribe_batched(keys.channel.clone()).await,
            };
            let outcome = match outcome {
                Ok(()) => {
                    if let Some(entry) = self.rooms.borrow_mut().get_mut(&room) {
                        entry.subscribed |= entry.generation == generation;
                    }
                    self.read_once(&room, &keys, read, before).await
                }
                Err(e) => Err(e),
            };
            let position = match outcome {
                Ok(position) => position,
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cluster: reading a room's stream failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let waiting = {
                let mut rooms = self.rooms.borrow_mut();
                let Some(entry) = rooms
                    .get_mut(&room)
                    .filter(|entry| entry.generation == generation)
                else {
                    return;
                };
                if let Some(next) = entry.next.take() {
                    // Asked for meanwhile: from where this read left the room.
                    if let Sync::Syncing { from, .. } = &mut entry.sync {
                        *from = Some(position);
                    }
                    read = next;
                    continue;
                }
                entry.reading = false;
                let (epoch, top) = position;
                match std::mem::replace(&mut entry.sync, Sync::Live { epoch, last: top }) {
                    Sync::Syncing { waiting, .. } => waiting,
                    Sync::Live { .. } => Vec::new(),
                }
            };
            for incoming in waiting {
                self.clone().accept(&room, incoming);
            }
            return;
        }
    }

    /// One read of `room`'s stream, `before` being the epoch and last offset handed over until now.
    /// Returns where the room is once what was read has been handed over.
    async fn read_once(
        &self,
        room: &Arc<str>,
        keys: &RoomKeys,
        read: Read,
        before: Option<(Arc<str>, u64)>,
    ) -> Result<(Arc<str>, u64), fred::error::Error> {
        if let (Read::Fill { from, to }, Some((epoch, last))) = (read, &before) {
            let from = from.max(last + 1);
            if from <= to {
                self.hand_over_stream(room, keys, epoch, from, to).await?;
            }
            return Ok((epoch.clone(), (*last).max(to)));
        }
        let (epoch, top) = self.meta(room, keys).await?;
        match before {
            // The first load: the room's log as it is.
            None => {
                let log = self.read_log(keys, &epoch, top).await?;
                self.post_loaded(room, log);
            }
            Some((known, last)) if known == epoch => {
                if read == Read::Load {
                    // A home that still has its log keeps it (it ends at `last`) and takes older
                    // publications from this one; a home that had dropped it takes this one and
                    // ignores what follows, up to `top`, as repeats.
                    let log = self.read_log(keys, &epoch, top).await?;
                    self.post_loaded(room, log);
                }
                if top > last {
                    self.hand_over_stream(room, keys, &epoch, last + 1, top)
                        .await?;
                } else if top < last {
                    // Redis went back in the same epoch (restored from an older snapshot, or a
                    // replica that lagged took over): what it numbers again is dropped as repeats
                    // here until it passes `last`.
                    tracing::error!(%room, last, top, "cluster: Redis holds fewer publications of the room than were delivered; Redis lost writes");
                    return Ok((epoch, last));
                }
            }
            // A new epoch: the room's history was lost in Redis and it started again. The home starts
            // a fresh log and gets every publication of the new epoch, fanned out to its members.
            Some(_) => {
                self.post_loaded(
                    room,
                    RoomLog::restored(epoch.clone(), 0, Vec::new(), &self.retention),
                );
                if top > 0 {
                    self.hand_over_stream(room, keys, &epoch, 1, top).await?;
                }
            }
        }
        Ok((epoch, top))
    }

    fn post_loaded(&self, room: &Arc<str>, log: RoomLog) {
        if let Some(home) = self.rooms.borrow().get(room).map(|entry| entry.home) {
            (self.notify)(
                home,
                ClusterEvent::Loaded {
                    room: room.clone(),
                    log,
                },
            );
        }
    }

    /// The room's log at `top`: its newest publications that run without a gap up to it.
    async fn read_log(
        &self,
        keys: &RoomKeys,
        epoch: &Arc<str>,
        top: u64,
    ) -> Result<RoomLog, fred::error::Error> {
        let publications = match self.retention.resident() {
            0 => Vec::new(),
            count => {
                let mut newest = self
                    .entries(keys, None, Some(top), Some(count as u64))
                    .await?;
                newest.reverse();
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
        Ok(RoomLog::restored(
            epoch.clone(),
            top,
            publications.into_iter().map(Arc::new).collect(),
            &self.retention,
        ))
    }

    /// Reads publications `from..=to` from the stream and hands them to the home shard; what the stream
    /// no longer holds (trimmed, expired, or history off) is reported skipped.
    async fn hand_over_stream(
        &self,
        room: &Arc<str>,
        keys: &RoomKeys,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<(), fred::error::Error> {
        let found = if self.retention.size > 0 {
            self.entries(keys, Some(from), Some(to), None).await?
        } else {
            Vec::new()
        };
        let Some(home) = self.rooms.borrow().get(room).map(|entry| entry.home) else {
            return Ok(());
        };
        let skipped = |from: u64, to: u64| ClusterEvent::Skipped {
            room: room.clone(),
            epoch: epoch.clone(),
            from,
            to,
        };
        let mut next = from;
        for publication in found {
            if publication.offset < next || publication.offset > to {
                continue;
            }
            if publication.offset > next {
                (self.notify)(home, skipped(next, publication.offset - 1));
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
            (self.notify)(home, skipped(next, to));
        }
        Ok(())
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
            // A stream left from an epoch that is gone would refuse the new epoch's first ids.
            let _: () = self.commands.del(&keys.stream).await?;
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
        if let Some(raw) = RawMessage::decode(bytes) {
            self.receive_raw(room, raw);
            return;
        }
        let (Ok(head), Ok(record)) = (
            serde_json::from_slice::<Head>(bytes),
            serde_json::from_slice::<Record<'_>>(bytes),
        ) else {
            self.receive_notice(room, bytes);
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

    /// `room`'s name as this node is subscribed to it, and its home shard; `None` once unsubscribed.
    fn subscribed(&self, room: &str) -> Option<(Arc<str>, usize)> {
        self.rooms
            .borrow()
            .get_key_value(room)
            .map(|(name, entry)| (name.clone(), entry.home))
    }

    /// A raw broadcast from the room's channel: handed to the room's home shard here unless this node
    /// made it (its members had it at once).
    fn receive_raw(&self, room: &str, raw: RawMessage<'_>) {
        if *raw.node == *self.node {
            return;
        }
        let Some((room, home)) = self.subscribed(room) else {
            return; // Unsubscribed since.
        };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        (self.notify)(
            home,
            ClusterEvent::Broadcast {
                room,
                kind: raw.kind,
                payload: raw.payload.into(),
            },
        );
    }

    /// A message on a room's channel that is not a publication: a presence notice of another node's.
    fn receive_notice(&self, room: &str, bytes: &[u8]) {
        let Ok(notice) = serde_json::from_slice::<Notice>(bytes) else {
            tracing::warn!(%room, "cluster: a message on a room's channel is neither a publication nor a presence notice; ignored");
            return;
        };
        if *notice.member.node == *self.node {
            return; // This node's members were told when they joined or left.
        }
        let Some((room, home)) = self.subscribed(room) else {
            return;
        };
        (self.notify)(
            home,
            ClusterEvent::MemberChange {
                room,
                member: notice.member.into_member(),
                joined: notice.presence == Change::Joined,
            },
        );
    }

    /// Hands `incoming` over if it follows what was, keeps it waiting while the room's stream is read,
    /// drops a repeat, and has what was missed before it read first.
    fn accept(self: Rc<Self>, room: &Arc<str>, incoming: Incoming) {
        /// What to do with a message, decided before anything moves.
        enum Then {
            Wait,
            Overflow,
            Repeat,
            Deliver,
            Read(Read),
        }
        let mut rooms = self.rooms.borrow_mut();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let offset = incoming.publication.offset;
        let then = match &entry.sync {
            Sync::Syncing { waiting, .. } if waiting.len() >= MAX_WAITING => Then::Overflow,
            Sync::Syncing { .. } => Then::Wait,
            // A new epoch (the room was lost in Redis and started again), or a gap: read the stream.
            Sync::Live { epoch, .. } if *epoch != incoming.epoch => Then::Read(Read::Resync),
            Sync::Live { last, .. } if offset <= *last => Then::Repeat,
            Sync::Live { last, .. } if offset > *last + 1 => Then::Read(Read::Fill {
                from: *last + 1,
                to: offset - 1,
            }),
            Sync::Live { .. } => Then::Deliver,
        };
        let read = match then {
            Then::Repeat => None,
            Then::Deliver => {
                if let Sync::Live { epoch, last } = &mut entry.sync {
                    *last = offset;
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
            Then::Wait | Then::Read(_) => {
                // It waits for the read, which hands over what came before it.
                entry.sync.hold();
                if let Sync::Syncing { waiting, .. } = &mut entry.sync {
                    waiting.push(incoming);
                }
                match then {
                    Then::Read(read) => Some(read),
                    _ => None,
                }
            }
            Then::Overflow => {
                // Dropped, with what waited: read back from the stream once the running read is done.
                if let Sync::Syncing { waiting, .. } = &mut entry.sync {
                    waiting.clear();
                }
                Some(Read::Resync)
            }
        };
        drop(rooms);
        if let Some(read) = read {
            self.request_read(room, read);
        }
    }

    /// After a reconnect (`subscribe`: every room's channel is subscribed again first, one command per
    /// partition) or falling behind: every room reads what it missed.
    fn resync_all(self: Rc<Self>, subscribe: bool) {
        tokio::task::spawn_local(async move {
            let mut channels = Vec::new();
            let rooms: Vec<Arc<str>> = {
                let mut rooms = self.rooms.borrow_mut();
                for (name, entry) in rooms.iter_mut() {
                    if subscribe {
                        entry.subscribed = false;
                        channels.push((entry.keys.channel.clone(), name.clone()));
                    }
                    // What arrives waits until the room has caught up.
                    entry.sync.hold();
                }
                rooms.keys().cloned().collect()
            };
            // A group that fails is subscribed room by room by its reads.
            for group in command_groups(self.sharded, channels) {
                let (channels, names): (Vec<String>, Vec<Arc<str>>) = group.into_iter().unzip();
                if self.subscribe(channels).await.is_ok() {
                    let mut rooms = self.rooms.borrow_mut();
                    for name in &names {
                        if let Some(entry) = rooms.get_mut(name) {
                            entry.subscribed = true;
                        }
                    }
                }
            }
            for room in rooms {
                self.clone().request_read(&room, Read::Resync);
            }
        });
    }

    /// Redis Cluster: asks again which master serves which slot, and when that changed (a failover, slots
    /// moved) subscribes every room again and resyncs it from its stream. A master that loses a slot
    /// ends its clients' subscriptions to the slot's sharded channels with a `sunsubscribe` push, which
    /// fred drops without a word, and a node that only receives sends no command that a `MOVED` could
    /// answer: without this check it would stay subscribed to nothing and never know.
    async fn check_topology(self: Rc<Self>) {
        self.checking.set(true);
        let synced = tokio::time::timeout(COMMAND_TIMEOUT, self.subscriber.sync_cluster()).await;
        self.checking.set(false);
        if !matches!(synced, Ok(Ok(()))) {
            tracing::debug!("cluster: reading the slots' masters failed (the link is down: a reconnect resubscribes)");
            return;
        }
        let Some(now) = self.subscriber.cached_cluster_state().map(|state| {
            state
                .slots()
                .iter()
                .map(|range| (range.start, range.end, range.primary.clone()))
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        let before = self.topology.borrow_mut().replace(now.clone());
        if before.is_some_and(|before| before != now) {
            tracing::info!("cluster: the slots' masters changed; subscribing every room again");
            // A promoted replica has neither script: Redis does not copy `SCRIPT LOAD` to replicas.
            tokio::task::spawn_local(self.clone().load_scripts());
            self.resync_all(true);
        }
    }

    /// Unsubscribes the rooms whose last local member left longer than the linger ago.
    fn unsubscribe_lingering(self: Rc<Self>) {
        let now = Instant::now();
        let expired: Vec<(Arc<str>, String)> = {
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
            gone.into_iter()
                .filter_map(|name| rooms.remove(&name).map(|entry| (name, entry.keys.channel)))
                .collect()
        };
        if expired.is_empty() {
            return;
        }
        let expired = expired
            .into_iter()
            .map(|(room, channel)| (channel, room))
            .collect();
        tokio::task::spawn_local(async move {
            for group in command_groups(self.sharded, expired) {
                // Checked just before the command goes: a room loaded again meanwhile keeps its
                // subscription, and one loaded after it is subscribed after it, on the same connection.
                let channels: Vec<String> = {
                    let rooms = self.rooms.borrow();
                    group
                        .into_iter()
                        .filter(|(_, room)| !rooms.contains_key(room))
                        .map(|(channel, _)| channel)
                        .collect()
                };
                if channels.is_empty() {
                    continue;
                }
                let result = if self.sharded {
                    self.subscriber.sunsubscribe(channels).await
                } else {
                    self.subscriber.unsubscribe(channels).await
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "cluster: unsubscribe failed (the link is down: nothing to undo)");
                }
            }
        });
    }

    /// Sends the publishes gathered over `window`, in the order they came: each script call is started
    /// in turn, so they reach Redis in that order, pipelined together.
    async fn flush_publishes(self: Rc<Self>, window: Duration) {
        tokio::time::sleep(window).await;
        let queued = std::mem::take(&mut *self.publish_queue.borrow_mut());
        for (room, home, request) in queued {
            tokio::task::spawn_local(self.clone().publish(room, home, request));
        }
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
        // EVALSHA, never a reload and retry: a publish retried after NOSCRIPT could land after one sent
        // later. The script is loaded whenever the connection is made (`run`); one that met NOSCRIPT
        // meanwhile is refused `unavailable` and loads it again.
        let result: Result<(u64, String, u8), _> = self
            .script
            .evalsha(&self.commands, vec![keys.meta, keys.stream, id_key], args)
            .await;
        if let Err(e) = &result {
            self.load_scripts_on_noscript(e);
        }
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

    /// Loads both scripts again when `error` says Redis does not have them (restarted without them, a
    /// replica promoted: Redis does not copy `SCRIPT LOAD` to replicas).
    fn load_scripts_on_noscript(self: &Rc<Self>, error: &fred::error::Error) {
        if error.details().contains("NOSCRIPT") {
            tokio::task::spawn_local(self.clone().load_scripts());
        }
    }

    /// Loads the publish and presence scripts on every master.
    async fn load_scripts(self: Rc<Self>) {
        for script in [&self.script, &self.presence_script] {
            if let Err(e) = script.load(&self.commands).await {
                tracing::warn!(error = %e, "cluster: loading a script failed");
            }
        }
    }

    fn publish_failed(&self, room: Arc<str>, home: usize, to: Option<Asker>, tag: Option<String>) {
        self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
        (self.notify)(home, ClusterEvent::PublishFailed { room, to, tag });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribes_are_grouped_one_command_per_partition_in_a_cluster_and_bounded_in_size() {
        let channels: Vec<(String, usize)> = (0..1200)
            .map(|i| (format!("roomcast:{{p{}}}:room-{i}", i % 3), i))
            .collect();
        let one_server = command_groups(false, channels.clone());
        assert_eq!(
            one_server.iter().map(Vec::len).collect::<Vec<_>>(),
            [512, 512, 176]
        );
        let cluster = command_groups(true, channels);
        assert_eq!(cluster.iter().map(Vec::len).sum::<usize>(), 1200);
        for group in &cluster {
            assert!(group.len() <= CHANNELS_PER_COMMAND);
            let partition = partition_of(&group[0].0);
            assert!(group
                .iter()
                .all(|(channel, _)| partition_of(channel) == partition));
        }
        assert_eq!(
            cluster.len(),
            3,
            "400 channels in each of 3 partitions fit one command each"
        );
    }

    #[test]
    fn a_raw_broadcast_travels_as_it_was_and_no_publication_reads_as_one() {
        for (kind, payload) in [
            (DataKind::Text, "héllo {\"offset\":1}".as_bytes()),
            (DataKind::Binary, &[0u8, 255, 0, 1][..]),
            (DataKind::Text, &[][..]),
        ] {
            let encoded = RawMessage::encode("0123456789abcdef", kind, payload);
            let raw = RawMessage::decode(&encoded).expect("decodes");
            assert_eq!(
                (raw.node, raw.kind, raw.payload),
                ("0123456789abcdef", kind, payload)
            );
        }
        assert!(RawMessage::decode(br#"{"offset":1,"epoch":"e","text":"t"}"#).is_none());
        assert!(
            RawMessage::decode(br#"{"presence":"joined","node":"n","session":1,"user":"u"}"#)
                .is_none()
        );
        // Cut short, or text that is not UTF-8: not a raw broadcast.
        assert!(RawMessage::decode(&[0, b't', 16, b'a']).is_none());
        assert!(RawMessage::decode(&[0, b't', 0, 0xff]).is_none());
        assert!(RawMessage::decode(&[0, b'x', 0]).is_none());
    }
}
