//! One `loadtest local` run from start to the end of its drive: what it starts (agents of
//! their capacity, the front: proxies, HAProxy or none), where the module emulator runs (this
//! host or its own on the netns bed), then the drive with the scenario's steps played beside
//! it, and what is read before the children stop. Judging the result is `local.rs`'s.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::capacity::{self, AgentSpec};
use super::options::{BedKind, LocalArgs, Via};
use super::{flows, procstat, ramp, sockets, steps};
use crate::addr::RpcAddr;
use crate::drive::{DriveArgs, DriveReport, FlowArgs, Split};
use crate::engine::Timeline;
use crate::judge::uninspected_summary;
use crate::processes::ChildProcesses;
use crate::run_args::Traffic;
use crate::scenario::{Scenario, Step};

/// What a run settles before it starts anything.
pub(crate) struct Setup {
    /// What stands in front of the agents.
    pub(crate) via: Via,
    /// Proxy replicas (1 unless via the proxy).
    pub(crate) proxies: usize,
    /// Each agent's capacity.
    pub(crate) specs: Vec<AgentSpec>,
    /// Each agent's command line.
    pub(crate) agent_args: Vec<Vec<String>>,
    /// The scenario's steps at their times.
    pub(crate) plan: Vec<Step>,
    /// The agents a step changes (judged against `changed_max_share`).
    pub(crate) touched: HashSet<usize>,
    /// This binary (`loadtest agent` is its subcommand).
    pub(crate) exe: PathBuf,
}

impl Setup {
    /// Counts and checks everything the flags and the scenario ask for.
    pub(crate) fn new(args: &LocalArgs, traffic: &Traffic) -> anyhow::Result<Setup> {
        let scenario = &traffic.scenario;
        let via = args.via();
        let per_agent = scenario
            .agent_workers
            .len()
            .max(scenario.agent_service_time.len());
        let n =
            args.agents
                .or(scenario.agents)
                .unwrap_or(if per_agent > 0 { per_agent } else { 2 });
        anyhow::ensure!(n >= 1, "--agents must be at least 1");
        let proxies = args.proxies.or(scenario.proxies).unwrap_or(1);
        anyhow::ensure!(proxies >= 1, "--proxies must be at least 1");
        anyhow::ensure!(
            proxies == 1 || via == Via::Proxy,
            "--proxies applies only via the proxy"
        );
        anyhow::ensure!(
            args.netbed.is_some() == (args.bed == BedKind::Netns),
            "the netns bed is made by the loadtest binary before its runtime starts"
        );
        anyhow::ensure!(
            !args.topology.node_local() || (args.netbed.is_some() && via == Via::Proxy),
            "--topology {:?} places proxies on the netns bed: it needs --bed netns and --via proxy",
            args.topology
        );
        let specs = (0..n)
            .map(|i| capacity::agent_spec(args, scenario, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let agent_args = specs
            .iter()
            .map(|s| capacity::process_args(args, s))
            .collect();
        let plan = scenario.expanded_steps(traffic.duration);
        let touched = plan
            .iter()
            .filter(|s| s.action.changes_agent())
            .map(|s| s.agent)
            .collect();
        let exe = std::env::current_exe()?;
        Ok(Setup {
            via,
            proxies,
            specs,
            agent_args,
            plan,
            touched,
            exe,
        })
    }
}

/// Where the module emulator runs: on the bed, hosts of its own, each a runtime whose sockets
/// are that host's; off the bed, this process.
pub(crate) struct Hosts {
    /// The main drive's host and its runtime.
    module: Option<(tokio::runtime::Runtime, crate::netbed::Host)>,
    /// The flows' drive arguments.
    pub(crate) flows: Vec<FlowArgs>,
    /// The flows' hosts' runtimes.
    flow_hosts: Vec<tokio::runtime::Runtime>,
}

impl Hosts {
    /// Makes the module's hosts on `args`' bed, if any.
    pub(crate) fn new(args: &LocalArgs, scenario: &Scenario) -> anyhow::Result<Hosts> {
        let bed = args.netbed.as_deref();
        let module = bed.map(|b| b.module_host()).transpose()?;
        let (flows, flow_hosts) = flows::flows(scenario, bed)?;
        Ok(Hosts {
            module,
            flows,
            flow_hosts,
        })
    }

    /// The main drive's runtime, on the bed.
    pub(crate) fn modules(&self) -> Option<tokio::runtime::Handle> {
        self.module.as_ref().map(|(rt, _)| rt.handle().clone())
    }

    /// Stops the hosts' runtimes.
    pub(crate) fn shutdown(self) {
        if let Some((rt, _)) = self.module {
            rt.shutdown_background();
        }
        self.flow_hosts
            .into_iter()
            .for_each(|rt| rt.shutdown_background());
    }
}

/// What a run produced before judging.
pub(crate) struct Played {
    /// The drive's report, the agents' counters filled in.
    pub(crate) report: DriveReport,
    /// The steps' log lines and what was read after the drive.
    pub(crate) steps: Vec<String>,
    /// The steps' marks.
    pub(crate) marks: Vec<(String, Duration)>,
    /// Calls each agent served in the capacity-share window.
    pub(crate) served: Vec<u64>,
}

/// Where the module's calls go.
struct Front {
    /// PreRequests.
    target: SocketAddr,
    /// UpdateRequests and PostRequests.
    update_target: SocketAddr,
    /// The proxy replicas' shares of the calls, if split.
    split: Option<Split>,
}

/// One run's fixed inputs, for its phases.
pub(crate) struct Session<'a> {
    pub(crate) args: &'a LocalArgs,
    pub(crate) traffic: &'a Traffic,
    pub(crate) setup: &'a Setup,
    pub(crate) hosts: &'a Hosts,
    /// The run's temporary directory (agents file, HAProxy's configuration).
    pub(crate) dir: &'a Path,
    /// The front processes' CPU samples.
    pub(crate) samples: procstat::Samples,
}

impl Session<'_> {
    /// Starts the agents and the front, then drives while the steps play; reads the agents
    /// and the proxies' accounts before returning. Failures found on the way go to `failures`.
    pub(crate) async fn play(
        &self,
        procs: &mut ChildProcesses,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<Played> {
        procs
            .spawn_agents_each(&self.setup.exe, &self.setup.agent_args)
            .await?;
        let front = self.start_front(procs).await?;
        // Node-local proxies with the socket: the module calls its own node's proxy over it.
        let module_target = match procs.front_socket(0) {
            Some(path) if self.setup.via == Via::Proxy => RpcAddr::Unix(path),
            _ => front.target.into(),
        };
        let drive = self.drive_args(module_target, &front);
        self.announce(&drive, &front);
        procs.read_before().await;
        let admins: Vec<SocketAddr> = procs.agents.iter().map(|a| a.admin).collect();
        let expect = &self.traffic.scenario.expect;
        let share_window = expect.capacity_share_from.map(|from| {
            let admins = admins.clone();
            tokio::spawn(async move {
                tokio::time::sleep(from).await;
                crate::overload::read_served(&admins).await
            })
        });
        let sampler = procstat::sample_every(
            procs.front_pids.clone(),
            Duration::from_millis(250),
            self.samples.clone(),
        );
        let sockets = (self.hosts.module.as_ref())
            .zip(self.args.netbed.clone())
            .map(|((_, host), bed)| sockets::sample_every(bed, host.clone()));
        let timeline = Timeline::starting_now();
        let report = self
            .drive_with_steps(procs, &drive, front.target, &timeline)
            .await?;
        sampler.abort();
        let sockets = match sockets {
            Some(s) => Some(s.finish().await),
            None => None,
        };
        let mut report = report;
        procs.read_agents_into(&mut report).await;
        let served = match share_window {
            Some(start) => {
                let start = start.await?;
                let end = crate::overload::read_served(&admins).await;
                crate::overload::served_between(&start, &end)
            }
            None => (report.agents.iter())
                .map(|a| a.stats.as_ref().map_or(0, |s| s.responses_timely))
                .collect(),
        };
        let (mut steps, marks) = timeline.finish().await;
        steps.push(format!("main drive: {}", uninspected_summary(&report)));
        if let Some(s) = &sockets {
            steps.push(s.judge(&report, self.traffic.duration, failures));
        }
        steps.extend(procs.window_shares(expect, failures).await);
        steps.extend(procs.proxy_uninspected().await);
        Ok(Played {
            report,
            steps,
            marks,
            served,
        })
    }

    /// Starts what stands in front of the agents; returns where the module's calls go.
    async fn start_front(&self, procs: &mut ChildProcesses) -> anyhow::Result<Front> {
        let (args, scenario) = (self.args, &self.traffic.scenario);
        let bed = args.netbed.as_ref();
        let at = |a: SocketAddr| Front {
            target: a,
            update_target: a,
            split: None,
        };
        Ok(match self.setup.via {
            Via::Direct => at(procs.agents[0].rpc),
            Via::Proxy => {
                let bin = args.proxy_bin(&self.setup.exe)?;
                let mut addrs = Vec::new();
                let mut proxy_args = scenario.proxy_args.clone();
                proxy_args.extend(args.proxy_args.iter().cloned());
                for _ in 0..self.setup.proxies {
                    addrs.push(procs.spawn_proxy(&bin, &proxy_args).await?);
                }
                let split = flows::split(scenario, &addrs)?;
                match bed {
                    // One Service: every connection to its VIP, spread by kube-proxy's rules.
                    Some(b) => Front {
                        split,
                        ..at(b.vip())
                    },
                    None => Front {
                        target: addrs[0],
                        update_target: addrs[1 % addrs.len()],
                        split,
                    },
                }
            }
            Via::Haproxy => {
                let a = procs.spawn_haproxy(&args.haproxy_bin, self.dir).await?;
                at(bed.map_or(a, |b| b.vip()))
            }
        })
    }

    /// The main drive's configuration.
    fn drive_args(&self, target: RpcAddr, front: &Front) -> DriveArgs {
        let (args, traffic) = (self.args, self.traffic);
        DriveArgs {
            target,
            update_target: (front.update_target != front.target)
                .then(|| front.update_target.into()),
            concurrency: args.concurrency,
            app_time: traffic.app_time,
            rate: traffic.rate,
            duration: traffic.duration,
            attack_fraction: traffic.attack_fraction,
            anomalous_fraction: traffic.anomalous_fraction,
            persistent: args.persistent,
            sources: args.sources.clone(),
            // The orchestrator reads the agents itself: agents come and go during a scenario.
            agents_admin: Vec::new(),
            no_progress: false,
            flows: self.hosts.flows.clone(),
            split: front.split.clone(),
            ..DriveArgs::default()
        }
    }

    /// Says on stderr what is about to run.
    fn announce(&self, drive: &DriveArgs, front: &Front) {
        let (n, via) = (self.setup.specs.len(), self.setup.via);
        eprintln!(
            "loadtest local: {n} agent(s) via {via:?}, target {}{}, {} for {:?}",
            drive.target,
            if front.update_target != front.target {
                format!(", updates to {}", front.update_target)
            } else {
                String::new()
            },
            match (&self.traffic.scenario.ramp, drive.concurrency) {
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
    }

    /// The drive (or the ramp's drives), from the module's host, while the steps play on the
    /// processes; returns when the drive ends.
    async fn drive_with_steps(
        &self,
        procs: &mut ChildProcesses,
        drive: &DriveArgs,
        front: SocketAddr,
        timeline: &Timeline,
    ) -> anyhow::Result<DriveReport> {
        let modules = self.hosts.modules();
        let pids = procs.front_pids.clone();
        let cx = steps::StepCtx {
            via: self.setup.via,
            timeline: timeline.clone(),
            drive: drive.clone(),
            front,
            modules: modules.clone(),
        };
        let mut testbed = steps::LocalBed { procs, cx };
        let steps = timeline.play(&mut testbed, &self.setup.plan, "local");
        let (ramp, drive, log) = (
            self.traffic.scenario.ramp.clone(),
            drive.clone(),
            timeline.log.clone(),
        );
        let drives = async move {
            match &ramp {
                Some(r) => ramp::run(r, &drive, &pids, &log).await,
                None => crate::drive::run(drive).await,
            }
        };
        // On the bed, from the module's host.
        let drives = crate::netbed::on_module_host(modules, drives);
        tokio::select! {
            r = drives => r,
            _ = steps => unreachable!("steps never finish"),
        }
    }
}
