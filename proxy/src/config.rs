//! Configuration: command-line flags, `SIGSCI_PROXY_*` environment variables and an optional TOML
//! file (`--config`), in that order of precedence, resolved into one [`Config`] and validated
//! up front so a bad deployment fails at start-up with every problem named.
//!
//! Layout: `options.rs` is the option table, each option written once (flag, environment
//! variable, help, type, default), from which `table.rs`'s macro makes [`Options`] and
//! [`Config`]; `cli.rs` the command line; `file.rs` the TOML file; `validate.rs` the checks;
//! `values.rs` the value types; `cgroup.rs` reads the memory limit and `memory_budget.rs`
//! derives the connection and byte limits from it. Addresses and the Kubernetes service are
//! agent-pool's types.

mod cgroup;
mod cli;
mod file;
pub mod memory_budget;
mod options;
mod table;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_pool::source::kubernetes::ServiceRef;
use agent_pool::{HostPort, PoolConfig};

pub use cgroup::memory_limit;
pub use cli::{Cli, Command};
/// For the listener's tests, which bind as the server does by default.
#[cfg(test)]
pub(crate) use options::DEFAULT_UNIX_MODE;
pub use options::{Config, Options};
pub use validate::Problem;
pub use values::{Dur, LogFormat, Mode, UpstreamMode};

/// Where the proxy accepts module connections: `ip:port` (`0` picks a free port) or
/// `unix:/path`. The same type as the agents' addresses, so both parse alike.
pub use agent_pool::Address as ListenAddr;

use options::merge;

/// The membership source chosen by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// `--agents`: a fixed list of `host:port`.
    Static(Vec<String>),
    /// `--agents-file`: a watched JSON/TOML file.
    File(PathBuf),
    /// `--agents-dns`: a name resolved periodically, and the agents' RPC port.
    Dns(HostPort),
    /// `--agents-k8s`: EndpointSlices of a Service.
    Kubernetes(ServiceRef),
}

impl Default for Config {
    fn default() -> Self {
        Self::from_options(Options::default())
    }
}

impl Config {
    /// The agent pool's configuration these options describe.
    pub fn pool_config(&self) -> PoolConfig {
        let mut pool = PoolConfig {
            gone_grace: self.gone_grace,
            join_delay: self.join_delay(),
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
        pool.hints.tick = self.hints_tick;
        if !self.rpc_timeout.is_zero() {
            // An agent's answers are held to a quarter of the deadline: the rest is for the
            // queue, a retry and the way back.
            pool.limit.max_target = self.rpc_timeout / 4;
        }
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
        match &cli.config {
            Some(path) => file::read(path),
            None => Ok(Options::default()),
        }
    }

    /// Parses the command line (and environment), reads `--config` if given, merges, applies
    /// defaults, the memory budget's within this process's cgroup memory limit
    /// ([`memory_limit`]). Problems reading the file are returned as [`Problem`]s.
    pub fn load(cli: Options) -> Result<Self, Vec<Problem>> {
        Self::load_within(cli, memory_limit())
    }

    /// [`Config::load`] under a memory limit of `memory_limit` bytes (`None`: unlimited): the
    /// connection and byte limits left unset are derived from it, and a configuration whose
    /// worst case passes it is refused ([`memory_budget`]).
    pub fn load_within(cli: Options, memory_limit: Option<u64>) -> Result<Self, Vec<Problem>> {
        let file = Self::file_options(&cli)?;
        let given = merge(cli, file);
        let config = Self::from_options(memory_budget::fill(given.clone(), memory_limit));
        let mut problems = config.validate().err().unwrap_or_default();
        problems.extend(memory_budget::check(&config, &given, memory_limit));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// `--join-delay`, but never shorter than the polling interval of a file or DNS
    /// membership: replicas polling on their own learn of a new agent up to one interval apart,
    /// and a shorter delay would let one replica hand out RequestIDs another cannot route yet.
    /// Zero stays zero (turned off).
    pub fn join_delay(&self) -> Duration {
        if self.join_delay.is_zero() {
            return Duration::ZERO;
        }
        let refresh = match self.membership() {
            Some(Membership::File(_)) => self.agents_file_poll,
            Some(Membership::Dns(_)) => self.agents_dns_interval,
            _ => Duration::ZERO,
        };
        self.join_delay.max(refresh)
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
            return dns.parse().ok().map(Membership::Dns);
        }
        if let Some(k8s) = &self.agents_k8s {
            return k8s.parse().ok().map(Membership::Kubernetes);
        }
        None
    }
}
