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
use crate::shard::writer::Writer;
use crate::ws::encode::Renditions;

/// Local membership of every room that has at least one member on this shard.
#[derive(Default)]
pub(crate) struct Rooms {
    members: HashMap<Rc<str>, Vec<Rc<SessionState>>>,
    /// Sessions that joined and wait for the room's home shard to answer, with the token of their
    /// latest join: only the answer to that one makes them members.
    joining: HashMap<Rc<str>, Vec<(Rc<SessionState>, u64)>>,
    /// The last join token handed out.
    joins: u64,
}

impl Rooms {
    /// Adds `session` to `room` as joining and returns the join's token. A member joining again is
    /// joining again: it gets nothing from the room until the answer to this join, whose recovery covers
    /// what it would have got, so nothing arrives twice; an earlier answer still on its way is ignored.
    pub(crate) fn join(&mut self, session: &Rc<SessionState>, room: &str) -> u64 {
        self.joins += 1;
        let token = self.joins;
        let name = session.with_rooms(|joined| joined.iter().find(|r| &***r == room).cloned());
        let name = match name {
            Some(name) => {
                self.remove_member(&name, session);
                name
            }
            None => {
                let name = match self.members.get_key_value(room) {
                    Some((name, _)) => name.clone(),
                    None => Rc::from(room),
                };
                session.with_rooms(|joined| joined.push(name.clone()));
                name
            }
        };
        self.joining
            .entry(name)
            .or_default()
            .push((session.clone(), token));
        token
    }

    /// The home shard answered join `token` of session `id` to `room`: if that is still the session's
    /// latest join of the room, it becomes a member (from now on it gets what the room sends) and is
    /// returned.
    pub(crate) fn activate(
        &mut self,
        room: &str,
        id: SessionId,
        token: u64,
    ) -> Option<Rc<SessionState>> {
        let joining = self.joining.get_mut(room)?;
        let at = joining
            .iter()
            .position(|(s, t)| s.id == id && *t == token)?;
        let (session, _) = joining.swap_remove(at);
        if joining.is_empty() {
            self.joining.remove(room);
        }
        let name = session.with_rooms(|joined| joined.iter().find(|r| &***r == room).cloned());
        let name = name.unwrap_or_else(|| Rc::from(room));
        self.members.entry(name).or_default().push(session.clone());
        Some(session)
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

    /// Takes `session` out of `room`'s members and joining sessions (it stays in its own list of rooms).
    fn remove_member(&mut self, room: &str, session: &SessionState) {
        if let Some(members) = self.members.get_mut(room) {
            members.retain(|m| !std::ptr::eq(&**m, session));
            if members.is_empty() {
                self.members.remove(room);
            }
        }
        if let Some(joining) = self.joining.get_mut(room) {
            joining.retain(|(m, _)| !std::ptr::eq(&**m, session));
            if joining.is_empty() {
                self.joining.remove(room);
            }
        }
    }

    /// Queues `message` for every local member of `room`, each getting the rendition of its subprotocol
    /// and of that the frame it can read (compressed or plain), under the backpressure `limit`, and names
    /// each to the shard's `writer`; `now` is the shard clock, for a member that overflows and starts
    /// closing. Returns how many members it was queued for. No callback runs here: a slow consumer is
    /// reported later, by its own connection task.
    pub(crate) fn deliver(
        &self,
        room: &str,
        message: &Renditions,
        limit: usize,
        now: u32,
        writer: &Writer,
    ) -> u64 {
        let mut queued = 0;
        if let Some(members) = self.members.get(room) {
            for member in members {
                if let Some(prepared) = message.for_subprotocol(member.subprotocol()) {
                    let frame = prepared.frame_for(member.deflate()).clone();
                    if member.send(frame, limit, now) {
                        queued += 1;
                        writer.want(member);
                    }
                }
            }
        }
        queued
    }

    /// Rooms with a member here, and memberships (a session in three rooms counts three times).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let members = self.members.values().map(Vec::len).sum();
        (self.members.len(), members)
    }
}
