//! `loadtest local`: the whole system on one machine. Starts N simulated agents as child
//! processes (`loadtest agent`), then either the real `sigsci-proxy` watching an agents file,
//! HAProxy in TCP round-robin mode (the baseline a plain Service gives), or nothing (`direct`:
//! straight to agent 0); drives load, runs scenario steps, prints the report, stops everything,
//! and fails (non-zero) if any check failed. `--compare` measures the proxy's overhead instead
//! (see [`compare`]).

mod accounts;
mod capacity;
pub mod compare;
mod flows;
pub(crate) mod options;
pub mod procstat;
mod ramp;
mod session;
mod sockets;
pub(crate) mod steps;

use std::time::Duration;

use serde::Serialize;

use crate::drive::DriveReport;
pub use crate::engine::Mark;
use crate::engine::print_steps;
use crate::judge::{self, DriveBounds, ZeroUnlessSet};
use crate::overload::OverloadReport;
use crate::processes::ChildProcesses;
pub use crate::run_args::RunArgs;
use crate::scenario::{Expect, Scenario};
pub use options::{BedKind, LocalArgs, Via};
use session::{Hosts, Session, Setup};

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
    /// Capacity, inspected calls, failed-open latency, by second, agent and flow.
    pub overload: OverloadReport,
}

/// Runs the orchestrator and returns its report (with `failures` filled).
pub async fn run(args: LocalArgs) -> anyhow::Result<LocalReport> {
    anyhow::ensure!(
        !args.compare,
        "--compare runs through compare::run, not run"
    );
    let traffic = args.run.traffic()?;
    let setup = Setup::new(&args, &traffic)?;
    let dir = tempfile::Builder::new()
        .prefix("loadtest-local-")
        .tempdir()?;
    let hosts = Hosts::new(&args, &traffic.scenario)?;
    let mut procs = ChildProcesses::new(dir.path().join("agents.json"), args.netbed.clone());
    let session = Session {
        args: &args,
        traffic: &traffic,
        setup: &setup,
        hosts: &hosts,
        dir: dir.path(),
        samples: Default::default(),
    };
    let mut failures = Vec::new();
    let result = session.play(&mut procs, &mut failures).await;
    failures.extend(procs.check_alive());
    let stop_problems = procs.stop().await;
    let killed = killed_agents(&procs);
    let samples = session.samples.clone();
    drop(session);
    hosts.shutdown();
    let played = result?;
    failures.extend(stop_problems);
    let samples = samples.lock().expect("not poisoned");
    let mut steps = played.steps;
    let report = played.report;
    let answered: u64 = report.tally.methods.values().map(|m| m.ok).sum();
    steps.extend(procstat::cpu_per_rpc(&samples, answered));
    let (duration, scenario) = (traffic.duration, &traffic.scenario);
    let expect = &scenario.expect;
    steps.extend(procstat::judge_growth(
        &samples,
        duration,
        expect,
        &mut failures,
    ));
    failures.extend(judge::expectations(&report, expect, &setup.touched));
    let cpu = procstat::front_cpu(&samples).map(|(c, _)| c);
    let overload = overload_report(&setup, expect, &report, played.served, cpu);
    steps.extend(overload.lines());
    failures.extend(crate::overload::judge(
        &overload,
        expect,
        &scenario.flows,
        duration,
    ));
    failures.extend(bounds_failures(&args, &setup, scenario, &report, &killed));
    Ok(LocalReport {
        via: setup.via,
        agents: procs.agents.len(),
        scenario: args.run.scenario_name(),
        marks: Mark::all(played.marks, &report),
        drive: report,
        steps,
        failures,
        overload,
    })
}

/// Agents a scenario killed: their counters cannot be read after the run, and that is the
/// scenario, not a fault (prefixes of their problems).
fn killed_agents(procs: &ChildProcesses) -> Vec<String> {
    procs
        .agents
        .iter()
        .filter(|a| a.expect_exit && a.last.is_none())
        .map(|a| format!("agent {}: ", a.admin))
        .collect()
}

/// Capacity and what each agent served, at the start and in the share window.
fn overload_report(
    setup: &Setup,
    expect: &Expect,
    report: &DriveReport,
    served: Vec<u64>,
    cpu: Option<Duration>,
) -> OverloadReport {
    let (specs, plan) = (&setup.specs, &setup.plan);
    let at_start = capacity::capacities_at(specs, plan, Duration::ZERO);
    let from = expect.capacity_share_from.unwrap_or(Duration::ZERO);
    let in_window = capacity::capacities_at(specs, plan, from);
    let served: Vec<u64> = served.into_iter().take(specs.len()).collect();
    OverloadReport::of(report, &at_start, (&in_window, &served), cpu)
}

/// The bounds every run checks, with local's defaults.
fn bounds_failures(
    args: &LocalArgs,
    setup: &Setup,
    scenario: &Scenario,
    report: &DriveReport,
    killed: &[String],
) -> Vec<String> {
    let zero = ZeroUnlessSet {
        // The ramp ends at its first failed call: bounded only where asked.
        errors: scenario.ramp.is_none(),
        // HAProxy does not keep an update on its PreRequest's agent: orphans are its finding.
        orphaned: setup.via != Via::Haproxy,
    };
    let bounds = DriveBounds::new(&args.run, &scenario.expect, zero);
    let mut judged = bounds.failures(report, killed);
    if scenario.ramp.is_some() {
        // The ramp ends at the first failed call or overflow: that is its finding, not a fault.
        judged.retain(|f| !f.contains("could not start"));
    }
    judged
}

/// `loadtest local` without an `[autoscale]` table (`crate::cli::run_local` dispatches): prints
/// the report; exit status 1 if any check failed.
pub async fn run_cli(args: LocalArgs) -> anyhow::Result<i32> {
    if args.compare {
        return compare::run_cli(args).await;
    }
    let json = args.run.json.clone();
    let plot = args.plot.clone();
    let report = run(args).await?;
    let who = format!("via {:?}, {} agent(s)", report.via, report.agents);
    let scenario = report.scenario.as_deref();
    println!(
        "{who}{}",
        scenario.map_or(String::new(), |s| format!(", scenario {s}"))
    );
    print!("{}", report.drive.to_text());
    print_steps(&report.steps, &report.marks);
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
            "{who}{}",
            scenario.map_or(String::new(), |s| format!(", {s}"))
        );
        let svg = crate::drive::plot::svg(&title, &report.drive.timeline, &marks);
        std::fs::write(&path, svg)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    let summary = format!("{who}, {}", judge::drive_figures(&report.drive, true));
    Ok(judge::print_result(&report.failures, &summary))
}
