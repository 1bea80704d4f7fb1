//! [`RoomReplies`]: how the application words what the library sends on its behalf about rooms, per
//! subprotocol: publications, acknowledgements, join results, presence.
//!
//! A room's home shard produces these (a publication gets its offset there, a join's recovery is read
//! there), so it must render them there, for members it does not own and whose callbacks it cannot run. A
//! renderer is a pure function of the data and the recipient's subprotocol: a publication is rendered
//! once per subprotocol the application declared (plus once for clients with none) and each rendering is
//! encoded and compressed once for every member that reads it. Returning `None` sends nothing to that kind
//! of client.
//!
//! It must not hold state or reach sessions; the data types here are what it is given.

use std::sync::Arc;

use crate::history::{Publication, StreamPosition};
use crate::session_state::SessionId;

/// Renders what the library sends about rooms; register one with [`crate::Server::room_replies`]. Each
/// method gets the recipient's subprotocol (`None`: it asked for none).
pub trait RoomReplies: Send + Sync + 'static {
    /// What members get for a publication of `room` (epoch `epoch`). By default its text, as is.
    fn publication(
        &self,
        subprotocol: Option<&str>,
        room: &str,
        epoch: &str,
        publication: &Publication,
    ) -> Option<String> {
        let _ = (subprotocol, room, epoch);
        Some(publication.text.clone())
    }

    /// What the publisher gets once its publication is in the room's stream. By default nothing.
    fn ack(&self, subprotocol: Option<&str>, ack: &Ack) -> Option<String> {
        let _ = (subprotocol, ack);
        None
    }

    /// What a joining member gets once the room's home shard has it: its recovery. By default nothing.
    fn joined(&self, subprotocol: Option<&str>, joined: &Joined) -> Option<String> {
        let _ = (subprotocol, joined);
        None
    }

    /// The answer to [`crate::Session::request_presence`]. By default nothing.
    fn presence(&self, subprotocol: Option<&str>, presence: &Presence) -> Option<String> {
        let _ = (subprotocol, presence);
        None
    }

    /// What every member gets when one joins or leaves, with `PRESENCE_EVENTS` on. By default nothing.
    fn member_change(&self, subprotocol: Option<&str>, change: &MemberChange) -> Option<String> {
        let _ = (subprotocol, change);
        None
    }

    /// What a publisher gets when its publication was not published (with `CLUSTER_REDIS_URL`, Redis
    /// could not be reached). By default the text `message not published: <code>`.
    fn publish_failed(
        &self,
        subprotocol: Option<&str>,
        failure: &PublishFailure,
    ) -> Option<String> {
        let _ = subprotocol;
        Some(format!("message not published: {}", failure.code))
    }
}

/// The renderer of a server that registered none: publications go out as their text.
pub(crate) struct TextOnly;

impl RoomReplies for TextOnly {}

/// The home shard's answer to a join, for [`crate::RoomReplies::joined`].
#[derive(Debug, Clone)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// The room's newest offset when the join was answered, and its epoch: what follows the answer starts
    /// after it. A client keeps it as where it is in the stream, whether or not `publications` reached it.
    pub position: StreamPosition,
    /// True when `publications` are exactly everything after the member's `since`: no gap.
    pub recovered: bool,
    /// Publications after `since` when recovered, else the newest `latest` ones; oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// The join's [`crate::JoinOptions::tag`].
    pub tag: Option<String>,
}

/// The home shard's acknowledgement of a publish, for [`crate::RoomReplies::ack`].
#[derive(Debug, Clone)]
pub struct Ack {
    /// The room.
    pub room: String,
    /// The publication's offset (the first one's, for a retry).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// True when this was a retry of an id already published: nothing was published again.
    pub duplicate: bool,
    /// The publish's [`crate::PublishOptions::tag`].
    pub tag: Option<String>,
}

/// One member of a room, for presence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The member's session.
    pub session: SessionId,
    /// Its user: the authenticated user, or the session id without authentication.
    pub user: String,
    /// With the cluster, the node it is connected to when that is another node (whose session ids are
    /// not this node's: `session` names it there only); `None` for this node's members.
    pub node: Option<String>,
}

/// Who is in a room, on every shard (and with the cluster, on every node), for
/// [`crate::RoomReplies::presence`].
#[derive(Debug, Clone)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// Every member: this node's in the order they joined, then (with the cluster) other nodes' by
    /// node and session.
    pub members: Vec<Member>,
    /// The request's tag.
    pub tag: Option<String>,
}

/// A member came or went, for [`crate::RoomReplies::member_change`] (with `PRESENCE_EVENTS`).
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// The room.
    pub room: String,
    /// Who.
    pub member: Member,
    /// True when it joined, false when it left.
    pub joined: bool,
}

/// A publish that was not carried out, for [`crate::RoomReplies::publish_failed`].
#[derive(Debug, Clone)]
pub struct PublishFailure {
    /// The room.
    pub room: String,
    /// Why, as a stable code: `unavailable` (the cluster's Redis could not be reached or did not answer
    /// in time, or the server is stopping), or, from [`crate::ServerHandle::publish`] only, `invalid_room`. Almost always nothing was published; when Redis ran it but its answer was lost, it was.
    /// So a client sends it again with the same `id`, which is published at most once.
    pub code: &'static str,
    /// The publish's [`crate::PublishOptions::tag`].
    pub tag: Option<String>,
}
