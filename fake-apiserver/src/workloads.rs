//! Deployments (get, and the `scale` subresource: get, patch, replace) and Pods (list by label
//! selector, delete). Nothing runs here: the test plays the Deployment controller and the
//! kubelet, reacting to the [`Event`]s a scale change or a pod deletion sends (create or
//! remove pods with [`FakeApiServer::add_pod`] / [`FakeApiServer::remove_pod`]).

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::query::selects;
use crate::reply::{Body, full, key_of, status};
use crate::server::FakeApiServer;
pub use crate::state::Event;
use crate::state::State;

impl FakeApiServer {
    /// Creates or replaces a Deployment (namespace and name from its metadata).
    pub fn add_deployment(&self, mut deployment: Deployment) {
        let key = key_of(&deployment.metadata);
        let mut state = self.state();
        state.rv += 1;
        deployment.metadata.resource_version = Some(state.rv.to_string());
        state.workloads.deployments.insert(key, deployment);
    }

    /// A Deployment's `spec.replicas`, if it exists.
    pub fn replicas(&self, namespace: &str, name: &str) -> Option<i32> {
        let state = self.state();
        let d = state
            .workloads
            .deployments
            .get(&(namespace.to_owned(), name.to_owned()))?;
        d.spec.as_ref().and_then(|s| s.replicas)
    }

    /// Creates or replaces a pod (namespace and name from its metadata).
    pub fn add_pod(&self, mut pod: Pod) {
        let key = key_of(&pod.metadata);
        let mut state = self.state();
        state.rv += 1;
        pod.metadata.resource_version = Some(state.rv.to_string());
        state.workloads.pods.insert(key, pod);
    }

    /// Removes a pod for good (a kubelet's last word after a graceful deletion); `false` if it
    /// was not there.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.state();
        state
            .pod_ports
            .retain(|(ns, pod, _), _| !(ns == namespace && pod == name));
        state
            .workloads
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    /// The pods of `namespace` now (deleting ones included), by name.
    pub fn pods(&self, namespace: &str) -> Vec<Pod> {
        self.state()
            .workloads
            .pods
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Scale changes and pod deletions from now on, in order.
    pub fn events(&self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().workloads.subscribers.push(tx);
        rx
    }
}

fn not_found(kind: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
    )
}

/// `GET …/deployments/{name}`.
pub(crate) fn get_deployment(state: &State, namespace: &str, name: &str) -> Response<Body> {
    match state
        .workloads
        .deployments
        .get(&(namespace.to_owned(), name.to_owned()))
    {
        Some(d) => full(StatusCode::OK, &json!(d)),
        None => not_found("deployments.apps", name),
    }
}

fn scale_of(d: &Deployment) -> Value {
    let spec = d.spec.clone().unwrap_or_default();
    let selector: Vec<String> = spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": d.metadata.name, "namespace": d.metadata.namespace,
                     "resourceVersion": d.metadata.resource_version},
        "spec": {"replicas": spec.replicas.unwrap_or(1)},
        "status": {"replicas": d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                   "selector": selector.join(",")},
    })
}

/// `GET …/deployments/{name}/scale`.
pub(crate) fn get_scale(state: &State, namespace: &str, name: &str) -> Response<Body> {
    match state
        .workloads
        .deployments
        .get(&(namespace.to_owned(), name.to_owned()))
    {
        Some(d) => full(StatusCode::OK, &scale_of(d)),
        None => not_found("deployments.apps", name),
    }
}

/// `PATCH` or `PUT …/deployments/{name}/scale`: both carry `spec.replicas` (a merge or
/// strategic-merge patch, an apply patch, or a whole `Scale`).
pub(crate) fn set_scale(
    state: &mut State,
    namespace: &str,
    name: &str,
    body: Option<&Value>,
) -> Response<Body> {
    let Some(replicas) = body
        .and_then(|b| b["spec"]["replicas"].as_i64())
        .and_then(|r| i32::try_from(r).ok())
        .filter(|r| *r >= 0)
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "spec.replicas: a non-negative integer is required",
        );
    };
    state.rv += 1;
    let rv = state.rv.to_string();
    let Some(d) = state
        .workloads
        .deployments
        .get_mut(&(namespace.to_owned(), name.to_owned()))
    else {
        return not_found("deployments.apps", name);
    };
    d.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
    d.metadata.resource_version = Some(rv);
    let scale = scale_of(d);
    state.workloads.send(Event::Scaled {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        replicas,
    });
    full(StatusCode::OK, &scale)
}

/// `GET …/pods?labelSelector=…`: a `PodList`.
pub(crate) fn list_pods(
    state: &State,
    namespace: &str,
    selector: &[(String, String)],
) -> Response<Body> {
    let items: Vec<&Pod> = state
        .workloads
        .pods
        .iter()
        .filter(|((ns, _), p)| ns == namespace && selects(selector, p.metadata.labels.as_ref()))
        .map(|(_, p)| p)
        .collect();
    full(
        StatusCode::OK,
        &json!({"kind": "PodList", "apiVersion": "v1",
                "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    )
}

/// `DELETE …/pods/{name}` with `DeleteOptions` in the body (or `gracePeriodSeconds` in the
/// query): grace 0 removes the pod at once; otherwise it is marked deleting and stays.
pub(crate) fn delete_pod(
    state: &mut State,
    namespace: &str,
    name: &str,
    body: Option<Value>,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let grace = body
        .as_ref()
        .and_then(|b| b["gracePeriodSeconds"].as_i64())
        .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let key = (namespace.to_owned(), name.to_owned());
    state.rv += 1;
    let rv = state.rv.to_string();
    let pod = if grace == Some(0) {
        state
            .pod_ports
            .retain(|(ns, pod, _), _| !(ns == namespace && pod == name));
        state.workloads.pods.remove(&key)
    } else {
        state.workloads.pods.get_mut(&key).map(|p| {
            let period = grace
                .or_else(|| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30);
            p.metadata.deletion_timestamp = Some(Time(now()));
            p.metadata.deletion_grace_period_seconds = Some(period);
            p.metadata.resource_version = Some(rv);
            p.clone()
        })
    };
    let Some(pod) = pod else {
        return not_found("pods", name);
    };
    state.workloads.send(Event::PodDeleted {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        grace_period_seconds: grace,
    });
    full(StatusCode::OK, &json!(pod))
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
