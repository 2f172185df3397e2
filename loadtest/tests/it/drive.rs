//! The module emulator against the simulator: no errors, every flagged request's update
//! reaches the agent that issued it; and the binaries work as processes (`loadtest agent` with the
//! flags the manifests give it).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::drive::{self, DriveArgs};
use simulator::agent::SimAgent;
use tokio::io::AsyncBufReadExt;

async fn drive_once(persistent: bool) {
    let agent = SimAgent::builder()
        .admin("127.0.0.1:0".parse().unwrap())
        .spawn()
        .await
        .unwrap();
    let args = DriveArgs {
        target: agent.rpc_addr().clone(),
        rate: 150.0,
        duration: Duration::from_millis(1500),
        attack_fraction: 0.2,
        anomalous_fraction: 0.1,
        persistent,
        // Correctness, not speed: a generous deadline so a busy CI box cannot cause timeouts.
        timeout: Duration::from_secs(2),
        agents_admin: vec![agent.admin_addr().unwrap()],
        no_progress: true,
        ..DriveArgs::default()
    };
    let report = drive::run(args).await.unwrap();
    let stats = agent.shutdown().await;
    assert_eq!(report.total_errors(), 0, "{}", report.to_text());
    assert!(report.tally.transactions > 100);
    assert!(report.tally.flagged > 0 && report.tally.methods.contains_key("RPC.PostRequest"));
    assert_eq!(
        report.updates_matched,
        report.tally.flagged,
        "{}",
        report.to_text()
    );
    assert_eq!((report.updates_orphaned, report.updates_expired), (0, 0));
    assert_eq!(report.orphaned_fraction, Some(0.0));
    assert_eq!(stats.prerequests, report.tally.transactions);
    assert_eq!(report.agents[0].prerequest_share, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_per_call_has_no_errors_and_every_update_is_matched() {
    drive_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_persistent_pipelined_has_no_errors_and_every_update_is_matched() {
    drive_once(true).await;
}

#[test]
fn agent_and_drive_binaries_work_as_processes() {
    let exe = env!("CARGO_BIN_EXE_loadtest");
    let mut agent = Command::new(exe)
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--flag-fraction",
            "0.5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let (rpc, admin) = (field("rpc="), field("admin="));
    let json = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(exe)
        .args([
            "drive",
            "--target",
            &rpc,
            "--rate",
            "100",
            "--duration",
            "1s",
            "--timeout",
            "2s",
        ])
        .args(["--agents-admin", &admin, "--json"])
        .arg(json.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    assert!(
        report["flagged"].as_u64().unwrap() > 0,
        "the agent's --flag-fraction flags some requests"
    );
    assert_eq!(report["updates_matched"], report["flagged"]);

    Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean exit");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(
        rest.contains("updates_matched"),
        "stats are printed on exit: {rest}"
    );
}

#[test]
fn local_direct_runs_agents_drives_and_passes() {
    let exe = env!("CARGO_BIN_EXE_loadtest");
    let output = Command::new(exe)
        .args([
            "local",
            "--direct",
            "--agents",
            "1",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--max-errors",
            "1000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("PASS") && stdout.contains("orphaned 0"),
        "{stdout}"
    );
}

#[test]
fn drive_rejects_invalid_options_with_usage_status() {
    let exe = env!("CARGO_BIN_EXE_loadtest");
    let status = Command::new(exe)
        .args(["drive", "--attack-fraction", "2"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[tokio::test]
async fn agent_and_drive_speak_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("unix:{}", dir.path().join("sigsci.sock").display());
    let agent = SimAgent::builder()
        .listen(path.parse().unwrap())
        .spawn()
        .await
        .unwrap();
    let args = DriveArgs {
        target: path.parse().unwrap(),
        rate: 100.0,
        duration: Duration::from_millis(500),
        attack_fraction: 0.5,
        timeout: Duration::from_secs(2),
        no_progress: true,
        ..DriveArgs::default()
    };
    let report = drive::run(args).await.unwrap();
    let stats = agent.shutdown().await;
    assert_eq!(report.total_errors(), 0, "{}", report.to_text());
    assert_eq!(stats.updates_matched, report.tally.flagged);
    assert!(report.tally.flagged > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_target_reports_both_paths_with_half_the_transactions_each() {
    let spawn = || async {
        SimAgent::builder()
            .admin("127.0.0.1:0".parse().unwrap())
            .spawn()
            .await
            .unwrap()
    };
    let (a, b) = (spawn().await, spawn().await);
    let args = DriveArgs {
        target: a.rpc_addr().clone(),
        compare_target: Some(b.rpc_addr().clone()),
        rate: 200.0,
        duration: Duration::from_millis(1000),
        attack_fraction: 0.5,
        timeout: Duration::from_secs(2),
        agents_admin: vec![a.admin_addr().unwrap(), b.admin_addr().unwrap()],
        no_progress: true,
        ..DriveArgs::default()
    };
    let (addr_a, addr_b) = (a.rpc_addr().to_string(), b.rpc_addr().to_string());
    let report = drive::run(args).await.unwrap();
    let (sa, sb) = (a.shutdown().await, b.shutdown().await);
    assert_eq!(report.total_errors(), 0, "{}", report.to_text());
    assert_eq!(report.tally.transactions, 200);
    let [pa, pb] = report.paths.as_slice() else {
        panic!("two paths: {}", report.to_text())
    };
    assert_eq!((pa.name.as_str(), pb.name.as_str()), ("A", "B"));
    assert_eq!((pa.tally.transactions, pb.tally.transactions), (100, 100));
    assert_eq!((&pa.target, &pb.target), (&addr_a, &addr_b));
    // Each path's calls reached its own agent, updates included.
    assert_eq!(sa.prerequests, pa.tally.transactions);
    assert_eq!(sb.prerequests, pb.tally.transactions);
    assert_eq!(sa.updates_matched, pa.tally.flagged);
    assert_eq!(sb.updates_matched, pb.tally.flagged);
    assert_eq!(report.tally.flagged, pa.tally.flagged + pb.tally.flagged);
    for p in [pa, pb] {
        assert_eq!(p.tally.methods["RPC.PreRequest"].calls, 100);
    }
    assert!(report.difference_us.contains_key("RPC.PreRequest"));
    let text = report.to_text();
    assert!(text.contains("path A") && text.contains("path B") && text.contains("B − A"));
}

#[test]
fn local_compare_rejects_options_it_cannot_honour_with_usage_status() {
    let exe = env!("CARGO_BIN_EXE_loadtest");
    for extra in [
        &["--direct"][..],
        &["--via", "haproxy"],
        &["--proxies", "2"],
    ] {
        let status = Command::new(exe)
            .args(["local", "--compare"])
            .args(extra)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "local --compare {extra:?}");
    }
}

/// The two flag names the Kubernetes manifests use, on the real binary.
#[tokio::test]
async fn startup_delay_and_probe_flags_on_the_binary() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--startup-delay",
            "700ms",
            "--startup-probe",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let probe: SocketAddr = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("startup="))
        .unwrap()
        .parse()
        .unwrap();
    let startup_status = async || {
        let get = hyper::Method::GET;
        let answer = simulator::http::call(probe, get, "/startup", Duration::from_secs(2)).await;
        answer.unwrap().0.as_u16()
    };
    assert_eq!(startup_status().await, 503);
    // The delay runs from the process's start, which a loaded machine puts some time after
    // `t0`: wait for the 200 (bounded), and check it did not come before the delay.
    while startup_status().await != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "probe never turned 200"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "200 before the delay"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
