//! The overload queue's series: what it shed and why, how long calls waited, how many wait now
//! (docs/metrics.md, "Overload"). Shed calls are also in `sigsci_proxy_uninspected_total` with
//! reason `shed`; each agent's learned limit is rendered with the per-agent series.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

/// Why the overload queue shed a call (the `cause` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// On arrival: every agent at its limit and the queue as long as it may be.
    Full,
    /// Waiting: pushed out by a call of a flow with fewer waiting.
    Evicted,
    /// Waiting: no slot freed while an answer could still come in time.
    Expired,
}

struct Handles {
    shed: [Counter; 3],
    wait: Histogram,
    queued: Gauge,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn cause(shed: Shed) -> (usize, &'static str) {
    match shed {
        Shed::Full => (0, "full"),
        Shed::Evicted => (1, "evicted"),
        Shed::Expired => (2, "expired"),
    }
}

/// `# HELP` lines, and the closed label set at 0 (called once the recorder is installed).
pub(super) fn describe() {
    describe_counter!(
        "sigsci_proxy_queue_shed_total",
        "Calls the overload queue shed with an error frame (uninspected, reason shed), by cause: full (every agent at its limit and no room in the queue on arrival), evicted (pushed out by a call of a flow with fewer waiting), expired (no slot freed while an answer could still come in time)."
    );
    describe_histogram!(
        "sigsci_proxy_queue_wait_seconds",
        "Time calls served from the overload queue waited for an agent's slot, in seconds."
    );
    describe_gauge!(
        "sigsci_proxy_queued_calls",
        "Calls waiting in the overload queue for an agent's slot now."
    );
    let _ = HANDLES.set(Handles {
        shed: [Shed::Full, Shed::Evicted, Shed::Expired].map(|s| {
            let c = counter!("sigsci_proxy_queue_shed_total", "cause" => cause(s).1);
            c.increment(0);
            c
        }),
        wait: histogram!("sigsci_proxy_queue_wait_seconds"),
        queued: gauge!("sigsci_proxy_queued_calls"),
    });
    if let Some(h) = HANDLES.get() {
        h.queued.set(0.0);
    }
}

/// A call shed by the queue.
pub(crate) fn queue_shed(shed: Shed) {
    if let Some(h) = HANDLES.get() {
        h.shed[cause(shed).0].increment(1);
    }
}

/// A call served from the queue after waiting `waited`.
pub(crate) fn queue_wait(waited: Duration) {
    if let Some(h) = HANDLES.get() {
        h.wait.record(waited.as_secs_f64());
    }
}

/// Calls waiting now.
pub(crate) fn queued(n: usize) {
    if let Some(h) = HANDLES.get() {
        h.queued.set(n as f64);
    }
}
