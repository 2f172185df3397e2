//! The overload queue: calls wait here, not in the agents, when every agent is at its learned
//! concurrency limit ([`agent_pool::Agent::has_free_slot`]). Waiting in the proxy costs the
//! agents nothing and dropping a call here is free; a call an agent queues costs its CPU even
//! after the module gave up, and once its queue is longer than the deadline every call misses
//! it (docs/overload.md).
//!
//! - A call takes a slot of an agent ([`Slot`]); freeing a slot hands it to the next waiter:
//!   first the UpdateRequests waiting for that very agent (affinity: they never move), then the
//!   balanced calls, served fairly between flows ([`fair`]).
//! - A call waits only while an answer can still come in time, and how long depends on whether
//!   the queue is a burst or a standing queue (CoDel's test, as "Fail at Scale" applies it to
//!   request queues): a burst queue lets a call wait up to `--queue-timeout` (20 ms); once a
//!   call was shed, or every call served for 100 ms waited more than 5 ms, the queue stands: it
//!   holds only what drains in half the wait, and a heavy flow's call waits at most 2 ms, so
//!   served calls stay fast and the rest fail open at once. A queue empty for 100 ms with
//!   nothing shed is a burst queue again.
//! - A call that would wait longer than the queue drains in that time is shed on arrival with
//!   an error frame (the module fails open in a millisecond); when there is no room, the call
//!   shed is the newest of the flow with the most waiting, never one of a lighter flow.

pub(crate) mod fair;
pub(crate) mod flows;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_pool::{Agent, InFlight, Outcome, Pool, Snapshot};
use tokio::sync::oneshot;
use tokio::time::Instant;

use fair::FairQueue;
pub(crate) use fair::Flow;

use crate::metrics as m;
/// Why the queue shed a call: the closed label set of its metric, defined there.
pub(crate) use crate::metrics::Shed;

/// How the queue behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueConfig {
    /// Longest wait while the queue is a burst (`--queue-timeout`, default 20 ms).
    pub(crate) burst_wait: Duration,
    /// A heavy flow's wait once the queue stands (default 2 ms: the timer fires on the
    /// millisecond tick after it, so its calls shed from a standing queue are answered within
    /// about 3 ms, inside CoDel's 5 ms target with room for a busy machine).
    pub(crate) standing_wait: Duration,
    /// CoDel's interval: the queue turns standing when no call served in one interval waited
    /// less than `target`, and turns back into a burst queue after one interval empty
    /// (default 100 ms).
    pub(crate) interval: Duration,
    /// CoDel's target sojourn (default 5 ms).
    pub(crate) target: Duration,
    /// What an agent's answer may take once the call has its slot: a call waits only until its
    /// deadline less this (default 20 ms, a quarter of `--rpc-timeout`: the cap of every
    /// agent's learned latency target).
    pub(crate) answer_budget: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            burst_wait: Duration::from_millis(20),
            standing_wait: Duration::from_millis(2),
            interval: Duration::from_millis(100),
            target: Duration::from_millis(5),
            answer_budget: Duration::from_millis(20),
        }
    }
}

/// Why a call got no agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No agent takes work at all.
    NoAgent,
    /// Shed by the queue.
    Shed(Shed),
}

/// A call's place on an agent: counted in the agent's load until finished or dropped, and
/// handed to the next waiting call then.
#[derive(Debug)]
pub(crate) struct Slot {
    in_flight: Option<InFlight>,
    queue: Arc<OverloadQueue>,
}

impl Slot {
    /// The agent the slot is on.
    pub(crate) fn agent(&self) -> &Arc<Agent> {
        self.in_flight.as_ref().expect("live slot").agent()
    }

    /// Ends the call with its outcome and frees the slot.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.end(Some(outcome));
    }

    /// Records the outcome (none: cancelled) and hands the slot to the next waiter.
    fn end(&mut self, outcome: Option<Outcome>) {
        if let Some(f) = self.in_flight.take() {
            let agent = f.agent().clone();
            match outcome {
                Some(outcome) => f.finish(outcome),
                None => drop(f),
            }
            self.queue.released(&agent);
        }
    }

    /// The in-flight record without freeing the slot to a waiter (used under the queue's lock).
    fn disarm(mut self) -> InFlight {
        self.in_flight.take().expect("live slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.end(None);
    }
}

type Grant = Result<Slot, Shed>;

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Grant>,
    queued_at: Instant,
}

/// Waiting UpdateRequests of one agent, by the agent's address in memory.
type Pinned = HashMap<usize, VecDeque<(u64, Waiter)>>;

#[derive(Debug, Default)]
struct State {
    fair: FairQueue<Waiter>,
    pinned: Pinned,
    pinned_len: usize,
    /// Whether the queue stands (see [`QueueConfig::interval`]).
    standing: bool,
    /// The current interval: when it began, and the least wait of a call served in it.
    interval_start: Option<Instant>,
    least_sojourn: Option<Duration>,
    /// When the queue last had waiters.
    last_nonempty: Option<Instant>,
    /// When a call was last shed (on arrival, evicted or expired).
    last_shed: Option<Instant>,
    /// The rate slots are freed at, measured: what the queue drains at while it has waiters.
    drain_rate: DrainRate,
    flows: flows::FlowStats,
}

/// The proxy-wide queue of calls waiting for an agent's slot.
#[derive(Debug)]
pub(crate) struct OverloadQueue {
    pool: Pool,
    config: QueueConfig,
    /// Waiters in all queues; read without the lock on every freed slot.
    queued: AtomicUsize,
    /// Slots freed, ever.
    releases: AtomicU64,
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl OverloadQueue {
    pub(crate) fn new(pool: Pool, config: QueueConfig) -> Arc<Self> {
        Arc::new(Self {
            pool,
            config,
            queued: AtomicUsize::new(0),
            releases: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the number waiting (under the lock, after a change).
    fn waiting_changed(&self, st: &State) {
        let n = st.fair.len() + st.pinned_len;
        m::queued(n);
        self.pool.set_waiting(n);
    }

    /// A slot on `agent` now, whatever its limit: a retry on an agent picked with a free slot,
    /// and ModuleInit copies (rare, and every agent must have them).
    pub(crate) fn start_on(self: &Arc<Self>, agent: &Arc<Agent>) -> Slot {
        self.slot(agent.start())
    }

    fn slot(self: &Arc<Self>, in_flight: InFlight) -> Slot {
        Slot {
            in_flight: Some(in_flight),
            queue: self.clone(),
        }
    }

    /// A slot on the agent the picker chooses among those below their limit, waiting in the
    /// fair queue for one when all are at it.
    pub(crate) async fn balanced(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        flow: &Flow,
        deadline: Instant,
    ) -> Result<Slot, Refused> {
        if self.queued.load(Ordering::SeqCst) == 0
            && let Some(agent) = snapshot.pick_free(None)
        {
            return Ok(self.slot(agent.start()));
        }
        let (rx, shard, id, expires, light) = {
            let mut st = self.lock();
            // Announce the waiter before looking again: a slot freed since the look above
            // either shows now or its release sees the count and serves the queue.
            self.queued.fetch_add(1, Ordering::SeqCst);
            if st.fair.len() == 0
                && let Some(agent) = snapshot.pick_free(None)
            {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Ok(self.slot(agent.start()));
            }
            if !snapshot.takes_work() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(Refused::NoAgent);
            }
            let now = Instant::now();
            let light = st.flows.is_light(flow);
            let admitted = self.admit(&mut st, snapshot, flow, deadline, now);
            st.flows
                .offered(flow, admitted.is_err(), std::time::Instant::now());
            match admitted {
                Ok((rx, shard, id, expires)) => (rx, shard, id, expires, light),
                Err(shed) => {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(Refused::Shed(shed));
                }
            }
        };
        let waited = self.wait(rx, Place::Fair(shard, flow), id, expires).await;
        match waited {
            // A light flow (below its share) is never left uninspected for want of a slot: its
            // call that found none in time borrows one over the limit. It sends few calls by
            // definition, so the agents' limits are passed by little; with several replicas each
            // holding few slots, the next free one can be further away than a light call waits.
            Err(Refused::Shed(Shed::Expired))
                if light && Instant::now() < self.latest_start(deadline, Instant::now()) =>
            {
                (snapshot.pick().map(|agent| self.start_on(&agent)))
                    .ok_or(Refused::Shed(Shed::Expired))
            }
            other => other,
        }
    }

    /// A slot on `agent` itself (an UpdateRequest its token names), waiting for one ahead of
    /// every balanced call when it is at its limit.
    pub(crate) async fn pinned(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        deadline: Instant,
    ) -> Result<Slot, Refused> {
        let key = Arc::as_ptr(agent) as usize;
        let (rx, id, expires) = {
            let mut st = self.lock();
            self.queued.fetch_add(1, Ordering::SeqCst);
            let waiting = st.pinned.get(&key).is_some_and(|q| !q.is_empty());
            if !waiting && agent.has_free_slot_for_pinned() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Ok(self.slot(agent.start()));
            }
            let now = Instant::now();
            let expires = self.latest_start(deadline, now);
            if expires <= now {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(Refused::Shed(Shed::Expired));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            st.pinned
                .entry(key)
                .or_default()
                .push_back((id, Waiter { tx, queued_at: now }));
            st.pinned_len += 1;
            st.last_nonempty = Some(now);
            self.waiting_changed(&st);
            (rx, id, expires)
        };
        self.wait(rx, Place::Pinned(key), id, expires).await
    }

    /// Decides on a balanced call that found every agent at its limit: its entry in the fair
    /// queue, or why it is shed now.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        st: &mut State,
        snapshot: &Snapshot,
        flow: &Flow,
        deadline: Instant,
        now: Instant,
    ) -> Result<(oneshot::Receiver<Grant>, usize, u64, Instant), Shed> {
        // The measured rate is the truth while every agent is busy; the agents' limits over
        // their latency estimates (peak-biased, so low) cover a queue that just began.
        let measured = st
            .drain_rate
            .update(now, self.releases.load(Ordering::Relaxed));
        let (estimated, slots) = snapshot.capacity();
        let throughput = measured.max(estimated).max(1.0);
        let standing = self.standing(st, now);
        // In a standing queue a heavy flow (at least its share of the calls lately) waits only
        // the floor, so its calls that fail open do so within CoDel's target (the agents keep
        // their own calls queued meanwhile: the pool stays busy); a light flow's few calls may
        // wait as long as in a burst, which they need in a slow pool to be served ahead of the
        // flood at the next free slot.
        let wait = if standing && st.flows.is_heavy(flow) {
            self.config.standing_wait.min(self.config.burst_wait)
        } else {
            self.config.burst_wait
        };
        let expires = (now + wait).min(self.latest_start(deadline, now));
        if expires <= now {
            return Err(Shed::Expired);
        }
        // The queue holds what drains in half the wait: a call admitted last is still served
        // in time when the rate is off by two. A burst queue holds at least every agent's
        // slots twice over: the estimate of a queue that just began can be far too low, and
        // shedding on it would fail open calls the agents were about to serve; expiry is the
        // backstop.
        let mut room = (throughput * wait.as_secs_f64() / 2.0).floor() as usize;
        if !standing {
            room = room.max(2 * slots as usize);
        }
        let shard = st.fair.shard_for(flow);
        let mine = st.fair.shard_len(shard);
        if mine > 0 && st.fair.len() >= room {
            match st.fair.heaviest_but(flow) {
                Some(h) if st.fair.shard_len(h) > mine + 1 => {
                    if let Some((_, w)) = st.fair.pop_newest(h) {
                        st.last_shed = Some(now);
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                        let _ = w.tx.send(Err(Shed::Evicted));
                    }
                }
                _ => return Err(Shed::Full),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        st.fair.push(shard, id, Waiter { tx, queued_at: now });
        st.last_nonempty = Some(now);
        self.waiting_changed(st);
        Ok((rx, shard, id, expires))
    }

    /// Whether the queue stands now: a call was shed within the last interval (the pool is
    /// overloaded), or CoDel's test on the waits of the calls served: every call served in an
    /// interval waited more than the target. It turns back after an interval with nothing
    /// waiting and nothing shed.
    fn standing(&self, st: &mut State, now: Instant) -> bool {
        let interval = self.config.interval;
        if st
            .last_shed
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return true;
        }
        if st.standing
            && st.fair.len() + st.pinned_len == 0
            && st
                .last_nonempty
                .is_none_or(|t| now.duration_since(t) >= interval)
        {
            st.standing = false;
        }
        let start = *st.interval_start.get_or_insert(now);
        if now.duration_since(start) >= interval {
            if st
                .least_sojourn
                .is_some_and(|least| least > self.config.target)
            {
                st.standing = true;
            }
            st.interval_start = Some(now);
            st.least_sojourn = None;
        }
        st.standing
    }

    /// The last moment a call with `deadline` may still start on an agent.
    fn latest_start(&self, deadline: Instant, now: Instant) -> Instant {
        deadline
            .checked_sub(self.config.answer_budget)
            .unwrap_or(now)
    }

    async fn wait(
        self: &Arc<Self>,
        rx: oneshot::Receiver<Grant>,
        place: Place<'_>,
        id: u64,
        expires: Instant,
    ) -> Result<Slot, Refused> {
        // Takes the entry out if this call stops waiting for any reason (expiry, or the
        // module's connection went away and the call with it).
        let _waiting = Waiting {
            queue: self,
            place,
            id,
        };
        tokio::select! {
            grant = rx => match grant {
                Ok(Ok(slot)) => Ok(slot),
                Ok(Err(shed)) => Err(Refused::Shed(shed)),
                Err(_) => Err(Refused::Shed(Shed::Expired)),
            },
            () = tokio::time::sleep_until(expires) => Err(Refused::Shed(Shed::Expired)),
        }
    }

    /// A slot of `agent` was freed: hands it, and any other free slot, to waiting calls.
    fn released(self: &Arc<Self>, agent: &Arc<Agent>) {
        self.releases.fetch_add(1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        let snapshot = self.pool.snapshot();
        let mut st = self.lock();
        self.dispatch(&mut st, &snapshot, agent);
    }

    fn dispatch(self: &Arc<Self>, st: &mut State, snapshot: &Snapshot, freed: &Arc<Agent>) {
        let key = Arc::as_ptr(freed) as usize;
        loop {
            if freed.has_free_slot_for_pinned()
                && let Some(w) = pop_pinned(st, key)
            {
                self.grant(st, w, freed, false);
                continue;
            }
            if st.fair.len() == 0 {
                break;
            }
            let to = if freed.has_free_slot() && snapshot.takes_new_work(freed) {
                freed.clone()
            } else if let Some(other) = snapshot.pick_free(None) {
                other
            } else {
                break;
            };
            let Some((_, w)) = st.fair.pop() else { break };
            self.grant(st, w, &to, true);
        }
        if st.fair.len() + st.pinned_len > 0 {
            st.last_nonempty = Some(Instant::now());
        }
        self.queued
            .store(st.fair.len() + st.pinned_len, Ordering::SeqCst);
        self.waiting_changed(st);
    }

    /// Gives `w` a slot on `to`; a waiter that stopped waiting meanwhile gives it back.
    fn grant(self: &Arc<Self>, st: &mut State, w: Waiter, to: &Arc<Agent>, balanced: bool) {
        let waited = w.queued_at.elapsed();
        m::queue_wait(waited);
        if balanced {
            // UpdateRequests go first, so their short waits say nothing of the queue's.
            st.least_sojourn = Some(st.least_sojourn.map_or(waited, |l| l.min(waited)));
        }
        if w.tx.is_closed() {
            return;
        }
        if let Err(Ok(slot)) = w.tx.send(Ok(self.slot(to.start()))) {
            // Not through `Slot::drop`: that would hand the slot back under this lock.
            drop(slot.disarm());
        }
    }

    /// The flows that sent the most calls into the queue lately (for `/flows`).
    pub(crate) fn heaviest_flows(&self, n: usize) -> Vec<flows::FlowRow> {
        self.lock().flows.heaviest(n, std::time::Instant::now())
    }
}

/// Slots freed per second: an exponential moving average over about 100 ms, updated at most
/// every 10 ms.
#[derive(Debug, Default)]
struct DrainRate {
    at: Option<(Instant, u64)>,
    per_s: f64,
}

impl DrainRate {
    fn update(&mut self, now: Instant, count: u64) -> f64 {
        match self.at {
            None => self.at = Some((now, count)),
            Some((at, before)) => {
                let dt = now.duration_since(at).as_secs_f64();
                if dt >= 0.01 {
                    let rate = count.saturating_sub(before) as f64 / dt;
                    self.per_s += (1.0 - (-dt / 0.1).exp()) * (rate - self.per_s);
                    self.at = Some((now, count));
                }
            }
        }
        self.per_s
    }
}

fn pop_pinned(st: &mut State, key: usize) -> Option<Waiter> {
    let q = st.pinned.get_mut(&key)?;
    let (_, w) = q.pop_front()?;
    if q.is_empty() {
        st.pinned.remove(&key);
    }
    st.pinned_len -= 1;
    Some(w)
}

/// Where a call waits: a fair queue (and whose call it is), or an agent's own queue.
#[derive(Clone, Copy, Debug)]
enum Place<'f> {
    Fair(usize, &'f Flow),
    Pinned(usize),
}

/// A waiting call's entry; dropping it takes the entry out of the queue if it is still there.
struct Waiting<'q, 'f> {
    queue: &'q Arc<OverloadQueue>,
    place: Place<'f>,
    id: u64,
}

impl Drop for Waiting<'_, '_> {
    fn drop(&mut self) {
        let mut st = self.queue.lock();
        let removed = match self.place {
            Place::Fair(shard, flow) => {
                let removed = st.fair.remove(shard, self.id).is_some();
                if removed {
                    st.flows.shed(flow, std::time::Instant::now());
                }
                removed
            }
            Place::Pinned(key) => {
                let removed = st.pinned.get_mut(&key).and_then(|q| {
                    let at = q.iter().position(|(i, _)| *i == self.id)?;
                    q.remove(at)
                });
                if st.pinned.get(&key).is_some_and(VecDeque::is_empty) {
                    st.pinned.remove(&key);
                }
                if removed.is_some() {
                    st.pinned_len -= 1;
                }
                removed.is_some()
            }
        };
        if removed {
            // It stopped waiting without a slot: expired (or its connection went away).
            st.last_shed = Some(Instant::now());
            self.queue.queued.fetch_sub(1, Ordering::SeqCst);
            self.queue.waiting_changed(&st);
        }
    }
}

#[cfg(test)]
mod tests;
