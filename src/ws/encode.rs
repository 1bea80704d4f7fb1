//! Encoding server frames: a message's frame built once, header and payload in one shared allocation.
//!
//! A broadcast encodes its frames here once ([`Prepared`]: the plain frame and, when it was compressed,
//! the permessage-deflate one) and every recipient's queue holds a pointer to the one it can read; control
//! frames (close, ping, pong) are built the same way and never compressed. Server frames are never masked
//! (RFC 6455 §5.1).
//!
//! It must not decode anything (that is [`super::codec`]) nor touch sockets.

use std::io::Cursor;
use std::rc::Rc;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::extensions::PerMessageDeflate;

/// An encoded server frame. A broadcast encodes its frame once and every recipient's queue holds a
/// pointer to it. The count is not atomic because a frame never leaves its shard (another shard gets its
/// own copy, see [`crate::shard::Shard::broadcast`]): an atomic increment and decrement per delivery cost
/// about a third of the server's user-space time in a 1,000-member broadcast.
pub(crate) type EncodedFrame = Rc<[u8]>;

/// Which kind of data message a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataKind {
    Text,
    Binary,
}

impl DataKind {
    fn opcode(self) -> OpCode {
        OpCode::Data(match self {
            DataKind::Text => Data::Text,
            DataKind::Binary => Data::Binary,
        })
    }
}

/// A data message encoded once for all its recipients: the plain frame, and the compressed one when the
/// message was compressed. Each recipient's queue takes a pointer to the frame it can read.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) plain: EncodedFrame,
    /// Compressed with the full window, for the members that take our compression.
    pub(crate) deflated: Option<EncodedFrame>,
}

impl Prepared {
    /// The frame for a recipient that negotiated `deflate` (or did not).
    pub(crate) fn frame_for(&self, deflate: Option<PerMessageDeflate>) -> &EncodedFrame {
        match (&self.deflated, deflate) {
            (Some(deflated), Some(d)) if d.takes_our_compression() => deflated,
            _ => &self.plain,
        }
    }
}

/// One message as each kind of recipient reads it: at 0 for clients that agreed no subprotocol, at `i + 1`
/// for those that agreed the application's subprotocol `i`; a lone rendition goes to everyone. `None`:
/// that kind of client gets nothing. A raw broadcast has one rendition, a publication one per subprotocol
/// (see [`crate::RoomReplies`]).
#[derive(Debug, Clone)]
pub(crate) struct Renditions(pub(crate) Vec<Option<Prepared>>);

impl Renditions {
    /// The same message for everyone.
    pub(crate) fn one(message: Prepared) -> Renditions {
        Renditions(vec![Some(message)])
    }

    /// What a recipient that agreed `subprotocol` gets, if anything.
    pub(crate) fn for_subprotocol(&self, subprotocol: Option<u8>) -> Option<&Prepared> {
        let at = match self.0.len() {
            1 => 0,
            _ => subprotocol.map_or(0, |s| usize::from(s) + 1),
        };
        self.0.get(at).and_then(Option::as_ref)
    }
}

/// A control frame; never compressed (RFC 7692 §6.1).
fn control_frame(control: Control, payload: &[u8]) -> EncodedFrame {
    encode(OpCode::Control(control), false, payload)
}

/// A data message's plain frame.
pub(crate) fn data_frame(kind: DataKind, payload: &[u8]) -> EncodedFrame {
    encode(kind.opcode(), false, payload)
}

/// A compressed data message's frame: RSV1 set, `body` the deflate data (RFC 7692 §6, §7.2.1).
pub(crate) fn compressed_frame(kind: DataKind, body: &[u8]) -> EncodedFrame {
    encode(kind.opcode(), true, body)
}

/// Encodes one unmasked server frame, written straight into its shared allocation.
fn encode(opcode: OpCode, compressed: bool, payload: &[u8]) -> EncodedFrame {
    let header = FrameHeader {
        is_final: true,
        rsv1: compressed,
        opcode,
        ..FrameHeader::default()
    };
    // A server frame's header is at most 10 bytes: 2, plus 8 for a 64-bit length, and no mask.
    let mut head = [0u8; 10];
    let mut cursor = Cursor::new(&mut head[..]);
    header
        .format(payload.len() as u64, &mut cursor)
        .expect("an unmasked header fits in 10 bytes");
    let head_len = cursor.position() as usize;
    let head = &head[..head_len];
    let mut frame = Rc::<[u8]>::new_uninit_slice(head.len() + payload.len());
    let buf = Rc::get_mut(&mut frame)
        .expect("a new Rc is unique")
        .as_mut_ptr()
        .cast::<u8>();
    // SAFETY: `buf` has room for exactly the header and the payload, which do not overlap it; once both
    // are copied every byte is initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(head.as_ptr(), buf, head_len);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), buf.add(head_len), payload.len());
        frame.assume_init()
    }
}

/// An empty close frame, the answer to one (RFC 6455 §5.5.1).
pub(crate) fn empty_close_frame() -> EncodedFrame {
    control_frame(Control::Close, &[])
}

/// A close frame with a code and a reason (truncated on a char boundary to fit 125 bytes).
pub(crate) fn close_frame(code: u16, reason: &str) -> EncodedFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control_frame(Control::Close, &payload)
}

/// A pong echoing a ping's payload.
pub(crate) fn pong_frame(payload: &[u8]) -> EncodedFrame {
    control_frame(Control::Pong, payload)
}

/// An empty ping, as the server sends every `WEBSOCKET_PING_INTERVAL`.
pub(crate) fn ping_frame() -> EncodedFrame {
    control_frame(Control::Ping, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_frames_tungstenite_can_read() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let text = "a".repeat(len);
            let frame = data_frame(DataKind::Text, text.as_bytes());
            let mut cursor = Cursor::new(&frame[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(length as usize, len);
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(&frame[cursor.position() as usize..], text.as_bytes());
        }
        let close = close_frame(1001, &"é".repeat(100));
        assert!(close.len() <= 2 + 125);
    }
}
