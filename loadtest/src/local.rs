//! `loadtest local`: the whole system on one machine. Starts N simulated agents as child
//! processes (`loadtest agent`), then either the real `sigsci-proxy` watching an agents file,
//! HAProxy in TCP round-robin mode (the baseline a plain Service gives), or nothing (`direct`:
//! straight to agent 0); drives load, runs scenario steps, prints the report, stops everything,
//! and fails (non-zero) if any check failed. `--compare` measures the proxy's overhead instead
//! (see [`compare`]).

mod abuse;
mod accounts;
pub mod compare;
pub(crate) mod procs;
pub mod procstat;
mod ramp;
pub mod scenario;
mod steps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::drive::{DriveArgs, DriveReport};
use crate::units::{ServiceTime, parse_duration};
use procs::Pool;
use scenario::Scenario;

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
    /// Proxy replicas [default: 1, or the scenario's]. With 2 or more, PreRequests go to the
    /// first and UpdateRequests/PostRequests to the second (affinity across replicas).
    #[arg(long)]
    pub proxies: Option<usize>,
    /// Simulated app time between PreRequest and UpdateRequest [default: exp:2ms, or the
    /// scenario's].
    #[arg(long)]
    pub app_time: Option<ServiceTime>,
    /// Closed loop with this many emulated modules instead of `--rate` (max throughput); with
    /// `--compare`, the workers of the maximum-rate runs [default there: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,
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
    /// Also plot the PreRequest latency and the errors over time, with the steps' marks, as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Measure the proxy's overhead: a paired open-loop run alternating transactions between
    /// agent 0 (direct) and the proxy, then each path's maximum rate in closed loop
    /// (`--concurrency`, default 16), and the proxy's upstream connects per second. Defaults
    /// here: `--agents 1 --rate 2000 --duration 10s`.
    #[arg(long, conflicts_with_all = ["scenario", "direct", "via", "proxies", "plot"])]
    pub compare: bool,
    /// With `--compare`: length of each closed-loop (maximum rate) run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub max_rate_duration: Duration,
    /// With `--compare`: transactions per block on one path (see `drive --compare-block`).
    /// 1 pairs single transactions, each path at half `--rate`; e.g. 1000 at 2000 tx/s runs
    /// each path at the full rate in half-second blocks, the proxy idle during the direct ones.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub compare_block: u64,
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
    /// Timed observations of the steps (ejection, last PreRequest, drain), with the errors in
    /// calls that ended after each.
    pub marks: Vec<Mark>,
}

/// Something a step observed at a time into the drive.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    /// What happened.
    pub what: String,
    /// When, from the drive's start, milliseconds.
    pub at_ms: f64,
    /// Failed calls that ended after it (bucket resolution, 100 ms).
    pub errors_after: u64,
    /// Of them, refused connections.
    pub refused_after: u64,
}

/// Marks recorded while steps run: (what, time into the drive).
type Marks = std::sync::Arc<std::sync::Mutex<Vec<(String, Duration)>>>;

impl LocalArgs {
    fn via(&self) -> Via {
        if self.direct { Via::Direct } else { self.via }
    }

    /// Arguments for every `loadtest agent` child.
    fn agent_process_args(&self) -> Vec<String> {
        let mut a = vec![
            "--service-time".to_string(),
            self.service_time.to_string().replace("µs", "us"),
            "--workers".into(),
            self.workers.to_string(),
            "--flag-fraction".into(),
            self.flag_fraction.to_string(),
        ];
        a.extend(self.agent_args.iter().cloned());
        a
    }

    /// The sigsci-proxy binary: `--proxy-bin`, else next to `exe`.
    fn proxy_bin(&self, exe: &std::path::Path) -> anyhow::Result<PathBuf> {
        match &self.proxy_bin {
            Some(b) => Ok(b.clone()),
            None => procs::find_proxy_bin(exe),
        }
    }
}

/// Bounds a drive must respect; what `run` and `--compare` both check.
struct DriveBounds {
    /// `None` = unlimited (judged by a fraction or not at all).
    max_errors: Option<u64>,
    /// Refused connections do not count toward `max_errors`.
    allow_refused: bool,
    /// Most orphaned + expired updates; `None` = unlimited.
    max_orphaned: Option<u64>,
}

impl DriveBounds {
    /// Every bound `report` broke, and its problems except those of agents in `killed`
    /// (prefixes `agent ADMIN: `; a killed agent's counters cannot be read afterwards).
    fn failures(&self, report: &DriveReport, killed: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        let max_errors = self.max_errors;
        let counted = if self.allow_refused {
            report.errors_except_refused()
        } else {
            report.total_errors()
        };
        if let Some(max_errors) = max_errors
            && counted > max_errors
        {
            failures.push(format!(
                "{counted} failed calls{} (at most {max_errors} allowed)",
                if self.allow_refused {
                    " other than refused connections"
                } else {
                    ""
                }
            ));
        }
        let lost = report.updates_orphaned + report.updates_expired;
        if let Some(max) = self.max_orphaned
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
        failures.extend(
            report
                .problems
                .iter()
                .filter(|p| !killed.iter().any(|k| p.starts_with(k.as_str())))
                .cloned(),
        );
        failures
    }
}

/// Runs the orchestrator and returns its report (with `failures` filled).
pub async fn run(args: LocalArgs) -> anyhow::Result<LocalReport> {
    anyhow::ensure!(
        !args.compare,
        "--compare runs through compare::run, not run"
    );
    let scenario = match &args.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let via = args.via();
    let n = args.agents.or(scenario.agents).unwrap_or(2);
    anyhow::ensure!(n >= 1, "--agents must be at least 1");
    let n_proxies = args.proxies.or(scenario.proxies).unwrap_or(1);
    anyhow::ensure!(n_proxies >= 1, "--proxies must be at least 1");
    anyhow::ensure!(
        n_proxies == 1 || via == Via::Proxy,
        "--proxies applies only via the proxy"
    );
    let app_time = match (&args.app_time, &scenario.app_time) {
        (Some(t), _) => *t,
        (None, Some(t)) => t.parse().map_err(|e| anyhow::anyhow!("app_time: {e}"))?,
        (None, None) => DriveArgs::default().app_time,
    };
    let duration = args
        .duration
        .or(scenario.duration)
        .unwrap_or(Duration::from_secs(10));
    let exe = std::env::current_exe()?;
    let agent_args = args.agent_process_args();

    let dir = tempfile::Builder::new()
        .prefix("loadtest-local-")
        .tempdir()?;
    let mut pool = Pool::new(dir.path().join("agents.json"));
    let mut failures = Vec::new();
    let marks: Marks = Default::default();
    let plan = scenario.expanded_steps(duration);
    let touched: std::collections::HashSet<usize> = plan
        .iter()
        .filter(|s| s.action.changes_agent())
        .map(|s| s.agent)
        .collect();
    let expect = scenario.expect.clone();
    let samples: procstat::Samples = Default::default();
    let result = async {
        pool.spawn_agents(&exe, n, &agent_args).await?;
        let (target, update_target): (SocketAddr, SocketAddr) = match via {
            Via::Direct => (pool.agents[0].rpc, pool.agents[0].rpc),
            Via::Proxy => {
                let bin = args.proxy_bin(&exe)?;
                let mut addrs = Vec::new();
                let mut proxy_args = scenario.proxy_args.clone();
                proxy_args.extend(args.proxy_args.iter().cloned());
                for _ in 0..n_proxies {
                    addrs.push(pool.spawn_proxy(&bin, &proxy_args).await?);
                }
                (addrs[0], addrs[1 % addrs.len()])
            }
            Via::Haproxy => {
                let a = pool.spawn_haproxy(&args.haproxy_bin, dir.path()).await?;
                (a, a)
            }
        };
        let drive = DriveArgs {
            target: target.into(),
            update_target: (update_target != target).then(|| update_target.into()),
            concurrency: args.concurrency,
            app_time,
            rate: args.rate.or(scenario.rate).unwrap_or(1000.0),
            duration,
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
            // The orchestrator reads the agents itself: agents come and go during a scenario.
            agents_admin: Vec::new(),
            no_progress: false,
            ..DriveArgs::default()
        };
        eprintln!(
            "loadtest local: {n} agent(s) via {via:?}, target {target}{}, {} for {:?}",
            if update_target != target {
                format!(", updates to {update_target}")
            } else {
                String::new()
            },
            match (&scenario.ramp, drive.concurrency) {
                (Some(r), _) => format!(
                    "ramp from {} tx/s x{} up to {}, {:?} each",
                    r.start, r.factor, r.max_rate, r.step_duration
                ),
                (None, Some(c)) => format!("closed loop x{c}"),
                (None, None) => format!("{} tx/s", drive.rate),
            },
            drive.duration
        );
        pool.read_before().await;
        let sampler = procstat::sample_every(
            pool.front_pids.clone(),
            Duration::from_millis(250),
            samples.clone(),
        );
        let steps_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Instant::now();
        let cx = steps::StepCtx {
            via,
            start,
            log: steps_log.clone(),
            marks: marks.clone(),
            drive: drive.clone(),
            front: target,
            background: Default::default(),
        };
        let background = cx.background.clone();
        let pids = pool.front_pids.clone();
        let pool_ref = &mut pool;
        let steps = async move {
            for step in &plan {
                tokio::time::sleep_until(start + step.at).await;
                let outcome = pool_ref.apply(step, &cx).await;
                let target = if step.action.is_agent_action() {
                    format!(" agent {}", step.agent)
                } else if step.action.is_proxy_action() {
                    format!(" proxy {}", step.proxy)
                } else {
                    String::new()
                };
                let line = format!(
                    "t={:?} {:?}{target}: {}",
                    step.at,
                    step.action,
                    outcome.unwrap_or_else(|e| format!("failed: {e:#}"))
                );
                eprintln!("loadtest local: {line}");
                cx.log.lock().expect("not poisoned").push(line);
                cx.marks
                    .lock()
                    .expect("not poisoned")
                    .push((format!("{:?}{target}", step.action), step.at));
            }
            std::future::pending::<()>().await;
        };
        let drives = async {
            match &scenario.ramp {
                Some(r) => ramp::run(r, &drive, &pids, &steps_log).await,
                None => crate::drive::run(drive.clone()).await,
            }
        };
        let report = tokio::select! {
            r = drives => r?,
            _ = steps => unreachable!("steps never finish"),
        };
        sampler.abort();
        let pending = std::mem::take(&mut *background.lock().expect("not poisoned"));
        let mut bursts = Vec::new();
        for h in pending {
            if let Ok((line, burst)) = h.await {
                steps_log.lock().expect("not poisoned").push(line.clone());
                if let Some(b) = burst {
                    bursts.push((line, b));
                }
            }
        }
        let mut report = report;
        pool.read_agents_into(&mut report).await;
        let mut steps = std::mem::take(&mut *steps_log.lock().expect("not poisoned"));
        for (line, b) in &bursts {
            steps.push(format!("{line}: {}", uninspected_summary(b)));
        }
        steps.push(format!("main drive: {}", uninspected_summary(&report)));
        steps.extend(pool.window_shares(&expect, &mut failures).await);
        steps.extend(pool.proxy_uninspected().await);
        anyhow::Ok((report, steps))
    }
    .await;
    failures.extend(pool.check_alive());
    let stop_problems = pool.stop().await;
    let (report, mut steps) = result?;
    failures.extend(stop_problems);
    steps.extend(procstat::judge_growth(
        &samples.lock().expect("not poisoned"),
        duration,
        &expect,
        &mut failures,
    ));

    let e = &expect;
    for (i, a) in report.agents.iter().enumerate() {
        let share = a.prerequest_share;
        let (lo, hi) = if touched.contains(&i) {
            (None, e.changed_max_share)
        } else {
            (e.min_share, e.max_share)
        };
        if lo.is_some_and(|lo| share < lo) || hi.is_some_and(|hi| share > hi) {
            failures.push(format!(
                "agent {i} got {:.1}% of PreRequests (expected {}..{})",
                100.0 * share,
                lo.map_or("0".into(), |v| format!("{:.0}%", 100.0 * v)),
                hi.map_or("100%".into(), |v| format!("{:.0}%", 100.0 * v)),
            ));
        }
    }
    let t = &report.tally;
    if let Some(max) = e.max_failed_open
        && t.failed_open > max
    {
        failures.push(format!(
            "{} transactions failed open (at most {max} allowed)",
            t.failed_open
        ));
    }
    let fraction = |x: u64, of: u64| if of == 0 { 0.0 } else { x as f64 / of as f64 };
    if let Some(max) = e.max_failed_open_fraction {
        let f = fraction(t.failed_open, t.transactions);
        if f > max {
            failures.push(format!(
                "{:.2}% of transactions failed open (at most {:.2}% allowed)",
                100.0 * f,
                100.0 * max
            ));
        }
    }
    if let Some(max) = e.max_error_fraction {
        let calls: u64 = t.methods.values().map(|m| m.calls).sum();
        let failed = if e.allow_refused {
            report.errors_except_refused()
        } else {
            report.total_errors()
        };
        let f = fraction(failed, calls);
        if f > max {
            failures.push(format!(
                "{:.2}% of calls failed{} (at most {:.2}% allowed)",
                100.0 * f,
                if e.allow_refused {
                    " other than refused connections"
                } else {
                    ""
                },
                100.0 * max
            ));
        }
    }
    let bounds = DriveBounds {
        max_errors: args.max_errors.or(expect.max_errors).or(
            match (e.max_error_fraction, &scenario.ramp) {
                (None, None) => Some(0),
                _ => None,
            },
        ),
        allow_refused: expect.allow_refused,
        max_orphaned: args.max_orphaned.or(expect.max_orphaned).or(match via {
            Via::Haproxy => None,
            _ => Some(0),
        }),
    };
    // A killed agent's counters cannot be read after the run; that is the scenario, not a fault.
    let killed: Vec<String> = pool
        .agents
        .iter()
        .filter(|a| a.expect_exit && a.last.is_none())
        .map(|a| format!("agent {}: ", a.admin))
        .collect();
    let mut judged = bounds.failures(&report, &killed);
    if scenario.ramp.is_some() {
        // The ramp ends at the first failed call or overflow: that is its finding, not a fault.
        judged.retain(|f| !f.contains("could not start"));
    }
    failures.extend(judged);
    let marks = std::mem::take(&mut *marks.lock().expect("not poisoned"))
        .into_iter()
        .map(|(what, at)| {
            let (errors_after, refused_after) = report.errors_after(at);
            Mark {
                what,
                at_ms: at.as_secs_f64() * 1e3,
                errors_after,
                refused_after,
            }
        })
        .collect();
    Ok(LocalReport {
        via,
        agents: pool.agents.len(),
        scenario: args.scenario.as_ref().map(|p| p.display().to_string()),
        drive: report,
        steps,
        failures,
        marks,
    })
}

/// Failed-open transactions and failed calls by method and kind: what went uninspected.
fn uninspected_summary(r: &DriveReport) -> String {
    let t = &r.tally;
    let mut parts = Vec::new();
    for (m, mr) in &t.methods {
        let failed: u64 = mr.errors.values().sum();
        if failed > 0 {
            let kinds: Vec<String> = mr
                .errors
                .iter()
                .map(|(k, n)| format!("{k:?} {n}"))
                .collect();
            parts.push(format!("{m} {failed} ({})", kinds.join(", ")));
        }
    }
    format!(
        "{} transactions, {} failed open ({:.2}%){}",
        t.transactions,
        t.failed_open,
        if t.transactions == 0 {
            0.0
        } else {
            100.0 * t.failed_open as f64 / t.transactions as f64
        },
        if parts.is_empty() {
            String::new()
        } else {
            format!("; failed calls: {}", parts.join("; "))
        }
    )
}

/// `loadtest local`: prints the report; exit status 1 if any check failed.
pub async fn run_cli(args: LocalArgs) -> anyhow::Result<i32> {
    if args.compare {
        return compare::run_cli(args).await;
    }
    let json = args.json.clone();
    let plot = args.plot.clone();
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
    for m in &report.marks {
        println!(
            "mark: t={:.0}ms {} (then {} failed calls, {} of them refused)",
            m.at_ms, m.what, m.errors_after, m.refused_after
        );
    }
    if let Some(path) = json {
        crate::drive::write_json(&path, &report)?;
    }
    if let Some(path) = plot {
        let marks: Vec<(String, f64)> = report
            .marks
            .iter()
            .map(|m| (m.what.clone(), m.at_ms / 1e3))
            .collect();
        let title = format!(
            "via {:?}, {} agent(s){}",
            report.via,
            report.agents,
            report
                .scenario
                .as_ref()
                .map_or(String::new(), |s| format!(", {s}"))
        );
        let svg = crate::drive::plot::svg(&title, &report.drive.timeline, &marks);
        std::fs::write(&path, svg)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    for f in &report.failures {
        println!("FAIL: {f}");
    }
    let d = &report.drive;
    let pre = d.tally.methods.get(crate::rpc::PRE_REQUEST);
    let shares: Vec<String> = d
        .agents
        .iter()
        .map(|a| format!("{:.1}", 100.0 * a.prerequest_share))
        .collect();
    println!(
        "RESULT {}: via {:?}, {} agent(s), {:.0} tx/s, errors {} (refused {}), orphaned+expired {}, PreRequest p50 {} µs p99 {} µs, shares % [{}]",
        if report.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        },
        report.via,
        report.agents,
        d.achieved_rate,
        d.total_errors(),
        d.total_errors() - d.errors_except_refused(),
        d.updates_orphaned + d.updates_expired,
        pre.map_or(0, |m| m.latency_us.p50),
        pre.map_or(0, |m| m.latency_us.p99),
        shares.join(" ")
    );
    Ok(if report.failures.is_empty() { 0 } else { 1 })
}
