//! What overload judging needs of a drive's calls beyond the per-method tables: how fast calls
//! that were not inspected (an error frame, a reset, a timeout: the module failed open) were
//! answered, apart from how fast inspected PreRequests were. Both from the call's own start, not
//! its scheduled time: what a module waits for once it calls, without the load generator's own
//! lag behind its timetable (reported apart as the start lateness), which on a loaded machine
//! at 10x overload reached 630 ms p99 and would hide the proxy's answer time.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::latency::{Latency, histogram};

/// Latency of the calls that failed and of the PreRequests answered, as they end.
#[derive(Debug)]
pub(crate) struct InspectionRecorder {
    uninspected: Mutex<Histogram<u64>>,
    inspected_pre: Mutex<Histogram<u64>>,
}

/// The latency of calls not inspected and of inspected PreRequests, µs (`None`: no such call).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// Failed calls of every method (the module failed open), from the call's start.
    pub uninspected_latency_us: Option<Latency>,
    /// PreRequests answered, from the call's start.
    pub inspected_pre_latency_us: Option<Latency>,
}

impl InspectionRecorder {
    pub(crate) fn new() -> InspectionRecorder {
        InspectionRecorder {
            uninspected: Mutex::new(histogram()),
            inspected_pre: Mutex::new(histogram()),
        }
    }

    /// Records one call of `method` that took `latency`; `failed` if it got no answer.
    pub(crate) fn record(&self, method: &str, latency: Duration, failed: bool) {
        let us = (latency.as_micros() as u64).max(1);
        let h = if failed {
            &self.uninspected
        } else if method == crate::rpc::PRE_REQUEST {
            &self.inspected_pre
        } else {
            return;
        };
        h.lock().expect("not poisoned").saturating_record(us);
    }

    /// The quantiles so far.
    pub(crate) fn report(&self) -> Inspection {
        let of = |h: &Mutex<Histogram<u64>>| {
            let h = h.lock().expect("not poisoned");
            (!h.is_empty()).then(|| Latency::of(&h))
        };
        Inspection {
            uninspected_latency_us: of(&self.uninspected),
            inspected_pre_latency_us: of(&self.inspected_pre),
        }
    }
}
