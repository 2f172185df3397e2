//! The option table: every option of the proxy, each written once with its flag, environment
//! variable, help, type and default. The `options!` macro (`table.rs`) makes [`Options`] (flags,
//! `SIGSCI_PROXY_*` environment and TOML keys, each optional so the layers merge field by
//! field) and [`Config`] (defaults applied) from it.
//!
//! Help says what an option does, its unit, and when to change it; `--help` adds the default.
//! Figures measured on one machine belong in `docs/measurements.md`, not here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_pool::PoolConfig;

use super::table::options;
use super::{Dur, ListenAddr, LogFormat, Mode, UpstreamMode};

/// Default permissions of a Unix RPC listener (`--unix-socket-mode`): 0666, read-write for
/// every user. Modules run inside web servers under their own user (www-data, nginx...), and a
/// module refused with EACCES fails open, so a stricter default would silently turn inspection
/// off; the RPC port over TCP is open to anyone who reaches it anyway. Restrict access with the
/// directory's permissions, or 0660 and a group shared with the web server.
pub(crate) const DEFAULT_UNIX_MODE: u32 = 0o666;

/// The agent pool's own defaults, so the options that tune the pool state none of their own.
fn pool() -> PoolConfig {
    PoolConfig::default()
}

options! {
    /// Address to accept module RPCs on: `ip:port` or `unix:/path`; repeatable or
    /// comma-separated.
    #[arg(env = "SIGSCI_PROXY_LISTEN", value_delimiter = ',', value_name = "ADDR")]
    listen: Vec<ListenAddr> => Vec<ListenAddr> =
        vec![ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 9999)))],

    /// Admin HTTP address, read-only (/metrics, /healthz, /readyz, /agents, /hints).
    #[arg(env = "SIGSCI_PROXY_ADMIN", value_name = "ADDR")]
    admin: SocketAddr => SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9090)),

    /// Control socket (Unix, mode 0600) where `sigsci-proxy drain` asks this process to drain
    /// (default: `/tmp/sigsci-proxy-<admin port>.ctl`).
    #[arg(env = "SIGSCI_PROXY_CONTROL_SOCKET", value_name = "PATH")]
    control_socket: PathBuf => Option<PathBuf>,

    /// Permissions of `unix:` RPC listeners, octal; modules run as another user (the web
    /// server's) and one refused fails open.
    #[arg(env = "SIGSCI_PROXY_UNIX_SOCKET_MODE", value_name = "OCTAL")]
    unix_socket_mode: Mode => u32 = Mode(DEFAULT_UNIX_MODE),

    /// Accept backlog of each listening socket.
    #[arg(env = "SIGSCI_PROXY_BACKLOG", value_name = "N")]
    backlog: u32 => u32 = 4096,

    /// Set SO_REUSEPORT on TCP listeners.
    #[arg(
        env = "SIGSCI_PROXY_REUSE_PORT",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    reuse_port: bool => bool = false,

    /// Take a TCP connection from the kernel only once its first bytes have arrived (Linux
    /// TCP_DEFER_ACCEPT): a module's connection and its call then wake the proxy once, not
    /// twice. One that stays silent is taken after about a second (docs/architecture.md,
    /// "Accept"). Turn it off only for clients that wait for the proxy to speak first.
    #[arg(
        env = "SIGSCI_PROXY_DEFER_ACCEPT",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    defer_accept: bool => bool = true,

    /// Maximum open downstream connections, lowered at start-up to leave file descriptors for
    /// agents and the admin port. At the limit the longest-idle connection makes room; with
    /// none idle a new connection is reset. Unset under a memory limit (cgroup), a share of the
    /// limit (the shown default applies without one; docs/faults.md, "Memory").
    #[arg(env = "SIGSCI_PROXY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: usize => usize = 20_000,

    /// Maximum RPCs in flight on one downstream connection (pipelining).
    #[arg(env = "SIGSCI_PROXY_MAX_IN_FLIGHT_PER_CONNECTION", value_name = "N")]
    max_in_flight_per_connection: usize => usize = 64,

    /// Close a downstream connection idle (no RPC in flight, no bytes) this long.
    #[arg(env = "SIGSCI_PROXY_IDLE_TIMEOUT", value_name = "DURATION")]
    idle_timeout: Dur => Duration = Dur(Duration::from_secs(60)),

    /// When a module closes a connection with nothing in flight and every answer delivered,
    /// close it with a reset instead of a FIN, so that no TIME_WAIT is left on the module's
    /// host: a module opens a connection per RPC and closes first, and past ~470 RPC/s per app
    /// pod its ephemeral ports would all be waiting out TIME_WAIT (docs/faults.md).
    #[arg(
        env = "SIGSCI_PROXY_RESET_CLOSED_IDLE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    reset_closed_idle: bool => bool = true,

    /// A frame must arrive completely within this time of its first byte (slow clients).
    #[arg(env = "SIGSCI_PROXY_FRAME_READ_TIMEOUT", value_name = "DURATION")]
    frame_read_timeout: Dur => Duration = Dur(Duration::from_secs(5)),

    /// Largest frame accepted from a module or an agent, in bytes: room for the largest request
    /// a module sends (headers up to 1 MB plus the body).
    #[arg(env = "SIGSCI_PROXY_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: usize => usize = 4 << 20,

    /// Bytes all connections together may hold in partly received frames; past it the
    /// connection holding the most is reset. Unset under a memory limit (cgroup), a share of
    /// the limit (the shown default applies without one).
    #[arg(env = "SIGSCI_PROXY_MAX_PARTIAL_BYTES", value_name = "BYTES")]
    max_partial_bytes: usize => usize = 64 << 20,

    /// RPCs in flight across the proxy; past it a call is answered with an error frame at once.
    #[arg(env = "SIGSCI_PROXY_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: usize => usize = 10_000,

    /// Bytes of requests in flight across the proxy; past it a call is answered with an error
    /// frame at once. Also the most bytes queued to agents that read slowly, all connections
    /// together. Unset under a memory limit (cgroup), a share of the limit (the shown default
    /// applies without one).
    #[arg(env = "SIGSCI_PROXY_MAX_IN_FLIGHT_BYTES", value_name = "BYTES")]
    max_in_flight_bytes: usize => usize = 64 << 20,

    /// Time to write one answer to a module; a module that does not read is reset after it.
    #[arg(env = "SIGSCI_PROXY_WRITE_TIMEOUT", value_name = "DURATION")]
    write_timeout: Dur => Duration = Dur(Duration::from_secs(1)),

    /// Static agent list, `host:port,host:port` or `unix:/path` (one of the four membership
    /// sources); a name is resolved once, at start-up.
    #[arg(env = "SIGSCI_PROXY_AGENTS", value_delimiter = ',', value_name = "ADDRS")]
    agents: Vec<String> => Vec<String> = Vec::new(),

    /// JSON or TOML file listing the agents, re-read when it changes.
    #[arg(env = "SIGSCI_PROXY_AGENTS_FILE", value_name = "PATH")]
    agents_file: PathBuf => Option<PathBuf>,

    /// How often the agents file is checked for changes (a stat; cheap).
    #[arg(env = "SIGSCI_PROXY_AGENTS_FILE_POLL", value_name = "DURATION")]
    agents_file_poll: Dur => Duration = Dur(Duration::from_millis(100)),

    /// DNS name (of a headless Service) resolved to the agents, `NAME:PORT`.
    #[arg(env = "SIGSCI_PROXY_AGENTS_DNS", value_name = "NAME:PORT")]
    agents_dns: String => Option<String>,

    /// How often the DNS name is resolved again.
    #[arg(env = "SIGSCI_PROXY_AGENTS_DNS_INTERVAL", value_name = "DURATION")]
    agents_dns_interval: Dur => Duration = Dur(Duration::from_secs(5)),

    /// Kubernetes EndpointSlices of a Service, `NAMESPACE/SERVICE[:PORTNAME]`.
    #[arg(env = "SIGSCI_PROXY_AGENTS_K8S", value_name = "NS/SVC[:PORT]")]
    agents_k8s: String => Option<String>,

    /// Upstream connection mode: `mux` (a few persistent multiplexed connections per agent) or
    /// `per-call` (one connection per RPC, for agents that would not multiplex).
    #[arg(env = "SIGSCI_PROXY_UPSTREAM_MODE", value_name = "MODE")]
    upstream_mode: UpstreamMode => UpstreamMode = UpstreamMode::Mux,

    /// Persistent connections per agent in `mux` mode.
    #[arg(env = "SIGSCI_PROXY_UPSTREAM_CONNECTIONS", value_name = "N")]
    upstream_connections: usize => usize = 2,

    /// Timeout to connect to an agent.
    #[arg(env = "SIGSCI_PROXY_CONNECT_TIMEOUT", value_name = "DURATION")]
    connect_timeout: Dur => Duration = Dur(Duration::from_millis(20)),

    /// Deadline of one RPC from its arrival to its answer, retry included; keep it under the
    /// modules' own timeout (100 ms by default).
    #[arg(env = "SIGSCI_PROXY_RPC_TIMEOUT", value_name = "DURATION")]
    rpc_timeout: Dur => Duration = Dur(Duration::from_millis(80)),

    /// Retries allowed as a fraction of successful first attempts.
    #[arg(env = "SIGSCI_PROXY_RETRY_BUDGET", value_name = "RATIO")]
    retry_budget: f64 => f64 = 0.2,

    /// Longest a call waits in the proxy for an agent below its concurrency limit during a
    /// burst; once the queue stands for 100 ms calls wait only a few milliseconds, and the rest
    /// are answered with an error frame at once (docs/overload.md). 0: never wait.
    #[arg(env = "SIGSCI_PROXY_QUEUE_TIMEOUT", value_name = "DURATION")]
    queue_timeout: Dur => Duration = Dur(Duration::from_millis(20)),

    /// Consecutive failed calls that eject an agent: connect failures, error answers, broken
    /// calls, and timeouts while the other agents answer in time (a full queue does not count).
    #[arg(env = "SIGSCI_PROXY_EJECT_AFTER", value_name = "N")]
    eject_after: u32 => u32 = pool().ejection.consecutive_failures,

    /// How long a departed agent still receives the UpdateRequests for its RequestIDs.
    #[arg(env = "SIGSCI_PROXY_GONE_GRACE", value_name = "DURATION")]
    gone_grace: Dur => Duration = Dur(pool().gone_grace),

    /// How long an agent that joins takes new work only when no other agent does, so that every
    /// proxy replica knows it before a RequestID names it (docs/affinity.md). Never shorter
    /// than the file poll or DNS interval of the membership; 0 turns it off.
    #[arg(env = "SIGSCI_PROXY_JOIN_DELAY", value_name = "DURATION")]
    join_delay: Dur => Duration = Dur(pool().join_delay),

    /// Time constant of each agent's latency estimate (a moving mean whose peak fades ten times
    /// faster), which weights the picker; longer remembers slow answers longer.
    #[arg(env = "SIGSCI_PROXY_LATENCY_DECAY", value_name = "DURATION")]
    latency_decay: Dur => Duration = Dur(pool().latency_decay),

    /// Autoscaling hint: outstanding RPCs one agent should carry.
    #[arg(env = "SIGSCI_PROXY_HINTS_TARGET_OUTSTANDING", value_name = "N")]
    hints_target_outstanding: f64 => f64 = pool().hints.target_outstanding_per_agent,

    /// Autoscaling hint: RPCs per second one agent should carry; 0 turns the rate-based
    /// variant off.
    #[arg(env = "SIGSCI_PROXY_HINTS_TARGET_RPC", value_name = "RPC/S")]
    hints_target_rpc: f64 => f64 = pool().hints.target_rpc_per_agent.unwrap_or(0.0),

    /// Autoscaling hint: lowest recommended agent count.
    #[arg(env = "SIGSCI_PROXY_HINTS_MIN_AGENTS", value_name = "N")]
    hints_min_agents: u32 => u32 = pool().hints.min_agents,

    /// Autoscaling hint: highest recommended agent count.
    #[arg(env = "SIGSCI_PROXY_HINTS_MAX_AGENTS", value_name = "N")]
    hints_max_agents: u32 => u32 = pool().hints.max_agents,

    /// Autoscaling hint: time constant of the smoothed outstanding count and RPC rate.
    #[arg(env = "SIGSCI_PROXY_HINTS_SMOOTHING", value_name = "DURATION")]
    hints_smoothing: Dur => Duration = Dur(pool().hints.smoothing),

    /// Autoscaling hint: how often the demand is computed (a tick's rate is its sample).
    #[arg(env = "SIGSCI_PROXY_HINTS_TICK", value_name = "DURATION")]
    hints_tick: Dur => Duration = Dur(pool().hints.tick),

    /// After a drain starts, keep accepting this long while endpoints converge.
    #[arg(env = "SIGSCI_PROXY_DRAIN_DELAY", value_name = "DURATION")]
    drain_delay: Dur => Duration = Dur(Duration::from_secs(5)),

    /// Exit at the latest this long after a drain starts; keep it under the pod's
    /// terminationGracePeriodSeconds.
    #[arg(env = "SIGSCI_PROXY_DRAIN_TIMEOUT", value_name = "DURATION")]
    drain_timeout: Dur => Duration = Dur(Duration::from_secs(25)),

    /// Log format: `text` (human) or `json`; the level comes from RUST_LOG.
    #[arg(env = "SIGSCI_PROXY_LOG_FORMAT", value_name = "FORMAT")]
    log_format: LogFormat => LogFormat = LogFormat::Text,

    /// Threads serving RPCs; 0 = one per CPU the process may use. With one, every hand-off
    /// between a connection and an agent connection stays on that thread. Raise it only when
    /// one thread's CPU is the limit and more replicas are not an option, with a CPU limit to
    /// match.
    #[arg(env = "SIGSCI_PROXY_WORKER_THREADS", value_name = "N")]
    worker_threads: usize => usize = 1,

    /// How often the proxy gives heap pages freed after a burst of connections back to the
    /// operating system (glibc's `malloc_trim`); 0 = never. Without it RSS stays at the
    /// highest burst's mark for the life of the process.
    #[arg(env = "SIGSCI_PROXY_MEMORY_TRIM_INTERVAL", value_name = "DURATION")]
    memory_trim_interval: Dur => Duration = Dur(Duration::from_secs(10)),

    /// Poll sockets without sleeping while RPCs are in flight and for this long after the last
    /// one, instead of parking the thread; 0 = off. Lowers the latency the proxy adds where
    /// waking an idle CPU is slow (virtual machines), at the price of up to one CPU spinning
    /// under load. Only for a proxy with a CPU of its own (request one CPU, no limit below two):
    /// under a CPU limit the spinning uses up the quota and the kernel throttles the proxy.
    #[arg(env = "SIGSCI_PROXY_BUSY_POLL", value_name = "DURATION")]
    busy_poll: Dur => Duration = Dur(Duration::ZERO),
}
