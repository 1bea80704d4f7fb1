//! From a complete message to the application: typed event or raw text.
//!
//! The rule (the crate docs state it for users): a text message that is a JSON object with a string `type`
//! and, if present, an object `payload` goes to `on_typed_message(session, type, payload)` with an absent
//! payload read as `{}`; any other text goes to `on_message`. Only text whose first non-blank character is
//! `{` is parsed at all, so raw protocols such as `ping` never pay for JSON. [`TypedMessage::parse`] is
//! public so an application can tell a client *why* its text was not an event.
//!
//! It must not send anything or touch rooms: it only routes.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::handler::{guarded, Callbacks};
use crate::session::Session;

/// A typed event: `{"type": "...", "payload": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedMessage {
    /// The event name, e.g. `chat.message`.
    pub kind: String,
    /// The event data; `{}` when the message had no `payload`.
    pub payload: Map<String, Value>,
}

/// Why a text is not a typed event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The text does not start with `{`: a raw message, not an attempt at an event.
    #[error("not a JSON object")]
    NotAnObject,
    /// The text starts like JSON but does not parse.
    #[error("malformed JSON: {0}")]
    MalformedJson(serde_json::Error),
    /// The object has no `type`, or it is not a string.
    #[error("`type` must be a string")]
    MissingType,
    /// `payload` is present but not an object.
    #[error("`payload` must be an object")]
    PayloadNotObject,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
    payload: Option<Value>,
}

impl TypedMessage {
    /// Reads `text` as a typed event, or says why it is not one.
    pub fn parse(text: &str) -> Result<TypedMessage, EnvelopeError> {
        if !text.trim_start().starts_with('{') {
            return Err(EnvelopeError::NotAnObject);
        }
        let envelope: Envelope =
            serde_json::from_str(text).map_err(EnvelopeError::MalformedJson)?;
        let Some(Value::String(kind)) = envelope.kind else {
            return Err(EnvelopeError::MissingType);
        };
        let payload = match envelope.payload {
            None => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(EnvelopeError::PayloadNotObject),
        };
        Ok(TypedMessage { kind, payload })
    }
}

/// Routes one complete text message to the right callback.
pub(crate) fn dispatch_text(callbacks: &Callbacks, session: &Session, text: &str) {
    if let Some(on_typed) = &callbacks.on_typed_message {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_rule() {
        let e = TypedMessage::parse(r#" {"type":"room.join","payload":{"room":"a"}}"#).unwrap();
        assert_eq!(e.kind, "room.join");
        assert_eq!(e.payload["room"], "a");
        assert!(TypedMessage::parse(r#"{"type":"x"}"#)
            .unwrap()
            .payload
            .is_empty());
        assert!(matches!(
            TypedMessage::parse("ping"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            TypedMessage::parse("[1]"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            TypedMessage::parse("{\"type\":"),
            Err(EnvelopeError::MalformedJson(_))
        ));
        assert!(matches!(
            TypedMessage::parse(r#"{"type":5}"#),
            Err(EnvelopeError::MissingType)
        ));
        assert!(matches!(
            TypedMessage::parse(r#"{"payload":{}}"#),
            Err(EnvelopeError::MissingType)
        ));
        assert!(matches!(
            TypedMessage::parse(r#"{"type":"x","payload":"s"}"#),
            Err(EnvelopeError::PayloadNotObject)
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_only_objects_are_parsed(text in ".{0,200}") {
            let parsed = TypedMessage::parse(&text);
            if !text.trim_start().starts_with('{') {
                proptest::prop_assert!(matches!(parsed, Err(EnvelopeError::NotAnObject)));
            }
        }

        #[test]
        fn any_event_round_trips(
            kind in ".{0,40}",
            fields in proptest::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..5),
        ) {
            let payload: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let text = serde_json::json!({ "type": kind, "payload": payload }).to_string();
            let event = TypedMessage::parse(&text).unwrap();
            proptest::prop_assert_eq!(event.kind, kind);
            proptest::prop_assert_eq!(event.payload, payload);
        }
    }
}
