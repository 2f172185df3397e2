//! The options as given: the clap command line (flags and `SIGSCI_PROXY_*` environment) and
//! the TOML file's keys, each optional so that the layers merge field by field.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use super::{Dur, ListenAddr, LogFormat, Mode, UpstreamMode};

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

/// Field by field: the first layer that sets an option wins.
pub(super) fn merge(high: Options, low: Options) -> Options {
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
