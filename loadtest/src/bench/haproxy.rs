//! HAProxy at its best for this load, beside the stock setups the orchestrator starts: `mode
//! tcp`, `balance roundrobin` with `defer-accept` on the bind line (Linux `TCP_DEFER_ACCEPT`,
//! which sigsci-proxy sets by default), so that the CPU ratio compares like with like. The
//! configuration is the shared one (`processes::haproxy::config`) plus that one keyword.

use std::net::SocketAddr;
use std::path::Path;

use tokio::process::Child;

use crate::processes::haproxy;

/// A running HAProxy; killed when dropped.
pub(crate) struct Haproxy {
    child: Child,
    /// Where it accepts module connections.
    pub(crate) listen: SocketAddr,
}

impl Haproxy {
    /// Its process id, for the CPU samples.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some(problem)` if it exited.
    pub(crate) fn check_alive(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("haproxy (defer-accept) exited: {status}")),
            _ => None,
        }
    }
}

/// Starts HAProxy round robin over `agents` with `defer-accept`, its configuration in `dir`,
/// and waits until it accepts.
pub(crate) async fn spawn_defer_accept(
    bin: &Path,
    dir: &Path,
    agents: &[SocketAddr],
) -> anyhow::Result<Haproxy> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let cfg = haproxy::config(
        listen,
        " defer-accept",
        "roundrobin",
        agents.iter().copied().enumerate(),
    );
    let path = dir.join("haproxy-defer-accept.cfg");
    std::fs::write(&path, cfg)?;
    let command = tokio::process::Command::new(bin);
    let child = haproxy::start(command, bin, &path, listen, "haproxy (defer-accept)").await?;
    Ok(Haproxy { child, listen })
}
