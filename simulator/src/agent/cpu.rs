//! How a simulated agent spends its CPU on calls. Two shapes, because overload looks different on
//! each: FIFO worker slots (a call waits for a free slot, then runs alone; a backlog queues in
//! front of the workers) and processor sharing (every call in progress shares the processors at
//! once, as a Go agent's goroutines share its procs: a new arrival slows every other call, and
//! nothing stops when the caller gives up).
//!
//! Both keep the agent's capacity exact whatever the timer's 1 ms resolution: FIFO on a virtual
//! timetable of slots, processor sharing on a virtual clock that advances at the sharing rate
//! between events, completions computed at their exact instants even when the wake-up is late.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The agent's CPU model (`--shape`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// `workers` slots; a call waits for a free one, then takes its service time (default).
    #[default]
    Fifo,
    /// Processor sharing: with n calls in progress on `workers` processors each progresses at
    /// rate min(1, workers / n); nothing is cancelled when a caller gives up.
    Ps,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fifo" => Ok(Shape::Fifo),
            "ps" => Ok(Shape::Ps),
            other => Err(format!("unknown agent shape {other:?} (fifo or ps)")),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Fifo => "fifo",
            Shape::Ps => "ps",
        })
    }
}

/// One agent's CPU.
#[derive(Debug)]
pub(crate) enum Cpu {
    /// When each worker slot is next free.
    Fifo(Mutex<BinaryHeap<Reverse<Instant>>>),
    /// The shared processors, and what stops their clock task when the CPU is dropped.
    Ps {
        sharing: Arc<Sharing>,
        _clock: tokio_util::sync::DropGuard,
    },
}

impl Cpu {
    /// A CPU of `shape` with `workers` slots or processors; processor sharing starts its clock
    /// task, which ends with `stop` (a crash) or when the CPU is dropped.
    pub(crate) fn new(shape: Shape, workers: usize, stop: &CancellationToken) -> Cpu {
        match shape {
            Shape::Fifo => {
                let now = Instant::now();
                Cpu::Fifo(Mutex::new((0..workers).map(|_| Reverse(now)).collect()))
            }
            Shape::Ps => {
                let ps = Arc::new(Sharing::new(workers));
                let stop = stop.child_token();
                tokio::spawn(ps.clone().run(stop.clone()));
                Cpu::Ps {
                    sharing: ps,
                    _clock: stop.drop_guard(),
                }
            }
        }
    }

    /// Returns once `service` of work is done for this call and `delay` more has passed.
    pub(crate) async fn work(&self, service: Duration, delay: Duration) {
        match self {
            Cpu::Fifo(slots) => {
                let now = Instant::now();
                let done = {
                    let mut slots = slots.lock().expect("not poisoned");
                    let mut free = slots.peek_mut().expect("at least one worker");
                    let start = free.0.max(now);
                    free.0 = start + service;
                    free.0
                } + delay;
                // Waits under 1 ms are not slept: the timetable keeps the capacity exact.
                if done > now + Duration::from_millis(1) {
                    tokio::time::sleep_until(done).await;
                }
            }
            Cpu::Ps { sharing: ps, .. } => {
                // A dropped sender means the clock stopped (a crash): nothing left to wait for.
                let _ = ps.submit(service).await;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Processor sharing on a virtual clock: `virtual_s` is the work (seconds) each call in progress
/// has received since the clock started; a call with service s arriving at virtual time v is done
/// when the clock reaches v + s. Between events the clock runs at min(1, workers / n).
#[derive(Debug)]
pub(crate) struct Sharing {
    workers: usize,
    state: Mutex<State>,
    /// Wakes the clock task: an arrival changed the next completion.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Real time of the last advance.
    at: Instant,
    /// Virtual time at `at`, seconds of work per call.
    virtual_s: f64,
    /// Calls in progress by (finish tag's bits, arrival number); positive f64s order as their
    /// bits do.
    calls: BTreeMap<(u64, u64), oneshot::Sender<()>>,
    arrivals: u64,
}

impl Sharing {
    pub(crate) fn new(workers: usize) -> Sharing {
        Sharing {
            workers: workers.max(1),
            state: Mutex::new(State {
                at: Instant::now(),
                virtual_s: 0.0,
                calls: BTreeMap::new(),
                arrivals: 0,
            }),
            changed: Notify::new(),
        }
    }

    /// Starts a call of `service` work; the receiver resolves when it is done.
    pub(crate) fn submit(&self, service: Duration) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.state.lock().expect("not poisoned");
        self.advance(&mut s, Instant::now());
        let finish = s.virtual_s + service.as_secs_f64();
        s.arrivals += 1;
        let key = (finish.to_bits(), s.arrivals);
        s.calls.insert(key, tx);
        drop(s);
        self.changed.notify_one();
        rx
    }

    /// Calls in progress.
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> usize {
        self.state.lock().expect("not poisoned").calls.len()
    }

    /// The per-call progress rate with `n` calls in progress.
    fn rate(&self, n: usize) -> f64 {
        self.workers as f64 / n.max(self.workers) as f64
    }

    /// When the first call in progress completes if nothing arrives meanwhile.
    fn next_completion(&self, s: &State) -> Option<Instant> {
        let (&(bits, _), _) = s.calls.first_key_value()?;
        let left = (f64::from_bits(bits) - s.virtual_s).max(0.0);
        Some(s.at + Duration::from_secs_f64(left / self.rate(s.calls.len())))
    }

    /// Moves the clock to `now`, completing every call whose finish tag it passes, each at its
    /// exact instant (the rate changes at each completion).
    fn advance(&self, s: &mut State, now: Instant) {
        while let Some(done_at) = self.next_completion(s) {
            if done_at > now {
                break;
            }
            let ((bits, _), tx) = s.calls.pop_first().expect("a first call");
            s.virtual_s = f64::from_bits(bits);
            s.at = s.at.max(done_at);
            let _ = tx.send(());
        }
        if now > s.at {
            s.virtual_s += (now - s.at).as_secs_f64() * self.rate(s.calls.len());
            s.at = now;
        }
    }

    /// The clock task: sleeps until the next completion or arrival, then advances.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = {
                let mut s = self.state.lock().expect("not poisoned");
                self.advance(&mut s, Instant::now());
                self.next_completion(&s)
            };
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
