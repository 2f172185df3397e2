//! An immutable view of the membership, published by the pool and read on the hot path
//! without locks: the agents, the ready ones the picker draws from, and the token index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::LazyNow;
use crate::{AffinityToken, Agent, AgentState, ShortToken, picker};

/// Tokens are already hashes: the index uses them as they are.
#[derive(Default)]
pub(crate) struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type TokenMap = HashMap<u64, Arc<Agent>, BuildHasherDefault<TokenHasher>>;

/// One published membership. Cheap to hold (`Arc<Snapshot>`); a newer one replaces it on every
/// membership change, while the `Arc<Agent>`s inside stay the same objects.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    epoch: Instant,
    gone_grace: Duration,
    /// Every known agent, sorted by id.
    agents: Vec<Arc<Agent>>,
    /// Source-ready agents, the picker's candidates (some may be ejected right now).
    ready: Vec<Arc<Agent>>,
    /// Source-ready agents that joined less than the join delay before this snapshot: the
    /// picker's last resort, so that no RequestID names an agent another replica has not
    /// heard of yet (its UpdateRequest would reach a wrong agent there).
    joining: Vec<Arc<Agent>>,
    /// Terminating agents: the picker's fallback when no ready agent takes work, as kube-proxy
    /// falls back to serving-terminating endpoints (better inspected late than not at all).
    terminating: Vec<Arc<Agent>>,
    by_token: TokenMap,
    /// Each short token's owner: of the agents sharing it, the one with the smallest full
    /// token, a rule every replica with the same membership applies alike.
    by_short: TokenMap,
}

/// Each short token's owner among `agents`: the smallest full token wins.
fn short_owners(agents: &[Arc<Agent>]) -> TokenMap {
    let mut by_short = TokenMap::default();
    for a in agents {
        let owner = by_short
            .entry(u64::from(a.token().short().0))
            .or_insert_with(|| a.clone());
        if Arc::ptr_eq(owner, a) {
            continue;
        }
        if a.token() < owner.token() {
            *owner = a.clone();
        }
        tracing::warn!(
            agent.id = %a.id(),
            owner.id = %owner.id(),
            "Two agents share a short affinity token: only the owner's short RequestIDs are tagged"
        );
    }
    by_short
}

impl Snapshot {
    pub(crate) fn new(
        version: u64,
        epoch: Instant,
        gone_grace: Duration,
        mut agents: Vec<Arc<Agent>>,
        now: Instant,
    ) -> Self {
        agents.sort_by(|a, b| a.id().cmp(b.id()));
        let (joining, ready): (Vec<_>, Vec<_>) = agents
            .iter()
            .filter(|a| a.is_source_ready())
            .cloned()
            .partition(|a| a.is_joining_at(now));
        let terminating: Vec<_> = agents
            .iter()
            .filter(|a| a.is_source_terminating())
            .cloned()
            .collect();
        let mut by_token = TokenMap::default();
        for a in &agents {
            if let Some(other) = by_token.insert(a.token().0, a.clone()) {
                tracing::warn!(
                    agent.id = %a.id(),
                    other.id = %other.id(),
                    "Two agents share an affinity token; the later one wins"
                );
            }
        }
        let by_short = short_owners(&agents);
        Self {
            version,
            epoch,
            gone_grace,
            agents,
            ready,
            joining,
            terminating,
            by_token,
            by_short,
        }
    }

    /// Picks an agent for new work: power of two choices among ready agents (not terminating,
    /// not ejected, not gone), the cheaper by peak-EWMA latency × (outstanding + 1); when none
    /// of them takes work, the same among terminating agents, then among joining ones. `None`
    /// when no agent can take new work. O(1) while a ready agent is usable.
    #[inline]
    pub fn pick(&self) -> Option<Arc<Agent>> {
        self.pick_with(LazyNow::new(self.epoch), None, false)
    }

    /// Like [`pick`](Self::pick) but never returns `not` (to retry elsewhere).
    #[inline]
    pub fn pick_excluding(&self, not: &Agent) -> Option<Arc<Agent>> {
        self.pick_with(LazyNow::new(self.epoch), Some(not), false)
    }

    /// Like [`pick`](Self::pick) (or [`pick_excluding`](Self::pick_excluding) with `not`), among
    /// the agents below their concurrency limit only ([`Agent::has_free_slot`]); when every
    /// agent that takes work is at its limit, a joining agent below its limit. `None` when
    /// there is none: the caller queues the call.
    #[inline]
    pub fn pick_free(&self, not: Option<&Agent>) -> Option<Arc<Agent>> {
        self.pick_with(LazyNow::new(self.epoch), not, true)
    }

    /// Whether an agent takes new work in this snapshot: ready and not ejected, or, when no
    /// ready agent does, terminating or joining (the picker's fallbacks).
    pub fn takes_new_work(&self, agent: &Agent) -> bool {
        let mut now = LazyNow::new(self.epoch);
        match agent.state() {
            AgentState::Ready => agent.usable(&mut now),
            AgentState::Terminating | AgentState::Joining => {
                !self.ready.iter().any(|a| a.usable(&mut now)) && agent.usable(&mut now)
            }
            AgentState::Ejected | AgentState::Gone => false,
        }
    }

    /// Whether any agent takes new work (in any tier).
    pub fn takes_work(&self) -> bool {
        let mut now = LazyNow::new(self.epoch);
        [&self.ready, &self.terminating, &self.joining]
            .iter()
            .any(|list| list.iter().any(|a| a.usable(&mut now)))
    }

    /// What the agents taking work can hold: calls per second at their limits (the sum over
    /// them of limit ÷ latency estimate, which the peak-biased estimate keeps on the low side)
    /// and their slots (the sum of their limits).
    pub fn capacity(&self) -> (f64, u64) {
        let mut now = LazyNow::new(self.epoch);
        let sum = |list: &[Arc<Agent>], now: &mut LazyNow| -> (f64, u64) {
            list.iter()
                .filter(|a| a.usable(now))
                .fold((0.0, 0), |(rate, slots), a| {
                    let latency = a.latency_ewma().as_secs_f64().max(1e-5);
                    (rate + a.slots() as f64 / latency, slots + a.slots())
                })
        };
        let ready = sum(&self.ready, &mut now);
        if ready.1 > 0 {
            return ready;
        }
        let (t, j) = (
            sum(&self.terminating, &mut now),
            sum(&self.joining, &mut now),
        );
        (t.0 + j.0, t.1 + j.1)
    }

    #[cfg(test)]
    pub(crate) fn pick_at(&self, now: Instant, exclude: Option<&Agent>) -> Option<Arc<Agent>> {
        self.pick_with(LazyNow::at(self.epoch, now), exclude, false)
    }

    #[inline]
    fn pick_with(
        &self,
        mut now: LazyNow,
        exclude: Option<&Agent>,
        need_slot: bool,
    ) -> Option<Arc<Agent>> {
        // With `need_slot`, a tier whose agents are all at their limit still takes the work
        // (the call waits for it): the next tier is only for when no agent of it is usable.
        let tier = |list: &[Arc<Agent>], now: &mut LazyNow| -> Result<Option<Arc<Agent>>, ()> {
            match picker::pick(list, now, exclude, need_slot) {
                Some(a) => Ok(Some(a.clone())),
                None if need_slot
                    && list.iter().any(|a| {
                        exclude.is_none_or(|x| !std::ptr::eq(&**a, x)) && a.usable(now)
                    }) =>
                {
                    Ok(None)
                }
                None => Err(()),
            }
        };
        let a = match tier(&self.ready, &mut now).or_else(|()| tier(&self.terminating, &mut now)) {
            // Every agent that takes work is at its limit: a joining agent with a free slot
            // takes the call rather than let it wait or be shed. A shed call is certainly
            // uninspected; the orphaned update a joining agent risks (another replica may not
            // know it yet) is only possible.
            Ok(None) => picker::pick(&self.joining, &mut now, exclude, true).cloned(),
            Ok(Some(a)) => Some(a),
            Err(()) => tier(&self.joining, &mut now).ok().flatten(),
        }?;
        a.count_pick();
        Some(a)
    }

    /// The agent with this affinity token, if it is a member in any state: ready, terminating,
    /// ejected, or gone for less than the grace period (30 s by default).
    #[inline]
    pub fn by_token(&self, token: AffinityToken) -> Option<Arc<Agent>> {
        self.by_token_at(token, Instant::now())
    }

    pub(crate) fn by_token_at(&self, token: AffinityToken, now: Instant) -> Option<Arc<Agent>> {
        let a = self.by_token.get(&token.0)?;
        if a.is_gone() && a.gone_for(now).is_some_and(|d| d > self.gone_grace) {
            return None;
        }
        Some(a.clone())
    }

    /// The owner of a short token (of the members sharing it, the one with the smallest full
    /// token), within the same grace as [`by_token`](Self::by_token).
    #[inline]
    pub fn by_short_token(&self, short: ShortToken) -> Option<Arc<Agent>> {
        let a = self.by_short.get(&u64::from(short.0))?;
        self.by_token(a.token())
            .filter(|found| Arc::ptr_eq(found, a))
    }

    /// Whether `agent` owns its short token, so that a RequestID may name it by that alone.
    #[inline]
    pub fn owns_short_token(&self, agent: &Agent) -> bool {
        self.by_short
            .get(&u64::from(agent.token().short().0))
            .is_some_and(|a| std::ptr::eq(Arc::as_ptr(a), agent))
    }

    /// Every known agent, sorted by id: ready, terminating, ejected and gone-within-grace.
    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// How many agents take new work now (ready and not ejected; joining agents are not
    /// counted). O(agents).
    pub fn ready_len(&self) -> usize {
        self.ready_len_at(Instant::now())
    }

    pub(crate) fn ready_len_at(&self, now: Instant) -> usize {
        self.ready
            .iter()
            .filter(|a| !a.is_ejected_at(now) && a.is_source_ready())
            .count()
    }

    /// The median latency estimate of the agents taking work now (`None` with none): where an
    /// agent that joins or comes back starts.
    pub fn typical_latency(&self) -> Option<Duration> {
        typical_latency(self.agents.iter(), Instant::now())
    }

    /// Increases by one with every published snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn ready_agents(&self) -> &[Arc<Agent>] {
        &self.ready
    }

    /// Source-ready agents, joining ones included: the ejection budget's members.
    pub(crate) fn members_taking_work(&self) -> usize {
        self.ready.len() + self.joining.len()
    }
}

/// The median latency estimate of the healthy agents taking work now (none in a run of
/// failures, whose penalty says nothing of speed): where a new agent starts, so it
/// takes its share from its first second (scale-up under load) instead of waiting for a
/// pessimistic default to decay. `None` with no such agent.
pub(crate) fn typical_latency<'a>(
    agents: impl Iterator<Item = &'a Arc<Agent>>,
    now: Instant,
) -> Option<std::time::Duration> {
    let mut estimates: Vec<_> = agents
        .filter(|a| a.is_source_ready() && !a.is_suspect() && a.started_total() > 0)
        .map(|a| a.latency_ewma_at(now))
        .collect();
    if estimates.is_empty() {
        return None;
    }
    // The lower median: with two agents, the faster one.
    let mid = (estimates.len() - 1) / 2;
    Some(*estimates.select_nth_unstable(mid).1)
}
