//! Authentication and room authorization: the types of the application's two hooks.
//!
//! - [`crate::Server::authenticate`] sees each valid upgrade request ([`UpgradeRequest`]: path, query,
//!   headers, cookies, peer) before the `101` is written, and either refuses it ([`AuthRefusal`]: 401 or
//!   403, the connection never becomes a session) or lets it in, with an [`Identity`] the session carries
//!   for its whole life ([`crate::Session::identity`]).
//! - [`crate::Server::authorize_join`] decides, from a session's identity and a room name, whether the
//!   session may join; [`crate::Session::join_room`] asks it and returns [`RoomDenied`] when it says no.
//!
//! How a token is read, what a claim means and which rooms a user may see are the application's: this
//! module only carries them. It must not verify anything itself.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::ws::handshake::Request;

/// Who a session is, as the authentication hook established it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user (a token's `sub`, say); what the application shows as the sender.
    pub user: String,
    /// Anything else the application wants to keep (a token's claims, say): read back with
    /// [`crate::Session::identity`] and by the room authorization hook.
    pub claims: Map<String, Value>,
}

/// Why an upgrade was refused by the authentication hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRefusal {
    /// 401: no credentials, or credentials that do not hold (bad signature, expired).
    Unauthorized(String),
    /// 403: valid credentials that may not connect.
    Forbidden(String),
}

impl AuthRefusal {
    /// The HTTP status and its text.
    pub(crate) fn status(&self) -> (u16, &'static str) {
        match self {
            AuthRefusal::Unauthorized(_) => (401, "Unauthorized"),
            AuthRefusal::Forbidden(_) => (403, "Forbidden"),
        }
    }

    /// Why, as the response body says it.
    pub(crate) fn reason(&self) -> &str {
        match self {
            AuthRefusal::Unauthorized(reason) | AuthRefusal::Forbidden(reason) => reason,
        }
    }
}

/// A join refused by the room authorization hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDenied {
    /// The room that was asked for.
    pub room: String,
}

impl fmt::Display for RoomDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "room denied: {}", self.room)
    }
}

impl std::error::Error for RoomDenied {}

/// The authentication hook: an identity to attach (or none), or a refusal.
pub(crate) type AuthenticateFn =
    Box<dyn Fn(&UpgradeRequest<'_>) -> Result<Option<Identity>, AuthRefusal> + Send + Sync>;

/// The room authorization hook: whether a session with this identity may join this room.
pub(crate) type AuthorizeJoinFn = dyn Fn(Option<&Identity>, &str) -> bool + Send + Sync;

/// A valid WebSocket upgrade request, as the authentication hook sees it.
pub struct UpgradeRequest<'a> {
    request: &'a Request,
    peer: SocketAddr,
}

impl<'a> UpgradeRequest<'a> {
    pub(crate) fn new(request: &'a Request, peer: SocketAddr) -> UpgradeRequest<'a> {
        UpgradeRequest { request, peer }
    }

    /// The request path, without the query (`/` for `ws://host:9090/?token=...`).
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The raw query string, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// The first query parameter called `name`, percent-decoded (`+` is a space, as in forms).
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
    }

    /// A header's value, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.headers().get(name)?.to_str().ok()
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.request
            .headers()
            .get_all("Cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key.trim() == name).then(|| value.trim())
            })
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        return Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned());
    }
    percent_decode_str(raw).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, cookies: &[&str]) -> Request {
        let mut builder = Request::builder().uri(uri);
        for cookie in cookies {
            builder = builder.header("Cookie", *cookie);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn path_query_parameters_and_cookies() {
        let request = request(
            "/chat?room=team%2Dx&token=a.b.c&name=Ada+L&empty",
            &["theme=dark; session=s1", "token=from-cookie"],
        );
        let upgrade = UpgradeRequest::new(&request, "127.0.0.1:5".parse().unwrap());
        assert_eq!(upgrade.path(), "/chat");
        assert_eq!(upgrade.query_param("token").as_deref(), Some("a.b.c"));
        assert_eq!(upgrade.query_param("room").as_deref(), Some("team-x"));
        assert_eq!(upgrade.query_param("name").as_deref(), Some("Ada L"));
        assert_eq!(upgrade.query_param("empty").as_deref(), Some(""));
        assert_eq!(upgrade.query_param("missing"), None);
        assert_eq!(upgrade.cookie("session"), Some("s1"));
        assert_eq!(upgrade.cookie("token"), Some("from-cookie"));
        assert_eq!(upgrade.cookie("nope"), None);
        assert_eq!(upgrade.peer_addr().port(), 5);
    }

    #[test]
    fn refusals_map_to_401_and_403() {
        assert_eq!(AuthRefusal::Unauthorized("x".into()).status().0, 401);
        assert_eq!(AuthRefusal::Forbidden("y".into()).status().0, 403);
        assert_eq!(
            RoomDenied { room: "vip".into() }.to_string(),
            "room denied: vip"
        );
    }
}
