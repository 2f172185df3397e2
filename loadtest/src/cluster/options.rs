//! `loadtest cluster`'s options: where the system runs (namespace, Deployment, selectors,
//! admin ports, API server), the drive, and the bounds, apart from the run itself.

use std::time::Duration;

use clap::Args;

use crate::addr::RpcAddr;
use crate::run_args::RunArgs;
use crate::units::parse_duration;

/// `loadtest cluster` options.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Scenario, traffic and bounds, as in `loadtest local`; scenario steps with no cluster
    /// equivalent are rejected before anything changes.
    #[command(flatten)]
    pub run: RunArgs,
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
    /// Whole-call deadline, as in the modules.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most time for pods to become ready after a scale.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Leave the agent Deployment at the scale the run ended with (default: restore it).
    #[arg(long)]
    pub keep_scale: bool,
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
