//! RFC 6455 frames from clients: decoding them into complete messages (encoding ours is [`super::encode`]).
//!
//! Owns the byte-level protocol of what arrives: header parsing (tungstenite's [`FrameHeader`]), unmasking, the
//! per-message size limit (decided from headers, before a payload is buffered), reassembly of fragmented
//! messages with control frames interleaved, and UTF-8 validation of text as it arrives, so a bad fragment
//! fails fast (1007) instead of after the whole message.
//!
//! Compressed messages (permessage-deflate, RSV1 on their first frame) are inflated here, through the
//! shard's [`Inflater`] the connection lends when its session negotiated deflate, and handed out like any
//! other: text is validated once inflated, and the size limit then counts inflated bytes.
//!
//! It must not touch sockets, sessions or callbacks: [`Decoder::decode`] takes bytes and hands complete
//! messages to a closure; the connection decides what they mean.
//!
//! Decoding works on the received bytes in place (a provided buffer of the shard's ring, see
//! [`crate::shard::ring`]): payloads are unmasked where they lie and handed out
//! as borrowed slices, so an unfragmented message is never copied. Only bytes of an incomplete frame are
//! copied into the session's own carry, with the buffer of a fragmented message; the carry is freed as soon
//! as nothing is half-received, so an idle session's decoder is one null pointer.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::deflate::{self, InflateError, Inflater};
use super::encode::DataKind;
use crate::error::ProtocolError;

/// The longest header a client can send: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER_LEN: usize = 14;

/// A complete message or control frame, borrowed from the buffer it was decoded in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// A complete text message, already validated as UTF-8.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping with its payload (to echo in the pong).
    Ping(&'a [u8]),
    /// A pong; only its arrival matters.
    Pong,
    /// A close frame: the code and reason if the peer sent any.
    Close(Option<(u16, &'a str)>),
}

/// Whether the decoder should go on after a message was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep decoding the bytes that follow.
    Continue,
    /// Stop: the connection is closing and what follows is to be discarded.
    Stop,
}

/// What a message may be: refused past either, decided from frame headers before payloads are buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `WEBSOCKET_MAX_MESSAGE_SIZE`: payload bytes of one message, all its fragments together (1009).
    pub(crate) max_message_size: usize,
    /// `WEBSOCKET_MAX_FRAMES_PER_MESSAGE`: frames one message may be split into (1008), so an endless
    /// run of empty continuation frames ends.
    pub(crate) max_frames: u32,
}

/// Per-session decoding state: 8 bytes and no allocation while nothing is half-received, because every
/// idle session carries one.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// What carries over from one input to the next; absent (freed) whenever it would be empty.
    carry: Option<Box<Carry>>,
}

/// The rare state a decoder carries between inputs.
#[derive(Debug, Default)]
struct Carry {
    /// Bytes of a frame that has not fully arrived yet.
    partial: Vec<u8>,
    /// The fragmented message in progress, if one is.
    fragmented: Option<Fragmented>,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragmented {
    kind: DataKind,
    /// Whether its first frame had RSV1: the payload is deflate data, inflated once complete.
    compressed: bool,
    /// Frames received so far, the first included.
    frames: u32,
    /// The payload so far.
    payload: Vec<u8>,
    /// How much of `payload` is known to be valid UTF-8 (text only).
    utf8_valid_up_to: usize,
}

impl Fragmented {
    /// Validates the text received so far; an incomplete code point at the end is allowed until the last
    /// fragment.
    fn check_utf8(&mut self, is_final: bool) -> Result<(), ProtocolError> {
        if self.kind != DataKind::Text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.utf8_valid_up_to..]) {
            Ok(_) => self.utf8_valid_up_to = self.payload.len(),
            Err(e) if e.error_len().is_none() && !is_final => {
                self.utf8_valid_up_to += e.valid_up_to()
            }
            Err(_) => return Err(ProtocolError::InvalidUtf8),
        }
        Ok(())
    }
}

impl Decoder {
    /// A decoder whose first input is `bytes` (what arrived right behind the upgrade request).
    pub(crate) fn with_input(bytes: Vec<u8>) -> Decoder {
        // An empty request buffer still has capacity: drop it rather than keep it for the session's life.
        let carry = (!bytes.is_empty()).then(|| {
            Box::new(Carry {
                partial: bytes,
                fragmented: None,
            })
        });
        Decoder { carry }
    }

    /// The carry, created on first need.
    fn carry(&mut self) -> &mut Carry {
        self.carry.get_or_insert_with(Default::default)
    }

    /// The fragmented message in progress, if one is.
    fn fragmented(&self) -> Option<&Fragmented> {
        self.carry.as_ref()?.fragmented.as_ref()
    }

    /// Whether bytes are waiting to be decoded with the next input.
    pub(crate) fn has_input(&self) -> bool {
        self.carry.as_ref().is_some_and(|c| !c.partial.is_empty())
    }

    /// Bytes of memory held for what is half-received (a partial frame, a fragmented message).
    pub(crate) fn held(&self) -> usize {
        self.carry.as_ref().map_or(0, |c| {
            c.partial.capacity() + c.fragmented.as_ref().map_or(0, |f| f.payload.capacity())
        })
    }

    /// Forgets whatever is half-received: the session reads no more messages.
    pub(crate) fn clear(&mut self) {
        self.carry = None;
    }

    /// Decodes every complete frame in `input`, handing complete messages to `on_message`; compressed
    /// messages are accepted only with an `inflater` (the session negotiated deflate), which inflates them.
    ///
    /// Bytes of an incomplete trailing frame are kept for the next call. Stops early when `on_message`
    /// returns [`Flow::Stop`]; returns the protocol error that makes the connection fail, if any.
    pub(crate) fn decode(
        &mut self,
        input: &mut [u8],
        limits: Limits,
        inflater: Option<&mut Inflater>,
        mut on_message: impl FnMut(Inbound<'_>) -> Flow,
    ) -> Result<Flow, ProtocolError> {
        let mut sink = Sink {
            limits,
            inflater,
            on_message: &mut on_message,
        };
        let carried = self
            .carry
            .as_mut()
            .map(|c| std::mem::take(&mut c.partial))
            .filter(|partial| !partial.is_empty());
        let result = match carried {
            None => self
                .decode_frames(input, &mut sink)
                .map(|(flow, consumed)| {
                    if flow == Flow::Continue && consumed < input.len() {
                        self.carry().partial = input[consumed..].to_vec();
                    }
                    flow
                }),
            Some(mut buffer) => {
                buffer.extend_from_slice(input);
                let result = self.decode_frames(&mut buffer, &mut sink);
                if let Ok((Flow::Continue, consumed)) = result {
                    buffer.drain(..consumed);
                    if !buffer.is_empty() {
                        self.carry().partial = buffer;
                    }
                }
                result.map(|(flow, _)| flow)
            }
        };
        // Nothing half-received: give the carry back so idle sessions hold no memory.
        if self
            .carry
            .as_ref()
            .is_some_and(|c| c.partial.is_empty() && c.fragmented.is_none())
        {
            self.carry = None;
        }
        result
    }

    /// Whether no frame or message is half-received.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.carry.is_none()
    }

    fn decode_frames(
        &mut self,
        buf: &mut [u8],
        sink: &mut Sink<'_, '_, impl FnMut(Inbound<'_>) -> Flow>,
    ) -> Result<(Flow, usize), ProtocolError> {
        let mut pos = 0;
        while pos < buf.len() {
            let mut cursor = Cursor::new(&buf[pos..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                // tungstenite's parser refuses exactly one thing: a reserved opcode.
                Err(_) => return Err(ProtocolError::ReservedOpcode(buf[pos] & 0x0f)),
            };
            let header_len = cursor.position() as usize;
            debug_assert!(header_len <= MAX_HEADER_LEN);
            self.check_header(&header, length, sink.limits, sink.inflater.is_some())?;
            let length = length as usize;
            if buf.len() - pos - header_len < length {
                break;
            }
            let start = pos + header_len;
            let payload = &mut buf[start..start + length];
            if let Some(mask) = header.mask {
                apply_mask(payload, mask);
            }
            pos = start + length;
            if self.handle_frame(&header, payload, sink)? == Flow::Stop {
                return Ok((Flow::Stop, pos));
            }
        }
        Ok((Flow::Continue, pos))
    }

    /// Everything that can be refused from the header alone, before the payload is buffered.
    fn check_header(
        &self,
        header: &FrameHeader,
        length: u64,
        limits: Limits,
        deflate: bool,
    ) -> Result<(), ProtocolError> {
        // RFC 7692 §6: RSV1 marks a compressed message on its first frame only, never on a control frame.
        let compressed_start =
            deflate && matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if (header.rsv1 && !compressed_start) || header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        if header.mask.is_none() {
            return Err(ProtocolError::UnmaskedFrame);
        }
        match header.opcode {
            OpCode::Control(Control::Reserved(code)) | OpCode::Data(Data::Reserved(code)) => {
                Err(ProtocolError::ReservedOpcode(code))
            }
            OpCode::Control(_) if !header.is_final => Err(ProtocolError::FragmentedControl),
            OpCode::Control(_) if length > 125 => Err(ProtocolError::ControlTooLong),
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Continue) if self.fragmented().is_none() => {
                Err(ProtocolError::UnexpectedContinuation)
            }
            OpCode::Data(Data::Text | Data::Binary) if self.fragmented().is_some() => {
                Err(ProtocolError::ExpectedContinuation)
            }
            OpCode::Data(_) => {
                let (so_far, frames, compressed) =
                    self.fragmented().map_or((0, 0, header.rsv1), |f| {
                        (f.payload.len(), f.frames, f.compressed)
                    });
                let size = so_far as u64 + length;
                // Compressed, incompressible data is a little larger than itself on the wire; its real
                // size is checked once inflated.
                let wire_limit = if compressed {
                    deflate::max_compressed_len(limits.max_message_size)
                } else {
                    limits.max_message_size
                };
                if size > wire_limit as u64 {
                    return Err(ProtocolError::MessageTooBig {
                        size,
                        limit: limits.max_message_size,
                    });
                }
                if frames >= limits.max_frames {
                    return Err(ProtocolError::TooManyFrames {
                        limit: limits.max_frames,
                    });
                }
                Ok(())
            }
        }
    }

    fn handle_frame(
        &mut self,
        header: &FrameHeader,
        payload: &mut [u8],
        sink: &mut Sink<'_, '_, impl FnMut(Inbound<'_>) -> Flow>,
    ) -> Result<Flow, ProtocolError> {
        let on_message = &mut *sink.on_message;
        let kind = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(on_message(Inbound::Ping(payload))),
            OpCode::Control(Control::Pong) => return Ok(on_message(Inbound::Pong)),
            OpCode::Control(Control::Close) => {
                return Ok(on_message(Inbound::Close(parse_close(payload)?)))
            }
            OpCode::Data(Data::Text) => DataKind::Text,
            OpCode::Data(Data::Binary) => DataKind::Binary,
            OpCode::Data(Data::Continue) => {
                let fragmented = self
                    .carry
                    .as_mut()
                    .and_then(|c| c.fragmented.as_mut())
                    .expect("checked in check_header");
                fragmented.payload.extend_from_slice(payload);
                fragmented.frames += 1;
                fragmented.check_utf8(header.is_final)?;
                if !header.is_final {
                    return Ok(Flow::Continue);
                }
                // Freed once delivered: fragmented messages are rare, and an idle session keeps no buffer.
                let message = self.carry().fragmented.take().expect("present");
                return sink.deliver(message.kind, message.compressed, &message.payload);
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                unreachable!("refused in check_header")
            }
        };
        if header.is_final {
            return sink.deliver(kind, header.rsv1, payload);
        }
        let mut fragmented = Fragmented {
            kind,
            compressed: header.rsv1,
            frames: 1,
            payload: payload.to_vec(),
            utf8_valid_up_to: 0,
        };
        fragmented.check_utf8(false)?;
        self.carry().fragmented = Some(fragmented);
        Ok(Flow::Continue)
    }
}

/// Where one call of [`Decoder::decode`] hands complete messages, and what it checks them against.
struct Sink<'i, 'a, F> {
    limits: Limits,
    /// The shard's inflater, when the session negotiated deflate.
    inflater: Option<&'a mut Inflater>,
    on_message: &'i mut F,
}

impl<F: FnMut(Inbound<'_>) -> Flow> Sink<'_, '_, F> {
    /// Hands out a complete message, inflating it first if it was compressed.
    fn deliver(
        &mut self,
        kind: DataKind,
        compressed: bool,
        payload: &[u8],
    ) -> Result<Flow, ProtocolError> {
        if !compressed {
            return hand_out(kind, payload, self.on_message);
        }
        let inflater = self
            .inflater
            .as_deref_mut()
            .expect("RSV1 is refused in check_header without an inflater");
        let limit = self.limits.max_message_size;
        let result = match inflater.inflate(payload, limit) {
            Ok(inflated) => hand_out(kind, inflated, self.on_message),
            Err(InflateError::TooBig) => Err(ProtocolError::InflatedTooBig { limit }),
            Err(InflateError::Corrupt) => Err(ProtocolError::BadCompressedData),
        };
        inflater.release();
        result
    }
}

/// Hands a complete, uncompressed message to `on_message`, text once validated.
fn hand_out(
    kind: DataKind,
    payload: &[u8],
    on_message: &mut impl FnMut(Inbound<'_>) -> Flow,
) -> Result<Flow, ProtocolError> {
    Ok(match kind {
        DataKind::Text => on_message(Inbound::Text(
            std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
        )),
        DataKind::Binary => on_message(Inbound::Binary(payload)),
    })
}

/// Parses a close payload: empty, or a valid code followed by a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(ProtocolError::BadClosePayload);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// XORs `payload` with the client's masking key (RFC 6455 §5.3).
///
/// tungstenite has the same function, but keeps it private to its `frame` module; this is its
/// word-at-a-time equivalent so unmasking stays in place and allocation-free.
pub(crate) fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let mask64 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8")) ^ mask64;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser would send it, through the repository's one client-frame encoder.
    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let first_byte = opcode | if fin { 0x80 } else { 0 };
        loadtest::codec::push_raw_frame(&mut out, first_byte, payload, [0x37, 0xfa, 0x21, 0x3d]);
        out
    }

    #[derive(Debug, PartialEq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Option<(u16, String)>),
    }

    fn decode_all(
        decoder: &mut Decoder,
        bytes: &[u8],
        limit: usize,
    ) -> Result<Vec<Owned>, ProtocolError> {
        let mut out = Vec::new();
        let mut input = bytes.to_vec();
        let limits = Limits {
            max_message_size: limit,
            max_frames: 8,
        };
        decoder.decode(&mut input, limits, None, |m| {
            out.push(match m {
                Inbound::Text(t) => Owned::Text(t.to_owned()),
                Inbound::Binary(b) => Owned::Binary(b.to_vec()),
                Inbound::Ping(p) => Owned::Ping(p.to_vec()),
                Inbound::Pong => Owned::Pong,
                Inbound::Close(c) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
            });
            Flow::Continue
        })?;
        Ok(out)
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut fast = original.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn decodes_a_message_split_at_every_byte() {
        let frame = client_frame(0x1, true, "hello, wörld".as_bytes());
        for split in 0..frame.len() {
            let mut decoder = Decoder::default();
            let mut got = decode_all(&mut decoder, &frame[..split], 100).unwrap();
            got.extend(decode_all(&mut decoder, &frame[split..], 100).unwrap());
            assert_eq!(
                got,
                vec![Owned::Text("hello, wörld".into())],
                "split at {split}"
            );
            assert!(decoder.is_idle());
        }
    }

    #[test]
    fn a_message_in_more_frames_than_the_limit_is_refused_from_the_header() {
        let mut decoder = Decoder::default();
        let mut bytes = client_frame(0x1, false, b"");
        for _ in 0..6 {
            bytes.extend(client_frame(0x0, false, b""));
        }
        // Seven frames so far, within the limit of eight; the eighth finishes the message.
        let mut last = client_frame(0x0, true, b"ok");
        bytes.extend(last.clone());
        let got = decode_all(&mut decoder, &bytes, 1024).unwrap();
        assert_eq!(got, vec![Owned::Text("ok".to_owned())]);
        // A ninth frame is one too many, refused before its payload.
        bytes.truncate(bytes.len() - last.len());
        last = client_frame(0x0, false, b"");
        bytes.extend(last);
        bytes.extend(client_frame(0x0, true, b"x"));
        let err = decode_all(&mut Decoder::default(), &bytes, 1024).unwrap_err();
        assert_eq!(err, ProtocolError::TooManyFrames { limit: 8 });
        assert_eq!(err.close_code(), 1008);
    }

    #[test]
    fn held_counts_what_is_half_received_and_clear_frees_it() {
        let mut decoder = Decoder::default();
        assert_eq!(decoder.held(), 0);
        decode_all(&mut decoder, &client_frame(0x2, false, &[7; 1000]), 4096).unwrap();
        assert!(decoder.held() >= 1000);
        decoder.clear();
        assert_eq!(decoder.held(), 0);
        assert!(decoder.is_idle());
    }

    #[test]
    fn reassembles_fragments_with_a_ping_in_between() {
        let mut bytes = client_frame(0x1, false, b"pi");
        bytes.extend(client_frame(0x9, true, b"hb"));
        bytes.extend(client_frame(0x0, true, b"ng"));
        let got = decode_all(&mut Decoder::default(), &bytes, 100).unwrap();
        assert_eq!(
            got,
            vec![Owned::Ping(b"hb".to_vec()), Owned::Text("ping".into())]
        );
    }

    #[test]
    fn refuses_what_rfc_6455_forbids_with_the_right_code() {
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let mut rsv = client_frame(0x1, true, b"hi");
        rsv[0] |= 0x40;
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (rsv, 1002),
            (client_frame(0x3, true, b""), 1002),
            (client_frame(0xb, true, b""), 1002),
            (client_frame(0x9, false, b""), 1002),
            (client_frame(0x9, true, &[0; 126]), 1002),
            (client_frame(0x0, true, b"x"), 1002),
            (client_frame(0x1, true, &[0xff, 0xfe]), 1007),
            (client_frame(0x8, true, &[3]), 1002),
            (client_frame(0x8, true, &999u16.to_be_bytes()), 1002),
            (client_frame(0x2, true, &[0; 101]), 1009),
        ];
        for (bytes, code) in cases {
            let err = decode_all(&mut Decoder::default(), &bytes, 100).unwrap_err();
            assert_eq!(err.close_code(), code, "{err:?} for {bytes:02x?}");
        }
        let mut open = client_frame(0x1, false, b"a");
        open.extend(client_frame(0x1, true, b"b"));
        assert_eq!(
            decode_all(&mut Decoder::default(), &open, 100).unwrap_err(),
            ProtocolError::ExpectedContinuation
        );
    }

    #[test]
    fn refuses_an_oversized_message_from_its_header_alone() {
        // Only the header of a 1 MiB frame arrives: the limit is enforced before any payload.
        let frame = client_frame(0x2, true, &vec![0; 1 << 20]);
        let err = decode_all(&mut Decoder::default(), &frame[..14], 65536).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        // Fragments add up.
        let mut bytes = client_frame(0x2, false, &[0; 60]);
        bytes.extend(client_frame(0x0, true, &[0; 60]));
        assert_eq!(
            decode_all(&mut Decoder::default(), &bytes, 100)
                .unwrap_err()
                .close_code(),
            1009
        );
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
        let mut decoder = Decoder::default();
        // A valid first fragment ending inside a code point is fine...
        decode_all(&mut decoder, &client_frame(0x1, false, &[b'a', 0xc3]), 100).unwrap();
        // ...but a continuation that breaks it fails before the message ends.
        let err = decode_all(&mut decoder, &client_frame(0x0, false, &[0x28]), 100).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
    }

    #[test]
    fn close_payloads() {
        let got = decode_all(&mut Decoder::default(), &client_frame(0x8, true, b""), 100).unwrap();
        assert_eq!(got, vec![Owned::Close(None)]);
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let got = decode_all(
            &mut Decoder::default(),
            &client_frame(0x8, true, &payload),
            100,
        )
        .unwrap();
        assert_eq!(got, vec![Owned::Close(Some((1000, "bye".into())))]);
    }
}
