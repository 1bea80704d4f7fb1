//! The client side of RFC 6455 framing, as small as the harness needs.
//!
//! Owns encoding masked client frames and parsing the server's unmasked frames in place. Parsing borrows
//! the frame's payload from the caller's read buffer and never allocates, so a receipt costs no heap
//! traffic however many arrive. It does not own buffers, sockets or message meaning (see `client`), and it
//! does not reassemble fragmented messages: the servers we measure send each message as one frame, and a
//! fragment is reported as [`CodecError::Fragmented`] rather than silently mis-measured. Of the reserved
//! bits it knows only what permessage-deflate gives RSV1 (a compressed message, RFC 7692 6): it says
//! which frames are compressed; inflating them is `inflate`'s job. Client frames are never compressed.

use std::fmt;
use std::ops::Range;

/// The frame types the harness sends or acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// A complete UTF-8 text message.
    Text,
    /// A binary message (counted, otherwise ignored).
    Binary,
    /// Close; the payload holds the code and reason.
    Close,
    /// Ping; must be answered with a pong carrying the same payload.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn bits(self) -> u8 {
        match self {
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
}

/// One parsed server frame: where its payload sits in the buffer and how many bytes it used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's type.
    pub opcode: OpCode,
    /// RSV1 was set: the payload is the message compressed with permessage-deflate.
    pub compressed: bool,
    /// The payload's position in the buffer passed to [`parse`].
    pub payload: Range<usize>,
    /// Header plus payload: what to consume before parsing the next frame.
    pub len: usize,
}

/// A server frame the harness cannot accept; the connection is counted as a protocol failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// A server frame had the mask bit set (servers must not mask, RFC 6455 5.1).
    Masked,
    /// Reserved bits were set that no negotiated extension defines: RSV2 or RSV3 always; RSV1 without
    /// permessage-deflate, or on a control or continuation frame (RFC 7692 6).
    Reserved,
    /// An opcode outside the RFC, or a continuation frame.
    UnknownOpcode(u8),
    /// A data frame without FIN, or a continuation: a fragmented message.
    Fragmented,
    /// The frame's declared length exceeds the harness's limit.
    TooLarge(u64),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Masked => write!(f, "server frame is masked"),
            CodecError::Reserved => write!(f, "server frame sets reserved bits"),
            CodecError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            CodecError::Fragmented => {
                write!(f, "fragmented message (not supported by the harness)")
            }
            CodecError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the harness limit"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Appends one masked, final client frame carrying `payload` to `out`.
///
/// `out` is the connection's write buffer; it only grows when a frame does not fit its capacity, so a
/// steady stream of same-sized messages allocates nothing.
pub fn push_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    push_raw_frame(out, 0x80 | opcode.bits(), payload, mask);
}

/// Appends one masked client frame whose first byte (FIN, RSV and opcode bits) is `first_byte` as given,
/// whatever RFC 6455 says of it: the one encoder of client frames in this repository, also used by
/// roomcast's tests to send fragments and forbidden frames, and by its benches.
pub fn push_raw_frame(out: &mut Vec<u8>, first_byte: u8, payload: &[u8], mask: [u8; 4]) {
    push_masked_header(out, first_byte, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends only the header of a masked client frame: `first_byte`, a payload length of `len` in its
/// shortest encoding, then `mask`. The payload (masked with `mask`) is the caller's to append, or not: a
/// header alone is enough to test limits decided from headers.
pub fn push_masked_header(out: &mut Vec<u8>, first_byte: u8, len: u64, mask: [u8; 4]) {
    out.push(first_byte);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// XORs `data` with the repeating 4-byte key, a word at a time where it can.
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Parses the first frame in `buf`: `Ok(None)` until all of it has arrived. With `deflate` (the session
/// negotiated permessage-deflate) RSV1 may mark a text or binary frame as compressed.
pub fn parse(buf: &[u8], max_len: usize, deflate: bool) -> Result<Option<Frame>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let compressed = b0 & 0x40 != 0;
    // RSV1 is allowed only where RFC 7692 puts it: the first frame of a data message, and since the
    // harness refuses fragments, that is a text or binary frame.
    let data = matches!(b0 & 0x0F, 0x1 | 0x2);
    if b0 & 0x30 != 0 || (compressed && !(deflate && data)) {
        return Err(CodecError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(CodecError::Masked);
    }
    let opcode = match b0 & 0x0F {
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        0x8 => OpCode::Close,
        0x9 => OpCode::Ping,
        0xA => OpCode::Pong,
        0x0 => return Err(CodecError::Fragmented),
        other => return Err(CodecError::UnknownOpcode(other)),
    };
    if b0 & 0x80 == 0 {
        return Err(CodecError::Fragmented);
    }
    let (header, len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                10,
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            )
        }
        n => (2, n as u64),
    };
    if len > max_len as u64 {
        return Err(CodecError::TooLarge(len));
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        opcode,
        compressed,
        payload: header..total,
        len: total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) as the server would write it.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | opcode];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_split_at_every_byte_parse_only_when_complete() {
        for size in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut stream = server_frame(0x1, &payload);
            stream.extend_from_slice(&server_frame(0x9, b"hb"));
            let first_len = stream.len() - 4;
            for cut in 0..first_len {
                assert_eq!(
                    parse(&stream[..cut], 1 << 20, false),
                    Ok(None),
                    "size {size} cut {cut}"
                );
            }
            let frame = parse(&stream, 1 << 20, false).unwrap().unwrap();
            assert_eq!(frame.opcode, OpCode::Text);
            assert_eq!(frame.len, first_len);
            assert_eq!(&stream[frame.payload.clone()], &payload[..]);
            let next = parse(&stream[frame.len..], 1 << 20, false)
                .unwrap()
                .unwrap();
            assert_eq!(next.opcode, OpCode::Ping);
            assert_eq!(&stream[frame.len..][next.payload], b"hb");
        }
    }

    #[test]
    fn masked_client_frames_unmask_to_the_payload() {
        for size in [0usize, 1, 7, 8, 9, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
            let mask = [0x12, 0x34, 0x56, 0x78];
            let mut out = Vec::new();
            push_frame(&mut out, OpCode::Text, &payload, mask);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "client frames are masked");
            let header = out.len() - size - 4;
            assert_eq!(&out[header..header + 4], &mask);
            let unmasked: Vec<u8> = out[header + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn protocol_violations_are_errors() {
        assert_eq!(
            parse(&[0x81, 0x81, 0, 0, 0, 0, 0], 100, false),
            Err(CodecError::Masked)
        );
        assert_eq!(parse(&[0xC1, 0x00], 100, false), Err(CodecError::Reserved));
        assert_eq!(
            parse(&[0x01, 0x00], 100, false),
            Err(CodecError::Fragmented)
        );
        assert_eq!(
            parse(&[0x80, 0x00], 100, false),
            Err(CodecError::Fragmented)
        );
        assert_eq!(
            parse(&[0x83, 0x00], 100, false),
            Err(CodecError::UnknownOpcode(3))
        );
        assert_eq!(
            parse(&[0x81, 126, 0x01, 0x00], 100, false),
            Err(CodecError::TooLarge(256))
        );
    }

    #[test]
    fn rsv1_is_refused_unless_deflate_was_negotiated() {
        for first in [0xC1, 0xC2] {
            assert_eq!(parse(&[first, 0x00], 100, false), Err(CodecError::Reserved));
            let frame = parse(&[first, 0x01, 0xAB], 100, true).unwrap().unwrap();
            assert!(frame.compressed);
            assert_eq!(frame.payload, 2..3);
        }
        let plain = parse(&[0x81, 0x01, b'x'], 100, true).unwrap().unwrap();
        assert!(
            !plain.compressed,
            "RSV1 clear stays plain on a deflate session"
        );
    }

    #[test]
    fn rsv1_is_refused_on_control_and_continuation_frames_even_with_deflate() {
        for first in [0xC8, 0xC9, 0xCA, 0xC0, 0x40] {
            assert_eq!(
                parse(&[first, 0x00], 100, true),
                Err(CodecError::Reserved),
                "{first:#x}"
            );
        }
        // RSV2 and RSV3 belong to no extension the harness negotiates.
        for first in [0xA1, 0x91, 0xE1] {
            assert_eq!(parse(&[first, 0x00], 100, true), Err(CodecError::Reserved));
        }
    }
}
