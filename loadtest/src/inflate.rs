//! The receive side of permessage-deflate (RFC 7692): a compressed message back into its text.
//!
//! Owns inflating one message (raw deflate: the payload, then the `00 00 ff ff` the sender stripped, each
//! flushed with `Sync`) and where inflate state lives. When the server starts every message with an empty
//! window (`server_no_context_takeover`, which roomcast always negotiates), a message depends on nothing
//! sent before it, so one `Decompress` per driver thread, reset before each message, serves all of that
//! thread's connections ([`Context::Shared`]): 10,000 deflate sessions cost the harness one inflate state,
//! not 10,000, and the harness stays small next to the server it measures. Only a server that keeps its
//! window across messages gets a `Decompress` per connection ([`Context::Own`]). Parsing frames and what
//! a text means are not its job (see `codec`, `client`).

use std::collections::HashMap;
use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};

use crate::handshake::Deflate;

/// What the sender strips from the end of every compressed message (RFC 7692 7.2.1) and the receiver
/// appends again: the empty stored block a `Sync` flush ends with.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The least output room offered to one decompress call.
const MIN_ROOM: usize = 4096;
/// How many distinct stand-alone messages a thread remembers inflated; see [`Inflater::recent`].
const RECENT: usize = 256;
/// The largest compressed message remembered: the runs' messages are small, and a cap bounds the memory.
const RECENT_MAX_LEN: usize = 4096;
/// The smallest window zlib-rs inflates with; a server's smaller one (8) fits in it.
const MIN_WINDOW_BITS: u8 = 9;

/// Why a compressed message could not be inflated; the connection counts as a protocol failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The payload is not a raw deflate stream.
    Corrupt,
    /// The message inflates to more than the harness's frame limit (a deflate bomb, or a broken server).
    TooLarge,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Corrupt => write!(f, "compressed message is not valid raw deflate"),
            InflateError::TooLarge => {
                write!(f, "compressed message inflates past the harness limit")
            }
        }
    }
}

impl std::error::Error for InflateError {}

/// How one deflate session's compressed messages are inflated, decided by its upgrade.
pub enum Context {
    /// Each message is a deflate stream of its own: the thread's [`Inflater`] decompressor, reset first.
    Shared,
    /// The server keeps its window across messages: this session's own decompressor, fed every compressed
    /// message in order (boxed, so the `Option<Context>` every connection holds is one pointer wide).
    Own(Box<Decompress>),
}

impl Context {
    /// The context a session with these negotiated parameters needs.
    pub fn for_session(deflate: &Deflate) -> Context {
        if deflate.server_no_context_takeover {
            return Context::Shared;
        }
        // The server's window bounds every back-reference, so a decompressor with that window is enough.
        let decompress = match deflate.server_max_window_bits {
            Some(bits) => Decompress::new_with_window_bits(false, bits.max(MIN_WINDOW_BITS)),
            None => Decompress::new(false),
        };
        Context::Own(Box::new(decompress))
    }
}

/// What one driver thread (or one smoke connection) inflates with: the output buffer every message is
/// inflated into, and the decompressor its [`Context::Shared`] sessions share.
#[derive(Default)]
pub struct Inflater {
    /// Created on the first compressed message, so a run without deflate never allocates one.
    shared: Option<Decompress>,
    /// The last inflated message; its capacity is kept, so same-sized messages allocate nothing.
    out: Vec<u8>,
    /// Stand-alone messages recently inflated, by their exact compressed bytes. A server that compresses
    /// a broadcast once sends a thousand members the same bytes, and without context takeover their text
    /// depends on nothing else, so the thread inflates each distinct message once. Inflating all of them
    /// doubled the harness's CPU per delivery, and on a machine it shares with the server that slowed
    /// the server's batching and hid what deflate costs the server itself.
    recent: HashMap<Box<[u8]>, Box<[u8]>>,
}

impl Inflater {
    /// Inflates one compressed message's `payload` (its frame payload, tail stripped) in `context`; the
    /// text is valid until the next call. More than `max` bytes of text is [`InflateError::TooLarge`].
    pub fn inflate(
        &mut self,
        context: &mut Context,
        payload: &[u8],
        max: usize,
    ) -> Result<&[u8], InflateError> {
        let Inflater {
            shared,
            out,
            recent,
        } = self;
        let decompress = match context {
            Context::Shared if payload.len() <= RECENT_MAX_LEN => {
                if let Some(text) = recent.get(payload) {
                    out.clear();
                    out.extend_from_slice(text);
                    return Ok(out);
                }
                let d = shared.get_or_insert_with(|| Decompress::new(false));
                d.reset(false);
                inflate_into(d, payload, out, max)?;
                if recent.len() == RECENT {
                    recent.clear();
                }
                recent.insert(payload.into(), out.as_slice().into());
                return Ok(out);
            }
            Context::Shared => {
                let d = shared.get_or_insert_with(|| Decompress::new(false));
                d.reset(false);
                d
            }
            Context::Own(d) => &mut **d,
        };
        inflate_into(decompress, payload, out, max)?;
        Ok(out)
    }
}

/// Inflates `payload` and the tail into `out` (cleared first) with `decompress`.
fn inflate_into(
    decompress: &mut Decompress,
    payload: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), InflateError> {
    out.clear();
    // The payload and the tail are fed one after the other rather than joined, so nothing is copied.
    let ended = feed(decompress, payload, out, max)? || feed(decompress, &TAIL, out, max)?;
    if ended {
        // A block with BFINAL set ended the stream (RFC 7692 7.2.3.4): the next message is a new
        // stream, which a finished decompressor would refuse.
        decompress.reset(false);
    }
    Ok(())
}

/// Inflates all of `input` onto `out`; `Ok(true)` when the deflate stream ended on the way.
fn feed(
    decompress: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<bool, InflateError> {
    loop {
        if out.len() == out.capacity() {
            // Room to grow by doubling, but never much past `max`: a bomb is stopped, not buffered.
            let room = out.len().max(MIN_ROOM).min(max + 1 - out.len());
            out.reserve(room);
        }
        let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
        let status = decompress
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = (decompress.total_in() - in_before) as usize;
        input = &input[consumed..];
        if out.len() > max {
            return Err(InflateError::TooLarge);
        }
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(true),
            // All input taken and the output not full: nothing more is pending.
            _ if input.is_empty() && room_left => return Ok(false),
            // Input and room but no progress: a valid stream never stalls like this.
            _ if room_left && consumed == 0 && decompress.total_out() == out_before => {
                return Err(InflateError::Corrupt)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;
    use crate::codec::{self, OpCode};

    /// `message` as roomcast sends it: raw deflate, `Sync` flushed, the tail stripped.
    fn compress(compressor: &mut Compress, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        let before = compressor.total_in();
        loop {
            let consumed = (compressor.total_in() - before) as usize;
            out.reserve(64);
            compressor
                .compress_vec(&message[consumed..], &mut out, FlushCompress::Sync)
                .unwrap();
            let done = (compressor.total_in() - before) as usize == message.len();
            if done && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&TAIL), "a Sync flush ends with the tail");
        out.truncate(out.len() - TAIL.len());
        out
    }

    /// A chat delivery of `size` bytes: a little like the real ones, not all one byte.
    fn text(size: usize, seed: usize) -> Vec<u8> {
        let head = format!("room r{seed}: {seed}:{}:{}:", size * 7, size * 13 + seed);
        let mut t = head.into_bytes();
        t.extend(
            (0..)
                .map(|i: usize| b"xyzzy-0123456789"[(i * 7 + seed) % 16])
                .take(size),
        );
        t.truncate(size);
        t
    }

    /// A compressed server frame: FIN, RSV1, text.
    fn compressed_frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        // The client encoder writes a server frame once the mask bit and key are taken out again.
        codec::push_masked_header(&mut frame, 0xC0 | 0x1, payload.len() as u64, [0; 4]);
        frame[1] &= 0x7F;
        frame.truncate(frame.len() - 4);
        frame.extend_from_slice(payload);
        frame
    }

    const SIZES: [usize; 8] = [0, 1, 63, 100, 1024, 4097, 60 * 1024, 300_000];

    #[test]
    fn messages_compressed_without_context_takeover_inflate_on_one_shared_decompressor() {
        let mut inflater = Inflater::default();
        let mut shared = Context::Shared;
        for (i, &size) in SIZES.iter().enumerate() {
            // The server resets its compressor per message; so does this test.
            let mut compressor = Compress::new(Compression::default(), false);
            let message = text(size, i);
            let payload = compress(&mut compressor, &message);
            let got = inflater.inflate(&mut shared, &payload, 1 << 20).unwrap();
            assert_eq!(got, &message[..], "size {size}");
        }
    }

    #[test]
    fn sessions_interleaved_on_the_shared_decompressor_do_not_see_each_other() {
        // Two connections of one thread, their messages alternating: the reset makes each stand alone.
        let mut inflater = Inflater::default();
        let (mut a, mut b) = (Context::Shared, Context::Shared);
        for round in 0..4 {
            for (context, seed) in [(&mut a, 1), (&mut b, 2)] {
                let message = text(500, seed + round);
                let payload = compress(&mut Compress::new(Compression::default(), false), &message);
                assert_eq!(
                    inflater.inflate(context, &payload, 1 << 20).unwrap(),
                    &message[..]
                );
            }
        }
    }

    #[test]
    fn a_broadcast_received_by_many_members_is_inflated_once_per_thread() {
        let mut inflater = Inflater::default();
        let messages: Vec<Vec<u8>> = (0..RECENT + 10).map(|i| text(100, i)).collect();
        let payloads: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| compress(&mut Compress::new(Compression::default(), false), m))
            .collect();
        // Every message to three members, then all of them again once the memory has been cleared.
        for _ in 0..2 {
            for (message, payload) in messages.iter().zip(&payloads) {
                for _member in 0..3 {
                    let got = inflater.inflate(&mut Context::Shared, payload, 1 << 20);
                    assert_eq!(got.unwrap(), &message[..]);
                }
            }
        }
        assert!(inflater.recent.len() <= RECENT);
        // Only the first member's copy went through the decompressor.
        let inflated = inflater.shared.as_ref().unwrap().total_out();
        assert!(
            inflated < (2 * messages.len() * 100 + 1000) as u64,
            "{inflated}"
        );
    }

    #[test]
    fn a_server_keeping_its_window_needs_the_session_own_decompressor() {
        let deflate = Deflate {
            server_no_context_takeover: false,
            server_max_window_bits: None,
        };
        // A server that named a small window: zlib's smallest (9 bits) stands in for 8, as zlib itself does.
        let small = Deflate {
            server_max_window_bits: Some(8),
            ..deflate
        };
        for (deflate, compressor_bits) in [(deflate, 15), (small, 9)] {
            let mut own = Context::for_session(&deflate);
            assert!(matches!(own, Context::Own(_)));
            let mut inflater = Inflater::default();
            let mut compressor =
                Compress::new_with_window_bits(Compression::default(), false, compressor_bits);
            // Shorter than the 9-bit window reaches back (512 bytes less zlib's 262-byte lookahead).
            let message = text(200, 3);
            for round in 0..3 {
                // The second and third copies are back-references into the first: tiny payloads.
                let payload = compress(&mut compressor, &message);
                if round > 0 {
                    assert!(payload.len() < 20, "{} bytes", payload.len());
                }
                assert_eq!(
                    inflater.inflate(&mut own, &payload, 1 << 20).unwrap(),
                    &message[..]
                );
            }
        }
    }

    #[test]
    fn a_message_split_over_several_reads_inflates_once_its_frame_is_whole() {
        for (i, &size) in SIZES.iter().enumerate() {
            let message = text(size, i);
            let payload = compress(&mut Compress::new(Compression::default(), false), &message);
            let mut stream = compressed_frame(&payload);
            stream.extend_from_slice(&[0x89, 0x00]);
            let mut inflater = Inflater::default();
            let mut context = Context::Shared;
            // Reads of 7 bytes (and, for the big one, of 1,000): every parse before the last is `None`.
            let chunk = if size > 10_000 { 1000 } else { 7 };
            let mut carry = Vec::new();
            let mut inflated = None;
            for piece in stream.chunks(chunk) {
                carry.extend_from_slice(piece);
                if inflated.is_some() {
                    continue;
                }
                if let Some(frame) = codec::parse(&carry, 1 << 20, true).unwrap() {
                    assert_eq!((frame.opcode, frame.compressed), (OpCode::Text, true));
                    let got = inflater
                        .inflate(&mut context, &carry[frame.payload.clone()], 1 << 20)
                        .unwrap();
                    inflated = Some(got.to_vec());
                    carry.drain(..frame.len);
                }
            }
            assert_eq!(inflated.as_deref(), Some(&message[..]), "size {size}");
            let ping = codec::parse(&carry, 1 << 20, true).unwrap().unwrap();
            assert_eq!((ping.opcode, ping.compressed), (OpCode::Ping, false));
        }
    }

    #[test]
    fn corrupt_and_oversized_messages_are_refused() {
        let mut inflater = Inflater::default();
        // Block type 3 does not exist.
        assert_eq!(
            inflater.inflate(&mut Context::Shared, &[0xff, 0xff, 0xff], 1 << 20),
            Err(InflateError::Corrupt)
        );
        let big = vec![b'a'; 200_000];
        let payload = compress(&mut Compress::new(Compression::default(), false), &big);
        assert!(payload.len() < 1000);
        assert_eq!(
            inflater.inflate(&mut Context::Shared, &payload, 100_000),
            Err(InflateError::TooLarge)
        );
        // The shared decompressor is reset before the next message: a failure does not linger.
        let ok = text(100, 9);
        let payload = compress(&mut Compress::new(Compression::default(), false), &ok);
        assert_eq!(
            inflater
                .inflate(&mut Context::Shared, &payload, 1 << 20)
                .unwrap(),
            &ok[..]
        );
    }
}
