//! The open-loop timetable: a dedicated OS thread sleeps until each scheduled instant and hands
//! the transaction to the runtime through its `Handle`.
//!
//! Why not a runtime timer: `tokio::time` has millisecond resolution, so at 2,000 tx/s a
//! `sleep_until` loop releases transactions in pairs at each tick, each up to 1 ms late, and
//! that lateness lands in the PreRequest latency (measured from the scheduled instant on
//! purpose). `std::thread::sleep` (nanosleep, 50 µs default timer slack) wakes within tens of
//! microseconds and keeps the transactions evenly spaced.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::task::TaskTracker;

/// The longest single sleep, so that a dropped drive stops the thread promptly even at a low
/// rate.
const MAX_NAP: Duration = Duration::from_millis(20);

/// Evenly spaced instants: `rate` per second from `start` for `duration`.
#[derive(Debug, Clone)]
pub(crate) struct Timetable {
    /// The first instant.
    pub(crate) start: Instant,
    /// Instants per second (positive).
    pub(crate) rate: f64,
    /// Instants at or after `start + duration` are not scheduled.
    pub(crate) duration: Duration,
    /// A rate that moves over time instead of `rate`.
    pub(crate) profile: Option<Arc<super::profile::RateProfile>>,
}

impl Timetable {
    /// The `i`th instant, if it falls within the duration. Computed from `i` rather than by
    /// adding intervals, so rounding does not accumulate.
    fn slot(&self, i: u64) -> Option<Instant> {
        let offset = Duration::from_secs_f64(i as f64 / self.rate);
        (offset < self.duration).then(|| self.start + offset)
    }

    /// The instant after `prev` seconds into the drive under the profile (the first at 0), as
    /// seconds, if it falls within the duration.
    fn profile_slot(&self, prev: Option<f64>) -> Option<f64> {
        let p = self.profile.as_ref()?;
        let t = prev.map_or(0.0, |t| p.next_after(t));
        (t < self.duration.as_secs_f64()).then_some(t)
    }

    /// Calls `start_tx(at)` at each instant and spawns the future it returns on the current
    /// runtime, tracked by `tasks`; at most `max_in_flight` at once, further instants are
    /// skipped and counted. Returns the count of skipped instants (overflow) once the last
    /// instant has passed. Dropping the returned future stops the thread within 20 ms.
    pub(crate) async fn dispatch<F, Fut>(
        self,
        max_in_flight: usize,
        tasks: &TaskTracker,
        start_tx: F,
    ) -> anyhow::Result<u64>
    where
        F: Fn(Instant) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = Handle::current();
        let tasks = tasks.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let (done, overflow) = oneshot::channel();
        std::thread::Builder::new()
            .name("loadtest-timetable".into())
            .spawn(move || {
                let sem = Arc::new(Semaphore::new(max_in_flight));
                let mut skipped = 0u64;
                let mut i = 0u64;
                let mut prev = None;
                loop {
                    let at = if self.profile.is_some() {
                        prev = self.profile_slot(prev);
                        prev.map(|t| self.start + Duration::from_secs_f64(t))
                    } else {
                        self.slot(i)
                    };
                    let Some(at) = at else { break };
                    i += 1;
                    if !sleep_until(at, &stop) {
                        break;
                    }
                    match sem.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let tx = start_tx(at);
                            tasks.spawn_on(
                                async move {
                                    tx.await;
                                    drop(permit);
                                },
                                &handle,
                            );
                        }
                        Err(_) => skipped += 1,
                    }
                }
                let _ = done.send(skipped);
            })?;
        overflow
            .await
            .map_err(|_| anyhow::anyhow!("the timetable thread panicked"))
    }
}

/// Open loop: one timetable at `rate` (or the profile), or one per flow, each on its flow's
/// host if it has one. Returns the transactions skipped (concurrency bound reached).
pub(super) async fn open_loop(
    ctx: &Arc<super::transaction::Ctx>,
    args: &super::args::DriveArgs,
    start: Instant,
    tasks: &TaskTracker,
) -> anyhow::Result<u64> {
    let timetable = |rate| Timetable {
        start,
        rate,
        duration: args.duration,
        profile: args.profile.clone(),
    };
    if args.flows.is_empty() {
        let ctx = ctx.clone();
        return timetable(args.rate)
            .dispatch(args.max_in_flight, tasks, move |at| {
                let ctx = ctx.clone();
                async move {
                    ctx.transaction(tokio::time::Instant::from_std(at), None)
                        .await
                }
            })
            .await;
    }
    let flows = args.flows.iter().enumerate().map(|(i, f)| {
        let (ctx, tasks, max) = (ctx.clone(), tasks.clone(), args.max_in_flight);
        let t = Timetable {
            profile: None,
            ..timetable(f.rate)
        };
        let dispatch = async move {
            t.dispatch(max, &tasks, move |at| {
                let ctx = ctx.clone();
                async move {
                    ctx.transaction(tokio::time::Instant::from_std(at), Some(i))
                        .await
                }
            })
            .await
        };
        crate::netbed::on_module_host(f.host.clone(), dispatch)
    });
    let skipped = futures::future::try_join_all(flows).await?;
    Ok(skipped.into_iter().sum())
}

/// Sleeps until `at`; false if `stop` was set meanwhile.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(MAX_NAP));
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn slots_are_evenly_spaced_within_the_duration() {
        let start = Instant::now();
        let t = Timetable {
            start,
            rate: 2000.0,
            duration: Duration::from_millis(10),
            profile: None,
        };
        let slots: Vec<Duration> = (0..)
            .map_while(|i| t.slot(i))
            .map(|at| at - start)
            .collect();
        assert_eq!(slots.len(), 20);
        assert_eq!(slots[1], Duration::from_micros(500));
        assert_eq!(slots[19], Duration::from_micros(9500));
    }

    #[tokio::test]
    async fn every_slot_runs_once_and_the_excess_overflows() {
        let tasks = TaskTracker::new();
        let ran = Arc::new(AtomicU64::new(0));
        let r = ran.clone();
        let t = Timetable {
            start: Instant::now(),
            rate: 1000.0,
            duration: Duration::from_millis(50),
            profile: None,
        };
        // One in flight at a time and transactions that never finish: all but the first
        // overflow.
        let gate = tokio_util::sync::CancellationToken::new();
        let g = gate.clone();
        let overflow = t
            .dispatch(1, &tasks, move |_| {
                let (r, g) = (r.clone(), g.clone());
                async move {
                    r.fetch_add(1, Relaxed);
                    g.cancelled().await;
                }
            })
            .await
            .unwrap();
        gate.cancel();
        tasks.close();
        tasks.wait().await;
        assert_eq!(ran.load(Relaxed), 1);
        assert_eq!(overflow, 49);
    }
}
