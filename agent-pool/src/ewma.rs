//! Peak-EWMA latency, as linkerd2-proxy and Finagle estimate an endpoint's cost: a slow sample
//! raises the estimate at once, faster samples pull it down with a time constant, and between
//! samples the estimate decays toward zero so an idle agent gets tried again.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A lock-free peak-EWMA over nanoseconds. Times are nanoseconds since the pool's epoch.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When the estimate was last updated.
    stamp: AtomicU64,
    /// The time constant in nanoseconds.
    tau_ns: f64,
}

impl PeakEwma {
    /// Starts at `initial_ns` at time `now_ns`, decaying with time constant `tau_ns`.
    pub(crate) fn new(initial_ns: f64, now_ns: u64, tau_ns: f64) -> Self {
        Self {
            estimate: AtomicU64::new(initial_ns.to_bits()),
            stamp: AtomicU64::new(now_ns),
            tau_ns: tau_ns.max(1.0),
        }
    }

    /// Records one latency sample taken at `now_ns`.
    ///
    /// The interval since the previous update is claimed by exactly one caller (`fetch_max`), so
    /// concurrent samples each weigh by their own share of elapsed time.
    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64) {
        let prev = self.stamp.fetch_max(now_ns, Relaxed);
        let elapsed = now_ns.saturating_sub(prev) as f64;
        let decay = (-elapsed / self.tau_ns).exp();
        let _ = self.estimate.fetch_update(Relaxed, Relaxed, |bits| {
            let est = f64::from_bits(bits);
            let next = if rtt_ns > est {
                rtt_ns
            } else {
                est * decay + rtt_ns * (1.0 - decay)
            };
            Some(next.to_bits())
        });
    }

    /// The estimate as last updated and when: comparing two agents needs no clock, as the decay
    /// since then scales both by `exp(-(now - stamp) / tau)` (see [`decay_ratio`]).
    #[inline]
    pub(crate) fn raw(&self) -> (f64, u64) {
        (
            f64::from_bits(self.estimate.load(Relaxed)),
            self.stamp.load(Relaxed),
        )
    }

    pub(crate) fn tau_ns(&self) -> f64 {
        self.tau_ns
    }

    /// The estimate at `now_ns`, decayed toward zero since the last sample. Read-only.
    #[inline]
    pub(crate) fn get(&self, now_ns: u64) -> f64 {
        let est = f64::from_bits(self.estimate.load(Relaxed));
        let elapsed = now_ns.saturating_sub(self.stamp.load(Relaxed));
        if elapsed == 0 {
            return est;
        }
        est * (-(elapsed as f64) / self.tau_ns).exp()
    }
}

/// `exp(delta_ns / tau_ns)`: how much more an estimate stamped `delta_ns` later weighs than one
/// stamped earlier, once both decay to a common instant. Stamps usually lie within milliseconds
/// of each other against a time constant of seconds, where `1 + x + x²/2` is exact to 1e-10.
#[inline]
pub(crate) fn decay_ratio(delta_ns: f64, tau_ns: f64) -> f64 {
    let x = delta_ns / tau_ns;
    if x.abs() < 1e-3 {
        1.0 + x + 0.5 * x * x
    } else {
        x.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const S: u64 = 1_000_000_000;

    #[test]
    fn a_slow_sample_raises_the_estimate_at_once() {
        let e = PeakEwma::new(1.0 * MS, 0, 10.0 * S as f64);
        e.observe(50.0 * MS, 1_000);
        assert!((e.get(1_000) - 50.0 * MS).abs() < 1.0);
    }

    #[test]
    fn fast_samples_pull_the_estimate_down_with_time() {
        let e = PeakEwma::new(50.0 * MS, 0, 10.0 * S as f64);
        // 1 s of 1 ms samples at 1 kHz: about 1 - e^-0.1 of the way down.
        for i in 1..=1000u64 {
            e.observe(1.0 * MS, i * S / 1000);
        }
        let after_1s = e.get(S);
        assert!(after_1s < 50.0 * MS && after_1s > 40.0 * MS, "{after_1s}");
        // 60 s more: close to the samples.
        for i in 1..=60_000u64 {
            e.observe(1.0 * MS, S + i * S / 1000);
        }
        assert!(e.get(61 * S) < 1.2 * MS);
    }

    #[test]
    fn the_decay_ratio_matches_exp() {
        for x in [-2.0, -1e-3, -1e-4, 0.0, 3e-4, 9.9e-4, 1e-3, 0.5, 4.0] {
            let got = decay_ratio(x * 1e10, 1e10);
            assert!(
                (got - f64::exp(x)).abs() <= 1e-9 * f64::exp(x),
                "{x}: {got}"
            );
        }
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let e = PeakEwma::new(50.0 * MS, 0, 10.0 * S as f64);
        assert!(e.get(30 * S) < 50.0 * MS * 0.06);
    }
}
