//! `loadtest cluster`: the same scenario timeline as `loadtest local`, against a running
//! cluster. The module emulator drives the proxy Service (`--target`) while the steps act
//! through the API server: the agent Deployment is scaled through its `scale` subresource, agent
//! pods are deleted (gracefully, or with grace 0 for `kill`), a proxy pod is deleted to drain
//! it (its preStop hook runs `sigsci-proxy drain`). The agents' `/stats` and the proxies'
//! `/metrics` are read through the API server's pod proxy, so the run needs no port-forward and
//! works the same from a laptop (kubeconfig) and from a Job (its ServiceAccount). The report
//! is judged by the same checks as `local` (errors, orphaned updates, shares, failed open).

mod api;
mod counters;
mod options;
mod plan;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::addr::RpcAddr;
use crate::drive::{DriveArgs, DriveReport};
use crate::engine::{Mark, Testbed, Timeline};
use crate::judge::{self, DriveBounds, ZeroUnlessSet, uninspected_summary};
use crate::run_args::Traffic;
use crate::scenario::Action;
use crate::scenario::Scenario;
use api::Cluster;
use counters::{Agents, Proxies};
pub use options::ClusterArgs;
use plan::Op;

/// The result of `loadtest cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// Namespace.
    pub namespace: String,
    /// Where the RPCs went.
    pub target: String,
    /// Scenario file, if any.
    pub scenario: Option<String>,
    /// Agent pods seen, by index (the `agent = i` of the steps).
    pub agent_pods: Vec<String>,
    /// The agent Deployment's replicas: as found, as driven, and at the end.
    pub replicas: Replicas,
    /// The drive's report, with the agents' counters read through the pod proxy.
    pub drive: DriveReport,
    /// Scenario steps executed, with their outcome, then the proxies' counters.
    pub steps: Vec<String>,
    /// Failed checks; empty = passed.
    pub failures: Vec<String>,
    /// The steps' times, with the errors in calls that ended after each.
    pub marks: Vec<Mark>,
}

/// The agent Deployment's `spec.replicas` over the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Replicas {
    /// Before the run.
    pub found: i32,
    /// When the drive started.
    pub driven: i32,
    /// After the run (restored to `found` unless `--keep-scale`).
    pub end: i32,
}

/// Runs the scenario against the cluster `client` talks to and judges it.
pub async fn run(args: ClusterArgs, client: kube::Client) -> anyhow::Result<ClusterReport> {
    let traffic = args.run.traffic()?;
    let scenario = &traffic.scenario;
    let plan = plan::plan(scenario, traffic.duration)?;
    let target = match &args.target {
        Some(t) => t.clone(),
        None => RpcAddr::Tcp(format!("sigsci-proxy.{}.svc:9999", args.namespace)),
    };
    let drive = drive_args(&args, &traffic, &target)?;
    let front = resolve_front(&plan, &target).await?;
    let cluster = Cluster::new(
        client,
        &args.namespace,
        &args.agent_deployment,
        &args.agent_selector,
        &args.proxy_selector,
    );
    let mut steps_log = Vec::new();
    let found = cluster.agent_replicas().await?;
    let want = args
        .agents
        .or(scenario.agents)
        .map_or(Ok(found), i32::try_from)?;
    if want != found {
        cluster.scale_agents(want).await?;
        steps_log.push(format!("agent Deployment scaled {found} → {want}"));
    }
    let testbed = (&args, scenario, &cluster);
    let result = drive_and_steps(testbed, &plan, drive, front, want, &mut steps_log).await;
    let end = restore(&args, &cluster, (found, want), &mut steps_log).await;
    let (report, agent_pods, mut failures, marks) = result?;
    steps_log.extend(scenario_notes(scenario));

    let expect = &scenario.expect;
    let touched: HashSet<usize> = plan
        .iter()
        .filter(|p| p.step.action.changes_agent())
        .map(|p| p.step.agent)
        .collect();
    failures.extend(judge::expectations(&report, expect, &touched));
    let zero = ZeroUnlessSet {
        errors: true,
        orphaned: true,
    };
    let bounds = DriveBounds::new(&args.run, expect, zero);
    failures.extend(bounds.failures(&report, &[]));
    let marks = Mark::all(marks, &report);
    Ok(ClusterReport {
        namespace: args.namespace.clone(),
        target: target.to_string(),
        scenario: args.run.scenario_name(),
        agent_pods,
        replicas: Replicas {
            found,
            driven: want,
            end,
        },
        drive: report,
        steps: steps_log,
        failures,
        marks,
    })
}

/// The main drive's configuration, checked.
fn drive_args(
    args: &ClusterArgs,
    traffic: &Traffic,
    target: &RpcAddr,
) -> anyhow::Result<DriveArgs> {
    let drive = DriveArgs {
        target: target.clone(),
        rate: traffic.rate,
        duration: traffic.duration,
        timeout: args.timeout,
        app_time: traffic.app_time,
        attack_fraction: traffic.attack_fraction,
        anomalous_fraction: traffic.anomalous_fraction,
        agents_admin: Vec::new(),
        no_progress: true,
        ..DriveArgs::default()
    };
    if let Err(errs) = drive.validate() {
        anyhow::bail!("{}", errs.join("; "));
    }
    Ok(drive)
}

/// Bad clients and floods connect to one address: the Service's, resolved once (if the plan
/// has any).
async fn resolve_front(
    plan: &[plan::Planned],
    target: &RpcAddr,
) -> anyhow::Result<Option<SocketAddr>> {
    if !plan.iter().any(|p| p.op == Op::Background) {
        return Ok(None);
    }
    let RpcAddr::Tcp(t) = target else {
        anyhow::bail!("bad-clients, conn-flood: --target must be host:port");
    };
    let addr = tokio::net::lookup_host(t.as_str())
        .await?
        .next()
        .with_context(|| format!("{t} resolves to no address"))?;
    Ok(Some(addr))
}

/// Puts the agent Deployment back to the `found` replicas however the run ended (unless
/// `--keep-scale`); returns the replicas it ends with.
async fn restore(
    args: &ClusterArgs,
    cluster: &Cluster,
    (found, want): (i32, i32),
    log: &mut Vec<String>,
) -> i32 {
    let now = cluster.agent_replicas().await.unwrap_or(want);
    if args.keep_scale || now == found {
        return now;
    }
    match cluster.scale_agents(found).await {
        Ok(()) => {
            log.push(format!("agent Deployment restored {now} → {found}"));
            found
        }
        Err(e) => {
            log.push(format!(
                "restoring the agent Deployment to {found} failed: {e:#}"
            ));
            now
        }
    }
}

/// What the run produced before judging: the drive's report (agents filled in), the agent
/// pods by index, failures found on the way, the steps' marks.
type Outcome = (
    DriveReport,
    Vec<String>,
    Vec<String>,
    Vec<(String, Duration)>,
);

/// Waits for the pods, reads the counters, drives while the steps run, reads them again.
async fn drive_and_steps(
    (args, scenario, cluster): (&ClusterArgs, &Scenario, &Cluster),
    plan: &[plan::Planned],
    drive: DriveArgs,
    front: Option<SocketAddr>,
    want: i32,
    log: &mut Vec<String>,
) -> anyhow::Result<Outcome> {
    let (mut agents, mut proxies, serving) =
        wait_serving(args, scenario, cluster, want, log).await?;
    eprintln!(
        "loadtest cluster: {} agent pod(s), {serving} proxy pod(s) in {}, target {}, {} tx/s for {:?}",
        agents.pods.len(),
        args.namespace,
        drive.target,
        drive.rate,
        drive.duration
    );
    let timeline = Timeline::starting_now();
    let mut testbed = ClusterBed {
        agents: &mut agents,
        proxies: &mut proxies,
        cluster,
        drive: &drive,
        front,
        timeline: timeline.clone(),
        args,
    };
    let report = tokio::select! {
        r = crate::drive::run(drive.clone()) => r?,
        _ = timeline.play(&mut testbed, plan, "cluster") => unreachable!("steps never finish"),
    };
    let mut report = report;
    let (mut lines, marks) = timeline.finish().await;
    // Pods the Deployment created during the run (replacements, scale-ups) count too.
    let added = agents.discover(false).await?;
    if !added.is_empty() {
        lines.push(format!(
            "agent pods created during the run: {}",
            added.join(", ")
        ));
    }
    agents.read_into(&mut report).await;
    lines.push(format!("main drive: {}", uninspected_summary(&report)));
    let mut failures = Vec::new();
    if let Some(counts) = agents.window_counts().await? {
        if counts.is_empty() {
            failures.push("no serving agent after the snapshot".into());
        } else {
            lines.extend(judge::window_shares(
                &counts,
                &scenario.expect,
                &mut failures,
            ));
        }
    }
    proxies.discover().await?;
    lines.extend(proxies.lines().await);
    log.extend(lines);
    Ok((report, agents.names(), failures, marks))
}

/// Waits until `want` agent pods and the proxies the scenario needs serve; the agents and
/// proxies by index, and how many proxy pods serve.
async fn wait_serving(
    args: &ClusterArgs,
    scenario: &Scenario,
    cluster: &Cluster,
    want: i32,
    log: &mut Vec<String>,
) -> anyhow::Result<(Agents, Proxies, usize)> {
    let took = cluster
        .wait_serving(
            &args.agent_selector,
            want.max(0) as usize,
            args.ready_timeout,
        )
        .await?;
    log.push(format!("{want} agent pods serving after {took:?}"));
    let mut agents = Agents::new(cluster.clone(), args.agent_admin_port);
    agents.discover(true).await?;
    log.push(format!("agents by index: {}", agents.names().join(", ")));
    let mut proxies = Proxies::new(cluster.clone(), args.proxy_admin_port);
    let serving = proxies.discover().await?;
    let need = scenario.proxies.unwrap_or(1);
    anyhow::ensure!(
        serving >= need,
        "{serving} proxy pods serving (-l {}), the scenario needs {need}",
        args.proxy_selector
    );
    Ok((agents, proxies, serving))
}

/// The cluster as a testbed: steps act through its API server.
struct ClusterBed<'a> {
    agents: &'a mut Agents,
    proxies: &'a mut Proxies,
    cluster: &'a Cluster,
    drive: &'a DriveArgs,
    /// The Service's address, for bad clients and floods.
    front: Option<std::net::SocketAddr>,
    timeline: Timeline,
    args: &'a ClusterArgs,
}

impl Testbed for ClusterBed<'_> {
    type Planned = plan::Planned;

    async fn apply(&mut self, p: &plan::Planned) -> anyhow::Result<String> {
        let (agents, cluster, args) = (&mut *self.agents, self.cluster, self.args);
        // Pods the Deployment created since the last step (replacements) are known from here on,
        // counted from zero, before this step can remove them.
        agents.discover(false).await?;
        match &p.op {
            Op::ScaleUp(n) => {
                let from = cluster.agent_replicas().await?;
                let to = from + i32::try_from(*n)?;
                cluster.scale_agents(to).await?;
                let took = cluster
                    .wait_serving(&args.agent_selector, to as usize, args.ready_timeout)
                    .await?;
                let added = agents.discover(false).await?;
                Ok(format!(
                    "scaled {from} → {to}; serving after {took:?}; new agent pods {added:?}"
                ))
            }
            Op::ScaleTo(n) => {
                let from = cluster.agent_replicas().await?;
                let to = i32::try_from(*n)?;
                // The pods the Deployment removes are its choice: keep every agent's counters
                // current until it goes.
                agents.watch_all().await;
                cluster.scale_agents(to).await?;
                if to > from {
                    let took = cluster
                        .wait_serving(&args.agent_selector, *n, args.ready_timeout)
                        .await?;
                    let added = agents.discover(false).await?;
                    return Ok(format!(
                        "scaled {from} → {to}; serving after {took:?}; new agent pods {added:?}"
                    ));
                }
                Ok(format!("scaled {from} → {to}"))
            }
            Op::DeleteAgent { agent, grace } => agents.delete(*agent, *grace).await,
            Op::ReplaceAgent => {
                let i = agents.oldest_serving().await?;
                let what = agents.delete(i, None).await?;
                Ok(format!("agent {i}: {what}; the Deployment replaces it"))
            }
            Op::DeleteProxy(i) => self.proxies.delete(*i).await,
            Op::Fault { agent, query } => agents.fault(*agent, query).await,
            Op::Snapshot => Ok(agents.snapshot().await),
            Op::Background if p.step.action == Action::Burst => {
                Ok(self.timeline.start_burst(&p.step, self.drive, None))
            }
            Op::Background => Ok(self
                .timeline
                .start_abuse(&p.step, self.front.expect("resolved when planned"))),
        }
    }
}

/// What the scenario asks that a cluster run does not judge.
fn scenario_notes(scenario: &Scenario) -> Vec<String> {
    let e = &scenario.expect;
    let mut notes = Vec::new();
    if e.max_rss_growth_kib.is_some() || e.max_fd_growth.is_some() {
        notes.push(
            "max_rss_growth_kib / max_fd_growth not judged: a cluster run cannot sample the proxies' /proc (watch container_memory_working_set_bytes instead)".to_string(),
        );
    }
    notes
}

/// `loadtest cluster`: prints the report; exit status 1 if any check failed.
pub async fn run_cli(args: ClusterArgs) -> anyhow::Result<i32> {
    let client = match &args.api_server {
        Some(url) => {
            let config =
                kube::Config::new(url.parse().with_context(|| format!("--api-server {url}"))?);
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default()
            .await
            .context("no in-cluster ServiceAccount and no kubeconfig (or pass --api-server)")?,
    };
    let json = args.run.json.clone();
    let report = run(args, client).await?;
    println!(
        "cluster: namespace {}, target {}, agents {} → {} → {}{}",
        report.namespace,
        report.target,
        report.replicas.found,
        report.replicas.driven,
        report.replicas.end,
        report
            .scenario
            .as_ref()
            .map_or(String::new(), |s| format!(", scenario {s}"))
    );
    print!("{}", report.drive.to_text());
    for (i, pod) in report.agent_pods.iter().enumerate() {
        println!("agent {i}: pod {pod}");
    }
    crate::engine::print_steps(&report.steps, &report.marks);
    if let Some(path) = json {
        crate::drive::write_json(&path, &report)?;
    }
    let summary = format!(
        "cluster {}, {} agent pod(s), {}",
        report.namespace,
        report.agent_pods.len(),
        judge::drive_figures(&report.drive, false)
    );
    Ok(judge::print_result(&report.failures, &summary))
}
