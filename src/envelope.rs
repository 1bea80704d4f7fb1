//! The typed-event envelope `{"type": "...", "ref": "...", "payload": {...}}`: what it is and how a text
//! is read as one ([`TypedMessage::parse`]), or why it is not one ([`EnvelopeError`]).
//!
//! It must not route or run anything; [`crate::dispatch`] does.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A typed event: `{"type": "...", "ref": "...", "payload": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedMessage {
    /// The event name, e.g. `chat.message`.
    pub kind: String,
    /// The client's reference for the request (`ref`, optional), for its reply to echo so the client can
    /// match them, as Phoenix's `ref` does.
    pub reference: Option<String>,
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
    /// `ref` is present but not a string.
    #[error("`ref` must be a string")]
    RefNotString,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(rename = "ref")]
    reference: Option<Value>,
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
        let reference = match envelope.reference {
            None | Some(Value::Null) => None,
            Some(Value::String(reference)) => Some(reference),
            Some(_) => return Err(EnvelopeError::RefNotString),
        };
        Ok(TypedMessage {
            kind,
            reference,
            payload,
        })
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
        let with_ref = TypedMessage::parse(r#"{"type":"x","ref":"7"}"#).unwrap();
        assert_eq!(with_ref.reference.as_deref(), Some("7"));
        assert!(matches!(
            TypedMessage::parse(r#"{"type":"x","ref":7}"#),
            Err(EnvelopeError::RefNotString)
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
