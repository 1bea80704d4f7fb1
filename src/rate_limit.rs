//! Per-sender rate limits: how many messages, and how many bytes, one session may send per second.
//!
//! Each limit is a token bucket kept as GCRA (the generic cell rate algorithm): instead of a token count and
//! a refill time, one timestamp per bucket, the "theoretical arrival time" at which the bucket would be
//! full again. A message that would push it more than the burst ahead of now does not conform and is
//! refused; nothing is updated then, so refused messages cost the sender no allowance. Checking costs one
//! clock read and a few integer operations, and the whole state is 24 bytes of the connection task.
//!
//! A session over the limit is refused message by message (`message rejected: rate limit`). One that
//! *stays* over it, sending on while refused, is cut: after more refusals than its burst allows without
//! having let its message bucket fill up again, it is closed with 1008 "rate limit". So a flooder is the one
//! cut, while its room's readers only ever see the messages that were admitted, and a client that briefly
//! bursts and then slows down is never closed.
//!
//! It must not send or close anything: it only says [`Verdict`]; the connection task acts on it.

use std::sync::LazyLock;
use std::time::Instant;

use crate::config::RateLimits;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limits: hand it to the application.
    Admit,
    /// Over a limit: refuse it, tell the sender.
    Refuse,
    /// Over a limit and kept sending while refused: close the session.
    Cut,
}

/// The buckets of one session. All times are nanoseconds since [`EPOCH`].
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    /// When the message bucket is full again.
    messages_full_at: u64,
    /// When the byte bucket is full again.
    bytes_full_at: u64,
    /// Messages refused since the message bucket was last full.
    refused: u32,
}

/// The clock's origin: the first use in the process.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

const NANOS_PER_SECOND: u64 = 1_000_000_000;

impl RateLimiter {
    /// Decides on a message of `len` bytes arriving now.
    pub(crate) fn check(&mut self, limits: &RateLimits, len: usize) -> Verdict {
        if limits.is_off() {
            return Verdict::Admit;
        }
        let now = EPOCH.elapsed().as_nanos() as u64;
        self.check_at(limits, len, now)
    }

    fn check_at(&mut self, limits: &RateLimits, len: usize, now: u64) -> Verdict {
        if self.messages_full_at <= now {
            // The sender let its message bucket fill up: it is not staying over the limit.
            self.refused = 0;
        }
        let messages = limits
            .messages
            .map(|m| next_full_at(self.messages_full_at, now, 1, m.per_second, m.burst));
        let bytes = limits
            .bytes
            .map(|b| next_full_at(self.bytes_full_at, now, len as u64, b.per_second, b.burst));
        match (messages, bytes) {
            (Some(None), _) | (_, Some(None)) => {
                self.refused = self.refused.saturating_add(1);
                let allowance = limits.messages.map_or(1, |m| m.burst);
                if u64::from(self.refused) > allowance {
                    Verdict::Cut
                } else {
                    Verdict::Refuse
                }
            }
            (messages, bytes) => {
                if let Some(Some(at)) = messages {
                    self.messages_full_at = at;
                }
                if let Some(Some(at)) = bytes {
                    self.bytes_full_at = at;
                }
                Verdict::Admit
            }
        }
    }
}

/// GCRA for one bucket: when it would be full again after taking `cost` units now, or `None` if taking them
/// would put it more than `burst` units behind (the units do not conform).
fn next_full_at(full_at: u64, now: u64, cost: u64, per_second: u64, burst: u64) -> Option<u64> {
    // Nanoseconds each unit takes to refill; at least 1, so very high rates are still bounded by `burst`.
    let unit = (NANOS_PER_SECOND / per_second.max(1)).max(1);
    let next = full_at.max(now).saturating_add(cost.saturating_mul(unit));
    (next - now <= burst.saturating_mul(unit)).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bucket;

    const SECOND: u64 = NANOS_PER_SECOND;

    fn limits(messages: Option<(u64, u64)>, bytes: Option<(u64, u64)>) -> RateLimits {
        RateLimits {
            messages: messages.map(|(per_second, burst)| Bucket { per_second, burst }),
            bytes: bytes.map(|(per_second, burst)| Bucket { per_second, burst }),
        }
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_holds() {
        let limits = limits(Some((10, 5)), None);
        let mut limiter = RateLimiter::default();
        let start = 100 * SECOND;
        for _ in 0..5 {
            assert_eq!(limiter.check_at(&limits, 10, start), Verdict::Admit);
        }
        assert_eq!(limiter.check_at(&limits, 10, start), Verdict::Refuse);
        // One tenth of a second later, one more message has refilled.
        assert_eq!(
            limiter.check_at(&limits, 10, start + SECOND / 10),
            Verdict::Admit
        );
        assert_eq!(
            limiter.check_at(&limits, 10, start + SECOND / 10),
            Verdict::Refuse
        );
    }

    #[test]
    fn a_sender_that_keeps_sending_while_refused_is_cut() {
        let limits = limits(Some((10, 5)), None);
        let mut limiter = RateLimiter::default();
        let now = 100 * SECOND;
        let verdicts: Vec<Verdict> = (0..20).map(|_| limiter.check_at(&limits, 1, now)).collect();
        assert_eq!(verdicts[..5], [Verdict::Admit; 5]);
        assert_eq!(verdicts[5..10], [Verdict::Refuse; 5]);
        assert_eq!(verdicts[10], Verdict::Cut);
    }

    #[test]
    fn a_sender_that_slows_down_is_forgiven() {
        let limits = limits(Some((10, 5)), None);
        let mut limiter = RateLimiter::default();
        let mut now = 100 * SECOND;
        for _ in 0..3 {
            for _ in 0..5 {
                assert_eq!(limiter.check_at(&limits, 1, now), Verdict::Admit);
            }
            for _ in 0..5 {
                assert_eq!(limiter.check_at(&limits, 1, now), Verdict::Refuse);
            }
            // Quiet long enough for the bucket to fill: the refusals are forgotten.
            now += SECOND;
        }
    }

    #[test]
    fn bytes_are_limited_independently_of_messages() {
        let limits = limits(None, Some((1000, 1000)));
        let mut limiter = RateLimiter::default();
        let now = 100 * SECOND;
        assert_eq!(limiter.check_at(&limits, 600, now), Verdict::Admit);
        assert_eq!(limiter.check_at(&limits, 600, now), Verdict::Refuse);
        assert_eq!(limiter.check_at(&limits, 400, now), Verdict::Admit);
        // 0.6 s later 600 bytes have refilled.
        assert_eq!(
            limiter.check_at(&limits, 600, now + 6 * SECOND / 10),
            Verdict::Admit
        );
    }

    #[test]
    fn a_message_over_either_limit_takes_from_neither() {
        let limits = limits(Some((10, 2)), Some((100, 100)));
        let mut limiter = RateLimiter::default();
        let now = 100 * SECOND;
        assert_eq!(limiter.check_at(&limits, 150, now), Verdict::Refuse);
        // The refused message took no message allowance: two small ones still fit.
        assert_eq!(limiter.check_at(&limits, 10, now), Verdict::Admit);
        assert_eq!(limiter.check_at(&limits, 10, now), Verdict::Admit);
        assert_eq!(limiter.check_at(&limits, 10, now), Verdict::Refuse);
    }

    #[test]
    fn no_limits_admit_everything() {
        let limits = limits(None, None);
        let mut limiter = RateLimiter::default();
        for _ in 0..10_000 {
            assert_eq!(limiter.check(&limits, 1 << 20), Verdict::Admit);
        }
    }
}
