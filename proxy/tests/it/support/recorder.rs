//! The metrics recorder is the process's: every proxy this test binary runs in-process counts
//! into the same `sigsci_proxy_*` series, which carry no label naming the proxy, and counts of
//! earlier tests stay in them. A test that asserts how much a counter rose runs its proxies
//! [`alone`] (no other in-process proxy runs meanwhile) and compares a reading before with one
//! after. Every other in-process proxy holds a [`shared`] claim while it runs. Proxies run as
//! processes (`process.rs`) have recorders of their own and need neither.
//!
//! Shared claims never wait for each other (a test may run several proxies), only for a test
//! running alone; a test waiting to run alone waits until no in-process proxy runs.

use std::sync::Mutex;

use tokio::sync::Notify;

struct State {
    shared: usize,
    alone: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    alone: false,
});
static CHANGED: Notify = Notify::const_new();

/// Waits until `take` succeeds on the state, re-checking after every release.
async fn claim(mut take: impl FnMut(&mut State) -> bool) {
    loop {
        let changed = CHANGED.notified();
        if take(&mut STATE.lock().unwrap()) {
            return;
        }
        changed.await;
    }
}

fn release(give_back: impl FnOnce(&mut State)) {
    give_back(&mut STATE.lock().unwrap());
    CHANGED.notify_waiters();
}

/// Held by an in-process proxy while it runs.
pub struct Shared(());

impl Drop for Shared {
    fn drop(&mut self) {
        release(|s| s.shared -= 1);
    }
}

/// A shared claim: waits while a test runs alone.
pub async fn shared() -> Shared {
    claim(|s| {
        let free = !s.alone;
        s.shared += usize::from(free);
        free
    })
    .await;
    Shared(())
}

/// Held by a test that reads counters; its proxies start through [`Alone::start_proxy`].
pub struct Alone(());

impl Drop for Alone {
    fn drop(&mut self) {
        release(|s| s.alone = false);
    }
}

/// The recorder to this test alone: waits until no in-process proxy runs, and keeps others from
/// starting until dropped.
pub async fn alone() -> Alone {
    claim(|s| {
        let free = !s.alone && s.shared == 0;
        s.alone |= free;
        free
    })
    .await;
    Alone(())
}
