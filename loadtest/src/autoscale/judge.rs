//! The figures a policy is judged by, from its run: uninspected calls, PreRequest p99, the
//! agent-seconds paid against the ideal, how often the scale direction changed against how
//! often the load did, how long after each rise of the load enough agents were ready, and
//! whether the demand the HPA read covered the load while the proxies shed ([`super::demand`]).

use serde::Serialize;

use super::demand::{ShedDemand, while_shedding};
use super::run::{PolicyRun, Setup, need};

/// The goals a policy is held to, in `table` and `label`: at most this fraction of calls
/// uninspected (an autoscaler exists so that the agents keep up).
pub const MAX_UNINSPECTED: f64 = 0.001;
/// PreRequest p99 goal, milliseconds.
pub const MAX_P99_MS: f64 = 80.0;
/// Agent-seconds against the ideal.
pub const MAX_COST: f64 = 1.3;

/// One policy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Calls of every method.
    pub calls: u64,
    /// Of them, failed (the module let the request through, or lost its update, uninspected).
    pub failed_calls: u64,
    /// `failed_calls ÷ calls`.
    pub uninspected: f64,
    /// Transactions whose PreRequest failed.
    pub failed_open: u64,
    /// PreRequest p99 over the run, ms (the worst proxy's when several).
    pub pre_p99_ms: f64,
    /// Agents paid for (ready or starting), integrated over the run.
    pub agent_seconds: f64,
    /// The agents the load needed, second by second, integrated.
    pub ideal_agent_seconds: f64,
    /// `agent_seconds ÷ ideal_agent_seconds`.
    pub cost: f64,
    /// Times the scale direction reversed.
    pub direction_changes: usize,
    /// Times the load's direction changed (runs of rising or falling).
    pub load_changes: usize,
    /// Scale-ups and scale-downs.
    pub scale_events: usize,
    /// For each rise of the load: seconds from the moment it reached its new level until
    /// enough agents were ready (`None`: never within the run).
    pub time_to_enough_s: Vec<Option<f64>>,
    /// Seconds with fewer ready agents than the load needed.
    pub under_provisioned_s: f64,
    /// Most agents at once.
    pub peak_pods: u32,
    /// Summed demand ÷ offered agents' worth over the half-second intervals with shed calls.
    pub demand_while_shedding: ShedDemand,
}

impl Figures {
    /// Whether each goal holds: uninspected, p99, cost, flapping.
    pub fn goals(&self) -> [(&'static str, bool); 4] {
        [
            ("uninspected ≤ 0.1%", self.uninspected <= MAX_UNINSPECTED),
            ("PreRequest p99 < 80 ms", self.pre_p99_ms < MAX_P99_MS),
            ("agent-seconds ≤ 1.3× ideal", self.cost <= MAX_COST),
            (
                "direction changes ≤ load changes",
                self.direction_changes <= self.load_changes,
            ),
        ]
    }
}

/// The figures of `run`.
pub fn figures(setup: &Setup, run: &PolicyRun) -> Figures {
    let mut calls = 0;
    let mut failed_calls = 0;
    let mut failed_open = 0;
    let mut p99_us = 0u64;
    for d in &run.drives {
        calls += d.tally.methods.values().map(|m| m.calls).sum::<u64>();
        failed_calls += d.total_errors();
        failed_open += d.tally.failed_open;
        if let Some(m) = d.tally.methods.get(crate::rpc::PRE_REQUEST) {
            p99_us = p99_us.max(m.latency_us.p99);
        }
    }
    let mut agent_seconds = 0.0;
    let mut ideal = 0.0;
    let mut under = 0.0;
    for w in run.samples.windows(2) {
        let dt = w[1].t - w[0].t;
        agent_seconds += f64::from(w[0].pods) * dt;
        ideal += f64::from(w[0].need) * dt;
        if w[0].ready < w[0].need {
            under += dt;
        }
    }
    let dirs: Vec<bool> = run.events.iter().map(|e| e.to > e.from).collect();
    let direction_changes = dirs.windows(2).filter(|w| w[0] != w[1]).count();
    let rises = rises(setup);
    let time_to_enough_s = rises
        .iter()
        .map(|&(end, worth)| {
            let want = need(worth);
            run.samples
                .iter()
                .find(|s| s.t >= end - 1e-9 && s.ready >= want)
                .map(|s| (s.t - end).max(0.0))
        })
        .collect();
    Figures {
        calls,
        failed_calls,
        uninspected: if calls == 0 {
            0.0
        } else {
            failed_calls as f64 / calls as f64
        },
        failed_open,
        pre_p99_ms: p99_us as f64 / 1e3,
        agent_seconds,
        ideal_agent_seconds: ideal,
        cost: if ideal > 0.0 {
            agent_seconds / ideal
        } else {
            0.0
        },
        direction_changes,
        load_changes: load_changes(setup),
        scale_events: run.events.len(),
        time_to_enough_s,
        under_provisioned_s: under,
        peak_pods: run.samples.iter().map(|s| s.pods).max().unwrap_or(0),
        demand_while_shedding: while_shedding(&run.demand),
    }
}

/// Directions (+1 rising, −1 falling) of the profile's segments, flat ones left out, with each
/// segment's end (seconds, agents' worth).
fn segments(setup: &Setup) -> Vec<(i8, f64, f64)> {
    let p = setup.profile.points();
    p.windows(2)
        .filter(|w| w[1].0 <= setup.duration.as_secs_f64())
        .filter_map(|w| {
            let d = w[1].1 - w[0].1;
            let worth = w[1].1 * setup.rpc_per_tx / setup.agent_rpc;
            (d.abs() > 1e-9).then_some((if d > 0.0 { 1 } else { -1 }, w[1].0, worth))
        })
        .collect()
}

/// How many times the load changed direction: runs of rising or falling segments.
fn load_changes(setup: &Setup) -> usize {
    let s = segments(setup);
    if s.is_empty() {
        return 0;
    }
    1 + s.windows(2).filter(|w| w[0].0 != w[1].0).count()
}

/// Each rising run's end: (seconds, agents' worth reached).
fn rises(setup: &Setup) -> Vec<(f64, f64)> {
    let s = segments(setup);
    let mut out = Vec::new();
    for (i, seg) in s.iter().enumerate() {
        let last_of_run = s.get(i + 1).is_none_or(|n| n.0 != seg.0);
        if seg.0 > 0 && last_of_run {
            out.push((seg.1, seg.2));
        }
    }
    out
}
