//! Property tests of the protocol layer against what a hostile or broken peer can send: arbitrary bytes,
//! arbitrary splits of valid streams, arbitrary headers and extension offers. Each property runs
//! `PROPTEST_CASES` cases (256 by default; set it higher for a longer hunt).

use proptest::prelude::*;

use std::sync::Arc;

use super::codec::{Decoder, Flow, Inbound, Limits};
use super::deflate::{Audience, Deflater, Inflater};
use super::handshake::{respond, Handshake, Offerable, MAX_REQUEST_LEN};
use crate::error::ProtocolError;

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
/// Deflate enabled; no subprotocol spoken.
const OFFERABLE: Offerable<'static> = Offerable {
    deflate: true,
    subprotocols: &[],
};
const LIMITS: Limits = Limits {
    max_message_size: 1 << 16,
    max_frames: 64,
};

/// One decoded message, owned, for comparisons.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
}

/// Feeds `stream` to a fresh decoder in pieces cut at `cuts` (positions, any order, any count); returns
/// the messages and the error that ended it, if any. With `deflate`, the session negotiated
/// permessage-deflate and the decoder has an inflater.
fn decode_in_pieces(
    stream: &[u8],
    cuts: &[usize],
    deflate: bool,
) -> (Vec<Message>, Option<ProtocolError>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut decoder = Decoder::default();
    let mut inflater = deflate.then(Inflater::new);
    let mut out = Vec::new();
    for piece in points.windows(2) {
        let mut input = stream[piece[0]..piece[1]].to_vec();
        let result = decoder.decode(&mut input, LIMITS, inflater.as_mut(), |m| {
            out.push(match m {
                Inbound::Text(t) => Message::Text(t.to_owned()),
                Inbound::Binary(b) => Message::Binary(b.to_vec()),
                Inbound::Ping(p) => Message::Ping(p.to_vec()),
                Inbound::Pong => Message::Pong,
                Inbound::Close(c) => Message::Close(c.map(|(code, r)| (code, r.to_owned()))),
            });
            Flow::Continue
        });
        if let Err(e) = result {
            return (out, Some(e));
        }
    }
    (out, None)
}

fn frame(out: &mut Vec<u8>, first_byte: u8, payload: &[u8]) {
    loadtest::codec::push_raw_frame(out, first_byte, payload, MASK);
}

/// A message and how a client splits it: text or binary payload, cut into fragments at `cuts`, with a
/// ping after each fragment when `pings` says so.
fn message_strategy() -> impl Strategy<Value = (Message, Vec<usize>, Vec<bool>)> {
    let payload = prop_oneof![
        ".{0,300}".prop_map(Message::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Message::Binary),
    ];
    (
        payload,
        proptest::collection::vec(0usize..300, 0..6),
        proptest::collection::vec(any::<bool>(), 0..6),
    )
}

/// The bytes a client sends for `message` split at `cuts`, with interleaved pings, and what a decoder must
/// hand out for them: the pings as they come, then the message. With a `deflater`, the message is sent
/// compressed (RSV1 on its first frame).
fn encode_fragmented(
    message: &Message,
    cuts: &[usize],
    pings: &[bool],
    deflater: Option<&mut Deflater>,
) -> (Vec<u8>, Vec<Message>) {
    let (opcode, payload): (u8, &[u8]) = match message {
        Message::Text(t) => (0x1, t.as_bytes()),
        Message::Binary(b) => (0x2, b),
        _ => unreachable!("only data messages are generated"),
    };
    let compressed;
    let (opcode, payload) = match deflater {
        None => (opcode, payload),
        Some(deflater) => {
            // Compressed even when that does not make it smaller: a client may.
            compressed = deflater
                .compress_always(payload, Audience::Session)
                .to_vec();
            (opcode | 0x40, &compressed[..])
        }
    };
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
    points.push(0);
    points.push(payload.len());
    points.sort_unstable();
    points.dedup();
    if points.len() == 1 {
        points.push(payload.len()); // An empty message: one empty final frame.
    }
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let pieces = points.len() - 1;
    for (i, piece) in points.windows(2).enumerate() {
        let fin = if i == pieces - 1 { 0x80 } else { 0 };
        let code = if i == 0 { opcode } else { 0x0 };
        frame(&mut out, fin | code, &payload[piece[0]..piece[1]]);
        if pings.get(i).copied().unwrap_or(false) && i < pieces - 1 {
            frame(&mut out, 0x89, b"p");
            expected.push(Message::Ping(b"p".to_vec()));
        }
    }
    expected.push(message.clone());
    (out, expected)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_any_split_decodes_alike(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        for deflate in [false, true] {
            let whole = decode_in_pieces(&bytes, &[], deflate);
            let split = decode_in_pieces(&bytes, &cuts, deflate);
            prop_assert_eq!(whole, split);
        }
    }

    #[test]
    fn valid_messages_survive_any_fragmentation_and_any_split(
        messages in proptest::collection::vec(message_strategy(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (message, fragment_cuts, pings) in &messages {
            let (bytes, messages) = encode_fragmented(message, fragment_cuts, pings, None);
            stream.extend(bytes);
            expected.extend(messages);
        }
        for deflate in [false, true] {
            let (got, error) = decode_in_pieces(&stream, &cuts, deflate);
            prop_assert_eq!(error, None);
            prop_assert_eq!(&got, &expected);
        }
    }

    #[test]
    fn compressed_messages_survive_any_fragmentation_and_split(
        messages in proptest::collection::vec((message_strategy(), any::<bool>()), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut deflater = Deflater::new(Arc::default(), Some(0));
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for ((message, fragment_cuts, pings), compress) in &messages {
            let deflater = compress.then_some(&mut deflater);
            let (bytes, messages) = encode_fragmented(message, fragment_cuts, pings, deflater);
            stream.extend(bytes);
            expected.extend(messages);
        }
        let (got, error) = decode_in_pieces(&stream, &cuts, true);
        prop_assert_eq!(error, None);
        prop_assert_eq!(&got, &expected);
        // Without deflate negotiated, the first compressed frame is a protocol error (RSV1).
        if messages.iter().any(|(_, compress)| *compress) {
            let (_, error) = decode_in_pieces(&stream, &cuts, false);
            prop_assert_eq!(error, Some(ProtocolError::ReservedBits));
        }
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header_alone(
        extra in 1u64..(1 << 40),
        opcode in prop_oneof![Just(0x81u8), Just(0x82u8), Just(0x01u8), Just(0x02u8)],
    ) {
        let mut header = Vec::new();
        let len = LIMITS.max_message_size as u64 + extra;
        loadtest::codec::push_masked_header(&mut header, opcode, len, MASK);
        let (_, error) = decode_in_pieces(&header, &[], false);
        prop_assert_eq!(error, Some(ProtocolError::MessageTooBig { size: len, limit: LIMITS.max_message_size }));
    }

    #[test]
    fn arbitrary_upgrade_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..(MAX_REQUEST_LEN + 64))) {
        match respond(&bytes, OFFERABLE) {
            Handshake::Accept { consumed, .. } => prop_assert!(consumed <= bytes.len()),
            Handshake::Reject { response, .. } => prop_assert!(response.starts_with(b"HTTP/1.1 4")),
            Handshake::Incomplete => prop_assert!(bytes.len() < MAX_REQUEST_LEN),
        }
    }

    #[test]
    fn any_header_order_case_and_extension_offer_upgrades_with_at_most_deflate(
        extensions in proptest::collection::vec("[ -~]{0,40}", 0..3),
        extra in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..5),
        upper in any::<bool>(),
        reversed in any::<bool>(),
        cut in any::<usize>(),
    ) {
        let case = |name: &str| if upper { name.to_ascii_uppercase() } else { name.to_owned() };
        let mut headers = vec![
            (case("Host"), "chat.example".to_owned()),
            (case("Upgrade"), "websocket".to_owned()),
            (case("Connection"), "Upgrade".to_owned()),
            (case("Sec-WebSocket-Key"), "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
            (case("Sec-WebSocket-Version"), "13".to_owned()),
        ];
        for offer in &extensions {
            headers.push((case("Sec-WebSocket-Extensions"), offer.trim().to_owned()));
        }
        for (name, value) in &extra {
            let lower = name.to_ascii_lowercase();
            if !lower.starts_with("sec-websocket") && !matches!(lower.as_str(), "host" | "upgrade" | "connection") {
                headers.push((name.clone(), value.trim().to_owned()));
            }
        }
        if reversed {
            headers.reverse();
        }
        let mut request = "GET /chat HTTP/1.1\r\n".to_owned();
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let bytes = request.as_bytes();
        let cut = cut % bytes.len();
        prop_assert!(matches!(respond(&bytes[..cut], OFFERABLE), Handshake::Incomplete));
        for enabled in [false, true] {
            let offerable = Offerable { deflate: enabled, ..OFFERABLE };
            match respond(bytes, offerable) {
                Handshake::Accept { response, consumed, agreed, .. } => {
                    prop_assert_eq!(consumed, bytes.len());
                    let text = String::from_utf8(response).unwrap().to_ascii_lowercase();
                    prop_assert!(text.starts_with("http/1.1 101"));
                    // One accepted set or none, never when disabled.
                    let answers = text.matches("sec-websocket-extensions: permessage-deflate;").count();
                    prop_assert_eq!(answers, usize::from(agreed.deflate.is_some()), "{}", text);
                    prop_assert!(enabled || agreed.deflate.is_none());
                    prop_assert_eq!(text.matches("sec-websocket-extensions").count(), answers);
                }
                other => prop_assert!(false, "refused: {:?}", other),
            }
        }
    }
}
