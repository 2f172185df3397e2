//! Who gets a connection slot, and who loses one: the shared limits that keep one bad client
//! from hurting the others.
//!
//! - The connection limit stays below the file descriptor limit ([`fd_headroom`]), so the
//!   admin port and the agent connections always find a descriptor.
//! - At the limit, the connection idle the longest (nothing in flight, nothing half-received)
//!   makes room for the new one: modules open a connection per call and never reuse one, so an
//!   idle connection does nothing for anyone, and an idle flood must not lock good calls out.
//! - Bytes held in partly received frames have a proxy-wide budget; past it, the connection
//!   holding the most is shed, so a few hundred slow senders cannot grow memory to the pod's
//!   limit.
//!
//! Every connection task registers an [`Entry`] here for its lifetime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// Why a connection was told to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The longest idle at the connection limit.
    Idle = 1,
    /// The largest holder of partly received bytes over the proxy-wide budget.
    Budget = 2,
}

/// One connection's entry: what eviction and the budget look at.
#[derive(Debug)]
pub(crate) struct Entry {
    id: u64,
    /// Milliseconds since the table's epoch of the last byte read or answer written.
    last_active_ms: AtomicU64,
    /// Calls in flight.
    busy: AtomicU32,
    /// Bytes of the frame now partly received.
    held: AtomicUsize,
    shed: AtomicU8,
    /// Wakes the connection's task when it is shed.
    pub(crate) wake: Notify,
}

impl Entry {
    /// Why it was shed, once it was.
    pub(crate) fn shed_reason(&self) -> Option<Shed> {
        match self.shed.load(Relaxed) {
            1 => Some(Shed::Idle),
            2 => Some(Shed::Budget),
            _ => None,
        }
    }

    fn tell(&self, reason: Shed) -> bool {
        let told = self
            .shed
            .compare_exchange(0, reason as u8, Relaxed, Relaxed)
            .is_ok();
        if told {
            self.wake.notify_one();
        }
        told
    }
}

/// The proxy's connection slots.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
    epoch: Instant,
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    held_total: AtomicUsize,
    held_budget: usize,
}

/// A connection's place: its permit (a connection slot) and its entry, released on drop.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    entry: Arc<Entry>,
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// `limit` connections at once; `held_budget` bytes in partly received frames across all.
    pub(crate) fn new(limit: usize, held_budget: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            held_total: AtomicUsize::new(0),
            held_budget,
        })
    }

    /// The connection limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // Every critical section is a single insert, remove or scan: never half-done.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a new connection. At the limit the longest-idle connection is told to go and
    /// the new one waits up to `wait` for its slot; `None` when no connection is idle or the
    /// slot did not free in time (the caller resets the new connection).
    pub(crate) async fn admit(self: &Arc<Self>, wait: Duration) -> Option<Admitted> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !self.evict_longest_idle() {
                    return None;
                }
                crate::metrics::connection_closed(crate::metrics::ConnectionClose::EvictedIdle);
                tokio::time::timeout(wait, self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Relaxed),
            last_active_ms: AtomicU64::new(self.now_ms()),
            busy: AtomicU32::new(0),
            held: AtomicUsize::new(0),
            shed: AtomicU8::new(0),
            wake: Notify::new(),
        });
        self.entries().insert(entry.id, entry.clone());
        Some(Admitted {
            admission: self.clone(),
            entry,
            _permit: permit,
        })
    }

    /// Tells the connection idle the longest to go; `false` when none is idle.
    fn evict_longest_idle(&self) -> bool {
        let victim = {
            let slots = self.entries();
            slots
                .values()
                .filter(|s| {
                    s.busy.load(Relaxed) == 0
                        && s.held.load(Relaxed) == 0
                        && s.shed_reason().is_none()
                })
                .min_by_key(|s| s.last_active_ms.load(Relaxed))
                .cloned()
        };
        victim.is_some_and(|s| s.tell(Shed::Idle))
    }

    /// Sheds the largest holders of partly received bytes until the total is within budget.
    /// Bytes of connections already told to go do not count: they are released as soon as
    /// those tasks notice, and counting them would shed one more connection on every increase
    /// elsewhere until they had.
    fn enforce_budget(&self) {
        let mut holders: Vec<(usize, Arc<Entry>)> = Vec::new();
        let mut leaving = 0usize;
        for slot in self.entries().values() {
            let held = slot.held.load(Relaxed);
            if slot.shed_reason().is_some() {
                leaving += held;
            } else if held > 0 {
                holders.push((held, slot.clone()));
            }
        }
        let mut over = self
            .held_total
            .load(Relaxed)
            .saturating_sub(leaving)
            .saturating_sub(self.held_budget);
        if over == 0 {
            return;
        }
        holders.sort_unstable_by_key(|(held, _)| std::cmp::Reverse(*held));
        for (held, slot) in holders {
            if over == 0 {
                break;
            }
            if slot.tell(Shed::Budget) {
                over = over.saturating_sub(held);
            }
        }
    }
}

impl Admitted {
    /// The connection's entry (its task waits on `entry().wake`).
    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Something was read or written at `now` (the caller's clock reading, not another one).
    pub(crate) fn active(&self, now: Instant) {
        let ms = now
            .saturating_duration_since(self.admission.epoch)
            .as_millis() as u64;
        self.entry.last_active_ms.store(ms, Relaxed);
    }

    /// Calls now in flight on it.
    pub(crate) fn set_busy(&self, calls: usize) {
        self.entry
            .busy
            .store(u32::try_from(calls).unwrap_or(u32::MAX), Relaxed);
    }

    /// Bytes of a partly received frame it now holds; sheds over the budget.
    pub(crate) fn set_held(&self, bytes: usize) {
        let before = self.entry.held.swap(bytes, Relaxed);
        if bytes > before {
            let total =
                self.admission.held_total.fetch_add(bytes - before, Relaxed) + bytes - before;
            if total > self.admission.held_budget {
                self.admission.enforce_budget();
            }
        } else if bytes < before {
            self.admission.held_total.fetch_sub(before - bytes, Relaxed);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.set_held(0);
        self.admission.entries().remove(&self.entry.id);
    }
}

/// File descriptors kept free of downstream connections: agent connections, the admin port,
/// the membership watch, logs. 256, or an eighth of the limit when that is more.
pub(crate) fn fd_headroom(fd_limit: u64) -> u64 {
    (fd_limit / 8).max(256)
}

/// Raises the soft file descriptor limit to the hard one and returns the connection limit
/// that leaves [`fd_headroom`] free: `wanted`, or less when the descriptors would not suffice.
pub(crate) fn clamp_to_fd_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let soft_before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!(error = %e, "Cannot raise the file descriptor limit");
            limit.current = soft_before;
        }
    }
    let Some(fds) = limit.current else {
        return wanted; // unlimited
    };
    let usable = fds.saturating_sub(fd_headroom(fds)).max(1);
    let granted = usize::try_from(usable).map_or(wanted, |u| wanted.min(u));
    if granted < wanted {
        warn!(
            max_connections = wanted,
            fd_limit = fds,
            granted,
            "Connection limit lowered below the file descriptor limit"
        );
    } else {
        info!(
            max_connections = granted,
            fd_limit = fds,
            "Connection limit"
        );
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let admission = Admission::new(3, 1 << 20);
        let wait = Duration::from_millis(5);
        let oldest = admission.admit(wait).await.unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        let busy = admission.admit(wait).await.unwrap();
        busy.set_busy(1);
        let newer = admission.admit(wait).await.unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        newer.active(Instant::now());

        // Full: the oldest idle one is told to go, the busy one never is.
        let admit = tokio::spawn({
            let a = admission.clone();
            async move { a.admit(wait).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(oldest.entry().shed_reason(), Some(Shed::Idle));
        assert_eq!(busy.entry().shed_reason(), None);
        assert_eq!(newer.entry().shed_reason(), None);
        drop(oldest); // its task notices and ends
        let newest = admit
            .await
            .unwrap()
            .expect("the new connection took its place");

        // Nothing idle any more: the next one is refused, with no wait at all.
        newer.set_busy(2);
        newest.set_held(10); // half a frame in: not idle either
        let started = Instant::now();
        assert!(admission.admit(wait).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_that_does_not_free_in_time_refuses_the_new_connection() {
        let admission = Admission::new(1, 1 << 20);
        let stuck = admission.admit(Duration::ZERO).await.unwrap();
        let started = Instant::now();
        assert!(admission.admit(Duration::from_millis(5)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(stuck.entry().shed_reason(), Some(Shed::Idle));
    }

    #[tokio::test]
    async fn over_the_byte_budget_the_largest_holders_are_shed() {
        let admission = Admission::new(10, 1000);
        let wait = Duration::ZERO;
        let small = admission.admit(wait).await.unwrap();
        let large = admission.admit(wait).await.unwrap();
        let medium = admission.admit(wait).await.unwrap();
        small.set_held(100);
        large.set_held(600);
        medium.set_held(250);
        assert!(
            [&small, &large, &medium]
                .iter()
                .all(|c| c.entry().shed_reason().is_none()),
            "950 of 1000: within budget"
        );
        medium.set_held(400); // 1100: over by 100, the largest goes
        assert_eq!(large.entry().shed_reason(), Some(Shed::Budget));
        assert_eq!(medium.entry().shed_reason(), None);
        assert_eq!(small.entry().shed_reason(), None);
        // Until its task notices, the shed connection's bytes still count in the total, but
        // not toward the excess: growth elsewhere within budget sheds no one else.
        small.set_held(150); // 1150 held, 550 of it by connections not told to go
        assert_eq!(medium.entry().shed_reason(), None);
        assert_eq!(small.entry().shed_reason(), None);
        drop(large);
        assert_eq!(admission.held_total.load(Relaxed), 550, "released with it");
        medium.set_held(0);
        small.set_held(0);
        assert_eq!(admission.held_total.load(Relaxed), 0);
    }

    #[test]
    fn the_fd_headroom_leaves_room_for_agents_and_the_admin_port() {
        assert_eq!(fd_headroom(1024), 256);
        assert_eq!(fd_headroom(1 << 20), 1 << 17);
        // Whatever this process's limit, the clamp leaves the headroom free.
        let granted = clamp_to_fd_limit(usize::MAX) as u64;
        let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!(granted + fd_headroom(fds) <= fds || fds == u64::MAX);
    }
}
