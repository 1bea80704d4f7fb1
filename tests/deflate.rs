//! permessage-deflate (RFC 7692) on the wire, seen from raw clients that build and inflate every
//! compressed payload themselves with flate2.
//!
//! - Negotiation: the first acceptable `permessage-deflate` offer, over every offer of every
//!   `Sec-WebSocket-Extensions` line, is answered with exactly
//!   `permessage-deflate; server_no_context_takeover; client_no_context_takeover`, plus
//!   `; server_max_window_bits=N` when the offer named N (9 to 15). An offer with an unknown or duplicated
//!   parameter, a value on a `*_no_context_takeover`, a `server_max_window_bits` that is missing, not plain
//!   digits, outside 9 to 15 (8 included: zlib cannot compress with a 256-byte window), or a
//!   `client_max_window_bits` outside 8 to 15 is declined; with no acceptable offer, or with
//!   `WEBSOCKET_ENABLE_DEFLATE=false`, the answer has no extension and the session works uncompressed.
//!   Malformed elements never fail the upgrade.
//! - Messages: a compressed client message (fragmented or not, pings between its fragments) is
//!   delivered inflated; the server's messages of `WEBSOCKET_DEFLATE_MIN_SIZE` bytes or more go out
//!   compressed (RSV1 on the first frame, the trailing `00 00 ff ff` removed) and each inflates on its
//!   own (no context takeover); shorter ones, ones that do not shrink, and control frames go out plain.
//! - Close codes: RSV1 on a continuation or a control frame, or on a session without deflate, and RSV2 or
//!   RSV3 are 1002; a message inflating past `WEBSOCKET_MAX_MESSAGE_SIZE` is 1009; deflate data that does
//!   not inflate, or text that inflates to invalid UTF-8, is 1007.
//! - Rooms: with deflate and plain members on both shards, a text or binary broadcast (from a session on
//!   either shard or from `ServerHandle`) reaches each member compressed or plain as it negotiated, and
//!   `deflate_stats().messages_compressed` rises by exactly one per broadcast.
//! - The binary: the shipped `.env` negotiates deflate for the chat app; a decompression bomb (1 MiB on
//!   the wire inflating to 1 GiB) is closed with 1009 while the server's peak resident memory stays
//!   within the message limit plus a fixed slack, and the server serves the next client.

mod common;
mod library;

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use library::{
    client_frame, client_frame_with_first_byte, header_values, start, RawClient, WireFrame,
};
use roomcast::{RunningServer, Server, ServerHandle};

/// The one answer the server gives to an acceptable offer without `server_max_window_bits`.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const EXTENSIONS: &str = "Sec-WebSocket-Extensions";
/// What a sender removes from the end of a sync-flushed message and a receiver appends (RFC 7692 7.2.1).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;

/// `WEBSOCKET_DEFLATE_MIN_SIZE`'s default.
const DEFAULT_MIN_SIZE: usize = 64;
/// The most a test inflates from one server message.
const INFLATE_LIMIT: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------------
// Deflate as a client does it.

/// `data` compressed as a permessage-deflate sender does: raw deflate, a sync flush, the trailing
/// `00 00 ff ff` removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut out = sync_flushed(&mut Compress::new(Compression::default(), false), data);
    assert!(
        out.ends_with(&TRAILER),
        "a sync flush ends with 00 00 ff ff"
    );
    out.truncate(out.len() - TRAILER.len());
    out
}

/// Feeds all of `data` to `compress` and sync-flushes: the output ends on a byte boundary, with the
/// empty stored block `00 00 ff ff`.
fn sync_flushed(compress: &mut Compress, data: &[u8]) -> Vec<u8> {
    let start = compress.total_in();
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    loop {
        let consumed = (compress.total_in() - start) as usize;
        compress
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("compress");
        // Spare room left after a sync flush means the flush is complete.
        if (compress.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity().max(64));
    }
}

/// A compressed message's payload inflated as a receiver does: `00 00 ff ff` appended, a fresh raw
/// inflater (no context takeover: nothing from an earlier message may be needed), at most `limit` bytes.
fn inflate(payload: &[u8], limit: usize) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TRAILER);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len().saturating_mul(4).min(limit) + 64);
    loop {
        let before = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(
                &input[inflater.total_in() as usize..],
                &mut out,
                FlushDecompress::Sync,
            )
            .unwrap_or_else(|e| {
                panic!(
                    "a compressed server message does not inflate on its own: {e} \
                     (payload {} bytes, starts {:02x?})",
                    payload.len(),
                    &payload[..payload.len().min(16)]
                )
            });
        assert!(
            out.len() <= limit,
            "a server message inflates past {limit} bytes"
        );
        let room_left = out.len() < out.capacity();
        // A sender may end with a final block (BFINAL), after which the appended trailer is left over.
        if status == Status::StreamEnd || (inflater.total_in() as usize == input.len() && room_left)
        {
            return out;
        }
        assert!(
            !(room_left && (inflater.total_in(), inflater.total_out()) == before),
            "inflating stalled after {} of {} bytes: the deflate data is cut short",
            inflater.total_in(),
            input.len()
        );
        out.reserve(out.capacity().max(64));
    }
}

/// A masked client frame carrying `data` compressed, `first_byte` as given (`0xC1`: a compressed text
/// message in one frame).
fn compressed_frame(first_byte: u8, data: &[u8]) -> Vec<u8> {
    client_frame_with_first_byte(first_byte, &deflate(data))
}

/// A text that compresses well and is well over [`DEFAULT_MIN_SIZE`] bytes, tagged so that messages
/// cannot be confused.
fn long_text(tag: &str) -> String {
    format!(
        "{tag}: {}",
        "the quick brown fox jumps over the lazy dog; ".repeat(6)
    )
}

/// `len` bytes that deflate cannot shrink (xorshift output).
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Reading messages.

/// One message as the server sent it.
#[derive(Debug)]
struct Received {
    /// Text or binary.
    opcode: u8,
    /// RSV1 on its first frame.
    compressed: bool,
    /// The payload, inflated when it was compressed.
    data: Vec<u8>,
}

/// The next message, reassembled from its frames and inflated with a fresh inflater if compressed;
/// panics on a control frame, on RSV1 on a continuation frame, or on RSV2/RSV3.
fn read_message(client: &mut RawClient) -> Received {
    let first = client.expect_wire_frame();
    assert!(
        matches!(first.opcode(), TEXT | BINARY),
        "expected the first frame of a message, got {first:?}"
    );
    assert_eq!(
        first.first_byte & (RSV2 | RSV3),
        0,
        "RSV2/RSV3 set: {first:?}"
    );
    let mut payload = first.payload.clone();
    let mut fin = first.fin();
    while !fin {
        let next = client.expect_wire_frame();
        assert_eq!(
            next.first_byte & 0x7f,
            CONTINUATION,
            "expected a plain continuation frame (RSV bits clear), got {next:?}"
        );
        payload.extend_from_slice(&next.payload);
        fin = next.fin();
    }
    let data = if first.rsv1() {
        inflate(&payload, INFLATE_LIMIT)
    } else {
        payload
    };
    Received {
        opcode: first.opcode(),
        compressed: first.rsv1(),
        data,
    }
}

/// The next message must be `opcode` carrying `data`, compressed (RSV1) or plain as `compressed` says.
fn expect_message(client: &mut RawClient, opcode: u8, data: &[u8], compressed: bool, what: &str) {
    let got = read_message(client);
    assert_eq!(
        (got.opcode, got.compressed),
        (opcode, compressed),
        "{what}: (opcode, compressed) of a message of {} bytes",
        data.len()
    );
    assert!(
        got.data == data,
        "{what}: the message's bytes differ: expected {:?}, got {:?}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&got.data)
    );
}

/// The next frame must be an uncompressed close frame (`0x88`) with `code`, and the server must then end
/// the connection.
fn expect_close(client: &mut RawClient, code: u16, what: &str) {
    let frame: WireFrame = client.expect_wire_frame();
    assert_eq!(
        frame.close_code(),
        Some(code),
        "{what}: expected close {code}, got {frame:?} ({:?})",
        String::from_utf8_lossy(&frame.payload)
    );
    assert_eq!(
        frame.first_byte,
        FIN | CLOSE,
        "{what}: a close frame is never compressed"
    );
    assert!(
        client.connection_ends(),
        "{what}: the server did not end the connection after its close frame"
    );
}

// ---------------------------------------------------------------------------------------------------
// Servers and clients.

/// Echoes every text and binary message.
fn echo_server(pairs: &[(&str, &str)]) -> RunningServer {
    start(pairs, |s| {
        s.on_message(|session, text| session.send_text(text))
            .on_binary(|session, data| session.send_binary(data))
    })
}

/// Upgrades with one `Sec-WebSocket-Extensions` line per entry of `lines`; returns the client and every
/// `Sec-WebSocket-Extensions` value of the answer.
fn offer(addr: SocketAddr, lines: &[&str]) -> (RawClient, Vec<String>) {
    let headers: Vec<(&str, &str)> = lines.iter().map(|line| (EXTENSIONS, *line)).collect();
    let (client, head) = RawClient::upgrade_with_headers(addr, &headers);
    (client, header_values(&head, EXTENSIONS))
}

/// A client that offered plain `permessage-deflate` and had it accepted.
fn deflate_client(addr: SocketAddr) -> RawClient {
    let (client, answer) = offer(addr, &["permessage-deflate"]);
    assert_eq!(answer, [ANSWER], "the answer to a bare offer");
    client
}

/// On an echo server: a compressed text comes back compressed and inflates to itself, and so does a
/// plain one.
fn assert_compressing_session(client: &mut RawClient, what: &str) {
    let text = long_text(what);
    client.send(&compressed_frame(FIN | RSV1 | TEXT, text.as_bytes()));
    expect_message(client, TEXT, text.as_bytes(), true, what);
    client.send(&client_frame(TEXT, true, text.as_bytes()));
    expect_message(client, TEXT, text.as_bytes(), true, what);
}

/// On an echo server, for a client that limited the server's window: its compressed text is inflated and
/// comes back plain, as everything the server sends it.
fn assert_inflating_only_session(client: &mut RawClient, what: &str) {
    let text = long_text(what);
    client.send(&compressed_frame(FIN | RSV1 | TEXT, text.as_bytes()));
    expect_message(client, TEXT, text.as_bytes(), false, what);
    client.send(&client_frame(TEXT, true, text.as_bytes()));
    expect_message(client, TEXT, text.as_bytes(), false, what);
}

/// On an echo server: a long, compressible text comes back plain.
fn assert_plain_session(client: &mut RawClient, what: &str) {
    let text = long_text(what);
    client.send(&client_frame(TEXT, true, text.as_bytes()));
    expect_message(client, TEXT, text.as_bytes(), false, what);
}

/// Runs `check` for every case, collecting the failures (case name and panic message) instead of
/// stopping at the first, so that one run reports every row the server gets wrong.
fn check_all<C>(cases: &[C], name: impl Fn(&C) -> String, check: impl Fn(&C)) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            catch_unwind(AssertUnwindSafe(|| check(case)))
                .err()
                .map(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{}: {message}", name(case))
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// Negotiation.

#[test]
fn acceptable_offers_get_the_one_answer_and_the_session_compresses_unless_our_window_was_limited() {
    let server = echo_server(&[]);
    let addr = server.websocket_addr();
    let with_bits = |n: u8| format!("{ANSWER}; server_max_window_bits={n}");
    let mut cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "a bare offer",
            vec!["permessage-deflate".into()],
            ANSWER.into(),
        ),
        (
            "browsers' offer: client_max_window_bits without a value",
            vec!["permessage-deflate; client_max_window_bits".into()],
            ANSWER.into(),
        ),
        (
            "both no_context_takeover parameters",
            vec!["permessage-deflate; server_no_context_takeover; client_no_context_takeover".into()],
            ANSWER.into(),
        ),
        (
            "client_max_window_bits=8",
            vec!["permessage-deflate; client_max_window_bits=8".into()],
            ANSWER.into(),
        ),
        (
            "client_max_window_bits=15",
            vec!["permessage-deflate; client_max_window_bits=15".into()],
            ANSWER.into(),
        ),
        (
            "a quoted value",
            vec![r#"permessage-deflate; client_max_window_bits="10""#.into()],
            ANSWER.into(),
        ),
        (
            "every parameter at once",
            vec!["permessage-deflate; client_max_window_bits; server_max_window_bits=15; \
                  server_no_context_takeover; client_no_context_takeover"
                .into()],
            with_bits(15),
        ),
        (
            "the first offer declined (server_max_window_bits=7), the second accepted",
            vec![
                "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=12"
                    .into(),
            ],
            with_bits(12),
        ),
        (
            "the first offer declined (unknown parameter), the second accepted",
            vec!["permessage-deflate; foo, permessage-deflate".into()],
            ANSWER.into(),
        ),
        (
            "two acceptable offers: the first wins",
            vec![
                "permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=11"
                    .into(),
            ],
            with_bits(10),
        ),
        (
            "several header lines: another extension, a declined offer, then an acceptable one",
            vec![
                "x-webkit-deflate-frame".into(),
                "permessage-deflate; client_max_window_bits=16".into(),
                "permessage-deflate; server_max_window_bits=13".into(),
            ],
            with_bits(13),
        ),
        (
            "two acceptable offers on two lines: the first line's wins",
            vec![
                "permessage-deflate; server_max_window_bits=11".into(),
                "permessage-deflate; server_max_window_bits=10".into(),
            ],
            with_bits(11),
        ),
        (
            "other extensions around the offer are ignored",
            vec!["x-webkit-deflate-frame, permessage-deflate; client_max_window_bits, foo-ext; bar=1".into()],
            ANSWER.into(),
        ),
        (
            "a malformed value on one line, an acceptable offer on the next",
            vec![
                "permessage-deflate; server_max_window_bits==9".into(),
                "permessage-deflate; server_max_window_bits=14".into(),
            ],
            with_bits(14),
        ),
        (
            "an unterminated quote on one line, an acceptable offer on the next",
            vec![
                r#"permessage-deflate; client_max_window_bits="10"#.into(),
                "permessage-deflate".into(),
            ],
            ANSWER.into(),
        ),
    ];
    for n in 8..=15u8 {
        cases.push((
            "server_max_window_bits=N is echoed",
            vec![format!("permessage-deflate; server_max_window_bits={n}")],
            with_bits(n),
        ));
    }
    check_all(
        &cases,
        |(what, lines, _)| format!("{what} {lines:?}"),
        |(what, lines, expected)| {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (mut client, answer) = offer(addr, &lines);
            assert_eq!(answer, [expected.as_str()], "the answer");
            // A client that limited the server's window below 15 bits is sent nothing compressed.
            if expected.contains("server_max_window_bits=") && !expected.ends_with("=15") {
                assert_inflating_only_session(&mut client, what);
            } else {
                assert_compressing_session(&mut client, what);
            }
        },
    );
    server.stop();
}

#[test]
fn unacceptable_offers_get_no_extension_and_the_session_works_plain() {
    let server = echo_server(&[]);
    let addr = server.websocket_addr();
    let cases: Vec<(&str, &str)> = vec![
        ("an unknown parameter", "permessage-deflate; foo"),
        (
            "an unknown parameter with a value",
            "permessage-deflate; foo=bar",
        ),
        ("an empty parameter name", "permessage-deflate; =10"),
        (
            "a duplicated client_max_window_bits",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
        ),
        (
            "a duplicated server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ),
        (
            "a duplicated server_max_window_bits",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
        ),
        (
            "a value on server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ),
        (
            "a value on client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=true",
        ),
        (
            "server_max_window_bits without a value",
            "permessage-deflate; server_max_window_bits",
        ),
        (
            "server_max_window_bits with an empty value",
            "permessage-deflate; server_max_window_bits=",
        ),
        (
            "server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=7",
        ),
        (
            "server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=16",
        ),
        (
            "server_max_window_bits=0",
            "permessage-deflate; server_max_window_bits=0",
        ),
        (
            "server_max_window_bits too large for any integer",
            "permessage-deflate; server_max_window_bits=99999999999999999999999",
        ),
        (
            "server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=+9",
        ),
        (
            "server_max_window_bits=-9",
            "permessage-deflate; server_max_window_bits=-9",
        ),
        (
            "server_max_window_bits=1a",
            "permessage-deflate; server_max_window_bits=1a",
        ),
        (
            "server_max_window_bits=09 (a leading zero)",
            "permessage-deflate; server_max_window_bits=09",
        ),
        (
            "client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=7",
        ),
        (
            "client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=16",
        ),
        (
            "client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=abc",
        ),
        (
            "two offers, both declined",
            "permessage-deflate; server_max_window_bits=7, permessage-deflate; foo",
        ),
        ("another extension only", "x-webkit-deflate-frame"),
        ("separators only", ";;==,,"),
        (
            "an unterminated quote",
            r#"permessage-deflate; server_max_window_bits="9"#,
        ),
    ];
    check_all(
        &cases,
        |(what, line)| format!("{what} ({line:?})"),
        |(what, line)| {
            let (mut client, answer) = offer(addr, &[line]);
            assert!(answer.is_empty(), "expected no extension, got {answer:?}");
            assert_plain_session(&mut client, what);
        },
    );
    server.stop();
}

#[test]
fn with_deflate_disabled_an_offer_gets_no_extension_and_rsv1_is_1002() {
    let server = echo_server(&[("WEBSOCKET_ENABLE_DEFLATE", "false")]);
    let (mut client, answer) = offer(
        server.websocket_addr(),
        &["permessage-deflate; client_max_window_bits"],
    );
    assert!(answer.is_empty(), "expected no extension, got {answer:?}");
    assert_plain_session(&mut client, "deflate disabled");
    client.send(&compressed_frame(
        FIN | RSV1 | TEXT,
        long_text("compressed anyway").as_bytes(),
    ));
    expect_close(&mut client, 1002, "RSV1 with deflate disabled");
    server.stop();
}

// ---------------------------------------------------------------------------------------------------
// Messages.

#[test]
fn compressed_client_messages_are_delivered_and_echoed_compressed() {
    let server = echo_server(&[]);
    let handle = server.handle();
    let mut client = deflate_client(server.websocket_addr());
    let start = futures_lite::future::block_on(handle.deflate_stats());

    let text = long_text("compressed text");
    client.send(&compressed_frame(FIN | RSV1 | TEXT, text.as_bytes()));
    expect_message(&mut client, TEXT, text.as_bytes(), true, "compressed text");

    // Binary, with bytes that are not UTF-8.
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend_from_slice(&[0xff; 300]);
    client.send(&compressed_frame(FIN | RSV1 | BINARY, &data));
    expect_message(&mut client, BINARY, &data, true, "compressed binary");

    // A plain message on a deflate session is fine too, and its echo is compressed.
    let plain = long_text("plain text");
    client.send(&client_frame(TEXT, true, plain.as_bytes()));
    expect_message(&mut client, TEXT, plain.as_bytes(), true, "plain text");

    let end = futures_lite::future::block_on(handle.deflate_stats());
    assert_eq!(
        end.messages_inflated - start.messages_inflated,
        2,
        "messages_inflated counts the two compressed client messages"
    );
    assert_eq!(
        end.messages_compressed - start.messages_compressed,
        3,
        "messages_compressed counts the three compressed echoes"
    );
    drop(client);
    server.stop();
}

#[test]
fn a_final_block_and_an_empty_compressed_message_are_delivered() {
    let server = echo_server(&[]);
    let mut client = deflate_client(server.websocket_addr());
    // RFC 7692 7.2.3.4: a sender may end a message with a block that has BFINAL set instead of a sync
    // flush; the 00 00 ff ff the receiver appends is then past the end of the stream.
    let text = long_text("ends in a final block");
    let mut compress = Compress::new(Compression::default(), false);
    let mut payload = Vec::with_capacity(text.len() + 64);
    compress
        .compress_vec(text.as_bytes(), &mut payload, FlushCompress::Finish)
        .expect("compress");
    client.send(&client_frame_with_first_byte(FIN | RSV1 | TEXT, &payload));
    expect_message(&mut client, TEXT, text.as_bytes(), true, "final block");
    // RFC 7692 7.2.3.6: an empty message compressed is the single byte 00.
    client.send(&client_frame_with_first_byte(FIN | RSV1 | TEXT, &[0x00]));
    expect_message(&mut client, TEXT, b"", false, "empty message");
    drop(client);
    server.stop();
}

#[test]
fn every_compressed_message_inflates_on_its_own() {
    // No context takeover: the same text three times must not refer back to an earlier message, so each
    // inflates with a fresh inflater (a back-reference into an earlier message would fail to inflate).
    let server = echo_server(&[]);
    let mut client = deflate_client(server.websocket_addr());
    let text = long_text("again and again");
    for n in 0..3 {
        client.send(&compressed_frame(FIN | RSV1 | TEXT, text.as_bytes()));
        expect_message(
            &mut client,
            TEXT,
            text.as_bytes(),
            true,
            &format!("copy {n}"),
        );
    }
    drop(client);
    server.stop();
}

#[test]
fn short_and_incompressible_messages_are_sent_plain() {
    let server = echo_server(&[]);
    let mut client = deflate_client(server.websocket_addr());

    // One byte under the minimum: plain, even when it arrived compressed.
    let short = "a".repeat(DEFAULT_MIN_SIZE - 1);
    client.send(&compressed_frame(FIN | RSV1 | TEXT, short.as_bytes()));
    expect_message(&mut client, TEXT, short.as_bytes(), false, "63 bytes");

    // Exactly the minimum: compressed.
    let at_minimum = "a".repeat(DEFAULT_MIN_SIZE);
    client.send(&client_frame(TEXT, true, at_minimum.as_bytes()));
    expect_message(&mut client, TEXT, at_minimum.as_bytes(), true, "64 bytes");

    // Random bytes do not shrink: plain.
    let random = incompressible(300);
    assert!(
        deflate(&random).len() >= random.len(),
        "the test's random bytes compress"
    );
    client.send(&client_frame(BINARY, true, &random));
    expect_message(&mut client, BINARY, &random, false, "incompressible");

    // A short text and a ping: still plain, still answered.
    client.send(&client_frame(TEXT, true, b"hi"));
    expect_message(&mut client, TEXT, b"hi", false, "2 bytes");
    drop(client);
    server.stop();
}

#[test]
fn the_minimum_size_is_configurable() {
    let server = echo_server(&[("WEBSOCKET_DEFLATE_MIN_SIZE", "1000")]);
    let mut client = deflate_client(server.websocket_addr());
    let under = "b".repeat(999);
    client.send(&client_frame(TEXT, true, under.as_bytes()));
    expect_message(&mut client, TEXT, under.as_bytes(), false, "999 bytes");
    let at = "b".repeat(1000);
    client.send(&client_frame(TEXT, true, at.as_bytes()));
    expect_message(&mut client, TEXT, at.as_bytes(), true, "1000 bytes");
    drop(client);
    server.stop();
}

#[test]
fn control_frames_are_never_compressed() {
    let server = echo_server(&[]);
    let mut client = deflate_client(server.websocket_addr());
    // A ping payload of 125 bytes (the most a control frame carries) that would compress well.
    let payload = [b'z'; 125];
    client.send(&client_frame(PING, true, &payload));
    let pong = client.expect_wire_frame();
    assert_eq!(pong.first_byte, FIN | PONG, "the pong is plain: {pong:?}");
    assert_eq!(pong.payload, payload);
    drop(client);
    server.stop();
}

#[test]
fn a_fragmented_compressed_message_with_a_ping_between_fragments_is_delivered() {
    let server = echo_server(&[]);
    let handle = server.handle();
    let mut client = deflate_client(server.websocket_addr());
    let before = futures_lite::future::block_on(handle.deflate_stats()).messages_inflated;

    let text = long_text("in three fragments").repeat(3);
    let compressed = deflate(text.as_bytes());
    let third = compressed.len() / 3;
    let (one, rest) = compressed.split_at(third);
    let (two, three) = rest.split_at(third);
    // RSV1 on the first frame only; the continuation frames carry the rest of the deflate stream.
    client.send(&client_frame_with_first_byte(RSV1 | TEXT, one));
    client.send(&client_frame(PING, true, b"between"));
    let pong = client.expect_wire_frame();
    assert_eq!(
        (pong.first_byte, pong.payload.as_slice()),
        (FIN | PONG, &b"between"[..]),
        "the ping between fragments is answered at once"
    );
    client.send(&client_frame(CONTINUATION, false, two));
    client.send(&client_frame(PING, true, b"again"));
    let pong = client.expect_wire_frame();
    assert_eq!(
        (pong.first_byte, pong.payload.as_slice()),
        (FIN | PONG, &b"again"[..])
    );
    client.send(&client_frame(CONTINUATION, true, three));
    expect_message(
        &mut client,
        TEXT,
        text.as_bytes(),
        true,
        "the reassembled message",
    );
    assert_eq!(
        futures_lite::future::block_on(handle.deflate_stats()).messages_inflated - before,
        1,
        "a message in three frames is inflated once"
    );

    // A plain fragmented message on the same session still works.
    let plain = long_text("plain fragments");
    let (a, b) = plain.as_bytes().split_at(10);
    client.send(&client_frame(TEXT, false, a));
    client.send(&client_frame(CONTINUATION, true, b));
    expect_message(&mut client, TEXT, plain.as_bytes(), true, "plain fragments");
    drop(client);
    server.stop();
}

// ---------------------------------------------------------------------------------------------------
// Close codes.

/// Opens a deflate session on `server`, proves it works, sends `bytes` and expects close `code`.
fn expect_close_after(server: &RunningServer, bytes: &[u8], code: u16, what: &str) {
    let mut client = deflate_client(server.websocket_addr());
    let ok = long_text("still fine");
    client.send(&compressed_frame(FIN | RSV1 | TEXT, ok.as_bytes()));
    expect_message(&mut client, TEXT, ok.as_bytes(), true, what);
    client.send(bytes);
    expect_close(&mut client, code, what);
}

#[test]
fn reserved_bits_in_the_wrong_place_are_1002() {
    let server = echo_server(&[]);
    let text = long_text("split");
    let compressed = deflate(text.as_bytes());
    let (head, tail) = compressed.split_at(compressed.len() / 2);

    let mut after_compressed_start = client_frame_with_first_byte(RSV1 | TEXT, head);
    after_compressed_start.extend(client_frame_with_first_byte(
        FIN | RSV1 | CONTINUATION,
        tail,
    ));
    let mut after_plain_start = client_frame(TEXT, false, b"plain start ");
    after_plain_start.extend(client_frame_with_first_byte(
        FIN | RSV1 | CONTINUATION,
        &deflate(b"compressed end"),
    ));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "RSV1 on a continuation of a compressed message",
            after_compressed_start,
        ),
        (
            "RSV1 on a continuation of a plain message",
            after_plain_start,
        ),
        (
            "RSV1 on a ping",
            client_frame_with_first_byte(FIN | RSV1 | PING, b"p"),
        ),
        (
            "RSV1 on a pong",
            client_frame_with_first_byte(FIN | RSV1 | PONG, b"p"),
        ),
        (
            "RSV2 on a text frame",
            client_frame_with_first_byte(FIN | RSV2 | TEXT, b"rsv2"),
        ),
        (
            "RSV3 on a text frame",
            client_frame_with_first_byte(FIN | RSV3 | TEXT, b"rsv3"),
        ),
        (
            "RSV1 and RSV2 on a compressed text frame",
            client_frame_with_first_byte(FIN | RSV1 | RSV2 | TEXT, &deflate(b"rsv1 and rsv2")),
        ),
    ];
    check_all(
        &cases,
        |(what, _)| what.to_string(),
        |(what, bytes)| expect_close_after(&server, bytes, 1002, what),
    );
    server.stop();
}

#[test]
fn rsv1_on_a_session_whose_offer_was_declined_is_1002() {
    let server = echo_server(&[]);
    let (mut client, answer) = offer(
        server.websocket_addr(),
        &["permessage-deflate; server_max_window_bits=7"],
    );
    assert!(answer.is_empty(), "expected no extension, got {answer:?}");
    assert_plain_session(&mut client, "declined");
    client.send(&compressed_frame(
        FIN | RSV1 | TEXT,
        long_text("compressed anyway").as_bytes(),
    ));
    expect_close(&mut client, 1002, "RSV1 after a declined offer");
    server.stop();
}

#[test]
fn a_message_inflating_past_the_limit_is_1009_and_one_at_the_limit_is_delivered_however_large_compressed(
) {
    let server = echo_server(&[("WEBSOCKET_MAX_MESSAGE_SIZE", "1024")]);
    let mut client = deflate_client(server.websocket_addr());
    let at_limit = vec![0u8; 1024];
    client.send(&compressed_frame(FIN | RSV1 | BINARY, &at_limit));
    expect_message(&mut client, BINARY, &at_limit, true, "1024 bytes inflated");
    // Incompressible data at the limit, compressed anyway (as Python `websockets` and Node `ws` do), is a
    // few bytes over the limit on the wire: still delivered, since the limit counts inflated bytes.
    let noise = incompressible(1024);
    let mut stored = sync_flushed(&mut Compress::new(Compression::none(), false), &noise);
    stored.truncate(stored.len() - TRAILER.len());
    assert!(stored.len() > 1024, "stored blocks add their headers");
    client.send(&client_frame_with_first_byte(FIN | RSV1 | BINARY, &stored));
    expect_message(
        &mut client,
        BINARY,
        &noise,
        false,
        "1024 incompressible bytes",
    );
    drop(client);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "1025 bytes inflated",
            compressed_frame(FIN | RSV1 | BINARY, &[0u8; 1025]),
        ),
        (
            "500 kB inflated from under 1 kB",
            compressed_frame(FIN | RSV1 | BINARY, &vec![0u8; 500_000]),
        ),
        ("text, 4096 bytes inflated", {
            let text = "x".repeat(4096);
            compressed_frame(FIN | RSV1 | TEXT, text.as_bytes())
        }),
        ("2000 bytes inflated from two fragments", {
            let compressed = deflate(&[0u8; 2000]);
            let (a, b) = compressed.split_at(compressed.len() / 2);
            let mut frames = client_frame_with_first_byte(RSV1 | BINARY, a);
            frames.extend(client_frame(CONTINUATION, true, b));
            frames
        }),
    ];
    for (what, bytes) in &cases {
        assert!(
            bytes.len() < 1024,
            "{what}: the frame itself is under the limit"
        );
    }
    check_all(
        &cases,
        |(what, _)| what.to_string(),
        |(what, bytes)| {
            let mut client = deflate_client(server.websocket_addr());
            client.send(bytes);
            expect_close(&mut client, 1009, what);
        },
    );
    server.stop();
}

#[test]
fn deflate_data_that_does_not_inflate_and_compressed_invalid_utf8_are_1007() {
    let server = echo_server(&[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a reserved block type (BTYPE=11)",
            client_frame_with_first_byte(FIN | RSV1 | TEXT, &[0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "a stored block whose LEN and NLEN disagree",
            client_frame_with_first_byte(
                FIN | RSV1 | BINARY,
                &[0x00, 0x05, 0x00, 0x05, 0x00, b'h', b'e', b'l', b'l', b'o'],
            ),
        ),
        (
            "text inflating to invalid UTF-8",
            compressed_frame(FIN | RSV1 | TEXT, &[b'o', b'k', 0xff, 0xfe, b'!']),
        ),
        ("fragmented text inflating to invalid UTF-8", {
            let compressed = deflate(&[0xc3; 200]);
            let (a, b) = compressed.split_at(compressed.len() / 2);
            let mut frames = client_frame_with_first_byte(RSV1 | TEXT, a);
            frames.extend(client_frame(CONTINUATION, true, b));
            frames
        }),
    ];
    check_all(
        &cases,
        |(what, _)| what.to_string(),
        |(what, bytes)| expect_close_after(&server, bytes, 1007, what),
    );
    server.stop();
}

// ---------------------------------------------------------------------------------------------------
// Rooms across shards.

/// The room every member of the mixed-room test joins.
const ROOM: &str = "mix";
/// How many connections of each kind the set-up may open while placing members.
const MAX_CONNECTIONS: usize = 64;

/// `on_open` tells the client its shard (`shard:N`); `join:R` joins R; `broadcast:R:TEXT` broadcasts
/// TEXT to R; a binary message is broadcast to [`ROOM`] as binary.
fn room_server() -> RunningServer {
    let unlimited = [
        ("SERVER_IO_THREADS", "2"),
        ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
    ];
    start(&unlimited, |s: Server| {
        s.on_open(|session| session.send_text(&format!("shard:{}", session.shard())))
            .on_message(|session, text| {
                if let Some(room) = text.strip_prefix("join:") {
                    session.join_room(room).expect("no authorization hook");
                    session.send_text(&format!("joined:{room}"));
                } else if let Some((room, body)) = text
                    .strip_prefix("broadcast:")
                    .and_then(|rest| rest.split_once(':'))
                {
                    session.broadcast_text_to_room(room, body);
                } else {
                    session.send_text(&format!("unexpected: {text}"));
                }
            })
            .on_binary(|session, data| session.broadcast_binary_to_room(ROOM, data))
    })
}

/// A room member: its connection, its shard, and whether it negotiated deflate.
struct Member {
    client: RawClient,
    shard: usize,
    deflate: bool,
    name: String,
}

/// Opens deflate and plain clients until each of the two shards has one of each; the four members.
fn members_of_each_kind_on_both_shards(server: &RunningServer) -> Vec<Member> {
    assert_eq!(
        server.handle().shard_count(),
        2,
        "the test needs two shards"
    );
    let addr = server.websocket_addr();
    let mut members: Vec<Member> = Vec::new();
    let has = |members: &[Member], shard: usize, deflate: bool| {
        members
            .iter()
            .any(|m| m.shard == shard && m.deflate == deflate)
    };
    for deflate in [true, false] {
        for n in 0..MAX_CONNECTIONS {
            if has(&members, 0, deflate) && has(&members, 1, deflate) {
                break;
            }
            let mut client = if deflate {
                deflate_client(addr)
            } else {
                let (client, answer) = offer(addr, &[]);
                assert!(answer.is_empty(), "no offer, no extension: {answer:?}");
                client
            };
            let hello = read_message(&mut client);
            assert!(!hello.compressed, "a 7-byte message is sent plain");
            let hello = String::from_utf8_lossy(&hello.data).into_owned();
            let shard: usize = hello
                .strip_prefix("shard:")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("on_open should send shard:N, sent {hello:?}"));
            assert!(shard < 2, "shard index {shard} out of range");
            if !has(&members, shard, deflate) {
                members.push(Member {
                    client,
                    shard,
                    deflate,
                    name: format!(
                        "{} client {n} on shard {shard}",
                        if deflate { "deflate" } else { "plain" }
                    ),
                });
            }
        }
    }
    for shard in [0, 1] {
        for deflate in [true, false] {
            assert!(
                has(&members, shard, deflate),
                "after {MAX_CONNECTIONS} connections no {} client landed on shard {shard}",
                if deflate { "deflate" } else { "plain" }
            );
        }
    }
    members
}

/// Every member gets the next message as `opcode` with `data`: compressed for deflate members, plain for
/// the others.
fn expect_everyone(members: &mut [Member], opcode: u8, data: &[u8], what: &str) {
    for member in members.iter_mut() {
        let deflate = member.deflate;
        expect_message(
            &mut member.client,
            opcode,
            data,
            deflate,
            &format!("{what}, at {}", member.name),
        );
    }
}

/// Runs `broadcast`, checks that every member receives it as it should, and that it was compressed
/// exactly once.
fn broadcast_once(
    handle: &ServerHandle,
    members: &mut [Member],
    what: &str,
    opcode: u8,
    data: &[u8],
    broadcast: impl FnOnce(&mut [Member]),
) {
    let before = futures_lite::future::block_on(handle.deflate_stats()).messages_compressed;
    broadcast(members);
    expect_everyone(members, opcode, data, what);
    let after = futures_lite::future::block_on(handle.deflate_stats()).messages_compressed;
    assert_eq!(
        after - before,
        1,
        "{what}: messages_compressed rose by {} for one broadcast to two deflate members on two shards",
        after - before
    );
}

#[test]
fn a_room_of_deflate_and_plain_members_on_both_shards_gets_each_broadcast_right() {
    let server = room_server();
    let handle = server.handle();
    let mut members = members_of_each_kind_on_both_shards(&server);
    for member in members.iter_mut() {
        member
            .client
            .send(&client_frame(TEXT, true, format!("join:{ROOM}").as_bytes()));
        expect_message(
            &mut member.client,
            TEXT,
            format!("joined:{ROOM}").as_bytes(),
            false,
            &member.name,
        );
    }
    let find = |members: &[Member], shard: usize, deflate: bool| {
        members
            .iter()
            .position(|m| m.shard == shard && m.deflate == deflate)
            .expect("a member of each kind on each shard")
    };

    let text = long_text("from the server handle");
    broadcast_once(
        &handle,
        &mut members,
        "handle text",
        TEXT,
        text.as_bytes(),
        |_| handle.broadcast_text_to_room(ROOM, &text),
    );

    let binary: Vec<u8> = (0..600u32).map(|i| (i % 7) as u8).collect();
    broadcast_once(
        &handle,
        &mut members,
        "handle binary",
        BINARY,
        &binary,
        |_| handle.broadcast_binary_to_room(ROOM, &binary),
    );

    // From a deflate session on shard 0, its request compressed.
    let text = long_text("from a deflate session on shard 0");
    let sender = find(&members, 0, true);
    let inflated_before = futures_lite::future::block_on(handle.deflate_stats()).messages_inflated;
    broadcast_once(
        &handle,
        &mut members,
        "shard 0 text",
        TEXT,
        text.as_bytes(),
        |m| {
            let request = format!("broadcast:{ROOM}:{text}");
            m[sender]
                .client
                .send(&compressed_frame(FIN | RSV1 | TEXT, request.as_bytes()))
        },
    );
    assert_eq!(
        futures_lite::future::block_on(handle.deflate_stats()).messages_inflated - inflated_before,
        1,
        "the compressed request was inflated once"
    );

    // From a plain session on shard 1.
    let text = long_text("from a plain session on shard 1");
    let sender = find(&members, 1, false);
    broadcast_once(
        &handle,
        &mut members,
        "shard 1 text",
        TEXT,
        text.as_bytes(),
        |m| {
            let request = format!("broadcast:{ROOM}:{text}");
            m[sender]
                .client
                .send(&client_frame(TEXT, true, request.as_bytes()))
        },
    );

    // Binary from a plain session on shard 0 and from a deflate session on shard 1 (compressed).
    let binary: Vec<u8> = (0..800u32).map(|i| (i % 13) as u8).collect();
    let sender = find(&members, 0, false);
    broadcast_once(
        &handle,
        &mut members,
        "shard 0 binary",
        BINARY,
        &binary,
        |m| m[sender].client.send(&client_frame(BINARY, true, &binary)),
    );
    let binary: Vec<u8> = (0..900u32).map(|i| (i % 17) as u8).collect();
    let sender = find(&members, 1, true);
    broadcast_once(
        &handle,
        &mut members,
        "shard 1 binary",
        BINARY,
        &binary,
        |m| {
            m[sender]
                .client
                .send(&compressed_frame(FIN | RSV1 | BINARY, &binary))
        },
    );

    // A short broadcast goes plain to everyone and compresses nothing.
    let before = futures_lite::future::block_on(handle.deflate_stats()).messages_compressed;
    handle.broadcast_text_to_room(ROOM, "short");
    for member in members.iter_mut() {
        expect_message(&mut member.client, TEXT, b"short", false, &member.name);
    }
    assert_eq!(
        futures_lite::future::block_on(handle.deflate_stats()).messages_compressed,
        before
    );
    drop(members);
    server.stop();
}

// ---------------------------------------------------------------------------------------------------
// The binary.

/// The chat app's welcome.
const WELCOME: &str = "welcome to Vix WebSocket chat";

#[test]
fn the_chat_app_with_its_shipped_env_negotiates_deflate() {
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env");
    let app = common::Launch::new()
        .arg("--env-file")
        .arg(&env_file)
        .test_network()
        .spawn();
    let mut client = deflate_client(app.ws_addr);
    expect_message(&mut client, TEXT, WELCOME.as_bytes(), false, "welcome");
    let join = r#"{"type":"room.join","payload":{"room":"general"}}"#;
    client.send(&compressed_frame(FIN | RSV1 | TEXT, join.as_bytes()));
    expect_message(
        &mut client,
        TEXT,
        b"joined room: general",
        false,
        "join reply",
    );
    let text = long_text("chat");
    let chat =
        format!(r#"{{"type":"chat.message","payload":{{"room":"general","text":"{text}"}}}}"#);
    client.send(&compressed_frame(FIN | RSV1 | TEXT, chat.as_bytes()));
    expect_message(
        &mut client,
        TEXT,
        format!("room general: {text}").as_bytes(),
        true,
        "room message",
    );
}

/// The message limit of the decompression-bomb test: 2 MiB.
const BOMB_LIMIT: usize = 2 << 20;
/// How much the server's peak resident memory may grow beyond [`BOMB_LIMIT`] while it refuses the bomb.
const MEMORY_SLACK: u64 = 16 << 20;

/// A raw deflate stream (without the final `00 00 ff ff`) that inflates to `mib` MiB of zeros, at about
/// 1 kB per MiB. Built from two sync-flushed pieces: the first MiB, then one more MiB compressed while
/// the history is all zeros. That second piece starts and ends on a byte boundary and only refers back
/// into zeros, so repeating it is a valid stream; compressing 1 GiB for real would take minutes in a
/// debug build.
fn zeros_bomb(mib: usize) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut compress = Compress::new(Compression::best(), false);
    let mut bomb = sync_flushed(&mut compress, &zeros);
    let piece = sync_flushed(&mut compress, &zeros);
    for _ in 1..mib {
        bomb.extend_from_slice(&piece);
    }
    assert!(bomb.ends_with(&TRAILER));
    bomb.truncate(bomb.len() - TRAILER.len());
    bomb
}

/// A process's resident memory now and at its peak, from `/proc/PID/status`, in bytes.
fn resident_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_without_taking_the_memory() {
    // The construction, checked small: four pieces inflate to exactly 4 MiB of zeros.
    let small = zeros_bomb(4);
    let inflated = inflate(&small, 4 << 20);
    assert!(
        inflated.len() == 4 << 20 && inflated.iter().all(|&b| b == 0),
        "the bomb construction does not inflate to zeros"
    );
    let bomb = zeros_bomb(1024);
    assert!(
        (512 << 10..BOMB_LIMIT).contains(&bomb.len()),
        "1 GiB of zeros should take about 1 MiB on the wire, under the 2 MiB limit; took {} bytes",
        bomb.len()
    );

    let limit = BOMB_LIMIT.to_string();
    let app = common::spawn_app(&[
        ("WEBSOCKET_MAX_MESSAGE_SIZE", &limit),
        ("WEBSOCKET_RATE_LIMIT_MESSAGES", "0"),
        ("WEBSOCKET_RATE_LIMIT_BYTES", "0"),
    ]);
    let pid = app.child.id();
    let mut client = deflate_client(app.ws_addr);
    expect_message(&mut client, TEXT, WELCOME.as_bytes(), false, "welcome");
    // A compressed message first, so whatever a deflate session allocates once is in the baseline.
    client.send(&compressed_frame(FIN | RSV1 | TEXT, b"ping"));
    expect_message(&mut client, TEXT, b"pong", false, "pong");
    let (rss_before, peak_before) = resident_memory(pid);

    // Sent in one go, from a thread: the server may close before it has read everything.
    let frame = client_frame_with_first_byte(FIN | RSV1 | BINARY, &bomb);
    let mut writer = client.stream.try_clone().expect("clone the socket");
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        // An error here is the server closing early, which the close frame below explains.
        let _ = writer.write_all(&frame);
    });
    expect_close(&mut client, 1009, "the bomb");
    sending.join().expect("the writer thread");

    let (rss_after, peak_after) = resident_memory(pid);
    println!(
        "bomb: {} bytes on the wire for 1 GiB; server resident {} KiB before, {} KiB after; peak {} KiB \
         before, {} KiB after",
        bomb.len(),
        rss_before >> 10,
        rss_after >> 10,
        peak_before >> 10,
        peak_after >> 10
    );
    let allowed_peak = rss_before + BOMB_LIMIT as u64 + MEMORY_SLACK;
    assert!(
        peak_after <= peak_before.max(allowed_peak),
        "the server's peak resident memory went from {} MiB to {} MiB (resident before {} MiB, after \
         {} MiB); allowed: the 2 MiB limit plus {} MiB",
        peak_before >> 20,
        peak_after >> 20,
        rss_before >> 20,
        rss_after >> 20,
        MEMORY_SLACK >> 20
    );

    // The server serves the next client.
    let mut next = common::connect(app.ws_addr);
    assert_eq!(common::recv_text(&mut next), WELCOME);
    common::send_text(&mut next, "ping");
    assert_eq!(common::recv_text(&mut next), "pong");
}
