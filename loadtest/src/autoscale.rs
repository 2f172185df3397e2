//! Autoscaling in a closed loop: a scenario's `[autoscale]` table makes `loadtest local` drive
//! a moving load through real proxies in front of simulated agents of finite capacity, while an
//! emulation of the Kubernetes HPA controller ([`hpa`]), configured from the shipped manifest
//! ([`manifest`]), scales the agents from what the proxies export. The same scenario runs once
//! per policy, side by side: the manifest's HPA (agent demand and CPU), CPU alone (what a plain
//! Service's users have), and a fixed pool sized for the peak; [`judge`] turns each run into the
//! figures it is judged by (uninspected calls, p99, cost, flapping, time to enough agents) and
//! [`plot`] draws them.
//!
//! Time can be scaled: `time_scale = 0.1` plays the HPA's sync period, stabilization windows
//! and policy periods, the proxies' demand smoothing and the agents' startup delay at a tenth
//! of their real length, so a five-minute scale-down window takes 30 s. What happens within
//! milliseconds (agents queueing, calls timing out) is not scaled.
//!
//! ```toml
//! duration = "120s"
//! proxies = 1
//! [autoscale]
//! time_scale = 0.1
//! agent_rpc = 250                 # RPC/s per agent: --hints-target-rpc, one agent's worth
//! service_time = "2.5ms"          # the simulated agent: 1 worker × 2.5 ms = 400 RPC/s
//! workers = 1
//! load = [["0s", 1.0], ["10s", 1.0], ["40s", 6.0]]   # agents' worth over the run
//! policies = ["demand", "cpu", "fixed"]
//! max_uninspected = 0.001         # exit status 1 if the first policy loses more
//! min_demand_while_shedding = 1.0 # and if, while it sheds, its demand's p10 ÷ load is lower
//! ```

mod demand;
pub mod hpa;
mod judge;
pub mod manifest;
mod plot;
mod run;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::drive::DriveArgs;
use crate::drive::profile::RateProfile;
use crate::local::options::LocalArgs;
use crate::run_args::Traffic;
pub use crate::scenario::autoscale::{AutoscaleSpec, Policy};
pub use judge::Figures;
pub use run::{PolicyRun, Sample, ScaleEvent};

/// The result of an autoscaling scenario.
#[derive(Debug, Serialize)]
pub struct AutoscaleReport {
    /// The scenario file.
    pub scenario: String,
    /// Its time scale.
    pub time_scale: f64,
    /// Per policy: the figures and the run.
    pub policies: Vec<PolicyReport>,
    /// Failed checks.
    pub failures: Vec<String>,
}

/// One policy's run and figures.
#[derive(Debug, Serialize)]
pub struct PolicyReport {
    /// The figures.
    pub figures: Figures,
    /// The run.
    pub run: PolicyRun,
}

/// `loadtest local` with an autoscaling scenario: runs it and returns the exit status, or
/// `None` if the scenario has no `[autoscale]` table.
pub async fn run_cli(args: &LocalArgs) -> anyhow::Result<Option<i32>> {
    let traffic = args.run.traffic()?;
    let Some(spec) = traffic.scenario.autoscale.clone() else {
        return Ok(None);
    };
    let scenario_path = args.run.scenario.clone().unwrap_or_default();
    let hpa_path = find_manifest(spec.hpa.as_deref(), &scenario_path)?;
    let scale = spec.time_scale;
    anyhow::ensure!(
        scale > 0.0 && scale <= 1.0,
        "time_scale must be within (0, 1]"
    );
    anyhow::ensure!(spec.agent_rpc > 0.0, "agent_rpc must be positive");
    let setup = setup(args, &traffic, &spec, &hpa_path)?;
    let policies =
        spec.policies
            .clone()
            .unwrap_or(vec![Policy::Demand, Policy::Cpu, Policy::Fixed]);
    let name = scenario_path.display().to_string();
    eprintln!(
        "loadtest local: autoscaling scenario {name}: {} proxies, load up to {:.1} agents' worth ({:.0} tx/s), time ×{scale}: sync {:?}, startup {:?}, HPA {} ({}..={} replicas), policies {policies:?}",
        setup.shares.len(),
        setup.profile.peak() * setup.rpc_per_tx / spec.agent_rpc,
        setup.profile.peak(),
        setup.sync,
        setup.startup,
        hpa_path.display(),
        setup.hpa.min_replicas,
        setup.hpa.max_replicas,
    );
    let mut reports = Vec::new();
    for &p in &policies {
        eprintln!("loadtest local: policy {p:?} for {:?}", setup.duration);
        let run = run::run(&setup, p).await?;
        let figures = judge::figures(&setup, &run);
        eprintln!("loadtest local: policy {p:?}: {}", row(p, &figures));
        reports.push(PolicyReport { figures, run });
    }
    let report = AutoscaleReport {
        scenario: name.clone(),
        time_scale: scale,
        failures: failures(&spec, &reports),
        policies: reports,
    };
    print!("{}", table(&report, &setup));
    if let Some(path) = &args.run.json {
        crate::drive::write_json(path, &report)?;
    }
    if let Some(path) = &args.plot {
        write_plot(path, &report, &setup)?;
    }
    Ok(Some(crate::judge::print_result(&report.failures, &name)))
}

/// Everything every policy's run shares: the processes, the load, the HPA, time scaled.
fn setup(
    args: &LocalArgs,
    traffic: &Traffic,
    spec: &AutoscaleSpec,
    hpa_path: &Path,
) -> anyhow::Result<run::Setup> {
    let scale = spec.time_scale;
    let n_proxies = args.proxies.or(traffic.scenario.proxies).unwrap_or(1);
    let shares = spec
        .shares
        .clone()
        .unwrap_or_else(|| vec![1.0 / n_proxies as f64; n_proxies]);
    anyhow::ensure!(
        shares.len() == n_proxies && (shares.iter().sum::<f64>() - 1.0).abs() < 1e-6,
        "shares: one per proxy, summing to 1"
    );
    let rpc_per_tx = 1.0
        + traffic.attack_fraction
        + (1.0 - traffic.attack_fraction) * traffic.anomalous_fraction;
    let points = spec
        .load
        .iter()
        .map(|(t, w)| {
            let t = crate::units::parse_duration(t).map_err(|e| anyhow::anyhow!("load: {e}"))?;
            Ok((t, w * spec.agent_rpc / rpc_per_tx))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let profile = RateProfile::new(points)?;
    let exe = std::env::current_exe()?;
    let mut agent = args.clone();
    agent.service_time = spec
        .service_time
        .parse()
        .map_err(|e| anyhow::anyhow!("service_time: {e}"))?;
    agent.workers = spec.workers;
    let peak_worth = profile.peak() * rpc_per_tx / spec.agent_rpc;
    Ok(run::Setup {
        exe: exe.clone(),
        proxy_bin: args.proxy_bin(&exe)?,
        agent_args: agent.agent_process_args(),
        proxy_args: proxy_args(args, traffic, spec),
        shares,
        profile,
        duration: traffic.duration,
        drive: DriveArgs {
            app_time: traffic.app_time,
            attack_fraction: traffic.attack_fraction,
            anomalous_fraction: traffic.anomalous_fraction,
            persistent: args.persistent,
            sources: args.sources.clone(),
            ..DriveArgs::default()
        },
        hpa: manifest::load(hpa_path)?.time_scaled(scale),
        sync: (spec.sync_period)
            .unwrap_or(Duration::from_secs(15))
            .mul_f64(scale),
        startup: (spec.startup_delay)
            .unwrap_or(Duration::from_secs(20))
            .mul_f64(scale),
        agent_rpc: spec.agent_rpc,
        rpc_per_tx,
        workers: spec.workers,
        demand_ceil: manifest::adapter_rounds_up(hpa_path)?,
        fixed_agents: run::need(peak_worth),
        bed: args.netbed.clone(),
    })
}

/// The proxies' flags: the scenario's and the command line's, then a demand target of one
/// agent's worth and a smoothing and a hint tick scaled with time, unless set.
fn proxy_args(args: &LocalArgs, traffic: &Traffic, spec: &AutoscaleSpec) -> Vec<String> {
    let smoothing = Duration::from_secs(10).mul_f64(spec.time_scale);
    let tick = Duration::from_secs(1).mul_f64(spec.time_scale);
    let mut proxy_args = traffic.scenario.proxy_args.clone();
    proxy_args.extend(args.proxy_args.iter().cloned());
    let given = |flag: &str| proxy_args.iter().any(|a| a.starts_with(flag));
    let mut defaults = Vec::new();
    if !given("--hints-target-rpc") {
        defaults.extend(["--hints-target-rpc".into(), spec.agent_rpc.to_string()]);
    }
    if !given("--hints-smoothing") {
        defaults.extend([
            "--hints-smoothing".into(),
            format!("{}ms", smoothing.as_millis()),
        ]);
    }
    if !given("--hints-tick") {
        defaults.extend([
            "--hints-tick".into(),
            format!("{}ms", tick.as_millis().max(10)),
        ]);
    }
    proxy_args.extend(defaults);
    proxy_args
}

/// The first policy past `max_uninspected` or below `min_demand_while_shedding`, and any
/// process that exited under a policy.
fn failures(spec: &AutoscaleSpec, reports: &[PolicyReport]) -> Vec<String> {
    let mut failures = Vec::new();
    let first_p10 = reports
        .first()
        .and_then(|f| f.figures.demand_while_shedding.p10.map(|p| (f, p)));
    if let (Some(min), Some((first, p10))) = (spec.min_demand_while_shedding, first_p10)
        && p10 < min
    {
        failures.push(format!(
            "{:?}: while shedding, the summed demand was {p10:.2}× the offered load (p10), less than {min:.2}×",
            first.run.policy
        ));
    }
    if let (Some(max), Some(first)) = (spec.max_uninspected, reports.first())
        && first.figures.uninspected > max
    {
        failures.push(format!(
            "{:?}: {:.3}% of calls uninspected, more than {:.3}%",
            first.run.policy,
            100.0 * first.figures.uninspected,
            100.0 * max
        ));
    }
    for r in reports {
        failures.extend(
            r.run
                .problems
                .iter()
                .filter(|p| p.contains("exited"))
                .map(|p| format!("{:?}: {p}", r.run.policy)),
        );
    }
    failures
}

/// Writes the runs' panels to `path`.
fn write_plot(path: &Path, report: &AutoscaleReport, setup: &run::Setup) -> anyhow::Result<()> {
    let runs: Vec<(String, &PolicyRun)> = report
        .policies
        .iter()
        .map(|p| (label(p.run.policy, &p.figures), &p.run))
        .collect();
    let title = format!(
        "{}: time ×{} (sync {:?}, startup {:?})",
        report.scenario, report.time_scale, setup.sync, setup.startup
    );
    let svg = plot::svg(&title, &runs, setup.duration.as_secs_f64());
    std::fs::write(path, svg).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn label(p: Policy, f: &Figures) -> String {
    format!(
        "{}: {:.3}% uninspected, p99 {:.1} ms, {:.2}× ideal agent-seconds, {} direction changes",
        policy_name(p),
        100.0 * f.uninspected,
        f.pre_p99_ms,
        f.cost,
        f.direction_changes
    )
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Demand => "HPA: demand + CPU (manifest)",
        Policy::Cpu => "HPA: CPU 70% only",
        Policy::Fixed => "fixed pool for the peak",
    }
}

fn row(p: Policy, f: &Figures) -> String {
    let tte: Vec<String> = f
        .time_to_enough_s
        .iter()
        .map(|t| t.map_or("never".into(), |t| format!("{t:.1}")))
        .collect();
    format!(
        "| {} | {:.3}% ({} of {}) | {:.1} | {:.0} / {:.0} = {:.2}× | {} (load {}) | {} | {} | {:.1} | {} | {} |",
        policy_name(p),
        100.0 * f.uninspected,
        f.failed_calls,
        f.calls,
        f.pre_p99_ms,
        f.agent_seconds,
        f.ideal_agent_seconds,
        f.cost,
        f.direction_changes,
        f.load_changes,
        f.scale_events,
        if tte.is_empty() {
            "-".into()
        } else {
            tte.join(", ")
        },
        f.under_provisioned_s,
        f.peak_pods,
        shed_demand(&f.demand_while_shedding),
    )
}

/// `min, p10, p50 (n, below 1)`, or `-` without shed calls.
fn shed_demand(d: &demand::ShedDemand) -> String {
    match (d.min, d.p10, d.p50) {
        (Some(min), Some(p10), Some(p50)) => format!(
            "{min:.2}, {p10:.2}, {p50:.2} ({}, {})",
            d.intervals, d.below_one
        ),
        _ => "-".into(),
    }
}

fn table(r: &AutoscaleReport, setup: &run::Setup) -> String {
    let mut o = format!(
        "\n{} (time ×{}: sync {:?}, agent startup {:?})\n\n| policy | uninspected calls | PreRequest p99 ms | agent-s / ideal | direction changes | scale events | s to enough agents after each rise | s under-provisioned | peak agents | demand ÷ load while shedding: min, p10, p50 (intervals, below 1) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        r.scenario, r.time_scale, setup.sync, setup.startup
    );
    for p in &r.policies {
        o.push_str(&row(p.run.policy, &p.figures));
        o.push('\n');
        let goals: Vec<String> = p
            .figures
            .goals()
            .iter()
            .map(|(g, ok)| format!("{g}: {}", if *ok { "yes" } else { "NO" }))
            .collect();
        o.push_str(&format!("  goals — {}\n", goals.join("; ")));
    }
    o
}

/// The manifest: `given` (or the default path) from the working directory, else from the
/// directories above the scenario file.
fn find_manifest(given: Option<&Path>, scenario: &Path) -> anyhow::Result<PathBuf> {
    let rel = given.unwrap_or(Path::new(manifest::DEFAULT_PATH));
    if rel.is_absolute() || rel.exists() {
        return Ok(rel.to_owned());
    }
    let dir = std::fs::canonicalize(scenario)
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned));
    for d in dir.iter().flat_map(|d| d.ancestors()) {
        let p = d.join(rel);
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "{} not found from the working directory or above {}",
        rel.display(),
        scenario.display()
    )
}
