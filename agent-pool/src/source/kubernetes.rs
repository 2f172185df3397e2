//! Membership from Kubernetes: the `discovery.k8s.io/v1` EndpointSlices of the agents' Service.
//!
//! kube-runtime's [`watcher()`] (list, then watch from the list's resourceVersion, re-list after
//! `410 Gone`) → a reflector [`Store`] of the Service's slices, polled again after an error only
//! once a retry delay has passed: 50–100 ms, doubling to 0.5–1 s (not kube's `default_backoff()`,
//! client-go's 0.8 s to 30 s; why in `kubernetes/backoff.rs`). After every change of that
//! store the slices are merged into one set of agents (rules on [`kubernetes`]) and the difference with what was last emitted becomes [`Update`]s: one
//! [`Update::Reset`] once the first list is complete, then [`Update::Upsert`] /
//! [`Update::Remove`]. Errors and an unreachable API server never change the membership: the
//! store keeps the last known slices until a new list replaces them atomically, so the proxy
//! keeps its agents while the API server is down.
//!
//! # RBAC
//! The proxy's ServiceAccount needs exactly [`REQUIRED_VERBS`] (`list`, `watch`) on
//! [`RBAC_RESOURCE`] (`endpointslices`) in [`RBAC_API_GROUP`] (`discovery.k8s.io`), in the agents'
//! namespace only (a Role, not a ClusterRole). `get` is never used: the watcher lists and
//! watches with a label selector. Nothing is written.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tokio::time::Instant;

use crate::{EndpointId, Update, Updates};

mod backoff;
mod merge;
mod spec;
#[cfg(test)]
mod tests;

pub use spec::{ServiceRef, SpecError};

use backoff::WatchBackoff;
use merge::Members;

/// API verbs the source uses on EndpointSlices; the RBAC Role must grant these (and need grant
/// nothing else).
pub const REQUIRED_VERBS: &[&str] = &["list", "watch"];
/// API group of the watched resource.
pub const RBAC_API_GROUP: &str = "discovery.k8s.io";
/// The watched resource.
pub const RBAC_RESOURCE: &str = "endpointslices";
/// The well-known label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How long an endpoint that vanished from every slice is held before its
/// [`Update::Remove`] (250 ms). A controller that moves an endpoint from one slice to another
/// may write the slice that loses it first; the hold lets the slice that gains it arrive, so the
/// agent does not flap. A pod normally turns `terminating` (which is emitted at once) long
/// before it leaves its slice, so the hold does not delay taking it out of rotation.
pub const REMOVAL_HOLD: Duration = Duration::from_millis(250);

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeConfigError {
    /// Neither the in-cluster service account nor `KUBECONFIG` / `~/.kube/config` gave a
    /// usable configuration.
    #[error(
        "no Kubernetes configuration: not in a cluster (service account) and no usable KUBECONFIG"
    )]
    Config(#[source] kube::Error),
}

/// A client for the cluster the process runs in (service account token and CA), or, outside a
/// cluster, the current context of `KUBECONFIG` (else `~/.kube/config`).
pub async fn client_from_env() -> Result<kube::Client, KubeConfigError> {
    Client::try_default().await.map_err(KubeConfigError::Config)
}

/// The membership of Service `service` in `namespace`, port `port_name`, as a never-ending
/// stream of [`Update`]s. `client` usually comes from [`client_from_env`].
///
/// How slices become agents:
/// - Only `IPv4` and `IPv6` slices count (`FQDN` slices are skipped).
/// - The port is the slice port named `port_name` (TCP); without a name, the slice's first TCP
///   port, which is its only port in the usual case: name the port when the Service has
///   several. A slice without that port contributes nothing.
/// - Conditions: `terminating` (nil = false) and `serving` (nil = true) is
///   [`SourceState::Terminating`](crate::SourceState::Terminating); not terminating and
///   `ready` (nil = true) is [`SourceState::Ready`](crate::SourceState::Ready); anything else
///   (not ready and not serving) is not a member and is removed at once. Terminating is
///   checked first because a Service with `publishNotReadyAddresses` reports terminating pods
///   as ready.
/// - Identity ([`EndpointId`]) is the `targetRef` as `namespace/name` (the pod), else the
///   address text (`10.1.2.3:9999`).
/// - All slices of the Service are merged: an endpoint in two slices (moving between them, or a
///   dual-stack pod) is one member, ready winning over terminating, then the lower address.
///   An endpoint that vanishes from every slice is removed after [`REMOVAL_HOLD`], so one
///   that moves between slices does not flap when the losing slice is written first.
///
/// Nothing is requested until the stream is polled. The first item is a [`Update::Reset`],
/// after the first complete list (a Service with no ready endpoint yields an empty Reset;
/// an API server that cannot be reached yields nothing until it can). Errors are logged
/// (`tracing`, target of this module) and retried, the first time after 50–100 ms, then less
/// and less often down to once every 0.5–1 s; they never end the stream.
pub async fn kubernetes(
    client: Client,
    namespace: &str,
    service: &str,
    port_name: Option<&str>,
) -> Updates {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
    let (store, writer) = reflector::store();
    let events = watcher(api, config).reflect(writer).boxed();
    let merger = Merger {
        events,
        store,
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port_name: port_name.map(str::to_owned),
        synced: false,
        emitted: Members::new(),
        held: BTreeMap::new(),
        out: Default::default(),
        backoff: WatchBackoff::default(),
        retry_at: None,
    };
    futures::stream::unfold(merger, |mut m| async move {
        let update = m.next_update().await?;
        Some((update, m))
    })
    .boxed()
}

/// Turns store changes into updates.
struct Merger {
    events: BoxStream<'static, watcher::Result<watcher::Event<EndpointSlice>>>,
    store: Store<EndpointSlice>,
    namespace: String,
    service: String,
    port_name: Option<String>,
    /// A first complete list was seen and a Reset emitted.
    synced: bool,
    /// What the pool was told.
    emitted: Members,
    /// Emitted members absent from the current view, with the time their Remove is due.
    held: BTreeMap<EndpointId, Instant>,
    out: std::collections::VecDeque<Update>,
    backoff: WatchBackoff,
    /// After an error, the watcher is not polled (so makes no request) until then.
    retry_at: Option<Instant>,
}

impl Merger {
    async fn next_update(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.out.pop_front() {
                return Some(update);
            }
            let due = self.held.values().min().copied();
            let retry_at = self.retry_at;
            tokio::select! {
                event = self.events.next(), if retry_at.is_none() => match event? {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        self.backoff.progress();
                        self.merge(false);
                    }
                    Ok(watcher::Event::InitDone) => {
                        self.backoff.progress();
                        self.merge(true);
                    }
                    Ok(watcher::Event::Init) => {
                        tracing::debug!(service = %self.service, "Listing EndpointSlices");
                    }
                    Ok(watcher::Event::InitApply(_)) => {}
                    Err(error) => {
                        let now = Instant::now();
                        let delay = self.backoff.next_delay(now, is_gone(&error));
                        self.retry_at = Some(now + delay);
                        tracing::warn!(service = %self.service, %error, retry_in_ms = delay.as_millis(), "EndpointSlice watch failed; keeping the last membership and retrying");
                    }
                },
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(crate::far_future)), if retry_at.is_some() => self.retry_at = None,
                () = tokio::time::sleep_until(due.unwrap_or_else(crate::far_future)), if due.is_some() => self.release(Instant::now()),
            }
        }
    }

    /// Recomputes the merged view from the store and queues the difference. After a complete
    /// (re-)list the view is one consistent picture of every slice, so a pod missing from it
    /// has not merely moved between slices: it is removed without the hold.
    fn merge(&mut self, complete_list: bool) {
        let view = merge::merge(
            &self.store.state(),
            self.port_name.as_deref(),
            &self.namespace,
        );
        let current = view.members;
        if !self.synced {
            self.synced = true;
            tracing::info!(service = %self.service, members = current.len(), "EndpointSlices synced");
            self.out
                .push_back(Update::Reset(current.values().cloned().collect()));
            self.emitted = current;
            return;
        }
        for (id, endpoint) in &current {
            self.held.remove(id);
            if self.emitted.get(id) != Some(endpoint) {
                self.emitted.insert(id.clone(), endpoint.clone());
                self.out.push_back(Update::Upsert(endpoint.clone()));
            }
        }
        let left: Vec<EndpointId> = self
            .emitted
            .keys()
            .filter(|id| !current.contains_key(*id))
            .cloned()
            .collect();
        let due = Instant::now() + REMOVAL_HOLD;
        for id in left {
            if complete_list || view.listed.contains(&id) {
                // Still listed (its conditions took it out), or absent from a complete list: it
                // did not move. At once.
                self.held.remove(&id);
                self.emitted.remove(&id);
                self.out.push_back(Update::Remove(id));
            } else {
                self.held.entry(id).or_insert(due);
            }
        }
    }

    /// Emits the Removes whose hold has expired.
    fn release(&mut self, now: Instant) {
        let expired: Vec<EndpointId> = self
            .held
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.held.remove(&id);
            self.emitted.remove(&id);
            self.out.push_back(Update::Remove(id));
        }
    }
}

/// `410 Gone`: the resourceVersion is too old to watch from; the watcher re-lists.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}
