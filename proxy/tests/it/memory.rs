//! The real binary gives back the memory of a burst of connections once they close
//! (`--memory-trim-interval`, proxy/src/heap_trim.rs). Without it the ~4 MiB the burst below
//! allocates stay resident for the life of the process.

use std::time::{Duration, Instant};

use crate::support::process::ProxyProcess;
use crate::support::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_of_a_burst_of_connections_returns_after_they_close() {
    let agent = Agent::start().await;
    let proxy = ProxyProcess::in_front_of(agent.addr, &["--memory-trim-interval", "200ms"]).await;
    let pid = proxy.child.id();
    // A call first, so the baseline includes the agent connection and the first frames.
    let id = pre(proxy.rpc()).await;
    assert_eq!(update(proxy.rpc(), &id).await, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(pid);

    let mut burst = Vec::new();
    for _ in 0..500 {
        burst.push(tokio::net::TcpStream::connect(proxy.rpc()).await.unwrap());
    }
    wait_until("the proxy holds the burst", async || {
        rss_kib(pid) > base + 2048
    })
    .await;
    let held = rss_kib(pid);
    drop(burst);

    let started = Instant::now();
    let mut now = rss_kib(pid);
    while now > base + 1024 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = rss_kib(pid);
    }
    assert!(
        now <= base + 1024,
        "RSS {base} KiB before the burst, {held} KiB with it, still {now} KiB 5 s after it closed"
    );
    // Serving goes on as before.
    let id = pre(proxy.rpc()).await;
    assert_eq!(update(proxy.rpc(), &id).await, None);
    assert_eq!(agent.matched(), 2);
}
