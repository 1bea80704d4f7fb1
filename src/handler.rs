//! The application's callbacks, registered once on the [`crate::Server`] and shared by every shard.
//!
//! Each callback runs on the shard that owns the session, synchronously, between socket reads: it must
//! stay short (queue work elsewhere rather than block), because a slow callback stalls every session of
//! its shard. Callbacks are `Send + Sync` because all shards share one set; the [`Session`] they receive is
//! not, so per-session work stays on its core.
//!
//! A panicking callback is contained by [`guarded`]: the session it ran for is closed with 1011.
//!
//! It must not dispatch messages (that is [`crate::dispatch`]) or know about sockets.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{Map, Value};

use crate::auth::AuthenticateFn;
use crate::envelope::TypedMessage;
use crate::error::SessionError;
use crate::session::Session;

/// `on_open`, `on_close`: a session began or ended.
pub(crate) type SessionFn = Box<dyn Fn(&Session) + Send + Sync>;
/// `on_error`: something went wrong with a session; it is closing.
pub(crate) type ErrorFn = Box<dyn Fn(&Session, &SessionError) + Send + Sync>;
/// `on_message`: a text message that is not a typed event.
pub(crate) type TextFn = Box<dyn Fn(&Session, &str) + Send + Sync>;
/// `on_typed_message`: the event type and its payload object.
pub(crate) type TypedFn = Box<dyn Fn(&Session, &str, &Map<String, Value>) + Send + Sync>;
/// `on_event`: a typed event whole (type, ref, payload).
pub(crate) type EventFn = Box<dyn Fn(&Session, &TypedMessage) + Send + Sync>;
/// `on_rate_limited`: a message refused by the rate limits, with its text if it was a text message.
pub(crate) type RefusedFn = Box<dyn Fn(&Session, Option<&str>) + Send + Sync>;
/// `on_binary`: a binary message.
pub(crate) type BinaryFn = Box<dyn Fn(&Session, &[u8]) + Send + Sync>;

/// Every callback the application registered; an absent one does nothing.
#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) on_open: Option<SessionFn>,
    pub(crate) on_close: Option<SessionFn>,
    pub(crate) on_error: Option<ErrorFn>,
    pub(crate) on_message: Option<TextFn>,
    pub(crate) on_typed_message: Option<TypedFn>,
    /// Replaces `on_typed_message` when registered.
    pub(crate) on_event: Option<EventFn>,
    /// Answers a message refused by the rate limits, instead of the default reply.
    pub(crate) on_rate_limited: Option<RefusedFn>,
    pub(crate) on_binary: Option<BinaryFn>,
    /// Sees each valid upgrade request before the `101`; see [`crate::auth`].
    pub(crate) authenticate: Option<AuthenticateFn>,
}

/// Runs one application callback for `session`. A panic in it is caught: it is logged and that session is
/// closed with 1011 (internal error), so a bug triggered by one client's input cannot take down the shard
/// and every other session on it.
pub(crate) fn guarded(session: &Session, callback: &'static str, run: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(run)) {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".to_owned());
        tracing::error!(session = %session.id(), callback, %message, "callback panicked; closing the session with 1011");
        session.close(1011, "internal error");
    }
}
