//! The autoscaling hint: how many agents' worth of work this proxy sends, computed by a periodic
//! tick from the pool's total outstanding requests and RPC rate.
//!
//! [`Hints::demand`] is raw and fractional on purpose: every proxy replica exports its own, the
//! autoscaler sums them over the replicas and rounds up once (an HPA `AverageValue` target of 1,
//! or `ceil(sum(...))`). Rounding or flooring per replica would overshoot by up to one agent per
//! replica; a stabilization window here would stack on the autoscaler's own, so there is none.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How the hint is computed.
#[derive(Clone, Debug, PartialEq)]
pub struct HintsConfig {
    /// Outstanding requests one agent should carry. Default 8.
    pub target_outstanding_per_agent: f64,
    /// RPCs per second one agent should carry; `None` disables the rate-based variant.
    /// Default `Some(1000.0)`.
    pub target_rpc_per_agent: Option<f64>,
    /// Lowest [`Hints::recommended`] (never applied to [`Hints::demand`]). Default 1.
    pub min_agents: u32,
    /// Highest [`Hints::recommended`] (never applied to [`Hints::demand`]). Default 100.
    pub max_agents: u32,
    /// Time constant of the EWMAs of outstanding requests and of the RPC rate (which rises at
    /// once and only falls smoothly); zero means no smoothing. Default 10 s.
    pub smoothing: Duration,
    /// How often [`Pool::run`](crate::Pool::run) ticks. Default 1 s.
    pub tick: Duration,
}

impl Default for HintsConfig {
    fn default() -> Self {
        Self {
            target_outstanding_per_agent: 8.0,
            target_rpc_per_agent: Some(1000.0),
            min_agents: 1,
            max_agents: 100,
            smoothing: Duration::from_secs(10),
            tick: Duration::from_secs(1),
        }
    }
}

/// The latest autoscaling hint and the inputs it came from, as `/hints` shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hints {
    /// Agents' worth of work this proxy sends: the larger of total outstanding EWMA ÷ target
    /// outstanding per agent and RPC rate ÷ target RPC/s per agent. Calls the proxy shed or
    /// queues because every agent was at its limit count as offered: in the rate, and in the
    /// outstanding as waiting plus shed per second × the typical latency; a shed PreRequest
    /// counts the UpdateRequests and PostRequests an answered one brings on average, which its
    /// module, failing open, never sends. Not rounded, not clamped, not held: the pool needs
    /// `ceil` of the sum over every proxy replica.
    pub demand: f64,
    /// `ceil(demand)` within `min_agents..=max_agents`: the pool this proxy alone would need.
    /// For people reading `/hints`; never sum it over replicas (each rounds up and counts at
    /// least `min_agents`).
    pub recommended: u32,
    /// ceil(total outstanding EWMA ÷ target outstanding per agent).
    pub by_outstanding: u32,
    /// ceil(RPC rate ÷ target RPC/s per agent), when that variant is on.
    pub by_rate: Option<u32>,
    /// Total outstanding EWMA ÷ (ready agents × target outstanding per agent); with no ready
    /// agent the denominator counts one agent.
    pub utilization: f64,
    /// Outstanding requests over every known agent at the last tick.
    pub total_outstanding: u64,
    /// EWMA of `total_outstanding`.
    pub total_outstanding_ewma: f64,
    /// EWMA of requests started per second, all agents.
    pub rpc_rate: f64,
    /// Agents taking new work.
    pub ready_agents: usize,
    /// Agents known in any state.
    pub known_agents: usize,
    /// Agents ejected by passive health.
    pub ejected_agents: usize,
    /// Configured target outstanding per agent.
    pub target_outstanding_per_agent: f64,
    /// Configured target RPC/s per agent.
    pub target_rpc_per_agent: Option<f64>,
    /// Configured lower bound.
    pub min_agents: u32,
    /// Configured upper bound.
    pub max_agents: u32,
}

/// What the pool measured at one tick.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TickInput {
    pub(crate) total_outstanding: u64,
    /// Requests started since the previous tick.
    pub(crate) started: u64,
    /// Calls shed since the previous tick without reaching an agent (all at their limits),
    /// with the follow-ups of shed PreRequests.
    pub(crate) shed: f64,
    /// Calls waiting in the proxy for an agent's slot.
    pub(crate) waiting: u64,
    /// The agents' typical latency (what a shed call would have kept outstanding).
    pub(crate) typical_latency: Option<Duration>,
    pub(crate) ready_agents: usize,
    pub(crate) known_agents: usize,
    pub(crate) ejected_agents: usize,
}

/// The hint's state between ticks.
#[derive(Debug)]
pub(crate) struct HintsState {
    config: HintsConfig,
    last: Option<Instant>,
    outstanding_ewma: f64,
    rate_ewma: f64,
    hints: Hints,
}

/// `ceil(x)` that ignores float noise just above an integer.
fn ceil_u32(x: f64) -> u32 {
    let c = (x - 1e-6).ceil();
    if c <= 0.0 {
        0
    } else {
        c.min(u32::MAX as f64) as u32
    }
}

impl HintsState {
    pub(crate) fn new(config: HintsConfig) -> Self {
        let min = config.min_agents;
        let hints = Hints {
            demand: 0.0,
            recommended: min,
            by_outstanding: 0,
            by_rate: config.target_rpc_per_agent.map(|_| 0),
            utilization: 0.0,
            total_outstanding: 0,
            total_outstanding_ewma: 0.0,
            rpc_rate: 0.0,
            ready_agents: 0,
            known_agents: 0,
            ejected_agents: 0,
            target_outstanding_per_agent: config.target_outstanding_per_agent,
            target_rpc_per_agent: config.target_rpc_per_agent,
            min_agents: config.min_agents,
            max_agents: config.max_agents,
        };
        Self {
            config,
            last: None,
            outstanding_ewma: 0.0,
            rate_ewma: 0.0,
            hints,
        }
    }

    pub(crate) fn hints(&self) -> &Hints {
        &self.hints
    }

    pub(crate) fn tick(&mut self, now: Instant, input: TickInput) -> &Hints {
        let c = &self.config;
        // Shed and waiting calls are load too: the agents would have had them outstanding
        // (Little's law: shed per second × latency) had there been enough of them.
        let dt = self
            .last
            .map(|last| now.saturating_duration_since(last).as_secs_f64());
        let shed_out = match (dt, input.typical_latency) {
            (Some(dt), Some(lat)) if dt > 0.0 => input.shed / dt * lat.as_secs_f64(),
            _ => 0.0,
        };
        let sample = input.total_outstanding as f64 + input.waiting as f64 + shed_out;
        match self.last {
            None => self.outstanding_ewma = sample,
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = if c.smoothing.is_zero() {
                    1.0
                } else {
                    1.0 - (-dt / c.smoothing.as_secs_f64()).exp()
                };
                self.outstanding_ewma += alpha * (sample - self.outstanding_ewma);
                if dt > 0.0 {
                    // Up at once, down smoothly: a tick's rate is already a mean over the tick,
                    // and the autoscaler must see a step while the proxy sheds it, not a tenth
                    // of it per tick (the HPA scales up with no window; down after its own).
                    let rate = (input.started as f64 + input.shed) / dt;
                    if rate > self.rate_ewma {
                        self.rate_ewma = rate;
                    } else {
                        self.rate_ewma += alpha * (rate - self.rate_ewma);
                    }
                }
            }
        }
        self.last = Some(now);

        let target_out = c.target_outstanding_per_agent.max(f64::MIN_POSITIVE);
        let demand_out = self.outstanding_ewma / target_out;
        let demand_rate = c
            .target_rpc_per_agent
            .map(|t| self.rate_ewma / t.max(f64::MIN_POSITIVE));
        let demand = demand_out.max(demand_rate.unwrap_or(0.0));
        let by_outstanding = ceil_u32(demand_out);
        let by_rate = demand_rate.map(ceil_u32);
        let hi = c.max_agents.max(c.min_agents);
        let recommended = ceil_u32(demand).clamp(c.min_agents, hi);

        self.hints = Hints {
            demand,
            recommended,
            by_outstanding,
            by_rate,
            utilization: self.outstanding_ewma / (input.ready_agents.max(1) as f64 * target_out),
            total_outstanding: input.total_outstanding,
            total_outstanding_ewma: self.outstanding_ewma,
            rpc_rate: self.rate_ewma,
            ready_agents: input.ready_agents,
            known_agents: input.known_agents,
            ejected_agents: input.ejected_agents,
            target_outstanding_per_agent: c.target_outstanding_per_agent,
            target_rpc_per_agent: c.target_rpc_per_agent,
            min_agents: c.min_agents,
            max_agents: c.max_agents,
        };
        &self.hints
    }
}
