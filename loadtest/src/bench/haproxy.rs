//! HAProxy at its best for this load, beside the stock setups the orchestrator starts: `mode
//! tcp`, `balance roundrobin` with `defer-accept` on the bind line (Linux `TCP_DEFER_ACCEPT`,
//! which sigsci-proxy sets by default), so that the CPU ratio compares like with like. The
//! configuration is `Pool::spawn_haproxy_balance`'s, word for word, plus that one keyword.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Child;

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
    let mut cfg = format!(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\n\
         frontend rpc\n  bind {listen} defer-accept\n  default_backend agents\n\nbackend agents\n  balance roundrobin\n"
    );
    for (i, a) in agents.iter().enumerate() {
        cfg.push_str(&format!("  server agent-{i} {a}\n"));
    }
    let path = dir.join("haproxy-defer-accept.cfg");
    std::fs::write(&path, cfg)?;
    let child = tokio::process::Command::new(bin)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut h = Haproxy { child, listen };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The kernel completes a probe's handshake once HAProxy listens, deferred or not.
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        if let Some(problem) = h.check_alive() {
            anyhow::bail!(problem);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "haproxy (defer-accept) not accepting within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(h)
}
