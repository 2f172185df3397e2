//! Passive health: consecutive failures (anything but a success or a busy queue) eject an agent
//! for an exponential backoff, never more than a fraction of the pool at once. Ejection ends
//! lazily: whoever next looks at the agent after its backoff (the picker, or the pool's tick)
//! puts it back (`Health::readmit_if_expired`), with one compare-and-swap and no lock. It comes
//! back on trial (half-open): one more failure before a success ejects it again, with the next,
//! longer backoff. An agent ejected for being unreachable can also be readmitted early, once a
//! connect succeeds.
//!
//! Timeouts are judged against the peers (relative outlier detection, as Envoy's
//! failure-percentage detector splits local-origin failures): a run of failures made of
//! timeouts alone ejects only if the other agents answered in time over the same window. When
//! every agent times out at once, the cause is shared (the proxy's own CPU saturated, the
//! network, the node), and ejecting one healthy agent would only load the others more.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::time::Duration;

/// When an agent is ejected and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive failed outcomes (every [`Outcome`](crate::Outcome) but `Success` and `Busy`)
    /// that eject an agent. Default 5. A success resets the count. 0 disables ejection. A run
    /// of timeouts alone ejects only if at most one in ten of the other agents' calls over the
    /// same window timed out.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further ejection without a success in between
    /// doubles it. Default 1 s.
    pub base: Duration,
    /// The longest ejection. Default 30 s.
    pub max: Duration,
    /// The largest fraction of the ready agents ejected at once, in `[0, 1]`. Default 0.5.
    /// At least one ready agent is never ejected, whatever the fraction.
    pub max_ejected_fraction: f64,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_ejected_fraction: 0.5,
        }
    }
}

impl EjectionConfig {
    /// The length of ejection number `level` (0 for the first): `base × 2^level`, at most `max`.
    pub fn backoff(&self, level: u32) -> Duration {
        crate::Backoff::new(self.base, self.max).nth(level)
    }
}

/// A run of timeouts alone ejects only if at most one in this many of the peers' calls over the
/// same window timed out (and at least one was answered).
const PEER_TIMEOUT_SHARE: u64 = 10;

/// How a failed call counts toward ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection to the agent: the agent's own doing.
    Unreachable,
    /// No answer within the deadline: the agent's doing only if its peers answered in time.
    Timeout,
    /// An error answer or a broken call: the agent's own doing.
    Other,
}

/// Pool-wide ejection bookkeeping, shared by every agent of one pool.
#[derive(Debug)]
pub(crate) struct EjectionBudget {
    pub(crate) config: EjectionConfig,
    /// Agents currently ejected (expired ejections count until someone notices).
    ejected: AtomicUsize,
    /// Ready agents in the latest snapshot (the denominator of the fraction).
    members: AtomicUsize,
    /// Calls answered in time (successes) by any agent since the pool started.
    answered: AtomicU64,
    /// Calls timed out on any agent since the pool started.
    timeouts: AtomicU64,
}

impl EjectionBudget {
    pub(crate) fn new(config: EjectionConfig) -> Self {
        Self {
            config,
            ejected: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_members(&self, n: usize) {
        self.members.store(n, Relaxed);
    }

    fn try_reserve(&self) -> bool {
        let members = self.members.load(Relaxed);
        let fraction = self.config.max_ejected_fraction.clamp(0.0, 1.0);
        let allowed = ((members as f64 * fraction).floor() as usize).min(members.saturating_sub(1));
        self.ejected
            .fetch_update(AcqRel, Acquire, |e| (e < allowed).then_some(e + 1))
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(AcqRel, Acquire, |e| Some(e.saturating_sub(1)));
    }
}

/// One agent's health. Times are nanoseconds since the pool's epoch.
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive: AtomicU32,
    /// The current run of failures (or trial): what it holds, and the pool's counters when it
    /// began, to judge its timeouts against the peers' calls over the same window.
    run: Run,
    /// Ejections since the last success: the exponent of the next backoff.
    level: AtomicU32,
    /// End of the current ejection; 0 when not ejected.
    ejected_until: AtomicU64,
    /// The current ejection followed a connect failure.
    unreachable: AtomicBool,
    ejections: AtomicU64,
}

/// One run of failures (or a trial), for judging its timeouts.
#[derive(Debug, Default)]
struct Run {
    /// The pool's `answered` when it began.
    pool_answered: AtomicU64,
    /// The pool's `timeouts` when it began.
    pool_timeouts: AtomicU64,
    /// This agent's timeouts in it.
    own_timeouts: AtomicU64,
    /// It holds a failure other than a timeout: the agent's own doing, no comparison needed.
    own_fault: AtomicBool,
}

impl Run {
    fn begin(&self, pool_answered: u64, pool_timeouts: u64) {
        self.pool_answered.store(pool_answered, Relaxed);
        self.pool_timeouts.store(pool_timeouts, Relaxed);
        self.own_timeouts.store(0, Relaxed);
        self.own_fault.store(false, Relaxed);
    }

    /// Whether this run is the agent's doing: a failure of its own, or timeouts while the
    /// other agents answered in time since the run began.
    fn is_own_doing(&self, budget: &EjectionBudget) -> bool {
        if self.own_fault.load(Relaxed) {
            return true;
        }
        let answered = budget
            .answered
            .load(Relaxed)
            .saturating_sub(self.pool_answered.load(Relaxed));
        let timeouts = budget
            .timeouts
            .load(Relaxed)
            .saturating_sub(self.pool_timeouts.load(Relaxed))
            .saturating_sub(self.own_timeouts.load(Relaxed));
        answered > 0 && timeouts.saturating_mul(PEER_TIMEOUT_SHARE) <= answered + timeouts
    }
}

impl Health {
    pub(crate) fn on_success(&self, budget: &EjectionBudget) {
        budget.answered.fetch_add(1, Relaxed);
        self.consecutive.store(0, Relaxed);
        self.level.store(0, Relaxed);
        self.unreachable.store(false, Relaxed);
    }

    /// Counts a failure; returns the backoff if this ejected the agent.
    pub(crate) fn on_failure(
        &self,
        now_ns: u64,
        failure: Failure,
        budget: &EjectionBudget,
    ) -> Option<Duration> {
        let threshold = budget.config.consecutive_failures;
        let pool_timeouts = if failure == Failure::Timeout {
            budget.timeouts.fetch_add(1, Relaxed)
        } else {
            budget.timeouts.load(Relaxed)
        };
        if failure == Failure::Unreachable {
            self.unreachable.store(true, Relaxed);
        }
        let until = self.ejected_until.load(Acquire);
        if until > now_ns {
            // Already ejected: calls that were in flight count for nothing.
            return None;
        }
        let before = self.consecutive.fetch_add(1, Relaxed);
        if before == 0 {
            self.run.begin(budget.answered.load(Relaxed), pool_timeouts);
        }
        match failure {
            Failure::Timeout => {
                self.run.own_timeouts.fetch_add(1, Relaxed);
            }
            Failure::Unreachable | Failure::Other => self.run.own_fault.store(true, Relaxed),
        }
        let n = before.saturating_add(1);
        if threshold == 0 || n < threshold {
            return None;
        }
        if !self.run.is_own_doing(budget) {
            // Every agent timing out at once: not this one's fault. The run goes on; its next
            // failure is judged over the longer window.
            return None;
        }
        // An expired ejection nobody noticed yet is still counted in the budget: reuse it.
        let reserved = until == 0;
        if reserved && !budget.try_reserve() {
            return None; // too many ejected; the next failure tries again
        }
        let backoff = budget.config.backoff(self.level.load(Relaxed));
        let next = now_ns.saturating_add(backoff.as_nanos() as u64).max(1);
        if self
            .ejected_until
            .compare_exchange(until, next, AcqRel, Acquire)
            .is_err()
        {
            if reserved {
                budget.release();
            }
            return None; // a concurrent failure ejected it
        }
        self.level.fetch_add(1, Relaxed);
        self.consecutive.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        Some(backoff)
    }

    /// Puts it on trial: the next failure before a success ejects it again.
    fn on_trial(&self, budget: &EjectionBudget) {
        let threshold = budget.config.consecutive_failures;
        self.run
            .begin(budget.answered.load(Relaxed), budget.timeouts.load(Relaxed));
        self.consecutive.store(threshold.saturating_sub(1), Relaxed);
    }

    /// A connect succeeded after the agent was found unreachable: ends any ejection now and
    /// puts it on trial. `false` (nothing done) if it was not found unreachable.
    pub(crate) fn reachable_again(&self, budget: &EjectionBudget) -> bool {
        if !self.unreachable.swap(false, Relaxed) {
            return false;
        }
        let until = self.ejected_until.swap(0, AcqRel);
        if until != 0 {
            budget.release();
        }
        self.on_trial(budget);
        true
    }

    /// A connect to the agent failed: once one succeeds, that is news.
    pub(crate) fn mark_unreachable(&self) {
        self.unreachable.store(true, Relaxed);
    }

    /// In a run of failures (ejected, on trial, or failing): the proxy probes such agents.
    pub(crate) fn is_suspect(&self) -> bool {
        self.consecutive.load(Relaxed) > 0 || self.ejected_until.load(Acquire) != 0
    }

    /// Readmits the agent, on trial, if its ejection has expired by `now_ns`; returns whether it
    /// is not ejected (the main readmission point: the picker and the pool's sweep call it).
    /// The clock is read only if the agent is or was ejected.
    #[inline]
    pub(crate) fn readmit_if_expired(
        &self,
        now_ns: impl FnOnce() -> u64,
        budget: &EjectionBudget,
    ) -> bool {
        let until = self.ejected_until.load(Acquire);
        if until == 0 {
            return true;
        }
        if now_ns() < until {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, AcqRel, Acquire)
            .is_ok()
        {
            budget.release();
            self.on_trial(budget);
        }
        true
    }

    /// Ends any ejection at once (the agent left the ready set).
    pub(crate) fn clear(&self, budget: &EjectionBudget) {
        if self.ejected_until.swap(0, AcqRel) != 0 {
            budget.release();
        }
    }

    pub(crate) fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Acquire) > now_ns
    }

    /// Time left in the current ejection.
    pub(crate) fn ejected_for(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(self.ejected_until.load(Acquire).saturating_sub(now_ns))
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Relaxed)
    }

    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }
}
