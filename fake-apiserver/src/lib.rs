//! A fake Kubernetes API server for tests, speaking the real wire protocol over HTTP/1.1 on
//! `127.0.0.1:0`, so that tests run the real `kube` client (and kube-runtime's watcher) against
//! it. One crate rather than a file per test binary: agent-pool's discovery tests and the load
//! tester's cluster mode share it.
//!
//! Served (namespaced paths only; label selectors of equality terms):
//! - `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices` — list, or with
//!   `watch=1|true&resourceVersion=R` a stream of watch events (see [`endpointslices`]);
//! - `GET /apis/apps/v1/namespaces/{ns}/deployments/{name}`, and its `scale` subresource:
//!   `GET`, `PATCH` (merge, strategic-merge or JSON body with `spec.replicas`), `PUT` (a `Scale`);
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=…` (a `PodList`) and
//!   `DELETE /api/v1/namespaces/{ns}/pods/{name}` (`gracePeriodSeconds` 0 removes the pod at
//!   once; otherwise it gets a `deletionTimestamp` and stays until the test removes it, as a
//!   kubelet would after the pod's preStop hook and exit) — see [`workloads`];
//! - `GET|POST /api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/{path}` — forwarded to the
//!   loopback address the test mapped that pod's port to (see [`pod_proxy`]);
//! - any other kind the test stored as JSON, get and list, and self-subject access reviews
//!   (see [`objects`]); `GET /version`.
//!
//! Anything else is logged to stderr with its query and answered 404. Every request is recorded
//! ([`FakeApiServer::requests`]) for assertions, and scale changes and pod deletions are also
//! sent to [`FakeApiServer::events`] subscribers, so a test can act as the Deployment
//! controller and the kubelet. The test can stop and restart the whole server on the same port;
//! the objects persist across restarts, as etcd would keep them.

#![warn(missing_docs)]

pub mod endpointslices;
pub mod objects;
pub mod pod_proxy;
mod query;
mod reply;
mod routes;
mod server;
mod state;
pub mod workloads;

pub use server::FakeApiServer;
pub use state::Logged;
pub use workloads::Event;
