//! The binary: configuration errors exit 2 naming every bad option; `--help` shows defaults;
//! a real process serves on `:0` ports it logs, and `sigsci-proxy drain` stops it cleanly.

use std::process::Command;
use std::time::Duration;

use crate::support::process::{BIN, ProxyProcess};
use crate::support::*;

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

/// A proxy process on `:0` ports in front of `agent`, ready, with a short drain.
async fn start(agent: &Agent, extra: &[&str]) -> ProxyProcess {
    let args = [&["--drain-delay", "50ms"][..], extra].concat();
    ProxyProcess::in_front_of(agent.addr, &args).await
}

/// `sigsci-proxy drain`, then the exit code and the log.
async fn drain(proxy: ProxyProcess) -> (Option<i32>, String) {
    let drain = Command::new(BIN)
        .args(["drain", "--admin", &proxy.admin().to_string()])
        .output()
        .unwrap();
    assert!(drain.status.success());
    let (status, log) = proxy.wait(PATIENCE).await;
    (status.code(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_logged_ports_and_drains_on_request() {
    let agent = Agent::start().await;
    let proxy = start(&agent, &[]).await;
    let id = pre(proxy.rpc()).await;
    assert_eq!(update(proxy.rpc(), &id).await, None);
    assert_eq!(agent.matched(), 1);

    let (code, log) = drain(proxy).await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_proxy_serves_and_sleeps_when_idle() {
    let agent = Agent::start().await;
    let proxy = start(&agent, &["--busy-poll", "2ms"]).await;
    for _ in 0..20 {
        let id = pre(proxy.rpc()).await;
        assert_eq!(update(proxy.rpc(), &id).await, None);
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

    let (code, log) = drain(proxy).await;
    assert_eq!(code, Some(0), "{log}");
}
