//! The options `loadtest local` and `loadtest cluster` share: the scenario, the traffic, and the
//! bounds the run is judged by. Written once so that the two modes read a scenario alike: a
//! flag overrides the scenario file, which overrides the default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::drive::DriveArgs;
use crate::scenario::Scenario;
use crate::units::{ServiceTime, parse_duration};

/// Scenario, traffic and bounds (flattened into `local` and `cluster`).
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Scenario file (TOML, see loadtest/scenarios/).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Transactions (PreRequests) per second [default: 1000, or the scenario's].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Drive duration [default: 10s, or the scenario's].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Simulated app time between PreRequest and UpdateRequest [default: exp:2ms, or the
    /// scenario's].
    #[arg(long)]
    pub app_time: Option<ServiceTime>,
    /// Fraction of attack transactions (flagged by the agents) [default: 0.2, or the
    /// scenario's].
    #[arg(long)]
    pub attack_fraction: Option<f64>,
    /// Fraction of anomalous responses (→ PostRequest) [default: 0, or the scenario's].
    #[arg(long)]
    pub anomalous_fraction: Option<f64>,
    /// Most failed calls allowed [default: 0, or the scenario's].
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// Most orphaned + expired updates allowed [default: 0 (unlimited via haproxy), or the
    /// scenario's].
    #[arg(long)]
    pub max_orphaned: Option<u64>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The traffic of one run: the scenario file with the command line applied.
#[derive(Debug, Clone)]
pub(crate) struct Traffic {
    pub scenario: Scenario,
    pub duration: Duration,
    pub rate: f64,
    pub app_time: ServiceTime,
    pub attack_fraction: f64,
    pub anomalous_fraction: f64,
}

impl RunArgs {
    /// Loads the scenario (an empty one without `--scenario`) and applies the flags to it.
    pub(crate) fn traffic(&self) -> anyhow::Result<Traffic> {
        let scenario = match &self.scenario {
            Some(p) => Scenario::load(p)?,
            None => Scenario::default(),
        };
        let app_time = match (&self.app_time, &scenario.app_time) {
            (Some(t), _) => *t,
            (None, Some(t)) => t.parse().map_err(|e| anyhow::anyhow!("app_time: {e}"))?,
            (None, None) => DriveArgs::default().app_time,
        };
        Ok(Traffic {
            duration: self
                .duration
                .or(scenario.duration)
                .unwrap_or(Duration::from_secs(10)),
            rate: self.rate.or(scenario.rate).unwrap_or(1000.0),
            app_time,
            attack_fraction: self
                .attack_fraction
                .or(scenario.attack_fraction)
                .unwrap_or(0.2),
            anomalous_fraction: self
                .anomalous_fraction
                .or(scenario.anomalous_fraction)
                .unwrap_or(0.0),
            scenario,
        })
    }

    /// The scenario file's name for the report.
    pub(crate) fn scenario_name(&self) -> Option<String> {
        self.scenario.as_ref().map(|p| p.display().to_string())
    }
}
