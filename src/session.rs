//! [`Session`]: the handle callbacks receive for one WebSocket connection.
//!
//! A session lives on one shard for its whole life; the handle is `!Send` on purpose, so it can only be
//! used on that shard (from callbacks, or tasks the application spawns there). Everything it does is
//! local and synchronous: sending queues a frame and wakes the connection task; joining a room touches
//! the shard's own room table; a broadcast is delivered locally and posted once to each other shard.
//!
//! The handle is two pointers: the session's state ([`SessionState`], which the shard's tables hold) and
//! its shard. The state does not point back at the shard, so the shard's tables never hold a handle and
//! the shard never calls up into callbacks.
//!
//! It must not touch the socket: only the connection task reads and writes it.

use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::auth::{Identity, RoomDenied};
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
    /// session is a member at most once, and leaves every room when it ends.
    pub fn join_room(&self, room: &str) -> Result<(), RoomDenied> {
        self.shard.join(&self.state, room)
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

    /// Whether this session is a member of `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.state
            .with_rooms(|joined| joined.iter().any(|r| &**r == room))
    }

    /// How many rooms this session is a member of.
    pub fn room_count(&self) -> usize {
        self.state.with_rooms(|joined| joined.len())
    }

    /// The rooms this session is a member of, in the order joined.
    pub fn rooms(&self) -> Vec<String> {
        self.state
            .with_rooms(|joined| joined.iter().map(|r| r.to_string()).collect())
    }

    /// Sends `text` to every member of `room` on every shard, this session included if it is a member.
    /// Every broadcast to a room goes through the room's home shard (this one, or one it is posted to),
    /// so all members see a room's messages in one order. There it is encoded once, and compressed at most
    /// once: members that negotiated permessage-deflate share the compressed frame, the others the plain
    /// one.
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
