//! Configuration: command-line flags, `SIGSCI_PROXY_*` environment variables and an optional TOML
//! file (`--config`), in that order of precedence, resolved into one [`Config`] and validated
//! up front so a bad deployment fails at start-up with every problem named.

mod options;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_pool::source::kubernetes::ServiceRef;
use agent_pool::{HostPort, PoolConfig};

pub use options::{Cli, Command, Options};
pub use values::{Dur, LogFormat, Mode, UpstreamMode};

/// Where the proxy accepts module connections: `ip:port` (`0` picks a free port) or
/// `unix:/path`. The same type as the agents' addresses, so both parse alike.
pub use agent_pool::Address as ListenAddr;

use options::merge;

/// One problem found in the configuration, naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The option's flag name, without dashes (`rpc-timeout`).
    pub option: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}: {}", self.option, self.message)
    }
}

/// The membership source chosen by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// `--agents`: a fixed list of `host:port`.
    Static(Vec<String>),
    /// `--agents-file`: a watched JSON/TOML file.
    File(PathBuf),
    /// `--agents-dns`: a name resolved periodically.
    Dns {
        /// The DNS name.
        name: String,
        /// The agents' RPC port.
        port: u16,
    },
    /// `--agents-k8s`: EndpointSlices of a Service.
    Kubernetes {
        /// Namespace of the Service.
        namespace: String,
        /// Service name.
        service: String,
        /// Named port of the Service, if given.
        port_name: Option<String>,
    },
}

/// The resolved configuration of one proxy (defaults applied). See [`Options`] for each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// RPC listeners.
    pub listen: Vec<ListenAddr>,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// Control socket; `None`: [`Config::default_control_socket`] of the bound admin port.
    pub control_socket: Option<PathBuf>,
    /// Permissions of Unix RPC listeners.
    pub unix_socket_mode: u32,
    /// Accept backlog.
    pub backlog: u32,
    /// SO_REUSEPORT on TCP listeners.
    pub reuse_port: bool,
    /// Maximum open downstream connections.
    pub max_connections: usize,
    /// Maximum RPCs in flight per downstream connection.
    pub max_in_flight_per_connection: usize,
    /// Idle downstream connection timeout.
    pub idle_timeout: Duration,
    /// Time allowed for one frame to arrive once its first byte has.
    pub frame_read_timeout: Duration,
    /// Largest frame in bytes.
    pub max_frame_bytes: usize,
    /// Proxy-wide budget of bytes in partly received frames.
    pub max_partial_bytes: usize,
    /// Proxy-wide RPCs in flight.
    pub max_in_flight: usize,
    /// Proxy-wide request bytes in flight.
    pub max_in_flight_bytes: usize,
    /// Time to write one answer to a module.
    pub write_timeout: Duration,
    /// Static agents (`--agents`).
    pub agents: Vec<String>,
    /// Agents file (`--agents-file`).
    pub agents_file: Option<PathBuf>,
    /// Agents file poll period.
    pub agents_file_poll: Duration,
    /// DNS source (`--agents-dns`), unparsed.
    pub agents_dns: Option<String>,
    /// DNS re-resolution period.
    pub agents_dns_interval: Duration,
    /// Kubernetes source (`--agents-k8s`), unparsed.
    pub agents_k8s: Option<String>,
    /// Upstream mode.
    pub upstream_mode: UpstreamMode,
    /// Persistent connections per agent.
    pub upstream_connections: usize,
    /// Agent connect timeout.
    pub connect_timeout: Duration,
    /// Per-RPC deadline.
    pub rpc_timeout: Duration,
    /// Retry budget ratio.
    pub retry_budget: f64,
    /// Consecutive failures before ejection.
    pub eject_after: u32,
    /// Grace period of departed agents for affinity.
    pub gone_grace: Duration,
    /// Peak-EWMA latency time constant.
    pub latency_decay: Duration,
    /// Autoscaling hint: outstanding RPCs per agent.
    pub hints_target_outstanding: f64,
    /// Autoscaling hint: RPC/s per agent (0 = off).
    pub hints_target_rpc: f64,
    /// Autoscaling hint: lowest recommendation.
    pub hints_min_agents: u32,
    /// Autoscaling hint: highest recommendation.
    pub hints_max_agents: u32,
    /// Autoscaling hint: smoothing time constant.
    pub hints_smoothing: Duration,
    /// Drain delay.
    pub drain_delay: Duration,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Worker threads (0 = one per available CPU).
    pub worker_threads: usize,
    /// Busy-poll window after the last RPC (zero: never busy-poll).
    pub busy_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_options(Options::default())
    }
}

impl Config {
    /// Applies defaults to merged options.
    pub fn from_options(o: Options) -> Self {
        let d = |v: Option<Dur>, default: Duration| v.map_or(default, |d| d.0);
        // The pool's own defaults, so they are stated once (in agent-pool).
        let pool = PoolConfig::default();
        Self {
            listen: o
                .listen
                .unwrap_or_else(|| vec![ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 9999)))]),
            admin: o
                .admin
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
            control_socket: o.control_socket,
            unix_socket_mode: o
                .unix_socket_mode
                .map_or(crate::listener::DEFAULT_UNIX_MODE, |m| m.0),
            backlog: o.backlog.unwrap_or(4096),
            reuse_port: o.reuse_port.unwrap_or(false),
            max_connections: o.max_connections.unwrap_or(20_000),
            max_in_flight_per_connection: o.max_in_flight_per_connection.unwrap_or(64),
            idle_timeout: d(o.idle_timeout, Duration::from_secs(60)),
            frame_read_timeout: d(o.frame_read_timeout, Duration::from_secs(5)),
            max_frame_bytes: o.max_frame_bytes.unwrap_or(4 << 20),
            max_partial_bytes: o.max_partial_bytes.unwrap_or(64 << 20),
            max_in_flight: o.max_in_flight.unwrap_or(10_000),
            max_in_flight_bytes: o.max_in_flight_bytes.unwrap_or(64 << 20),
            write_timeout: d(o.write_timeout, Duration::from_secs(1)),
            agents: o.agents.unwrap_or_default(),
            agents_file: o.agents_file,
            agents_file_poll: d(o.agents_file_poll, Duration::from_millis(100)),
            agents_dns: o.agents_dns,
            agents_dns_interval: d(o.agents_dns_interval, Duration::from_secs(5)),
            agents_k8s: o.agents_k8s,
            upstream_mode: o.upstream_mode.unwrap_or(UpstreamMode::Mux),
            upstream_connections: o.upstream_connections.unwrap_or(2),
            connect_timeout: d(o.connect_timeout, Duration::from_millis(20)),
            rpc_timeout: d(o.rpc_timeout, Duration::from_millis(80)),
            retry_budget: o.retry_budget.unwrap_or(0.2),
            eject_after: o.eject_after.unwrap_or(5),
            gone_grace: d(o.gone_grace, Duration::from_secs(30)),
            latency_decay: d(o.latency_decay, pool.latency_decay),
            hints_target_outstanding: o
                .hints_target_outstanding
                .unwrap_or(pool.hints.target_outstanding_per_agent),
            hints_target_rpc: o
                .hints_target_rpc
                .unwrap_or(pool.hints.target_rpc_per_agent.unwrap_or(0.0)),
            hints_min_agents: o.hints_min_agents.unwrap_or(pool.hints.min_agents),
            hints_max_agents: o.hints_max_agents.unwrap_or(pool.hints.max_agents),
            hints_smoothing: d(o.hints_smoothing, pool.hints.smoothing),
            drain_delay: d(o.drain_delay, Duration::from_secs(5)),
            drain_timeout: d(o.drain_timeout, Duration::from_secs(25)),
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            worker_threads: o.worker_threads.unwrap_or(1),
            busy_poll: d(o.busy_poll, Duration::ZERO),
        }
    }

    /// The agent pool's configuration these options describe.
    pub fn pool_config(&self) -> PoolConfig {
        let mut pool = PoolConfig {
            gone_grace: self.gone_grace,
            latency_decay: self.latency_decay,
            ..PoolConfig::default()
        };
        pool.ejection.consecutive_failures = self.eject_after;
        pool.hints.target_outstanding_per_agent = self.hints_target_outstanding;
        pool.hints.target_rpc_per_agent =
            (self.hints_target_rpc > 0.0).then_some(self.hints_target_rpc);
        pool.hints.min_agents = self.hints_min_agents;
        pool.hints.max_agents = self.hints_max_agents;
        pool.hints.smoothing = self.hints_smoothing;
        pool
    }

    /// The control socket when none is configured: `/tmp/sigsci-proxy-<admin port>.ctl`. The
    /// admin port is already unique per host (and per pod), so proxies side by side get their
    /// own, and `sigsci-proxy drain` with the server's environment derives the same path. /tmp
    /// is writable for any user (in the manifests an emptyDir, the root filesystem being
    /// read-only).
    pub fn default_control_socket(admin_port: u16) -> PathBuf {
        PathBuf::from(format!("/tmp/sigsci-proxy-{admin_port}.ctl"))
    }

    /// The control socket `sigsci-proxy drain` talks to: `--control-socket`, else the one the
    /// server derives from its admin port, each from flags, environment or `--config`, as the
    /// server reads them.
    pub fn drain_control_socket(
        control_socket: Option<PathBuf>,
        admin: Option<SocketAddr>,
        config: Option<PathBuf>,
    ) -> Result<PathBuf, Vec<Problem>> {
        let cli = Options {
            control_socket,
            admin,
            config,
            ..Options::default()
        };
        let file = Self::file_options(&cli)?;
        let c = Self::from_options(merge(cli, file));
        Ok(c.control_socket
            .unwrap_or_else(|| Self::default_control_socket(c.admin.port())))
    }

    /// The options in `--config`, if given.
    fn file_options(cli: &Options) -> Result<Options, Vec<Problem>> {
        Ok(match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    vec![Problem {
                        option: "config",
                        message: format!("{}: {e}", path.display()),
                    }]
                })?;
                toml::from_str::<Options>(&text).map_err(|e| {
                    vec![Problem {
                        option: "config",
                        message: format!("{}: {}", path.display(), e.message()),
                    }]
                })?
            }
            None => Options::default(),
        })
    }

    /// Parses the command line (and environment), reads `--config` if given, merges, applies
    /// defaults. Problems reading the file are returned as [`Problem`]s.
    pub fn load(cli: Options) -> Result<Self, Vec<Problem>> {
        let file = Self::file_options(&cli)?;
        let config = Self::from_options(merge(cli, file));
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration, returning every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad =
            |option: &'static str, message: String| problems.push(Problem { option, message });
        if self.listen.is_empty() {
            bad("listen", "at least one address is needed".into());
        }
        if self.backlog == 0 {
            bad("backlog", "must be at least 1".into());
        }
        if self.max_connections == 0 {
            bad("max-connections", "must be at least 1".into());
        }
        if self.max_in_flight_per_connection == 0 {
            bad("max-in-flight-per-connection", "must be at least 1".into());
        }
        if self.max_frame_bytes < 64 {
            bad(
                "max-frame-bytes",
                format!("{} is too small (at least 64)", self.max_frame_bytes),
            );
        }
        if self.upstream_connections == 0 {
            bad("upstream-connections", "must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            bad("connect-timeout", "must be more than 0".into());
        }
        if self.rpc_timeout.is_zero() {
            bad("rpc-timeout", "must be more than 0".into());
        } else if self.connect_timeout > self.rpc_timeout {
            bad(
                "connect-timeout",
                format!(
                    "{:?} is longer than --rpc-timeout {:?}, which bounds the whole call",
                    self.connect_timeout, self.rpc_timeout
                ),
            );
        }
        if self.rpc_timeout > Duration::from_secs(60) {
            bad(
                "rpc-timeout",
                format!("{:?} is longer than a minute", self.rpc_timeout),
            );
        }
        if self.idle_timeout.is_zero() {
            bad("idle-timeout", "must be more than 0".into());
        }
        if self.max_partial_bytes < self.max_frame_bytes {
            bad(
                "max-partial-bytes",
                format!(
                    "{} is less than --max-frame-bytes ({}): one large request could never arrive",
                    self.max_partial_bytes, self.max_frame_bytes
                ),
            );
        }
        if self.max_in_flight == 0 {
            bad("max-in-flight", "must be at least 1".into());
        }
        if self.max_in_flight_bytes < self.max_frame_bytes {
            bad(
                "max-in-flight-bytes",
                format!(
                    "{} is less than --max-frame-bytes ({})",
                    self.max_in_flight_bytes, self.max_frame_bytes
                ),
            );
        }
        if self.write_timeout.is_zero() {
            bad("write-timeout", "must be positive".into());
        }
        if self.frame_read_timeout.is_zero() {
            bad("frame-read-timeout", "must be more than 0".into());
        }
        if !(0.0..=1.0).contains(&self.retry_budget) {
            bad(
                "retry-budget",
                format!("{} is not a ratio between 0 and 1", self.retry_budget),
            );
        }
        if self.eject_after == 0 {
            bad("eject-after", "must be at least 1".into());
        }
        if self.latency_decay.is_zero() {
            bad("latency-decay", "must be more than 0".into());
        }
        if self.hints_target_outstanding.is_nan() || self.hints_target_outstanding <= 0.0 {
            bad(
                "hints-target-outstanding",
                format!("{} must be more than 0", self.hints_target_outstanding),
            );
        }
        if self.hints_target_rpc.is_nan() || self.hints_target_rpc < 0.0 {
            bad(
                "hints-target-rpc",
                format!("{} must be 0 (off) or more", self.hints_target_rpc),
            );
        }
        if self.hints_min_agents > self.hints_max_agents {
            bad(
                "hints-min-agents",
                format!(
                    "{} is above --hints-max-agents {}",
                    self.hints_min_agents, self.hints_max_agents
                ),
            );
        }
        if self.drain_delay >= self.drain_timeout {
            bad(
                "drain-delay",
                format!(
                    "{:?} must be shorter than --drain-timeout {:?}",
                    self.drain_delay, self.drain_timeout
                ),
            );
        }
        if self.agents_file_poll.is_zero() {
            bad("agents-file-poll", "must be more than 0".into());
        }
        if self.agents_dns_interval.is_zero() {
            bad("agents-dns-interval", "must be more than 0".into());
        }
        let sources = [
            !self.agents.is_empty(),
            self.agents_file.is_some(),
            self.agents_dns.is_some(),
            self.agents_k8s.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => bad(
                "agents",
                "no agents: give one of --agents, --agents-file, --agents-dns, --agents-k8s".into(),
            ),
            1 => {}
            _ => bad(
                "agents",
                "give only one of --agents, --agents-file, --agents-dns, --agents-k8s".into(),
            ),
        }
        for a in &self.agents {
            if let Some(path) = a.strip_prefix("unix:") {
                if path.is_empty() {
                    bad("agents", format!("`{a}`: a Unix socket needs a path"));
                }
            } else if let Err(e) = a.parse::<HostPort>() {
                bad("agents", format!("`{a}`: {}", e.why));
            }
        }
        if let Some(dns) = &self.agents_dns
            && let Err(e) = dns.parse::<HostPort>()
        {
            bad("agents-dns", format!("`{dns}`: {}", e.why));
        }
        if let Some(k8s) = &self.agents_k8s
            && let Err(e) = k8s.parse::<ServiceRef>()
        {
            bad("agents-k8s", e.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The membership source (valid only after [`Config::validate`]).
    pub fn membership(&self) -> Option<Membership> {
        if !self.agents.is_empty() {
            return Some(Membership::Static(self.agents.clone()));
        }
        if let Some(path) = &self.agents_file {
            return Some(Membership::File(path.clone()));
        }
        if let Some(dns) = &self.agents_dns {
            let HostPort { host, port } = dns.parse().ok()?;
            return Some(Membership::Dns { name: host, port });
        }
        if let Some(k8s) = &self.agents_k8s {
            let ServiceRef {
                namespace,
                service,
                port_name,
            } = k8s.parse().ok()?;
            return Some(Membership::Kubernetes {
                namespace,
                service,
                port_name,
            });
        }
        None
    }
}
