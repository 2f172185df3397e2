//! Exponential backoff, the one used for every retry delay in the project: an agent's ejection
//! (`health.rs`), the EndpointSlice watcher's retries (`source/kubernetes/backoff.rs`), and in
//! the proxy the reconnect to an unreachable agent and a failing `accept`. Each caller keeps its
//! own figures and its own rule for starting over; the doubling and its cap live here, once.

use std::time::Duration;

use rand::Rng;

/// Delays `base × 2^n` after `n` earlier failures, at most `max`; counts the failures so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    /// Failures since the count last started over: the exponent of the next delay.
    attempts: u32,
}

impl Backoff {
    /// A backoff whose first delay is `base`, doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempts: 0,
        }
    }

    /// The delay after `n` earlier failures: `base × 2^min(n, 31)`, at most `max` (saturating,
    /// never overflowing, whatever `n`).
    pub fn nth(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Counts one more failure and returns the delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.nth(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// As [`next_delay`](Self::next_delay), drawn uniformly from `delay / 2 ..= delay`, so that
    /// many clients failing together do not retry in lockstep.
    pub fn next_jittered(&mut self) -> Duration {
        let ceiling = self.next_delay();
        rand::rng().random_range(ceiling / 2..=ceiling)
    }

    /// Failures counted since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts the count over: the next delay is `base` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let mut b = Backoff::new(10 * MS, 100 * MS);
        let got: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(got, [10, 20, 40, 80, 100, 100].map(|n| n * MS));
        assert_eq!(b.attempts(), 6);
    }

    #[test]
    fn reset_starts_over_at_the_base() {
        let mut b = Backoff::new(10 * MS, 100 * MS);
        for _ in 0..4 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.next_delay(), 10 * MS);
    }

    #[test]
    fn huge_exponents_saturate_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.nth(u32::MAX), Duration::from_secs(30));
        let b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert_eq!(
            b.nth(u32::MAX),
            Duration::from_secs(1 << 31),
            "the exponent stops at 31"
        );
    }

    #[test]
    fn jitter_stays_between_half_the_delay_and_the_delay() {
        for _ in 0..200 {
            let mut b = Backoff::new(100 * MS, Duration::from_secs(1));
            let d = b.next_jittered();
            assert!((50 * MS..=100 * MS).contains(&d), "{d:?}");
        }
    }
}
