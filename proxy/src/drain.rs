//! Drain: the readiness latch that `/readyz` reads and drain flips, and what a drain ended
//! with. The RPCs a drain waits for are counted in `in_flight`.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// What a drain ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// RPCs still in flight when the drain timeout ended the wait (0 for a clean drain).
    pub cut_off: u64,
}
