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
//! `restart-proxy` and `drain-proxy` act on proxy replica `proxy` (default 0).

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
    #[serde(default, with = "opt_duration")]
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
}

/// One timed change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Time after the drive starts.
    #[serde(with = "duration")]
    pub at: Duration,
    /// What to do.
    pub action: Action,
    /// Which agent (0-based) for agent actions.
    #[serde(default)]
    pub agent: usize,
    /// Which proxy replica (0-based) for `restart-proxy` and `drain-proxy`.
    #[serde(default)]
    pub proxy: usize,
    /// `pause`: how long the agent stays stopped.
    #[serde(default, with = "opt_duration")]
    pub duration: Option<Duration>,
    /// `slow`: the service time factor.
    pub factor: Option<f64>,
    /// `fault`: the `/fault` query, e.g. `delay=5ms` or `refuse=1`.
    pub query: Option<String>,
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
}

impl Action {
    /// Whether it acts on an agent (as opposed to a proxy replica).
    pub fn is_agent_action(self) -> bool {
        !matches!(self, Action::RestartProxy | Action::DrainProxy)
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
                Action::Pause if step.duration.is_none() => {
                    anyhow::bail!("{}: step {i}: pause needs duration", path.display())
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::units::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| crate::units::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
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
