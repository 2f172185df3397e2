//! The autoscaling hint: how many agents the load needs, computed by a periodic tick from the
//! pool's total outstanding requests and RPC rate, with a scale-down stabilization window (as
//! the Kubernetes HPA does: the recommendation is the highest raw value seen within the
//! window, so it rises at once and falls only after staying lower for the whole window).

use std::collections::VecDeque;
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
    /// Lowest recommendation. Default 1.
    pub min_agents: u32,
    /// Highest recommendation. Default 100.
    pub max_agents: u32,
    /// A lower recommendation takes effect only after it stayed lower this long. Default 5 min.
    pub scale_down_window: Duration,
    /// Time constant of the EWMAs of outstanding requests and of the RPC rate; zero means no
    /// smoothing. Default 10 s.
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
            scale_down_window: Duration::from_secs(300),
            smoothing: Duration::from_secs(10),
            tick: Duration::from_secs(1),
        }
    }
}

/// The latest autoscaling hint and the inputs it came from, as `/hints` shows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hints {
    /// Recommended number of agents (after the scale-down window and clamping).
    pub recommended: u32,
    /// This tick's recommendation before the scale-down window: max of the two variants,
    /// clamped.
    pub instant_recommendation: u32,
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
    /// Configured scale-down window, seconds.
    pub scale_down_window_seconds: f64,
    /// True while a lower instant recommendation waits out the window.
    pub scale_down_pending: bool,
}

/// What the pool measured at one tick.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TickInput {
    pub(crate) total_outstanding: u64,
    /// Requests started since the previous tick.
    pub(crate) started: u64,
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
    /// Raw recommendations within the window, values strictly decreasing from the front:
    /// the front is the window's maximum.
    window: VecDeque<(Instant, u32)>,
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
            recommended: min,
            instant_recommendation: min,
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
            scale_down_window_seconds: config.scale_down_window.as_secs_f64(),
            scale_down_pending: false,
        };
        Self {
            config,
            last: None,
            outstanding_ewma: 0.0,
            rate_ewma: 0.0,
            window: VecDeque::new(),
            hints,
        }
    }

    pub(crate) fn hints(&self) -> &Hints {
        &self.hints
    }

    pub(crate) fn tick(&mut self, now: Instant, input: TickInput) -> &Hints {
        let c = &self.config;
        let sample = input.total_outstanding as f64;
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
                    let rate = input.started as f64 / dt;
                    self.rate_ewma += alpha * (rate - self.rate_ewma);
                }
            }
        }
        self.last = Some(now);

        let target_out = c.target_outstanding_per_agent.max(f64::MIN_POSITIVE);
        let by_outstanding = ceil_u32(self.outstanding_ewma / target_out);
        let by_rate = c
            .target_rpc_per_agent
            .map(|t| ceil_u32(self.rate_ewma / t.max(f64::MIN_POSITIVE)));
        let hi = c.max_agents.max(c.min_agents);
        let raw = by_outstanding
            .max(by_rate.unwrap_or(0))
            .clamp(c.min_agents, hi);

        // Max-queue over the window.
        while self.window.back().is_some_and(|&(_, v)| v <= raw) {
            self.window.pop_back();
        }
        self.window.push_back((now, raw));
        while self
            .window
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= c.scale_down_window)
            && self.window.len() > 1
        {
            self.window.pop_front();
        }
        let recommended = self.window.front().map_or(raw, |&(_, v)| v);

        self.hints = Hints {
            recommended,
            instant_recommendation: raw,
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
            scale_down_window_seconds: c.scale_down_window.as_secs_f64(),
            scale_down_pending: raw < recommended,
        };
        &self.hints
    }
}
