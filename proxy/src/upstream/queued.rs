//! The proxy-wide cap on request bytes queued to agents that read slower than calls arrive.
//!
//! Why: each agent connection queues up to 8 MiB (`mux.rs`), and an agent that stops reading
//! (overloaded, paused, its host in trouble) fills its queues. Per connection that was bounded,
//! but not in total: ten such agents with two connections each are 160 MiB, outside the memory
//! budget, and the kernel's OOM killer would reset every module connection. So the bytes
//! queued on all agent connections together stay under one cap, `--max-in-flight-bytes` (the
//! memory budget counts that budget twice: `config/memory_budget.rs`). Past it a call is not
//! sent and fails at once as backlogged, as at the per-connection limit: retried on another
//! agent, and not held against the agent's health.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes queued on every agent connection together, and their cap.
#[derive(Debug)]
pub(crate) struct QueuedBytes {
    total: AtomicUsize,
    cap: usize,
}

impl QueuedBytes {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            total: AtomicUsize::new(0),
            cap,
        })
    }

    /// Counts `n` more bytes if they fit under the cap; `false`, counting nothing, if not.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        // Take first, check after, give back if over: two callers at once cannot both pass a
        // check made before either took its share.
        if self.total.fetch_add(n, Relaxed).saturating_add(n) > self.cap {
            self.total.fetch_sub(n, Relaxed);
            return false;
        }
        true
    }

    /// Counts `n` more bytes whatever the cap: the rest of a frame already partly written to
    /// the socket, which must follow it there.
    pub(crate) fn take(&self, n: usize) {
        self.total.fetch_add(n, Relaxed);
    }

    /// `n` bytes written to the socket or dropped with their connection.
    pub(crate) fn give(&self, n: usize) {
        self.total.fetch_sub(n, Relaxed);
    }

    /// Bytes counted now.
    #[cfg(test)]
    pub(crate) fn get(&self) -> usize {
        self.total.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_cap_and_gives_back() {
        let q = QueuedBytes::new(100);
        assert!(q.try_take(60));
        assert!(!q.try_take(41));
        assert_eq!(q.get(), 60);
        assert!(q.try_take(40));
        q.take(10); // the rest of a partly written frame
        assert_eq!(q.get(), 110);
        assert!(!q.try_take(1));
        q.give(110);
        assert_eq!(q.get(), 0);
        assert!(q.try_take(100));
    }
}
