//! Drain: the sequence a proxy runs on SIGTERM, SIGINT or `drain` on the control socket, the
//! readiness latch that `/readyz` reads and drain flips, and what a drain ended with.
//!
//! `/readyz` turns 503 at once; the listeners keep accepting for the drain delay while Service
//! endpoints converge; then they close, connections finish their in-flight RPCs and close; the
//! drain ends as soon as nothing is left, or at the drain timeout with the number of RPCs cut
//! off (counted in `in_flight`). Never sleeps out the timeout when nothing is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::in_flight::InFlightCount;
use crate::metrics as m;

/// What a drain acts on.
pub(crate) struct Drain {
    /// Flipped at once: `/readyz` answers 503.
    readiness: Arc<Readiness>,
    /// Cancelled after the delay: the listeners close, connections finish and close.
    stop: CancellationToken,
    /// The accept loops and connection tasks the drain waits for.
    tracker: TaskTracker,
    /// RPCs in flight: what a timeout cuts off.
    in_flight: Arc<InFlightCount>,
}

impl Drain {
    pub(crate) fn new(
        readiness: Arc<Readiness>,
        stop: CancellationToken,
        tracker: TaskTracker,
        in_flight: Arc<InFlightCount>,
    ) -> Self {
        Self {
            readiness,
            stop,
            tracker,
            in_flight,
        }
    }

    /// Runs the sequence: `delay` is `--drain-delay`, `timeout` (`--drain-timeout`) counts
    /// from the start. Returns what it had to cut off.
    pub(crate) async fn run(self, delay: Duration, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        self.readiness.drain();
        m::draining(true);
        info!(?delay, ?timeout, "Draining");
        tokio::time::sleep(delay).await;

        self.stop.cancel();
        self.tracker.close();
        info!(rpcs.in_flight = self.in_flight.get(), "Listeners closed");
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.tracker.wait()).await {
            Ok(()) => {
                info!(elapsed = ?started.elapsed(), "Drained");
                DrainReport { cut_off: 0 }
            }
            Err(_) => {
                let cut_off = self.in_flight.get();
                m::uninspected_n(m::Uninspected::DrainCutOff, cut_off);
                warn!(
                    rpcs.cut_off = cut_off,
                    "Drain timeout, exiting with RPCs in flight"
                );
                DrainReport { cut_off }
            }
        }
    }
}

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
