//! `loadtest cluster`'s options: where the system runs (namespace, Deployment, selectors,
//! admin ports, API server), the drive, and the bounds, apart from the run itself.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::addr::RpcAddr;
use crate::units::{ServiceTime, parse_duration};

/// `loadtest cluster` options.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Scenario file (TOML, see loadtest/scenarios/); steps with no cluster equivalent are
    /// rejected before anything changes.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Namespace of the agents and proxies.
    #[arg(long, default_value = "sigsci")]
    pub namespace: String,
    /// Where the emulated modules send their RPCs: the proxy Service [default:
    /// sigsci-proxy.NAMESPACE.svc:9999].
    #[arg(long)]
    pub target: Option<RpcAddr>,
    /// The agent Deployment (scaled through its scale subresource).
    #[arg(long, default_value = "sigsci-agent")]
    pub agent_deployment: String,
    /// Label selector of the agent pods.
    #[arg(long, default_value = "app.kubernetes.io/name=sigsci-agent")]
    pub agent_selector: String,
    /// Label selector of the proxy pods.
    #[arg(long, default_value = "app.kubernetes.io/name=sigsci-proxy")]
    pub proxy_selector: String,
    /// The agents' admin port (the simulator's `/stats`).
    #[arg(long, default_value_t = 9090)]
    pub agent_admin_port: u16,
    /// The proxies' admin port (`/metrics`).
    #[arg(long, default_value_t = 9090)]
    pub proxy_admin_port: u16,
    /// API server URL (e.g. `http://127.0.0.1:8001` under `kubectl proxy`) [default: the
    /// in-cluster ServiceAccount, else the kubeconfig].
    #[arg(long)]
    pub api_server: Option<String>,
    /// Agents to scale to before the drive [default: the scenario's, else as deployed].
    #[arg(long)]
    pub agents: Option<usize>,
    /// Transactions (PreRequests) per second [default: 1000, or the scenario's].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Drive duration [default: 10s, or the scenario's].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Fraction of attack transactions [default: 0.2, or the scenario's].
    #[arg(long)]
    pub attack_fraction: Option<f64>,
    /// Fraction of anomalous responses (→ PostRequest) [default: 0, or the scenario's].
    #[arg(long)]
    pub anomalous_fraction: Option<f64>,
    /// App time between PreRequest and UpdateRequest [default: exp:2ms, or the scenario's].
    #[arg(long)]
    pub app_time: Option<ServiceTime>,
    /// Whole-call deadline, as in the modules.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most time for pods to become ready after a scale.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Leave the agent Deployment at the scale the run ended with (default: restore it).
    #[arg(long)]
    pub keep_scale: bool,
    /// Most failed calls allowed [default: 0, or the scenario's].
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// Most orphaned + expired updates allowed [default: 0, or the scenario's].
    #[arg(long)]
    pub max_orphaned: Option<u64>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl ClusterArgs {
    /// Defaults for everything, in `namespace` (what `loadtest cluster` alone means).
    pub fn new(namespace: &str) -> ClusterArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            c: ClusterArgs,
        }
        P::parse_from(["cluster", "--namespace", namespace]).c
    }
}
