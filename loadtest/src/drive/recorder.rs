//! What a drive records while it runs: every call's latency and error by method, the
//! timeline, the lateness of open-loop transactions; turned into the report's tallies when the
//! drive ends.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::client::ErrorKind;
use super::inspection::InspectionRecorder;
use super::latency::{Latency, histogram};
use super::report::{BUCKET, Bucket, MethodReport};

/// Collects results while the drive runs.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Mutex<BTreeMap<&'static str, MethodRecorder>>,
    /// When the drive started; calls are bucketed in the timeline from then on.
    start: OnceLock<tokio::time::Instant>,
    timeline: Mutex<Vec<Bucket>>,
    /// How far behind its scheduled instant each transaction started (open loop).
    lateness: Mutex<Histogram<u64>>,
    /// Failed calls' and inspected PreRequests' latency from the call's own start.
    pub(crate) inspection: InspectionRecorder,
}

#[derive(Debug)]
struct MethodRecorder {
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
    hist: Histogram<u64>,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            inner: Mutex::new(BTreeMap::new()),
            start: OnceLock::new(),
            timeline: Mutex::new(Vec::new()),
            lateness: Mutex::new(histogram()),
            inspection: InspectionRecorder::new(),
        }
    }

    /// Records how late (after its scheduled instant) a transaction started.
    pub(crate) fn record_lateness(&self, late: Duration) {
        let us = (late.as_micros() as u64).max(1);
        self.lateness
            .lock()
            .expect("not poisoned")
            .saturating_record(us);
    }

    /// Start lateness quantiles, if any transaction recorded one.
    pub(crate) fn lateness(&self) -> Option<Latency> {
        let h = self.lateness.lock().expect("not poisoned");
        (!h.is_empty()).then(|| Latency::of(&h))
    }

    /// Starts the timeline.
    pub(crate) fn set_start(&self, start: tokio::time::Instant) {
        let _ = self.start.set(start);
    }

    /// The timeline so far.
    pub(crate) fn timeline(&self) -> Vec<Bucket> {
        self.timeline.lock().expect("not poisoned").clone()
    }

    /// Records one call of `method` that took `latency` (recorded for failures too).
    pub(crate) fn record(&self, method: &'static str, latency: Duration, error: Option<ErrorKind>) {
        let mut map = self.inner.lock().expect("not poisoned");
        let m = map.entry(method).or_insert_with(|| MethodRecorder {
            ok: 0,
            errors: BTreeMap::new(),
            hist: histogram(),
        });
        match error {
            None => m.ok += 1,
            Some(k) => *m.errors.entry(k).or_default() += 1,
        }
        let us = (latency.as_micros() as u64).max(1);
        m.hist.saturating_record(us);
        drop(map);
        if let Some(start) = self.start.get() {
            let i = (start.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
            let mut t = self.timeline.lock().expect("not poisoned");
            if t.len() <= i {
                t.resize(i + 1, Bucket::default());
            }
            let b = &mut t[i];
            b.calls += 1;
            if let Some(k) = error {
                b.errors += 1;
                if k == ErrorKind::Refused {
                    b.refused += 1;
                }
            }
            if method == crate::rpc::PRE_REQUEST {
                b.prerequests += 1;
                b.pre_latency_sum_us += us;
                b.pre_latency_max_us = b.pre_latency_max_us.max(us);
            }
        }
    }

    pub(crate) fn methods(&self) -> BTreeMap<String, MethodReport> {
        let map = self.inner.lock().expect("not poisoned");
        map.iter()
            .map(|(name, m)| {
                let errors: u64 = m.errors.values().sum();
                let report = MethodReport {
                    calls: m.ok + errors,
                    ok: m.ok,
                    errors: m.errors.iter().map(|(k, v)| (*k, *v)).collect(),
                    latency_us: Latency::of(&m.hist),
                };
                (name.to_string(), report)
            })
            .collect()
    }
}
