//! Scenario files (`loadtest/scenarios/*.toml`): drive parameters, timed steps that change the
//! agent pool while load runs, and what the run must achieve to pass.
//!
//! ```toml
//! description = "An agent starts terminating mid-run; its pending updates must still reach it"
//! agents = 3
//! rate = 1000
//! duration = "10s"
//! attack_fraction = 0.2
//!
//! [expect]
//! max_errors = 0
//! max_orphaned = 0
//!
//! [[step]]
//! at = "3s"
//! action = "terminate"   # terminate | ready | remove | kill | slow | fault | pause
//! agent = 0              # index, 0-based       | restart-proxy | drain-proxy
//! ```
//!
//! `pause` stops the agent process (SIGSTOP) for `duration` (a scheduling hiccup);
//! `restart-proxy` and `drain-proxy` act on proxy replica `proxy` (default 0); on the netns bed
//! `drain-proxy`'s endpoint leaves the Service VIP `duration` after the SIGTERM (default at
//! once; a cluster's EndpointSlice controller and kube-proxy take about a second). `add` starts
//! `count` new agents and makes them members; `replace` does what a Deployment rollout does to
//! one pod (a new agent joins, the oldest member turns terminating, leaves 1 s later and stops);
//! `scale` sets the serving agents to `count` (surplus ones leave as in a rollout);
//! `stop-agent` stops a process gracefully (its counters are kept); `snapshot` reads every
//! agent's counters, the start of the window `window_min_fair`/`window_max_fair` judge;
//! `burst` drives `rate` more transactions per second for `duration` beside the main drive;
//! `bad-clients` runs `count` clients of each bad kind for `duration`; `conn-flood` holds
//! `count` idle connections for `duration`. `every = "10s"` repeats a step until the drive
//! ends. `[ramp]` replaces the drive by rising rates until the first failed call. On the netns
//! bed (`--bed netns`) a host can vanish: `cut-agent`/`heal-agent` drop every packet of agent
//! `agent`'s host and let them through again; `cut-proxy` does it to proxy replica `proxy`'s
//! host while the Service VIP still lists it, `unlist-proxy` takes it out of the VIP's set (its
//! node declared NotReady), `heal-proxy` brings it back.

pub mod autoscale;
mod durations;

use std::time::Duration;

use serde::Deserialize;

/// A parsed scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Number of agents.
    pub agents: Option<usize>,
    /// Transactions per second.
    pub rate: Option<f64>,
    /// Drive duration (`10s`).
    #[serde(default, with = "durations::optional")]
    pub duration: Option<Duration>,
    /// Fraction of attack (flagged) transactions.
    pub attack_fraction: Option<f64>,
    /// Fraction of anomalous responses (→ PostRequest).
    pub anomalous_fraction: Option<f64>,
    /// Proxy replicas; with two or more, each UpdateRequest goes to the replica after the one
    /// that took its PreRequest.
    pub proxies: Option<usize>,
    /// Simulated app time between PreRequest and UpdateRequest (`exp:2ms`, `300ms`).
    pub app_time: Option<String>,
    /// Extra proxy arguments, before any `--proxy-arg` (e.g. `["--drain-delay", "1s"]`).
    #[serde(default)]
    pub proxy_args: Vec<String>,
    /// Pass criteria.
    #[serde(default)]
    pub expect: Expect,
    /// Timed steps.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    /// Rising rates instead of one drive.
    pub ramp: Option<Ramp>,
    /// A closed autoscaling loop instead of one drive (see [`crate::autoscale`]).
    #[serde(default)]
    pub autoscale: Option<autoscale::AutoscaleSpec>,
    /// The agents' CPU shape, `fifo` or `ps` (`--agent-shape` overrides it).
    pub agent_shape: Option<String>,
    /// Each agent's workers (agent i takes entry i modulo the length), e.g. `[1, 2]`: agents of
    /// unequal capacity; `--workers` otherwise.
    #[serde(default)]
    pub agent_workers: Vec<usize>,
    /// Each agent's service time the same way, e.g. `["10ms", "5ms"]`; `--service-time`
    /// otherwise.
    #[serde(default)]
    pub agent_service_time: Vec<String>,
    /// With two or more proxy replicas: the share of transactions each replica takes, e.g.
    /// `[3, 1]` (75/25); a transaction's UpdateRequest or PostRequest goes to the next replica,
    /// so affinity across replicas is still exercised. Without it PreRequests go to replica 0
    /// and updates to replica 1.
    #[serde(default)]
    pub proxy_weights: Vec<u32>,
    /// Module sources with rates of their own (a noisy neighbour), instead of one drive at
    /// `rate`: on loopback each from its own source address, on the netns bed each from a
    /// module host of its own.
    #[serde(default, rename = "flow")]
    pub flows: Vec<Flow>,
}

/// `[[flow]]`: one module source (one app pod: the proxy's flow key is the connection's source
/// address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Transactions per second.
    pub rate: f64,
    /// Source address on loopback (default `127.0.0.{2 + index}`).
    pub source: Option<std::net::IpAddr>,
    /// Least fraction of this flow's calls inspected (answered without error).
    pub min_inspected: Option<f64>,
}

/// `[[expect.inspected_window]]`: from `from` to `to` (default the drive's end), every whole
/// second's calls (those that ended in it) are at least `min_fraction` inspected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectedWindow {
    /// Window start, from the drive's start.
    #[serde(with = "durations::required")]
    pub from: Duration,
    /// Window end (default the drive's end).
    #[serde(default, with = "durations::optional")]
    pub to: Option<Duration>,
    /// Least fraction of the calls of each second inspected.
    pub min_fraction: f64,
}

/// `[ramp]`: drives of `step_duration` each, from `start` tx/s, each `factor` times the last,
/// until a call fails or the rate passes `max_rate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// First rate, transactions per second.
    pub start: f64,
    /// Each next rate is this times the last (> 1).
    pub factor: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// Length of each rate's drive.
    #[serde(with = "durations::required")]
    pub step_duration: Duration,
}

/// Pass criteria; unset ones use the orchestrator's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Most failed calls allowed.
    pub max_errors: Option<u64>,
    /// Most orphaned + expired updates allowed.
    pub max_orphaned: Option<u64>,
    /// Refused connections (nothing listening: a proxy restarting or gone) are reported but
    /// not counted toward `max_errors`.
    #[serde(default)]
    pub allow_refused: bool,
    /// Least PreRequest share of every agent no step touches (0..=1).
    pub min_share: Option<f64>,
    /// Most PreRequest share of every agent no step touches (0..=1).
    pub max_share: Option<f64>,
    /// Most PreRequest share of an agent a step touches (e.g. the slow one).
    pub changed_max_share: Option<f64>,
    /// Most transactions whose PreRequest failed (the module let them through uninspected).
    pub max_failed_open: Option<u64>,
    /// Most failed-open transactions as a fraction of all.
    pub max_failed_open_fraction: Option<f64>,
    /// Most failed calls as a fraction of all calls; replaces the default `max_errors = 0`.
    pub max_error_fraction: Option<f64>,
    /// From the last `snapshot` step to the end, every member agent gets at least this times
    /// its fair share (1 / members) of PreRequests.
    pub window_min_fair: Option<f64>,
    /// … and at most this times its fair share.
    pub window_max_fair: Option<f64>,
    /// Time after which the proxies' RSS and fds are sampled for growth (default a quarter of
    /// the drive).
    #[serde(default, with = "durations::optional")]
    pub warmup: Option<Duration>,
    /// Most RSS growth, KiB, of a proxy process that lived through the whole drive: median of
    /// the last quarter's samples minus the median of the quarter after warm-up.
    pub max_rss_growth_kib: Option<u64>,
    /// Most growth of its open file descriptors, the same way.
    pub max_fd_growth: Option<u64>,
    /// Least inspected (answered) calls per second as a fraction of the pool's capacity.
    pub min_capacity_fraction: Option<f64>,
    /// Most p99 latency, ms, of calls not inspected (an error frame, a reset, a timeout).
    pub max_uninspected_p99_ms: Option<f64>,
    /// Most p99 latency, ms, of inspected (answered) PreRequests.
    pub max_inspected_pre_p99_ms: Option<f64>,
    /// Windows in which every second's calls must be inspected to a fraction.
    #[serde(default)]
    pub inspected_window: Vec<InspectedWindow>,
    /// Each agent's share of the calls the agents answered, from `capacity_share_from` to the
    /// end, is within this relative distance of its share of the pool's capacity then (its
    /// workers / service time, `slow` steps before `capacity_share_from` applied): 0.2 = ±20 %.
    pub capacity_share_tolerance: Option<f64>,
    /// Start of the `capacity_share_tolerance` window (default the drive's start).
    #[serde(default, with = "durations::optional")]
    pub capacity_share_from: Option<Duration>,
}

/// One timed change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Time after the drive starts.
    #[serde(with = "durations::required")]
    pub at: Duration,
    /// What to do.
    pub action: Action,
    /// Which agent (0-based) for agent actions.
    #[serde(default)]
    pub agent: usize,
    /// Which proxy replica (0-based) for `restart-proxy` and `drain-proxy`.
    #[serde(default)]
    pub proxy: usize,
    /// `pause`: how long the agent stays stopped; `drain-proxy`: how long its endpoint stays in
    /// the Service VIP after the SIGTERM (netns bed; default 0).
    #[serde(default, with = "durations::optional")]
    pub duration: Option<Duration>,
    /// `slow`: the service time factor; `burst`: the extra rate as a multiple of the drive's.
    pub factor: Option<f64>,
    /// `fault`: the `/fault` query, e.g. `delay=5ms` or `refuse=1`; `bad-clients`: the kinds,
    /// comma-separated, of `invalid`, `slow`, `never-read` (default all).
    pub query: Option<String>,
    /// `add`: agents to start; `scale`: agents to end with; `bad-clients`: clients of each
    /// kind; `conn-flood`: connections.
    pub count: Option<usize>,
    /// `burst`: extra transactions per second.
    pub rate: Option<f64>,
    /// Repeat the step at this period until the drive ends.
    #[serde(default, with = "durations::optional")]
    pub every: Option<Duration>,
}

/// Step actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Mark the agent `terminating` in the agents file (no new work; pending updates still go).
    Terminate,
    /// Mark the agent `ready` again.
    Ready,
    /// Remove the agent from the agents file.
    Remove,
    /// SIGKILL the agent process.
    Kill,
    /// Multiply its service time by `factor`.
    Slow,
    /// Apply a `/fault` query.
    Fault,
    /// SIGSTOP the agent for `duration`, then SIGCONT: one scheduling hiccup.
    Pause,
    /// SIGTERM proxy replica `proxy`, wait for its exit, start it again on the same ports.
    RestartProxy,
    /// SIGTERM proxy replica `proxy` and time the drain: `/readyz` polled every 10 ms until it
    /// turns 503, then the exit status and time.
    DrainProxy,
    /// Start `count` (default 1) new agents and add them to the agents file as ready.
    Add,
    /// Set the serving agents to `count`, as `kubectl scale` does: more are started and added
    /// (as `add`); the newest surplus ones turn terminating, leave 1 s later and stop. In a
    /// cluster: the agent Deployment's scale subresource set to `count`.
    Scale,
    /// A rollout of one pod: a new agent joins, the oldest ready one turns terminating, is
    /// removed 1 s later and stopped.
    Replace,
    /// Stop agent `agent` gracefully (`POST /shutdown`), keeping its last counters.
    StopAgent,
    /// Read every agent's counters: the start of the `window_*_fair` window.
    Snapshot,
    /// Drive `rate` (or `factor` times the drive's rate) more transactions per second for
    /// `duration`, beside the main drive.
    Burst,
    /// `count` clients of each bad kind (invalid frames, slow writers, never-readers) against the
    /// front for `duration`.
    BadClients,
    /// `count` idle connections to the front, held for `duration`.
    ConnFlood,
    /// The agent's host vanishes: every packet to or from it dropped, no reset, no ICMP (node
    /// loss, a partition). Needs the netns bed.
    CutAgent,
    /// The agent's host is reachable again.
    HealAgent,
    /// Proxy replica `proxy`'s host vanishes while the Service VIP still lists it (kube-proxy
    /// keeps a lost node's endpoints until the node is declared NotReady). Needs the netns bed.
    CutProxy,
    /// The VIP stops sending new connections to proxy replica `proxy` (its node declared
    /// NotReady, its endpoint removed).
    UnlistProxy,
    /// Proxy replica `proxy`'s host is reachable again and back in the VIP's set.
    HealProxy,
}

impl Action {
    /// Whether it acts on one agent named by `agent`.
    pub fn is_agent_action(self) -> bool {
        matches!(
            self,
            Action::Terminate
                | Action::Ready
                | Action::Remove
                | Action::Kill
                | Action::Slow
                | Action::Fault
                | Action::Pause
                | Action::StopAgent
                | Action::CutAgent
                | Action::HealAgent
        )
    }

    /// Whether it acts on a proxy replica named by `proxy`.
    pub fn is_proxy_action(self) -> bool {
        matches!(
            self,
            Action::RestartProxy
                | Action::DrainProxy
                | Action::CutProxy
                | Action::UnlistProxy
                | Action::HealProxy
        )
    }

    /// Whether it changes the agent for good (a pause is a transient: the agent stays equal).
    pub fn changes_agent(self) -> bool {
        self.is_agent_action() && self != Action::Pause
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (i, step) in s.steps.iter().enumerate() {
            match step.action {
                Action::Slow if step.factor.is_none() => {
                    anyhow::bail!("{}: step {i}: slow needs factor", path.display())
                }
                Action::Fault if step.query.is_none() => {
                    anyhow::bail!("{}: step {i}: fault needs query", path.display())
                }
                Action::Pause | Action::BadClients | Action::ConnFlood | Action::Burst
                    if step.duration.is_none() =>
                {
                    anyhow::bail!(
                        "{}: step {i}: {:?} needs duration",
                        path.display(),
                        step.action
                    )
                }
                Action::Burst
                    if step
                        .rate
                        .or(step.factor)
                        .is_none_or(|r| r.is_nan() || r <= 0.0) =>
                {
                    anyhow::bail!(
                        "{}: step {i}: burst needs a positive rate or factor",
                        path.display()
                    )
                }
                Action::BadClients | Action::ConnFlood | Action::Scale if step.count.is_none() => {
                    anyhow::bail!(
                        "{}: step {i}: {:?} needs count",
                        path.display(),
                        step.action
                    )
                }
                Action::BadClients
                    if step.query.as_deref().is_some_and(|q| {
                        q.split(',')
                            .any(|k| !k.is_empty() && !super::abuse::KINDS.contains(&k))
                    }) =>
                {
                    anyhow::bail!(
                        "{}: step {i}: bad-clients kinds are {:?}",
                        path.display(),
                        super::abuse::KINDS
                    )
                }
                _ => {}
            }
            if step.every.is_some_and(|e| e < Duration::from_millis(100)) {
                anyhow::bail!("{}: step {i}: every must be at least 100ms", path.display());
            }
        }
        s.check_capacity_and_flows()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some(r) = &s.ramp
            && (r.start.is_nan()
                || r.start <= 0.0
                || r.factor.is_nan()
                || r.factor <= 1.0
                || r.max_rate.is_nan()
                || r.max_rate < r.start)
        {
            anyhow::bail!(
                "{}: ramp needs start > 0, factor > 1, max_rate >= start",
                path.display()
            );
        }
        Ok(s)
    }

    /// The agents' shape and capacities, the proxies' weights and the flows make sense.
    fn check_capacity_and_flows(&self) -> Result<(), String> {
        if let Some(shape) = &self.agent_shape {
            shape.parse::<crate::agent::Shape>()?;
        }
        if self.agent_workers.contains(&0) {
            return Err("agent_workers must be at least 1 each".into());
        }
        for t in &self.agent_service_time {
            t.parse::<crate::units::ServiceTime>()
                .map_err(|e| format!("agent_service_time: {e}"))?;
        }
        if self.proxy_weights.contains(&0) {
            return Err("proxy_weights must be at least 1 each".into());
        }
        if !self.proxy_weights.is_empty()
            && self.proxies.is_some_and(|n| n != self.proxy_weights.len())
        {
            return Err("proxy_weights needs one weight per proxy replica".into());
        }
        if self
            .flows
            .iter()
            .any(|f| !(f.rate.is_finite() && f.rate > 0.0))
        {
            return Err("every [[flow]] needs a positive rate".into());
        }
        if !self.flows.is_empty() && (self.ramp.is_some() || self.autoscale.is_some()) {
            return Err("[[flow]] drives replace rate; not with [ramp] or [autoscale]".into());
        }
        Ok(())
    }

    /// The steps with every `every` expanded into one step per period before `end`, by time.
    pub fn expanded_steps(&self, end: Duration) -> Vec<Step> {
        let mut out = Vec::new();
        for s in &self.steps {
            let mut at = s.at;
            loop {
                out.push(Step { at, ..s.clone() });
                match s.every {
                    Some(e) if at + e < end => at += e,
                    _ => break,
                }
            }
        }
        out.sort_by_key(|s| s.at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
