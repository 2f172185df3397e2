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
pub(crate) mod procs;
pub mod procstat;
mod ramp;
mod sockets;
pub(crate) mod steps;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::drive::{DriveArgs, DriveReport};
pub use crate::engine::Mark;
use crate::engine::Timeline;
use crate::engine::print_steps;
use crate::judge::{self, DriveBounds, ZeroUnlessSet, uninspected_summary};
pub use crate::run_args::RunArgs;
pub use options::{BedKind, LocalArgs, Via};
use procs::Pool;

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
    pub overload: crate::overload::OverloadReport,
}

/// Runs the orchestrator and returns its report (with `failures` filled).
pub async fn run(args: LocalArgs) -> anyhow::Result<LocalReport> {
    anyhow::ensure!(
        !args.compare,
        "--compare runs through compare::run, not run"
    );
    let traffic = args.run.traffic()?;
    let scenario = &traffic.scenario;
    let via = args.via();
    let per_agent = scenario
        .agent_workers
        .len()
        .max(scenario.agent_service_time.len());
    let n = args
        .agents
        .or(scenario.agents)
        .unwrap_or(if per_agent > 0 { per_agent } else { 2 });
    anyhow::ensure!(n >= 1, "--agents must be at least 1");
    let n_proxies = args.proxies.or(scenario.proxies).unwrap_or(1);
    anyhow::ensure!(n_proxies >= 1, "--proxies must be at least 1");
    anyhow::ensure!(
        n_proxies == 1 || via == Via::Proxy,
        "--proxies applies only via the proxy"
    );
    let duration = traffic.duration;
    let exe = std::env::current_exe()?;
    let specs = (0..n)
        .map(|i| capacity::agent_spec(&args, scenario, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let agent_args: Vec<Vec<String>> = specs
        .iter()
        .map(|s| capacity::process_args(&args, s))
        .collect();

    let dir = tempfile::Builder::new()
        .prefix("loadtest-local-")
        .tempdir()?;
    let bed = args.netbed.clone();
    anyhow::ensure!(
        bed.is_some() == (args.bed == BedKind::Netns),
        "the netns bed is made by the loadtest binary before its runtime starts"
    );
    anyhow::ensure!(
        !args.topology.node_local() || (bed.is_some() && via == Via::Proxy),
        "--topology {:?} places proxies on the netns bed: it needs --bed netns and --via proxy",
        args.topology
    );
    // On the bed the module emulator is a host of its own: a runtime whose sockets are its.
    let module = bed.as_ref().map(|b| b.module_host()).transpose()?;
    let modules = module.as_ref().map(|(rt, _)| rt.handle().clone());
    let (flow_args, flow_hosts) = flows::flows(scenario, bed.as_deref())?;
    let mut pool = Pool::new(dir.path().join("agents.json"), bed.clone());
    let mut failures = Vec::new();
    let plan = scenario.expanded_steps(duration);
    let touched: std::collections::HashSet<usize> = plan
        .iter()
        .filter(|s| s.action.changes_agent())
        .map(|s| s.agent)
        .collect();
    let expect = scenario.expect.clone();
    let samples: procstat::Samples = Default::default();
    let result = async {
        pool.spawn_agents_each(&exe, &agent_args).await?;
        let mut split = None;
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
                split = flows::split(scenario, &addrs)?;
                match &bed {
                    // One Service: every connection to its VIP, spread by kube-proxy's rules.
                    Some(b) => (b.vip(), b.vip()),
                    None => (addrs[0], addrs[1 % addrs.len()]),
                }
            }
            Via::Haproxy => {
                let a = pool.spawn_haproxy(&args.haproxy_bin, dir.path()).await?;
                let a = bed.as_ref().map_or(a, |b| b.vip());
                (a, a)
            }
        };
        // Node-local proxies with the socket: the module calls its own node's proxy over it.
        let module_target = match pool.front_socket(0) {
            Some(path) if via == Via::Proxy => crate::addr::RpcAddr::Unix(path),
            _ => target.into(),
        };
        let drive = DriveArgs {
            target: module_target.clone(),
            update_target: (update_target != target).then(|| update_target.into()),
            concurrency: args.concurrency,
            app_time: traffic.app_time,
            rate: traffic.rate,
            duration,
            attack_fraction: traffic.attack_fraction,
            anomalous_fraction: traffic.anomalous_fraction,
            persistent: args.persistent,
            sources: args.sources.clone(),
            // The orchestrator reads the agents itself: agents come and go during a scenario.
            agents_admin: Vec::new(),
            no_progress: false,
            flows: flow_args.clone(),
            split,
            ..DriveArgs::default()
        };
        eprintln!(
            "loadtest local: {n} agent(s) via {via:?}, target {module_target}{}, {} for {:?}",
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
                (None, None) if !drive.flows.is_empty() => {
                    let rates: Vec<String> =
                        drive.flows.iter().map(|f| f.rate.to_string()).collect();
                    format!("flows of {} tx/s", rates.join(" + "))
                }
                (None, None) => format!("{} tx/s", drive.rate),
            },
            drive.duration
        );
        pool.read_before().await;
        let admins: Vec<SocketAddr> = pool.agents.iter().map(|a| a.admin).collect();
        let share_window = expect.capacity_share_from.map(|from| {
            let admins = admins.clone();
            tokio::spawn(async move {
                tokio::time::sleep(from).await;
                crate::overload::read_served(&admins).await
            })
        });
        let sampler = procstat::sample_every(
            pool.front_pids.clone(),
            Duration::from_millis(250),
            samples.clone(),
        );
        let sockets = module
            .as_ref()
            .zip(bed.clone())
            .map(|((_, host), bed)| sockets::sample_every(bed, host.clone()));
        let timeline = Timeline::starting_now();
        let cx = steps::StepCtx {
            via,
            timeline: timeline.clone(),
            drive: drive.clone(),
            front: target,
            modules: modules.clone(),
        };
        let pids = pool.front_pids.clone();
        let mut testbed = steps::LocalBed {
            pool: &mut pool,
            cx,
        };
        let steps = timeline.play(&mut testbed, &plan, "local");
        let drives = {
            let (ramp, drive, pids, log) = (
                scenario.ramp.clone(),
                drive.clone(),
                pids.clone(),
                timeline.log.clone(),
            );
            let drives = async move {
                match &ramp {
                    Some(r) => ramp::run(r, &drive, &pids, &log).await,
                    None => crate::drive::run(drive).await,
                }
            };
            // On the bed, from the module's host.
            crate::netbed::on_module_host(modules.clone(), drives)
        };
        let report = tokio::select! {
            r = drives => r?,
            _ = steps => unreachable!("steps never finish"),
        };
        sampler.abort();
        let sockets = match sockets {
            Some(s) => Some(s.finish().await),
            None => None,
        };
        let mut report = report;
        pool.read_agents_into(&mut report).await;
        let served = match share_window {
            Some(start) => {
                let start = start.await?;
                let end = crate::overload::read_served(&admins).await;
                crate::overload::served_between(&start, &end)
            }
            None => report
                .agents
                .iter()
                .map(|a| a.stats.as_ref().map_or(0, |s| s.responses_timely))
                .collect(),
        };
        let (mut steps, marks) = timeline.finish().await;
        steps.push(format!("main drive: {}", uninspected_summary(&report)));
        if let Some(s) = &sockets {
            steps.push(s.judge(&report, duration, &mut failures));
        }
        steps.extend(pool.window_shares(&expect, &mut failures).await);
        steps.extend(pool.proxy_uninspected().await);
        anyhow::Ok((report, steps, marks, served))
    }
    .await;
    failures.extend(pool.check_alive());
    let stop_problems = pool.stop().await;
    if let Some((rt, _)) = module {
        rt.shutdown_background();
    }
    flow_hosts
        .into_iter()
        .for_each(|rt| rt.shutdown_background());
    let (report, mut steps, marks, served) = result?;
    failures.extend(stop_problems);
    let answered: u64 = report.tally.methods.values().map(|m| m.ok).sum();
    steps.extend(procstat::cpu_per_rpc(
        &samples.lock().expect("not poisoned"),
        answered,
    ));
    steps.extend(procstat::judge_growth(
        &samples.lock().expect("not poisoned"),
        duration,
        &expect,
        &mut failures,
    ));

    failures.extend(judge::expectations(&report, &expect, &touched));
    let overload = {
        let at_start = capacity::capacities_at(&specs, &plan, Duration::ZERO);
        let from = expect.capacity_share_from.unwrap_or(Duration::ZERO);
        let in_window = capacity::capacities_at(&specs, &plan, from);
        let served: Vec<u64> = served.into_iter().take(specs.len()).collect();
        let cpu = procstat::front_cpu(&samples.lock().expect("not poisoned")).map(|(c, _)| c);
        crate::overload::OverloadReport::of(&report, &at_start, (&in_window, &served), cpu)
    };
    steps.extend(overload.lines());
    failures.extend(crate::overload::judge(
        &overload,
        &expect,
        &scenario.flows,
        duration,
    ));
    let zero = ZeroUnlessSet {
        // The ramp ends at its first failed call: bounded only where asked.
        errors: scenario.ramp.is_none(),
        // HAProxy does not keep an update on its PreRequest's agent: orphans are its finding.
        orphaned: via != Via::Haproxy,
    };
    let bounds = DriveBounds::new(&args.run, &expect, zero);
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
    let marks = Mark::all(marks, &report);
    Ok(LocalReport {
        via,
        agents: pool.agents.len(),
        scenario: args.run.scenario_name(),
        drive: report,
        steps,
        failures,
        marks,
        overload,
    })
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
    let summary = format!(
        "via {:?}, {} agent(s), {}",
        report.via,
        report.agents,
        judge::drive_figures(&report.drive, true)
    );
    Ok(judge::print_result(&report.failures, &summary))
}
