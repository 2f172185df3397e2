//! The local processes as a testbed ([`crate::engine::Testbed`]): scenario steps applied to the
//! running children — membership changes through the agents file, faults, process signals,
//! proxy restarts and drains, agents added and replaced, hosts cut off the netns bed. The
//! background steps (bursts, bad clients, floods) are the engine's.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::options::Via;
use crate::drive::DriveArgs;
use crate::engine::{Marks, Testbed, Timeline};
use crate::processes::{self, ChildProcesses, FileState};
use crate::scenario::{Action, Step};

/// Everything a step needs besides the child processes.
pub(crate) struct StepCtx {
    pub(crate) via: Via,
    /// The run's timeline: its start, log, marks and background steps.
    pub(crate) timeline: Timeline,
    /// The main drive's configuration (bursts copy it).
    pub(crate) drive: DriveArgs,
    /// Where the good traffic goes (bad clients and floods go there too).
    pub(crate) front: SocketAddr,
    /// On the netns bed, the module host's runtime: bursts are its calls too.
    pub(crate) modules: Option<tokio::runtime::Handle>,
}

/// The local processes as a testbed: the child processes, and what their steps need.
pub(crate) struct LocalBed<'a> {
    pub(crate) procs: &'a mut ChildProcesses,
    pub(crate) cx: StepCtx,
}

impl Testbed for LocalBed<'_> {
    type Planned = Step;

    async fn apply(&mut self, step: &Step) -> anyhow::Result<String> {
        self.procs.apply(step, &self.cx).await
    }
}

impl ChildProcesses {
    /// Applies one step; returns what it did.
    pub(crate) async fn apply(&mut self, step: &Step, cx: &StepCtx) -> anyhow::Result<String> {
        let (t, via) = (&cx.timeline, cx.via);
        match step.action {
            Action::Add => {
                anyhow::ensure!(via == Via::Proxy, "add only applies via the proxy");
                let mut added = Vec::new();
                for _ in 0..step.count.unwrap_or(1) {
                    added.push(self.add_agent().await?);
                }
                self.write_agents_file()?;
                Ok(format!("agents {added:?} started and added as ready"))
            }
            Action::Scale => {
                anyhow::ensure!(via == Via::Proxy, "scale only applies via the proxy");
                self.scale_to(step.count.expect("checked at load")).await
            }
            Action::Replace => {
                anyhow::ensure!(via == Via::Proxy, "replace only applies via the proxy");
                self.replace(t).await
            }
            Action::Snapshot => self.snapshot().await,
            Action::Burst => Ok(t.start_burst(step, &cx.drive, cx.modules.as_ref())),
            Action::BadClients | Action::ConnFlood => Ok(t.start_abuse(step, cx.front)),
            Action::StopAgent => {
                self.stop_agent(step.agent).await?;
                Ok("stopped (POST /shutdown)".into())
            }
            Action::CutAgent
            | Action::HealAgent
            | Action::CutProxy
            | Action::UnlistProxy
            | Action::HealProxy => self.network_fault(step, cx).await,
            Action::RestartProxy => {
                let (status, exited, ready) = self.restart_proxy(step.proxy).await?;
                Ok(format!(
                    "old process exited {status} after {exited:?}; new one ready {ready:?} after SIGTERM"
                ))
            }
            Action::DrainProxy => self.drain(step, t).await,
            Action::Terminate | Action::Ready | Action::Remove => {
                self.set_membership(step, via, t).await
            }
            Action::Kill | Action::Slow | Action::Fault | Action::Pause => {
                self.act_on_agent(step, t).await
            }
        }
    }

    /// What a Deployment rollout does to one pod: a new agent joins, the oldest ready one
    /// turns terminating, leaves a second later and stops.
    async fn replace(&mut self, t: &Timeline) -> anyhow::Result<String> {
        let old = self
            .agents
            .iter()
            .position(|a| a.state == FileState::Ready && !a.expect_exit)
            .ok_or_else(|| anyhow::anyhow!("no ready agent to replace"))?;
        let new = self.add_agent().await?;
        self.write_agents_file()?;
        self.agents[old].state = FileState::Terminating;
        self.write_agents_file()?;
        let what = format!("agent {old} Replace");
        let admin = self.agents[old].admin;
        let (log, marks) = (t.log.clone(), t.marks.clone());
        tokio::spawn(watch_last_prerequest(admin, what, t.start, log, marks));
        // A pod's context-expiration-long wait is not needed here: the app time is
        // milliseconds, so a second delivers every pending update.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.agents[old].state = FileState::Removed;
        self.write_agents_file()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop_agent(old).await?;
        Ok(format!(
            "agent {new} added; agent {old} terminating, removed 1 s later, stopped"
        ))
    }

    /// Every agent's PreRequests so far (a stopped one's last count): the start of the window
    /// `window_min_fair`/`window_max_fair` judge.
    async fn snapshot(&mut self) -> anyhow::Result<String> {
        let reads = self.agents.iter().map(|a| {
            let (admin, gone) = (a.admin, a.expect_exit);
            let last = a.last.as_ref().map(|s| s.prerequests);
            async move {
                if gone {
                    return last;
                }
                let body = crate::http::get(admin, "/stats").await.ok()?;
                serde_json::from_slice::<crate::agent::AgentStats>(&body)
                    .ok()
                    .map(|s| s.prerequests)
            }
        });
        let snap = futures::future::join_all(reads).await;
        let line = format!("PreRequests per agent {snap:?}");
        self.snapshot = Some(snap);
        Ok(line)
    }

    /// SIGTERM to a proxy replica; marks when it exited.
    async fn drain(&mut self, step: &Step, t: &Timeline) -> anyhow::Result<String> {
        let t0 = t.start.elapsed();
        let unlist_after = step.duration.unwrap_or_default();
        let (flip, status, exit) = self.drain_proxy(step.proxy, unlist_after).await?;
        t.marks
            .lock()
            .expect("not poisoned")
            .push((format!("proxy {} exited", step.proxy), t0 + exit));
        Ok(format!(
            "/readyz not 200 after {}; exited {status} after {exit:?}",
            flip.map_or("never".into(), |d| format!("{d:?}"))
        ))
    }

    /// An agent's state in the agents file; watches for its last PreRequest unless it
    /// turned ready.
    async fn set_membership(
        &mut self,
        step: &Step,
        via: Via,
        t: &Timeline,
    ) -> anyhow::Result<String> {
        let agent = self
            .agents
            .get_mut(step.agent)
            .ok_or_else(|| anyhow::anyhow!("no agent {}", step.agent))?;
        if via != Via::Proxy {
            anyhow::bail!(
                "{:?} only applies via the proxy (membership file)",
                step.action
            );
        }
        agent.state = match step.action {
            Action::Terminate => FileState::Terminating,
            Action::Ready => FileState::Ready,
            _ => FileState::Removed,
        };
        let admin = agent.admin;
        self.write_agents_file()?;
        if step.action != Action::Ready {
            let what = format!("agent {} {:?}", step.agent, step.action);
            let (log, marks) = (t.log.clone(), t.marks.clone());
            tokio::spawn(watch_last_prerequest(admin, what, t.start, log, marks));
        }
        Ok("agents file updated".into())
    }

    /// Kill, slow, fault or pause one agent process.
    async fn act_on_agent(&mut self, step: &Step, t: &Timeline) -> anyhow::Result<String> {
        let proxy_admin = self.fronts.first().and_then(|f| f.admin);
        let agent = self
            .agents
            .get_mut(step.agent)
            .ok_or_else(|| anyhow::anyhow!("no agent {}", step.agent))?;
        match step.action {
            Action::Kill => {
                agent.expect_exit = true;
                agent.child.start_kill()?;
                if let Some(admin) = proxy_admin {
                    let id = format!("agent-{}", step.agent);
                    let (log, marks) = (t.log.clone(), t.marks.clone());
                    tokio::spawn(watch_ejection(admin, id, t.start, log, marks));
                }
                Ok("killed".into())
            }
            Action::Slow => {
                let f = step.factor.expect("checked at load");
                crate::http::post(agent.admin, &format!("/fault?slow={f}")).await?;
                Ok(format!("slow x{f}"))
            }
            Action::Fault => {
                let q = step.query.as_deref().expect("checked at load");
                crate::http::post(agent.admin, &format!("/fault?{q}")).await?;
                Ok(format!("fault {q}"))
            }
            _ => {
                let d = step.duration.expect("checked at load");
                processes::signal(&agent.child, "STOP").await;
                tokio::time::sleep(d).await;
                processes::signal(&agent.child, "CONT").await;
                Ok(format!("stopped for {d:?}"))
            }
        }
    }
}

impl ChildProcesses {
    /// A host vanishing from the netns bed, or coming back.
    async fn network_fault(&mut self, step: &Step, cx: &StepCtx) -> anyhow::Result<String> {
        use crate::netbed::Role;
        let bed = self.bed.clone().ok_or_else(|| {
            anyhow::anyhow!("{:?} needs the netns bed (--bed netns)", step.action)
        })?;
        let (role, index) = if step.action.is_agent_action() {
            anyhow::ensure!(step.agent < self.agents.len(), "no agent {}", step.agent);
            (Role::Agent, step.agent)
        } else {
            anyhow::ensure!(step.proxy < self.fronts.len(), "no proxy {}", step.proxy);
            (Role::Proxy, step.proxy)
        };
        let host = bed.host(role, index)?;
        match step.action {
            Action::CutAgent => {
                bed.cut(&host)?;
                if let Some(admin) = self.fronts.first().and_then(|f| f.admin) {
                    let id = format!("agent-{}", step.agent);
                    let t = &cx.timeline;
                    let (log, marks) = (t.log.clone(), t.marks.clone());
                    tokio::spawn(watch_ejection(admin, id, t.start, log, marks));
                }
                Ok(format!("host {} cut off: every packet dropped", host.ip))
            }
            Action::CutProxy => {
                bed.cut(&host)?;
                Ok(format!(
                    "host {} cut off, still in the Service VIP's set",
                    host.ip
                ))
            }
            Action::UnlistProxy => {
                bed.remove_endpoint(index)?;
                Ok("out of the Service VIP's set".into())
            }
            Action::HealAgent => {
                bed.heal(&host)?;
                Ok(format!("host {} reachable again", host.ip))
            }
            Action::HealProxy => {
                bed.heal(&host)?;
                bed.add_endpoint(index)?;
                Ok(format!(
                    "host {} reachable again, back in the Service VIP's set",
                    host.ip
                ))
            }
            _ => unreachable!("only network faults"),
        }
    }

    /// `scale`: starts agents up to `want` serving ones, or turns the newest surplus ones
    /// terminating, removes them 1 s later and stops them.
    async fn scale_to(&mut self, want: usize) -> anyhow::Result<String> {
        let members: Vec<usize> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.state == FileState::Ready && !a.expect_exit)
            .map(|(i, _)| i)
            .collect();
        let have = members.len();
        if want >= have {
            let mut added = Vec::new();
            for _ in have..want {
                added.push(self.add_agent().await?);
            }
            self.write_agents_file()?;
            return Ok(format!(
                "{have} → {want}: agents {added:?} started and added as ready"
            ));
        }
        let surplus = members[want..].to_vec();
        for &i in &surplus {
            self.agents[i].state = FileState::Terminating;
        }
        self.write_agents_file()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for &i in &surplus {
            self.agents[i].state = FileState::Removed;
        }
        self.write_agents_file()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for &i in &surplus {
            self.stop_agent(i).await?;
        }
        Ok(format!(
            "{have} → {want}: agents {surplus:?} terminating, removed 1 s later, stopped"
        ))
    }
}

/// After a kill: polls the proxy's `/agents` every 20 ms (up to 5 s) until agent `id` is no
/// longer `ready`, and marks when.
async fn watch_ejection(
    admin: SocketAddr,
    id: String,
    start: Instant,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    marks: Marks,
) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Ok(body) = crate::http::get(admin, "/agents").await
            && let Ok(list) = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            && list.iter().any(|a| {
                a["id"] == id.as_str() && a["state"].as_str().is_some_and(|s| s != "ready")
            })
        {
            let line = format!(
                "{id} left ready {:?} after the kill (proxy /agents polled every 20 ms)",
                t0.elapsed()
            );
            log.lock().expect("not poisoned").push(line);
            marks
                .lock()
                .expect("not poisoned")
                .push((format!("{id} ejected"), start.elapsed()));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.lock()
        .expect("not poisoned")
        .push(format!("{id} still ready 5 s after the kill"));
}

/// After a membership change: polls the agent's `/stats` every 50 ms for 3 s and reports when
/// its PreRequest counter last rose, from the file write.
async fn watch_last_prerequest(
    admin: SocketAddr,
    what: String,
    start: Instant,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    marks: Marks,
) {
    let t0 = Instant::now();
    let read = || async {
        let body = crate::http::get(admin, "/stats").await.ok()?;
        serde_json::from_slice::<crate::agent::AgentStats>(&body)
            .ok()
            .map(|s| s.prerequests)
    };
    let Some(mut last) = read().await else { return };
    let mut last_rise = None;
    while t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(now) = read().await
            && now > last
        {
            last = now;
            last_rise = Some(t0.elapsed());
        }
    }
    let line = match last_rise {
        Some(d) => format!(
            "{what}: last new PreRequest seen {d:?} after the file write (/stats polled every 50 ms for 3 s)"
        ),
        None => {
            format!("{what}: no new PreRequest after the file write (polled every 50 ms for 3 s)")
        }
    };
    log.lock().expect("not poisoned").push(line);
    if let Some(d) = last_rise {
        marks.lock().expect("not poisoned").push((
            format!("{what}: last PreRequest"),
            start.elapsed() - t0.elapsed() + d,
        ));
    }
}
