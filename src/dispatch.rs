//! From a complete message to the application: typed event or raw text.
//!
//! The rule (the crate docs state it for users): a text message that is a JSON object with a string `type`
//! and, if present, an object `payload` goes to `on_typed_message(session, type, payload)` with an absent
//! payload read as `{}`; any other text goes to `on_message`. Only text whose first non-blank character is
//! `{` is parsed at all, so raw protocols such as `ping` never pay for JSON. [`TypedMessage::parse`] is
//! public so an application can tell a client *why* its text was not an event.
//!
//! It must not send anything or touch rooms: it only routes. Reading the envelope is [`crate::envelope`]'s.

use crate::envelope::TypedMessage;
use crate::handler::{guarded, Callbacks};
use crate::session::Session;

/// Routes one complete text message to the right callback.
pub(crate) fn dispatch_text(callbacks: &Callbacks, session: &Session, text: &str) {
    if let Some(on_event) = &callbacks.on_event {
        if let Ok(event) = TypedMessage::parse(text) {
            guarded(session, "on_event", || on_event(session, &event));
            return;
        }
    } else if let Some(on_typed) = &callbacks.on_typed_message {
        if let Ok(event) = TypedMessage::parse(text) {
            guarded(session, "on_typed_message", || {
                on_typed(session, &event.kind, &event.payload)
            });
            return;
        }
    }
    if let Some(on_message) = &callbacks.on_message {
        guarded(session, "on_message", || on_message(session, text));
    }
}
