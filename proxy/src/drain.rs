//! Drain: the readiness latch and the accounting of RPCs in flight, so `run` can report how
//! many it had to cut off (and the busy poller knows when to spin).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::busy_poll::Activity;

/// Readiness as a latch that drain flips once (`/readyz` reads it).
#[derive(Debug)]
pub(crate) struct Readiness(AtomicBool);

impl Readiness {
    /// Serving.
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(true))
    }
    /// Whether the proxy still wants new connections.
    pub(crate) fn is_serving(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Stop serving, for good.
    pub(crate) fn drain(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// RPCs in flight across the proxy.
#[derive(Debug, Default)]
pub(crate) struct InFlightCount {
    count: AtomicU64,
    /// Request bytes of the RPCs counted.
    bytes: AtomicU64,
    /// Only with busy polling: when the last RPC finished, and a wake-up for the first to start.
    activity: Option<Activity>,
}

impl InFlightCount {
    /// A count that also records activity for the busy poller.
    pub(crate) fn with_activity() -> Self {
        Self {
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            activity: Some(Activity::default()),
        }
    }
    /// Counts one RPC of `bytes` until the guard drops; `None`, counting nothing, when that
    /// would pass `max_calls` or `max_bytes`.
    pub(crate) fn try_enter(
        &self,
        bytes: usize,
        max_calls: usize,
        max_bytes: usize,
    ) -> Option<InFlightGuard<'_>> {
        let bytes = bytes as u64;
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > max_bytes as u64 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        if self.count.load(Ordering::Relaxed) >= max_calls as u64 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(self.enter(bytes))
    }

    pub(crate) fn enter(&self, bytes: u64) -> InFlightGuard<'_> {
        let before = self.count.fetch_add(1, Ordering::Relaxed);
        if let (0, Some(activity)) = (before, &self.activity) {
            activity.first_started();
        }
        crate::metrics::in_flight(1.0);
        InFlightGuard(self, bytes)
    }
    /// How many now.
    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    /// The activity record, when this count keeps one.
    pub(crate) fn activity(&self) -> Option<&Activity> {
        self.activity.as_ref()
    }
}

/// See [`InFlightCount::enter`].
pub(crate) struct InFlightGuard<'a>(&'a InFlightCount, u64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(activity) = &self.0.activity {
            activity.finished();
        }
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.bytes.fetch_sub(self.1, Ordering::Relaxed);
        crate::metrics::in_flight(-1.0);
    }
}

/// What a drain ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// RPCs still in flight when the drain timeout ended the wait (0 for a clean drain).
    pub cut_off: u64,
}
