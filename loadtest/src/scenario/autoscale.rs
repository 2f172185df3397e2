//! A scenario's `[autoscale]` table: the moving load, the simulated agents and the policies
//! `loadtest local` runs it under (see `crate::autoscale`, which plays it).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the agents are sized in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The manifest's HPA as shipped: agent demand from the proxies, and agent CPU.
    Demand,
    /// The manifest's HPA with its CPU metric only.
    Cpu,
    /// No autoscaler: as many agents as the peak needs, the whole time.
    Fixed,
}

/// A scenario's `[autoscale]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSpec {
    /// The HPA manifest (default `manifests/components/hpa/hpa.yaml`, found from the working
    /// directory or above the scenario file).
    #[serde(default)]
    pub hpa: Option<PathBuf>,
    /// Every window's factor (1 = real time).
    pub time_scale: f64,
    /// The HPA's sync period before scaling (default 15 s).
    #[serde(default, with = "super::durations::optional")]
    pub sync_period: Option<Duration>,
    /// From an agent's start until it serves, before scaling (default 20 s).
    #[serde(default, with = "super::durations::optional")]
    pub startup_delay: Option<Duration>,
    /// RPC/s one agent should carry: the proxies' `--hints-target-rpc`, and one agent's worth
    /// of load.
    pub agent_rpc: f64,
    /// The simulated agents' service time per RPC.
    pub service_time: String,
    /// The simulated agents' worker slots.
    pub workers: usize,
    /// `[time, agents' worth]` points of the load, linear in between.
    pub load: Vec<(String, f64)>,
    /// Each proxy replica's share of the load (default equal).
    #[serde(default)]
    pub shares: Option<Vec<f64>>,
    /// The policies, in order (default all three).
    #[serde(default)]
    pub policies: Option<Vec<Policy>>,
    /// Most failed calls as a fraction of all, for the first policy: the exit status.
    pub max_uninspected: Option<f64>,
    /// Lowest 10th percentile of the summed demand ÷ offered agents' worth over the intervals
    /// in which calls were shed, for the first policy: the exit status (a run without shed
    /// calls meets it).
    #[serde(default)]
    pub min_demand_while_shedding: Option<f64>,
}
