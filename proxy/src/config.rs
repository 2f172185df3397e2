//! Configuration: command-line flags, `SIGSCI_PROXY_*` environment variables and an optional TOML
//! file (`--config`), in that order of precedence, resolved into one [`Config`] and validated
//! up front so a bad deployment fails at start-up with every problem named.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use agent_pool::PoolConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Command line of the `sigsci-proxy` binary.
#[derive(Debug, Parser)]
#[command(name = "sigsci-proxy", version, about, long_about = None)]
pub struct Cli {
    /// A subcommand; without one the proxy runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the proxy itself.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask the proxy running on this machine to drain, through its control socket (a local
    /// Unix socket, never the network), for an exec preStop hook. Run with the server's
    /// `SIGSCI_PROXY_*` environment it finds the server's socket with no flag.
    Drain {
        /// The proxy's control socket [default: as the server derives it].
        #[arg(long, env = "SIGSCI_PROXY_CONTROL_SOCKET", value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// The proxy's admin address, from which the default control socket is derived
        /// [default: 127.0.0.1:9090].
        #[arg(long, env = "SIGSCI_PROXY_ADMIN", value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// The proxy's TOML file, read for `control-socket` and `admin`.
        #[arg(long, env = "SIGSCI_PROXY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Every proxy option, as given on the command line, in the environment or in the TOML file.
///
/// Each field is optional so that the three layers can be merged; [`Config`] holds the result
/// with defaults applied. Keys in the TOML file are the flag names (`rpc-timeout = "80ms"`).
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// TOML file with any of these options (keys are the flag names); flags and env win over it.
    #[arg(long, env = "SIGSCI_PROXY_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to accept module RPCs on: `host:port` or `unix:/path`; repeatable or
    /// comma-separated [default: 0.0.0.0:9999].
    #[arg(
        long,
        env = "SIGSCI_PROXY_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub listen: Option<Vec<ListenAddr>>,
    /// Admin HTTP address, read-only (/metrics, /healthz, /readyz, /agents, /hints)
    /// [default: 127.0.0.1:9090].
    #[arg(long, env = "SIGSCI_PROXY_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Control socket (Unix, mode 0600) where `sigsci-proxy drain` asks this process to drain
    /// [default: /tmp/sigsci-proxy-<admin port>.ctl].
    #[arg(long, env = "SIGSCI_PROXY_CONTROL_SOCKET", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Permissions of `unix:` RPC listeners, octal; modules run as another user (the web
    /// server's) and one refused fails open [default: 0666].
    #[arg(long, env = "SIGSCI_PROXY_UNIX_SOCKET_MODE", value_name = "OCTAL")]
    pub unix_socket_mode: Option<Mode>,
    /// Accept backlog of each listening socket [default: 4096].
    #[arg(long, env = "SIGSCI_PROXY_BACKLOG", value_name = "N")]
    pub backlog: Option<u32>,
    /// Set SO_REUSEPORT on TCP listeners [default: false].
    #[arg(long, env = "SIGSCI_PROXY_REUSE_PORT", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub reuse_port: Option<bool>,
    /// Maximum open downstream connections, lowered at start-up to leave file descriptors for
    /// agents and the admin port. At the limit the longest-idle connection makes room; with
    /// none idle a new connection is reset [default: 20000].
    #[arg(long, env = "SIGSCI_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Maximum RPCs in flight on one downstream connection (pipelining) [default: 64].
    #[arg(
        long,
        env = "SIGSCI_PROXY_MAX_IN_FLIGHT_PER_CONNECTION",
        value_name = "N"
    )]
    pub max_in_flight_per_connection: Option<usize>,
    /// Close a downstream connection idle (no RPC in flight, no bytes) this long [default: 60s].
    #[arg(long, env = "SIGSCI_PROXY_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<Dur>,
    /// A frame must arrive completely within this time of its first byte (slow clients)
    /// [default: 5s].
    #[arg(long, env = "SIGSCI_PROXY_FRAME_READ_TIMEOUT", value_name = "DURATION")]
    pub frame_read_timeout: Option<Dur>,
    /// Largest frame accepted from a module or an agent, in bytes: room for the largest request
    /// a module sends (headers up to 1 MB plus the body) [default: 4194304].
    #[arg(long, env = "SIGSCI_PROXY_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Bytes all connections together may hold in partly received frames; past it the
    /// connection holding the most is reset [default: 67108864].
    #[arg(long, env = "SIGSCI_PROXY_MAX_PARTIAL_BYTES", value_name = "BYTES")]
    pub max_partial_bytes: Option<usize>,
    /// RPCs in flight across the proxy; past it a call is answered with an error frame at once
    /// [default: 10000].
    #[arg(long, env = "SIGSCI_PROXY_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// Bytes of requests in flight across the proxy; past it a call is answered with an error
    /// frame at once [default: 67108864].
    #[arg(long, env = "SIGSCI_PROXY_MAX_IN_FLIGHT_BYTES", value_name = "BYTES")]
    pub max_in_flight_bytes: Option<usize>,
    /// Time to write one answer to a module; a module that does not read is reset after it
    /// [default: 1s].
    #[arg(long, env = "SIGSCI_PROXY_WRITE_TIMEOUT", value_name = "DURATION")]
    pub write_timeout: Option<Dur>,

    /// Static agent list, `host:port,host:port` or `unix:/path` (one of the four membership
    /// sources).
    #[arg(
        long,
        env = "SIGSCI_PROXY_AGENTS",
        value_delimiter = ',',
        value_name = "ADDRS"
    )]
    pub agents: Option<Vec<String>>,
    /// JSON or TOML file listing the agents, re-read when it changes.
    #[arg(long, env = "SIGSCI_PROXY_AGENTS_FILE", value_name = "PATH")]
    pub agents_file: Option<PathBuf>,
    /// How often the agents file is checked for changes (a stat; cheap) [default: 100ms].
    #[arg(long, env = "SIGSCI_PROXY_AGENTS_FILE_POLL", value_name = "DURATION")]
    pub agents_file_poll: Option<Dur>,
    /// DNS name (of a headless Service) resolved to the agents, `NAME:PORT`.
    #[arg(long, env = "SIGSCI_PROXY_AGENTS_DNS", value_name = "NAME:PORT")]
    pub agents_dns: Option<String>,
    /// How often the DNS name is resolved again [default: 5s].
    #[arg(
        long,
        env = "SIGSCI_PROXY_AGENTS_DNS_INTERVAL",
        value_name = "DURATION"
    )]
    pub agents_dns_interval: Option<Dur>,
    /// Kubernetes EndpointSlices of a Service, `NAMESPACE/SERVICE[:PORTNAME]`.
    #[arg(long, env = "SIGSCI_PROXY_AGENTS_K8S", value_name = "NS/SVC[:PORT]")]
    pub agents_k8s: Option<String>,

    /// Upstream connection mode: `mux` (a few persistent multiplexed connections per agent) or
    /// `per-call` (one connection per RPC) [default: mux].
    #[arg(long, env = "SIGSCI_PROXY_UPSTREAM_MODE", value_name = "MODE")]
    pub upstream_mode: Option<UpstreamMode>,
    /// Persistent connections per agent in `mux` mode [default: 2].
    #[arg(long, env = "SIGSCI_PROXY_UPSTREAM_CONNECTIONS", value_name = "N")]
    pub upstream_connections: Option<usize>,
    /// Timeout to connect to an agent [default: 20ms].
    #[arg(long, env = "SIGSCI_PROXY_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<Dur>,
    /// Deadline of one RPC from its arrival to its answer, retry included; keep it under the
    /// modules' own timeout (100 ms by default) [default: 80ms].
    #[arg(long, env = "SIGSCI_PROXY_RPC_TIMEOUT", value_name = "DURATION")]
    pub rpc_timeout: Option<Dur>,
    /// Retries allowed as a fraction of successful first attempts [default: 0.2].
    #[arg(long, env = "SIGSCI_PROXY_RETRY_BUDGET", value_name = "RATIO")]
    pub retry_budget: Option<f64>,
    /// Consecutive connect failures or timeouts that eject an agent [default: 5].
    #[arg(long, env = "SIGSCI_PROXY_EJECT_AFTER", value_name = "N")]
    pub eject_after: Option<u32>,
    /// How long a departed agent still receives the UpdateRequests for its RequestIDs
    /// [default: 30s].
    #[arg(long, env = "SIGSCI_PROXY_GONE_GRACE", value_name = "DURATION")]
    pub gone_grace: Option<Dur>,
    /// Time constant of each agent's latency estimate (a moving mean whose peak fades ten times
    /// faster), which weights the picker; longer remembers slow answers longer [default: 1s].
    #[arg(long, env = "SIGSCI_PROXY_LATENCY_DECAY", value_name = "DURATION")]
    pub latency_decay: Option<Dur>,

    /// Autoscaling hint: outstanding RPCs one agent should carry [default: 8].
    #[arg(long, env = "SIGSCI_PROXY_HINTS_TARGET_OUTSTANDING", value_name = "N")]
    pub hints_target_outstanding: Option<f64>,
    /// Autoscaling hint: RPCs per second one agent should carry; 0 turns the rate-based
    /// variant off [default: 1000].
    #[arg(long, env = "SIGSCI_PROXY_HINTS_TARGET_RPC", value_name = "RPC/S")]
    pub hints_target_rpc: Option<f64>,
    /// Autoscaling hint: lowest recommended agent count [default: 1].
    #[arg(long, env = "SIGSCI_PROXY_HINTS_MIN_AGENTS", value_name = "N")]
    pub hints_min_agents: Option<u32>,
    /// Autoscaling hint: highest recommended agent count [default: 100].
    #[arg(long, env = "SIGSCI_PROXY_HINTS_MAX_AGENTS", value_name = "N")]
    pub hints_max_agents: Option<u32>,
    /// Autoscaling hint: time constant of the smoothed outstanding count and RPC rate
    /// [default: 10s].
    #[arg(long, env = "SIGSCI_PROXY_HINTS_SMOOTHING", value_name = "DURATION")]
    pub hints_smoothing: Option<Dur>,

    /// After a drain starts, keep accepting this long while endpoints converge [default: 5s].
    #[arg(long, env = "SIGSCI_PROXY_DRAIN_DELAY", value_name = "DURATION")]
    pub drain_delay: Option<Dur>,
    /// Exit at the latest this long after a drain starts [default: 25s].
    #[arg(long, env = "SIGSCI_PROXY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<Dur>,

    /// Log format: `text` (human) or `json`; the level comes from RUST_LOG [default: text].
    #[arg(long, env = "SIGSCI_PROXY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Threads serving RPCs. With one, every hand-off between a connection and an agent
    /// connection stays on that thread, with the fewest context switches per RPC. Raise it only
    /// when one thread's CPU is the limit and more replicas are not an option, with a CPU limit
    /// to match; 0 = one per CPU the process may use [default: 1].
    #[arg(long, env = "SIGSCI_PROXY_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Poll sockets without sleeping while RPCs are in flight and for this long after the
    /// last one, instead of parking the thread: lowers the latency the proxy adds where waking
    /// an idle CPU is slow (virtual machines), at the price of up to one CPU spinning under
    /// load. Only for a proxy with a CPU of its own (request one CPU, no limit below two):
    /// under a CPU limit the spinning uses up the quota and the kernel throttles the proxy for
    /// whole periods. 0 = off [default: 0s].
    #[arg(long, env = "SIGSCI_PROXY_BUSY_POLL", value_name = "DURATION")]
    pub busy_poll: Option<Dur>,
}

/// Where the proxy accepts module connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ListenAddr {
    /// TCP `host:port` (`0` picks a free port).
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/path`).
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a unix listener needs a path, e.g. unix:/var/run/sigsci.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("`{s}` is neither `ip:port` nor `unix:/path`"))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// File permissions written in octal (`0660`, `660` or `0o660`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Mode(m)),
            _ => Err(format!("`{s}` is not an octal mode (examples: 0666, 0660)")),
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How the proxy talks to agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// A few persistent connections per agent, RPCs multiplexed by proxy-assigned msgids.
    Mux,
    /// A new connection for every RPC, as the modules themselves do.
    PerCall,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written with a unit: `250us`, `20ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (examples: 20ms, 5s, 1m)"))?;
        let secs = match unit.trim() {
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "" if value == 0.0 => 0.0,
            _ => return Err(format!("`{s}` needs a unit: us, ms, s or m (e.g. 20ms)")),
        };
        Duration::try_from_secs_f64(secs)
            .map(Dur)
            .map_err(|_| format!("`{s}` is out of range"))
    }
}

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

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
        for a in self.agents.iter().filter(|a| !a.starts_with("unix:")) {
            if let Err(e) = split_host_port(a) {
                bad("agents", format!("`{a}`: {e}"));
            }
        }
        if let Some(dns) = &self.agents_dns
            && let Err(e) = split_host_port(dns)
        {
            bad("agents-dns", format!("`{dns}`: {e}"));
        }
        if let Some(k8s) = &self.agents_k8s
            && let Err(e) = parse_k8s(k8s)
        {
            bad("agents-k8s", format!("`{k8s}`: {e}"));
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
            let (name, port) = split_host_port(dns).ok()?;
            return Some(Membership::Dns {
                name: name.to_owned(),
                port,
            });
        }
        if let Some(k8s) = &self.agents_k8s {
            let (namespace, service, port_name) = parse_k8s(k8s).ok()?;
            return Some(Membership::Kubernetes {
                namespace,
                service,
                port_name,
            });
        }
        None
    }
}

/// `host:port` (IPv6 as `[::1]:port`) split in two, the port checked.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    if port == 0 {
        return Err("port 0 cannot be dialled".into());
    }
    Ok((host, port))
}

fn parse_k8s(s: &str) -> Result<(String, String, Option<String>), String> {
    let (namespace, rest) = s
        .split_once('/')
        .ok_or("expected NAMESPACE/SERVICE[:PORTNAME]")?;
    let (service, port_name) = match rest.split_once(':') {
        Some((svc, port)) => (svc, Some(port.to_owned())),
        None => (rest, None),
    };
    if namespace.is_empty() || service.is_empty() || port_name.as_deref() == Some("") {
        return Err("expected NAMESPACE/SERVICE[:PORTNAME]".into());
    }
    Ok((namespace.to_owned(), service.to_owned(), port_name))
}

/// Field by field: the first layer that sets an option wins.
fn merge(high: Options, low: Options) -> Options {
    macro_rules! pick {
        ($($f:ident),* $(,)?) => { Options { $($f: high.$f.or(low.$f),)* } };
    }
    pick!(
        config,
        listen,
        admin,
        control_socket,
        unix_socket_mode,
        backlog,
        reuse_port,
        max_connections,
        max_in_flight_per_connection,
        idle_timeout,
        frame_read_timeout,
        max_frame_bytes,
        max_partial_bytes,
        max_in_flight,
        max_in_flight_bytes,
        write_timeout,
        agents,
        agents_file,
        agents_file_poll,
        agents_dns,
        agents_dns_interval,
        agents_k8s,
        upstream_mode,
        upstream_connections,
        connect_timeout,
        rpc_timeout,
        retry_budget,
        eject_after,
        gone_grace,
        latency_decay,
        hints_target_outstanding,
        hints_target_rpc,
        hints_min_agents,
        hints_max_agents,
        hints_smoothing,
        drain_delay,
        drain_timeout,
        log_format,
        worker_threads,
        busy_poll,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Vec<Problem>> {
        let mut argv = vec!["sigsci-proxy"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("clap parses");
        Config::load(cli.options)
    }

    #[test]
    fn durations_need_units() {
        assert_eq!("20ms".parse::<Dur>().unwrap().0, Duration::from_millis(20));
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!("0".parse::<Dur>().unwrap().0, Duration::ZERO);
        assert!("20".parse::<Dur>().is_err());
        assert!("fast".parse::<Dur>().is_err());
    }

    #[test]
    fn defaults_with_static_agents() {
        let c = parse(&["--agents", "10.0.0.1:9999,agent-1.agents:9999"]).unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:9999".parse().unwrap()]);
        assert_eq!(c.rpc_timeout, Duration::from_millis(80));
        assert_eq!(c.connect_timeout, Duration::from_millis(20));
        assert_eq!(c.upstream_connections, 2);
        assert_eq!(c.agents.len(), 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_option() {
        let problems = parse(&[
            "--rpc-timeout",
            "0ms",
            "--retry-budget",
            "3",
            "--upstream-connections",
            "0",
        ])
        .unwrap_err();
        let options: Vec<_> = problems.iter().map(|p| p.option).collect();
        assert!(options.contains(&"rpc-timeout"), "{problems:?}");
        assert!(options.contains(&"retry-budget"), "{problems:?}");
        assert!(options.contains(&"upstream-connections"), "{problems:?}");
        assert!(options.contains(&"agents"), "{problems:?}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            "rpc-timeout = \"50ms\"\nconnect-timeout = \"10ms\"\nagents = [\"127.0.0.1:1\"]\nlisten = [\"unix:/tmp/x.sock\"]\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--rpc-timeout", "60ms"]).unwrap();
        assert_eq!(c.rpc_timeout, Duration::from_millis(60));
        assert_eq!(c.connect_timeout, Duration::from_millis(10));
        assert_eq!(c.listen, vec![ListenAddr::Unix("/tmp/x.sock".into())]);
    }

    #[test]
    fn pool_and_hint_options_reach_the_pool() {
        let c = parse(&[
            "--agents",
            "127.0.0.1:1",
            "--latency-decay",
            "3s",
            "--hints-target-rpc",
            "0",
            "--hints-min-agents",
            "2",
            "--eject-after",
            "3",
        ])
        .unwrap();
        let pool = c.pool_config();
        assert_eq!(pool.latency_decay, Duration::from_secs(3));
        assert_eq!(
            pool.hints.target_rpc_per_agent, None,
            "0 turns the rate hint off"
        );
        assert_eq!(pool.hints.min_agents, 2);
        assert_eq!(pool.ejection.consecutive_failures, 3);
        let defaults = parse(&["--agents", "127.0.0.1:1"]).unwrap().pool_config();
        assert_eq!(
            defaults,
            PoolConfig::default(),
            "the pool's defaults are the proxy's"
        );
        let problems = parse(&[
            "--agents",
            "127.0.0.1:1",
            "--hints-min-agents",
            "5",
            "--hints-max-agents",
            "4",
            "--hints-target-outstanding",
            "0",
        ])
        .unwrap_err();
        let options: Vec<_> = problems.iter().map(|p| p.option).collect();
        assert_eq!(
            options,
            ["hints-target-outstanding", "hints-min-agents"],
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "rpc-timout = \"50ms\"\n").unwrap();
        let problems = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert_eq!(problems[0].option, "config");
        assert!(problems[0].message.contains("rpc-timout"), "{problems:?}");
    }

    #[test]
    fn membership_sources() {
        let c = parse(&["--agents-k8s", "sigsci/agents:rpc"]).unwrap();
        assert_eq!(
            c.membership(),
            Some(Membership::Kubernetes {
                namespace: "sigsci".into(),
                service: "agents".into(),
                port_name: Some("rpc".into())
            })
        );
        let p = parse(&["--agents", "a:1", "--agents-dns", "agents:9999"]).unwrap_err();
        assert_eq!(p[0].option, "agents");
        let p = parse(&["--agents", "nohost"]).unwrap_err();
        assert!(p[0].to_string().starts_with("--agents: `nohost`"), "{p:?}");
    }
}
