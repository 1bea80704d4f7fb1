//! Text messages into the typed-event parser: never a panic; what parses has the envelope's shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::TypedMessage;

fuzz_target!(|text: &str| {
    if let Ok(event) = TypedMessage::parse(text) {
        assert!(text.trim_start().starts_with('{'));
        let _ = event.payload.len();
    }
});
