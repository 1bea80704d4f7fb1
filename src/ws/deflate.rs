//! Compressing and inflating messages (RFC 7692 §7.2) with one deflater and one inflater per shard.
//!
//! Negotiation ([`super::extensions`]) always agrees on no context takeover in both directions, so every
//! message is compressed and inflated on its own: the state of a [`Deflater`] or an [`Inflater`] means
//! nothing between two messages, and one of each serves every session of a shard. An idle session holds
//! no compression state at all (Python `websockets` keeps 64 KiB per connection, zlib's defaults about
//! 300 KiB), and a room broadcast is compressed once for all its members.
//!
//! Compressing: a raw deflate stream ended by a sync flush, whose final `00 00 ff ff` is dropped
//! (§7.2.1). A message that compression does not make smaller goes out plain, which §6 allows on a deflate
//! session. Inflating: the `00 00 ff ff` is appended again and the output grows in steps up to the
//! message size limit and no further, so a decompression bomb costs at most that limit (§8.1).
//!
//! zlib-rs is the backend: it inflated twice as fast as flate2's miniz_oxide backend on chat messages and
//! compressed as fast or faster (see the README).
//!
//! Which messages are compressed is decided here too: none when `WEBSOCKET_ENABLE_DEFLATE` is off, none
//! under `WEBSOCKET_DEFLATE_MIN_SIZE`, none for a client that limited our window, and a broadcast only
//! while some session anywhere negotiated deflate.
//!
//! It must not pick each recipient's frame (the rooms do, by [`Prepared::frame_for`]) nor parse frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::encode::{self, DataKind, EncodedFrame, Prepared};
use super::extensions::{PerMessageDeflate, MAX_WINDOW_BITS};
use crate::metrics::DeflateStats;

/// The empty stored block a sync flush ends with, dropped from every compressed message (RFC 7692 §7.2.1)
/// and appended again before inflating (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The level of a room broadcast: compressed once for all its members, it can afford zlib's default, whose
/// output was a quarter smaller than level 1's on 1 KiB of chat JSON for 2.5 times the time (README).
const BROADCAST_LEVEL: u32 = 6;
/// The level of a message to one session, which pays its compression alone: zlib-rs's fastest.
const SESSION_LEVEL: u32 = 1;

/// The output buffer a deflater or an inflater keeps between messages; a larger one, grown for a large
/// message, is given back (the inflater's once the message is handled, the deflater's on its next message).
const KEPT_OUTPUT: usize = 64 * 1024;

/// How many sessions anywhere negotiated deflate: shared by the shards, changed when such a session opens or
/// ends (never per message), read before compressing a broadcast.
#[derive(Debug, Default)]
pub(crate) struct DeflateSessions(AtomicUsize);

impl DeflateSessions {
    /// A session that negotiated deflate opened.
    pub(crate) fn opened(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// A session that negotiated deflate ended.
    pub(crate) fn ended(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether any session anywhere negotiated deflate; a broadcast that no member could read compressed
    /// is not compressed. (A member that negotiates a moment later gets the plain frame: always valid.)
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    /// Sessions open that negotiated deflate.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Compresses messages one at a time; one per shard (and one for the server handle's broadcasts).
pub(crate) struct Deflater {
    /// The smallest message worth compressing; `None` when compression is off.
    min_size: Option<usize>,
    /// The stream for messages to one session, created on first use (flate2 keeps its state on the heap).
    session_stream: Option<Compress>,
    /// The stream for room broadcasts, created on first use.
    room_stream: Option<Compress>,
    /// The compressed bytes of the message at hand; given back after a message that grew it large.
    out: Vec<u8>,
    /// Whether any session anywhere could read a compressed broadcast.
    sessions: Arc<DeflateSessions>,
    /// What this deflater compressed: the shard's own counts (`/metrics`), read by its scrape.
    done: DeflateStats,
}

impl Deflater {
    /// A deflater for messages of at least `min_size` bytes (`None`: compress nothing).
    pub(crate) fn new(sessions: Arc<DeflateSessions>, min_size: Option<usize>) -> Deflater {
        Deflater {
            min_size,
            session_stream: None,
            room_stream: None,
            out: Vec::new(),
            sessions,
            done: DeflateStats::default(),
        }
    }

    /// What this deflater compressed so far (its `messages_inflated` is the inflater's to tell).
    pub(crate) fn done(&self) -> DeflateStats {
        self.done
    }

    fn worth_compressing(&self, len: usize) -> bool {
        self.min_size.is_some_and(|min| len >= min)
    }

    /// The compressed frame of a message for one session that negotiated `deflate`, or `None` when it
    /// goes plain: compression off, a short message, one compression does not shrink, or a client that
    /// limited our window (see [`PerMessageDeflate::takes_our_compression`]).
    pub(crate) fn frame_for_session(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        deflate: PerMessageDeflate,
    ) -> Option<EncodedFrame> {
        if !deflate.takes_our_compression() || !self.worth_compressing(payload.len()) {
            return None;
        }
        self.compressed_frame(kind, payload, Audience::Session)
    }

    /// The compressed frame of a room broadcast, made once for every member that can read it, or `None`
    /// when it is not worth compressing or no session anywhere negotiated deflate.
    fn frame_for_room(&mut self, kind: DataKind, payload: &[u8]) -> Option<EncodedFrame> {
        if !self.worth_compressing(payload.len()) || !self.sessions.any() {
            return None;
        }
        self.compressed_frame(kind, payload, Audience::Room)
    }

    /// A message encoded once for every recipient of a broadcast: its plain frame and, when it is worth
    /// it, its compressed one.
    pub(crate) fn prepare(&mut self, kind: DataKind, payload: &[u8]) -> Prepared {
        Prepared {
            plain: encode::data_frame(kind, payload),
            deflated: self.frame_for_room(kind, payload),
        }
    }

    fn compressed_frame(
        &mut self,
        kind: DataKind,
        payload: &[u8],
        audience: Audience,
    ) -> Option<EncodedFrame> {
        let frame = self
            .compress(payload, audience)
            .map(|body| (body.len(), encode::compressed_frame(kind, body)));
        if self.out.capacity() > KEPT_OUTPUT {
            self.out = Vec::new();
        }
        let (body_len, frame) = frame?;
        self.done.messages_compressed += 1;
        self.done.bytes_compressed += payload.len() as u64;
        self.done.bytes_compressed_to += body_len as u64;
        Some(frame)
    }

    /// `payload` compressed for `audience`, as a permessage-deflate message body (no trailing
    /// `00 00 ff ff`), or `None` when that is not smaller than `payload`. Gives up as soon as the output
    /// reaches the size of `payload`, so incompressible data costs neither time nor memory past that
    /// (zlib-rs's level 1 writes literals in up to 9 bits, growing such data by an eighth).
    pub(crate) fn compress(&mut self, payload: &[u8], audience: Audience) -> Option<&[u8]> {
        let body = self.deflate(payload, audience, Some(payload.len() + TAIL.len()))?;
        (body.len() < payload.len()).then_some(body)
    }

    /// `payload` compressed as [`Deflater::compress`] does, even when that does not make it smaller (as a
    /// client may send it).
    #[cfg(test)]
    pub(crate) fn compress_always(&mut self, payload: &[u8], audience: Audience) -> &[u8] {
        self.deflate(payload, audience, None)
            .expect("a sync flush ends with the tail")
    }

    /// Compresses `payload` into `out`; `None` once the output would pass `cap` bytes.
    fn deflate(&mut self, payload: &[u8], audience: Audience, cap: Option<usize>) -> Option<&[u8]> {
        let (slot, level) = match audience {
            Audience::Room => (&mut self.room_stream, BROADCAST_LEVEL),
            Audience::Session => (&mut self.session_stream, SESSION_LEVEL),
        };
        let stream = slot.get_or_insert_with(|| Compress::new(Compression::new(level), false));
        // No context takeover: nothing of the previous message may be referred to.
        stream.reset();
        self.out.clear();
        self.out
            .reserve(cap.unwrap_or(payload.len() + payload.len() / 8 + 64));
        let mut input = payload;
        loop {
            let before = stream.total_in();
            stream
                .compress_vec(input, &mut self.out, FlushCompress::Sync)
                .expect("deflate of a valid stream cannot fail");
            input = &input[(stream.total_in() - before) as usize..];
            // Done when all input is taken and the flush had room to finish (`out` not full).
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
            if cap.is_some_and(|cap| self.out.len() >= cap) {
                return None;
            }
            self.out.reserve(self.out.capacity().max(64));
        }
        // A sync flush always ends so; anything else must not reach a client as a frame.
        if !self.out.ends_with(&TAIL) {
            return None;
        }
        self.out.truncate(self.out.len() - TAIL.len());
        Some(&self.out)
    }
}

/// Whom a message is compressed for, which sets the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every member of a room: compressed once, at [`BROADCAST_LEVEL`].
    Room,
    /// One session: at [`SESSION_LEVEL`].
    Session,
}

/// The most bytes a compressed message of at most `limit` inflated bytes can take on the wire: zlib's
/// `compressBound`, which covers stored blocks for incompressible data. Compressed messages are refused
/// from their headers past this, and past `limit` once inflated.
pub(crate) fn max_compressed_len(limit: usize) -> usize {
    limit
        .saturating_add(limit >> 12)
        .saturating_add(limit >> 14)
        .saturating_add(limit >> 25)
        .saturating_add(13)
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// It is not a valid deflate stream.
    Corrupt,
}

/// Inflates received messages one at a time, into a buffer of its own; one per shard.
pub(crate) struct Inflater {
    /// Reads any window up to 15 bits, so it serves whatever `client_max_window_bits` a client used.
    stream: Decompress,
    out: Vec<u8>,
    /// Messages inflated: the shard's own count (`/metrics`).
    inflated: u64,
}

impl Inflater {
    pub(crate) fn new() -> Inflater {
        Inflater {
            stream: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
            out: Vec::new(),
            inflated: 0,
        }
    }

    /// Messages inflated so far.
    pub(crate) fn inflated(&self) -> u64 {
        self.inflated
    }

    /// The message whose compressed body is `compressed`, if it inflates to at most `limit` bytes. Never
    /// holds more than `limit + 1` bytes of output: the one past the limit is how going over is seen.
    pub(crate) fn inflate(
        &mut self,
        compressed: &[u8],
        limit: usize,
    ) -> Result<&[u8], InflateError> {
        self.stream.reset(false);
        self.out.clear();
        let mut input = compressed;
        let mut tail_given = false;
        loop {
            if self.out.len() == self.out.capacity() {
                if self.out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                // Grow by doubling, from the compressed size, up to one byte past the limit.
                let target = (self.out.capacity() * 2)
                    .max(compressed.len() * 4)
                    .max(4096)
                    .min(limit.saturating_add(1));
                self.out.reserve_exact(target - self.out.len());
            }
            let (in_before, out_before) = (self.stream.total_in(), self.out.len());
            let status = self
                .stream
                .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[(self.stream.total_in() - in_before) as usize..];
            if self.out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                break; // A final block: whatever follows is ignored, as zlib's own inflate does.
            }
            let room_left = self.out.len() < self.out.capacity();
            if input.is_empty() && room_left {
                if tail_given {
                    break;
                }
                input = &TAIL;
                tail_given = true;
            } else if room_left
                && self.out.len() == out_before
                && self.stream.total_in() == in_before
            {
                return Err(InflateError::Corrupt); // No progress with input and room: cannot go on.
            }
        }
        self.inflated += 1;
        Ok(&self.out)
    }

    /// Gives back the output buffer if a large message grew it; called once that message is handled.
    pub(crate) fn release(&mut self) {
        if self.out.capacity() > KEPT_OUTPUT {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Deflater, Inflater) {
        (Deflater::new(Arc::default(), Some(0)), Inflater::new())
    }

    fn chat_json(len: usize) -> Vec<u8> {
        let mut text = String::from(
            "{\"type\":\"chat.message\",\"payload\":{\"room\":\"general\",\"text\":\"",
        );
        while text.len() < len - 3 {
            text.push_str("hello again, ");
        }
        text.truncate(len - 3);
        text.push_str("\"}}");
        text.into_bytes()
    }

    #[test]
    fn round_trips_for_both_audiences_and_many_sizes() {
        let (mut deflater, mut inflater) = pair();
        for audience in [Audience::Room, Audience::Session] {
            for len in [100, 1024, 70_000, 300_000] {
                let message = chat_json(len);
                let compressed = deflater
                    .compress(&message, audience)
                    .expect("JSON compresses")
                    .to_vec();
                assert!(!compressed.ends_with(&TAIL));
                assert_eq!(inflater.inflate(&compressed, len).unwrap(), &message[..]);
                assert_eq!(
                    inflater.inflate(&compressed, len - 1),
                    Err(InflateError::TooBig)
                );
            }
        }
    }

    /// Bytes with no structure deflate could use (xorshift64).
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_messages_are_left_plain_without_growing_the_buffer() {
        let (mut deflater, _) = pair();
        for audience in [Audience::Room, Audience::Session] {
            let noise = noise(1 << 20);
            assert_eq!(deflater.compress(&noise, audience), None);
            // Given up at the payload's size, not after doubling the buffer past it.
            assert!(deflater.out.capacity() < noise.len() + 64);
            assert_eq!(
                deflater.frame_for_session(DataKind::Binary, &noise, full_window()),
                None
            );
            // ...and not kept once the message is handled.
            assert!(deflater.out.capacity() <= KEPT_OUTPUT);
        }
    }

    fn full_window() -> PerMessageDeflate {
        super::super::extensions::negotiate([&b"permessage-deflate"[..]]).unwrap()
    }

    #[test]
    fn a_bomb_stops_at_the_limit_without_allocating_past_it() {
        let (mut deflater, mut inflater) = pair();
        let zeros = vec![0u8; 64 << 20];
        let bomb = deflater.compress(&zeros, Audience::Room).unwrap().to_vec();
        assert!(bomb.len() < zeros.len() / 50, "{} bytes", bomb.len());
        assert_eq!(inflater.inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
        assert!(inflater.out.capacity() <= (1 << 20) + 1);
        inflater.release();
        assert_eq!(inflater.out.capacity(), 0);
    }

    #[test]
    fn garbage_is_corrupt_and_the_inflater_recovers() {
        let (mut deflater, mut inflater) = pair();
        assert_eq!(
            inflater.inflate(&[0xff; 32], 1024),
            Err(InflateError::Corrupt)
        );
        let message = chat_json(500);
        let compressed = deflater
            .compress(&message, Audience::Room)
            .unwrap()
            .to_vec();
        assert_eq!(inflater.inflate(&compressed, 1024).unwrap(), &message[..]);
        // A stream cut short inflates to something within the limit (the tail appended to half a block
        // reads as more codes) or is refused as corrupt: never a panic, a hang or more than the limit.
        for end in 0..compressed.len() {
            match inflater.inflate(&compressed[..end], 1024) {
                Ok(got) => assert!(got.len() <= 1024),
                Err(e) => assert_eq!(e, InflateError::Corrupt),
            }
        }
        assert_eq!(inflater.inflate(&compressed, 1024).unwrap(), &message[..]);
    }

    #[test]
    fn counts_messages_sent_compressed_and_inflated() {
        let sessions = Arc::new(DeflateSessions::default());
        let mut deflater = Deflater::new(sessions.clone(), Some(0));
        let mut inflater = Inflater::new();
        // No deflate session anywhere: a broadcast is not even compressed.
        assert_eq!(
            deflater.frame_for_room(DataKind::Text, &chat_json(200)),
            None
        );
        sessions.opened();
        assert!(deflater
            .frame_for_room(DataKind::Text, &chat_json(200))
            .is_some());
        // Tried, but not smaller: sent plain, not counted.
        assert_eq!(deflater.frame_for_room(DataKind::Binary, &noise(300)), None);
        let compressed = deflater
            .compress(&chat_json(200), Audience::Session)
            .unwrap()
            .to_vec();
        inflater.inflate(&compressed, 1000).unwrap();
        inflater.inflate(&compressed, 1000).unwrap();
        let done = deflater.done();
        assert_eq!(done.messages_compressed, 1);
        assert_eq!(done.bytes_compressed, chat_json(200).len() as u64);
        assert!(done.bytes_compressed_to > 0 && done.bytes_compressed_to < done.bytes_compressed);
        assert_eq!(inflater.inflated(), 2);
    }
}
