//! `loadtest local`: the whole system on one machine. Starts N simulated agents as child
//! processes (`loadtest agent`), then either the real `sigsci-proxy` watching an agents file,
//! HAProxy in TCP round-robin mode (the baseline a plain Service gives), or nothing (`direct`:
//! straight to agent 0); drives load, runs scenario steps, prints the report, stops everything,
//! and fails (non-zero) if any check failed.

mod procs;
pub mod scenario;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::drive::{DriveArgs, DriveReport};
use crate::units::{ServiceTime, parse_duration};
use procs::{AgentProc, Pool};
use scenario::{Action, Scenario};

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

/// `loadtest local` options.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Number of simulated agents [default: 2, or the scenario's].
    #[arg(long)]
    pub agents: Option<usize>,
    /// Transactions (PreRequests) per second [default: 1000, or the scenario's].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Drive duration [default: 10s, or the scenario's].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Fraction of attack transactions (flagged by the agents) [default: 0.2].
    #[arg(long)]
    pub attack_fraction: Option<f64>,
    /// Fraction of anomalous responses (→ PostRequest) [default: 0].
    #[arg(long)]
    pub anomalous_fraction: Option<f64>,
    /// What to put in front of the agents.
    #[arg(long, value_enum, default_value = "proxy")]
    pub via: Via,
    /// Same as `--via direct`.
    #[arg(long, conflicts_with = "via")]
    pub direct: bool,
    /// Scenario file (TOML, see loadtest/scenarios/).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// The sigsci-proxy binary [default: next to this executable].
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// Extra argument for the proxy (repeatable), e.g. `--proxy-arg=--upstream-mode=per-call`.
    #[arg(long = "proxy-arg", allow_hyphen_values = true)]
    pub proxy_args: Vec<String>,
    /// The haproxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Agents' service time.
    #[arg(long, default_value = "200us")]
    pub service_time: ServiceTime,
    /// Agents' worker slots.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Agents' flag fraction (allowed requests that still get a RequestID).
    #[arg(long, default_value_t = 0.0)]
    pub flag_fraction: f64,
    /// Extra argument for every agent (repeatable).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Pipeline over persistent connections instead of a connection per call.
    #[arg(long)]
    pub persistent: bool,
    /// Local source addresses for the emulated modules (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
    /// Most failed calls allowed [default: 0, or the scenario's].
    #[arg(long)]
    pub max_errors: Option<u64>,
    /// Most orphaned + expired updates allowed [default: 0 via proxy/direct, unlimited via
    /// haproxy, or the scenario's].
    #[arg(long)]
    pub max_orphaned: Option<u64>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of `loadtest local`.
#[derive(Debug, Serialize)]
pub struct LocalReport {
    /// What was in front of the agents.
    pub via: Via,
    /// Agents started.
    pub agents: usize,
    /// Scenario file, if any.
    pub scenario: Option<String>,
    /// The drive's report.
    pub drive: DriveReport,
    /// Scenario steps executed, with their outcome.
    pub steps: Vec<String>,
    /// Failed checks; empty = passed.
    pub failures: Vec<String>,
}

impl LocalArgs {
    fn via(&self) -> Via {
        if self.direct { Via::Direct } else { self.via }
    }
}

/// Runs the orchestrator and returns its report (with `failures` filled).
pub async fn run(args: LocalArgs) -> anyhow::Result<LocalReport> {
    let scenario = match &args.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let via = args.via();
    let n = args.agents.or(scenario.agents).unwrap_or(2);
    anyhow::ensure!(n >= 1, "--agents must be at least 1");
    let exe = std::env::current_exe()?;
    let mut agent_args = vec![
        "--service-time".to_string(),
        args.service_time.to_string().replace("µs", "us"),
        "--workers".into(),
        args.workers.to_string(),
        "--flag-fraction".into(),
        args.flag_fraction.to_string(),
    ];
    agent_args.extend(args.agent_args.iter().cloned());

    let dir = tempfile::Builder::new()
        .prefix("loadtest-local-")
        .tempdir()?;
    let mut pool = Pool::new(dir.path().join("agents.json"));
    let mut failures = Vec::new();
    let result = async {
        for i in 0..n {
            pool.agents
                .push(AgentProc::spawn(&exe, i, &agent_args).await?);
        }
        pool.write_agents_file()?;
        let target: SocketAddr = match via {
            Via::Direct => pool.agents[0].rpc,
            Via::Proxy => {
                let bin = match &args.proxy_bin {
                    Some(b) => b.clone(),
                    None => procs::find_proxy_bin(&exe)?,
                };
                pool.spawn_proxy(&bin, &args.proxy_args).await?
            }
            Via::Haproxy => pool.spawn_haproxy(&args.haproxy_bin, dir.path()).await?,
        };
        let drive = DriveArgs {
            target: target.into(),
            rate: args.rate.or(scenario.rate).unwrap_or(1000.0),
            duration: args
                .duration
                .or(scenario.duration)
                .unwrap_or(Duration::from_secs(10)),
            attack_fraction: args
                .attack_fraction
                .or(scenario.attack_fraction)
                .unwrap_or(0.2),
            anomalous_fraction: args
                .anomalous_fraction
                .or(scenario.anomalous_fraction)
                .unwrap_or(0.0),
            persistent: args.persistent,
            sources: args.sources.clone(),
            agents_admin: pool.agents.iter().map(|a| a.admin).collect(),
            no_progress: false,
            ..DriveArgs::default()
        };
        eprintln!(
            "loadtest local: {n} agent(s) via {via:?}, target {target}, {} tx/s for {:?}",
            drive.rate, drive.duration
        );
        let steps_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Instant::now();
        let pool_ref = &mut pool;
        let log = steps_log.clone();
        let steps = async move {
            for step in &scenario.steps {
                tokio::time::sleep_until(start + step.at).await;
                let outcome = pool_ref.apply(step, via).await;
                let line = format!(
                    "t={:?} {:?} agent {}: {}",
                    step.at,
                    step.action,
                    step.agent,
                    outcome.unwrap_or_else(|e| format!("failed: {e:#}"))
                );
                eprintln!("loadtest local: {line}");
                log.lock().expect("not poisoned").push(line);
            }
            std::future::pending::<()>().await;
        };
        let report = tokio::select! {
            r = crate::drive::run(drive) => r?,
            _ = steps => unreachable!("steps never finish"),
        };
        let steps = std::mem::take(&mut *steps_log.lock().expect("not poisoned"));
        anyhow::Ok((report, steps))
    }
    .await;
    failures.extend(pool.check_alive());
    let stop_problems = pool.stop().await;
    let (report, steps) = result?;
    failures.extend(stop_problems);

    let max_errors = args.max_errors.or(scenario.expect.max_errors).unwrap_or(0);
    if report.total_errors() > max_errors {
        failures.push(format!(
            "{} failed calls (at most {max_errors} allowed)",
            report.total_errors()
        ));
    }
    let lost = report.updates_orphaned + report.updates_expired;
    let max_orphaned = args
        .max_orphaned
        .or(scenario.expect.max_orphaned)
        .or(match via {
            Via::Haproxy => None,
            _ => Some(0),
        });
    if let Some(max) = max_orphaned
        && lost > max
    {
        failures.push(format!(
            "{lost} orphaned/expired updates (at most {max} allowed)"
        ));
    }
    if report.overflow > 0 {
        failures.push(format!(
            "{} transactions could not start (concurrency bound reached)",
            report.overflow
        ));
    }
    // A killed agent's counters cannot be read after the run; that is the scenario, not a fault.
    let killed: Vec<String> = pool
        .agents
        .iter()
        .filter(|a| a.expect_exit)
        .map(|a| format!("agent {}: ", a.admin))
        .collect();
    failures.extend(
        report
            .problems
            .iter()
            .filter(|p| !killed.iter().any(|k| p.starts_with(k.as_str())))
            .cloned(),
    );
    Ok(LocalReport {
        via,
        agents: n,
        scenario: args.scenario.as_ref().map(|p| p.display().to_string()),
        drive: report,
        steps,
        failures,
    })
}

/// `loadtest local`: prints the report; exit status 1 if any check failed.
pub async fn run_cli(args: LocalArgs) -> anyhow::Result<i32> {
    let json = args.json.clone();
    let report = run(args).await?;
    println!(
        "via {:?}, {} agent(s){}",
        report.via,
        report.agents,
        report
            .scenario
            .as_ref()
            .map_or(String::new(), |s| format!(", scenario {s}"))
    );
    print!("{}", report.drive.to_text());
    for s in &report.steps {
        println!("step: {s}");
    }
    if let Some(path) = json {
        crate::drive::write_json(&path, &report)?;
    }
    if report.failures.is_empty() {
        println!("PASS");
        Ok(0)
    } else {
        for f in &report.failures {
            println!("FAIL: {f}");
        }
        Ok(1)
    }
}

impl Pool {
    async fn apply(&mut self, step: &scenario::Step, via: Via) -> anyhow::Result<String> {
        let agent = self
            .agents
            .get_mut(step.agent)
            .ok_or_else(|| anyhow::anyhow!("no agent {}", step.agent))?;
        let needs_file = matches!(
            step.action,
            Action::Terminate | Action::Ready | Action::Remove
        );
        if needs_file && via != Via::Proxy {
            anyhow::bail!(
                "{:?} only applies via the proxy (membership file)",
                step.action
            );
        }
        match step.action {
            Action::Terminate => agent.state = procs::FileState::Terminating,
            Action::Ready => agent.state = procs::FileState::Ready,
            Action::Remove => agent.state = procs::FileState::Removed,
            Action::Kill => {
                agent.expect_exit = true;
                agent.child.start_kill()?;
                return Ok("killed".into());
            }
            Action::Slow => {
                let f = step.factor.expect("checked at load");
                crate::http::post(agent.admin, &format!("/fault?slow={f}")).await?;
                return Ok(format!("slow x{f}"));
            }
            Action::Fault => {
                let q = step.query.as_deref().expect("checked at load");
                crate::http::post(agent.admin, &format!("/fault?{q}")).await?;
                return Ok(format!("fault {q}"));
            }
        }
        self.write_agents_file()?;
        Ok("agents file updated".into())
    }
}
