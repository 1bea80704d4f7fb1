//! What one driver thread counted, and how tallies from many threads merge.
//!
//! Owns the counters (latency histogram, deliveries, duplicates, late arrivals, errors by kind, sent and
//! distinct-received per room and publisher, compressed and plain messages, bytes received) and their
//! merge. A thread fills its own tally without synchronisation; the main thread merges them once at the
//! end, and merges per-second [`Interval`]s as they arrive for the time series. It does not decide loss
//! or pass/fail (see `report`).

use std::collections::BTreeMap;
use std::io;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to this many (60 s), at 3 significant figures.
const MAX_LATENCY_US: u64 = 60_000_000;

/// An empty latency histogram.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Why a client could not be set up (or was cut off), grouped for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// ECONNREFUSED: nothing listening, or the accept backlog overflowed.
    Refused,
    /// The connect or set-up deadline passed.
    TimedOut,
    /// EADDRNOTAVAIL: the source address ran out of ephemeral ports.
    NoPorts,
    /// EMFILE/ENFILE: the harness's file descriptor limit.
    TooManyFiles,
    /// ECONNRESET or EPIPE.
    Reset,
    /// The server closed the connection (EOF or close frame).
    Closed,
    /// The upgrade response was wrong.
    Handshake,
    /// permessage-deflate was offered (`--deflate`) and the upgrade succeeded without it: the connection
    /// is dropped before it can carry plain frames into a compressed measurement.
    DeflateRefused,
    /// A frame violated the protocol, or the reply was not the seed's.
    Protocol,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of an I/O error.
    pub fn of(e: &io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ErrorKind::Refused,
            Some(libc::ETIMEDOUT) => ErrorKind::TimedOut,
            Some(libc::EADDRNOTAVAIL) => ErrorKind::NoPorts,
            Some(libc::EMFILE) | Some(libc::ENFILE) => ErrorKind::TooManyFiles,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => ErrorKind::Reset,
            _ => ErrorKind::Other,
        }
    }

    /// The report's name for this kind.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::NoPorts => "no_ephemeral_ports",
            ErrorKind::TooManyFiles => "too_many_open_files",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed_by_server",
            ErrorKind::Handshake => "handshake",
            ErrorKind::DeflateRefused => "deflate_refused",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Other => "other",
        }
    }
}

/// One thread's counts for a whole run.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Publisher send to member receipt, microseconds, counted members only.
    pub latency: Histogram<u64>,
    /// Counted deliveries, duplicates included.
    pub deliveries: u64,
    /// Deliveries of a message the receiver already had.
    pub duplicates: u64,
    /// Deliveries that arrived after a later message from the same publisher.
    pub late: u64,
    /// Texts that were neither a delivery nor an expected reply.
    pub unexpected: u64,
    /// Set-up failures by kind (non-churners and churners alike).
    pub connect_errors: BTreeMap<ErrorKind, u64>,
    /// Connections lost after set-up, by kind.
    pub disconnects: BTreeMap<ErrorKind, u64>,
    /// Messages sent, per room and publisher.
    pub sent: Vec<Vec<u64>>,
    /// Distinct messages received by counted members, summed per room and publisher.
    pub distinct: Vec<Vec<u64>>,
    /// Completed churn cycles (connect, join, chat, leave, disconnect).
    pub churn_cycles: u64,
    /// Connections established and upgraded, churners included.
    pub connects: u64,
    /// Upgrades that negotiated permessage-deflate.
    pub deflate_negotiated: u64,
    /// Data messages received with RSV1 set (compressed), every stage and connection.
    pub messages_compressed: u64,
    /// Data messages received without it.
    pub messages_plain: u64,
    /// Data messages' bytes as the harness read them: inflated where they were compressed.
    pub message_bytes: u64,
    /// Every byte read from the sockets, upgrade responses and frame headers included.
    pub bytes_received: u64,
}

impl Tally {
    /// An empty tally for rooms with these publisher counts.
    pub fn new(publishers_per_room: &[u32]) -> Tally {
        let per_room = || {
            publishers_per_room
                .iter()
                .map(|&p| vec![0; p as usize])
                .collect::<Vec<_>>()
        };
        Tally {
            latency: latency_histogram(),
            deliveries: 0,
            duplicates: 0,
            late: 0,
            unexpected: 0,
            connect_errors: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            sent: per_room(),
            distinct: per_room(),
            churn_cycles: 0,
            connects: 0,
            deflate_negotiated: 0,
            messages_compressed: 0,
            messages_plain: 0,
            message_bytes: 0,
            bytes_received: 0,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.deliveries += other.deliveries;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.unexpected += other.unexpected;
        for (k, v) in &other.connect_errors {
            *self.connect_errors.entry(*k).or_default() += v;
        }
        for (k, v) in &other.disconnects {
            *self.disconnects.entry(*k).or_default() += v;
        }
        add_nested(&mut self.sent, &other.sent);
        add_nested(&mut self.distinct, &other.distinct);
        self.churn_cycles += other.churn_cycles;
        self.connects += other.connects;
        self.deflate_negotiated += other.deflate_negotiated;
        self.messages_compressed += other.messages_compressed;
        self.messages_plain += other.messages_plain;
        self.message_bytes += other.message_bytes;
        self.bytes_received += other.bytes_received;
    }
}

fn add_nested(into: &mut [Vec<u64>], from: &[Vec<u64>]) {
    for (a, b) in into.iter_mut().zip(from) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

/// One second of one thread's run, sent to the main thread for the time series.
#[derive(Clone, Debug)]
pub struct Interval {
    /// Seconds since the run started (0 = the first second).
    pub second: u64,
    /// Latencies recorded in that second.
    pub latency: Histogram<u64>,
    /// Counted deliveries in that second.
    pub deliveries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_everything() {
        let mut a = Tally::new(&[2, 1]);
        let mut b = Tally::new(&[2, 1]);
        a.latency.record(10).unwrap();
        b.latency.record(1000).unwrap();
        a.sent[0][1] = 5;
        b.sent[0][1] = 7;
        b.distinct[1][0] = 3;
        *b.connect_errors.entry(ErrorKind::Refused).or_default() += 2;
        a.deliveries = 1;
        b.deliveries = 2;
        (a.messages_compressed, b.messages_compressed) = (4, 5);
        (a.bytes_received, b.bytes_received) = (100, 23);
        b.deflate_negotiated = 3;
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.latency.max(), b.latency.max());
        assert_eq!(a.sent[0][1], 12);
        assert_eq!(a.distinct[1][0], 3);
        assert_eq!(a.connect_errors[&ErrorKind::Refused], 2);
        assert_eq!(a.deliveries, 3);
        assert_eq!(
            (
                a.messages_compressed,
                a.bytes_received,
                a.deflate_negotiated
            ),
            (9, 123, 3)
        );
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ErrorKind::of(&e), ErrorKind::Refused);
        let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(ErrorKind::of(&e).name(), "no_ephemeral_ports");
    }
}
