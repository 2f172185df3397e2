//! The bed's nftables rules: the Service VIP as kube-proxy's nftables mode writes it, and a
//! host's disappearance.
//!
//! kube-proxy (nftables mode) sends a Service's cluster IP through a `numgen random mod N` verdict
//! map to one endpoint chain per ready endpoint, each a `dnat to` — in the `output` hook for
//! connections a node opens itself. NAT rules are consulted only for a connection's first packet,
//! so replacing the set moves new connections only; conntrack keeps every existing one on its
//! endpoint. A Service with no ready endpoint rejects (the client sees a refused connection).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The RPC port of every proxy replica, and of the Service VIP in front of them.
pub const RPC_PORT: u16 = 9999;
/// The Service's virtual address: on no interface, only in the clients' DNAT rules.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

/// The `kube-proxy` table for a VIP in front of `endpoints`, replacing any previous one in one
/// transaction.
pub(super) fn vip_rules(endpoints: &[SocketAddrV4]) -> String {
    let mut s = String::from(
        "add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n",
    );
    s.push_str(&format!(
        "  chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    ip daddr {VIP} tcp dport {RPC_PORT} goto service\n  }}\n"
    ));
    if endpoints.is_empty() {
        s.push_str("  chain service {\n  }\n");
        s.push_str(&format!(
            "  chain filter-output {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {VIP} tcp dport {RPC_PORT} reject with tcp reset\n  }}\n"
        ));
    } else {
        let map: Vec<String> = (0..endpoints.len())
            .map(|i| format!("{i} : goto endpoint-{i}"))
            .collect();
        s.push_str(&format!(
            "  chain service {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n",
            endpoints.len(),
            map.join(", ")
        ));
        for (i, ep) in endpoints.iter().enumerate() {
            s.push_str(&format!(
                "  chain endpoint-{i} {{\n    meta l4proto tcp dnat to {ep}\n  }}\n"
            ));
        }
    }
    s.push_str("}\n");
    s
}

/// Every packet in or out of the host's interface dropped: no reset, no ICMP.
pub(super) const CUT: &str = "add table inet bed-fault\ndelete table inet bed-fault\ntable inet bed-fault {\n  chain in {\n    type filter hook input priority -300; policy accept;\n    iifname \"eth0\" drop\n  }\n  chain out {\n    type filter hook output priority -300; policy accept;\n    oifname \"eth0\" drop\n  }\n}\n";

/// The cut undone.
pub(super) const HEAL: &str = "add table inet bed-fault\ndelete table inet bed-fault\n";

/// Loads `rules` into namespace `ns` (`nft -f -`, one transaction).
pub(super) fn apply(ns: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (nftables)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft in {ns}: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vip_goes_to_a_random_ready_endpoint_or_is_refused() {
        let two = vip_rules(&[
            "198.18.2.1:9999".parse().unwrap(),
            "198.18.2.2:9999".parse().unwrap(),
        ]);
        assert!(
            two.contains("numgen random mod 2 vmap { 0 : goto endpoint-0, 1 : goto endpoint-1 }")
        );
        assert!(two.contains("dnat to 198.18.2.2:9999"));
        assert!(!two.contains("reject"));
        let none = vip_rules(&[]);
        assert!(none.contains("reject with tcp reset"));
        assert!(!none.contains("dnat"));
    }
}
