//! Latency as the drive measures it: microsecond histograms and the quantiles reported from
//! them; below the recorders and reports so that each reads latency the same way.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Microseconds from 1 µs to 120 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let q = |p: f64| h.value_at_quantile(p);
        Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Path B's latency minus path A's for one method, microseconds (positive: B is slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencyDiff {
    /// Difference of the medians.
    pub p50: i64,
    /// Difference of the 99th percentiles.
    pub p99: i64,
}

impl LatencyDiff {
    /// `b − a`.
    pub fn between(a: &Latency, b: &Latency) -> LatencyDiff {
        LatencyDiff {
            p50: b.p50 as i64 - a.p50 as i64,
            p99: b.p99 as i64 - a.p99 as i64,
        }
    }
}
