//! The merged view: every EndpointSlice of one Service folded into one set of agents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointPort, EndpointSlice};

use crate::{Address, Endpoint, EndpointId, SourceState};

/// The members of a Service, by identity.
pub(crate) type Members = BTreeMap<EndpointId, Endpoint>;

/// The merged view of a Service's slices.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Endpoints that are members (ready or terminating-and-serving).
    pub(crate) members: Members,
    /// Every endpoint listed in a usable slice, member or not (e.g. not ready): an id listed
    /// here but not a member left because of its conditions, not because it moved.
    pub(crate) listed: BTreeSet<EndpointId>,
}

/// Folds `slices` into one member per identity, by the rules documented on
/// [`kubernetes`](super::kubernetes).
pub(crate) fn merge(
    slices: &[impl AsRef<EndpointSlice>],
    port_name: Option<&str>,
    namespace: &str,
) -> View {
    let mut out = View::default();
    for slice in slices {
        let slice = slice.as_ref();
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = pick_port(slice.ports.as_deref().unwrap_or_default(), port_name) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some((member, state)) = member(endpoint, port, namespace) else {
                continue;
            };
            out.listed.insert(member.id.clone());
            let Some(state) = state else { continue };
            let member = Endpoint { state, ..member };
            match out.members.get(&member.id) {
                Some(kept) if !better(&member, kept) => {}
                _ => {
                    out.members.insert(member.id.clone(), member);
                }
            }
        }
    }
    out
}

fn better(a: &Endpoint, b: &Endpoint) -> bool {
    let rank = |e: &Endpoint| (e.state != SourceState::Ready, e.address.clone());
    rank(a) < rank(b)
}

fn pick_port(ports: &[EndpointPort], name: Option<&str>) -> Option<u16> {
    let tcp = |p: &&EndpointPort| p.protocol.as_deref().is_none_or(|proto| proto == "TCP");
    let chosen = match name {
        Some(name) => ports
            .iter()
            .filter(tcp)
            .find(|p| p.name.as_deref() == Some(name)),
        None => ports.iter().find(tcp),
    }?;
    chosen
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// The endpoint (its state a placeholder) and its state if it is a member; `None` if it has
/// no usable address.
fn member(
    endpoint: &SliceEndpoint,
    port: u16,
    namespace: &str,
) -> Option<(Endpoint, Option<SourceState>)> {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    let state = match (terminating, serving, ready) {
        (true, true, _) => Some(SourceState::Terminating),
        (false, _, true) => Some(SourceState::Ready),
        _ => None,
    };
    // "Consumers ... may choose to only use the first element": all addresses are the same pod.
    let ip: IpAddr = endpoint.addresses.iter().find_map(|a| a.parse().ok())?;
    let address = Address::Tcp(SocketAddr::new(ip, port));
    let id = match endpoint
        .target_ref
        .as_ref()
        .and_then(|r| r.name.as_deref().map(|n| (r, n)))
    {
        Some((target, name)) => EndpointId::from(format!(
            "{}/{}",
            target.namespace.as_deref().unwrap_or(namespace),
            name
        )),
        None => EndpointId::from(&address),
    };
    let endpoint = Endpoint {
        id,
        address,
        state: SourceState::Ready,
    };
    Some((endpoint, state))
}
