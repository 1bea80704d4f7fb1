//! Loss, duplication and order, per (receiver, publisher) pair.
//!
//! Owns the rule for classifying one delivery against what a receiver has seen from that publisher,
//! in constant space: the highest sequence number plus a 64-bit window of which of the 64 numbers
//! below it arrived (the anti-replay window of IPsec). A number already in the window is a duplicate;
//! one below the highest that is not is a late (out-of-order) arrival. A number more than 64 below
//! the highest cannot be told apart and is counted as late, never as a duplicate. Loss is decided at
//! the end by the caller: messages sent minus distinct messages received. It does not own timing.

/// How one delivery compares with what came before from the same publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than every number seen so far (a gap before it may still fill in).
    InOrder,
    /// Lower than a number already seen, and not seen before.
    Late,
    /// Already seen.
    Duplicate,
}

/// What one receiver has seen from one publisher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTrack {
    /// One past the highest sequence number seen (0 = nothing yet).
    next: u64,
    /// Bit i set = `next - 1 - i` has arrived.
    window: u64,
    /// Distinct sequence numbers received.
    distinct: u64,
}

impl SeqTrack {
    /// Classifies `seq` and records it.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.next = seq + 1;
            self.distinct += 1;
            return Arrival::InOrder;
        }
        let age = self.next - 1 - seq;
        if age < 64 {
            let bit = 1u64 << age;
            if self.window & bit != 0 {
                return Arrival::Duplicate;
            }
            self.window |= bit;
        }
        self.distinct += 1;
        Arrival::Late
    }

    /// Distinct sequence numbers received.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_all_in_order() {
        let mut t = SeqTrack::default();
        for seq in 0..1000 {
            assert_eq!(t.record(seq), Arrival::InOrder);
        }
        assert_eq!(t.distinct(), 1000);
    }

    #[test]
    fn duplicates_are_caught_within_the_window() {
        let mut t = SeqTrack::default();
        for seq in 0..100 {
            t.record(seq);
        }
        assert_eq!(t.record(99), Arrival::Duplicate);
        assert_eq!(t.record(40), Arrival::Duplicate);
        assert_eq!(t.distinct(), 100);
    }

    #[test]
    fn gaps_that_fill_in_are_late_not_lost() {
        let mut t = SeqTrack::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(3), Arrival::InOrder);
        assert_eq!(t.record(1), Arrival::Late);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(2), Arrival::Late);
        assert_eq!(t.distinct(), 4);
    }

    #[test]
    fn a_gap_that_never_fills_is_loss_for_the_caller() {
        let mut t = SeqTrack::default();
        for seq in (0..10).filter(|s| *s != 4) {
            t.record(seq);
        }
        assert_eq!(10 - t.distinct(), 1);
    }

    #[test]
    fn jumps_wider_than_the_window_reset_it() {
        let mut t = SeqTrack::default();
        t.record(0);
        assert_eq!(t.record(500), Arrival::InOrder);
        assert_eq!(t.record(499), Arrival::Late);
        assert_eq!(t.record(500), Arrival::Duplicate);
        assert_eq!(
            t.record(1),
            Arrival::Late,
            "beyond the window: counted late"
        );
    }
}
