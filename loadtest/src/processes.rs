//! Child processes of the orchestrator: simulated agents, the proxy, HAProxy; and the agents
//! file the proxy watches. Below the runners (`local`, `bench`, autoscale), which each start
//! their children through it.

pub(crate) mod haproxy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::netbed::{self, Bed, Role};

/// A command that runs `program` as `role` number `index`: on its own host of the bed, or on
/// this one; and the address it is to listen on.
fn placed(
    bed: Option<&Bed>,
    role: Role,
    index: usize,
    program: &Path,
) -> anyhow::Result<(Command, IpAddr)> {
    Ok(match bed {
        Some(bed) => {
            let host = bed.host(role, index)?;
            (bed.command(&host, program), IpAddr::V4(host.ip))
        }
        None => (Command::new(program), IpAddr::V4(Ipv4Addr::LOCALHOST)),
    })
}

/// How an agent appears in the agents file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileState {
    Ready,
    Terminating,
    Removed,
}

/// A `loadtest agent` child.
#[derive(Debug)]
pub(crate) struct AgentProc {
    pub(crate) index: usize,
    pub(crate) child: Child,
    pub(crate) rpc: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) state: FileState,
    /// Killed or stopped on purpose by a scenario.
    pub(crate) expect_exit: bool,
    /// Counters when the drive started (zero for an agent started during it).
    pub(crate) before: Option<crate::agent::AgentStats>,
    /// Counters read just before a scenario stopped it.
    pub(crate) last: Option<crate::agent::AgentStats>,
}

impl AgentProc {
    pub(crate) async fn spawn(
        exe: &Path,
        index: usize,
        extra: &[String],
        bed: Option<&Bed>,
    ) -> anyhow::Result<AgentProc> {
        let (mut command, ip) = placed(bed, Role::Agent, index, exe)?;
        let any_port = SocketAddr::new(ip, 0).to_string();
        let mut child = command
            .args(["agent", "--listen", &any_port, "--admin", &any_port])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} agent", exe.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("agent did not report its addresses within 10 s")??
            .context("agent exited before listening")?;
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let v = first
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .with_context(|| format!("no {name} in {first:?}"))?;
            v.parse()
                .with_context(|| format!("bad address in {first:?}"))
        };
        let (rpc, admin) = (field("rpc=")?, field("admin=")?);
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(AgentProc {
            index,
            child,
            rpc,
            admin,
            state: FileState::Ready,
            expect_exit: false,
            before: None,
            last: None,
        })
    }
}

/// The proxy or HAProxy in front of the agents.
#[derive(Debug)]
pub(crate) struct Front {
    pub(crate) name: String,
    pub(crate) child: Child,
    /// The RPC address it listens on.
    pub(crate) listen: SocketAddr,
    /// The proxy's admin address.
    pub(crate) admin: Option<SocketAddr>,
    /// Stopped on purpose by a scenario (drained): not a failure that it exited.
    pub(crate) expect_exit: bool,
    /// How to start it again (proxy only): binary, extra arguments, log file.
    restart: Option<(PathBuf, Vec<String>, PathBuf)>,
}

/// All child processes of one run (agents and fronts) and the agents file; not a pool of
/// agents to balance over (that is `agent_pool::Pool`, in the proxy).
#[derive(Debug)]
pub(crate) struct ChildProcesses {
    pub(crate) agents: Vec<AgentProc>,
    pub(crate) agents_file: PathBuf,
    pub(crate) fronts: Vec<Front>,
    /// Process ids of the fronts, by replica, kept current across restarts (for samplers).
    pub(crate) front_pids: std::sync::Arc<std::sync::Mutex<Vec<Option<u32>>>>,
    /// How to start more agents: this executable and the agents' arguments.
    pub(crate) spawn_with: Option<(PathBuf, Vec<String>)>,
    /// PreRequests per agent at the last `snapshot` step.
    pub(crate) snapshot: Option<Vec<Option<u64>>>,
    /// The multi-host bed every process runs on, if not this host's loopback.
    pub(crate) bed: Option<Arc<Bed>>,
}

impl ChildProcesses {
    pub(crate) fn new(agents_file: PathBuf, bed: Option<Arc<Bed>>) -> ChildProcesses {
        ChildProcesses {
            agents: Vec::new(),
            agents_file,
            fronts: Vec::new(),
            front_pids: Default::default(),
            spawn_with: None,
            snapshot: None,
            bed,
        }
    }

    /// Where proxy replica (or HAProxy) `i` listens for RPCs and admin calls: its host's
    /// fixed ports on the bed, free ports on loopback.
    fn front_addrs(&self, i: usize) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        Ok(match &self.bed {
            Some(bed) => {
                let ip = IpAddr::V4(bed.proxy_ip(i));
                (
                    SocketAddr::new(ip, netbed::RPC_PORT),
                    SocketAddr::new(ip, netbed::ADMIN_PORT),
                )
            }
            None => (free_port()?, free_port()?),
        })
    }

    /// The Unix socket proxy replica `i` also listens on, where the modules call it over one
    /// (node-local proxies with `components/node-local-socket`).
    pub(crate) fn front_socket(&self, i: usize) -> Option<PathBuf> {
        let bed = self.bed.as_ref()?;
        (bed.topology() == netbed::Topology::NodeLocalSocket)
            .then(|| self.agents_file.with_file_name(format!("proxy-{i}.sock")))
    }

    /// On the bed, the Service VIP sends new connections to front `i` (ready) or no longer
    /// does (terminating); without a bed, nothing to do.
    fn list_front(&self, i: usize, listed: bool) -> anyhow::Result<()> {
        match &self.bed {
            Some(bed) if listed => bed.add_endpoint(i),
            Some(bed) => bed.remove_endpoint(i),
            None => Ok(()),
        }
    }

    fn note_pids(&self) {
        *self.front_pids.lock().expect("not poisoned") =
            self.fronts.iter().map(|f| f.child.id()).collect();
    }

    /// Starts one more agent (next index, zero counters), not yet written to the agents file.
    pub(crate) async fn add_agent(&mut self) -> anyhow::Result<usize> {
        let (exe, extra) = self.spawn_with.clone().context("no agent template")?;
        let i = self.agents.len();
        let mut a = AgentProc::spawn(&exe, i, &extra, self.bed.as_deref()).await?;
        a.before = Some(Default::default());
        self.agents.push(a);
        Ok(i)
    }

    /// Stops agent `i` gracefully after reading its counters.
    pub(crate) async fn stop_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let a = self
            .agents
            .get_mut(i)
            .with_context(|| format!("no agent {i}"))?;
        let body = crate::http::get(a.admin, "/stats").await?;
        a.last = Some(serde_json::from_slice(&body)?);
        a.expect_exit = true;
        crate::http::post(a.admin, "/shutdown").await?;
        Ok(())
    }

    /// Starts `n` agents (indices from 0, `extra` arguments each) and writes the agents file.
    pub(crate) async fn spawn_agents(
        &mut self,
        exe: &Path,
        n: usize,
        extra: &[String],
    ) -> anyhow::Result<()> {
        self.spawn_with = Some((exe.to_owned(), extra.to_vec()));
        for i in 0..n {
            self.agents
                .push(AgentProc::spawn(exe, i, extra, self.bed.as_deref()).await?);
        }
        self.write_agents_file()
    }

    /// Starts one agent per entry of `each` (its arguments), indices from 0, and writes the
    /// agents file; agents added later take the first entry's.
    pub(crate) async fn spawn_agents_each(
        &mut self,
        exe: &Path,
        each: &[Vec<String>],
    ) -> anyhow::Result<()> {
        self.spawn_with = each.first().map(|a| (exe.to_owned(), a.clone()));
        for (i, extra) in each.iter().enumerate() {
            self.agents
                .push(AgentProc::spawn(exe, i, extra, self.bed.as_deref()).await?);
        }
        self.write_agents_file()
    }

    /// Writes the membership file atomically (write + rename).
    pub(crate) fn write_agents_file(&self) -> anyhow::Result<()> {
        let list: Vec<serde_json::Value> = self
            .agents
            .iter()
            .filter(|a| a.state != FileState::Removed)
            .map(|a| {
                serde_json::json!({
                    "id": format!("agent-{}", a.index),
                    "address": a.rpc.to_string(),
                    "state": if a.state == FileState::Terminating { "terminating" } else { "ready" },
                })
            })
            .collect();
        let tmp = self.agents_file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&list)?)?;
        std::fs::rename(&tmp, &self.agents_file)?;
        Ok(())
    }

    /// Starts one more proxy replica on free ports and waits for `GET /readyz` = 200.
    pub(crate) async fn spawn_proxy(
        &mut self,
        bin: &Path,
        extra: &[String],
    ) -> anyhow::Result<SocketAddr> {
        let i = self.fronts.len();
        let (listen, admin) = self.front_addrs(i)?;
        // The proxy's log goes to a file beside the agents file, shown if it fails to start.
        let log_path = self.agents_file.with_file_name(format!("proxy-{i}.log"));
        let mut args = extra.to_vec();
        // A short drain by default so runs end quickly, and the agents file polled every
        // 100 ms as an EndpointSlice watch would deliver changes (the proxy's 1 s default
        // alone delays a terminating agent's last PreRequest past 1 s); the caller's wins.
        if !extra.iter().any(|a| a.starts_with("--drain-delay")) {
            args.extend(["--drain-delay".into(), "100ms".into()]);
        }
        if !extra.iter().any(|a| a.starts_with("--agents-file-poll")) {
            args.extend(["--agents-file-poll".into(), "100ms".into()]);
        }
        // Its own control socket: on the bed every replica has the same admin port, which
        // names the default one.
        if !extra.iter().any(|a| a.starts_with("--control-socket")) {
            let ctl = self.agents_file.with_file_name(format!("proxy-{i}.ctl"));
            args.extend(["--control-socket".into(), ctl.display().to_string()]);
        }
        if let Some(path) = self.front_socket(i) {
            args.extend(["--listen".into(), format!("unix:{}", path.display())]);
        }
        let (command, _) = placed(self.bed.as_deref(), Role::Proxy, i, bin)?;
        let child =
            start_proxy(command, listen, admin, &self.agents_file, &args, &log_path).await?;
        self.list_front(i, true)?;
        self.fronts.push(Front {
            name: format!("sigsci-proxy {i}"),
            child,
            listen,
            admin: Some(admin),
            expect_exit: false,
            restart: Some((bin.to_owned(), args, log_path)),
        });
        self.note_pids();
        Ok(listen)
    }

    /// SIGTERM to proxy replica `i`, wait for it to exit, start it again on the same ports.
    /// Returns (exit status, time from SIGTERM to exit, time from SIGTERM to ready again).
    pub(crate) async fn restart_proxy(
        &mut self,
        i: usize,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration, Duration)> {
        let agents_file = self.agents_file.clone();
        let f = self
            .fronts
            .get_mut(i)
            .with_context(|| format!("no proxy {i}"))?;
        let (bin, args, log) = f.restart.clone().context("only a proxy can restart")?;
        let admin = f.admin.context("proxy without admin address")?;
        let listen = f.listen;
        let t0 = tokio::time::Instant::now();
        self.list_front(i, false)?;
        let f = &mut self.fronts[i];
        sigterm(&f.child).await;
        let status = tokio::time::timeout(Duration::from_secs(30), f.child.wait())
            .await
            .context("proxy did not exit within 30 s of SIGTERM")??;
        let exited = t0.elapsed();
        let log = log.with_extension("restarted.log");
        let (command, _) = placed(self.bed.as_deref(), Role::Proxy, i, &bin)?;
        self.fronts[i].child =
            start_proxy(command, listen, admin, &agents_file, &args, &log).await?;
        self.list_front(i, true)?;
        self.note_pids();
        Ok((status, exited, t0.elapsed()))
    }

    /// SIGTERM to proxy replica `i`; polls `/readyz` every 10 ms until it is not 200 and waits
    /// for the exit. Returns (time to 503, exit status, time to exit).
    pub(crate) async fn drain_proxy(
        &mut self,
        i: usize,
        unlist_after: Duration,
    ) -> anyhow::Result<(Option<Duration>, std::process::ExitStatus, Duration)> {
        anyhow::ensure!(i < self.fronts.len(), "no proxy {i}");
        let t0 = tokio::time::Instant::now();
        // A deleted pod's endpoint turns terminating: no new connections through the VIP, at
        // once or `unlist_after` later (the EndpointSlice controller and kube-proxy's delay).
        if unlist_after.is_zero() {
            self.list_front(i, false)?;
        } else if let Some(bed) = self.bed.clone() {
            tokio::spawn(async move {
                tokio::time::sleep(unlist_after).await;
                if let Err(e) = bed.remove_endpoint(i) {
                    tracing::warn!(error = %e, "Cannot take the draining proxy out of the VIP");
                }
            });
        }
        let f = &mut self.fronts[i];
        let admin = f.admin.context("only a proxy drains")?;
        f.expect_exit = true;
        sigterm(&f.child).await;
        let mut flipped = None;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let status = loop {
            tokio::select! {
                s = f.child.wait() => break s?,
                _ = tick.tick(), if flipped.is_none() => {
                    let r = crate::http::call(admin, hyper::Method::GET, "/readyz", Duration::from_millis(500)).await;
                    if !matches!(r, Ok((s, _)) if s.is_success()) {
                        flipped = Some(t0.elapsed());
                    }
                }
            }
        };
        Ok((flipped, status, t0.elapsed()))
    }

    /// Starts HAProxy (TCP mode, round robin over the agents) and waits until it accepts.
    pub(crate) async fn spawn_haproxy(
        &mut self,
        bin: &Path,
        dir: &Path,
    ) -> anyhow::Result<SocketAddr> {
        self.spawn_haproxy_balance(bin, dir, "roundrobin").await
    }

    /// Starts HAProxy in TCP mode with `balance <balance>` (`roundrobin`, `source`) and waits
    /// until it accepts.
    pub(crate) async fn spawn_haproxy_balance(
        &mut self,
        bin: &Path,
        dir: &Path,
        balance: &str,
    ) -> anyhow::Result<SocketAddr> {
        let i = self.fronts.len();
        let (listen, _) = self.front_addrs(i)?;
        let servers = self.agents.iter().map(|a| (a.index, a.rpc));
        let cfg = haproxy::config(listen, "", balance, servers);
        let path = dir.join(format!("haproxy-{i}.cfg"));
        std::fs::write(&path, cfg)?;
        let (command, _) = placed(self.bed.as_deref(), Role::Proxy, i, bin)?;
        let child = haproxy::start(command, bin, &path, listen, "haproxy").await?;
        self.list_front(i, true)?;
        self.fronts.push(Front {
            name: format!("haproxy ({balance})"),
            child,
            listen,
            admin: None,
            expect_exit: false,
            restart: None,
        });
        self.note_pids();
        Ok(listen)
    }

    /// Children that died unexpectedly.
    pub(crate) fn check_alive(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for a in &mut self.agents {
            if !a.expect_exit
                && let Ok(Some(status)) = a.child.try_wait()
            {
                dead.push(format!("agent {} exited during the run: {status}", a.index));
            }
        }
        for f in &mut self.fronts {
            if !f.expect_exit
                && let Ok(Some(status)) = f.child.try_wait()
            {
                dead.push(format!("{} exited during the run: {status}", f.name));
            }
        }
        dead
    }

    /// Stops everything: the front first (SIGTERM, so the proxy drains), then the agents
    /// (`POST /shutdown`); kills what does not exit within 10 s.
    pub(crate) async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for mut f in self.fronts.drain(..) {
            if f.expect_exit {
                let _ = f.child.wait().await;
                continue;
            }
            sigterm(&f.child).await;
            let name = f.name;
            match tokio::time::timeout(Duration::from_secs(10), f.child.wait()).await {
                Ok(Ok(status)) if status.success() || name.starts_with("haproxy") => {}
                Ok(Ok(status)) => problems.push(format!("{name} exited with {status} on SIGTERM")),
                _ => {
                    problems.push(format!("{name} did not exit within 10 s of SIGTERM"));
                    let _ = f.child.kill().await;
                }
            }
        }
        for a in &mut self.agents {
            if a.expect_exit {
                let _ = a.child.wait().await;
                continue;
            }
            let _ = crate::http::post(a.admin, "/shutdown").await;
            match tokio::time::timeout(Duration::from_secs(10), a.child.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => problems.push(format!("agent {} exited with {s}", a.index)),
                _ => {
                    problems.push(format!("agent {} did not stop within 10 s", a.index));
                    let _ = a.child.kill().await;
                }
            }
        }
        problems
    }
}

/// Sends a signal to a child by pid with kill(1) (no unsafe code, no extra dependency).
pub(crate) async fn signal(child: &Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .await;
    }
}

async fn sigterm(child: &Child) {
    signal(child, "TERM").await;
}

/// Starts `sigsci-proxy` watching `agents_file` and waits for `GET /readyz` = 200.
async fn start_proxy(
    mut command: Command,
    listen: SocketAddr,
    admin: SocketAddr,
    agents_file: &Path,
    extra: &[String],
    log_path: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_path)?;
    let bin = command.as_std().get_program().to_owned();
    let mut child = command
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--agents-file")
        .arg(agents_file)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let bin = std::path::PathBuf::from(bin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            anyhow::bail!("{} exited at start: {status}\n{log}", bin.display());
        }
        if let Ok((s, _)) =
            crate::http::call(admin, hyper::Method::GET, "/readyz", Duration::from_secs(1)).await
            && s.is_success()
        {
            return Ok(child);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "proxy not ready (GET /readyz) within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port free right now on 127.0.0.1 (the child binds it a moment later).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// `sigsci-proxy` next to this executable (also from `target/*/deps/` for tests).
pub(crate) fn find_proxy_bin(exe: &Path) -> anyhow::Result<PathBuf> {
    let dir = exe.parent().context("executable has no directory")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("sigsci-proxy");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "sigsci-proxy not found next to {} (build it: cargo build --release -p sigsci-proxy, or pass --proxy-bin)",
        exe.display()
    )
}
