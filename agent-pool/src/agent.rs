//! One agent as the pool tracks it: identity, state, load (outstanding requests and peak-EWMA
//! latency), health and counters. The same `Arc<Agent>` lives on across membership snapshots
//! while its id stays a member, so its load and counters persist.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ewma::PeakEwma;
use crate::health::{EjectionBudget, Failure, Health};
use crate::limit::{ConcurrencyLimit, LimitConfig};
use crate::{Address, AffinityToken, Endpoint, EndpointId, SourceState};

/// An agent's state as the picker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Takes new work.
    Ready,
    /// Joined moments ago: takes new work only when no ready or terminating agent does, until
    /// every proxy replica has had time to learn of it (`PoolConfig::join_delay`).
    Joining,
    /// The source says it is shutting down: no new work, still serves its RequestIDs.
    Terminating,
    /// Passive health ejected it until its backoff ends: no new work.
    Ejected,
    /// It left the membership; kept for the grace period so late UpdateRequests reach it.
    Gone,
}

/// How one request to an agent ended, reported with [`InFlight::finish`].
///
/// Every outcome but `Success` and `Busy` counts toward ejection: a module whose call failed let
/// its request through uninspected, whatever the agent's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The agent answered.
    Success,
    /// No connection to the agent (refused, reset before any answer, connect timeout).
    /// Records no latency sample; ends in an ejection that a successful connect can cut short
    /// (the agent was unreachable: reachable again is news).
    ConnectFailure,
    /// The agent did not answer within the deadline. Raises the latency estimate to at least
    /// the elapsed time (or the failure penalty) at once. A run of timeouts alone ejects only
    /// if the other agents answered in time over the same window (every agent timing out at
    /// once is a shared cause, such as the proxy's own CPU).
    Timeout,
    /// The agent answered with an error frame. A fast failer must not attract work, so the
    /// latency estimate jumps to at least the pool's failure penalty, not the (short) time the
    /// answer took.
    ErrorAnswer,
    /// Any other failure after the request was sent (the connection broke, the answer was not a
    /// frame). Sampled like `ErrorAnswer`.
    Failed,
    /// The agent's queue was full and the request was not sent: busy, not broken. No sample, no
    /// effect on health.
    Busy,
}

const SOURCE_READY: u8 = 0;
const SOURCE_TERMINATING: u8 = 1;
const SOURCE_GONE: u8 = 2;

/// Per-pool parameters every agent needs.
#[derive(Debug)]
pub(crate) struct AgentParams {
    pub(crate) epoch: Instant,
    pub(crate) default_rtt: Duration,
    pub(crate) latency_decay: Duration,
    pub(crate) failure_penalty: Duration,
    pub(crate) budget: Arc<EjectionBudget>,
    pub(crate) limit: LimitConfig,
}

/// One agent of the pool. Cheap to share (`Arc<Agent>`); every method is lock-free.
#[derive(Debug)]
pub struct Agent {
    id: EndpointId,
    address: Address,
    token: AffinityToken,
    epoch: Instant,
    budget: Arc<EjectionBudget>,
    source: AtomicU8,
    /// When it turned gone (nanoseconds since the epoch); meaningful only when gone.
    gone_at: AtomicU64,
    /// Until when it is joining (nanoseconds since the epoch); 0 when it never was.
    joining_until: AtomicU64,
    outstanding: AtomicU64,
    /// Calls this replica keeps in flight on it at most (learned).
    limit: ConcurrencyLimit,
    ewma: PeakEwma,
    /// Least latency sample of a failed answer (nanoseconds).
    failure_penalty_ns: f64,
    /// The estimate of an agent with no sample yet (nanoseconds).
    default_rtt_ns: f64,
    health: Health,
    picks: AtomicU64,
    started: AtomicU64,
    successes: AtomicU64,
    connect_failures: AtomicU64,
    timeouts: AtomicU64,
    failed: AtomicU64,
    error_answers: AtomicU64,
    busy: AtomicU64,
    cancelled: AtomicU64,
    /// `started` as of the hints tick before, to compute the RPC rate.
    pub(crate) rate_mark: AtomicU64,
}

impl Agent {
    /// A new agent whose latency estimate starts at `initial`.
    pub(crate) fn new(
        endpoint: &Endpoint,
        params: &AgentParams,
        initial: Duration,
        now: Instant,
    ) -> Self {
        let now_ns = nanos_since(params.epoch, now);
        let agent = Self {
            token: AffinityToken::of(&endpoint.id),
            id: endpoint.id.clone(),
            address: endpoint.address.clone(),
            epoch: params.epoch,
            budget: params.budget.clone(),
            source: AtomicU8::new(SOURCE_READY),
            gone_at: AtomicU64::new(0),
            joining_until: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            limit: ConcurrencyLimit::new(params.limit, now_ns),
            ewma: PeakEwma::new(
                initial.as_nanos() as f64,
                now_ns,
                params.latency_decay.as_nanos() as f64,
            ),
            failure_penalty_ns: params.failure_penalty.as_nanos() as f64,
            default_rtt_ns: params.default_rtt.as_nanos() as f64,
            health: Health::default(),
            picks: AtomicU64::new(0),
            started: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            error_answers: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rate_mark: AtomicU64::new(0),
        };
        agent.set_source(endpoint.state);
        agent
    }

    /// Its stable identity.
    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    /// Where it listens.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Its affinity token (FNV-1a 64 of the id).
    pub fn token(&self) -> AffinityToken {
        self.token
    }

    /// Its state now.
    pub fn state(&self) -> AgentState {
        self.state_at(Instant::now())
    }

    pub(crate) fn state_at(&self, now: Instant) -> AgentState {
        match self.source.load(Relaxed) {
            SOURCE_GONE => AgentState::Gone,
            SOURCE_TERMINATING => AgentState::Terminating,
            _ if self.health.is_ejected(self.ns(now)) => AgentState::Ejected,
            _ if self.is_joining_at(now) => AgentState::Joining,
            _ => AgentState::Ready,
        }
    }

    /// Requests started and not yet finished or dropped.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Relaxed)
    }

    /// Calls this proxy keeps in flight on it at most: its learned concurrency limit.
    pub fn slots(&self) -> u64 {
        u64::from(self.limit.slots())
    }

    /// Whether a call started now stays within its concurrency limit.
    #[inline]
    pub fn has_free_slot(&self) -> bool {
        self.outstanding.load(Relaxed) < u64::from(self.limit.slots())
    }

    /// Whether an UpdateRequest for it may start now: below its limit, a probe of its latency
    /// without queueing notwithstanding (the update has no other agent to wait for).
    #[inline]
    pub fn has_free_slot_for_pinned(&self) -> bool {
        self.outstanding.load(Relaxed) < u64::from(self.limit.limit_slots())
    }

    /// The peak-EWMA latency estimate now (decayed toward zero since the last sample).
    pub fn latency_ewma(&self) -> Duration {
        self.latency_ewma_at(Instant::now())
    }

    pub(crate) fn latency_ewma_at(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.ewma.get(self.ns(now)) as u64)
    }

    /// Counts a request to this agent as outstanding until the returned guard is finished or
    /// dropped (dropped = cancelled: no latency sample, no health effect).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.start_at(Instant::now())
    }

    pub(crate) fn start_at(self: &Arc<Self>, now: Instant) -> InFlight {
        let in_flight = self.outstanding.fetch_add(1, Relaxed) + 1;
        self.limit.started(in_flight);
        self.started.fetch_add(1, Relaxed);
        InFlight {
            agent: self.clone(),
            started: now,
            finished: false,
        }
    }

    /// Counters and current load, for `/agents`.
    pub fn stats(&self) -> AgentStats {
        let now = Instant::now();
        let now_ns = self.ns(now);
        let successes = self.successes.load(Relaxed);
        let connect_failures = self.connect_failures.load(Relaxed);
        let timeouts = self.timeouts.load(Relaxed);
        let failed = self.failed.load(Relaxed);
        let error_answers = self.error_answers.load(Relaxed);
        let (limit, target) = self.limit.view();
        AgentStats {
            id: self.id.clone(),
            address: self.address.to_string(),
            token: self.token,
            state: self.state_at(now),
            outstanding: self.outstanding(),
            limit,
            limit_target_ms: target.as_secs_f64() * 1e3,
            latency_ewma_ms: self.ewma.get(now_ns) / 1e6,
            picks: self.picks.load(Relaxed),
            started: self.started.load(Relaxed),
            successes,
            failures: connect_failures + timeouts + failed + error_answers,
            connect_failures,
            timeouts,
            error_answers,
            busy: self.busy.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            ejections: self.health.ejections(),
            consecutive_failures: self.health.consecutive_failures(),
            ejected_for_ms: self.health.ejected_for(now_ns).as_secs_f64() * 1e3,
        }
    }

    // ---- crate-internal: the picker's and the pool's view ----

    #[inline]
    pub(crate) fn ns(&self, now: Instant) -> u64 {
        nanos_since(self.epoch, now)
    }

    /// Takes new work now: source-ready and not ejected (ends an expired ejection); or, as the
    /// picker's fallback, terminating (health is not tracked while terminating).
    #[inline]
    pub(crate) fn usable(&self, now: &mut LazyNow) -> bool {
        match self.source.load(Relaxed) {
            SOURCE_READY => self.health.readmit_if_expired(|| now.get(), &self.budget),
            SOURCE_TERMINATING => true,
            _ => false,
        }
    }

    /// The picker's cost: latency estimate at `now` × (outstanding + 1).
    #[inline]
    pub(crate) fn cost(&self, now: &mut LazyNow) -> f64 {
        self.ewma.get(now.get()) * (self.outstanding.load(Relaxed) + 1) as f64
    }

    #[inline]
    pub(crate) fn count_pick(&self) {
        self.picks.fetch_add(1, Relaxed);
    }

    pub(crate) fn started_total(&self) -> u64 {
        self.started.load(Relaxed)
    }

    pub(crate) fn is_source_ready(&self) -> bool {
        self.source.load(Relaxed) == SOURCE_READY
    }

    pub(crate) fn is_source_terminating(&self) -> bool {
        self.source.load(Relaxed) == SOURCE_TERMINATING
    }

    /// Keeps it joining (see [`AgentState::Joining`]) until `until`.
    pub(crate) fn set_joining_until(&self, until: Instant) {
        self.joining_until.store(self.ns(until).max(1), Relaxed);
    }

    /// Still joining at `now`: source-ready, and joined less than the join delay ago.
    pub(crate) fn is_joining_at(&self, now: Instant) -> bool {
        self.is_source_ready() && self.ns(now) < self.joining_until.load(Relaxed)
    }

    /// Ends the joining at `now` if its delay is over. An agent that took no work meanwhile
    /// starts at `typical` (its estimate decayed while it waited, which would make it the
    /// cheapest by far for its first moments).
    pub(crate) fn end_joining(&self, now: Instant, typical: impl FnOnce() -> Duration) {
        let until = self.joining_until.load(Relaxed);
        if until == 0 || self.ns(now) < until {
            return;
        }
        // Only the pool's writer (under its lock) ends joinings: a plain store is enough.
        self.joining_until.store(0, Relaxed);
        if self.started.load(Relaxed) == 0 {
            self.ewma.reset(typical().as_nanos() as f64, self.ns(now));
        }
    }

    /// When it stops joining, if it still is at `now`.
    pub(crate) fn joining_ends(&self, now: Instant) -> Option<Instant> {
        self.is_joining_at(now)
            .then(|| self.epoch + Duration::from_nanos(self.joining_until.load(Relaxed)))
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.source.load(Relaxed) == SOURCE_GONE
    }

    /// How long it has been gone at `now`, if gone.
    pub(crate) fn gone_for(&self, now: Instant) -> Option<Duration> {
        self.is_gone()
            .then(|| Duration::from_nanos(self.ns(now).saturating_sub(self.gone_at.load(Relaxed))))
    }

    pub(crate) fn set_source(&self, state: SourceState) {
        let v = match state {
            SourceState::Ready => SOURCE_READY,
            SourceState::Terminating => SOURCE_TERMINATING,
        };
        self.source.store(v, Relaxed);
        if v != SOURCE_READY {
            self.health.clear(&self.budget);
        }
    }

    pub(crate) fn set_gone(&self, now: Instant) {
        if self.source.swap(SOURCE_GONE, Relaxed) != SOURCE_GONE {
            self.gone_at.store(self.ns(now), Relaxed);
        }
        self.health.clear(&self.budget);
    }

    /// Ends the ejection if its backoff is over (the pool's periodic sweep).
    pub(crate) fn sweep(&self, now: Instant) {
        if self.is_source_ready() {
            self.health
                .readmit_if_expired(|| self.ns(now), &self.budget);
        } else {
            self.health.clear(&self.budget);
        }
    }

    pub(crate) fn is_ejected_at(&self, now: Instant) -> bool {
        self.health.is_ejected(self.ns(now))
    }

    fn record(&self, outcome: Outcome, elapsed: Duration, now: Instant) {
        let now_ns = self.ns(now);
        let sample = elapsed.as_nanos() as f64;
        match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Relaxed);
                self.ewma.observe(sample, now_ns);
                self.limit.answered(sample, now_ns);
                self.health.on_success(&self.budget);
                return;
            }
            Outcome::Busy => {
                self.busy.fetch_add(1, Relaxed);
                return;
            }
            Outcome::ConnectFailure => {
                self.connect_failures.fetch_add(1, Relaxed);
            }
            Outcome::Timeout => {
                self.timeouts.fetch_add(1, Relaxed);
                self.limit.timed_out(now_ns);
                self.ewma
                    .penalize(sample.max(self.failure_penalty_ns), now_ns);
            }
            Outcome::ErrorAnswer | Outcome::Failed => {
                let counter = if outcome == Outcome::Failed {
                    &self.failed
                } else {
                    &self.error_answers
                };
                counter.fetch_add(1, Relaxed);
                self.ewma
                    .penalize(sample.max(self.failure_penalty_ns), now_ns);
            }
        }
        let failure = match outcome {
            Outcome::ConnectFailure => Failure::Unreachable,
            Outcome::Timeout => Failure::Timeout,
            _ => Failure::Other,
        };
        if self.is_source_ready()
            && let Some(backoff) = self.health.on_failure(now_ns, failure, &self.budget)
        {
            tracing::warn!(
                agent.id = %self.id,
                agent.addr = %self.address,
                backoff_ms = backoff.as_millis() as u64,
                outcome = ?outcome,
                "Agent ejected after consecutive failures"
            );
        }
    }

    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.is_ejected_at(Instant::now())
    }

    /// Whether it is in a run of failures (failing, ejected, or back on trial): the proxy
    /// probes such agents with a connect and reports with [`probed`](Self::probed).
    pub fn is_suspect(&self) -> bool {
        self.is_source_ready() && self.health.is_suspect()
    }

    /// Tells a suspect agent whether a connect to it just succeeded. An agent found unreachable
    /// (by its calls or by an earlier probe) that accepts a connection again is readmitted at
    /// once, on trial, with a fresh latency estimate: most likely a new process on the same
    /// address, and the old one's failures say nothing about it. An agent that accepted
    /// connections all along (a staller, an error answerer) keeps its ejection and its penalty.
    /// Returns whether it was readmitted.
    /// `fresh` is the pool's typical estimate (see
    /// [`Snapshot::typical_latency`](crate::Snapshot::typical_latency); the default without);
    /// it starts again from half of it. At the typical estimate itself it came back as costly
    /// as the agents that had carried its load (their estimates inflated by it) and the picker
    /// tried it slowly: on the netns bed its share of PreRequests in the 2 s after its host
    /// came back was 1.4–16.4 % in 7 runs (fair: 33 %). Below them it is tried at once, and
    /// its first answer lifts its estimate to at least that answer's latency (the peak starts
    /// from zero), so the over-share lasts about as long as one call: 19.0–37.7 % in 8 runs.
    pub fn probed(&self, reachable: bool, fresh: Option<Duration>) -> bool {
        if !reachable {
            self.health.mark_unreachable();
            return false;
        }
        if !self.health.reachable_again(&self.budget) {
            return false;
        }
        let fresh = fresh.map_or(self.default_rtt_ns, |d| d.as_nanos() as f64) / 2.0;
        self.ewma.reset(fresh, self.ns(Instant::now()));
        tracing::info!(agent.id = %self.id, agent.addr = %self.address, "Agent reachable again, readmitted on trial");
        true
    }
}

/// The current time in nanoseconds since the epoch, read from the clock at most once per pick
/// and only if asked. A pick between two or more candidates always asks (the latency estimate
/// in the cost decays with time); with one candidate only a health check of an agent that is or
/// was ejected asks.
#[derive(Debug)]
pub(crate) struct LazyNow {
    epoch: Instant,
    ns: Option<u64>,
}

impl LazyNow {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self { epoch, ns: None }
    }

    #[cfg(test)]
    pub(crate) fn at(epoch: Instant, now: Instant) -> Self {
        Self {
            epoch,
            ns: Some(nanos_since(epoch, now)),
        }
    }

    #[inline]
    pub(crate) fn get(&mut self) -> u64 {
        *self
            .ns
            .get_or_insert_with(|| nanos_since(self.epoch, Instant::now()))
    }
}

/// Nanoseconds from `epoch` to `now` (0 if `now` is earlier).
#[inline]
pub(crate) fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_nanos() as u64
}

/// One request in flight to an agent: counted in the agent's outstanding load until
/// [`finish`](InFlight::finish)ed or dropped.
#[derive(Debug)]
#[must_use = "dropping an InFlight at once counts the request as cancelled"]
pub struct InFlight {
    agent: Arc<Agent>,
    started: Instant,
    finished: bool,
}

impl InFlight {
    /// The agent this request went to.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Ends the request: records the latency sample and the outcome's effect on health.
    pub fn finish(self, outcome: Outcome) {
        self.finish_at(outcome, Instant::now());
    }

    pub(crate) fn finish_at(mut self, outcome: Outcome, now: Instant) {
        self.finished = true;
        let elapsed = now.saturating_duration_since(self.started);
        self.agent.record(outcome, elapsed, now);
        self.agent.outstanding.fetch_sub(1, Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.finished {
            self.agent.cancelled.fetch_add(1, Relaxed);
            self.agent.outstanding.fetch_sub(1, Relaxed);
        }
    }
}

/// One agent's counters and load, as `/agents` shows them.
#[derive(Clone, Debug, Serialize)]
pub struct AgentStats {
    /// Stable identity.
    pub id: EndpointId,
    /// Address text.
    pub address: String,
    /// Affinity token (16 hex digits).
    pub token: AffinityToken,
    /// State now.
    pub state: AgentState,
    /// Requests in flight.
    pub outstanding: u64,
    /// Its learned concurrency limit (requests in flight at most; the integer part counts).
    pub limit: f64,
    /// The latency the limit holds the agent to, milliseconds (0 before its first answers).
    pub limit_target_ms: f64,
    /// Peak-EWMA latency estimate, milliseconds.
    pub latency_ewma_ms: f64,
    /// Times the picker chose it.
    pub picks: u64,
    /// Requests started on it (picked or routed by affinity).
    pub started: u64,
    /// Requests it answered.
    pub successes: u64,
    /// Requests that failed, all kinds.
    pub failures: u64,
    /// Of the failures: connect failures.
    pub connect_failures: u64,
    /// Of the failures: timeouts.
    pub timeouts: u64,
    /// Of the failures: error answers.
    pub error_answers: u64,
    /// Requests not sent because its connection's queue was full (not failures).
    pub busy: u64,
    /// Requests dropped without an outcome.
    pub cancelled: u64,
    /// Times passive health ejected it.
    pub ejections: u64,
    /// Failures since the last success or ejection.
    pub consecutive_failures: u32,
    /// Time left in the current ejection, milliseconds (0 when not ejected).
    pub ejected_for_ms: f64,
}
