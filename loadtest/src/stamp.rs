//! The measurement stamp carried in every chat text, and the clock it is read from.
//!
//! Owns the text format `<publisher>:<seq>:<sent_ns>:xxxx…` (padded to the requested size) and its
//! allocation-free parser. `sent_ns` is CLOCK_MONOTONIC, which every thread and every process on one
//! machine share, so a receipt on any driver thread can be timed against a send on any other. The
//! publisher number is its index among the publishers of its room, which keeps each receiver's
//! sequence table as small as its room. It does not own sockets or frames.

use std::io::Write;

/// Nanoseconds on CLOCK_MONOTONIC: comparable across threads and processes on this machine.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a receiver learns from one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's index among its room's publishers.
    pub publisher: u32,
    /// The publisher's sequence number, from 0.
    pub seq: u64,
    /// When the publisher encoded the message ([`monotonic_ns`]).
    pub sent_ns: u64,
}

/// Writes the `chat.message` event for `stamp` into `out` (cleared first), with a text of `size` bytes
/// (longer only when the stamp itself is longer). `out` is reused, so this allocates nothing once it has
/// grown to the message size.
pub fn write_chat(out: &mut Vec<u8>, room: &str, stamp: Stamp, size: usize) {
    out.clear();
    out.extend_from_slice(b"{\"type\":\"chat.message\",\"payload\":{\"room\":\"");
    out.extend_from_slice(room.as_bytes());
    out.extend_from_slice(b"\",\"text\":\"");
    let text_start = out.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}:{}:{}:", stamp.publisher, stamp.seq, stamp.sent_ns);
    let written = out.len() - text_start;
    out.resize(out.len() + size.saturating_sub(written), b'x');
    out.extend_from_slice(b"\"}}");
}

/// Parses the stamp from a delivery's text after the `room R: ` prefix; `None` for any other text.
pub fn parse(text: &[u8]) -> Option<Stamp> {
    let (publisher, rest) = number(text)?;
    let (seq, rest) = number(rest)?;
    let (sent_ns, _) = number(rest)?;
    Some(Stamp {
        publisher: u32::try_from(publisher).ok()?,
        seq,
        sent_ns,
    })
}

/// A decimal number terminated by `:`, and what follows the colon.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s.iter().position(|&b| b == b':')?;
    if end == 0 || end > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in &s[..end] {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((n, &s[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_event_round_trips_through_the_server_reply() {
        let stamp = Stamp {
            publisher: 3,
            seq: 42,
            sent_ns: 123_456_789,
        };
        let mut out = Vec::new();
        write_chat(&mut out, "r7", stamp, 100);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["type"], "chat.message");
        assert_eq!(json["payload"]["room"], "r7");
        let text = json["payload"]["text"].as_str().unwrap();
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("3:42:123456789:xxx"));
        assert_eq!(parse(text.as_bytes()), Some(stamp));
    }

    #[test]
    fn short_sizes_keep_the_whole_stamp() {
        let stamp = Stamp {
            publisher: 0,
            seq: 1,
            sent_ns: 99,
        };
        let mut out = Vec::new();
        write_chat(&mut out, "a", stamp, 1);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["payload"]["text"], "0:1:99:");
    }

    #[test]
    fn other_texts_are_not_stamps() {
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(b"1:2"), None);
        assert_eq!(parse(b"a:2:3:"), None);
        assert_eq!(parse(b"1:99999999999999999999999:3:"), None);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
