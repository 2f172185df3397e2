//! `loadtest local --bed netns`: the run on a network instead of one loopback interface.
//!
//! Loopback hides what decides a module's fate in production: Linux reuses TIME_WAIT ports for
//! new connections only on loopback, nothing is NATed there, and nothing vanishes without a
//! reset. So every agent, every proxy replica and the module emulator get a host of their own —
//! a network namespace with its own address on a bridge (MTU 1500, as a node's pod network) —
//! and the modules reach the proxies only through a Service VIP done as kube-proxy's nftables
//! mode does it: DNAT in the output hook to one ready endpoint chosen at random per new
//! connection, with conntrack keeping each connection on its endpoint. A proxy that drains
//! leaves the VIP's set for new connections, as a terminating endpoint of an EndpointSlice
//! does, while its existing connections keep working. With node-local proxies
//! ([`Topology::NodeLocal`], as `overlays/node-local` runs them) proxy replica `i` shares module
//! host `i`, and each module host's VIP rules list only its own node's proxy
//! (`internalTrafficPolicy: Local`).
//!
//! The orchestrator's own thread enters the bed's switch namespace before its runtime starts
//! (so every task it runs — steps, admin reads, bad clients — is a host on the bridge too); the
//! module emulator runs on a runtime whose threads enter the module host's namespace;
//! agents and proxies are started with `ip netns exec`. Everything lives in namespaces this
//! process made, under the TEST-NET address block for benchmarks (198.18.0.0/15, RFC 2544):
//! no packet leaves the machine, and the namespaces are deleted when the run ends (and, if a
//! run was killed, by the next one).

mod nft;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::Serialize;

pub use nft::{RPC_PORT, VIP};

/// The admin port of every proxy replica.
pub const ADMIN_PORT: u16 = 9901;
/// The switch's own address (the orchestrator's host).
const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Name prefix of every namespace a bed makes: `ltb<pid>-…`.
const PREFIX: &str = "ltb";

/// Where the proxies run, as the manifests place them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// `manifests/base`: a Deployment, every proxy replica on a host of its own, the VIP
    /// spreading each module host's new connections over all the ready ones.
    #[default]
    Deployment,
    /// `overlays/node-local`: proxy replica `i` on module host `i` (a DaemonSet's pod on the app
    /// node), the VIP sending a host's connections only to its own node's proxy
    /// (`internalTrafficPolicy: Local`). The module emulator is on module host 0; the other
    /// replicas are the proxies of nodes whose modules the run does not drive.
    NodeLocal,
    /// `overlays/node-local` with `components/node-local-socket`: as `node-local`, and the module
    /// calls its node's proxy over a Unix socket instead of the VIP.
    NodeLocalSocket,
}

impl Topology {
    /// True when each proxy shares its node with the modules it serves.
    pub fn node_local(self) -> bool {
        self != Topology::Deployment
    }
}

/// What a host of the bed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A simulated agent.
    Agent,
    /// A proxy replica (or HAProxy).
    Proxy,
    /// A module emulator (an app node).
    Module,
}

impl Role {
    fn octet(self) -> u8 {
        match self {
            Role::Agent => 1,
            Role::Proxy => 2,
            Role::Module => 3,
        }
    }
    /// The address of host `index` of this role.
    fn ip(self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.octet(), index as u8 + 1)
    }
    fn letter(self) -> char {
        match self {
            Role::Agent => 'a',
            Role::Proxy => 'p',
            Role::Module => 'm',
        }
    }
}

/// One host: a network namespace with one address on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The namespace's name (`ip netns`).
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// What it runs, and which one.
    pub role: Role,
    /// The index among hosts of its role.
    pub index: usize,
}

/// A module host's sockets at one moment: what the issue of running out of ports is about.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Sockets {
    /// TCP sockets in TIME_WAIT.
    pub time_wait: u64,
    /// conntrack entries (every NATed connection has one).
    pub conntrack: u64,
}

/// The bed: the switch namespace, the hosts made so far, the VIP's endpoints.
#[derive(Debug)]
pub struct Bed {
    id: String,
    topology: Topology,
    switch: String,
    hosts: Mutex<Vec<Host>>,
    /// Proxy replicas in the VIP's set, by index (ready endpoints).
    endpoints: Mutex<Vec<usize>>,
}

impl Bed {
    /// Makes the switch namespace and its bridge. Needs root, iproute2 and nftables; says so
    /// plainly when they are missing.
    pub fn create(topology: Topology) -> anyhow::Result<Arc<Bed>> {
        anyhow::ensure!(
            rustix::process::geteuid().is_root(),
            "--bed netns needs root (it makes network namespaces); run as root or use the loopback bed"
        );
        for tool in ["ip", "nft", "ss"] {
            anyhow::ensure!(
                Command::new(tool)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok(),
                "--bed netns needs `{tool}` (iproute2, nftables: scripts/setup installs them)"
            );
        }
        remove_stale();
        let id = format!("{PREFIX}{}", std::process::id());
        let switch = format!("{id}-sw");
        let bed = Bed {
            id,
            topology,
            switch: switch.clone(),
            hosts: Mutex::new(Vec::new()),
            endpoints: Mutex::new(Vec::new()),
        };
        ip(&["netns", "add", &switch]).context("making a network namespace")?;
        let sw = |args: &[&str]| {
            let mut all = vec!["-n", switch.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        sw(&["link", "set", "lo", "up"])?;
        sw(&["link", "add", "br0", "type", "bridge"])?;
        sw(&["addr", "add", &format!("{SWITCH_IP}/16"), "dev", "br0"])?;
        sw(&["link", "set", "br0", "up"])?;
        Ok(Arc::new(bed))
    }

    /// Moves the calling thread into the switch namespace: call it on the main thread before
    /// the runtime starts, so that every thread the runtime makes is on the bridge too.
    pub fn enter_switch(&self) -> anyhow::Result<()> {
        enter(&self.switch)
    }

    /// Where the proxies run.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Whose hosts the proxies run on: their own, or (node-local) the app nodes'.
    fn proxy_hosts(&self) -> Role {
        if self.topology.node_local() {
            Role::Module
        } else {
            Role::Proxy
        }
    }

    /// The host for `role` number `index`, made the first time it is asked for. Node-local
    /// proxy replica `i` lives on module host `i`.
    pub fn host(&self, role: Role, index: usize) -> anyhow::Result<Host> {
        let role = match role {
            Role::Proxy => self.proxy_hosts(),
            r => r,
        };
        let mut hosts = self.hosts.lock().expect("not poisoned");
        if let Some(h) = hosts.iter().find(|h| h.role == role && h.index == index) {
            return Ok(h.clone());
        }
        anyhow::ensure!(index < 250, "at most 250 hosts of a kind");
        let name = format!("{}{index}", role.letter());
        let host = Host {
            ns: format!("{}-{name}", self.id),
            ip: role.ip(index),
            role,
            index,
        };
        let ns = host.ns.as_str();
        ip(&["netns", "add", ns])?;
        // Deleted with the bed from here on, whatever fails next.
        hosts.push(host.clone());
        let sw = self.switch.as_str();
        ip(&[
            "-n", sw, "link", "add", &name, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", sw, "link", "set", &name, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/16", host.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        if role == Role::Module {
            nft::apply(ns, &nft::vip_rules(&self.endpoint_addrs(Some(index))))?;
        }
        Ok(host)
    }

    /// A command that runs `program` on `host`.
    pub fn command(&self, host: &Host, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &host.ns]).arg(program);
        c
    }

    /// A runtime whose threads live on `host`: every socket a task on it opens is the host's.
    pub fn runtime_on(&self, host: &Host) -> anyhow::Result<tokio::runtime::Runtime> {
        let ns = host.ns.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name(format!("on-{}", host.ns))
            .on_thread_start(move || {
                enter(&ns).expect("entering a namespace this process made");
            })
            .build()
            .context("building a runtime")
    }

    /// Module host 0, where the module emulator runs, and a runtime whose threads live there.
    pub fn module_host(&self) -> anyhow::Result<(tokio::runtime::Runtime, Host)> {
        let host = self.host(Role::Module, 0)?;
        Ok((self.runtime_on(&host)?, host))
    }

    /// The proxy replicas the VIP sends new connections to.
    pub fn set_endpoints(&self, proxies: Vec<usize>) -> anyhow::Result<()> {
        *self.endpoints.lock().expect("not poisoned") = proxies;
        nft::apply(&self.switch, &nft::vip_rules(&self.endpoint_addrs(None)))?;
        let hosts = self.hosts.lock().expect("not poisoned").clone();
        for h in hosts.iter().filter(|h| h.role == Role::Module) {
            nft::apply(&h.ns, &nft::vip_rules(&self.endpoint_addrs(Some(h.index))))?;
        }
        Ok(())
    }

    /// Takes proxy replica `i` out of the VIP's set for new connections (terminating).
    pub fn remove_endpoint(&self, i: usize) -> anyhow::Result<()> {
        let mut eps = self.endpoints.lock().expect("not poisoned").clone();
        eps.retain(|&e| e != i);
        self.set_endpoints(eps)
    }

    /// Puts proxy replica `i` back into the VIP's set (ready again).
    pub fn add_endpoint(&self, i: usize) -> anyhow::Result<()> {
        let mut eps = self.endpoints.lock().expect("not poisoned").clone();
        if !eps.contains(&i) {
            eps.push(i);
            eps.sort_unstable();
        }
        self.set_endpoints(eps)
    }

    /// The endpoints module host `node` sees behind the VIP (every ready one, or with
    /// node-local proxies its own node's only); `None`: the switch's view, every ready one.
    fn endpoint_addrs(&self, node: Option<usize>) -> Vec<SocketAddrV4> {
        let local = |i: usize| match node {
            Some(n) if self.topology.node_local() => i == n,
            _ => true,
        };
        self.endpoints
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|&&i| local(i))
            .map(|&i| SocketAddrV4::new(self.proxy_ip(i), RPC_PORT))
            .collect()
    }

    /// The address of proxy replica `i` (its host's).
    pub fn proxy_ip(&self, i: usize) -> Ipv4Addr {
        self.proxy_hosts().ip(i)
    }

    /// The Service address modules connect to.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((VIP, RPC_PORT))
    }

    /// The host vanishes: every packet to or from it dropped, no reset, no ICMP (node loss or
    /// a partition).
    pub fn cut(&self, host: &Host) -> anyhow::Result<()> {
        nft::apply(&host.ns, nft::CUT)
    }

    /// The host's path works again.
    pub fn heal(&self, host: &Host) -> anyhow::Result<()> {
        nft::apply(&host.ns, nft::HEAL)
    }

    /// TIME_WAIT sockets and conntrack entries on `host` now.
    pub fn sockets(&self, host: &Host) -> anyhow::Result<Sockets> {
        let ss = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                "ss",
                "-Htan",
                "state",
                "time-wait",
            ])
            .output()?;
        let count = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                "cat",
                "/proc/sys/net/netfilter/nf_conntrack_count",
            ])
            .output()?;
        Ok(Sockets {
            time_wait: ss
                .stdout
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64,
            conntrack: String::from_utf8_lossy(&count.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *self.hosts.lock().expect("not poisoned"));
        for h in hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// Deletes the namespaces of beds whose process is gone (a run that was killed).
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// Moves the calling thread into namespace `ns` (setns on its `ip netns` bind mount).
fn enter(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering namespace {ns}"))
}

/// Runs `ip args…`; its error output in the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs `work` on the module host's runtime `on` (so every socket it opens is that host's), or
/// here without a bed.
pub(crate) async fn on_module_host<T: Send + 'static>(
    on: Option<tokio::runtime::Handle>,
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    match on {
        Some(h) => h.spawn(work).await?,
        None => work.await,
    }
}
