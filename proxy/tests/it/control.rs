//! The operational surface, with real processes: drain only through the local control socket
//! (never the admin port), Unix listeners that never take over a live socket nor remove one
//! that is not theirs, and socket permissions.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::{BIN, ProxyProcess, free_port};
use crate::support::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_not_on_the_admin_port_and_the_drain_command_finds_the_server_by_its_env() {
    let agent = Agent::start().await;
    let admin = format!("127.0.0.1:{}", free_port());
    let agents = agent.addr.to_string();
    // The server's environment, as in the manifests: no control socket named.
    let env = [
        ("SIGSCI_PROXY_LISTEN", "127.0.0.1:0"),
        ("SIGSCI_PROXY_ADMIN", admin.as_str()),
        ("SIGSCI_PROXY_AGENTS", agents.as_str()),
        ("SIGSCI_PROXY_DRAIN_DELAY", "300ms"),
    ];
    let proxy = ProxyProcess::spawn(&[], &env).await.ok().unwrap();
    let admin = proxy.admin();
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200);

    // Anything that reaches the admin port cannot drain.
    assert_eq!(http(admin, "POST", "/drain").await.0, 404);
    assert_eq!(http(admin, "GET", "/drain").await.0, 404);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200, "still ready");
    let id = pre(proxy.rpc()).await;
    assert_eq!(update(proxy.rpc(), &id).await, None);

    let control = Path::new(&proxy.fields["control.path"]).to_owned();
    assert_eq!(
        control,
        Path::new(&format!("/tmp/sigsci-proxy-{}.ctl", admin.port()))
    );
    assert_eq!(mode(&control), 0o600, "owner only");

    // The preStop hook: `sigsci-proxy drain` with the server's environment, no flag.
    let mut drain = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("SIGSCI_PROXY_")) {
        drain.env_remove(k);
    }
    let started = Instant::now();
    let out = drain.arg("drain").envs(env).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flipped = loop {
        if http(admin, "GET", "/readyz").await.0 == 503 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(2), "never 503");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("readiness 503 {flipped:?} after `sigsci-proxy drain` started");
    assert!(flipped < Duration::from_secs(1), "503 after {flipped:?}");

    let (status, log) = proxy.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("Drain requested on the control socket"),
        "{log}"
    );
    assert!(!control.exists(), "the control socket is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_command_fails_clearly_without_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.ctl");
    let out = Command::new(BIN)
        .args(["drain", "--control-socket", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

/// Args for a proxy on `listen`, with its own control socket in `dir`.
fn unix_args<'a>(listen: &'a str, agents: &'a str, control: &'a str) -> Vec<&'a str> {
    vec![
        "--listen",
        listen,
        "--admin",
        "127.0.0.1:0",
        "--agents",
        agents,
        "--control-socket",
        control,
        "--drain-delay",
        "50ms",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_a_live_unix_socket_exits_non_zero_and_the_first_keeps_it() {
    let agent = Agent::start().await;
    let agents = agent.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let listen = format!("unix:{}", sock.display());
    let (ctl_a, ctl_b) = (dir.path().join("a.ctl"), dir.path().join("b.ctl"));

    let first = ProxyProcess::spawn(&unix_args(&listen, &agents, ctl_a.to_str().unwrap()), &[])
        .await
        .ok()
        .unwrap();
    let ino = inode(&sock);
    assert_eq!(
        mode(&sock),
        0o666,
        "default mode: modules run as another user"
    );

    let Err(second) =
        ProxyProcess::spawn(&unix_args(&listen, &agents, ctl_b.to_str().unwrap()), &[]).await
    else {
        panic!("a second proxy started on a live socket");
    };
    assert!(!second.status.success());
    assert!(
        second.log.contains("another process accepts connections"),
        "{}",
        second.log
    );
    assert_eq!(inode(&sock), ino, "the first proxy's socket is untouched");
    tokio::net::UnixStream::connect(&sock)
        .await
        .expect("the first proxy still accepts");

    sigsci_proxy::request_drain(&ctl_a).await.unwrap();
    let (status, log) = first.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{log}");
    assert!(!sock.exists(), "its own socket is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_socket_not_ours_is_left_on_exit() {
    let agent = Agent::start().await;
    let agents = agent.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rpc.sock");
    let ctl = dir.path().join("p.ctl");
    // Left by a process that is gone: the file exists, nothing accepts.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let listen = format!("unix:{}", sock.display());
    let mut args = unix_args(&listen, &agents, ctl.to_str().unwrap());
    args.extend(["--unix-socket-mode", "0660"]);
    let proxy = ProxyProcess::spawn(&args, &[]).await.ok().unwrap();
    tokio::net::UnixStream::connect(&sock)
        .await
        .expect("the stale socket was replaced");
    assert_eq!(mode(&sock), 0o660);

    // Someone else takes the path while the proxy runs (an operator, another instance).
    std::fs::remove_file(&sock).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let theirs = inode(&sock);

    sigsci_proxy::request_drain(&ctl).await.unwrap();
    let (status, log) = proxy.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{log}");
    assert_eq!(
        inode(&sock),
        theirs,
        "a socket the proxy did not create stays"
    );
    drop(other);
}
