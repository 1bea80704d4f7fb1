//! A shard as the home of rooms: every room has one home shard (a hash of its name, [`Peers::home_of`]),
//! and everything that needs one view of a room happens there: publications get their offsets and go
//! into the room's history, joins get their recovery, presence is counted.
//!
//! The path of a publication: the publisher's shard posts it to the home ([`ShardMsg::Publication`]); the
//! home appends it to the room's [`RoomLog`] and, with history on, sends it to the store's thread and waits;
//! once the store has written it ([`StoreEvent::Stored`]) the home renders it once per subprotocol
//! ([`crate::RoomReplies`]), delivers it to its own members, posts it to every other shard, and
//! acknowledges it to the publisher. So a member never sees what a crash of the process could lose, and all
//! members see one order: the home's.
//!
//! The path of a join: the member's shard adds it as joining ([`crate::room::Rooms`]) and posts the join
//! home; the home adds it to the room's presence, reads its recovery from the log (loading the log from the
//! store first if it is not in memory) and answers ([`ShardMsg::Joined`]); the member's shard then makes it
//! a member and queues the answer. Anything the home fans out after it answered reaches the member's shard
//! after the answer (one shard's posts to another keep their order), anything before is in the recovery:
//! no gap, no duplicate.
//!
//! Memory: a room's log keeps in memory what a join can be given (see [`RoomLog`]); past
//! `HISTORY_MEMORY_MB` (this shard's share) the least recently used rooms drop their publications (a join
//! that needs them waits for the store to read them back; publishing goes on without it), then, if need
//! be, rooms without members are forgotten until next used. Presence is a member list per room, as long as
//! its members.
//!
//! It must not run callbacks (renderers are pure functions) or touch sockets.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use super::mesh::ShardMsg;
use super::Shard;
use crate::auth::RoomDenied;
use crate::cluster::{BridgeSender, ClusterEvent, ClusterOp};
use crate::history::store::{StoreEvent, StoreOp, StoreSender};
use crate::history::{
    now_ms, Author, Duplicate, JoinOptions, Publication, PublishOptions, RoomLog,
};
use crate::replies::{Ack, Joined, Member, MemberChange, Presence, PublishFailure, RoomReplies};
use crate::session_state::{SessionId, SessionState};
use crate::ws::encode::{DataKind, Renditions};

/// Where the rooms homed on a shard keep their streams.
#[derive(Clone)]
pub(crate) enum Backing {
    /// Offsets only, in memory: one node, history off.
    Memory,
    /// The embedded store: one node, history on.
    Store(StoreSender),
    /// Redis, through the bridge (`CLUSTER_REDIS_URL`): offsets, history and order are Redis's, and a
    /// room's log here mirrors its stream while it has members on this node.
    Cluster(BridgeSender),
}

impl Backing {
    /// Whether a room's log must be read from somewhere before it is used (else it starts fresh).
    fn persists(&self) -> bool {
        !matches!(self, Backing::Memory)
    }
}

/// Where a home shard sends its answer: a session and the subprotocol it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyTo {
    pub(crate) session: SessionId,
    pub(crate) subprotocol: Option<u8>,
}

/// Who hears back from a room's home about a publication or a presence request.
#[derive(Debug)]
pub(crate) enum Asker {
    /// A session, in its subprotocol's words ([`crate::RoomReplies`]).
    Session(ReplyTo),
    /// A caller off the shards ([`crate::ServerHandle::publish`], the HTTP API), given the answer itself.
    Caller(tokio::sync::oneshot::Sender<HomeAnswer>),
}

/// What a room's home answers a caller off the shards.
#[derive(Debug)]
pub(crate) enum HomeAnswer {
    /// The publication is in the room's stream.
    Published(Ack),
    /// It could not be published.
    Failed(PublishFailure),
    /// Who is in the room.
    Presence(Presence),
}

/// A publication on its way to its room's home.
#[derive(Debug)]
pub(crate) struct PublishRequest {
    pub(crate) text: String,
    pub(crate) from: Author,
    pub(crate) options: PublishOptions,
    /// Who gets the acknowledgement.
    pub(crate) to: Option<Asker>,
}

/// A join on its way to its room's home.
#[derive(Debug)]
pub(crate) struct JoinRequest {
    pub(crate) to: ReplyTo,
    /// Which join of the session this is ([`crate::room::Rooms::join`]): an answer to one it has since
    /// left or repeated is not acted on.
    pub(crate) token: u64,
    pub(crate) user: String,
    pub(crate) options: JoinOptions,
}

/// The rooms whose home this shard is.
#[derive(Default)]
pub(crate) struct Homes {
    rooms: HashMap<Arc<str>, HomeRoom>,
    /// Publications sent to the store and not yet written, in the order sent.
    awaiting: VecDeque<Awaiting>,
    /// Appends sent to the store so far (the last one's `seq`).
    sent: u64,
    /// What the logs in memory take, roughly.
    log_bytes: usize,
    /// When an eviction pass could not get under the budget (everything left is in use), the next one
    /// waits until memory has grown by an eighth of the budget, rather than sorting every room again on
    /// each publication.
    next_eviction_at: usize,
    /// Counts uses of rooms, to find the least recently used.
    uses: u64,
}

struct HomeRoom {
    log: Log,
    /// Joins waiting for publications memory dropped to be read back from the store.
    reloading: Option<Vec<JoinRequest>>,
    /// Presence: every member on every shard, in the order they joined.
    members: Vec<Member>,
    /// Its publications the store has not written yet.
    in_flight: usize,
    last_used: u64,
    /// With the cluster: acknowledgements Redis gave before the publication reached this node's
    /// members (the script's answer and the subscription travel apart), sent once it has.
    acks: Vec<WaitingAck>,
}

/// An acknowledgement that waits for its publication to be delivered here.
struct WaitingAck {
    offset: u64,
    epoch: Arc<str>,
    duplicate: bool,
    to: Asker,
    tag: Option<String>,
}

enum Log {
    /// Not in memory; the store has it.
    Cold,
    /// Being read from the store; what arrives meanwhile waits, in order.
    Loading(Vec<Deferred>),
    Ready(RoomLog),
}

enum Deferred {
    Publish(PublishRequest),
    Join(JoinRequest),
}

/// What waits for the store to have written every append up to `seq`.
struct Awaiting {
    seq: u64,
    room: Arc<str>,
    epoch: Arc<str>,
    what: Pending,
}

enum Pending {
    /// A publication, to fan out and acknowledge.
    Publication {
        publication: Arc<Publication>,
        to: Option<Asker>,
        tag: Option<String>,
    },
    /// The acknowledgement of a retried id whose first publication is not written yet: it must not
    /// promise an offset a crash could still lose.
    Retry {
        offset: u64,
        to: Asker,
        tag: Option<String>,
    },
}

/// What a room's entry costs here besides its log (its name, presence list and bookkeeping), counted
/// against `HISTORY_MEMORY_MB` so that rooms without members are bounded too.
const ROOM_OVERHEAD: usize = 256;

/// The longest room name the library takes, in bytes (the store's keys hold it).
pub(crate) const MAX_ROOM_NAME: usize = 1024;

/// Whether `room` can name a room: 1 to [`MAX_ROOM_NAME`] bytes.
pub(crate) fn is_room_name(room: &str) -> bool {
    !room.is_empty() && room.len() <= MAX_ROOM_NAME
}

/// Who a session is in presence and as a publisher: its authenticated user, or its id.
pub(crate) fn user_of(session: &SessionState) -> String {
    match session.identity() {
        Some(identity) => identity.user.clone(),
        None => session.id.to_string(),
    }
}

impl Shard {
    // ---- The member's side: a session of this shard asks, the room's home answers. ----

    /// Adds `session` to `room` (joining until the home answers) and asks the home for its recovery,
    /// unless the room's name is not one ([`MAX_ROOM_NAME`]) or the room authorization hook refuses. A
    /// session already in the room asks again: it is joining again, getting nothing live until its fresh
    /// recovery arrives (which covers what it would have got), and the earlier answer, if still on its
    /// way, is not acted on.
    pub(crate) fn join(
        &self,
        session: &Rc<SessionState>,
        room: &str,
        options: JoinOptions,
    ) -> Result<(), RoomDenied> {
        let authorized = self
            .config
            .authorize_join
            .as_ref()
            .is_none_or(|authorize| authorize(session.identity(), room));
        if !is_room_name(room) || !authorized {
            return Err(RoomDenied {
                room: room.to_owned(),
            });
        }
        let token = self.rooms.borrow_mut().join(session, room);
        let request = JoinRequest {
            to: reply_to(session),
            token,
            user: user_of(session),
            options,
        };
        self.to_home(room, |room| ShardMsg::Join { room, request });
        Ok(())
    }

    /// Removes `session` from `room` and tells the home; nothing happens if it was not in it.
    pub(crate) fn leave(&self, session: &SessionState, room: &str) {
        if self.rooms.borrow_mut().leave(session, room) {
            let id = session.id;
            self.to_home(room, |room| ShardMsg::Leave { room, session: id });
        }
    }

    /// Removes `session` from every room (its end) and tells their homes.
    pub(crate) fn leave_all(&self, session: &SessionState) {
        let rooms = self.rooms.borrow_mut().leave_all(session);
        for room in rooms {
            let id = session.id;
            self.to_home(&room, |room| ShardMsg::Leave { room, session: id });
        }
    }

    /// Publishes `text` in `room`'s stream from `session`, which gets the acknowledgement; a name that is
    /// not a room's ([`MAX_ROOM_NAME`]) publishes nothing.
    pub(crate) fn publish(
        &self,
        session: &SessionState,
        room: &str,
        text: &str,
        options: PublishOptions,
    ) {
        if !is_room_name(room) {
            tracing::debug!(session = %session.id, "publish to an empty or oversized room name dropped");
            return;
        }
        let request = PublishRequest {
            text: text.to_owned(),
            from: Author {
                name: user_of(session),
                is_user: session.identity().is_some(),
            },
            options,
            to: Some(Asker::Session(reply_to(session))),
        };
        self.to_home(room, |room| ShardMsg::Publication { room, request });
    }

    /// Asks `room`'s home who is in it; `session` gets the answer.
    pub(crate) fn request_presence(&self, session: &SessionState, room: &str, tag: Option<String>) {
        let to = Asker::Session(reply_to(session));
        self.to_home(room, |room| ShardMsg::Presence { room, to, tag });
    }

    /// The home answered `session`'s join `token` of `room`: it becomes a member and gets `reply`, unless
    /// it has left or joined again since.
    pub(crate) fn joined(&self, room: &str, session: SessionId, token: u64, reply: Option<String>) {
        let member = self.rooms.borrow_mut().activate(room, session, token);
        if let (Some(member), Some(reply)) = (member, reply) {
            self.send_data(&member, DataKind::Text, reply.as_bytes());
        }
    }

    /// Runs `msg(room)` here if this is `room`'s home, else posts it there.
    fn to_home(&self, room: &str, msg: impl FnOnce(Arc<str>) -> ShardMsg) {
        let home = self.peers.home_of(room);
        let msg = msg(Arc::from(room));
        if home == self.index {
            self.as_home(msg);
        } else {
            self.peers.post(home, msg);
        }
    }

    // ---- The home's side. ----

    /// Handles what is asked of this shard as a room's home.
    pub(crate) fn as_home(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Publication { room, request } => self.home_publish(room, request),
            ShardMsg::Join { room, request } => self.home_join(room, request),
            ShardMsg::Leave { room, session } => self.home_leave(&room, session),
            ShardMsg::Presence { room, to, tag } => self.home_presence(room, to, tag),
            ShardMsg::Store(event) => self.store_event(event),
            ShardMsg::Cluster(event) => self.cluster_event(event),
            other => debug_assert!(false, "not a home's message: {other:?}"),
        }
    }

    fn home_join(&self, room: Arc<str>, request: JoinRequest) {
        let member = Member {
            session: request.to.session,
            user: request.user.clone(),
            node: None,
        };
        let first_time = {
            let mut homes = self.homes.borrow_mut();
            let entry = homes.room(&room, self.backing.persists());
            let first_time = !entry.members.iter().any(|m| m.session == member.session);
            if first_time {
                entry.members.push(member.clone());
            }
            first_time
        };
        if first_time {
            if let Backing::Cluster(bridge) = &self.backing {
                let _ = bridge.send(ClusterOp::MemberJoined {
                    room: room.clone(),
                    member: member.clone(),
                });
            }
            if self.config.presence_events {
                self.fan_out_change(&room, member, true);
            }
        }
        self.with_log(room, Deferred::Join(request));
    }

    fn home_leave(&self, room: &Arc<str>, session: SessionId) {
        let left = {
            let mut homes = self.homes.borrow_mut();
            let Some(entry) = homes.rooms.get_mut(room) else {
                return;
            };
            let left = entry
                .members
                .iter()
                .position(|m| m.session == session)
                .map(|at| entry.members.remove(at));
            let last_here = entry.members.is_empty();
            drop(homes);
            if last_here {
                self.release(room);
            }
            self.homes.borrow_mut().forget_if_unused(room);
            left
        };
        let Some(member) = left else { return };
        if let Backing::Cluster(bridge) = &self.backing {
            let _ = bridge.send(ClusterOp::MemberLeft {
                room: room.clone(),
                session,
            });
        }
        if self.config.presence_events {
            self.fan_out_change(room, member, false);
        }
    }

    fn home_presence(&self, room: Arc<str>, to: Asker, tag: Option<String>) {
        let (to, tag) = match &self.backing {
            // The other nodes' members are in Redis; this node's are added to them when they come back.
            Backing::Cluster(bridge) => match bridge.send(ClusterOp::Presence {
                room: room.clone(),
                home: self.index,
                to,
                tag,
            }) {
                Ok(()) => return,
                Err(op) => match *op {
                    ClusterOp::Presence { to, tag, .. } => (to, tag),
                    _ => unreachable!("the bridge hands back what it was given"),
                },
            },
            _ => (to, tag),
        };
        self.answer_presence(room, Vec::new(), to, tag);
    }

    /// Answers `to` with `room`'s members here, then `others` (other nodes' members, with the cluster).
    fn answer_presence(&self, room: Arc<str>, others: Vec<Member>, to: Asker, tag: Option<String>) {
        let mut members = self
            .homes
            .borrow()
            .rooms
            .get(&room)
            .map(|entry| entry.members.clone())
            .unwrap_or_default();
        members.extend(others);
        let presence = Presence {
            room: room.to_string(),
            members,
            tag,
        };
        match to {
            Asker::Session(to) => self.answer(to, "presence", |replies, subprotocol| {
                replies.presence(subprotocol, &presence)
            }),
            Asker::Caller(caller) => {
                let _ = caller.send(HomeAnswer::Presence(presence));
            }
        }
    }

    fn home_publish(&self, room: Arc<str>, request: PublishRequest) {
        if let Backing::Cluster(bridge) = &self.backing {
            // Redis numbers and orders it; it comes back through the subscription like any other
            // node's, and nothing here waits for the room's log.
            let sent = bridge.send(ClusterOp::Publish {
                room: room.clone(),
                home: self.index,
                request,
            });
            if let Err(op) = sent {
                if let ClusterOp::Publish { request, .. } = *op {
                    self.publish_failed(&room, request.to, request.options.tag);
                }
            }
            return;
        }
        self.with_log(room, Deferred::Publish(request));
        // Only now: an eviction in the middle of what a room's load held back could take its log away
        // under the next operation.
        self.evict_over_budget();
    }

    /// Runs `op` on `room`'s log now if it is in memory, else once the store has read it back (a join
    /// also waits when it needs publications that memory dropped).
    fn with_log(&self, room: Arc<str>, op: Deferred) {
        let retention = self.config.retention;
        let (op, load) = {
            let mut homes = self.homes.borrow_mut();
            let entry = homes.room(&room, self.backing.persists());
            match (&mut entry.log, op) {
                (Log::Ready(log), Deferred::Join(join))
                    if log.needs_store(&join.options, &retention) =>
                {
                    match &mut entry.reloading {
                        Some(waiting) => {
                            waiting.push(join);
                            (None, false)
                        }
                        None => {
                            entry.reloading = Some(vec![join]);
                            (None, true)
                        }
                    }
                }
                (Log::Ready(_), op) => (Some(op), false),
                (Log::Loading(waiting), op) => {
                    waiting.push(op);
                    (None, false)
                }
                (Log::Cold, op) => {
                    entry.log = Log::Loading(vec![op]);
                    (None, true)
                }
            }
        };
        if load {
            let asked = match &self.backing {
                Backing::Store(store) => store
                    .send(StoreOp::Load {
                        home: self.index,
                        room: room.clone(),
                    })
                    .is_ok(),
                Backing::Cluster(bridge) => bridge
                    .send(ClusterOp::Load {
                        room: room.clone(),
                        home: self.index,
                    })
                    .is_ok(),
                Backing::Memory => {
                    debug_assert!(false, "a log in memory is never loaded");
                    true
                }
            };
            if !asked {
                self.load_refused(&room);
            }
        }
        if let Some(op) = op {
            self.on_log(&room, op);
        }
    }

    /// The store's thread (or the bridge's) has ended and will never read `room`'s log back: what waits
    /// for it goes on with what memory has, a fresh log if none, rather than waiting for ever (a session
    /// never a member, a publisher never answered).
    fn load_refused(&self, room: &Arc<str>) {
        tracing::error!(%room, "room history unavailable (its thread has ended); the room goes on without what it could not read");
        let joins = {
            let mut homes = self.homes.borrow_mut();
            match homes.rooms.get_mut(room) {
                Some(entry) if matches!(entry.log, Log::Ready(_)) => entry.reloading.take(),
                _ => None,
            }
        };
        match joins {
            // Joins that wanted publications memory dropped: they get what memory still has.
            Some(joins) => joins
                .into_iter()
                .for_each(|join| self.answer_join(room, join)),
            None => self.log_loaded(room.clone(), RoomLog::fresh(room)),
        }
    }

    /// Runs `op` on `room`'s log, which is in memory.
    fn on_log(&self, room: &Arc<str>, op: Deferred) {
        match op {
            Deferred::Join(request) => self.answer_join(room, request),
            Deferred::Publish(request) => self.append(room, request),
        }
    }

    fn answer_join(&self, room: &Arc<str>, request: JoinRequest) {
        let retention = self.config.retention;
        let recovery = {
            let mut homes = self.homes.borrow_mut();
            homes.update_log(room, |log| {
                log.trim(&retention, now_ms());
                log.recover(&request.options, &retention)
            })
        };
        let Some(recovery) = recovery else { return };
        let joined = Joined {
            room: room.to_string(),
            position: recovery.position,
            recovered: recovery.recovered,
            publications: recovery.publications,
            tag: request.options.tag,
        };
        let (to, token) = (request.to, request.token);
        let reply = self.rendered("joined", || {
            self.config
                .replies
                .joined(self.subprotocol_name(to.subprotocol), &joined)
        });
        if to.session.shard() == self.index {
            self.joined(room, to.session, token, reply);
        } else {
            self.peers.post(
                to.session.shard(),
                ShardMsg::Joined {
                    room: room.clone(),
                    session: to.session,
                    token,
                    reply,
                },
            );
        }
    }

    fn append(&self, room: &Arc<str>, request: PublishRequest) {
        let retention = self.config.retention;
        let PublishRequest {
            text,
            from,
            options,
            to,
        } = request;
        let appended = self.homes.borrow_mut().update_log(room, |log| {
            let appended = log.append(text, from, options.id, now_ms(), &retention);
            (appended, log.epoch().clone(), log.delivered())
        });
        let Some((appended, epoch, delivered)) = appended else {
            debug_assert!(false, "a publication for a room whose log is not in memory");
            return;
        };
        let publication = match appended {
            Ok(publication) => {
                self.count(|t| t.history_appends += 1);
                publication
            }
            Err(Duplicate(offset)) => {
                let Some(to) = to else { return };
                if offset <= delivered {
                    self.acknowledge(to, room, &epoch, offset, true, options.tag);
                } else {
                    // Acknowledged with the first publication, once the store has it.
                    let mut homes = self.homes.borrow_mut();
                    let seq = homes.sent;
                    homes.awaiting.push_back(Awaiting {
                        seq,
                        room: room.clone(),
                        epoch,
                        what: Pending::Retry {
                            offset,
                            to,
                            tag: options.tag,
                        },
                    });
                }
                return;
            }
        };
        if let Backing::Store(store) = &self.backing {
            let mut homes = self.homes.borrow_mut();
            let seq = homes.sent + 1;
            let op = StoreOp::Append {
                home: self.index,
                seq,
                room: room.clone(),
                epoch: epoch.clone(),
                publication: publication.clone(),
            };
            if store.send(op).is_ok() {
                homes.sent = seq;
                homes.awaiting.push_back(Awaiting {
                    seq,
                    room: room.clone(),
                    epoch,
                    what: Pending::Publication {
                        publication,
                        to,
                        tag: options.tag,
                    },
                });
                if let Some(entry) = homes.rooms.get_mut(room) {
                    entry.in_flight += 1;
                }
                return;
            }
            // The store's thread has ended (it failed): the room goes on without history rather
            // than falling silent.
            tracing::error!(%room, "history store unavailable; publishing without keeping history");
        }
        self.homes.borrow_mut().update_log(room, |log| {
            log.mark_delivered(publication.offset);
        });
        self.deliver_publication(room, &epoch, &publication, to, options.tag);
    }

    /// The store answered: publications it wrote go out, a log it read back takes what waited for it.
    fn store_event(&self, event: StoreEvent) {
        match event {
            StoreEvent::Stored { seq } => loop {
                let done = {
                    let mut homes = self.homes.borrow_mut();
                    if homes.awaiting.front().is_none_or(|a| a.seq > seq) {
                        break;
                    }
                    let done = homes.awaiting.pop_front().expect("a front");
                    if let Pending::Publication { publication, .. } = &done.what {
                        homes.update_log(&done.room, |log| log.mark_delivered(publication.offset));
                        if let Some(entry) = homes.rooms.get_mut(&done.room) {
                            entry.in_flight -= 1;
                        }
                        homes.forget_if_unused(&done.room);
                    }
                    done
                };
                match done.what {
                    Pending::Publication {
                        publication,
                        to,
                        tag,
                    } => self.deliver_publication(&done.room, &done.epoch, &publication, to, tag),
                    Pending::Retry { offset, to, tag } => {
                        self.acknowledge(to, &done.room, &done.epoch, offset, true, tag)
                    }
                }
            },
            StoreEvent::Loaded { room, log } => self.log_loaded(room, log),
        }
    }

    /// A room's log read back (from the store, or from Redis): it takes what waited for it.
    fn log_loaded(&self, room: Arc<str>, log: RoomLog) {
        let retention = self.config.retention;
        let (waiting, nobody_here) = {
            let mut homes = self.homes.borrow_mut();
            let Some(entry) = homes.rooms.get_mut(&room) else {
                return;
            };
            let (before, after, waiting) = match &mut entry.log {
                // Publications memory dropped are back, under what came since.
                Log::Ready(current) if current.epoch() == log.epoch() => {
                    let before = current.bytes();
                    current.merge(log, &retention);
                    let waiting = entry.reloading.take().unwrap_or_default();
                    let joins = waiting.into_iter().map(Deferred::Join).collect();
                    (before, current.bytes(), joins)
                }
                // The room's history was lost in Redis and it started again: the new log replaces it.
                Log::Ready(current) => {
                    let before = current.bytes();
                    let after = log.bytes();
                    entry.log = Log::Ready(log);
                    let waiting = entry.reloading.take().unwrap_or_default();
                    (
                        before,
                        after,
                        waiting.into_iter().map(Deferred::Join).collect(),
                    )
                }
                _ => {
                    let after = log.bytes();
                    match std::mem::replace(&mut entry.log, Log::Ready(log)) {
                        Log::Loading(waiting) => (0, after, waiting),
                        _ => (0, after, Vec::new()),
                    }
                }
            };
            let nobody_here = entry.members.is_empty();
            homes.log_bytes = homes.log_bytes - before + after;
            (waiting, nobody_here)
        };
        for op in waiting {
            self.on_log(&room, op);
        }
        self.send_waiting_acks(&room);
        if nobody_here {
            // Every member left while it was read.
            self.release(&room);
            self.homes.borrow_mut().forget_if_unused(&room);
        }
        self.evict_over_budget();
    }

    /// With the cluster: `room` has no member on this node any more. The bridge unsubscribes (after its
    /// linger), so the log here would go stale: it is dropped, and read again when someone joins.
    fn release(&self, room: &Arc<str>) {
        let Backing::Cluster(bridge) = &self.backing else {
            return;
        };
        let acks = {
            let mut homes = self.homes.borrow_mut();
            let Some(entry) = homes.rooms.get_mut(room) else {
                return;
            };
            if matches!(entry.log, Log::Loading(_)) {
                return; // `log_loaded` releases it once the read is in.
            }
            let freed = match std::mem::replace(&mut entry.log, Log::Cold) {
                Log::Ready(log) => log.bytes(),
                _ => 0,
            };
            let acks = std::mem::take(&mut entry.acks);
            // Joins waiting for a reload were of sessions that have left.
            entry.reloading = None;
            homes.log_bytes -= freed;
            acks
        };
        let _ = bridge.send(ClusterOp::Release { room: room.clone() });
        for ack in acks {
            self.acknowledge(ack.to, room, &ack.epoch, ack.offset, ack.duplicate, ack.tag);
        }
    }

    /// What the bridge to Redis tells this shard, home of `room` on this node.
    fn cluster_event(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::Loaded { room, log } => self.log_loaded(room, log),
            ClusterEvent::Publication {
                room,
                epoch,
                publication,
            } => {
                let retention = self.config.retention;
                let accepted = self.homes.borrow_mut().update_log(&room, |log| {
                    (*log.epoch() == epoch)
                        .then(|| log.accept(publication, &retention, now_ms()))
                        .flatten()
                });
                if let Some(Some(publication)) = accepted {
                    self.deliver_publication(&room, &epoch, &publication, None, None);
                    self.send_waiting_acks(&room);
                }
            }
            ClusterEvent::Skipped {
                room,
                epoch,
                from,
                to,
            } => {
                tracing::warn!(%room, from, to, "cluster: publications no longer in the room's stream were skipped");
                self.homes.borrow_mut().update_log(&room, |log| {
                    if *log.epoch() == epoch {
                        log.skip_to(to);
                    }
                });
                self.send_waiting_acks(&room);
            }
            ClusterEvent::Published {
                room,
                epoch,
                offset,
                duplicate,
                to,
                tag,
            } => {
                let Some(to) = to else { return };
                let mut homes = self.homes.borrow_mut();
                // Members here get it through the subscription: the publisher hears back after they
                // (it among them) have it, as on one node.
                let waits_here = homes.rooms.get_mut(&room).filter(|entry| match &entry.log {
                    Log::Ready(log) => *log.epoch() == epoch && log.delivered() < offset,
                    Log::Loading(_) => true,
                    Log::Cold => false,
                });
                match waits_here {
                    Some(entry) => entry.acks.push(WaitingAck {
                        offset,
                        epoch,
                        duplicate,
                        to,
                        tag,
                    }),
                    None => {
                        drop(homes);
                        self.acknowledge(to, &room, &epoch, offset, duplicate, tag);
                    }
                }
            }
            ClusterEvent::PublishFailed { room, to, tag } => self.publish_failed(&room, to, tag),
            ClusterEvent::Presence {
                room,
                others,
                to,
                tag,
            } => self.answer_presence(room, others.unwrap_or_default(), to, tag),
            ClusterEvent::Broadcast {
                room,
                kind,
                payload,
            } => self.fan_out(&room, kind, &payload),
            ClusterEvent::MemberChange {
                room,
                member,
                joined,
            } => {
                if self.config.presence_events {
                    self.fan_out_change(&room, member, joined);
                }
            }
        }
    }

    /// Sends the acknowledgements of `room` whose publications have been delivered here.
    fn send_waiting_acks(&self, room: &Arc<str>) {
        let ready: Vec<WaitingAck> = {
            let mut homes = self.homes.borrow_mut();
            let Some(entry) = homes.rooms.get_mut(room) else {
                return;
            };
            let (epoch, delivered) = match &entry.log {
                Log::Ready(log) => (Some(log.epoch().clone()), log.delivered()),
                Log::Loading(_) => return,
                Log::Cold => (None, u64::MAX),
            };
            // One of another epoch will not be delivered in this one: it goes now.
            let (ready, waiting) = std::mem::take(&mut entry.acks)
                .into_iter()
                .partition(|ack| ack.offset <= delivered || Some(&ack.epoch) != epoch.as_ref());
            entry.acks = waiting;
            ready
        };
        for ack in ready {
            self.acknowledge(ack.to, room, &ack.epoch, ack.offset, ack.duplicate, ack.tag);
        }
    }

    /// Tells `to` its publication in `room` was not published: the cluster cannot reach Redis.
    fn publish_failed(&self, room: &str, to: Option<Asker>, tag: Option<String>) {
        let Some(to) = to else { return };
        let failure = PublishFailure {
            room: room.to_owned(),
            code: "unavailable",
            tag,
        };
        match to {
            Asker::Session(to) => self.answer(to, "publish_failed", |replies, subprotocol| {
                replies.publish_failed(subprotocol, &failure)
            }),
            Asker::Caller(caller) => {
                let _ = caller.send(HomeAnswer::Failed(failure));
            }
        }
    }

    /// Renders `publication` once per subprotocol, fans it out and acknowledges it to its publisher.
    fn deliver_publication(
        &self,
        room: &Arc<str>,
        epoch: &str,
        publication: &Publication,
        to: Option<Asker>,
        tag: Option<String>,
    ) {
        let message = self.render(|subprotocol| {
            self.config
                .replies
                .publication(subprotocol, room, epoch, publication)
        });
        self.fan_out_renditions(room, &message);
        if let Some(to) = to {
            self.acknowledge(to, room, epoch, publication.offset, false, tag);
        }
    }

    /// Tells `to` that its publication is in `room`'s stream at `offset` (`duplicate`: a retry of an id
    /// published there already).
    fn acknowledge(
        &self,
        to: Asker,
        room: &str,
        epoch: &str,
        offset: u64,
        duplicate: bool,
        tag: Option<String>,
    ) {
        let ack = Ack {
            room: room.to_owned(),
            offset,
            epoch: epoch.to_owned(),
            duplicate,
            tag,
        };
        match to {
            Asker::Session(to) => self.answer(to, "ack", |replies, subprotocol| {
                replies.ack(subprotocol, &ack)
            }),
            Asker::Caller(caller) => {
                let _ = caller.send(HomeAnswer::Published(ack));
            }
        }
    }

    /// Tells every member of `room` that `member` joined or left (`PRESENCE_EVENTS`).
    fn fan_out_change(&self, room: &Arc<str>, member: Member, joined: bool) {
        let change = MemberChange {
            room: room.to_string(),
            member,
            joined,
        };
        let message =
            self.render(|subprotocol| self.config.replies.member_change(subprotocol, &change));
        self.fan_out_renditions(room, &message);
    }

    /// One rendition per kind of client: those with no subprotocol, then each subprotocol in order;
    /// each encoded and compressed once.
    fn render(&self, render: impl Fn(Option<&str>) -> Option<String>) -> Renditions {
        let names =
            std::iter::once(None).chain(self.config.subprotocols.iter().map(|s| Some(&**s)));
        let texts: Vec<Option<String>> = names
            .map(|name| self.rendered("publication", || render(name)))
            .collect();
        let mut deflater = self.deflater.borrow_mut();
        Renditions(
            texts
                .into_iter()
                .map(|text| text.map(|text| deflater.prepare(DataKind::Text, text.as_bytes())))
                .collect(),
        )
    }

    /// Runs one of the application's renderers. A panic in it is caught and logged and nothing is sent:
    /// a renderer runs on a room's home shard for members of every shard, and must not take the shard
    /// and all its sessions down with it.
    fn rendered(
        &self,
        what: &'static str,
        render: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)) {
            Ok(text) => text,
            Err(_) => {
                tracing::error!(
                    renderer = what,
                    "a RoomReplies renderer panicked; nothing sent"
                );
                None
            }
        }
    }

    /// Renders an answer for `to` in its subprotocol (`what` names the renderer in logs) and sends it.
    fn answer(
        &self,
        to: ReplyTo,
        what: &'static str,
        render: impl FnOnce(&dyn RoomReplies, Option<&str>) -> Option<String>,
    ) {
        let reply = self.rendered(what, || {
            render(&*self.config.replies, self.subprotocol_name(to.subprotocol))
        });
        self.reply(to, reply);
    }

    /// Sends `reply`, if any, to one session of any shard.
    fn reply(&self, to: ReplyTo, reply: Option<String>) {
        let Some(reply) = reply else { return };
        if to.session.shard() == self.index {
            if let Some(session) = self.session(to.session) {
                self.send_data(&session, DataKind::Text, reply.as_bytes());
            }
        } else {
            self.peers
                .send_to_session(to.session, DataKind::Text, reply.as_bytes());
        }
    }

    fn subprotocol_name(&self, index: Option<u8>) -> Option<&str> {
        index.and_then(|i| self.config.subprotocols.get(usize::from(i)).map(|s| &**s))
    }

    /// Past this shard's share of `HISTORY_MEMORY_MB`, drops the publications of the least recently
    /// used rooms from memory (the store has them) until a quarter of the share is free; if that is not
    /// enough, forgets the rest of the least recently used rooms without members too (their epoch,
    /// offsets and ids are read back from the store when next needed).
    fn evict_over_budget(&self) {
        let budget = self.config.history_budget;
        let mut homes = self.homes.borrow_mut();
        if homes.log_bytes <= budget.max(homes.next_eviction_at) {
            return;
        }
        homes.evict_to(budget / 4 * 3);
        homes.next_eviction_at = match homes.log_bytes > budget {
            true => homes.log_bytes + budget / 8,
            false => 0,
        };
    }
}

fn reply_to(session: &SessionState) -> ReplyTo {
    ReplyTo {
        session: session.id,
        subprotocol: session.subprotocol(),
    }
}

impl Homes {
    /// Drops publications, then rooms without members, least recently used first, until memory is
    /// under `target` or nothing idle is left.
    fn evict_to(&mut self, target: usize) {
        let mut idle: Vec<(u64, Arc<str>)> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                r.in_flight == 0 && r.reloading.is_none() && matches!(r.log, Log::Ready(_))
            })
            .map(|(name, r)| (r.last_used, name.clone()))
            .collect();
        idle.sort_unstable();
        for (_, name) in &idle {
            if self.log_bytes <= target {
                return;
            }
            let freed = match self.rooms.get_mut(name).map(|r| &mut r.log) {
                Some(Log::Ready(log)) => log.drop_publications(),
                _ => 0,
            };
            self.log_bytes -= freed;
        }
        for (_, name) in &idle {
            if self.log_bytes <= target {
                return;
            }
            let Some(entry) = self.rooms.get_mut(name) else {
                continue;
            };
            if entry.members.is_empty() {
                if let Log::Ready(log) = std::mem::replace(&mut entry.log, Log::Cold) {
                    self.log_bytes -= log.bytes();
                }
                self.forget_if_unused(name);
            }
        }
    }

    /// `room`'s entry, created on first use: its log is read from the store with `history` on, fresh
    /// without.
    fn room(&mut self, room: &Arc<str>, history: bool) -> &mut HomeRoom {
        self.uses += 1;
        let uses = self.uses;
        if !self.rooms.contains_key(room) {
            self.log_bytes += ROOM_OVERHEAD;
        }
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| HomeRoom {
            log: if history {
                Log::Cold
            } else {
                Log::Ready(RoomLog::fresh(room))
            },
            reloading: None,
            members: Vec::new(),
            in_flight: 0,
            last_used: uses,
            acks: Vec::new(),
        });
        entry.last_used = uses;
        entry
    }

    /// Runs `f` on `room`'s log if it is in memory, keeping the memory count right.
    fn update_log<R>(&mut self, room: &str, f: impl FnOnce(&mut RoomLog) -> R) -> Option<R> {
        let Log::Ready(log) = &mut self.rooms.get_mut(room)?.log else {
            return None;
        };
        let before = log.bytes();
        let result = f(log);
        self.log_bytes = self.log_bytes - before + log.bytes();
        Some(result)
    }

    /// Forgets `room` when nothing of it is left to keep here: no member, nothing on its way to or from
    /// the store, nothing in memory (without history a log is only offsets, which nobody can recover
    /// from; with it, what is not in memory is in the store, read back when next needed).
    fn forget_if_unused(&mut self, room: &str) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let unused = entry.members.is_empty()
            && entry.in_flight == 0
            && entry.reloading.is_none()
            && match &entry.log {
                Log::Cold => true,
                Log::Loading(_) => false,
                // Without history a log is only offsets, which nobody can recover from; with it, a log
                // holding nothing in memory is all in the store, and is read back when next needed.
                Log::Ready(log) => log.bytes() == 0,
            };
        if unused {
            if let Some(removed) = self.rooms.remove(room) {
                self.log_bytes -= ROOM_OVERHEAD;
                if let Log::Ready(log) = removed.log {
                    self.log_bytes -= log.bytes();
                }
            }
        }
    }
}
