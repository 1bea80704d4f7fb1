//! One shard's room table: which of *its* sessions are in which room.
//!
//! Rooms are sharded: no shard knows another's members. Every message of a room is fanned out by the room's
//! home shard, which delivers it here to its own members and posts it once to every other shard, which
//! delivers it to theirs (see [`crate::shard::Shard::broadcast`]). Posting to every shard, rather than only
//! to shards known to have members, costs one message per shard per broadcast but can never miss a member
//! who joined a moment ago on another core, which a propagated interest table could.
//!
//! A member joins in two steps: it is *joining* from [`Rooms::join`] until the home shard has answered
//! (with its recovery, see [`crate::history`]), then a member ([`Rooms::activate`]). A joining member gets
//! nothing the room sends: whatever was fanned out before the home shard took the join is in its
//! recovery, so it would get it twice.
//!
//! It must not write to sockets, cross shards or run callbacks; it only fans a frame out into local queues.

use std::collections::HashMap;
use std::rc::Rc;

use crate::session_state::{SessionId, SessionState};
use crate::ws::encode::Renditions;

/// Local membership of every room that has at least one member on this shard.
#[derive(Default)]
pub(crate) struct Rooms {
    members: HashMap<Rc<str>, Vec<Rc<SessionState>>>,
    /// Sessions that joined and wait for the room's home shard to answer.
    joining: HashMap<Rc<str>, Vec<Rc<SessionState>>>,
}

impl Rooms {
    /// Adds `session` to `room` as joining, unless it is a member (or joining) already; true when added.
    pub(crate) fn join(&mut self, session: &Rc<SessionState>, room: &str) -> bool {
        session.with_rooms(|joined| {
            if joined.iter().any(|r| &**r == room) {
                return false;
            }
            let name = match self.members.get_key_value(room) {
                Some((name, _)) => name.clone(),
                None => Rc::from(room),
            };
            self.joining
                .entry(name.clone())
                .or_default()
                .push(session.clone());
            joined.push(name);
            true
        })
    }

    /// The home shard answered session `id`'s join of `room`: from now on it gets what the room sends.
    /// Returns the session if it is (still) in the room.
    pub(crate) fn activate(&mut self, room: &str, id: SessionId) -> Option<Rc<SessionState>> {
        if let Some(joining) = self.joining.get_mut(room) {
            if let Some(at) = joining.iter().position(|s| s.id == id) {
                let session = joining.swap_remove(at);
                if joining.is_empty() {
                    self.joining.remove(room);
                }
                let name =
                    session.with_rooms(|joined| joined.iter().find(|r| &***r == room).cloned());
                let name = name.unwrap_or_else(|| Rc::from(room));
                self.members.entry(name).or_default().push(session.clone());
                return Some(session);
            }
        }
        self.members.get(room)?.iter().find(|s| s.id == id).cloned()
    }

    /// Removes `session` from `room`; forgets the room when its last local member leaves. True when it
    /// was in the room.
    pub(crate) fn leave(&mut self, session: &SessionState, room: &str) -> bool {
        let was_member = session.with_rooms(|joined| {
            let at = joined.iter().position(|r| &**r == room);
            at.map(|at| joined.remove(at)).is_some()
        });
        if was_member {
            self.remove_member(room, session);
        }
        was_member
    }

    /// Removes `session` from every room it joined (its end); returns those rooms.
    pub(crate) fn leave_all(&mut self, session: &SessionState) -> Vec<Rc<str>> {
        let rooms = session.take_rooms();
        for room in &rooms {
            self.remove_member(room, session);
        }
        rooms
    }

    fn remove_member(&mut self, room: &str, session: &SessionState) {
        for table in [&mut self.members, &mut self.joining] {
            if let Some(members) = table.get_mut(room) {
                if let Some(i) = members.iter().position(|m| std::ptr::eq(&**m, session)) {
                    members.swap_remove(i);
                }
                if members.is_empty() {
                    table.remove(room);
                }
            }
        }
    }

    /// Queues `message` for every local member of `room`, each getting the rendition of its subprotocol
    /// and of that the frame it can read (compressed or plain), under the backpressure `limit`; `now` is
    /// the shard clock, for a member that overflows and starts closing. No callback runs here: a slow
    /// consumer is reported later, by its own connection task.
    pub(crate) fn deliver(&self, room: &str, message: &Renditions, limit: usize, now: u32) {
        if let Some(members) = self.members.get(room) {
            for member in members {
                if let Some(prepared) = message.for_subprotocol(member.subprotocol()) {
                    member.send(prepared.frame_for(member.deflate()).clone(), limit, now);
                }
            }
        }
    }
}
