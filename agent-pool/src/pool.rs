//! The pool: applies membership updates to a map of agents (the write side, behind a mutex) and
//! publishes each result as an immutable [`Snapshot`] through an `ArcSwap`, so the hot path
//! (`snapshot()`, `pick()`, `by_token()`) never takes a lock. A periodic tick, driven by
//! [`Pool::run`], expires gone agents, ends elapsed ejections and computes the hints.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;

use crate::agent::AgentParams;
use crate::health::EjectionBudget;
use crate::hints::{HintsState, TickInput};
use crate::snapshot::typical_latency;
use crate::{
    Agent, EjectionConfig, Endpoint, EndpointId, Hints, HintsConfig, LimitConfig, Snapshot, Update,
    Updates,
};

/// How the pool behaves. Every field has a default (`PoolConfig::default()`).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// How long an agent that left the membership is still found by its token, so late
    /// UpdateRequests reach it. Default 30 s (the agent keeps a request's context 10 s).
    pub gone_grace: Duration,
    /// Passive health.
    pub ejection: EjectionConfig,
    /// Autoscaling hint.
    pub hints: HintsConfig,
    /// How long an agent that joins a pool already running takes new work only as the last
    /// resort. Proxy replicas learn of a new agent at slightly different moments (watch
    /// events, file polls); a PreRequest answered by it in that window carries a RequestID
    /// that a replica which has not heard of it yet cannot route, so the UpdateRequest reaches
    /// a wrong agent. Set it above the skew between replicas' views: a few hundred
    /// milliseconds for Kubernetes watches, the poll interval for a file. The agents of the
    /// first membership update take work at once (this replica is the one that is late).
    /// Default 500 ms; zero turns it off.
    pub join_delay: Duration,
    /// Latency estimate of an agent with no sample yet when no agent has one either (a new
    /// pool). Default 5 ms. An agent that joins a pool already serving starts at the median
    /// estimate of the agents taking work, so it gets its share at once; outstanding requests
    /// weigh in the cost, so it is not stampeded either.
    pub default_rtt: Duration,
    /// What a failed call (error answer, broken connection, timeout) costs an agent's latency
    /// estimate: it jumps to at least this at once, then decays with `latency_decay`. Default
    /// 1 s: far above any healthy agent's latency, loaded or not, so the picker stops sending
    /// to a fast failer or a staller at once and tries it again only seconds later (passive
    /// health ejects it if it keeps failing).
    pub failure_penalty: Duration,
    /// Time constant of the latency estimate's mean; its peak decays ten times faster (see
    /// the `ewma` module). Default 1 s.
    ///
    /// A slow answer raises the estimate at once; one hiccup among fast answers is forgotten in
    /// about `latency_decay ÷ 10 × ln(slow ÷ normal)`, a steadily slow agent stays expensive
    /// through its mean. Longer makes one stall of an agent cost it its share for longer;
    /// shorter makes the picker react to noise. The shares measured with each choice are in
    /// `docs/measurements.md` ("Picker and latency estimate").
    pub latency_decay: Duration,
    /// How each agent's concurrency limit learns (`limit` module; docs/overload.md).
    pub limit: LimitConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            gone_grace: Duration::from_secs(30),
            ejection: EjectionConfig::default(),
            hints: HintsConfig::default(),
            join_delay: Duration::from_millis(500),
            default_rtt: Duration::from_millis(5),
            failure_penalty: Duration::from_secs(1),
            latency_decay: Duration::from_secs(1),
            limit: LimitConfig::default(),
        }
    }
}

/// An invalid [`PoolConfig`]: every problem found, each naming its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid pool configuration: {}", problems.join("; "))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl PoolConfig {
    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        let e = &self.ejection;
        if !(0.0..=1.0).contains(&e.max_ejected_fraction) {
            p.push(format!(
                "ejection.max_ejected_fraction must be in [0, 1], got {}",
                e.max_ejected_fraction
            ));
        }
        if e.base.is_zero() {
            p.push("ejection.base must be positive".to_owned());
        }
        if e.max < e.base {
            p.push(format!(
                "ejection.max ({:?}) must be at least ejection.base ({:?})",
                e.max, e.base
            ));
        }
        let h = &self.hints;
        if h.target_outstanding_per_agent.is_nan() || h.target_outstanding_per_agent <= 0.0 {
            p.push(format!(
                "hints.target_outstanding_per_agent must be positive, got {}",
                h.target_outstanding_per_agent
            ));
        }
        if let Some(t) = h.target_rpc_per_agent
            && (t.is_nan() || t <= 0.0)
        {
            p.push(format!(
                "hints.target_rpc_per_agent must be positive, got {t}"
            ));
        }
        if h.min_agents > h.max_agents {
            p.push(format!(
                "hints.min_agents ({}) must not exceed hints.max_agents ({})",
                h.min_agents, h.max_agents
            ));
        }
        if h.tick.is_zero() {
            p.push("hints.tick must be positive".to_owned());
        }
        if self.default_rtt.is_zero() {
            p.push("default_rtt must be positive".to_owned());
        }
        if self.latency_decay.is_zero() {
            p.push("latency_decay must be positive".to_owned());
        }
        let l = &self.limit;
        if l.min == 0 || l.min > l.max || !(l.min..=l.max).contains(&l.initial) {
            p.push(format!(
                "limit: need 1 <= min ({}) <= initial ({}) <= max ({})",
                l.min, l.initial, l.max
            ));
        }
        if l.max_target.is_zero() {
            p.push("limit.max_target must be positive".to_owned());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }
}

/// The pool of agents. Cheap to clone (an `Arc` inside); every clone is the same pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PoolConfig,
    params: AgentParams,
    current: ArcSwap<Snapshot>,
    members: Mutex<Members>,
    hints: Mutex<HintsState>,
    /// Calls the proxy shed without starting them on any agent (all at their limits), in
    /// thousandths of a call (a shed PreRequest counts its follow-up calls too), and the count
    /// at the previous tick: offered load the agents never saw.
    shed_milli: AtomicU64,
    shed_mark: AtomicU64,
    /// PreRequests an agent answered, and UpdateRequests and PostRequests offered: how many
    /// follow-up calls an inspected PreRequest brings.
    pres_answered: AtomicU64,
    follow_ups: AtomicU64,
    /// Calls waiting in the proxy for a slot now.
    waiting: AtomicU64,
}

#[derive(Debug, Default)]
struct Members {
    agents: HashMap<EndpointId, Arc<Agent>>,
    version: u64,
    /// Whether the first membership update is in: agents that join after it start joining.
    seeded: bool,
    /// When the next joining agent stops joining (the snapshot must be published again then).
    join_due: Option<Instant>,
}

/// Locks a mutex, ignoring poisoning: the data behind it stays consistent at every await-free
/// step, so a panic elsewhere never leaves it half-updated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// An empty pool (no agent until the first update).
    pub fn new(config: PoolConfig) -> Pool {
        let epoch = Instant::now();
        let params = AgentParams {
            epoch,
            default_rtt: config.default_rtt,
            failure_penalty: config.failure_penalty,
            latency_decay: config.latency_decay,
            budget: Arc::new(EjectionBudget::new(config.ejection.clone())),
            limit: config.limit,
        };
        let empty = Snapshot::new(0, epoch, config.gone_grace, Vec::new(), epoch);
        Pool {
            inner: Arc::new(Inner {
                hints: Mutex::new(HintsState::new(config.hints.clone())),
                current: ArcSwap::from_pointee(empty),
                members: Mutex::new(Members::default()),
                params,
                config,
                shed_milli: AtomicU64::new(0),
                shed_mark: AtomicU64::new(0),
                pres_answered: AtomicU64::new(0),
                follow_ups: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Applies one membership update and publishes the new snapshot.
    pub fn apply(&self, update: Update) {
        self.apply_at(update, Instant::now());
    }

    pub(crate) fn apply_at(&self, update: Update, now: Instant) {
        let mut m = lock(&self.inner.members);
        match update {
            Update::Reset(endpoints) => {
                let mut listed = HashSet::with_capacity(endpoints.len());
                for ep in &endpoints {
                    if !listed.insert(ep.id.clone()) {
                        tracing::warn!(agent.id = %ep.id, "Endpoint listed twice; the last entry wins");
                    }
                    self.upsert(&mut m, ep, now);
                }
                for (id, a) in &m.agents {
                    if !listed.contains(id) && !a.is_gone() {
                        tracing::info!(agent.id = %id, agent.addr = %a.address(), "Agent left");
                        a.set_gone(now);
                    }
                }
            }
            Update::Upsert(ep) => self.upsert(&mut m, &ep, now),
            Update::Remove(id) => match m.agents.get(&id) {
                Some(a) if !a.is_gone() => {
                    tracing::info!(agent.id = %id, agent.addr = %a.address(), "Agent left");
                    a.set_gone(now);
                }
                _ => {}
            },
        }
        m.seeded = true;
        self.expire_gone(&mut m, now);
        self.publish(&mut m, now);
    }

    fn upsert(&self, m: &mut Members, ep: &Endpoint, now: Instant) {
        match m.agents.get(&ep.id) {
            Some(a) if *a.address() == ep.address => {
                if a.is_gone() {
                    tracing::info!(agent.id = %ep.id, agent.addr = %ep.address, "Agent returned");
                }
                a.set_source(ep.state);
            }
            old => {
                if let Some(old) = old {
                    tracing::info!(agent.id = %ep.id, agent.addr = %ep.address, old.addr = %old.address(), "Agent moved");
                    old.set_gone(now);
                } else {
                    tracing::info!(agent.id = %ep.id, agent.addr = %ep.address, state = ?ep.state, "Agent joined");
                }
                let initial = typical_latency(m.agents.values(), now)
                    .unwrap_or(self.inner.params.default_rtt);
                let a = Arc::new(Agent::new(ep, &self.inner.params, initial, now));
                let delay = self.inner.config.join_delay;
                if m.seeded && !delay.is_zero() {
                    a.set_joining_until(now + delay);
                }
                m.agents.insert(ep.id.clone(), a);
            }
        }
    }

    /// Drops agents gone for longer than the grace period; true if any was dropped.
    fn expire_gone(&self, m: &mut Members, now: Instant) -> bool {
        let grace = self.inner.config.gone_grace;
        let before = m.agents.len();
        m.agents
            .retain(|_, a| a.gone_for(now).is_none_or(|d| d <= grace));
        m.agents.len() != before
    }

    fn publish(&self, m: &mut Members, now: Instant) {
        m.version += 1;
        let default_rtt = self.inner.params.default_rtt;
        for a in m.agents.values() {
            a.end_joining(now, || {
                typical_latency(m.agents.values(), now).unwrap_or(default_rtt)
            });
        }
        m.join_due = m.agents.values().filter_map(|a| a.joining_ends(now)).min();
        let agents = m.agents.values().cloned().collect();
        let snap = Snapshot::new(
            m.version,
            self.inner.params.epoch,
            self.inner.config.gone_grace,
            agents,
            now,
        );
        self.inner
            .params
            .budget
            .set_members(snap.members_taking_work());
        self.inner.current.store(Arc::new(snap));
    }

    /// Applies updates until the stream ends, and meanwhile ticks every `hints.tick` (1 s by
    /// default; see [`tick`](Self::tick)). Hints stay as they were once this returns. Run it in
    /// its own task; abort the task (or drop the future) to stop.
    pub async fn run(&self, mut updates: Updates) {
        let mut ticks = tokio::time::interval(self.inner.config.hints.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let join_due = lock(&self.inner.members).join_due;
            let joined = tokio::time::sleep_until(
                join_due.map_or_else(crate::far_future, tokio::time::Instant::from_std),
            );
            tokio::select! {
                biased;
                update = updates.next() => match update {
                    Some(update) => self.apply(update),
                    None => break,
                },
                // Never before the due instant, whatever clock the timer ran on (paused time).
                _ = joined, if join_due.is_some() => {
                    self.settle(join_due.map_or_else(Instant::now, |due| due.max(Instant::now())));
                }
                _ = ticks.tick() => self.tick(Instant::now()),
            }
        }
        tracing::debug!("Membership stream ended");
    }

    /// Publishes again once joining agents have joined (their join delay is over at `now`).
    pub(crate) fn settle(&self, now: Instant) {
        let mut m = lock(&self.inner.members);
        if m.join_due.is_some_and(|due| due <= now) {
            self.publish(&mut m, now);
        }
    }

    /// The periodic maintenance, at time `now` (normally `Instant::now()`; tests pass a later
    /// instant instead of waiting): drops agents gone past the grace period, ends elapsed
    /// ejections and join delays, and computes the hints from the load since the previous tick.
    pub fn tick(&self, now: Instant) {
        {
            let mut m = lock(&self.inner.members);
            let joined = m.join_due.is_some_and(|due| due <= now);
            if self.expire_gone(&mut m, now) || joined {
                self.publish(&mut m, now);
            }
        }
        let snap = self.snapshot();
        let mut input = TickInput {
            known_agents: snap.agents().len(),
            ..TickInput::default()
        };
        for a in snap.agents() {
            a.sweep(now);
            input.total_outstanding += a.outstanding();
            let started = a.started_total();
            let mark = a
                .rate_mark
                .swap(started, std::sync::atomic::Ordering::Relaxed);
            input.started += started.saturating_sub(mark);
            if a.is_ejected_at(now) {
                input.ejected_agents += 1;
            } else if a.is_source_ready() {
                input.ready_agents += 1;
            }
        }
        let shed = self.inner.shed_milli.load(Relaxed);
        input.shed = shed.saturating_sub(self.inner.shed_mark.swap(shed, Relaxed)) as f64 / 1000.0;
        input.waiting = self.inner.waiting.load(Relaxed);
        input.typical_latency = snap.typical_latency();
        let hints = lock(&self.inner.hints).tick(now, input).clone();
        tracing::trace!(
            recommended = hints.recommended,
            utilization = hints.utilization,
            "Hints"
        );
    }

    /// The current membership. Lock-free (one `ArcSwap` load).
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Counts a call the proxy shed because every agent was at its concurrency limit: load
    /// the agents never saw, which the hint must still ask agents for. A shed PreRequest
    /// counts the follow-up calls an inspected one brings on average as well: its module fails
    /// open and never sends them, yet the agents must be there for them.
    pub fn count_shed(&self, pre_request: bool) {
        let mut calls = 1.0;
        if pre_request {
            let pres = self.inner.pres_answered.load(Relaxed);
            if pres > 0 {
                calls += self.inner.follow_ups.load(Relaxed) as f64 / pres as f64;
            }
        }
        self.inner
            .shed_milli
            .fetch_add((calls * 1000.0).round() as u64, Relaxed);
    }

    /// Counts a PreRequest an agent answered (see [`count_shed`](Self::count_shed)).
    #[inline]
    pub fn count_pre_answered(&self) {
        self.inner.pres_answered.fetch_add(1, Relaxed);
    }

    /// Counts an UpdateRequest or PostRequest offered (see [`count_shed`](Self::count_shed)).
    #[inline]
    pub fn count_follow_up(&self) {
        self.inner.follow_ups.fetch_add(1, Relaxed);
    }

    /// Calls waiting in the proxy for an agent's slot now (counted as outstanding in the hint).
    pub fn set_waiting(&self, n: usize) {
        self.inner.waiting.store(n as u64, Relaxed);
    }

    /// The hint computed at the latest tick (before any tick: `min_agents`, zero load).
    pub fn hints(&self) -> Hints {
        lock(&self.inner.hints).hints().clone()
    }
}
