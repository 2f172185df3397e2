//! Gives the heap pages freed after a burst back to the operating system.
//!
//! Every connection costs the proxy about 9 KiB of heap while it is open. After a burst (a
//! spike, or a CPU-starved proxy that accepts a pile of queued connections at once) closes,
//! glibc keeps the freed pages: they sit below allocations that live on, and glibc returns
//! memory to the kernel only from the top of its heap. So RSS stays at the highest burst's
//! mark for the life of the process. An operator watching memory against the container limit
//! cannot tell that from a leak, and the node loses the pages.
//!
//! Every `--memory-trim-interval` (10 s by default) the proxy calls `malloc_trim(0)`, which
//! also releases whole free pages inside the heap. The figures, with and without it, are in
//! docs/metrics.md. One of the workspace's two `unsafe`s, with listener/defer_accept.rs (the
//! lint is `deny`, and proxy/tests/it/layout.rs checks that no other file allows it).
#![allow(unsafe_code)]

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Trims every `every` until `exit`; returns at once when `every` is zero.
pub(crate) async fn trim_periodically(every: Duration, exit: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = exit.cancelled() => return,
            _ = ticks.tick() => {
                let started = std::time::Instant::now();
                let released = trim();
                tracing::trace!(released, took = ?started.elapsed(), "Heap trimmed");
            }
        }
    }
}

/// Returns free heap pages to the operating system; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and works on glibc's own arenas under their
    // locks; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries (musl) keep no such free pages, or offer no way to release them.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
