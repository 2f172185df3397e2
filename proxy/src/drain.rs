//! Drain: the readiness latch and the accounting of RPCs in flight, so `run` can report how
//! many it had to cut off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
pub(crate) struct InFlightCount(AtomicU64);

impl InFlightCount {
    /// Counts one RPC until the guard drops.
    pub(crate) fn enter(&self) -> InFlightGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        crate::metrics::in_flight(1.0);
        InFlightGuard(self)
    }
    /// How many now.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// See [`InFlightCount::enter`].
pub(crate) struct InFlightGuard<'a>(&'a InFlightCount);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::in_flight(-1.0);
    }
}

/// What a drain ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// RPCs still in flight when the drain timeout ended the wait (0 for a clean drain).
    pub cut_off: u64,
}
