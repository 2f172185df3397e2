//! Command-line interface: `loadtest agent`, `loadtest drive`, `loadtest local`,
//! `loadtest cluster`, `loadtest bench`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::addr::RpcAddr;
use crate::agent::{AgentConfig, Faults, Stopped};
use crate::units::{ServiceTime, parse_duration};

/// Agent simulator, module emulator and local orchestrator for sigsci-proxy.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a simulated sigsci-agent.
    Agent(AgentArgs),
    /// Drive load at an agent or proxy the way modules do.
    Drive(crate::drive::DriveArgs),
    /// Start agents (+ the proxy or HAProxy), drive load, report, stop everything.
    Local(crate::local::LocalArgs),
    /// Run a scenario against a cluster: scale, delete pods, drain proxies through the API.
    Cluster(crate::cluster::ClusterArgs),
    /// Side by side: direct, sigsci-proxy, HAProxy roundrobin and source, same agents and load.
    Bench(crate::bench::BenchArgs),
}

/// `loadtest agent` options.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// RPC listen address: host:port, unix:/path or /path.
    #[arg(long, env = "SIGSCI_RPC_ADDRESS", default_value = "127.0.0.1:9999")]
    pub listen: RpcAddr,
    /// Admin HTTP address (/stats, /metrics, /fault, /shutdown).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Block (406) PreRequests containing PATTERN in URI, header value or body; `PATTERN=TAG`
    /// sets the tag. Repeatable; replaces the defaults (`<script`=XSS, `' OR 1=1`=SQLI).
    #[arg(long = "attack-pattern", value_name = "PATTERN[=TAG]")]
    pub attack_patterns: Vec<String>,
    /// Fraction (0..=1) of allowed PreRequests that still get a RequestID.
    #[arg(long, default_value_t = 0.0)]
    pub flag_fraction: f64,
    /// How long a RequestID waits for its UpdateRequest.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub context_expiration: Duration,
    /// Work per RPC: fixed (`200us`) or exponential with that mean (`exp:200us`).
    #[arg(long, default_value = "200us")]
    pub service_time: ServiceTime,
    /// Worker slots (`--shape fifo`: RPCs served at once, more wait for a free one) or
    /// processors (`--shape ps`: shared by every RPC in progress).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// CPU shape: `fifo` (worker slots, a queue in front) or `ps` (processor sharing: every RPC
    /// in progress slows as more arrive; none is cancelled when its caller gives up).
    #[arg(long, default_value = "fifo")]
    pub shape: crate::agent::Shape,
    /// Service time multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub slow: f64,
    /// Added delay before every answer.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub delay: Duration,
    /// Start with the listening socket closed (connections refused).
    #[arg(long)]
    pub refuse: bool,
    /// Reset connections instead of answering.
    #[arg(long)]
    pub reset: bool,
    /// Answer every request at once with an error frame.
    #[arg(long, conflicts_with = "stall")]
    pub error: bool,
    /// Accept and read requests, never answer them.
    #[arg(long)]
    pub stall: bool,
    /// Time until the startup probe answers 200 (rules loaded); the RPC listener serves from
    /// the start, as the real agent's does.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub startup_delay: Duration,
    /// Startup probe HTTP listener (`GET /startup`: 503 until `--startup-delay` has passed,
    /// then 200), like the agent's `SIGSCI_STARTUP_PROBE_LISTENER`.
    #[arg(long, env = "SIGSCI_STARTUP_PROBE_LISTENER", value_name = "ADDR")]
    pub startup_probe: Option<SocketAddr>,
    /// Crash (exit status 3) after this many requests.
    #[arg(long)]
    pub exit_after: Option<u64>,
}

impl AgentArgs {
    /// The simulator configuration these flags describe.
    pub fn to_config(&self) -> AgentConfig {
        let mut cfg = AgentConfig {
            listen: self.listen.clone(),
            admin: self.admin,
            flag_fraction: self.flag_fraction,
            context_expiration: self.context_expiration,
            service_time: self.service_time,
            workers: self.workers,
            shape: self.shape,
            faults: Faults {
                refuse: self.refuse,
                hangup: false,
                reset: self.reset,
                error: self.error,
                stall: self.stall,
                delay: self.delay,
                slow: self.slow,
                exit_after: self.exit_after,
            },
            startup_delay: self.startup_delay,
            startup_probe: self.startup_probe,
            ..AgentConfig::default()
        };
        if !self.attack_patterns.is_empty() {
            cfg.attack_patterns = self
                .attack_patterns
                .iter()
                .map(|p| match p.rsplit_once('=') {
                    Some((pat, tag)) if !tag.is_empty() && !tag.contains(' ') => {
                        (pat.into(), tag.into())
                    }
                    _ => (p.clone(), "ATTACK".into()),
                })
                .collect();
        }
        cfg
    }
}

/// `loadtest local`: an autoscaling scenario (one with an `[autoscale]` table) runs its closed
/// loop, `--compare` its paired drives, anything else one drive with its steps; the exit status
/// is 1 if any check failed.
pub async fn run_local(args: crate::local::LocalArgs) -> anyhow::Result<i32> {
    if !args.compare
        && let Some(code) = crate::autoscale::run_cli(&args).await?
    {
        return Ok(code);
    }
    crate::local::run_cli(args).await
}

/// Runs `loadtest agent` until SIGTERM/SIGINT, `POST /shutdown` or the crash fault; returns the
/// process exit status.
pub async fn run_agent(args: AgentArgs) -> anyhow::Result<i32> {
    let cfg = args.to_config();
    if let Err(errs) = cfg.validate() {
        for e in errs {
            eprintln!("error: {e}");
        }
        return Ok(2);
    }
    let agent = cfg.spawn().await?;
    let admin = agent
        .admin_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let probe = agent
        .startup_probe_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    // Machine-readable: orchestrators and tests parse this line.
    println!(
        "listening rpc={} admin={admin} startup={probe}",
        agent.rpc_addr()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let crashed = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
        s = agent.stopped() => s == Stopped::Crashed,
    };
    if crashed {
        let stats = agent.stats();
        println!("crashed (exit_after fault)\n{}", stats.to_text());
        return Ok(3);
    }
    let stats = tokio::select! {
        s = agent.shutdown() => s,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("second signal: exiting now");
            return Ok(1);
        }
    };
    println!("stopped\n{}", stats.to_text());
    Ok(0)
}
