//! An agent's latency estimate, as the picker weighs it: a mean over the last `tau` (an
//! exponentially weighted moving average, weighted by time) and a peak that decays ten times
//! faster. A slow answer raises the estimate at once, as in linkerd2-proxy's and Finagle's
//! peak-EWMA; unlike theirs, one slow answer among fast ones is forgotten in about
//! `tau / 10 × ln(slow ÷ normal)` while a steadily slow agent stays expensive through its mean.
//! Between samples both decay toward zero, so an idle agent gets tried again.
//!
//! Why not a plain peak-EWMA: on a busy node about one answer in a hundred is a scheduling
//! hiccup several times the median. A peak that fades with `tau` then sits on the last hiccup,
//! not the agent's speed: agents were starved in turns for seconds each, and equal agents got
//! unequal shares (figures in `docs/measurements.md`, "Picker and latency estimate").

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How much faster the peak decays than the mean.
const PEAK_SPEEDUP: f64 = 10.0;

/// A lock-free latency estimate over nanoseconds. Times are nanoseconds since the pool's epoch.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The time-weighted mean in nanoseconds, as `f64` bits.
    mean: AtomicU64,
    /// The latest peak in nanoseconds, as `f64` bits (decays with `tau / PEAK_SPEEDUP`).
    peak: AtomicU64,
    /// When both were last updated.
    stamp: AtomicU64,
    /// The mean's time constant in nanoseconds.
    tau_ns: f64,
}

impl PeakEwma {
    /// Starts at `initial_ns` at time `now_ns`, decaying with time constant `tau_ns`.
    pub(crate) fn new(initial_ns: f64, now_ns: u64, tau_ns: f64) -> Self {
        Self {
            mean: AtomicU64::new(initial_ns.to_bits()),
            peak: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(now_ns),
            tau_ns: tau_ns.max(1.0),
        }
    }

    /// Records one latency sample taken at `now_ns`.
    ///
    /// The interval since the previous update is claimed by exactly one caller (`fetch_max`), so
    /// concurrent samples each weigh by their own share of elapsed time; after a long idle
    /// spell the new sample outweighs the old mean.
    pub(crate) fn observe(&self, rtt_ns: f64, now_ns: u64) {
        let prev = self.stamp.fetch_max(now_ns, Relaxed);
        let elapsed = now_ns.saturating_sub(prev) as f64;
        let decay = (-elapsed / self.tau_ns).exp();
        let peak_decay = (-elapsed * PEAK_SPEEDUP / self.tau_ns).exp();
        let _ = self.mean.fetch_update(Relaxed, Relaxed, |bits| {
            let mean = f64::from_bits(bits);
            Some((mean * decay + rtt_ns * (1.0 - decay)).to_bits())
        });
        let _ = self.peak.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) * peak_decay).max(rtt_ns).to_bits())
        });
    }

    /// Records a failure costing `penalty_ns` at `now_ns`: the mean itself jumps to at least
    /// the penalty (a sample would move it only by its share of the elapsed time), so a failing
    /// agent stays dear for about `tau × ln(penalty ÷ normal)` unless it answers well again.
    pub(crate) fn penalize(&self, penalty_ns: f64, now_ns: u64) {
        self.observe(penalty_ns, now_ns);
        let _ = self.mean.fetch_update(Relaxed, Relaxed, |bits| {
            Some(f64::from_bits(bits).max(penalty_ns).to_bits())
        });
    }

    /// Starts over at `initial_ns` (a new process behind the same agent).
    pub(crate) fn reset(&self, initial_ns: f64, now_ns: u64) {
        self.mean.store(initial_ns.to_bits(), Relaxed);
        self.peak.store(0f64.to_bits(), Relaxed);
        self.stamp.store(now_ns, Relaxed);
    }

    /// The estimate at `now_ns`: the larger of the mean and the peak, each decayed toward zero
    /// since the last sample. Read-only.
    #[inline]
    pub(crate) fn get(&self, now_ns: u64) -> f64 {
        let mean = f64::from_bits(self.mean.load(Relaxed));
        let peak = f64::from_bits(self.peak.load(Relaxed));
        let x = now_ns.saturating_sub(self.stamp.load(Relaxed)) as f64 / self.tau_ns;
        (mean * (-x).exp()).max(peak * (-x * PEAK_SPEEDUP).exp())
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
    fn one_slow_sample_among_fast_ones_fades_quickly_but_a_slow_agent_stays_slow() {
        let tau = S as f64;
        // A 2 ms hiccup among 0.3 ms answers, 700 a second.
        let e = PeakEwma::new(0.3 * MS, 0, tau);
        let mut t = 0;
        for _ in 0..700 {
            t += S / 700;
            e.observe(0.3 * MS, t);
        }
        e.observe(2.0 * MS, t);
        assert!(e.get(t) >= 2.0 * MS, "raised at once");
        for _ in 0..140 {
            t += S / 700;
            e.observe(0.3 * MS, t);
        }
        assert!(e.get(t) < 0.4 * MS, "forgotten within 200 ms: {}", e.get(t));
        // Every answer slow: the estimate stays up, sample after sample.
        let slow = PeakEwma::new(0.3 * MS, 0, tau);
        let mut t = 0;
        for _ in 0..700 {
            t += S / 700;
            slow.observe(2.0 * MS, t);
            assert!(slow.get(t) >= 2.0 * MS * 0.99);
        }
    }

    #[test]
    fn a_failure_keeps_the_estimate_up_for_the_mean_s_time_not_the_peak_s() {
        let tau = S as f64;
        let e = PeakEwma::new(0.3 * MS, 0, tau);
        for i in 1..=100u64 {
            e.observe(0.3 * MS, i * S / 1000);
        }
        e.penalize(50.0 * MS, 100 * S / 1000);
        // 1 s later a peak would be gone (e^-10); the mean is still e^-1 of the penalty.
        let later = e.get(1100 * S / 1000);
        assert!(later > 15.0 * MS, "{later}");
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let e = PeakEwma::new(50.0 * MS, 0, 10.0 * S as f64);
        assert!(e.get(30 * S) < 50.0 * MS * 0.06);
    }
}
