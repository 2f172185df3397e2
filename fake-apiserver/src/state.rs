//! What the fake holds: every store behind one lock, the requests it was asked, and the kinds
//! of things the stores keep (EndpointSlices with their history and watches, Deployments and
//! Pods with the events they send, the other objects). Below the server and the routes that
//! read and change them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use futures::channel::mpsc as watch_channel;
use http::StatusCode;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use tokio::sync::mpsc;

/// What the fake was asked, for assertions on the verbs a client uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// `list`, `watch`, `get`, `patch`, `update`, `delete`, `proxy`, or `unexpected`.
    pub verb: &'static str,
    /// `endpointslices`, `deployments`, `deployments/scale`, `pods`, `pods/proxy`; empty if the
    /// path was unexpected.
    pub resource: String,
    /// Namespace from the path (empty if the path was unexpected).
    pub namespace: String,
    /// Object name from the path (`name:port/path` for `pods/proxy`), empty for collections.
    pub name: String,
    /// The decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
}

/// Everything the fake holds, behind one lock.
#[derive(Default)]
pub(crate) struct State {
    /// Last resourceVersion handed out (a global counter, as etcd's revision).
    pub(crate) rv: u64,
    pub(crate) slices: Slices,
    pub(crate) workloads: Workloads,
    pub(crate) objects: Objects,
    /// Pod ports the test mapped to loopback addresses: (namespace, pod, port) → address.
    pub(crate) pod_ports: BTreeMap<(String, String, u16), SocketAddr>,
    pub(crate) requests: Vec<Logged>,
    /// While set, every request is answered with this status (an API server up but failing,
    /// e.g. without etcd), after being logged.
    pub(crate) failing: Option<StatusCode>,
}

/// The state lock; a test that panicked while holding it has failed already, so poisoning is
/// ignored rather than turned into a second panic.
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// An open watch stream: what it selects and where its events go.
pub(crate) struct Watcher {
    pub(crate) namespace: String,
    pub(crate) selector: Vec<(String, String)>,
    pub(crate) bookmarks: bool,
    pub(crate) tx: watch_channel::UnboundedSender<Bytes>,
}

/// One recorded change: resourceVersion, namespace, labels of the object, event line.
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) namespace: String,
    pub(crate) labels: Option<BTreeMap<String, String>>,
    pub(crate) line: Bytes,
}

/// The slices, their change history and the open watches.
#[derive(Default)]
pub(crate) struct Slices {
    /// Watches from a resourceVersion below this get 410 Gone.
    pub(crate) compacted: u64,
    pub(crate) slices: BTreeMap<(String, String), EndpointSlice>,
    /// Every change since the last compaction, for watch replay.
    pub(crate) history: Vec<Change>,
    pub(crate) watchers: Vec<Watcher>,
}

/// A change a controller or kubelet would act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A Deployment's `spec.replicas` was set through its scale subresource.
    Scaled {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The new `spec.replicas`.
        replicas: i32,
    },
    /// A pod deletion was asked for.
    PodDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// `gracePeriodSeconds` as asked (`Some(0)`: removed at once; otherwise the pod stays,
        /// with a `deletionTimestamp`, until [`FakeApiServer::remove_pod`]).
        grace_period_seconds: Option<i64>,
    },
}

/// Deployments, pods and who listens for [`Event`]s.
#[derive(Default)]
pub(crate) struct Workloads {
    pub(crate) deployments: BTreeMap<(String, String), Deployment>,
    pub(crate) pods: BTreeMap<(String, String), Pod>,
    pub(crate) subscribers: Vec<mpsc::UnboundedSender<Event>>,
}

impl Workloads {
    /// Tells every subscriber still listening.
    pub(crate) fn send(&mut self, event: Event) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

impl Workloads {
    /// Whether the pod exists (deleting ones included).
    pub(crate) fn has_pod(&self, namespace: &str, name: &str) -> bool {
        self.pods
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }
}

/// Stored objects by (prefix, plural), and what self-subject access reviews deny.
#[derive(Default)]
pub(crate) struct Objects {
    pub(crate) kinds: BTreeMap<(String, String), Vec<Value>>,
    pub(crate) denied: BTreeSet<(String, String)>,
}
