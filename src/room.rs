//! One shard's room table: which of *its* sessions are in which room.
//!
//! Rooms are sharded: no shard knows another's members. A broadcast is delivered to the local members
//! here, and the shard posts the same encoded frame once to every other shard, which delivers it to its own
//! members (see [`crate::shard::Shard::broadcast`]). Posting to every shard, rather than only to shards
//! known to have members, costs one message per shard per broadcast but can never miss a member who joined
//! a moment ago on another core, which a propagated interest table could.
//!
//! It must not write to sockets, cross shards or run callbacks; it only fans a frame out into local queues.

use std::collections::HashMap;
use std::rc::Rc;

use crate::session_state::SessionState;
use crate::ws::encode::Prepared;

/// Local membership of every room that has at least one member on this shard.
#[derive(Default)]
pub(crate) struct Rooms {
    members: HashMap<Rc<str>, Vec<Rc<SessionState>>>,
}

impl Rooms {
    /// Adds `session` to `room` if it is not already a member.
    pub(crate) fn join(&mut self, session: &Rc<SessionState>, room: &str) {
        session.with_rooms(|joined| {
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
    pub(crate) fn leave(&mut self, session: &SessionState, room: &str) {
        let was_member = session.with_rooms(|joined| {
            let at = joined.iter().position(|r| &**r == room);
            at.map(|at| joined.remove(at)).is_some()
        });
        if was_member {
            self.remove_member(room, session);
        }
    }

    /// Removes `session` from every room it joined (its end).
    pub(crate) fn leave_all(&mut self, session: &SessionState) {
        for room in session.take_rooms() {
            self.remove_member(&room, session);
        }
    }

    fn remove_member(&mut self, room: &str, session: &SessionState) {
        if let Some(members) = self.members.get_mut(room) {
            if let Some(i) = members.iter().position(|m| std::ptr::eq(&**m, session)) {
                members.swap_remove(i);
            }
            if members.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// Queues `message` for every local member of `room`, each getting the frame it can read (compressed
    /// or plain), under the backpressure `limit`; `now` is the shard clock, for a member that overflows and
    /// starts closing. No callback runs here: a slow consumer is reported later, by its own connection task.
    pub(crate) fn deliver(&self, room: &str, message: &Prepared, limit: usize, now: u32) {
        if let Some(members) = self.members.get(room) {
            for member in members {
                member.send(message.frame_for(member.deflate()).clone(), limit, now);
            }
        }
    }
}
