//! `sigsci-proxy check`: what is wrong with an install, asked of the cluster with the user's
//! kubeconfig, after an install or an upgrade or when a request went uninspected (after
//! `linkerd check`). Each check prints ✓ or ✗ with a one-line hint and a link into
//! docs/runbooks.md; the command exits non-zero when one fails. Read-only: it gets and lists
//! objects and reads each proxy's admin port through the API server's pod proxy; Secret values
//! are never printed (key names only).
//!
//! The checks: [`install`] (namespace, objects, Secret keys, agent image, agents ready,
//! EndpointSlices, autoscaler, client namespaces), [`proxies`] (proxy pods ready, `/metrics`
//! reachable, the agents each proxy sees, the uninspected fraction over a window),
//! [`monitoring`] (a Prometheus that selects the PodMonitor and the PrometheusRule), and with
//! `--pre` [`pre`] (before installing: the API server reachable, the user allowed to create
//! what the overlays hold).

mod api;
mod install;
mod monitoring;
mod pre;
mod proxies;
mod report;

use std::path::PathBuf;
use std::time::Duration;

pub use proxies::UNINSPECTED_LIMIT;
pub use report::{Finding, Report, Status};

/// The options of `sigsci-proxy check`.
#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    /// The install's namespace.
    #[arg(long, short = 'n', default_value = "sigsci", value_name = "NAMESPACE")]
    pub namespace: String,
    /// The kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// `text` (✓/✗ lines) or `json`.
    #[arg(long, short = 'o', default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// How long to watch the proxies' counters for the uninspected fraction.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// Before installing: only whether the API server answers and the user may create what the
    /// overlays hold.
    #[arg(long)]
    pub pre: bool,
}

/// The names the manifests give the install's objects (manifests/base).
pub(crate) mod names {
    pub const AGENT: &str = "sigsci-agent";
    pub const PROXY: &str = "sigsci-proxy";
    pub const SECRET: &str = "sigsci-agent-credentials";
    pub const SECRET_KEYS: [&str; 2] = ["accesskeyid", "secretaccesskey"];
    pub const PROXY_SELECTOR: &str = "app.kubernetes.io/name=sigsci-proxy";
    pub const ADMIN_PORT: u16 = 9090;
    pub const CLIENT_LABEL: &str = "sigsci-proxy/client=true";
    /// The all-zero digest the repository ships until the real one is pinned.
    pub const PLACEHOLDER_DIGEST: &str =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000";
}

/// Every check against `client`, in the order they print.
pub async fn check(client: &kube::Client, args: &CheckArgs) -> Report {
    let ns = args.namespace.as_str();
    let mut report = Report::new(ns);
    if args.pre {
        pre::run(client, ns, &mut report).await;
        return report;
    }
    if !install::run(client, ns, &mut report).await {
        return report; // no namespace: nothing else can be there
    }
    proxies::run(client, ns, args.window, &mut report).await;
    monitoring::run(client, ns, &mut report).await;
    report
}

/// The kube client for the user's kubeconfig (or in-cluster configuration).
pub async fn client(args: &CheckArgs) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
