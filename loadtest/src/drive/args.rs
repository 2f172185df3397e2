//! `loadtest drive`'s options, which are also the drive configuration every orchestrator
//! (`local`, `cluster`, `bench`, autoscale) fills in.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::path::{FlowArgs, Split};
use super::profile;
use crate::addr::RpcAddr;
use crate::units::parse_duration;

/// `loadtest drive` options (also the drive configuration used by the orchestrator).
#[derive(Debug, Clone, Args)]
pub struct DriveArgs {
    /// Where PreRequests go: host:port, unix:/path or /path.
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub target: RpcAddr,
    /// Where UpdateRequests (and PostRequests) go, if not `--target` (path A only with
    /// `--compare-target`).
    #[arg(long)]
    pub update_target: Option<RpcAddr>,
    /// Paired comparison: alternate whole transactions between `--target` (path A) and this
    /// address (path B, all calls), and report each path and the difference B − A.
    #[arg(long)]
    pub compare_target: Option<RpcAddr>,
    /// With `--compare-target`: consecutive transactions per block on one path. 1 pairs single
    /// transactions (both paths at half of `--rate`, the same noise at the same moment); N > 1
    /// runs each path at the full `--rate` in blocks of N, the next block on the other path (a
    /// path's process idles during the other's blocks).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub compare_block: u64,
    /// Transactions (PreRequests) per second, open loop.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to schedule transactions.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Closed loop with this many workers instead of a target rate.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: most transactions in flight; further scheduled ones are counted as overflow.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Whole-call deadline (dial + write + read), as in the modules.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Fraction of transactions whose URI carries `<script>` (the simulator blocks and flags
    /// them, so they are followed by an UpdateRequest).
    #[arg(long, default_value_t = 0.0)]
    pub attack_fraction: f64,
    /// Fraction of unflagged transactions whose response is anomalous (→ PostRequest).
    #[arg(long, default_value_t = 0.0)]
    pub anomalous_fraction: f64,
    /// Time the simulated app takes between PreRequest and UpdateRequest/PostRequest: fixed
    /// (`5ms`) or exponential with that mean (`exp:2ms`); `0` sends the update at once. Other
    /// modules' calls interleave meanwhile, as in production.
    #[arg(long, default_value = "exp:2ms")]
    pub app_time: crate::units::ServiceTime,
    /// Pipeline calls over a few persistent connections instead of a connection per call.
    #[arg(long)]
    pub persistent: bool,
    /// Persistent connections per target with `--persistent`.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Request headers per request.
    #[arg(long, default_value_t = 12)]
    pub headers: usize,
    /// URI length in bytes.
    #[arg(long, default_value_t = 80)]
    pub uri_len: usize,
    /// Request body size in bytes (0 = GET).
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,
    /// Local source addresses to bind, round-robin (emulates several app pods), e.g.
    /// `127.0.0.1,127.0.0.2`.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Agents' admin addresses; their /stats are read before and after to report matched,
    /// orphaned and expired updates and each agent's PreRequest share.
    #[arg(long, value_delimiter = ',')]
    pub agents_admin: Vec<SocketAddr>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Open loop at a rate that moves over time instead of `rate` (autoscaling scenarios).
    #[arg(skip)]
    pub profile: Option<Arc<profile::RateProfile>>,
    /// Module sources with rates of their own instead of `rate` (a noisy neighbour): one
    /// timetable each, and each flow's calls reported apart.
    #[arg(skip)]
    pub flows: Vec<FlowArgs>,
    /// Calls split between proxy replicas by weight instead of `target` / `update_target`.
    #[arg(skip)]
    pub split: Option<Split>,
}

impl Default for DriveArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            d: DriveArgs,
        }
        P::parse_from(["drive"]).d
    }
}

impl DriveArgs {
    /// Where UpdateRequests and PostRequests go: `update_target`, else `target`.
    pub fn update_target(&self) -> &RpcAddr {
        self.update_target.as_ref().unwrap_or(&self.target)
    }

    /// Every problem with these options, named by flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut e = Vec::new();
        if self.concurrency.is_none() && !(self.rate.is_finite() && self.rate > 0.0) {
            e.push(format!("--rate {} must be positive", self.rate));
        }
        if self.concurrency == Some(0) {
            e.push("--concurrency must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            e.push("--max-in-flight must be at least 1".into());
        }
        for (name, f) in [
            ("--attack-fraction", self.attack_fraction),
            ("--anomalous-fraction", self.anomalous_fraction),
        ] {
            if !(0.0..=1.0).contains(&f) {
                e.push(format!("{name} {f} is not within 0..=1"));
            }
        }
        if self.timeout.is_zero() {
            e.push("--timeout must be positive".into());
        }
        if self.persistent && self.connections == 0 {
            e.push("--connections must be at least 1".into());
        }
        if (!self.flows.is_empty() || self.split.is_some())
            && (self.compare_target.is_some() || self.concurrency.is_some())
        {
            e.push("flows and split calls are open loop without --compare-target".into());
        }
        if let Some(s) = &self.split
            && (s.targets.len() != s.weights.len() || s.weights.contains(&0))
        {
            e.push("a split needs one weight of at least 1 per target".into());
        }
        if e.is_empty() { Ok(()) } else { Err(e) }
    }
}
