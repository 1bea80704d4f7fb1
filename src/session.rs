//! [`Session`]: the handle callbacks receive for one WebSocket connection.
//!
//! A session lives on one shard for its whole life; the handle is `!Send` on purpose, so it can only be
//! used on that shard (from callbacks, or tasks the application spawns there). Nothing it does waits:
//! sending queues a frame and wakes the connection task; joining a room marks the session joining in the
//! shard's own room table and asks the room's home shard, whose answer makes it a member; a broadcast or
//! a publication goes to the room's home shard (this one, or posted there), which fans it out.
//!
//! The handle is two pointers: the session's state ([`SessionState`], which the shard's tables hold) and
//! its shard. The state does not point back at the shard, so the shard's tables never hold a handle and
//! the shard never calls up into callbacks.
//!
//! It must not touch the socket: the connection task and the shard's ring and writer do.

use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::auth::{Identity, RoomDenied};
use crate::history::{JoinOptions, PublishOptions};
use crate::session_state::{SessionId, SessionState};
use crate::shard::Shard;
use crate::ws::encode::{DataKind, EncodedFrame};

/// A connected WebSocket client, as callbacks see it. Cloning is cheap (two reference counts).
#[derive(Clone)]
pub struct Session {
    state: Rc<SessionState>,
    shard: Rc<Shard>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.state.id)
            .field("peer", &self.peer_addr())
            .finish()
    }
}

impl Session {
    /// The handle of `state`, a session of `shard`.
    pub(crate) fn new(state: Rc<SessionState>, shard: Rc<Shard>) -> Session {
        Session { state, shard }
    }

    pub(crate) fn state(&self) -> &SessionState {
        &self.state
    }

    pub(crate) fn owner(&self) -> &Shard {
        &self.shard
    }

    /// This session's process-wide unique id.
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.state.peer_addr()
    }

    /// The index of the shard (and so the core) that owns this session.
    pub fn shard(&self) -> usize {
        self.shard.index()
    }

    /// Whether the session is open: not closing, not closed.
    pub fn is_open(&self) -> bool {
        self.state.is_open()
    }

    /// Sends a text message, compressed if the session negotiated permessage-deflate and that makes it
    /// smaller. Ignored once the session is closing.
    pub fn send_text(&self, text: &str) {
        self.shard
            .send_data(&self.state, DataKind::Text, text.as_bytes());
    }

    /// Sends a binary message, compressed like [`Session::send_text`]. Ignored once the session is closing.
    pub fn send_binary(&self, data: &[u8]) {
        self.shard.send_data(&self.state, DataKind::Binary, data);
    }

    /// Starts the close handshake with `code` (e.g. 1000) and a reason of at most 123 bytes. Ignored once
    /// the session is closing.
    pub fn close(&self, code: u16, reason: &str) {
        self.shard.close(&self.state, code, reason);
    }

    /// Joins `room`, unless the room authorization hook ([`crate::Server::authorize_join`]) refuses; a
    /// session is a member at most once, and leaves every room when it ends. Like
    /// [`Session::join_room_with`] without recovery: the session gets what the room sends from the moment
    /// the room's home shard takes the join, and [`crate::RoomReplies::joined`] renders its answer.
    pub fn join_room(&self, room: &str) -> Result<(), RoomDenied> {
        self.join_room_with(room, JoinOptions::default())
    }

    /// Joins `room` and asks its history for `options`: what was published after `options.since` (a
    /// client coming back), or the newest `options.latest`. The room's home shard answers through
    /// [`crate::RoomReplies::joined`]; what the room sends after that answer follows it, with no gap and
    /// no duplicate. Joining a room the session is in asks again without joining twice.
    pub fn join_room_with(&self, room: &str, options: JoinOptions) -> Result<(), RoomDenied> {
        self.shard.join(&self.state, room, options)
    }

    /// Publishes `text` in `room`'s stream: the room's home shard gives it the next offset, keeps it in
    /// the room's history (when the server keeps history, [`crate::Server::keep_history`]), and sends it
    /// to every member, this session included if it is one, rendered by
    /// [`crate::RoomReplies::publication`]; this session then gets [`crate::RoomReplies::ack`]. With
    /// `options.id`, a retry of an id the room's history still holds is acknowledged with the first offset
    /// and not published again. Membership is the application's rule: the library does not check it.
    pub fn publish(&self, room: &str, text: &str, options: PublishOptions) {
        self.shard.publish(&self.state, room, text, options);
    }

    /// Asks who is in `room`, on every shard; the answer comes through [`crate::RoomReplies::presence`],
    /// with `tag`.
    pub fn request_presence(&self, room: &str, tag: Option<String>) {
        self.shard.request_presence(&self.state, room, tag);
    }

    /// The subprotocol agreed at the upgrade, one of [`crate::Server::subprotocols`]; `None` when the
    /// client asked for none the application speaks.
    pub fn subprotocol(&self) -> Option<&str> {
        let index = usize::from(self.state.subprotocol()?);
        self.shard
            .config()
            .subprotocols
            .get(index)
            .map(String::as_str)
    }

    /// Who the authentication hook said this session is ([`crate::Server::authenticate`]); `None` without
    /// one.
    pub fn identity(&self) -> Option<&Identity> {
        self.state.identity()
    }

    /// Leaves `room`; nothing happens if the session was not a member.
    pub fn leave_room(&self, room: &str) {
        self.shard.leave(&self.state, room);
    }

    /// Whether this session is in `room`: a member, or joining (its home shard has not answered yet; it
    /// gets the room's messages from that answer on).
    pub fn is_member(&self, room: &str) -> bool {
        self.state
            .with_rooms(|joined| joined.iter().any(|r| &**r == room))
    }

    /// How many rooms this session is in (members and joining, as [`Session::is_member`]).
    pub fn room_count(&self) -> usize {
        self.state.with_rooms(|joined| joined.len())
    }

    /// The rooms this session is in (members and joining), in the order joined.
    pub fn rooms(&self) -> Vec<String> {
        self.state
            .with_rooms(|joined| joined.iter().map(|r| r.to_string()).collect())
    }

    /// Sends `text` to every member of `room` on every shard, this session included if it is a member.
    /// Every broadcast to a room goes through the room's home shard (this one, or one it is posted to),
    /// so all members see a room's messages in one order. There it is encoded once, and compressed at most
    /// once: members that negotiated permessage-deflate share the compressed frame, the others the plain
    /// one. With the cluster (`CLUSTER_REDIS_URL`) it also reaches the room's members on other nodes,
    /// through Redis: each node's broadcasts in the order it made them, but those of different nodes in
    /// no one order (for that, and for history, [`Session::publish`]).
    pub fn broadcast_text_to_room(&self, room: &str, text: &str) {
        self.shard.broadcast(room, DataKind::Text, text.as_bytes());
    }

    /// Sends `data` as a binary message to every member of `room` on every shard, encoded and compressed
    /// once like [`Session::broadcast_text_to_room`].
    pub fn broadcast_binary_to_room(&self, room: &str, data: &[u8]) {
        self.shard.broadcast(room, DataKind::Binary, data);
    }

    /// Queues an encoded frame under the backpressure limit; past it the session closes as a slow
    /// consumer (see [`SessionState::send`]).
    pub(crate) fn send_frame(&self, frame: EncodedFrame) {
        self.shard.send(&self.state, frame);
    }
}
