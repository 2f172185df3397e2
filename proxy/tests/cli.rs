//! The binary: configuration errors exit 2 naming every bad option; `--help` shows defaults;
//! a real process serves on `:0` ports it logs, and `sigsci-proxy drain` stops it cleanly.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_sigsci-proxy");

#[test]
fn invalid_configuration_exits_2_naming_every_problem() {
    let out = Command::new(BIN)
        .args([
            "--rpc-timeout",
            "0ms",
            "--retry-budget",
            "3",
            "--upstream-connections",
            "0",
        ])
        .env_remove("SIGSCI_PROXY_AGENTS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for option in [
        "--rpc-timeout",
        "--retry-budget",
        "--upstream-connections",
        "--agents",
    ] {
        assert!(stderr.contains(option), "{option} not named in: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["--connect-timeout", "fast"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "unparsable values are usage errors too"
    );
}

#[test]
fn help_documents_defaults() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "--listen",
        "0.0.0.0:9999",
        "--rpc-timeout",
        "[default: 80ms]",
        "SIGSCI_PROXY_ADMIN",
    ] {
        assert!(help.contains(text), "{text} missing from --help");
    }
}

/// A proxy process on `:0` ports in front of `agent`, ready; the log is read on a thread for
/// the whole run, so the pipe never fills or breaks.
struct Running {
    child: std::process::Child,
    rpc: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    log: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Running {
    /// A failed assertion must not leave the process running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(agent: &Agent, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--drain-delay",
            "50ms",
        ])
        .args(["--agents", &agent.addr.to_string()])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("Listening") {
                let field = |name: &str| {
                    let start = line.find(name).unwrap() + name.len();
                    line[start..].split_whitespace().next().unwrap().to_owned()
                };
                let _ = tx.send((field("rpc.addr="), field("admin.addr=")));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let (rpc, admin) =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    let rpc: std::net::SocketAddr = rpc.parse().unwrap();
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    for _ in 0..200 {
        if http(admin, "GET", "/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        child,
        rpc,
        admin,
        log: Some(log),
    }
}

impl Running {
    /// `sigsci-proxy drain`, then the exit code and the log.
    async fn drain(mut self) -> (Option<i32>, String) {
        let drain = Command::new(BIN)
            .args(["drain", "--admin", &self.admin.to_string()])
            .output()
            .unwrap();
        assert!(drain.status.success());
        let status = tokio::task::block_in_place(|| self.child.wait().unwrap());
        let log = self.log.take().unwrap().join().unwrap();
        (status.code(), log)
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = 100; // USER_HZ on Linux
        Duration::from_millis(ticks * 1000 / hz)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_logged_ports_and_drains_on_request() {
    let agent = Agent::start().await;
    let proxy = start(&agent, &[]).await;
    let id = pre(proxy.rpc).await;
    assert_eq!(update(proxy.rpc, &id).await, None);
    assert_eq!(agent.matched(), 1);

    let (code, log) = proxy.drain().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_proxy_serves_and_sleeps_when_idle() {
    let agent = Agent::start().await;
    let proxy = start(&agent, &["--busy-poll", "2ms"]).await;
    for _ in 0..20 {
        let id = pre(proxy.rpc).await;
        assert_eq!(update(proxy.rpc, &id).await, None);
    }
    assert_eq!(agent.matched(), 20);

    // Idle: past the window it sleeps. A proxy spinning on would use about a second of CPU
    // in this second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = proxy.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proxy.cpu_time() - before;
    assert!(
        idle < Duration::from_millis(200),
        "an idle busy-polling proxy used {idle:?} of CPU in 1 s"
    );

    let (code, log) = proxy.drain().await;
    assert_eq!(code, Some(0), "{log}");
}
