//! One policy's closed loop against real processes: simulated agents and real proxies start,
//! the module emulator drives the scenario's moving load through the proxies, and every sync
//! period the HPA emulation reads what a cluster's HPA would read (each proxy's
//! `sigsci_proxy_agent_demand` from `/metrics`, summed and rounded up as the adapter rule does;
//! each ready agent's busy fraction as its CPU utilization) and scales the agents as the
//! Deployment would: a new agent joins the proxies' membership only after the startup delay, a
//! removed one turns terminating, leaves a second later and stops. Every half second, under
//! every policy, it also records the proxies' summed demand and shed calls
//! ([`super::demand`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::demand::{self, DemandSample};
use super::hpa::{self, Hpa, Observation};
use crate::drive::profile::RateProfile;
use crate::drive::{DriveArgs, DriveReport};
use crate::processes::{ChildProcesses, FileState};
use crate::scenario::autoscale::Policy;

/// Everything one policy's run needs; the same for every policy of a scenario.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) exe: PathBuf,
    pub(crate) proxy_bin: PathBuf,
    pub(crate) agent_args: Vec<String>,
    pub(crate) proxy_args: Vec<String>,
    /// Each proxy replica's share of the load (sums to 1).
    pub(crate) shares: Vec<f64>,
    /// The whole load, transactions per second.
    pub(crate) profile: RateProfile,
    pub(crate) duration: Duration,
    /// Drive settings besides target, rate and profile.
    pub(crate) drive: DriveArgs,
    /// The HPA, windows already scaled.
    pub(crate) hpa: hpa::Spec,
    pub(crate) sync: Duration,
    pub(crate) startup: Duration,
    /// RPC/s per agent: one agent's worth of load.
    pub(crate) agent_rpc: f64,
    /// RPCs per transaction (PreRequest, plus UpdateRequest or PostRequest for some).
    pub(crate) rpc_per_tx: f64,
    /// Worker slots per agent (its CPU request, for utilization).
    pub(crate) workers: usize,
    /// The adapter rule rounds the summed demand up (else the HPA gets the sum as it is).
    pub(crate) demand_ceil: bool,
    /// The fixed pool's size.
    pub(crate) fixed_agents: u32,
    /// The multi-host bed, if not loopback: agents and proxies on hosts of their own, the
    /// module emulator on module host 0, each proxy's share sent to that proxy's address (the
    /// shares are app nodes whose connections land on one proxy each).
    pub(crate) bed: Option<Arc<crate::netbed::Bed>>,
}

impl Setup {
    /// Agents' worth of load offered at `t` seconds.
    pub(crate) fn load_at(&self, t: f64) -> f64 {
        self.profile.rate_at(t) * self.rpc_per_tx / self.agent_rpc
    }

    /// The agents the load at `t` needs: its agents' worth rounded up, at least one.
    pub(crate) fn need_at(&self, t: f64) -> u32 {
        need(self.load_at(t))
    }
}

/// Agents needed for `worth` agents' worth of load.
pub(crate) fn need(worth: f64) -> u32 {
    ((worth - 1e-6).ceil() as u32).max(1)
}

/// The state of the pool at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds into the drive.
    pub t: f64,
    /// Load offered, agents' worth.
    pub load: f64,
    /// Agents the load needs.
    pub need: u32,
    /// Agents serving (in the proxies' membership as ready).
    pub ready: u32,
    /// Agents that exist and are not terminating (ready or starting): what is paid for.
    pub pods: u32,
    /// The replicas the autoscaler last asked for.
    pub desired: u32,
}

/// One sync that changed the replicas.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleEvent {
    /// Seconds into the drive.
    pub t: f64,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// Summed demand as the adapter returns it, if read.
    pub demand: Option<f64>,
    /// Mean CPU utilization of the ready agents, if read.
    pub cpu: Option<f64>,
    /// Each metric's proposal.
    pub proposals: Vec<Option<u32>>,
}

/// What one policy's run recorded.
#[derive(Debug, Serialize)]
pub struct PolicyRun {
    /// The policy.
    pub policy: Policy,
    /// Every 250 ms.
    pub samples: Vec<Sample>,
    /// Changes of the replicas.
    pub events: Vec<ScaleEvent>,
    /// The proxies' summed demand and shed calls, every 500 ms.
    pub demand: Vec<DemandSample>,
    /// One drive per proxy replica.
    pub drives: Vec<DriveReport>,
    /// Children that misbehaved.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Starting { ready_at: f64 },
    Ready { since: f64 },
    Terminating { remove_at: f64 },
    Removed { stop_at: f64 },
    Stopped,
}

#[derive(Debug)]
struct PodState {
    agent: usize,
    phase: Phase,
    /// (time, busy µs) at the last CPU read.
    last_busy: (f64, u64),
}

/// Shared between the controller and the caller (the controller is cancelled when the drive
/// ends).
#[derive(Debug, Default)]
struct Record {
    samples: Vec<Sample>,
    events: Vec<ScaleEvent>,
    demand: Vec<DemandSample>,
    problems: Vec<String>,
}

/// Runs the scenario under `policy` and returns what happened.
pub(crate) async fn run(setup: &Setup, policy: Policy) -> anyhow::Result<PolicyRun> {
    let dir = tempfile::Builder::new()
        .prefix("loadtest-autoscale-")
        .tempdir()?;
    let mut procs = ChildProcesses::new(dir.path().join("agents.json"), setup.bed.clone());
    let module = setup.bed.as_ref().map(|b| b.module_host()).transpose()?;
    let initial = match policy {
        Policy::Fixed => setup.fixed_agents,
        _ => setup.hpa.min_replicas.max(setup.need_at(0.0)),
    };
    procs
        .spawn_agents(&setup.exe, initial as usize, &setup.agent_args)
        .await?;
    let mut listen = Vec::new();
    for _ in &setup.shares {
        listen.push(
            procs
                .spawn_proxy(&setup.proxy_bin, &setup.proxy_args)
                .await?,
        );
    }
    let admins: Vec<_> = procs.fronts.iter().filter_map(|f| f.admin).collect();
    let admins_len = admins.len();
    let record = Arc::new(Mutex::new(Record::default()));
    let start = Instant::now();
    let on = module.as_ref().map(|(rt, _)| rt.handle().clone());
    let drives = setup.shares.iter().zip(&listen).map(|(share, addr)| {
        let drive = crate::drive::run(setup.share_drive(*share, *addr));
        // On the bed, from the module's host.
        crate::netbed::on_module_host(on.clone(), drive)
    });
    let pods = (0..initial as usize)
        .map(|agent| PodState {
            agent,
            phase: Phase::Ready { since: 0.0 },
            last_busy: (0.0, 0),
        })
        .collect();
    let mut ctl = Controller {
        setup,
        procs: &mut procs,
        pods,
        hpa: emulated_hpa(setup, policy),
        admins,
        start,
        spec_replicas: initial,
        record: record.clone(),
        shed: vec![0; admins_len],
    };
    let drives = futures::future::join_all(drives);
    let reports = tokio::select! {
        r = drives => r,
        _ = ctl.run() => unreachable!("the controller never returns"),
    };
    drop(ctl);
    let mut drives = Vec::new();
    for r in reports {
        drives.push(r?);
    }
    let mut problems = procs.check_alive();
    problems.extend(procs.stop().await);
    if let Some((rt, _)) = module {
        rt.shutdown_background();
    }
    let mut rec = std::mem::take(&mut *record.lock().expect("not poisoned"));
    rec.problems.extend(problems);
    Ok(PolicyRun {
        policy,
        samples: rec.samples,
        events: rec.events,
        demand: rec.demand,
        drives,
        problems: rec.problems,
    })
}

/// The HPA a policy scales by: the manifest's, its CPU metric alone, or none.
fn emulated_hpa(setup: &Setup, policy: Policy) -> Option<Hpa> {
    match policy {
        Policy::Fixed => None,
        Policy::Demand => Some(Hpa::new(setup.hpa.clone())),
        Policy::Cpu => {
            Some(Hpa::new(setup.hpa.with_metrics(|m| {
                matches!(m, hpa::Metric::CpuUtilization { .. })
            })))
        }
    }
}

impl Setup {
    /// The drive of one proxy replica: `share` of the load at `addr`.
    fn share_drive(&self, share: f64, addr: std::net::SocketAddr) -> DriveArgs {
        let profile = self.profile.scaled(share);
        DriveArgs {
            target: addr.into(),
            update_target: None,
            rate: profile.peak().max(1.0),
            duration: self.duration,
            concurrency: None,
            profile: Some(Arc::new(profile)),
            agents_admin: Vec::new(),
            no_progress: true,
            ..self.drive.clone()
        }
    }
}

struct Controller<'a> {
    setup: &'a Setup,
    procs: &'a mut ChildProcesses,
    pods: Vec<PodState>,
    hpa: Option<Hpa>,
    admins: Vec<std::net::SocketAddr>,
    start: Instant,
    spec_replicas: u32,
    record: Arc<Mutex<Record>>,
    /// Each proxy's shed calls at its last read.
    shed: Vec<u64>,
}

/// How long a removed agent stays terminating before it leaves the membership (its pending
/// updates still reach it meanwhile), as `loadtest local`'s `scale` step does.
const TERMINATING: f64 = 1.0;

impl Controller<'_> {
    async fn run(&mut self) -> std::convert::Infallible {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sync = self.setup.sync.as_secs_f64();
        let mut next_sync = sync;
        let mut next_sample = 0.0;
        let mut next_demand = 0.0;
        loop {
            tick.tick().await;
            let now = self.start.elapsed().as_secs_f64();
            self.advance(now).await;
            if self.hpa.is_some() && now >= next_sync {
                if let Err(e) = self.sync(now).await {
                    self.note(format!("t={now:.1}s sync failed: {e:#}"));
                }
                next_sync += sync;
            }
            if now >= next_sample {
                self.sample(now);
                next_sample += 0.25;
            }
            if now >= next_demand {
                self.sample_demand(now).await;
                next_demand += 0.5;
            }
        }
    }

    fn note(&self, problem: String) {
        self.record
            .lock()
            .expect("not poisoned")
            .problems
            .push(problem);
    }

    /// Starting agents whose delay passed join; terminating ones leave; left ones stop.
    async fn advance(&mut self, now: f64) {
        let mut changed = false;
        let mut stop = Vec::new();
        for p in &mut self.pods {
            match p.phase {
                Phase::Starting { ready_at } if ready_at <= now => {
                    p.phase = Phase::Ready { since: now };
                    p.last_busy = (now, 0);
                    self.procs.agents[p.agent].state = FileState::Ready;
                    changed = true;
                }
                Phase::Terminating { remove_at } if remove_at <= now => {
                    p.phase = Phase::Removed { stop_at: now + 0.2 };
                    self.procs.agents[p.agent].state = FileState::Removed;
                    changed = true;
                }
                Phase::Removed { stop_at } if stop_at <= now => {
                    p.phase = Phase::Stopped;
                    stop.push(p.agent);
                }
                _ => {}
            }
        }
        if changed && let Err(e) = self.procs.write_agents_file() {
            self.note(format!("writing the agents file: {e:#}"));
        }
        for i in stop {
            if let Err(e) = self.procs.stop_agent(i).await {
                self.note(format!("stopping agent {i}: {e:#}"));
            }
        }
    }

    fn counts(&self) -> (u32, u32) {
        let ready = self
            .pods
            .iter()
            .filter(|p| matches!(p.phase, Phase::Ready { .. }))
            .count() as u32;
        let starting = self
            .pods
            .iter()
            .filter(|p| matches!(p.phase, Phase::Starting { .. }))
            .count() as u32;
        (ready, ready + starting)
    }

    fn sample(&self, now: f64) {
        let (ready, pods) = self.counts();
        let s = Sample {
            t: now,
            load: self.setup.load_at(now),
            need: self.setup.need_at(now),
            ready,
            pods,
            desired: self.spec_replicas,
        };
        self.record.lock().expect("not poisoned").samples.push(s);
    }

    /// The adapter's value: `sum(sigsci_proxy_agent_demand)` over every proxy, rounded up if
    /// the manifest's rule does; `None` if a proxy cannot be read (the metric is then
    /// unavailable to the HPA).
    async fn demand(&mut self) -> Option<f64> {
        let sum = self.read_proxies().await?;
        Some(if self.setup.demand_ceil {
            (sum - 1e-9).ceil().max(0.0)
        } else {
            sum
        })
    }

    /// Every proxy's `/metrics`: the summed demand (`None` if a proxy cannot be read), and
    /// each one's shed calls noted in `shed` as read.
    async fn read_proxies(&mut self) -> Option<f64> {
        let mut sum = Some(0.0);
        for (i, a) in self.admins.iter().enumerate() {
            let Ok(body) = crate::http::get(*a, "/metrics").await else {
                sum = None;
                continue;
            };
            let text = String::from_utf8_lossy(&body);
            self.shed[i] = demand::labelled_sum(&text, "sigsci_proxy_queue_shed_total") as u64;
            let d = metric_value(&text, "sigsci_proxy_agent_demand");
            sum = sum.zip(d).map(|(s, d)| s + d);
        }
        sum
    }

    /// Records the proxies' demand and shed calls against the load offered now.
    async fn sample_demand(&mut self, now: f64) {
        let demand = self.read_proxies().await;
        let s = DemandSample {
            t: now,
            demand,
            shed: self.shed.iter().sum(),
            offered: self.setup.load_at(now),
        };
        self.record.lock().expect("not poisoned").demand.push(s);
    }

    /// Each live pod as the resource-metrics path sees it: ready ones with their busy fraction
    /// since the last read.
    async fn cpu(&mut self, now: f64) -> Vec<hpa::Pod> {
        let workers = self.setup.workers.max(1) as f64;
        let mut out = Vec::new();
        for p in &mut self.pods {
            match p.phase {
                Phase::Starting { .. } => out.push(hpa::Pod {
                    ready: false,
                    cpu: None,
                }),
                Phase::Ready { .. } => {
                    let admin = self.procs.agents[p.agent].admin;
                    let busy = match crate::http::get(admin, "/stats").await {
                        Ok(b) => serde_json::from_slice::<crate::agent::AgentStats>(&b)
                            .ok()
                            .map(|s| s.busy_us),
                        Err(_) => None,
                    };
                    let cpu = busy.and_then(|b| {
                        let (t0, b0) = p.last_busy;
                        p.last_busy = (now, b);
                        let dt = now - t0;
                        (dt > 0.0).then(|| b.saturating_sub(b0) as f64 / 1e6 / (dt * workers))
                    });
                    out.push(hpa::Pod { ready: true, cpu });
                }
                _ => {}
            }
        }
        out
    }

    async fn sync(&mut self, now: f64) -> anyhow::Result<()> {
        let (_, status) = self.counts();
        let demand = self.demand().await;
        let pods = self.cpu(now).await;
        let cpu_mean = {
            let v: Vec<f64> = pods.iter().filter_map(|p| p.cpu).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let obs = Observation {
            spec_replicas: self.spec_replicas,
            status_replicas: status,
            external: demand
                .map(|d| ("sigsci_proxy_agent_demand".to_string(), d))
                .into_iter()
                .collect(),
            pods,
        };
        let hpa = self.hpa.as_mut().expect("only with an HPA");
        let d = hpa.sync(Duration::from_secs_f64(now), &obs);
        if d.desired == self.spec_replicas {
            return Ok(());
        }
        let from = self.spec_replicas;
        self.scale(now, d.desired).await?;
        self.spec_replicas = d.desired;
        self.record
            .lock()
            .expect("not poisoned")
            .events
            .push(ScaleEvent {
                t: now,
                from,
                to: d.desired,
                demand,
                cpu: cpu_mean,
                proposals: d.proposals,
            });
        Ok(())
    }

    /// Sets the live pods to `want`, as the Deployment would: new ones start (serving after
    /// the startup delay); surplus ones go, starting ones first, then the most recently ready
    /// (the ReplicaSet controller's order).
    async fn scale(&mut self, now: f64, want: u32) -> anyhow::Result<()> {
        let (_, live) = self.counts();
        if want > live {
            for _ in live..want {
                let agent = self.procs.add_agent().await?;
                // Not in the membership until ready.
                self.procs.agents[agent].state = FileState::Removed;
                self.pods.push(PodState {
                    agent,
                    phase: Phase::Starting {
                        ready_at: now + self.setup.startup.as_secs_f64(),
                    },
                    last_busy: (now, 0),
                });
            }
            return Ok(());
        }
        let mut victims: Vec<(u8, f64, usize)> = self
            .pods
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.phase {
                Phase::Starting { ready_at } => Some((0, -ready_at, i)),
                Phase::Ready { since } => Some((1, -since, i)),
                _ => None,
            })
            .collect();
        victims.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let mut changed = false;
        for &(_, _, i) in victims.iter().take((live - want) as usize) {
            let p = &mut self.pods[i];
            p.phase = match p.phase {
                Phase::Starting { .. } => Phase::Removed { stop_at: now },
                _ => {
                    self.procs.agents[p.agent].state = FileState::Terminating;
                    changed = true;
                    Phase::Terminating {
                        remove_at: now + TERMINATING,
                    }
                }
            };
        }
        if changed {
            self.procs.write_agents_file()?;
        }
        Ok(())
    }
}

/// The value of an unlabelled series `name` in a Prometheus text exposition.
pub(crate) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?;
        v.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demand_series_is_read_from_the_exposition() {
        let text = "# HELP sigsci_proxy_agent_demand x\n# TYPE sigsci_proxy_agent_demand gauge\n\
                    sigsci_proxy_agent_demand_other 9\nsigsci_proxy_agent_demand 2.75\n";
        assert_eq!(metric_value(text, "sigsci_proxy_agent_demand"), Some(2.75));
        assert_eq!(metric_value("", "sigsci_proxy_agent_demand"), None);
    }

    #[test]
    fn need_rounds_agents_worth_up_with_one_at_least() {
        assert_eq!(need(0.0), 1);
        assert_eq!(need(1.0), 1);
        assert_eq!(need(1.01), 2);
        assert_eq!(need(5.9), 6);
    }
}
