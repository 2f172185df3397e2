//! `loadtest local`'s options: what sits in front of the agents ([`Via`]) and every flag
//! ([`LocalArgs`]), apart from the orchestration so that `run` reads as the timeline it is.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::processes;
use crate::run_args::RunArgs;
use crate::units::{ServiceTime, parse_duration};

/// What sits between the emulated modules and the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The real sigsci-proxy (default).
    Proxy,
    /// HAProxy, `mode tcp`, `balance roundrobin`.
    Haproxy,
    /// Nothing: straight to the first agent.
    Direct,
}

/// Where the processes of a run live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BedKind {
    /// Every process on this host's loopback interface.
    Loopback,
    /// Every agent, proxy replica and the module emulator on a host of its own: network
    /// namespaces on a bridge, the proxies behind a Service VIP as kube-proxy's nftables mode
    /// makes it ([`crate::netbed`]). Needs root, iproute2 and nftables.
    Netns,
}

/// `loadtest local` options.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Scenario, traffic and bounds, shared with `loadtest cluster`.
    #[command(flatten)]
    pub run: RunArgs,
    /// Number of simulated agents [default: 2, or the scenario's].
    #[arg(long)]
    pub agents: Option<usize>,
    /// Proxy replicas [default: 1, or the scenario's]. With 2 or more, PreRequests go to the
    /// first and UpdateRequests/PostRequests to the second (affinity across replicas).
    #[arg(long)]
    pub proxies: Option<usize>,
    /// Closed loop with this many emulated modules instead of `--rate` (max throughput); with
    /// `--compare`, the workers of the maximum-rate runs [default there: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// What to put in front of the agents.
    #[arg(long, value_enum, default_value = "proxy")]
    pub via: Via,
    /// Same as `--via direct`.
    #[arg(long, conflicts_with = "via")]
    pub direct: bool,
    /// The sigsci-proxy binary [default: next to this executable].
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// Extra argument for the proxy (repeatable), e.g. `--proxy-arg=--upstream-mode=per-call`.
    #[arg(long = "proxy-arg", allow_hyphen_values = true)]
    pub proxy_args: Vec<String>,
    /// The haproxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Agents' service time; a scenario's `agent_service_time` list takes precedence.
    #[arg(long, default_value = "200us")]
    pub service_time: ServiceTime,
    /// Agents' worker slots (or processors, `--agent-shape ps`); a scenario's `agent_workers`
    /// list takes precedence.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Agents' CPU shape: `fifo` (worker slots, a queue in front) or `ps` (processor sharing)
    /// [default: the scenario's `agent_shape`, else fifo].
    #[arg(long)]
    pub agent_shape: Option<crate::agent::Shape>,
    /// Agents' flag fraction (allowed requests that still get a RequestID).
    #[arg(long, default_value_t = 0.0)]
    pub flag_fraction: f64,
    /// Extra argument for every agent (repeatable).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Pipeline over persistent connections instead of a connection per call.
    #[arg(long)]
    pub persistent: bool,
    /// Local source addresses for the emulated modules (comma-separated). Not on the netns bed,
    /// where the module connects as a real one does (an ephemeral port).
    #[arg(long, value_delimiter = ',', conflicts_with = "bed")]
    pub sources: Vec<std::net::IpAddr>,
    /// Where the processes live: `loopback`, or `netns` (a host each, through a Service VIP).
    #[arg(long, value_enum, default_value = "loopback")]
    pub bed: BedKind,
    /// On the netns bed, where the proxies run: `deployment` (hosts of their own behind the
    /// VIP), `node-local` (each on its app node, the VIP sending a node's connections to its
    /// own proxy), `node-local-socket` (the module calls its node's proxy over a Unix socket).
    #[arg(long, value_enum, default_value = "deployment")]
    pub topology: crate::netbed::Topology,
    /// The netns bed, made by the binary before its runtime started (see [`crate::netbed`]).
    #[arg(skip)]
    pub netbed: Option<std::sync::Arc<crate::netbed::Bed>>,
    /// Also plot the PreRequest latency and the errors over time, with the steps' marks, as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Measure the proxy's overhead: a paired open-loop run alternating transactions between
    /// agent 0 (direct) and the proxy, then each path's maximum rate in closed loop
    /// (`--concurrency`, default 16), and the proxy's upstream connects per second. Defaults
    /// here: `--agents 1 --rate 2000 --duration 10s`.
    #[arg(long, conflicts_with_all = ["scenario", "direct", "via", "proxies", "plot", "bed"])]
    pub compare: bool,
    /// With `--compare`: length of each closed-loop (maximum rate) run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub max_rate_duration: Duration,
    /// With `--compare`: transactions per block on one path (see `drive --compare-block`).
    /// 1 pairs single transactions, each path at half `--rate`; e.g. 1000 at 2000 tx/s runs
    /// each path at the full rate in half-second blocks, the proxy idle during the direct ones.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub compare_block: u64,
}

impl LocalArgs {
    pub(crate) fn via(&self) -> Via {
        if self.direct { Via::Direct } else { self.via }
    }

    /// Arguments for every `loadtest agent` child.
    pub(crate) fn agent_process_args(&self) -> Vec<String> {
        let mut a = vec![
            "--service-time".to_string(),
            self.service_time.to_string().replace("µs", "us"),
            "--workers".into(),
            self.workers.to_string(),
            "--flag-fraction".into(),
            self.flag_fraction.to_string(),
        ];
        if let Some(shape) = self.agent_shape {
            a.extend(["--shape".into(), shape.to_string()]);
        }
        a.extend(self.agent_args.iter().cloned());
        a
    }

    /// The sigsci-proxy binary: `--proxy-bin`, else next to `exe`.
    pub(crate) fn proxy_bin(&self, exe: &std::path::Path) -> anyhow::Result<PathBuf> {
        match &self.proxy_bin {
            Some(b) => Ok(b.clone()),
            None => processes::find_proxy_bin(exe),
        }
    }
}
