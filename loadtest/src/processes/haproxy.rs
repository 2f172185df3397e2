//! HAProxy as a child process: the TCP-mode configuration every HAProxy the loadtest starts
//! shares, and its start (up once it accepts). One place, so that the setups `loadtest bench`
//! compares differ only where they say (the `balance` rule, a bind option).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The configuration: TCP mode, listening at `listen` (with `bind_options`, e.g.
/// ` defer-accept`), `balance` (`roundrobin`, `source`) over `servers` (index, address).
pub(crate) fn config(
    listen: SocketAddr,
    bind_options: &str,
    balance: &str,
    servers: impl IntoIterator<Item = (usize, SocketAddr)>,
) -> String {
    let mut cfg = format!(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\n\
         frontend rpc\n  bind {listen}{bind_options}\n  default_backend agents\n\nbackend agents\n  balance {balance}\n"
    );
    for (i, a) in servers {
        cfg.push_str(&format!("  server agent-{i} {a}\n"));
    }
    cfg
}

/// Runs `command` (HAProxy, `bin`) on the configuration at `path` and waits until it accepts
/// at `listen` (10 s at most); `name` names it in errors.
pub(crate) async fn start(
    mut command: Command,
    bin: &Path,
    path: &Path,
    listen: SocketAddr,
    name: &str,
) -> anyhow::Result<Child> {
    let mut child = command
        .arg("-f")
        .arg(path)
        .arg("-db")
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install it: apt-get install -y haproxy)",
                bin.display()
            )
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The kernel completes a probe's handshake once HAProxy listens, deferred or not.
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited at start: {status}");
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(child);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} not accepting within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
