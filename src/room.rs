//! One shard's room table: which of *its* sessions are in which room.
//!
//! Rooms are sharded: no shard knows another's members. A broadcast is delivered to the local members
//! here, and the shard posts the same encoded frame once to every other shard, which delivers it to its own
//! members (see [`crate::shard::Shard::broadcast`]). Posting to every shard, rather than only to shards
//! known to have members, costs one message per shard per broadcast but can never miss a member who joined
//! a moment ago on another core, which a propagated interest table could.
//!
//! It must not write to sockets or cross shards; it only fans a frame out into local queues.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::session::Session;
use crate::ws::codec::Frame;

/// Local membership of every room that has at least one member on this shard.
#[derive(Default)]
pub(crate) struct Rooms {
    members: HashMap<Rc<str>, Vec<Session>>,
}

impl Rooms {
    /// Adds `session` to `room` if it is not already a member.
    pub(crate) fn join(&mut self, session: &Session, room: &str) {
        session.0.with_rooms(|joined| {
            if joined.iter().any(|r| &**r == room) {
                return;
            }
            let name = match self.members.get_key_value(room) {
                Some((name, _)) => name.clone(),
                None => Rc::from(room),
            };
            self.members
                .entry(name.clone())
                .or_default()
                .push(session.clone());
            joined.push(name);
        });
    }

    /// Removes `session` from `room`; forgets the room when its last local member leaves.
    pub(crate) fn leave(&mut self, session: &Session, room: &str) {
        let was_member = session.0.with_rooms(|joined| {
            let at = joined.iter().position(|r| &**r == room);
            at.map(|at| joined.remove(at)).is_some()
        });
        if was_member {
            self.remove_member(room, session);
        }
    }

    /// Removes `session` from every room it joined (its end).
    pub(crate) fn leave_all(&mut self, session: &Session) {
        let joined = session.0.rooms.take();
        for room in joined {
            self.remove_member(&room, session);
        }
    }

    fn remove_member(&mut self, room: &str, session: &Session) {
        if let Some(members) = self.members.get_mut(room) {
            if let Some(i) = members.iter().position(|m| Rc::ptr_eq(&m.0, &session.0)) {
                members.swap_remove(i);
            }
            if members.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// Queues `frame` for every local member of `room`.
    pub(crate) fn deliver(rooms: &RefCell<Rooms>, room: &str, frame: &Frame) {
        let mut overflowed = Vec::new();
        if let Some(members) = rooms.borrow().members.get(room) {
            for member in members {
                if member.queue_frame(frame.clone()).is_err() {
                    overflowed.push(member.clone());
                }
            }
        }
        // Closing a slow consumer runs `on_error`, which may join or leave rooms: only once the table is
        // no longer borrowed.
        for member in overflowed {
            member.close_slow_consumer();
        }
    }
}
