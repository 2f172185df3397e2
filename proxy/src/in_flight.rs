//! RPCs in flight across the proxy: the count a drain waits for (and reports what it cut off
//! of), the proxy-wide limits on calls and request bytes, and, with busy polling, the record of
//! when the proxy last had work that the busy poller reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
// Tokio's clock (the system's outside tests) so that the busy poller's window is tested on
// paused time.
use tokio::time::Instant;

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
        // Take first, check after, give back if over: two threads entering at once can never
        // both pass a check made before either took its share.
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > max_bytes as u64 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        let Ok(before) = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_calls as u64).then_some(n + 1)
            })
        else {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        };
        Some(self.entered(before, bytes))
    }

    /// Counts one RPC of `bytes`, whatever the limits.
    #[cfg(test)]
    pub(crate) fn enter(&self, bytes: u64) -> InFlightGuard<'_> {
        let before = self.count.fetch_add(1, Ordering::Relaxed);
        self.entered(before, bytes)
    }

    fn entered(&self, before: u64, bytes: u64) -> InFlightGuard<'_> {
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

/// When the proxy last had work, for the poller to decide between spinning and sleeping.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Nanoseconds from `base` to the end of the last RPC; `u64::MAX` before the first.
    last_finish: AtomicU64,
    first_started: Notify,
    /// Zero-timeout polls made so far.
    spins: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last_finish: AtomicU64::new(u64::MAX),
            first_started: Notify::new(),
            spins: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// An RPC started with none in flight: wake the poller if it sleeps.
    pub(crate) fn first_started(&self) {
        self.first_started.notify_one();
    }
    /// An RPC finished.
    pub(crate) fn finished(&self) {
        self.last_finish
            .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    /// How long ago the last RPC finished (`Duration::MAX` before the first).
    pub(crate) fn since_last_finish(&self) -> Duration {
        match self.last_finish.load(Ordering::Relaxed) {
            u64::MAX => Duration::MAX,
            last => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_nanos(last)),
        }
    }
    /// The first RPC after a quiet spell started (see [`Activity::first_started`]).
    pub(crate) async fn started(&self) {
        self.first_started.notified().await;
    }
    /// The busy poller made one zero-timeout poll.
    pub(crate) fn spun(&self) {
        self.spins.fetch_add(1, Ordering::Relaxed);
    }
    /// Zero-timeout polls made so far.
    #[cfg(test)]
    pub(crate) fn spins(&self) -> u64 {
        self.spins.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn the_call_limit_holds_with_several_threads_entering_at_once() {
        let count = InFlightCount::default();
        let over = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200_000 {
                        if let Some(_guard) = count.try_enter(1, 1, usize::MAX)
                            && count.get() > 1
                        {
                            over.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(
            !over.load(Ordering::Relaxed),
            "two calls in at a limit of one"
        );
        assert_eq!(count.get(), 0);
    }
}
