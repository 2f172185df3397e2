//! The real binary on IPv6 loopback (`::1`), as it runs on IPv6-only and dual-stack clusters:
//! modules reach it over IPv6, it reaches IPv6 agents (and, in a dual-stack pool, IPv4 ones
//! beside them), keeps every UpdateRequest on the agent that issued its RequestID, and serves
//! its admin port (probes, metrics) over IPv6. The manifests' `[::]` listeners are the same
//! code with the unspecified address; binding that would open the test to every interface, so
//! the suite stays on loopback (docs/configuration.md, "IPv6 and dual-stack").
//!
//! Skipped, saying so, where the machine has no IPv6 loopback at all (a kernel booted with
//! `ipv6.disable=1`): there is nothing to test there.

use std::net::{Ipv6Addr, SocketAddr, TcpListener};

use crate::support::process::ProxyProcess;
use crate::support::*;

/// Whether this machine can bind `[::1]` (false where the kernel has no IPv6).
fn ipv6_loopback() -> bool {
    match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: no IPv6 loopback on this machine ({e}); nothing to test");
            false
        }
    }
}

/// A simulated agent on `[::1]`.
async fn agent_v6() -> Agent {
    Agent::spawn(agent_config().listen("[::1]:0".parse().unwrap())).await
}

/// The binary on `[::1]` ports (RPC and admin) in front of `agents`.
async fn proxy_v6(agents: &[&Agent]) -> ProxyProcess {
    let agents = agents
        .iter()
        .map(|a| a.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "--listen", "[::1]:0", "--admin", "[::1]:0", "--agents", &agents,
    ];
    match ProxyProcess::spawn(&args, &[]).await {
        Ok(p) => p,
        Err(f) => panic!("the proxy exited with {}: {}", f.status, f.log),
    }
}

#[tokio::test]
async fn a_module_reaches_an_ipv6_agent_through_the_proxy_on_ipv6_loopback() {
    if !ipv6_loopback() {
        return;
    }
    let agent = agent_v6().await;
    assert!(agent.addr.is_ipv6(), "{}", agent.addr);
    // ProxyProcess::spawn waited for /readyz = 200 over [::1]: the probe path works on IPv6.
    let proxy = proxy_v6(&[&agent]).await;
    let rpc: SocketAddr = proxy.rpc();
    assert!(
        rpc.is_ipv6() && rpc.ip().is_loopback(),
        "RPC bound on {rpc}"
    );
    assert!(proxy.admin().is_ipv6(), "admin bound on {}", proxy.admin());

    for _ in 0..20 {
        let id = pre(rpc).await;
        assert_eq!(update(rpc, &id).await, None, "UpdateRequest for {id}");
    }
    assert_eq!(agent.pre(), 20, "every PreRequest reached the IPv6 agent");
    assert_eq!(
        agent.matched(),
        20,
        "every UpdateRequest reached its issuer"
    );
    assert_eq!(agent.orphaned(), 0);

    // The admin port over IPv6: metrics name the agent by its bracketed address.
    let (status, page) = http(proxy.admin(), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let label = format!("agent=\"{}\"", agent.addr);
    assert!(
        page.lines()
            .any(|l| l.starts_with("sigsci_proxy_agent_state{")
                && l.contains(&label)
                && l.contains("state=\"ready\"")
                && l.ends_with(" 1")),
        "no ready state for {label} in:\n{page}"
    );
    let (status, agents) = http(proxy.admin(), "GET", "/agents").await;
    assert_eq!(status, 200);
    assert!(agents.contains(&agent.addr.to_string()), "{agents}");
}

#[tokio::test]
async fn a_dual_stack_pool_keeps_each_update_on_its_issuer_across_address_families() {
    if !ipv6_loopback() {
        return;
    }
    // One agent per family, as a dual-stack cluster's EndpointSlices can list them.
    let v4 = Agent::start().await;
    let v6 = agent_v6().await;
    assert!(v4.addr.is_ipv4() && v6.addr.is_ipv6());
    let proxy = proxy_v6(&[&v4, &v6]).await;
    let rpc = proxy.rpc();

    let n = 60;
    for _ in 0..n {
        let id = pre(rpc).await;
        assert_eq!(update(rpc, &id).await, None, "UpdateRequest for {id}");
    }
    assert_eq!(
        v4.pre() + v6.pre(),
        n,
        "every PreRequest answered by one of them"
    );
    assert_eq!(
        v4.matched() + v6.matched(),
        n,
        "every UpdateRequest went to the agent that issued its RequestID \
         (v4 issued {}, v6 issued {})",
        v4.pre(),
        v6.pre()
    );
    assert_eq!(
        v4.matched(),
        v4.pre(),
        "the IPv4 agent got exactly its own updates"
    );
    assert_eq!(
        v6.matched(),
        v6.pre(),
        "the IPv6 agent got exactly its own updates"
    );
    assert_eq!(v4.orphaned() + v6.orphaned(), 0);
    // Two idle loopback agents cost the same to the picker (within its tie margin), and ties
    // break at random: a family that got none of 60 calls was never a candidate.
    assert!(
        v4.pre() > 0 && v6.pre() > 0,
        "both families balanced: IPv4 agent {}, IPv6 agent {}",
        v4.pre(),
        v6.pre()
    );

    // Both families are in the pool, ready.
    let (_, page) = http(proxy.admin(), "GET", "/metrics").await;
    for a in [&v4, &v6] {
        let label = format!("agent=\"{}\",state=\"ready\"}} 1", a.addr);
        assert!(page.contains(&label), "no {label} in:\n{page}");
    }
}
