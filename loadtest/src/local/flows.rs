//! The module sources of a run with flows (`[[flow]]`): on loopback each from a source address
//! of its own, on the netns bed each from a module host of its own (host 0 is the one the drive
//! runs on); and the calls split between proxy replicas by `proxy_weights`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::drive::{FlowArgs, Split};
use crate::netbed::{Bed, Role};
use crate::scenario::Scenario;

/// The drive's flows, and the runtimes of the module hosts beyond host 0 (kept until the run
/// ends, then shut down).
pub(crate) fn flows(
    scenario: &Scenario,
    bed: Option<&Bed>,
) -> anyhow::Result<(Vec<FlowArgs>, Vec<tokio::runtime::Runtime>)> {
    let mut runtimes = Vec::new();
    let mut out = Vec::new();
    for (i, f) in scenario.flows.iter().enumerate() {
        let name = format!("{i} ({} tx/s)", f.rate);
        let (sources, host) = match bed {
            // Host 0 runs the drive itself.
            Some(_) if i == 0 => (Vec::new(), None),
            Some(bed) => {
                let rt = bed.runtime_on(&bed.host(Role::Module, i)?)?;
                let handle = rt.handle().clone();
                runtimes.push(rt);
                (Vec::new(), Some(handle))
            }
            None => {
                let ip = f
                    .source
                    .unwrap_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)));
                (vec![ip], None)
            }
        };
        out.push(FlowArgs {
            name,
            rate: f.rate,
            sources,
            host,
        });
    }
    Ok((out, runtimes))
}

/// The split of calls between the replicas at `addrs` by the scenario's `proxy_weights`, if any.
pub(crate) fn split(scenario: &Scenario, addrs: &[SocketAddr]) -> anyhow::Result<Option<Split>> {
    if scenario.proxy_weights.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(
        scenario.proxy_weights.len() == addrs.len(),
        "proxy_weights has {} weights for {} proxy replicas",
        scenario.proxy_weights.len(),
        addrs.len()
    );
    Ok(Some(Split {
        targets: addrs.iter().map(|a| (*a).into()).collect(),
        weights: scenario.proxy_weights.clone(),
    }))
}
